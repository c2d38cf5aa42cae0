//! Compressed blocks kept between runs, so that a replan reads and compresses nothing it has seen.
//!
//! Rules this module keeps:
//! - An entry is named by its key (a SHA-256 the caller derives from what the bytes depend on) and
//!   carries the SHA-256 of its payload plus a check of its own header. The header alone answers
//!   "how long, which hash" at plan time; the payload is verified against the planned hash on every
//!   load. A corrupt entry is deleted and reported as absent, never served.
//! - Writes go to a temporary file in the entry's own directory and are renamed into place, so two
//!   processes sharing a directory see either nothing or a whole entry.
//! - The cache is an accelerator only: an unusable, read-only or full directory degrades to
//!   recomputing, with a single warning.
//! - Verified payloads are also kept in a byte-bounded in-memory LRU so that sequential reads of one
//!   block (the kernel asks in 128 KiB pieces) cost one load.
//!
//! Entry file `<dir>/<first two hex digits>/<key hex>`:
//! ```text
//!  0  magic      8 bytes  "isofsBC1"
//!  8  key       32 bytes
//! 40  tag        u8       caller's meaning (e.g. compressed / stored / sparse)
//! 41  reserved   7 bytes  zero
//! 48  length     u64 LE   payload bytes
//! 56  hash      32 bytes  SHA-256 of the payload
//! 88  check      8 bytes  first 8 bytes of SHA-256 of bytes 0..88
//! 96  payload
//! ```

use lru::LruCache;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const MAGIC: &[u8; 8] = b"isofsBC1";
const HEADER_LEN: usize = 96;
/// Enough for the kernel's readahead window over a handful of 1 MiB blocks on every reader thread.
const MEMORY_BUDGET: usize = 64 << 20;

/// What an entry holds, as known from its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub tag: u8,
    pub len: u64,
    pub hash: [u8; 32],
}

/// Counters since [`BlockCache::open`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Plan-time lookups answered by an entry header.
    pub hits: u64,
    /// Plan-time lookups that found nothing usable.
    pub misses: u64,
    /// Blocks compressed (at plan time or to replace a missing or corrupt entry).
    pub compressed: u64,
    /// Payloads read from disk and verified.
    pub loads: u64,
    /// Payloads served from memory.
    pub memory_hits: u64,
    /// Entries found corrupt and deleted.
    pub corrupt: u64,
    /// Entries written.
    pub stored: u64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    compressed: AtomicU64,
    loads: AtomicU64,
    memory_hits: AtomicU64,
    corrupt: AtomicU64,
    stored: AtomicU64,
}

struct Memory {
    lru: LruCache<[u8; 32], (Entry, Arc<[u8]>)>,
    bytes: usize,
}

struct Inner {
    dir: Option<PathBuf>,
    memory: Mutex<Memory>,
    warned: AtomicBool,
    tmp_seq: AtomicU64,
    counters: Counters,
}

/// A shared handle; clones use the same directory, memory and counters.
#[derive(Clone)]
pub struct BlockCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

impl BlockCache {
    /// Uses `dir` (created if missing). Never fails: a directory that cannot be created leaves a
    /// memory-only cache and one warning.
    pub fn open(dir: &Path) -> BlockCache {
        let cache = Self::with_dir(None);
        match fs::create_dir_all(dir) {
            Ok(()) => Self::with_dir(Some(dir.to_path_buf())),
            Err(e) => {
                cache.warn_once(&format!("block cache {} unusable ({e})", dir.display()));
                cache
            }
        }
    }

    /// No directory: every block is computed, verified blocks are kept in memory only.
    pub fn memory_only() -> BlockCache {
        Self::with_dir(None)
    }

    fn with_dir(dir: Option<PathBuf>) -> BlockCache {
        BlockCache {
            inner: Arc::new(Inner {
                dir,
                memory: Mutex::new(Memory {
                    lru: LruCache::unbounded(),
                    bytes: 0,
                }),
                warned: AtomicBool::new(false),
                tmp_seq: AtomicU64::new(0),
                counters: Counters::default(),
            }),
        }
    }

    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            hits: g(&c.hits),
            misses: g(&c.misses),
            compressed: g(&c.compressed),
            loads: g(&c.loads),
            memory_hits: g(&c.memory_hits),
            corrupt: g(&c.corrupt),
            stored: g(&c.stored),
        }
    }

    /// Callers count their compressions here so that one `stats()` tells the whole story.
    pub fn record_compressed(&self) {
        self.inner
            .counters
            .compressed
            .fetch_add(1, Ordering::Relaxed);
    }

    fn warn_once(&self, msg: &str) {
        if !self.inner.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!("{msg}; recomputing blocks instead");
        }
    }

    fn entry_path(&self, key: &[u8; 32]) -> Option<PathBuf> {
        let hex = hex::encode(key);
        self.inner.dir.as_ref().map(|d| d.join(&hex[..2]).join(hex))
    }

    /// The header of `key`'s entry, if one exists and its header is intact. Reads 96 bytes.
    pub fn head(&self, key: &[u8; 32]) -> Option<Entry> {
        let found = self.entry_path(key).and_then(|p| {
            let mut header = [0u8; HEADER_LEN];
            let file = fs::File::open(&p).ok()?;
            let size = file.metadata().ok()?.len();
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut header, 0).ok()?;
            let entry = parse_header(&header, key);
            match entry {
                Some(e) if size == HEADER_LEN as u64 + e.len => Some(e),
                _ => {
                    self.drop_corrupt(&p);
                    None
                }
            }
        });
        let counter = if found.is_some() {
            &self.inner.counters.hits
        } else {
            &self.inner.counters.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// The payload of `key` from disk, verified to be `want`, and kept in memory. An entry that
    /// does not verify is deleted.
    pub fn load(&self, key: &[u8; 32], want: &Entry) -> Option<Arc<[u8]>> {
        let p = self.entry_path(key)?;
        let data = fs::read(&p).ok()?;
        let ok = data.len() >= HEADER_LEN
            && parse_header(&data[..HEADER_LEN], key).as_ref() == Some(want)
            && data.len() as u64 == HEADER_LEN as u64 + want.len
            && sha256(&data[HEADER_LEN..]) == want.hash;
        if !ok {
            self.drop_corrupt(&p);
            return None;
        }
        self.inner.counters.loads.fetch_add(1, Ordering::Relaxed);
        let payload: Arc<[u8]> = data[HEADER_LEN..].into();
        self.remember(key, *want, payload.clone());
        Some(payload)
    }

    /// The payload of `key` if it is in memory as `want`.
    pub fn memory(&self, key: &[u8; 32], want: &Entry) -> Option<Arc<[u8]>> {
        let mut m = self.inner.memory.lock().unwrap_or_else(|p| p.into_inner());
        match m.lru.get(key) {
            Some((e, b)) if e == want => {
                self.inner
                    .counters
                    .memory_hits
                    .fetch_add(1, Ordering::Relaxed);
                Some(b.clone())
            }
            _ => None,
        }
    }

    /// Keeps a payload already verified against `entry` in memory.
    pub fn remember(&self, key: &[u8; 32], entry: Entry, payload: Arc<[u8]>) {
        if payload.len() > MEMORY_BUDGET {
            return;
        }
        let mut m = self.inner.memory.lock().unwrap_or_else(|p| p.into_inner());
        m.bytes += payload.len();
        if let Some((_, (_, old))) = m.lru.push(*key, (entry, payload)) {
            m.bytes -= old.len();
        }
        while m.bytes > MEMORY_BUDGET {
            match m.lru.pop_lru() {
                Some((_, (_, old))) => m.bytes -= old.len(),
                None => break,
            }
        }
    }

    /// Stores `payload` under `key` (best effort) and returns its entry.
    pub fn put(&self, key: &[u8; 32], tag: u8, payload: &[u8]) -> Entry {
        let entry = Entry {
            tag,
            len: payload.len() as u64,
            hash: sha256(payload),
        };
        if let Some(p) = self.entry_path(key) {
            match self.write_entry(&p, key, &entry, payload) {
                Ok(()) => {
                    self.inner.counters.stored.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => self.warn_once(&format!(
                    "cannot write block cache entry {}: {e}",
                    p.display()
                )),
            }
        }
        entry
    }

    fn write_entry(
        &self,
        path: &Path,
        key: &[u8; 32],
        e: &Entry,
        payload: &[u8],
    ) -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        let seq = self.inner.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".tmp-{}-{seq}", std::process::id()));
        let result = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&encode_header(key, e))?;
            f.write_all(payload)?;
            drop(f);
            fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn drop_corrupt(&self, path: &Path) {
        self.inner.counters.corrupt.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("dropping corrupt block cache entry {}", path.display());
        let _ = fs::remove_file(path);
    }
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

fn encode_header(key: &[u8; 32], e: &Entry) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(MAGIC); // 0 magic
    h[8..40].copy_from_slice(key); // 8 key
    h[40] = e.tag; // 40 tag; 41..48 reserved
    h[48..56].copy_from_slice(&e.len.to_le_bytes()); // 48 payload length
    h[56..88].copy_from_slice(&e.hash); // 56 payload hash
    let check = sha256(&h[..88]);
    h[88..96].copy_from_slice(&check[..8]); // 88 header check
    h
}

fn parse_header(h: &[u8], key: &[u8; 32]) -> Option<Entry> {
    if h.len() != HEADER_LEN || &h[0..8] != MAGIC || &h[8..40] != key {
        return None;
    }
    if sha256(&h[..88])[..8] != h[88..96] || h[41..48].iter().any(|&b| b != 0) {
        return None;
    }
    Some(Entry {
        tag: h[40],
        len: u64::from_le_bytes(h[48..56].try_into().ok()?),
        hash: h[56..88].try_into().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_head_get_and_corruption() {
        let d = tempfile::tempdir().unwrap();
        let c = BlockCache::open(d.path());
        let key = [7u8; 32];
        assert!(c.head(&key).is_none());
        let e = c.put(&key, 1, b"payload");
        let c2 = BlockCache::open(d.path());
        assert_eq!(c2.head(&key), Some(e));
        assert_eq!(&*c2.load(&key, &e).unwrap(), b"payload");
        let p = c2.entry_path(&key).unwrap();
        let mut raw = fs::read(&p).unwrap();
        *raw.last_mut().unwrap() ^= 1;
        fs::write(&p, raw).unwrap();
        let c3 = BlockCache::open(d.path());
        assert!(c3.load(&key, &e).is_none());
        assert_eq!(c3.stats().corrupt, 1);
        assert!(!p.exists());
    }

    #[test]
    fn unusable_dir_still_works() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("f");
        fs::write(&file, b"").unwrap();
        let c = BlockCache::open(&file.join("sub"));
        let e = c.put(&[1; 32], 0, b"x");
        assert_eq!(e.len, 1);
        assert!(c.head(&[1; 32]).is_none());
    }

    #[test]
    fn memory_is_bounded() {
        let c = BlockCache::memory_only();
        let block: Arc<[u8]> = vec![0u8; 1 << 20].into();
        for i in 0..100u8 {
            let e = Entry {
                tag: 0,
                len: block.len() as u64,
                hash: [i; 32],
            };
            c.remember(&[i; 32], e, block.clone());
        }
        let m = c.inner.memory.lock().unwrap();
        assert!(m.bytes <= MEMORY_BUDGET);
        assert_eq!(m.lru.len(), 64);
    }
}
