//! Path tables (ECMA-119 9.4): one record per directory, ordered by level, then by parent number,
//! then by identifier — the breadth-first order in which the planner numbers directories. The root
//! is number 1 with identifier 0x00 and parent 1. The L table is little-endian, the M table
//! big-endian; both have the same size, which the volume descriptor records unpadded.

/// One directory as the path table sees it.
pub(crate) struct PathEntry<'a> {
    pub id: &'a [u8],
    pub lba: u32,
    /// Number (1-based, in table order) of the parent directory.
    pub parent: u16,
}

fn record_len(id_len: usize) -> usize {
    8 + id_len + id_len % 2
}

pub(crate) fn size<'a>(ids: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    ids.into_iter().map(|id| record_len(id.len()) as u64).sum()
}

pub(crate) fn encode(entries: &[PathEntry], big_endian: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.push(e.id.len() as u8); // 0: length of directory identifier
        out.push(0); // 1: extended attribute record length
        out.extend_from_slice(&if big_endian {
            e.lba.to_be_bytes()
        } else {
            e.lba.to_le_bytes()
        }); // 2: location of extent
        out.extend_from_slice(&if big_endian {
            e.parent.to_be_bytes()
        } else {
            e.parent.to_le_bytes()
        }); // 6: parent directory number
        out.extend_from_slice(e.id); // 8: directory identifier
        if e.id.len() % 2 == 1 {
            out.push(0); // padding field
        }
    }
    out
}
