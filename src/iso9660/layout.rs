//! The planner's model of the tree and the sector allocation.
//!
//! Phases: [`Tree::collect`] flattens the [`Node`] tree into directories (depth-first, root = 0) and
//! files; [`Tree::name_entries`] gives every entry its ISO 9660 and Joliet identifier and each
//! directory its two sort orders; [`Tree::attach_system_use`] builds the Rock Ridge entries; then
//! [`Tree::allocate`] places everything. Record and area sizes never depend on where things are, so
//! allocation needs no iteration.

use super::rock_ridge::{self, Sua};
use super::{dir_record, joliet, names, path_table, IsoError, IsoOptions};
use super::{MAX_EXTENT, MAX_LEVEL, PVD_LBA, SECTOR};
use crate::extent::ExtentMap;
use crate::tree::{Meta, Node, NodeKind};
use std::sync::Arc;

pub(super) enum Kind {
    Dir(usize),
    File(usize),
    Symlink(Vec<u8>),
    Catalog,
}

pub(super) struct Entry {
    pub name: Vec<u8>,
    pub meta: Meta,
    pub ino: u32,
    pub kind: Kind,
    pub iso_id: Vec<u8>,
    /// UCS-2 BE; `None` for symlinks, which Joliet cannot hold.
    pub jol_id: Option<Vec<u8>>,
    pub sua: Sua,
}

#[derive(Clone, Copy, Default)]
pub(super) struct Placed {
    pub lba: u32,
    pub size: u32,
}

pub(super) struct Dir {
    /// `""` for the root, else `/a/b`.
    pub path: String,
    pub meta: Meta,
    pub ino: u32,
    pub parent: usize,
    /// In raw-name order.
    pub entries: Vec<Entry>,
    pub iso_order: Vec<usize>,
    pub jol_order: Vec<usize>,
    pub dot: Sua,
    pub dotdot: Sua,
    pub iso: Placed,
    pub jol: Placed,
}

impl Dir {
    pub(super) fn label_path(&self) -> &str {
        if self.path.is_empty() {
            "/"
        } else {
            &self.path
        }
    }
}

pub(super) struct FileData {
    pub path: String,
    pub map: Arc<ExtentMap>,
    pub lba: u32,
}

pub(super) fn normalise(path: &str) -> String {
    format!("/{}", path.trim_matches('/'))
}

/// What one directory record (or run of multi-extent records) points at.
#[derive(Clone, Copy)]
pub(super) enum Target {
    Dir(usize),
    File(usize),
    /// Symlinks: extent 0, length 0.
    Nothing,
    Catalog,
}

/// One entry of a directory listing before placement: `.`, `..` or a child.
pub(super) struct Listed<'a> {
    pub id: &'a [u8],
    pub mtime: i64,
    /// Rock Ridge entries; `None` in the Joliet tree.
    pub sua: Option<&'a Sua>,
    pub target: Target,
}

pub(super) struct Tree {
    pub dirs: Vec<Dir>,
    pub files: Vec<FileData>,
    pub bios: Option<usize>,
    pub efi: Option<usize>,
}

/// Where everything but the directories and files (which carry their own places) went.
pub(super) struct Places {
    pub iso_bfs: Vec<usize>,
    pub jol_bfs: Vec<usize>,
    pub boot_record: Option<u64>,
    pub svd: u64,
    pub terminator: u64,
    /// ISO L, ISO M, Joliet L, Joliet M.
    pub path_tables: [u64; 4],
    pub iso_pt_size: u64,
    pub jol_pt_size: u64,
    pub ce_start: u64,
    pub ce_len: u64,
    pub catalog: Option<u64>,
    pub file_order: Vec<usize>,
    pub tail_offset: u64,
    pub space_sectors: u32,
}

struct Collector {
    tree: Tree,
    next_ino: u32,
    /// (parent directory path, name, meta) of the boot catalog.
    catalog: Option<(String, Vec<u8>, Meta)>,
    catalog_placed: bool,
}

fn entry(name: Vec<u8>, meta: Meta, ino: u32, kind: Kind) -> Entry {
    Entry {
        name,
        meta,
        ino,
        kind,
        iso_id: Vec::new(),
        jol_id: None,
        sua: Sua::default(),
    }
}

impl Collector {
    fn ino(&mut self) -> u32 {
        self.next_ino += 1;
        self.next_ino
    }

    fn dir(
        &mut self,
        node: &Node,
        path: String,
        parent: usize,
        level: usize,
    ) -> Result<usize, IsoError> {
        if level > MAX_LEVEL {
            return Err(IsoError::TooDeep { path, level });
        }
        let idx = self.tree.dirs.len();
        let ino = self.ino();
        let catalog = match &self.catalog {
            Some((dir, name, meta)) if *dir == path => Some((name.clone(), *meta)),
            _ => None,
        };
        self.tree.dirs.push(Dir {
            path: path.clone(),
            meta: node.meta,
            ino,
            parent,
            entries: Vec::new(),
            iso_order: Vec::new(),
            jol_order: Vec::new(),
            dot: Sua::default(),
            dotdot: Sua::default(),
            iso: Placed::default(),
            jol: Placed::default(),
        });
        let mut entries = Vec::new();
        for child in node.children() {
            let name = &child.name;
            let cpath = format!("{path}/{}", String::from_utf8_lossy(name));
            if name.is_empty()
                || name == b"."
                || name == b".."
                || name.contains(&b'/')
                || name.contains(&0)
            {
                return Err(IsoError::BadName { path: cpath });
            }
            // The catalog replaces a node of the same name.
            if catalog.as_ref().is_some_and(|(n, _)| n == name) {
                continue;
            }
            let (kind, ino) = match &child.kind {
                NodeKind::Dir(_) => {
                    let d = self.dir(child, cpath, idx, level + 1)?;
                    (Kind::Dir(d), self.tree.dirs[d].ino)
                }
                NodeKind::File(map) => {
                    self.tree.files.push(FileData {
                        path: cpath,
                        map: map.clone(),
                        lba: 0,
                    });
                    (Kind::File(self.tree.files.len() - 1), self.ino())
                }
                NodeKind::Symlink(t) => (Kind::Symlink(t.clone()), self.ino()),
            };
            entries.push(entry(name.clone(), child.meta, ino, kind));
        }
        if let Some((name, meta)) = catalog {
            let ino = self.ino();
            entries.push(entry(name, meta, ino, Kind::Catalog));
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            self.catalog_placed = true;
        }
        self.tree.dirs[idx].entries = entries;
        Ok(idx)
    }
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// Rock Ridge entries of a directory's `.` (`root_dot` adds SP first and ER) or `..` record.
fn dot_entries(d: &Dir, nlink: u32, root_dot: bool) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    if root_dot {
        v.push(rock_ridge::sp());
    }
    let mode = S_IFDIR | (d.meta.mode & 0o7777);
    v.push(rock_ridge::px(mode, nlink, d.meta.uid, d.meta.gid, d.ino));
    v.push(rock_ridge::tf(d.meta.mtime));
    if root_dot {
        v.push(rock_ridge::er());
    }
    v
}

/// Number of records for a file of `size` bytes (one per extent of ≤ `MAX_EXTENT`).
pub(super) fn records_of(size: u64) -> usize {
    size.div_ceil(MAX_EXTENT).max(1) as usize
}

impl Tree {
    pub(super) fn collect(root: &Node, opts: &IsoOptions) -> Result<Tree, IsoError> {
        if !matches!(root.kind, NodeKind::Dir(_)) {
            return Err(IsoError::RootNotDir);
        }
        let catalog = opts.boot.as_ref().map(|b| {
            let p = normalise(&b.catalog_path);
            let (dir, name) = p.rsplit_once('/').unwrap_or(("", &p));
            let meta = Meta {
                mode: 0o444,
                uid: 0,
                gid: 0,
                mtime: opts.timestamp,
            };
            (dir.to_string(), name.as_bytes().to_vec(), meta)
        });
        let mut c = Collector {
            tree: Tree {
                dirs: Vec::new(),
                files: Vec::new(),
                bios: None,
                efi: None,
            },
            next_ino: 0,
            catalog,
            catalog_placed: false,
        };
        c.dir(root, String::new(), 0, 1)?;
        let mut tree = c.tree;
        if tree.dirs.len() > usize::from(u16::MAX) {
            return Err(IsoError::TooManyDirectories(tree.dirs.len()));
        }
        if let Some(b) = &opts.boot {
            if !c.catalog_placed || b.catalog_path.trim_matches('/').is_empty() {
                return Err(IsoError::CatalogPath(b.catalog_path.clone()));
            }
            tree.bios = Some(tree.find_file(&b.bios_image)?);
            tree.efi = b
                .efi_image
                .as_deref()
                .map(|p| tree.find_file(p))
                .transpose()?;
        }
        Ok(tree)
    }

    fn find_file(&self, path: &str) -> Result<usize, IsoError> {
        let p = normalise(path);
        self.files
            .iter()
            .position(|f| f.path == p)
            .ok_or(IsoError::BootImageMissing(path.to_string()))
    }

    /// Assigns ISO 9660 and Joliet identifiers and the sort orders of every directory.
    pub(super) fn name_entries(&mut self) {
        for d in &mut self.dirs {
            let kids: Vec<(&[u8], bool)> = d
                .entries
                .iter()
                .map(|e| (e.name.as_slice(), matches!(e.kind, Kind::Dir(_))))
                .collect();
            let iso = names::iso_identifiers(&kids);
            let jol_idx: Vec<usize> = (0..d.entries.len())
                .filter(|&i| !matches!(d.entries[i].kind, Kind::Symlink(_)))
                .collect();
            let jol_names: Vec<&[u8]> = jol_idx
                .iter()
                .map(|&i| d.entries[i].name.as_slice())
                .collect();
            let jol = joliet::joliet_identifiers(&jol_names);
            for (e, id) in d.entries.iter_mut().zip(iso) {
                e.iso_id = id;
            }
            for (&i, id) in jol_idx.iter().zip(jol) {
                d.entries[i].jol_id = Some(joliet::be_bytes(&id));
            }
            let entries = &d.entries;
            let mut iso_order: Vec<usize> = (0..entries.len()).collect();
            iso_order.sort_by(|&a, &b| {
                names::sort_key(&entries[a].iso_id).cmp(&names::sort_key(&entries[b].iso_id))
            });
            let mut jol_order = jol_idx;
            jol_order.sort_by(|&a, &b| entries[a].jol_id.cmp(&entries[b].jol_id));
            d.iso_order = iso_order;
            d.jol_order = jol_order;
        }
    }

    /// Builds every record's Rock Ridge entries and splits them between record and continuation.
    pub(super) fn attach_system_use(&mut self) {
        let nlinks: Vec<u32> = self
            .dirs
            .iter()
            .map(|d| {
                let subdirs = d.entries.iter().filter(|e| matches!(e.kind, Kind::Dir(_)));
                2 + subdirs.count() as u32
            })
            .collect();
        let dot_budget = dir_record::MAX_RECORD - dir_record::header_len(1);
        for di in 0..self.dirs.len() {
            let p = self.dirs[di].parent;
            let dot = dot_entries(&self.dirs[di], nlinks[di], di == 0);
            let dotdot = dot_entries(&self.dirs[p], nlinks[p], false);
            let d = &mut self.dirs[di];
            d.dot = Sua::split(&dot, dot_budget);
            d.dotdot = Sua::split(&dotdot, dot_budget);
            for e in &mut d.entries {
                let (ftype, nlink) = match &e.kind {
                    Kind::Dir(c) => (S_IFDIR, nlinks[*c]),
                    Kind::File(_) | Kind::Catalog => (S_IFREG, 1),
                    Kind::Symlink(_) => (S_IFLNK, 1),
                };
                let mode = ftype | (e.meta.mode & 0o7777);
                let mut items = vec![
                    rock_ridge::px(mode, nlink, e.meta.uid, e.meta.gid, e.ino),
                    rock_ridge::tf(e.meta.mtime),
                ];
                items.extend(rock_ridge::nm(&e.name));
                if let Kind::Symlink(t) = &e.kind {
                    items.extend(rock_ridge::sl(t));
                }
                let budget = dir_record::MAX_RECORD - dir_record::header_len(e.iso_id.len());
                e.sua = Sua::split(&items, budget);
            }
        }
    }

    /// The listing of directory `di` in the ISO 9660 (`joliet == false`) or Joliet tree, in order.
    /// Sizing and encoding both walk this one list, so they cannot disagree.
    pub(super) fn listing(&self, di: usize, joliet: bool) -> Vec<Listed<'_>> {
        let d = &self.dirs[di];
        let p = &self.dirs[d.parent];
        let rr = |s| if joliet { None } else { Some(s) };
        let mut out = vec![
            Listed {
                id: &[0],
                mtime: d.meta.mtime,
                sua: rr(&d.dot),
                target: Target::Dir(di),
            },
            Listed {
                id: &[1],
                mtime: p.meta.mtime,
                sua: rr(&d.dotdot),
                target: Target::Dir(d.parent),
            },
        ];
        let order = if joliet { &d.jol_order } else { &d.iso_order };
        for &i in order {
            let e = &d.entries[i];
            out.push(Listed {
                id: if joliet {
                    e.jol_id.as_deref().unwrap_or_default()
                } else {
                    &e.iso_id
                },
                mtime: e.meta.mtime,
                sua: rr(&e.sua),
                target: match e.kind {
                    Kind::Dir(c) => Target::Dir(c),
                    Kind::File(f) => Target::File(f),
                    Kind::Symlink(_) => Target::Nothing,
                    Kind::Catalog => Target::Catalog,
                },
            });
        }
        out
    }

    /// Record lengths of a listing, one per record (multi-extent files repeat).
    pub(super) fn record_lens(&self, listing: &[Listed]) -> Vec<usize> {
        let mut lens = Vec::new();
        for l in listing {
            let len = dir_record::record_len(l.id.len(), l.sua.map_or(0, Sua::inline_len));
            let n = match l.target {
                Target::File(f) => records_of(self.files[f].map.size()),
                _ => 1,
            };
            lens.extend(std::iter::repeat_n(len, n));
        }
        lens
    }

    fn dir_size(&self, di: usize, joliet: bool) -> u64 {
        dir_record::pack_offsets(&self.record_lens(&self.listing(di, joliet))).1
    }

    /// Path table identifiers of every directory (ISO 9660, Joliet); the root's is 0x00.
    pub(super) fn dir_ids(&self) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let mut iso = vec![vec![0]; self.dirs.len()];
        let mut jol = vec![vec![0]; self.dirs.len()];
        for e in self.dirs.iter().flat_map(|d| &d.entries) {
            if let Kind::Dir(c) = e.kind {
                iso[c] = e.iso_id.clone();
                jol[c] = e.jol_id.clone().unwrap_or_default();
            }
        }
        (iso, jol)
    }

    /// Breadth-first directory order (path table order) following each directory's `order`.
    fn bfs(&self, order: impl Fn(&Dir) -> &[usize]) -> Vec<usize> {
        let mut queue = vec![0];
        let mut i = 0;
        while i < queue.len() {
            let d = &self.dirs[queue[i]];
            for &e in order(d) {
                if let Kind::Dir(c) = d.entries[e].kind {
                    queue.push(c);
                }
            }
            i += 1;
        }
        queue
    }

    /// Gives every structure its sectors, in the order of the module header in `mod.rs`.
    pub(super) fn allocate(&mut self, opts: &IsoOptions) -> Result<Places, IsoError> {
        let iso_bfs = self.bfs(|d| &d.iso_order);
        let jol_bfs = self.bfs(|d| &d.jol_order);
        let (iso_ids, jol_ids) = self.dir_ids();
        let iso_pt_size = path_table::size(iso_bfs.iter().map(|&d| iso_ids[d].as_slice()));
        let jol_pt_size = path_table::size(jol_bfs.iter().map(|&d| jol_ids[d].as_slice()));
        let iso_sizes: Vec<u64> = (0..self.dirs.len())
            .map(|d| self.dir_size(d, false))
            .collect();
        let jol_sizes: Vec<u64> = (0..self.dirs.len())
            .map(|d| self.dir_size(d, true))
            .collect();

        let mut next = u64::from(PVD_LBA) + 1;
        let mut alloc = |bytes: u64| {
            let at = next;
            next += bytes.div_ceil(SECTOR);
            at
        };
        let boot_record = opts.boot.as_ref().map(|_| alloc(SECTOR));
        let svd = alloc(SECTOR);
        let terminator = alloc(SECTOR);
        let path_tables = [
            alloc(iso_pt_size),
            alloc(iso_pt_size),
            alloc(jol_pt_size),
            alloc(jol_pt_size),
        ];
        // Directory and file LBAs are cut to u32 here; `space_sectors` below rejects any image
        // where that could lose bits.
        for &d in &iso_bfs {
            let lba = alloc(iso_sizes[d]) as u32;
            self.dirs[d].iso = Placed {
                lba,
                size: iso_sizes[d] as u32,
            };
        }
        let ce_start = alloc(0);
        let mut ce_pos = 0u64;
        for &di in &iso_bfs {
            let d = &mut self.dirs[di];
            let mut suas: Vec<Option<&mut Sua>> =
                d.entries.iter_mut().map(|e| Some(&mut e.sua)).collect();
            let in_order = d.iso_order.iter().filter_map(|&i| suas[i].take());
            let all: Vec<&mut Sua> = [&mut d.dot, &mut d.dotdot]
                .into_iter()
                .chain(in_order)
                .collect();
            for sua in all {
                let lens: Vec<u64> = sua.area_lens().map(|l| l as u64).collect();
                for len in lens {
                    if ce_pos % SECTOR + len > SECTOR {
                        ce_pos = ce_pos.next_multiple_of(SECTOR);
                    }
                    let lba = (ce_start + ce_pos / SECTOR) as u32;
                    sua.area_at.push((lba, (ce_pos % SECTOR) as u32));
                    ce_pos += len;
                }
            }
        }
        let ce_len = ce_pos.next_multiple_of(SECTOR);
        alloc(ce_len);
        for &d in &jol_bfs {
            let lba = alloc(jol_sizes[d]) as u32;
            self.dirs[d].jol = Placed {
                lba,
                size: jol_sizes[d] as u32,
            };
        }
        let catalog = opts.boot.as_ref().map(|_| alloc(SECTOR));
        // Tree order, the EFI image last: the GPT maps it as the ESP right before the tail.
        let mut file_order: Vec<usize> = (0..self.files.len())
            .filter(|&f| Some(f) != self.efi)
            .collect();
        file_order.extend(self.efi);
        for &f in &file_order {
            let size = self.files[f].map.size();
            if size > 0 {
                self.files[f].lba = alloc(size) as u32;
            }
        }
        let tail_offset = alloc(0) * SECTOR;
        let total = tail_offset + opts.tail_bytes;
        let space_sectors = u32::try_from(total / SECTOR).map_err(|_| IsoError::TooLarge(total))?;
        Ok(Places {
            iso_bfs,
            jol_bfs,
            boot_record,
            svd,
            terminator,
            path_tables,
            iso_pt_size,
            jol_pt_size,
            ce_start,
            ce_len,
            catalog,
            file_order,
            tail_offset,
            space_sectors,
        })
    }
}
