//! The ISO 9660 planner: a [`Node`] tree becomes the layout of an ISO 9660 image with Rock Ridge,
//! Joliet and El Torito (BIOS no-emulation + EFI), equivalent to what xorriso writes with
//! `-iso-level 3 -full-iso9660-filenames -joliet -r` and the nixpkgs El Torito options.
//!
//! Layout, in 2048-byte sectors:
//! `0..16` system area (filled by the hybrid module at [`IsoLayout::finish`]) · 16 primary volume
//! descriptor · 17 El Torito boot record (with boot) · Joliet supplementary descriptor · terminator ·
//! L and M path tables (ISO 9660, then Joliet) · ISO 9660 directories (path-table order, but the
//! relocation directory's subtree first) · Rock Ridge continuation areas · Joliet directories ·
//! boot catalog · file data in tree order, the EFI image last · the tail (backup GPT), counted in
//! the volume space size.
//!
//! File data is embedded from the content maps, never copied. A file larger than 0xFFFFF800 bytes is
//! contiguous and described by several records with the multi-extent flag on all but the last.
//! Empty files and symlinks get extent 0 and length 0: no reader reads a length-0 extent (osirrox,
//! isoinfo, bsdtar, 7z, GRUB and the QEMU boots accept it), where xorriso points them at one
//! shared zeroed block. Directories deeper
//! than ISO 9660's eight levels are relocated into a hidden `rr_moved` with Rock Ridge CL/PL/RE (see
//! `layout`); the Joliet tree keeps the original nesting.

mod dir_record;
mod el_torito;
mod encode;
mod joliet;
mod layout;
mod names;
mod path_table;
mod rock_ridge;
mod volume;

use crate::extent::{Builder, ExtentMap, ReadError, Source};
use crate::tree::Node;
use layout::{normalise, Tree};
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
    #[error("{path}: too deep for ISO 9660, and the root has a directory `rr_moved` or entries `rr_moved` and `.rr_moved`, so there is no name to relocate it under")]
    RelocationDir { path: String },
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
    #[error("a directory listing of {0} bytes; ISO 9660 records hold at most 4 GiB")]
    DirectoryTooLarge(u64),
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

/// Plans the image of `root` (a directory). Reads only the BIOS image (for its boot info table).
pub fn plan(root: &Node, opts: &IsoOptions) -> Result<IsoLayout, IsoError> {
    validate(opts)?;
    let mut tree = Tree::collect(root, opts)?;
    tree.name_entries();
    tree.attach_system_use();
    let places = tree.allocate(opts)?;
    tree.encode(opts, &places)
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
        // Named for `isofs explain`: what a hybrid image keeps there.
        b.bytes(
            "system area (512-byte sector 0: MBR with isohdpfx boot code; 1: GPT header; 2-63: GPT entries)",
            sa,
        );
        for r in &self.regions {
            // Allocation placed every region after the previous one ends; were it otherwise, every
            // later byte would shift, so this stops rather than produce that image.
            assert!(
                r.offset >= b.position(),
                "region {} planned at {} overlaps the one before (ends at {})",
                r.label,
                r.offset,
                b.position()
            );
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
        assert!(
            self.tail_offset >= b.position(),
            "tail planned at {} overlaps the last region (ends at {})",
            self.tail_offset,
            b.position()
        );
        if self.tail_offset > b.position() {
            b.zeros("unused", self.tail_offset - b.position());
        }
        let mut t = vec![0u8; self.tail_bytes as usize];
        let n = tail.len().min(t.len());
        t[..n].copy_from_slice(&tail[..n]);
        b.bytes(
            "tail (padding, backup GPT entries, backup GPT header in the last sector)",
            t,
        );
        b.finish()
    }
}
