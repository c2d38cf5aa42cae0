//! Inode encoders. Every inode starts with the same 16-byte header; uid and gid are indexes into
//! the id table, which here holds the single id 0 (`-all-root`). Basic inodes are used where their
//! 32-bit fields suffice; a file at or past 4 GiB, starting past 4 GiB or with sparse blocks, and a
//! directory listing over 64 KiB or with an index, take the extended form.

use super::dir::IndexEntry;

pub(super) const BASIC_DIR: u16 = 1;
pub(super) const BASIC_FILE: u16 = 2;
pub(super) const BASIC_SYMLINK: u16 = 3;
const EXT_DIR: u16 = 8;
const EXT_FILE: u16 = 9;
/// No fragment / no xattr.
pub(super) const NONE32: u32 = 0xFFFF_FFFF;

fn header(out: &mut Vec<u8>, kind: u16, mode: u16, mtime: u32, number: u32) {
    out.extend_from_slice(&kind.to_le_bytes()); // 0 inode type
    out.extend_from_slice(&mode.to_le_bytes()); // 2 permissions
    out.extend_from_slice(&0u16.to_le_bytes()); // 4 uid index
    out.extend_from_slice(&0u16.to_le_bytes()); // 6 gid index
    out.extend_from_slice(&mtime.to_le_bytes()); // 8 modification time
    out.extend_from_slice(&number.to_le_bytes()); // 12 inode number
}

pub(super) struct DirInode<'a> {
    pub mode: u16,
    pub mtime: u32,
    pub number: u32,
    pub parent: u32,
    pub links: u32,
    /// Listing position: stored block offset from the directory table start, offset inside it.
    pub block: u32,
    pub offset: u16,
    /// Listing bytes + 3 (the kernel counts "." and "..").
    pub size: u32,
    /// See [`super::dir::index`].
    pub index: Vec<IndexEntry<'a>>,
}

pub(super) fn dir(d: &DirInode) -> Vec<u8> {
    let mut o = Vec::with_capacity(40);
    // An index needs the extended inode (as mksquashfs writes it: extended whenever indexed).
    let basic_size = u16::try_from(d.size).ok().filter(|_| d.index.is_empty());
    if let Some(size) = basic_size {
        header(&mut o, BASIC_DIR, d.mode, d.mtime, d.number);
        o.extend_from_slice(&d.block.to_le_bytes()); // 16 directory block start
        o.extend_from_slice(&d.links.to_le_bytes()); // 20 hard link count
        o.extend_from_slice(&size.to_le_bytes()); // 24 file size
        o.extend_from_slice(&d.offset.to_le_bytes()); // 26 offset in block
        o.extend_from_slice(&d.parent.to_le_bytes()); // 28 parent inode number
    } else {
        header(&mut o, EXT_DIR, d.mode, d.mtime, d.number);
        o.extend_from_slice(&d.links.to_le_bytes()); // 16 hard link count
        o.extend_from_slice(&d.size.to_le_bytes()); // 20 file size
        o.extend_from_slice(&d.block.to_le_bytes()); // 24 directory block start
        o.extend_from_slice(&d.parent.to_le_bytes()); // 28 parent inode number
        o.extend_from_slice(&(d.index.len() as u16).to_le_bytes()); // 32 index count (checked)
        o.extend_from_slice(&d.offset.to_le_bytes()); // 34 offset in block
        o.extend_from_slice(&NONE32.to_le_bytes()); // 36 xattr index
        for e in &d.index {
            o.extend_from_slice(&e.index.to_le_bytes()); // 0 header offset in the listing
            o.extend_from_slice(&e.start.to_le_bytes()); // 4 its block, from the table start
            o.extend_from_slice(&((e.name.len() - 1) as u32).to_le_bytes()); // 8 name size - 1
            o.extend_from_slice(e.name); // 12 name
        }
    }
    o
}

pub(super) struct FileInode<'a> {
    pub mode: u16,
    pub mtime: u32,
    pub number: u32,
    pub blocks_start: u64,
    pub size: u64,
    /// Fragment index and offset inside the uncompressed fragment block.
    pub fragment: Option<(u32, u32)>,
    pub words: &'a [u32],
    /// Bytes not stored because their blocks are sparse.
    pub sparse: u64,
}

pub(super) fn file(f: &FileInode) -> Vec<u8> {
    let mut o = Vec::with_capacity(56 + 4 * f.words.len());
    let (frag, frag_off) = f.fragment.unwrap_or((NONE32, 0));
    let basic = (u32::try_from(f.size), u32::try_from(f.blocks_start));
    match basic {
        (Ok(size), Ok(start)) if f.sparse == 0 => {
            header(&mut o, BASIC_FILE, f.mode, f.mtime, f.number);
            o.extend_from_slice(&start.to_le_bytes()); // 16 blocks start
            o.extend_from_slice(&frag.to_le_bytes()); // 20 fragment index
            o.extend_from_slice(&frag_off.to_le_bytes()); // 24 offset in fragment
            o.extend_from_slice(&size.to_le_bytes()); // 28 file size
        }
        _ => {
            header(&mut o, EXT_FILE, f.mode, f.mtime, f.number);
            o.extend_from_slice(&f.blocks_start.to_le_bytes()); // 16 blocks start
            o.extend_from_slice(&f.size.to_le_bytes()); // 24 file size
            o.extend_from_slice(&f.sparse.to_le_bytes()); // 32 sparse bytes
            o.extend_from_slice(&1u32.to_le_bytes()); // 40 hard link count
            o.extend_from_slice(&frag.to_le_bytes()); // 44 fragment index
            o.extend_from_slice(&frag_off.to_le_bytes()); // 48 offset in fragment
            o.extend_from_slice(&NONE32.to_le_bytes()); // 52 xattr index
        }
    }
    for w in f.words {
        o.extend_from_slice(&w.to_le_bytes()); // block sizes, one u32 per block
    }
    o
}

pub(super) fn symlink(mode: u16, mtime: u32, number: u32, target: &[u8]) -> Vec<u8> {
    let mut o = Vec::with_capacity(24 + target.len());
    header(&mut o, BASIC_SYMLINK, mode, mtime, number);
    o.extend_from_slice(&1u32.to_le_bytes()); // 16 hard link count
    o.extend_from_slice(&(target.len() as u32).to_le_bytes()); // 20 target size
    o.extend_from_slice(target); // 24 target path, no terminator
    o
}
