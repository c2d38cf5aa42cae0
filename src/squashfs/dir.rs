//! Directory listings. A listing is a run of headers, each followed by up to 256 entries that share
//! one inode metadata block and whose inode numbers lie within an i16 of the header's. Entries are
//! sorted bytewise by name (the kernel's lookup stops at the first greater name). Entry types are
//! always the basic ones, even for extended inodes. A listing that spans metadata blocks gets an
//! index in its (extended) inode, as mksquashfs writes it, so the kernel's lookup in a large
//! directory (`/nix/store`) reads from the right block instead of scanning from the first.

use super::meta::META_SIZE;

pub(super) struct DirEntry<'a> {
    pub name: &'a [u8],
    pub kind: u16,
    pub number: u32,
    /// Inode reference: stored block offset from the inode table start << 16 | offset in block.
    pub inode: u64,
}

const MAX_RUN: usize = 256;

/// An encoded listing and where its headers start (byte offset, the first entry's name): what a
/// directory index points lookups at.
pub(super) struct Listing<'a> {
    pub bytes: Vec<u8>,
    pub headers: Vec<(usize, &'a [u8])>,
}

/// One entry of an extended directory inode's index: a header that starts in a later metadata
/// block than the listing itself, so that a lookup can skip the blocks before it.
pub(super) struct IndexEntry<'a> {
    /// Byte offset of the header in the listing.
    pub index: u32,
    /// Stored offset, from the directory table start, of the metadata block holding the header.
    pub start: u32,
    /// The header's first entry name.
    pub name: &'a [u8],
}

/// The index of a listing written from `offset` into its first metadata block: one entry for the
/// first header starting in each later block. `block_start(n)` is the stored offset of the
/// listing's n-th block (0: its first). The caller has checked that the listing and the table
/// fit the format's 32-bit fields.
pub(super) fn index<'a>(
    listing: &Listing<'a>,
    offset: u16,
    mut block_start: impl FnMut(usize) -> u32,
) -> Vec<IndexEntry<'a>> {
    let mut out = Vec::new();
    let mut last = 0;
    for &(at, name) in &listing.headers {
        let block = (offset as usize + at) / META_SIZE;
        if block != last {
            out.push(IndexEntry {
                index: at as u32,
                start: block_start(block),
                name,
            });
            last = block;
        }
    }
    out
}

/// Encodes `entries` (already sorted, names 1..=256 bytes).
pub(super) fn listing<'a>(entries: &[DirEntry<'a>]) -> Listing<'a> {
    let mut out = Vec::new();
    let mut headers = Vec::new();
    let mut i = 0;
    while i < entries.len() {
        let base = &entries[i];
        let block = base.inode >> 16;
        let run = entries[i..]
            .iter()
            .take(MAX_RUN)
            .take_while(|e| {
                e.inode >> 16 == block
                    && i16::try_from(e.number as i64 - base.number as i64).is_ok()
            })
            .count();
        headers.push((out.len(), base.name));
        out.extend_from_slice(&(run as u32 - 1).to_le_bytes()); // 0 entry count - 1
        out.extend_from_slice(&(block as u32).to_le_bytes()); // 4 inode block start
        out.extend_from_slice(&base.number.to_le_bytes()); // 8 base inode number
        for e in &entries[i..i + run] {
            let delta = (e.number as i64 - base.number as i64) as i16;
            out.extend_from_slice(&((e.inode & 0xFFFF) as u16).to_le_bytes()); // 0 offset in block
            out.extend_from_slice(&delta.to_le_bytes()); // 2 inode number delta
            out.extend_from_slice(&e.kind.to_le_bytes()); // 4 basic inode type
            out.extend_from_slice(&((e.name.len() - 1) as u16).to_le_bytes()); // 6 name size - 1
            out.extend_from_slice(e.name); // 8 name
        }
        i += run;
    }
    Listing {
        bytes: out,
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Headers in the listing's first block get no entry; the first header in each later block
    /// gets one, pointing at that block's stored start.
    #[test]
    fn index_has_one_entry_per_later_block() {
        let l = Listing {
            bytes: Vec::new(),
            headers: vec![
                (0, b"a"),
                (4000, b"b"),
                (8000, b"c"),
                (9000, b"d"),
                (20000, b"e"),
            ],
        };
        // Written from offset 300: headers at 8300 and 9300 lie in block 1, 20300 in block 2.
        let idx = index(&l, 300, |n| 1000 * n as u32);
        let got: Vec<_> = idx.iter().map(|e| (e.index, e.start, e.name)).collect();
        assert_eq!(got, [(8000, 1000, &b"c"[..]), (20000, 2000, &b"e"[..])]);
    }
}
