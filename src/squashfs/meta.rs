//! Metadata blocks: the inode, directory, fragment and id tables are cut into 8 KiB pieces, each
//! compressed on its own and preceded by a u16 header (bit 15 = stored uncompressed, low 15 bits =
//! stored length). A reference to a byte in such a table is the stored offset of its block from the
//! table start (upper bits) and the offset inside the uncompressed block (low 16 bits). Blocks are
//! cut as they fill, so a position is final as soon as it is handed out.

use super::block::{encode_meta, SquashError};
use crate::compression::Compression;

pub(super) const META_SIZE: usize = 8192;

pub(super) struct MetaWriter {
    compression: Compression,
    out: Vec<u8>,
    cur: Vec<u8>,
    /// Stored offset of every block cut so far.
    starts: Vec<u64>,
}

impl MetaWriter {
    pub fn new(compression: Compression) -> Self {
        MetaWriter {
            compression,
            out: Vec::new(),
            cur: Vec::with_capacity(META_SIZE),
            starts: Vec::new(),
        }
    }

    /// How many blocks have been cut: the number of the current one.
    pub fn blocks_cut(&self) -> usize {
        self.starts.len()
    }

    /// Stored offset of block `n` from the table start, for a block already cut or the current one.
    pub fn block_start(&self, n: usize) -> u64 {
        self.starts.get(n).copied().unwrap_or_else(|| {
            assert_eq!(n, self.starts.len(), "block {n} is not written yet");
            self.out.len() as u64
        })
    }

    /// (stored offset of the current block from the table start, offset inside it).
    pub fn position(&self) -> (u64, u16) {
        (self.out.len() as u64, self.cur.len() as u16)
    }

    /// The 48-bit inode reference of the current position.
    pub fn reference(&self) -> u64 {
        let (block, offset) = self.position();
        block << 16 | offset as u64
    }

    pub fn write(&mut self, mut bytes: &[u8]) -> Result<(), SquashError> {
        while !bytes.is_empty() {
            let n = bytes.len().min(META_SIZE - self.cur.len());
            self.cur.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.cur.len() == META_SIZE {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SquashError> {
        let (stored, uncompressed) = encode_meta(&self.cur, self.compression)?;
        // Header bit 15 marks a block stored as is; the length fits 15 bits as blocks are ≤ 8 KiB.
        let header = stored.len() as u16 | if uncompressed { 0x8000 } else { 0 };
        self.starts.push(self.out.len() as u64);
        self.out.extend_from_slice(&header.to_le_bytes());
        self.out.extend_from_slice(&stored);
        self.cur.clear();
        Ok(())
    }

    /// The stored table; a partial last block is cut here.
    pub fn finish(mut self) -> Result<Vec<u8>, SquashError> {
        if !self.cur.is_empty() {
            self.flush()?;
        }
        Ok(self.out)
    }
}

/// A table of fixed-size entries (fragments, ids): metadata blocks followed by a u64 array holding
/// each block's absolute offset. Returns the bytes and the offset of that array (what the
/// superblock points at). `at` is the table's absolute offset in the image.
pub(super) fn lookup_table(
    entries: &[u8],
    at: u64,
    compression: Compression,
) -> Result<(Vec<u8>, u64), SquashError> {
    let mut out = Vec::new();
    let mut index = Vec::new();
    for piece in entries.chunks(META_SIZE) {
        index.extend_from_slice(&(at + out.len() as u64).to_le_bytes());
        let mut w = MetaWriter::new(compression);
        w.write(piece)?;
        out.extend_from_slice(&w.finish()?);
    }
    let index_at = at + out.len() as u64;
    out.extend_from_slice(&index);
    Ok((out, index_at))
}
