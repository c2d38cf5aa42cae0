//! Data and fragment blocks: how they are keyed, compressed, planned and later produced.
//!
//! A block is compressed once at plan time to learn its stored size; the stored bytes go to the
//! [`BlockCache`] and the plan keeps only (tag, length, SHA-256). Reading a block later takes it from
//! memory, else from the cache (verified), else compresses it again from its inputs and insists on
//! the planned length and hash. Every compressed block is one zstd frame made by the one-shot API:
//! the frame then records its content size and a window no larger than the block, which the Linux
//! kernel requires (streamed frames without a pledged size fail there with EIO).

use crate::cache::{BlockCache, Entry};
use crate::compression::Compression;
use crate::extent::{Chunk, ExtentMap, ReadError};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Stored compressed (one zstd frame).
pub(super) const TAG_COMPRESSED: u8 = 0;
/// Stored as is: compression did not shrink it, or compression is off.
pub(super) const TAG_STORED: u8 = 1;
/// A full block of zeros: no bytes in the image, size 0 in the block list.
pub(super) const TAG_SPARSE: u8 = 2;

/// Bumped whenever the bytes a key stands for could change.
const KEY_VERSION: &[u8] = b"isofs-squashfs-block-v2";

#[derive(Debug, thiserror::Error)]
pub enum SquashError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("zstd compression failed: {0}")]
    Compress(#[source] std::io::Error),
    #[error("the squashfs root must be a directory")]
    RootNotDirectory,
    #[error("block_log {0} is outside 12..=20")]
    BlockLog(u32),
    #[error("{path}: {what}")]
    Unrepresentable { path: String, what: String },
}

/// What a file's blocks are keyed by.
pub(super) enum FileKey {
    /// Below a store path: immutable and named by hash, so its path and size name its bytes —
    /// on this file system. The file's identity joins the key so that another file under the same
    /// name (a copied or hand-edited store, a test fixture) can never be served a stale block.
    StorePath {
        rel: Vec<u8>,
        size: u64,
        identity: [u64; 7],
    },
    /// Anything else: its bytes.
    Content { hash: [u8; 32], size: u64 },
}

impl FileKey {
    pub fn of(in_store_path: bool, rel: &[u8], content: &ExtentMap) -> Result<FileKey, ReadError> {
        let size = content.size();
        if let (true, Some(f)) = (in_store_path, content.as_single_file()) {
            return Ok(FileKey::StorePath {
                rel: rel.to_vec(),
                size,
                identity: f.identity.words(),
            });
        }
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0;
        while off < size {
            let n = content.read_at(off, &mut buf)?;
            h.update(&buf[..n]);
            off += n as u64;
        }
        Ok(FileKey::Content {
            hash: h.finalize().into(),
            size,
        })
    }

    fn feed(&self, h: &mut Sha256) {
        match self {
            FileKey::StorePath {
                rel,
                size,
                identity,
            } => {
                h.update(b"P");
                h.update((rel.len() as u64).to_le_bytes());
                h.update(rel);
                h.update(size.to_le_bytes());
                for v in identity {
                    h.update(v.to_le_bytes());
                }
            }
            FileKey::Content { hash, size } => {
                h.update(b"C");
                h.update(hash);
                h.update(size.to_le_bytes());
            }
        }
    }
}

fn key_hasher(kind: &[u8], compression: Compression, block_log: u32) -> Sha256 {
    let mut h = Sha256::new();
    h.update(KEY_VERSION);
    // A re-compression must reproduce the cached bytes, and only the same libzstd guarantees that.
    h.update(zstd::zstd_safe::version_number().to_le_bytes());
    h.update(compression.to_string().as_bytes());
    h.update(block_log.to_le_bytes());
    h.update(kind);
    h
}

pub(super) fn data_key(c: Compression, block_log: u32, file: &FileKey, index: u64) -> [u8; 32] {
    let mut h = key_hasher(b"data", c, block_log);
    file.feed(&mut h);
    h.update(index.to_le_bytes());
    h.finalize().into()
}

pub(super) fn fragment_key(c: Compression, block_log: u32, members: &[&FileKey]) -> [u8; 32] {
    let mut h = key_hasher(b"fragment", c, block_log);
    h.update((members.len() as u64).to_le_bytes());
    for m in members {
        m.feed(&mut h);
    }
    h.finalize().into()
}

/// A range of a file's content that goes into a block.
#[derive(Clone, Debug)]
pub(super) struct Piece {
    pub content: Arc<ExtentMap>,
    pub offset: u64,
    pub len: usize,
}

/// Everything needed to (re)produce one block.
#[derive(Debug)]
pub(super) struct BlockSpec {
    pub key: [u8; 32],
    pub pieces: Vec<Piece>,
    /// Full data blocks of zeros become sparse; fragment blocks never do.
    pub may_be_sparse: bool,
    pub compression: Compression,
    pub what: String,
}

impl BlockSpec {
    pub fn raw_len(&self) -> usize {
        self.pieces.iter().map(|p| p.len).sum()
    }

    fn read_raw(&self) -> Result<Vec<u8>, ReadError> {
        let mut raw = vec![0u8; self.raw_len()];
        let mut at = 0;
        for p in &self.pieces {
            let n = p.content.read_at(p.offset, &mut raw[at..at + p.len])?;
            if n != p.len {
                return Err(ReadError::Corrupt(format!(
                    "{}: input shorter than planned",
                    self.what
                )));
            }
            at += p.len;
        }
        Ok(raw)
    }

    fn encode(&self, raw: Vec<u8>) -> Result<(u8, Vec<u8>), std::io::Error> {
        if self.may_be_sparse && raw.iter().all(|&b| b == 0) {
            return Ok((TAG_SPARSE, Vec::new()));
        }
        Ok(match compress(&raw, self.compression)? {
            Some(c) => (TAG_COMPRESSED, c),
            None => (TAG_STORED, raw),
        })
    }

    /// Plan time: the cached entry, else the stored bytes of an identical block compressed earlier
    /// in this plan, else compress now; cached in either case.
    pub fn plan(&self, cache: &BlockCache, earlier: &Compressed) -> Result<Entry, SquashError> {
        if let Some(e) = cache.head(&self.key) {
            return Ok(e);
        }
        let raw = self.read_raw()?;
        let id = self.raw_id(&raw);
        if let Some(stored) = earlier.stored(&id, cache) {
            return Ok(cache.put(&self.key, stored.0, &stored.1));
        }
        let (tag, stored) = self.encode(raw).map_err(SquashError::Compress)?;
        cache.record_compressed();
        let entry = cache.put(&self.key, tag, &stored);
        earlier.insert(id, self.key, entry);
        Ok(entry)
    }

    /// Names what `encode` makes of `raw`.
    fn raw_id(&self, raw: &[u8]) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(self.compression.to_string().as_bytes());
        h.update(&[self.may_be_sparse as u8]);
        h.update(raw);
        h.finalize().into()
    }

    /// Fails with `Changed` if an input file is no longer the one planned.
    fn check_inputs(&self) -> Result<(), ReadError> {
        crate::extent::check_all(
            self.pieces
                .iter()
                .filter_map(|p| p.content.as_single_file().map(|f| &**f)),
        )
    }
}

/// The blocks one plan has compressed, by what they were made from ([`BlockSpec::raw_id`]). A
/// file shipped by two store paths (or twice in one) is compressed once: zstd is deterministic,
/// so the earlier block's stored bytes are exactly what compressing again would give. mksquashfs
/// compresses such blocks before it notices they are duplicates. Twins that two threads reach at
/// the same moment are both compressed, to the same bytes.
#[derive(Default)]
pub(super) struct Compressed(Mutex<HashMap<[u8; 32], Earlier>>);

/// The cache key and entry of the first block compressed from some bytes.
type Earlier = ([u8; 32], Entry);

impl Compressed {
    fn insert(&self, id: [u8; 32], key: [u8; 32], entry: Entry) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(id).or_insert((key, entry));
    }

    /// The tag and stored bytes of an earlier block made from the same bytes, if it can still be
    /// had from the cache.
    fn stored(&self, id: &[u8; 32], cache: &BlockCache) -> Option<(u8, Arc<[u8]>)> {
        let (key, entry) = *self.0.lock().unwrap_or_else(|p| p.into_inner()).get(id)?;
        let bytes = cache
            .memory(&key, &entry)
            .or_else(|| cache.load(&key, &entry))?;
        Some((entry.tag, bytes))
    }
}

thread_local! {
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// zstd as one frame, or `None` when that would not be smaller (or compression is off).
fn compress(raw: &[u8], c: Compression) -> Result<Option<Vec<u8>>, std::io::Error> {
    match c {
        Compression::None => Ok(None),
        Compression::Zstd(level) => {
            // One compressor per thread and level: a level-19 context is megabytes of tables, and
            // allocating one per block costs as much as compressing a small one. Output is the same.
            let out = COMPRESSOR.with(|slot| -> Result<Vec<u8>, std::io::Error> {
                let mut slot = slot.borrow_mut();
                if slot.as_ref().is_none_or(|(l, _)| *l != level) {
                    *slot = Some((level, zstd::bulk::Compressor::new(level)?));
                }
                let (_, c) = slot.as_mut().expect("set above");
                c.compress(raw)
            })?;
            Ok((out.len() < raw.len()).then_some(out))
        }
    }
}

/// A metadata block's stored bytes and whether they are stored uncompressed.
pub(super) fn encode_meta(raw: &[u8], c: Compression) -> Result<(Vec<u8>, bool), SquashError> {
    Ok(match compress(raw, c).map_err(SquashError::Compress)? {
        Some(out) => (out, false),
        None => (raw.to_vec(), true),
    })
}

/// The block-list word for a planned block: stored length, bit 24 when stored uncompressed, 0 when
/// sparse.
pub(super) fn size_word(e: &Entry) -> u32 {
    match e.tag {
        TAG_STORED => e.len as u32 | 1 << 24,
        TAG_SPARSE => 0,
        _ => e.len as u32,
    }
}

/// A planned block as an extent source.
#[derive(Debug)]
pub(super) struct DataBlock {
    pub spec: BlockSpec,
    pub entry: Entry,
    pub cache: BlockCache,
}

impl DataBlock {
    /// Produces the block again from its inputs, insisting on the planned bytes, and keeps it.
    fn recompute(&self) -> Result<Arc<[u8]>, ReadError> {
        let raw = self.spec.read_raw()?;
        let (tag, stored) = self
            .spec
            .encode(raw)
            .map_err(|e| ReadError::Corrupt(format!("{}: zstd: {e}", self.spec.what)))?;
        self.cache.record_compressed();
        let hash = crate::cache::payload_hash(&stored);
        if tag != self.entry.tag || stored.len() as u64 != self.entry.len || hash != self.entry.hash
        {
            return Err(ReadError::Corrupt(format!(
                "{}: compressed again to {} bytes, planned {} (a different zstd build or input?)",
                self.spec.what,
                stored.len(),
                self.entry.len
            )));
        }
        let key = &self.spec.key;
        self.cache.put(key, tag, &stored);
        let stored: Arc<[u8]> = stored.into();
        self.cache.remember(key, self.entry, stored.clone());
        Ok(stored)
    }
}

impl Chunk for DataBlock {
    fn len(&self) -> u64 {
        self.entry.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let key = &self.spec.key;
        let whole = offset == 0 && buf.len() as u64 == self.entry.len;
        // Kept or cached bytes skip the inputs: serve them only while the inputs are still the
        // planned ones (a stat per input file), so a changed store file fails every read that
        // touches it. A block wanted whole goes from the cache file straight into `buf`; parts
        // of a block (at the edges of a read) are kept in memory for the neighbouring read.
        let kept = match self.cache.memory(key, &self.entry) {
            Some(b) => Some(b),
            None if whole && self.cache.load_into(key, &self.entry, buf) => {
                return self.spec.check_inputs();
            }
            None => self.cache.load(key, &self.entry),
        };
        let b = match kept {
            Some(b) => {
                self.spec.check_inputs()?;
                b
            }
            None => self.recompute()?,
        };
        let start = offset as usize;
        let end = start + buf.len();
        let src = b.get(start..end).ok_or_else(|| {
            ReadError::Corrupt(format!("{}: read past the block's end", self.spec.what))
        })?;
        buf.copy_from_slice(src);
        Ok(())
    }

    /// The block's name is its extent's label already: this says in what form it is stored.
    fn describe(&self) -> String {
        match self.entry.tag {
            TAG_COMPRESSED => format!("{} bytes, compressed", self.entry.len),
            _ => format!("{} bytes stored uncompressed", self.entry.len),
        }
    }

    fn fingerprint(&self) -> [u8; 32] {
        self.entry.hash
    }
}
