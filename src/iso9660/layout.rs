//! The planner's model of the tree and the sector allocation.
//!
//! Phases: [`Tree::collect`] flattens the [`Node`] tree into directories (depth-first, root = 0) and
//! files, relocating directories too deep for ISO 9660; [`Tree::name_entries`] gives every entry
//! its ISO 9660 and Joliet identifier and each directory its two sort orders;
//! [`Tree::attach_system_use`] builds the Rock Ridge entries; then [`Tree::allocate`] places
//! everything. Record and area sizes never depend on where things are, so allocation needs no
//! iteration.
//!
//! Relocation (RRIP 1.12 4.1.5, as mkisofs and `xorriso -compliance deep_paths_off` do it): a
//! directory that would be at ISO 9660 level 9 moves, with its subtree, into a relocation directory
//! in the root and starts again at level 3, so a long chain moves every six levels. Its original
//! parent keeps a zero-length placeholder file record with CL; its `..` record points to the
//! relocation directory and carries PL; its record in the relocation directory carries RE. Like
//! libisofs (and unlike mkisofs) the relocation directory's own record carries RE too, so Rock
//! Ridge readers (Linux, libisofs, libarchive) do not show it. The Joliet tree is not relocated:
//! Joliet readers take any depth.
//!
//! libarchive constrains the names: it recognises the relocation directory only as `rr_moved` or
//! `.rr_moved`, taking the first root directory so named, so it is `rr_moved`, or `.rr_moved`
//! when the tree has a file `rr_moved`; a tree with a directory `rr_moved`, or with both names,
//! cannot have directories relocated. It also names a rejoined directory by its record in the
//! relocation directory, so that keeps the original Rock Ridge name even when two relocated
//! directories share it; only their ISO 9660 identifiers differ (`H`, `H1`).

use super::rock_ridge::{self, Item, Sua};
use super::{dir_record, joliet, names, path_table, IsoError, IsoOptions};
use super::{MAX_EXTENT, MAX_LEVEL, PVD_LBA, SECTOR};
use crate::extent::ExtentMap;
use crate::tree::{Meta, Node, NodeKind};
use std::sync::Arc;

pub(super) enum Kind {
    Dir(usize),
    /// A directory too deep for ISO 9660: the placeholder with CL there, the directory in Joliet.
    Deep(usize),
    /// A directory only the ISO 9660 tree has and Rock Ridge readers skip (RE): `rr_moved` in the
    /// root, and each relocated directory in `rr_moved`.
    Moved(usize),
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
    /// The parent in the original tree (Joliet, Rock Ridge).
    pub parent: usize,
    /// The parent in the ISO 9660 tree: `rr_moved` for a relocated directory, else `parent`.
    pub iso_parent: usize,
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
    /// Directories to move into `rr_moved`, with their names, in tree order.
    relocated: Vec<(usize, Vec<u8>)>,
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

    /// `level` is the directory's level in the ISO 9660 tree.
    fn dir(
        &mut self,
        node: &Node,
        path: String,
        parent: usize,
        level: usize,
    ) -> Result<usize, IsoError> {
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
            iso_parent: parent,
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
                NodeKind::Dir(_) if level < MAX_LEVEL => {
                    let d = self.dir(child, cpath, idx, level + 1)?;
                    (Kind::Dir(d), self.tree.dirs[d].ino)
                }
                NodeKind::Dir(_) => {
                    let d = self.dir(child, cpath, idx, RELOCATED_LEVEL)?;
                    self.relocated.push((d, name.clone()));
                    (Kind::Deep(d), self.tree.dirs[d].ino)
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

    /// Adds `rr_moved` to the root, holding the relocated directories, when there are any.
    fn relocation_dir(&mut self, mtime: i64) -> Result<(), IsoError> {
        if self.relocated.is_empty() {
            return Ok(());
        }
        let root = &self.tree.dirs[0];
        let taken = |n: &[u8]| root.entries.iter().find(|e| e.name == n);
        let name: &[u8] = match (taken(b"rr_moved"), taken(b".rr_moved")) {
            (None, _) => b"rr_moved",
            (Some(e), None) if !matches!(e.kind, Kind::Dir(_)) => b".rr_moved",
            _ => {
                let (d, _) = &self.relocated[0];
                let path = self.tree.dirs[*d].path.clone();
                return Err(IsoError::RelocationDir { path });
            }
        };
        let rr = self.tree.dirs.len();
        let ino = self.ino();
        let meta = Meta {
            mode: 0o555,
            uid: 0,
            gid: 0,
            mtime,
        };
        let mut entries: Vec<Entry> = std::mem::take(&mut self.relocated)
            .into_iter()
            .map(|(d, name)| {
                let dir = &mut self.tree.dirs[d];
                dir.iso_parent = rr;
                entry(name, dir.meta, dir.ino, Kind::Moved(d))
            })
            .collect();
        // Stable: equal names stay in tree order.
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let root = &mut self.tree.dirs[0];
        root.entries
            .push(entry(name.to_vec(), meta, ino, Kind::Moved(rr)));
        root.entries.sort_by(|a, b| a.name.cmp(&b.name));
        self.tree.dirs.push(Dir {
            path: format!("/{}", String::from_utf8_lossy(name)),
            meta,
            ino,
            parent: 0,
            iso_parent: 0,
            entries,
            iso_order: Vec::new(),
            jol_order: Vec::new(),
            dot: Sua::default(),
            dotdot: Sua::default(),
            iso: Placed::default(),
            jol: Placed::default(),
        });
        Ok(())
    }
}

/// ISO 9660 level of a relocated directory: root 1, `rr_moved` 2.
const RELOCATED_LEVEL: usize = 3;

/// The directory an entry leads to in the ISO 9660 (`joliet == false`) or Joliet tree.
pub(super) fn child_dir(kind: &Kind, joliet: bool) -> Option<usize> {
    match *kind {
        Kind::Dir(c) => Some(c),
        Kind::Deep(c) if joliet => Some(c),
        Kind::Moved(c) if !joliet => Some(c),
        _ => None,
    }
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// Rock Ridge entries of a directory's `.` (`root_dot` adds SP first and ER) or `..` record.
fn dot_entries(d: &Dir, nlink: u32, root_dot: bool) -> Vec<Item> {
    let mut v = Vec::new();
    if root_dot {
        v.push(rock_ridge::sp().into());
    }
    let mode = S_IFDIR | (d.meta.mode & 0o7777);
    v.push(rock_ridge::px(mode, nlink, d.meta.uid, d.meta.gid, d.ino).into());
    v.push(rock_ridge::tf(d.meta.mtime).into());
    if root_dot {
        v.push(rock_ridge::er().into());
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
            relocated: Vec::new(),
        };
        c.dir(root, String::new(), 0, 1)?;
        c.relocation_dir(opts.timestamp)?;
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
                .map(|e| {
                    let dir = matches!(e.kind, Kind::Dir(_) | Kind::Deep(_) | Kind::Moved(_));
                    (e.name.as_slice(), dir)
                })
                .collect();
            let iso = names::iso_identifiers(&kids);
            let jol_idx: Vec<usize> = (0..d.entries.len())
                .filter(|&i| !matches!(d.entries[i].kind, Kind::Symlink(_) | Kind::Moved(_)))
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
        // Links as a Rock Ridge reader sees them: relocated directories count in their original
        // parent, the hidden `rr_moved` nowhere.
        let nlinks: Vec<u32> = self
            .dirs
            .iter()
            .map(|d| {
                let subdirs = d
                    .entries
                    .iter()
                    .filter(|e| matches!(e.kind, Kind::Dir(_) | Kind::Deep(_)));
                2 + subdirs.count() as u32
            })
            .collect();
        let dot_budget = dir_record::MAX_RECORD - dir_record::header_len(1);
        for di in 0..self.dirs.len() {
            let p = self.dirs[di].parent;
            let dot = dot_entries(&self.dirs[di], nlinks[di], di == 0);
            let mut dotdot = dot_entries(&self.dirs[p], nlinks[p], false);
            if self.dirs[di].iso_parent != p {
                dotdot.push(rock_ridge::pl(p));
            }
            let d = &mut self.dirs[di];
            d.dot = Sua::split(&dot, dot_budget);
            d.dotdot = Sua::split(&dotdot, dot_budget);
            for e in &mut d.entries {
                let (ftype, nlink) = match &e.kind {
                    Kind::Dir(c) | Kind::Deep(c) | Kind::Moved(c) => (S_IFDIR, nlinks[*c]),
                    Kind::File(_) | Kind::Catalog => (S_IFREG, 1),
                    Kind::Symlink(_) => (S_IFLNK, 1),
                };
                let mode = ftype | (e.meta.mode & 0o7777);
                let mut items: Vec<Item> =
                    vec![rock_ridge::px(mode, nlink, e.meta.uid, e.meta.gid, e.ino).into()];
                // Right after PX, so they stay in the record itself for all but the longest names.
                match e.kind {
                    Kind::Deep(c) => items.push(rock_ridge::cl(c)),
                    Kind::Moved(_) => items.push(rock_ridge::re().into()),
                    _ => {}
                }
                items.push(rock_ridge::tf(e.meta.mtime).into());
                items.extend(rock_ridge::nm(&e.name).into_iter().map(Item::from));
                if let Kind::Symlink(t) = &e.kind {
                    items.extend(rock_ridge::sl(t).into_iter().map(Item::from));
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
        let parent = if joliet { d.parent } else { d.iso_parent };
        let p = &self.dirs[parent];
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
                target: Target::Dir(parent),
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
                target: match (&e.kind, child_dir(&e.kind, joliet)) {
                    (_, Some(c)) => Target::Dir(c),
                    (Kind::File(f), _) => Target::File(*f),
                    (Kind::Catalog, _) => Target::Catalog,
                    // Symlinks and relocation placeholders.
                    _ => Target::Nothing,
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
            if let Some(c) = child_dir(&e.kind, false) {
                iso[c] = e.iso_id.clone();
            }
            if let Some(c) = child_dir(&e.kind, true) {
                jol[c] = e.jol_id.clone().unwrap_or_default();
            }
        }
        (iso, jol)
    }

    /// Breadth-first directory order (path table order) of the ISO 9660 or Joliet tree.
    fn bfs(&self, joliet: bool) -> Vec<usize> {
        let mut queue = vec![0];
        let mut i = 0;
        while i < queue.len() {
            let d = &self.dirs[queue[i]];
            let order = if joliet { &d.jol_order } else { &d.iso_order };
            for &e in order {
                queue.extend(child_dir(&d.entries[e].kind, joliet));
            }
            i += 1;
        }
        queue
    }

    /// ISO 9660 directories in the order of their extents: path table order, except that the
    /// `rr_moved` subtree comes right after the root, as mkisofs places it. libarchive reads
    /// directories in disk order and joins a relocated directory to its parent when it meets the
    /// placeholder; a relocation nested in another must be met before the outer one is joined,
    /// and the outermost placeholders are all outside `rr_moved`.
    fn iso_extent_order(&self, iso_bfs: &[usize]) -> Vec<usize> {
        let rr = self.dirs[0].entries.iter().find_map(|e| match e.kind {
            Kind::Moved(c) => Some(c),
            _ => None,
        });
        let in_rr = |mut d: usize| {
            while d != 0 {
                if Some(d) == rr {
                    return true;
                }
                d = self.dirs[d].iso_parent;
            }
            false
        };
        let (moved, rest): (Vec<usize>, Vec<usize>) = iso_bfs[1..].iter().partition(|&&d| in_rr(d));
        [&[0][..], &moved, &rest].concat()
    }

    /// Gives every structure its sectors, in the order of the module header in `mod.rs`.
    pub(super) fn allocate(&mut self, opts: &IsoOptions) -> Result<Places, IsoError> {
        let iso_bfs = self.bfs(false);
        let jol_bfs = self.bfs(true);
        let (iso_ids, jol_ids) = self.dir_ids();
        let iso_pt_size = path_table::size(iso_bfs.iter().map(|&d| iso_ids[d].as_slice()));
        let jol_pt_size = path_table::size(jol_bfs.iter().map(|&d| jol_ids[d].as_slice()));
        let iso_sizes: Vec<u64> = (0..self.dirs.len())
            .map(|d| self.dir_size(d, false))
            .collect();
        let jol_sizes: Vec<u64> = (0..self.dirs.len())
            .map(|d| self.dir_size(d, true))
            .collect();
        // A directory is one extent (multi-extent directories are not allowed), sized in 32 bits.
        if let Some(&big) = iso_sizes
            .iter()
            .chain(&jol_sizes)
            .find(|&&n| n > u64::from(u32::MAX))
        {
            return Err(IsoError::DirectoryTooLarge(big));
        }

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
        // where that could lose bits (directory sizes were checked above).
        for d in self.iso_extent_order(&iso_bfs) {
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
