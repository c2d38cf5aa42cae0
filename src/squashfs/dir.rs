//! Directory listings. A listing is a run of headers, each followed by up to 256 entries that share
//! one inode metadata block and whose inode numbers lie within an i16 of the header's. Entries are
//! sorted bytewise by name (the kernel's lookup stops at the first greater name). Entry types are
//! always the basic ones, even for extended inodes.

pub(super) struct DirEntry<'a> {
    pub name: &'a [u8],
    pub kind: u16,
    pub number: u32,
    /// Inode reference: stored block offset from the inode table start << 16 | offset in block.
    pub inode: u64,
}

const MAX_RUN: usize = 256;

/// Encodes `entries` (already sorted, names 1..=256 bytes).
pub(super) fn listing(entries: &[DirEntry]) -> Vec<u8> {
    let mut out = Vec::new();
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
    out
}
