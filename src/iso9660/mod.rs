//! The ISO 9660 planner: a [`Node`] tree becomes the layout of an ISO 9660 image with Rock Ridge,
//! Joliet and El Torito (BIOS no-emulation + EFI), equivalent to what xorriso writes with
//! `-iso-level 3 -full-iso9660-filenames -joliet -r` and the nixpkgs El Torito options.
//!
//! Layout, in 2048-byte sectors:
//! `0..16` system area (filled by the hybrid module at [`IsoLayout::finish`]) · 16 primary volume
//! descriptor · 17 El Torito boot record (with boot) · Joliet supplementary descriptor · terminator ·
//! L and M path tables (ISO 9660, then Joliet) · ISO 9660 directories (path-table order) · Rock Ridge
//! continuation areas · Joliet directories · boot catalog · file data in tree order, the EFI image
//! last · the tail (backup GPT), counted in the volume space size.
//!
//! File data is embedded from the content maps, never copied. A file larger than 0xFFFFF800 bytes is
//! contiguous and described by several records with the multi-extent flag on all but the last.
//! Empty files and symlinks get extent 0 and length 0, as xorriso writes them. Directory nesting
//! deeper than ISO 9660's eight levels is an error: relocation (`RR_MOVED`) is not implemented.

mod dir_record;
mod el_torito;
mod joliet;
mod names;
mod path_table;
mod rock_ridge;
mod volume;

use crate::extent::{Builder, ExtentMap, ReadError, Source};
use crate::tree::{Meta, Node, NodeKind};
use dir_record::{Record, FLAG_DIR, FLAG_MULTI_EXTENT, MAX_RECORD};
use rock_ridge::Sua;
use std::collections::BTreeMap;
use std::sync::Arc;

pub(crate) const SECTOR: u64 = 2048;
/// Sectors 0..16, left to the hybrid MBR/GPT.
const SYSTEM_AREA: u64 = 16 * SECTOR;
/// Largest extent of one directory record: 4 GiB minus one sector, so the next one stays aligned.
const MAX_EXTENT: u64 = 0xFFFF_F800;
/// ECMA-119 6.8.2.1: the root is level 1.
const MAX_LEVEL: usize = 8;
const PVD_LBA: u32 = 16;

#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    #[error("volume ID {0:?}: must be 1 to 32 characters of A-Z a-z 0-9 _ - .")]
    VolumeId(String),
    #[error("{field} {value:?}: must be at most 128 printable ASCII characters")]
    TextField { field: &'static str, value: String },
    #[error("tail of {0} bytes is not a multiple of 2048")]
    TailNotAligned(u64),
    #[error("the root of the ISO tree is not a directory")]
    RootNotDir,
    #[error("{path}: invalid file name")]
    BadName { path: String },
    #[error("{path}: directory nested {level} levels deep; ISO 9660 allows {MAX_LEVEL} (relocation is not supported)")]
    TooDeep { path: String, level: usize },
    #[error("{0} directories; path tables can number at most 65535")]
    TooManyDirectories(usize),
    #[error("boot image {0}: no such regular file in the tree")]
    BootImageMissing(String),
    #[error(
        "BIOS boot image {path}: {size} bytes; needs 64 bytes to 4 GiB for the boot info table"
    )]
    BiosImageSize { path: String, size: u64 },
    #[error("boot catalog {0}: its directory is missing or not a directory")]
    CatalogPath(String),
    #[error("image of {0} bytes exceeds the 2^32 sectors ISO 9660 can address")]
    TooLarge(u64),
    #[error("reading the BIOS boot image: {0}")]
    Read(#[from] ReadError),
}

#[derive(Clone, Debug)]
pub struct IsoOptions {
    /// ≤ 32 characters of `A-Z a-z 0-9 _ - .` (nixpkgs uses e.g. `nixos-shinji-25.11-x86_64`).
    pub volume_id: String,
    pub application_id: String,
    pub publisher: String,
    /// Volume creation/modification dates; file dates come from each node's `Meta::mtime`.
    pub timestamp: i64,
    pub boot: Option<BootOptions>,
    /// Reserved at the very end (backup GPT); a multiple of 2048, counted in the volume space size.
    pub tail_bytes: u64,
}

#[derive(Clone, Debug)]
pub struct BootOptions {
    /// Added to the tree, e.g. `.boot.cat`.
    pub catalog_path: String,
    /// No-emulation, load size 4, boot info table patched into the served bytes.
    pub bios_image: String,
    /// Platform 0xEF section; see `el_torito` for the sector count of images ≥ 32 MiB.
    pub efi_image: Option<String>,
}

enum Kind {
    Dir(usize),
    File(usize),
    Symlink(Vec<u8>),
    Catalog,
}

struct Entry {
    name: Vec<u8>,
    meta: Meta,
    ino: u32,
    kind: Kind,
    iso_id: Vec<u8>,
    /// UCS-2 BE; `None` for symlinks, which Joliet cannot hold.
    jol_id: Option<Vec<u8>>,
    sua: Sua,
}

#[derive(Clone, Copy, Default)]
struct Placed {
    lba: u32,
    size: u32,
}

struct Dir {
    path: String,
    meta: Meta,
    ino: u32,
    parent: usize,
    entries: Vec<Entry>,
    iso_order: Vec<usize>,
    jol_order: Vec<usize>,
    dot: Sua,
    dotdot: Sua,
    iso: Placed,
    jol: Placed,
}

struct FileData {
    path: String,
    map: Arc<ExtentMap>,
    lba: u32,
}

enum RegionData {
    Bytes(Arc<[u8]>),
    Map(Arc<ExtentMap>),
}

struct Region {
    offset: u64,
    label: String,
    data: RegionData,
}

/// A planned image: every region's place, before the system area and the tail are known.
pub struct IsoLayout {
    regions: Vec<Region>,
    files: BTreeMap<String, (u64, u64)>,
    tail_offset: u64,
    tail_bytes: u64,
}

fn normalise(path: &str) -> String {
    format!("/{}", path.trim_matches('/'))
}

struct Collector {
    dirs: Vec<Dir>,
    files: Vec<FileData>,
    next_ino: u32,
    /// (parent directory path, name, meta) of the boot catalog.
    catalog: Option<(String, Vec<u8>, Meta)>,
    catalog_placed: bool,
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
        let idx = self.dirs.len();
        let ino = self.ino();
        self.dirs.push(Dir {
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
        let catalog = match &self.catalog {
            Some((dir, name, meta)) if *dir == path => Some((name.clone(), *meta)),
            _ => None,
        };
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
            if catalog.as_ref().is_some_and(|(n, _)| n == name) {
                continue;
            }
            let (kind, ino) = match &child.kind {
                NodeKind::Dir(_) => {
                    let d = self.dir(child, cpath, idx, level + 1)?;
                    (Kind::Dir(d), self.dirs[d].ino)
                }
                NodeKind::File(map) => {
                    self.files.push(FileData {
                        path: cpath,
                        map: map.clone(),
                        lba: 0,
                    });
                    (Kind::File(self.files.len() - 1), self.ino())
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
        self.dirs[idx].entries = entries;
        Ok(idx)
    }
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

fn validate(opts: &IsoOptions) -> Result<(), IsoError> {
    let v = &opts.volume_id;
    if v.is_empty()
        || v.len() > 32
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(IsoError::VolumeId(v.clone()));
    }
    for (field, value) in [
        ("application ID", &opts.application_id),
        ("publisher", &opts.publisher),
    ] {
        if value.len() > 128 || !value.bytes().all(|b| (0x20..0x7F).contains(&b)) {
            return Err(IsoError::TextField {
                field,
                value: value.clone(),
            });
        }
    }
    if !opts.tail_bytes.is_multiple_of(SECTOR) {
        return Err(IsoError::TailNotAligned(opts.tail_bytes));
    }
    Ok(())
}

/// Breadth-first directory order (the path table order) following each directory's `order`.
fn bfs(dirs: &[Dir], order: impl Fn(&Dir) -> &[usize]) -> Vec<usize> {
    let mut queue = vec![0];
    let mut i = 0;
    while i < queue.len() {
        let d = &dirs[queue[i]];
        for &e in order(d) {
            if let Kind::Dir(c) = d.entries[e].kind {
                queue.push(c);
            }
        }
        i += 1;
    }
    queue
}

/// (LBA, length, flags) of each record describing a file of `size` bytes at `lba`.
fn file_extents(lba: u32, size: u64) -> Vec<(u32, u32, u8)> {
    if size == 0 {
        return vec![(0, 0, 0)];
    }
    let n = size.div_ceil(MAX_EXTENT);
    (0..n)
        .map(|i| {
            let off = i * MAX_EXTENT;
            let len = MAX_EXTENT.min(size - off) as u32;
            let flags = if i + 1 < n { FLAG_MULTI_EXTENT } else { 0 };
            (lba + (off / SECTOR) as u32, len, flags)
        })
        .collect()
}

fn records_of(size: u64) -> usize {
    size.div_ceil(MAX_EXTENT).max(1) as usize
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// Rock Ridge entries of a directory's `.` (`root` adds SP and ER) or `..` record.
fn dot_entries(d: &Dir, nlink: u32, root_dot: bool) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    if root_dot {
        v.push(rock_ridge::sp());
    }
    v.push(rock_ridge::px(
        S_IFDIR | (d.meta.mode & 0o7777),
        nlink,
        d.meta.uid,
        d.meta.gid,
        d.ino,
    ));
    v.push(rock_ridge::tf(d.meta.mtime));
    if root_dot {
        v.push(rock_ridge::er());
    }
    v
}

pub fn plan(root: &Node, opts: &IsoOptions) -> Result<IsoLayout, IsoError> {
    validate(opts)?;
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
        dirs: Vec::new(),
        files: Vec::new(),
        next_ino: 0,
        catalog,
        catalog_placed: false,
    };
    c.dir(root, String::new(), 0, 1)?;
    if let (Some(b), false) = (&opts.boot, c.catalog_placed) {
        return Err(IsoError::CatalogPath(b.catalog_path.clone()));
    }
    let Collector {
        mut dirs,
        mut files,
        ..
    } = c;

    let find_file = |path: &str| {
        let p = normalise(path);
        files
            .iter()
            .position(|f| f.path == p)
            .ok_or(IsoError::BootImageMissing(path.to_string()))
    };
    let bios = opts
        .boot
        .as_ref()
        .map(|b| find_file(&b.bios_image))
        .transpose()?;
    let efi = opts
        .boot
        .as_ref()
        .and_then(|b| b.efi_image.as_deref())
        .map(find_file)
        .transpose()?;

    name_entries(&mut dirs);
    let nlinks: Vec<u32> = dirs
        .iter()
        .map(|d| {
            2 + d
                .entries
                .iter()
                .filter(|e| matches!(e.kind, Kind::Dir(_)))
                .count() as u32
        })
        .collect();
    let dot_budget = MAX_RECORD - dir_record::header_len(1);
    for di in 0..dirs.len() {
        let p = dirs[di].parent;
        let dot = Sua::split(&dot_entries(&dirs[di], nlinks[di], di == 0), dot_budget);
        let dotdot = Sua::split(&dot_entries(&dirs[p], nlinks[p], false), dot_budget);
        let d = &mut dirs[di];
        d.dot = dot;
        d.dotdot = dotdot;
        for e in &mut d.entries {
            let (ftype, nlink) = match &e.kind {
                Kind::Dir(c) => (S_IFDIR, nlinks[*c]),
                Kind::File(_) | Kind::Catalog => (S_IFREG, 1),
                Kind::Symlink(_) => (S_IFLNK, 1),
            };
            let mut items = vec![
                rock_ridge::px(
                    ftype | (e.meta.mode & 0o7777),
                    nlink,
                    e.meta.uid,
                    e.meta.gid,
                    e.ino,
                ),
                rock_ridge::tf(e.meta.mtime),
            ];
            items.extend(rock_ridge::nm(&e.name));
            if let Kind::Symlink(t) = &e.kind {
                items.extend(rock_ridge::sl(t));
            }
            e.sua = Sua::split(&items, MAX_RECORD - dir_record::header_len(e.iso_id.len()));
        }
    }

    let iso_bfs = bfs(&dirs, |d| &d.iso_order);
    let jol_bfs = bfs(&dirs, |d| &d.jol_order);
    if dirs.len() > usize::from(u16::MAX) {
        return Err(IsoError::TooManyDirectories(dirs.len()));
    }
    let file_size = |k: &Kind| match k {
        Kind::File(f) => files[*f].map.size(),
        _ => 0,
    };
    let iso_dir_size = |d: &Dir| {
        let mut lens = vec![
            dir_record::record_len(1, d.dot.inline_len()),
            dir_record::record_len(1, d.dotdot.inline_len()),
        ];
        for &i in &d.iso_order {
            let e = &d.entries[i];
            let len = dir_record::record_len(e.iso_id.len(), e.sua.inline_len());
            lens.extend(std::iter::repeat_n(len, records_of(file_size(&e.kind))));
        }
        dir_record::pack_offsets(&lens).1
    };
    let jol_dir_size = |d: &Dir| {
        let mut lens = vec![34, 34];
        for &i in &d.jol_order {
            let e = &d.entries[i];
            let id_len = e.jol_id.as_ref().map_or(0, Vec::len);
            lens.extend(std::iter::repeat_n(
                dir_record::record_len(id_len, 0),
                records_of(file_size(&e.kind)),
            ));
        }
        dir_record::pack_offsets(&lens).1
    };
    let iso_sizes: Vec<u64> = dirs.iter().map(iso_dir_size).collect();
    let jol_sizes: Vec<u64> = dirs.iter().map(jol_dir_size).collect();

    // Directory identifiers as the path tables see them.
    let mut iso_ids: Vec<Vec<u8>> = vec![vec![0]; dirs.len()];
    let mut jol_ids: Vec<Vec<u8>> = vec![vec![0]; dirs.len()];
    for d in &dirs {
        for e in &d.entries {
            if let Kind::Dir(c) = e.kind {
                iso_ids[c] = e.iso_id.clone();
                jol_ids[c] = e.jol_id.clone().unwrap_or_default();
            }
        }
    }
    let iso_pt_size = path_table::size(iso_bfs.iter().map(|&d| iso_ids[d].as_slice()));
    let jol_pt_size = path_table::size(jol_bfs.iter().map(|&d| jol_ids[d].as_slice()));

    // Sector allocation.
    let mut next = u64::from(PVD_LBA) + 1;
    let mut alloc = |bytes: u64| {
        let at = next;
        next += bytes.div_ceil(SECTOR);
        at
    };
    let boot_record_lba = opts.boot.as_ref().map(|_| alloc(SECTOR));
    let svd_lba = alloc(SECTOR);
    let term_lba = alloc(SECTOR);
    let pt = [
        alloc(iso_pt_size),
        alloc(iso_pt_size),
        alloc(jol_pt_size),
        alloc(jol_pt_size),
    ];
    for &d in &iso_bfs {
        dirs[d].iso = Placed {
            lba: alloc(iso_sizes[d]) as u32,
            size: iso_sizes[d] as u32,
        };
    }
    let ce_start = alloc(0);
    let mut ce_pos = 0u64;
    for &di in &iso_bfs {
        let d = &mut dirs[di];
        let order = d.iso_order.clone();
        let suas = [&mut d.dot, &mut d.dotdot].into_iter();
        let mut entry_suas: Vec<&mut Sua> = Vec::new();
        let mut by_idx: Vec<Option<&mut Sua>> =
            d.entries.iter_mut().map(|e| Some(&mut e.sua)).collect();
        for i in order {
            if let Some(s) = by_idx[i].take() {
                entry_suas.push(s);
            }
        }
        for sua in suas.chain(entry_suas) {
            let lens: Vec<u64> = sua.area_lens().map(|l| l as u64).collect();
            for len in lens {
                if ce_pos % SECTOR + len > SECTOR {
                    ce_pos = ce_pos.next_multiple_of(SECTOR);
                }
                sua.area_at.push((
                    (ce_start + ce_pos / SECTOR) as u32,
                    (ce_pos % SECTOR) as u32,
                ));
                ce_pos += len;
            }
        }
    }
    let ce_len = ce_pos.next_multiple_of(SECTOR);
    let ce_lba = alloc(ce_len);
    debug_assert_eq!(ce_lba, ce_start);
    for &d in &jol_bfs {
        dirs[d].jol = Placed {
            lba: alloc(jol_sizes[d]) as u32,
            size: jol_sizes[d] as u32,
        };
    }
    let catalog_lba = opts.boot.as_ref().map(|_| alloc(SECTOR));
    let mut file_order: Vec<usize> = (0..files.len()).filter(|&f| Some(f) != efi).collect();
    file_order.extend(efi);
    for &f in &file_order {
        let size = files[f].map.size();
        if size > 0 {
            files[f].lba = alloc(size) as u32;
        }
    }
    let tail_offset = alloc(0) * SECTOR;
    let total = tail_offset + opts.tail_bytes;
    let space_sectors = u32::try_from(total / SECTOR).map_err(|_| IsoError::TooLarge(total))?;

    let mut regions = Vec::new();
    let mut bytes = |offset: u64, label: String, data: Vec<u8>| {
        regions.push(Region {
            offset,
            label,
            data: RegionData::Bytes(data.into()),
        })
    };
    let root_record = |p: Placed, mtime: i64| {
        Record {
            lba: p.lba,
            size: p.size,
            flags: FLAG_DIR,
            mtime,
            id: &[0],
            sua: &[],
        }
        .encode()
    };
    let descriptor = |joliet: bool, pt_size: u64, l: u64, m: u64, root: Placed| {
        volume::Descriptor {
            joliet,
            volume_id: &opts.volume_id,
            publisher: &opts.publisher,
            application_id: &opts.application_id,
            space_sectors,
            path_table_size: pt_size as u32,
            l_path_table: l as u32,
            m_path_table: m as u32,
            root_record: &root_record(root, dirs[0].meta.mtime),
            timestamp: opts.timestamp,
        }
        .encode()
    };
    bytes(
        u64::from(PVD_LBA) * SECTOR,
        "primary volume descriptor".into(),
        descriptor(false, iso_pt_size, pt[0], pt[1], dirs[0].iso),
    );
    if let (Some(br), Some(cat)) = (boot_record_lba, catalog_lba) {
        bytes(
            br * SECTOR,
            "El Torito boot record".into(),
            el_torito::boot_record(cat as u32),
        );
    }
    bytes(
        svd_lba * SECTOR,
        "Joliet supplementary volume descriptor".into(),
        descriptor(true, jol_pt_size, pt[2], pt[3], dirs[0].jol),
    );
    bytes(
        term_lba * SECTOR,
        "volume descriptor set terminator".into(),
        volume::terminator(),
    );

    let mut number = vec![0u16; dirs.len()];
    for (i, &d) in iso_bfs.iter().enumerate() {
        number[d] = (i + 1) as u16;
    }
    let iso_pt: Vec<path_table::PathEntry> = iso_bfs
        .iter()
        .map(|&d| path_table::PathEntry {
            id: &iso_ids[d],
            lba: dirs[d].iso.lba,
            parent: number[dirs[d].parent],
        })
        .collect();
    for (i, &d) in jol_bfs.iter().enumerate() {
        number[d] = (i + 1) as u16;
    }
    let jol_pt: Vec<path_table::PathEntry> = jol_bfs
        .iter()
        .map(|&d| path_table::PathEntry {
            id: &jol_ids[d],
            lba: dirs[d].jol.lba,
            parent: number[dirs[d].parent],
        })
        .collect();
    bytes(
        pt[0] * SECTOR,
        "ISO 9660 L path table".into(),
        path_table::encode(&iso_pt, false),
    );
    bytes(
        pt[1] * SECTOR,
        "ISO 9660 M path table".into(),
        path_table::encode(&iso_pt, true),
    );
    bytes(
        pt[2] * SECTOR,
        "Joliet L path table".into(),
        path_table::encode(&jol_pt, false),
    );
    bytes(
        pt[3] * SECTOR,
        "Joliet M path table".into(),
        path_table::encode(&jol_pt, true),
    );

    let catalog_lba32 = catalog_lba.unwrap_or(0) as u32;
    let target = |e: &Entry, joliet: bool| -> Vec<(u32, u32, u8)> {
        match &e.kind {
            Kind::Dir(c) => {
                let p = if joliet { dirs[*c].jol } else { dirs[*c].iso };
                vec![(p.lba, p.size, FLAG_DIR)]
            }
            Kind::File(f) => file_extents(files[*f].lba, files[*f].map.size()),
            Kind::Symlink(_) => vec![(0, 0, 0)],
            Kind::Catalog => vec![(catalog_lba32, SECTOR as u32, 0)],
        }
    };
    let label_path = |d: &Dir| {
        if d.path.is_empty() {
            "/".to_string()
        } else {
            d.path.clone()
        }
    };
    for &di in &iso_bfs {
        let d = &dirs[di];
        let parent = &dirs[d.parent];
        let dot_sua = d.dot.encode_inline();
        let dotdot_sua = d.dotdot.encode_inline();
        let mut records = vec![
            Record {
                lba: d.iso.lba,
                size: d.iso.size,
                flags: FLAG_DIR,
                mtime: d.meta.mtime,
                id: &[0],
                sua: &dot_sua,
            }
            .encode(),
            Record {
                lba: parent.iso.lba,
                size: parent.iso.size,
                flags: FLAG_DIR,
                mtime: parent.meta.mtime,
                id: &[1],
                sua: &dotdot_sua,
            }
            .encode(),
        ];
        for &i in &d.iso_order {
            let e = &d.entries[i];
            let sua = e.sua.encode_inline();
            for (lba, size, flags) in target(e, false) {
                records.push(
                    Record {
                        lba,
                        size,
                        flags,
                        mtime: e.meta.mtime,
                        id: &e.iso_id,
                        sua: &sua,
                    }
                    .encode(),
                );
            }
        }
        bytes(
            u64::from(d.iso.lba) * SECTOR,
            format!("ISO 9660 directory {}", label_path(d)),
            dir_record::pack(&records),
        );
    }
    if ce_len > 0 {
        let mut area = vec![0u8; ce_len as usize];
        for d in &dirs {
            for sua in [&d.dot, &d.dotdot]
                .into_iter()
                .chain(d.entries.iter().map(|e| &e.sua))
            {
                for (i, &(lba, off)) in sua.area_at.iter().enumerate() {
                    let at = ((u64::from(lba) - ce_start) * SECTOR) as usize + off as usize;
                    let b = sua.encode_area(i);
                    area[at..at + b.len()].copy_from_slice(&b);
                }
            }
        }
        bytes(
            ce_start * SECTOR,
            "Rock Ridge continuation areas".into(),
            area,
        );
    }
    for &di in &jol_bfs {
        let d = &dirs[di];
        let parent = &dirs[d.parent];
        let mut records = vec![
            Record {
                lba: d.jol.lba,
                size: d.jol.size,
                flags: FLAG_DIR,
                mtime: d.meta.mtime,
                id: &[0],
                sua: &[],
            }
            .encode(),
            Record {
                lba: parent.jol.lba,
                size: parent.jol.size,
                flags: FLAG_DIR,
                mtime: parent.meta.mtime,
                id: &[1],
                sua: &[],
            }
            .encode(),
        ];
        for &i in &d.jol_order {
            let e = &d.entries[i];
            let id = e.jol_id.as_deref().unwrap_or_default();
            for (lba, size, flags) in target(e, true) {
                records.push(
                    Record {
                        lba,
                        size,
                        flags,
                        mtime: e.meta.mtime,
                        id,
                        sua: &[],
                    }
                    .encode(),
                );
            }
        }
        bytes(
            u64::from(d.jol.lba) * SECTOR,
            format!("Joliet directory {}", label_path(d)),
            dir_record::pack(&records),
        );
    }

    let mut file_table = BTreeMap::new();
    if let (Some(b), Some(cat), Some(bios)) = (&opts.boot, catalog_lba, bios) {
        let efi_entry = efi.map(|f| (files[f].lba, el_torito::efi_sectors(files[f].map.size())));
        bytes(
            cat * SECTOR,
            format!("El Torito boot catalog {}", normalise(&b.catalog_path)),
            el_torito::catalog(files[bios].lba, efi_entry),
        );
        file_table.insert(normalise(&b.catalog_path), (cat, SECTOR));
        let f = &files[bios];
        let size = f.map.size();
        if !(64..=u64::from(u32::MAX)).contains(&size) {
            return Err(IsoError::BiosImageSize {
                path: f.path.clone(),
                size,
            });
        }
        let image = f.map.to_vec()?;
        let table = el_torito::boot_info_table(PVD_LBA, f.lba, &image);
        files[bios].map = Arc::new(f.map.with_patch("boot info table", 8, &table));
    }
    for &fi in &file_order {
        let f = &files[fi];
        file_table.insert(f.path.clone(), (u64::from(f.lba), f.map.size()));
        if f.map.size() > 0 {
            regions.push(Region {
                offset: u64::from(f.lba) * SECTOR,
                label: f.path.clone(),
                data: RegionData::Map(f.map.clone()),
            });
        }
    }
    regions.sort_by_key(|r| r.offset);
    Ok(IsoLayout {
        regions,
        files: file_table,
        tail_offset,
        tail_bytes: opts.tail_bytes,
    })
}

/// Assigns ISO 9660 and Joliet identifiers and the sort orders of every directory.
fn name_entries(dirs: &mut [Dir]) {
    for d in dirs {
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
        let mut iso_order: Vec<usize> = (0..d.entries.len()).collect();
        iso_order.sort_by(|&a, &b| {
            names::sort_key(&d.entries[a].iso_id).cmp(&names::sort_key(&d.entries[b].iso_id))
        });
        let mut jol_order = jol_idx;
        jol_order.sort_by(|&a, &b| d.entries[a].jol_id.cmp(&d.entries[b].jol_id));
        d.iso_order = iso_order;
        d.jol_order = jol_order;
    }
}

impl IsoLayout {
    /// LBA (2048-byte sectors) and size in bytes of the file at `path` (`/`-separated, leading `/`
    /// optional). Empty files report LBA 0.
    pub fn file_extent(&self, path: &str) -> Option<(u64, u64)> {
        self.files.get(&normalise(path)).copied()
    }

    /// Bytes, a multiple of 2048, tail included.
    pub fn total_size(&self) -> u64 {
        self.tail_offset + self.tail_bytes
    }

    pub fn tail_offset(&self) -> u64 {
        self.tail_offset
    }

    /// The image. `system_area` fills bytes 0..32768 (shorter is zero-padded, longer is cut);
    /// `tail` fills the reserved tail (likewise padded or cut to `tail_bytes`).
    pub fn finish(self, system_area: &[u8], tail: &[u8]) -> ExtentMap {
        let mut b = Builder::new();
        let mut sa = vec![0u8; SYSTEM_AREA as usize];
        let n = system_area.len().min(sa.len());
        sa[..n].copy_from_slice(&system_area[..n]);
        b.bytes("system area", sa);
        for r in &self.regions {
            if r.offset > b.position() {
                b.zeros("unused", r.offset - b.position());
            }
            match &r.data {
                RegionData::Bytes(bytes) => b.push(
                    &r.label,
                    bytes.len() as u64,
                    Source::Bytes(bytes.clone(), 0),
                ),
                RegionData::Map(m) => b.append(&r.label, m),
            }
            b.pad_to("sector padding", SECTOR);
        }
        if self.tail_offset > b.position() {
            b.zeros("unused", self.tail_offset - b.position());
        }
        let mut t = vec![0u8; self.tail_bytes as usize];
        let n = tail.len().min(t.len());
        t[..n].copy_from_slice(&tail[..n]);
        b.bytes("tail", t);
        b.finish()
    }
}
