//! Compressed blocks kept between runs, so that a replan reads and compresses nothing it has seen.
//!
//! Rules this module keeps:
//! - An entry is named by its key (a SHA-256 the caller derives from what the bytes depend on) and
//!   carries two hashes of its payload plus a check of its own header. The header alone answers
//!   "how long, which hash" at plan time. BLAKE3 names the bytes (it feeds image fingerprints, which
//!   key cached SHA-256 digests, so it must resist crafted collisions); XXH3-128 is what every load
//!   verifies, because a streamed ISO checks each block it serves and BLAKE3 cost an eighth of the
//!   daemon's time there, XXH3 a fiftieth. A corrupt entry is deleted and reported as absent, never
//!   served.
//! - Writes go to a temporary file in the entry's own directory and are renamed into place, so two
//!   processes sharing a directory see either nothing or a whole entry.
//! - The cache is an accelerator only: an unusable, read-only or full directory degrades to
//!   recomputing, with a single warning.
//! - Verified payloads are also kept in a byte-bounded in-memory LRU so that sequential reads of one
//!   block (the kernel asks in 128 KiB pieces) cost one load.
//! - The directory may be capped ([`BlockCache::open_with_limit`]): entries are evicted least
//!   recently used first, "used" being the entry's mtime, bumped on a hit (see [`evict`]). Another
//!   process may delete an entry at any time; that only costs a recompute, because every load is
//!   verified against the planned hash.
//! - Hit/miss counters are added to a small file in the directory (see [`stats`]) so that hit rates
//!   can be shown across runs.
//!
//! Entry file `<dir>/<first two hex digits>/<key hex>`:
//! ```text
//!   0  magic      8 bytes  "isofsBC3"
//!   8  key       32 bytes
//!  40  tag        u8       caller's meaning (e.g. compressed / stored / sparse)
//!  41  reserved   7 bytes  zero
//!  48  length     u64 LE   payload bytes
//!  56  hash      32 bytes  BLAKE3 of the payload
//!  88  checksum  16 bytes  XXH3-128 of the payload, u128 LE
//! 104  check      8 bytes  first 8 bytes of SHA-256 of bytes 0..104
//! 112  payload
//! ```

mod evict;
mod stats;

pub use evict::EvictStats;
pub use stats::PersistedStats;

use lru::LruCache;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use xxhash_rust::xxh3::xxh3_128;

// BC3 adds the XXH3 checksum; BC2 had BLAKE3 alone, BC1 SHA-256.
const MAGIC: &[u8; 8] = b"isofsBC3";
const HEADER_LEN: usize = 112;
/// Enough for the kernel's readahead window over a handful of 1 MiB blocks on every reader thread.
const MEMORY_BUDGET: usize = 64 << 20;
/// A hit bumps an entry's mtime only when it is older than this, so that a read of a warm image
/// costs no metadata write per block; eviction order is exact to this granularity.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// What an entry holds, as known from its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub tag: u8,
    pub len: u64,
    /// BLAKE3: names the payload.
    pub hash: [u8; 32],
    /// XXH3-128: verified on every load.
    pub checksum: u128,
}

impl Entry {
    pub fn of(tag: u8, payload: &[u8]) -> Entry {
        Entry {
            tag,
            len: payload.len() as u64,
            hash: payload_hash(payload),
            checksum: xxh3_128(payload),
        }
    }
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
    /// Entries that could not be written (full, read-only or unusable directory).
    pub write_errors: u64,
    /// Entries this process evicted to keep under its cap.
    pub evicted: u64,
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
    write_errors: AtomicU64,
    evicted: AtomicU64,
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
    /// Cap on the entries' bytes in `dir`.
    limit: Option<u64>,
    /// Entry bytes in `dir` as last scanned plus what this process wrote since; other processes'
    /// writes show up at the next scan.
    usage: AtomicU64,
    /// Held while evicting, so parallel writers start one scan, not one each.
    evicting: Mutex<()>,
    /// Counter values already added to the persisted file.
    flushed: Mutex<PersistedStats>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            stats::flush(dir, &self.counters, &self.flushed);
        }
    }
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
        Self::open_with_limit(dir, None)
    }

    /// Like [`open`](Self::open), keeping the entries' bytes in `dir` at most `max_bytes` (shared
    /// with other processes using the directory, each enforcing its own cap). The first write past
    /// the cap evicts least recently used entries down to 90 % of it, so that a scan is not paid
    /// per write.
    pub fn open_with_limit(dir: &Path, max_bytes: Option<u64>) -> BlockCache {
        match fs::create_dir_all(dir) {
            Ok(()) => {
                let cache = Self::with_dir(Some(dir.to_path_buf()), max_bytes);
                if let Some(max) = max_bytes {
                    let (_, bytes) = cache.disk_usage();
                    cache.inner.usage.store(bytes, Ordering::Relaxed);
                    if bytes > max {
                        cache.evict_to(low_water(max));
                    }
                }
                cache
            }
            Err(e) => {
                let cache = Self::with_dir(None, None);
                cache.warn_once(&format!("block cache {} unusable ({e})", dir.display()));
                cache
            }
        }
    }

    /// No directory: every block is computed, verified blocks are kept in memory only.
    pub fn memory_only() -> BlockCache {
        Self::with_dir(None, None)
    }

    fn with_dir(dir: Option<PathBuf>, limit: Option<u64>) -> BlockCache {
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
                limit,
                usage: AtomicU64::new(0),
                evicting: Mutex::new(()),
                flushed: Mutex::new(PersistedStats::default()),
            }),
        }
    }

    pub fn dir(&self) -> Option<&Path> {
        self.inner.dir.as_deref()
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
            write_errors: g(&c.write_errors),
            evicted: g(&c.evicted),
        }
    }

    /// Adds this process's counters since the last flush to the directory's persisted counters.
    /// Also done when the last handle is dropped; a long-running mount calls it now and then.
    pub fn flush_stats(&self) {
        if let Some(dir) = &self.inner.dir {
            stats::flush(dir, &self.inner.counters, &self.inner.flushed);
        }
    }

    /// The directory's persisted counters (all runs, flushed ones only).
    pub fn persisted_stats(&self) -> PersistedStats {
        self.inner
            .dir
            .as_deref()
            .map(PersistedStats::read)
            .unwrap_or_default()
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

    /// The header of `key`'s entry, if one exists and its header is intact. Reads the header only.
    pub fn head(&self, key: &[u8; 32]) -> Option<Entry> {
        let found = self.entry_path(key).and_then(|p| {
            let mut header = [0u8; HEADER_LEN];
            let file = crate::regular_file::open_nowait(&p).ok()?;
            let meta = file.metadata().ok()?;
            file.read_exact_at(&mut header, 0).ok()?;
            let entry = parse_header(&header, key);
            match entry {
                Some(e) if meta.len() == HEADER_LEN as u64 + e.len => {
                    touch(&file, &meta);
                    Some(e)
                }
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
        // Collected from a TrustedLen iterator: one allocation, filled in place by the read.
        let mut payload: Arc<[u8]> = std::iter::repeat_n(0u8, want.len as usize).collect();
        let dst = Arc::get_mut(&mut payload).expect("not shared yet");
        if !self.load_into(key, want, dst) {
            return None;
        }
        self.remember(key, *want, payload.clone());
        Some(payload)
    }

    /// Reads `key`'s payload, verified to be `want`, straight into `dst` (`want.len` bytes) without
    /// keeping it: a reader that needs a whole block copies it once. An entry that does not verify
    /// is deleted; `dst` then holds garbage and the caller must produce the block another way.
    pub fn load_into(&self, key: &[u8; 32], want: &Entry, dst: &mut [u8]) -> bool {
        let Some(p) = self
            .entry_path(key)
            .filter(|_| dst.len() as u64 == want.len)
        else {
            return false;
        };
        let Ok(file) = crate::regular_file::open_nowait(&p) else {
            return false;
        };
        let Ok(meta) = file.metadata() else {
            return false;
        };
        let mut header = [0u8; HEADER_LEN];
        let ok = meta.len() == HEADER_LEN as u64 + want.len
            && file.read_exact_at(&mut header, 0).is_ok()
            && parse_header(&header, key).as_ref() == Some(want)
            && file.read_exact_at(dst, HEADER_LEN as u64).is_ok()
            && xxh3_128(dst) == want.checksum;
        if !ok {
            self.drop_corrupt(&p);
            return false;
        }
        touch(&file, &meta);
        self.inner.counters.loads.fetch_add(1, Ordering::Relaxed);
        true
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
        let entry = Entry::of(tag, payload);
        if let Some(p) = self.entry_path(key) {
            match self.write_entry(&p, key, &entry, payload) {
                Ok(()) => {
                    self.inner.counters.stored.fetch_add(1, Ordering::Relaxed);
                    self.account(HEADER_LEN as u64 + entry.len);
                }
                Err(e) => {
                    self.inner
                        .counters
                        .write_errors
                        .fetch_add(1, Ordering::Relaxed);
                    self.warn_once(&format!(
                        "cannot write block cache entry {}: {e}",
                        p.display()
                    ))
                }
            }
        }
        entry
    }

    /// Counts a written entry against the cap and evicts once it is exceeded.
    fn account(&self, bytes: u64) {
        let Some(max) = self.inner.limit else { return };
        let now = self.inner.usage.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if now <= max {
            return;
        }
        // Writers arriving during a scan carry on; the scan's total includes or overtakes them.
        if let Ok(_guard) = self.inner.evicting.try_lock() {
            self.evict_to(low_water(max));
        }
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

fn low_water(max: u64) -> u64 {
    max - max / 10
}

/// Marks an entry as used now (for eviction order). Best effort: a read-only directory or an entry
/// owned by another user keeps its old time.
pub(crate) fn touch(file: &fs::File, meta: &fs::Metadata) {
    let now = SystemTime::now();
    let stale = meta
        .modified()
        .map(|m| now.duration_since(m).unwrap_or_default() >= TOUCH_EVERY)
        .unwrap_or(true);
    if stale {
        let _ = file.set_modified(now);
    }
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// The hash that names a stored block's bytes.
pub fn payload_hash(b: &[u8]) -> [u8; 32] {
    blake3::hash(b).into()
}

fn encode_header(key: &[u8; 32], e: &Entry) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(MAGIC); // 0 magic
    h[8..40].copy_from_slice(key); // 8 key
    h[40] = e.tag; // 40 tag; 41..48 reserved
    h[48..56].copy_from_slice(&e.len.to_le_bytes()); // 48 payload length
    h[56..88].copy_from_slice(&e.hash); // 56 payload hash
    h[88..104].copy_from_slice(&e.checksum.to_le_bytes()); // 88 payload checksum
    let check = sha256(&h[..104]);
    h[104..112].copy_from_slice(&check[..8]); // 104 header check
    h
}

fn parse_header(h: &[u8], key: &[u8; 32]) -> Option<Entry> {
    if h.len() != HEADER_LEN || &h[0..8] != MAGIC || &h[8..40] != key {
        return None;
    }
    if sha256(&h[..104])[..8] != h[104..112] || h[41..48].iter().any(|&b| b != 0) {
        return None;
    }
    Some(Entry {
        tag: h[40],
        len: u64::from_le_bytes(h[48..56].try_into().ok()?),
        hash: h[56..88].try_into().ok()?,
        checksum: u128::from_le_bytes(h[88..104].try_into().ok()?),
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
                checksum: i.into(),
            };
            c.remember(&[i; 32], e, block.clone());
        }
        let m = c.inner.memory.lock().unwrap();
        assert!(m.bytes <= MEMORY_BUDGET);
        assert_eq!(m.lru.len(), 64);
    }

    fn key(i: u32) -> [u8; 32] {
        sha256(&i.to_le_bytes())
    }

    fn set_mtime(c: &BlockCache, k: &[u8; 32], secs: u64) {
        let f = fs::File::options()
            .write(true)
            .open(c.entry_path(k).unwrap())
            .unwrap();
        f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
            .unwrap();
    }

    const ENTRY: u64 = HEADER_LEN as u64 + 1000;

    #[test]
    fn evicts_least_recently_used_first() {
        let d = tempfile::tempdir().unwrap();
        let c = BlockCache::open(d.path());
        for i in 0..4 {
            c.put(&key(i), 0, &[i as u8; 1000]);
            set_mtime(&c, &key(i), 1000 * (i as u64 + 1));
        }
        assert_eq!(c.disk_usage(), (4, 4 * ENTRY));
        // A plan-time hit on the oldest makes it the newest.
        assert!(c.head(&key(0)).is_some());
        let s = c.evict_to(2 * ENTRY);
        assert_eq!(
            s,
            EvictStats {
                removed_entries: 2,
                removed_bytes: 2 * ENTRY,
                kept_entries: 2,
                kept_bytes: 2 * ENTRY,
                stale_temporaries: 0,
            }
        );
        let present: Vec<bool> = (0..4).map(|i| c.head(&key(i)).is_some()).collect();
        assert_eq!(present, [true, false, false, true]);
        assert_eq!(c.stats().evicted, 2);
        assert_eq!(c.evict_to(0).removed_entries, 2);
        assert_eq!(c.disk_usage(), (0, 0));
    }

    #[test]
    fn a_load_also_counts_as_use() {
        let d = tempfile::tempdir().unwrap();
        let c = BlockCache::open(d.path());
        let entries: Vec<Entry> = (0..3).map(|i| c.put(&key(i), 0, &[9; 1000])).collect();
        for i in 0..3 {
            set_mtime(&c, &key(i), 1000 * (i as u64 + 1));
        }
        assert!(c.load(&key(0), &entries[0]).is_some());
        c.evict_to(ENTRY);
        assert!(c.head(&key(0)).is_some());
        assert_eq!(c.disk_usage().0, 1);
    }

    #[test]
    fn cap_holds_while_writing_and_at_open() {
        let d = tempfile::tempdir().unwrap();
        let unlimited = BlockCache::open(d.path());
        for i in 0..30 {
            unlimited.put(&key(i), 0, &[1; 1000]);
        }
        assert_eq!(unlimited.disk_usage(), (30, 30 * ENTRY));

        let cap = 10 * ENTRY;
        let c = BlockCache::open_with_limit(d.path(), Some(cap));
        let (n, bytes) = c.disk_usage();
        assert!(
            bytes <= cap && n == 9,
            "{n} entries, {bytes} bytes after open"
        );
        for i in 100..150 {
            let e = c.put(&key(i), 0, &[2; 1000]);
            assert!(c.disk_usage().1 <= cap);
            assert_eq!(e.len, 1000);
        }
        assert!(c.stats().evicted >= 40);
        // The entry just written survives the eviction it triggered only if it is not the oldest;
        // what is certain is that the cache still answers for what it holds.
        for i in (0..30).chain(100..150) {
            if let Some(e) = c.head(&key(i)) {
                assert_eq!(
                    &*c.load(&key(i), &e).unwrap(),
                    &[if i < 30 { 1 } else { 2 }; 1000]
                );
            }
        }
    }

    #[test]
    fn eviction_skips_live_temporaries_and_foreign_files() {
        let d = tempfile::tempdir().unwrap();
        let c = BlockCache::open(d.path());
        c.put(&key(1), 0, b"x");
        let shard = c
            .entry_path(&key(1))
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf();
        let live = shard.join(".tmp-1-0");
        let stale = shard.join(".tmp-2-0");
        fs::write(&live, b"writing").unwrap();
        fs::write(&stale, b"crashed").unwrap();
        fs::File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(SystemTime::UNIX_EPOCH)
            .unwrap();
        fs::write(d.path().join("README"), b"not an entry").unwrap();
        let s = c.evict_to(0);
        assert_eq!((s.removed_entries, s.stale_temporaries), (1, 1));
        assert!(live.exists() && !stale.exists());
        assert!(d.path().join("README").exists());
    }

    /// Compressed images count against the cap and go least recently used first; digest records
    /// stay; crashed writers' temporaries in either directory go.
    #[test]
    fn eviction_counts_compressed_images_and_cleans_their_temporaries() {
        let d = tempfile::tempdir().unwrap();
        let c = BlockCache::open(d.path());
        let zst = d.path().join("zst");
        let digests = d.path().join("digests");
        fs::create_dir_all(&zst).unwrap();
        fs::create_dir_all(&digests).unwrap();
        let old = |p: &Path| {
            fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(SystemTime::UNIX_EPOCH)
                .unwrap()
        };
        let image = zst.join(format!("{}-3.zst-entry", "ab".repeat(32)));
        fs::write(&image, vec![7u8; 1000]).unwrap();
        old(&image);
        c.put(&key(1), 0, b"x");
        let record = digests.join("cd".repeat(32));
        fs::write(&record, b"digest").unwrap();
        old(&record);
        let crashed = [
            zst.join(format!(".{}-3.zst-entry.9.0.part", "ab".repeat(32))),
            digests.join(format!(".{}.9.1.part", "cd".repeat(32))),
        ];
        for p in &crashed {
            fs::write(p, b"half").unwrap();
            old(p);
        }
        let foreign = zst.join("notes.txt");
        fs::write(&foreign, b"mine").unwrap();

        let (entries, bytes) = c.disk_usage();
        assert_eq!(entries, 2);
        assert!(bytes >= 1000, "{bytes}");
        let s = c.evict_to(bytes - 1);
        assert_eq!((s.removed_entries, s.stale_temporaries), (1, 2));
        assert!(!image.exists() && c.head(&key(1)).is_some());
        assert!(record.exists() && foreign.exists());
        assert!(crashed.iter().all(|p| !p.exists()));
    }

    #[test]
    fn entry_evicted_under_a_reader_is_recomputed_not_wrong() {
        let d = tempfile::tempdir().unwrap();
        let planner = BlockCache::open(d.path());
        let e = planner.put(&key(1), 0, b"block");
        // Another process sharing the directory evicts everything.
        BlockCache::open(d.path()).evict_to(0);
        let reader = BlockCache::open(d.path());
        assert!(reader.load(&key(1), &e).is_none());
        // A different payload under the same key (a bug elsewhere) is refused, never served.
        reader.put(&key(1), 0, b"other");
        assert!(reader.load(&key(1), &e).is_none());
        assert_eq!(reader.put(&key(1), 0, b"block"), e);
        assert_eq!(&*reader.load(&key(1), &e).unwrap(), b"block");
    }

    #[test]
    fn counters_persist_across_runs() {
        let d = tempfile::tempdir().unwrap();
        {
            let c = BlockCache::open(d.path());
            assert!(c.head(&key(1)).is_none());
            c.record_compressed();
            c.put(&key(1), 0, b"x");
            assert!(c.head(&key(1)).is_some());
            c.flush_stats();
            c.flush_stats();
            assert_eq!(c.persisted_stats().hits, 1);
            assert!(c.head(&key(1)).is_some());
        }
        let c = BlockCache::open(d.path());
        let p = c.persisted_stats();
        assert_eq!((p.hits, p.misses, p.compressed), (2, 1, 1));
        assert_eq!(p.hit_rate(), Some(2.0 / 3.0));
        fs::write(d.path().join("stats"), b"garbage").unwrap();
        assert_eq!(PersistedStats::read(d.path()), PersistedStats::default());
        assert_eq!(PersistedStats::default().hit_rate(), None);
    }

    /// A tmpfs of `size` mounted on a fresh directory, or `None` where mounting is not allowed
    /// (not root); CI runs as root.
    struct Tmpfs(tempfile::TempDir);

    impl Tmpfs {
        fn mount(size: &str) -> Option<Tmpfs> {
            let d = tempfile::tempdir().unwrap();
            let ok = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(d.path())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("skipped: cannot mount a tmpfs here (needs root)");
            }
            ok.then_some(Tmpfs(d))
        }

        fn remount_ro(&self) {
            let s = std::process::Command::new("mount")
                .args(["-o", "remount,ro"])
                .arg(self.0.path())
                .status()
                .unwrap();
            assert!(s.success());
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.0.path())
                .status();
        }
    }

    #[test]
    fn full_disk_degrades_to_recomputing() {
        let Some(fs_) = Tmpfs::mount("256k") else {
            return;
        };
        let c = BlockCache::open(fs_.0.path());
        let payload = |i: u32| -> Vec<u8> { (0..50_000u32).map(|j| (i ^ j) as u8).collect() };
        let entries: Vec<Entry> = (0..20).map(|i| c.put(&key(i), 1, &payload(i))).collect();
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.len, 50_000);
            assert_eq!(e.hash, payload_hash(&payload(i as u32)));
        }
        let st = c.stats();
        assert!(st.stored >= 1 && st.write_errors >= 1, "{st:?}");
        assert!(c.inner.warned.load(Ordering::Relaxed));
        // What was stored is whole; what was not is absent; no temporary is left behind.
        for (i, e) in entries.iter().enumerate() {
            if let Some(b) = c.load(&key(i as u32), e) {
                assert_eq!(&*b, &payload(i as u32)[..]);
            }
        }
        assert_eq!(c.stats().corrupt, 0);
        for shard in fs::read_dir(fs_.0.path()).unwrap().flatten() {
            if shard.path().is_dir() {
                for f in fs::read_dir(shard.path()).unwrap().flatten() {
                    assert!(!f.file_name().to_string_lossy().starts_with(".tmp-"));
                }
            }
        }
    }

    #[test]
    fn read_only_dir_serves_hits_and_skips_writes() {
        let Some(fs_) = Tmpfs::mount("1m") else {
            return;
        };
        let e = BlockCache::open(fs_.0.path()).put(&key(1), 0, b"kept");
        fs_.remount_ro();
        let c = BlockCache::open_with_limit(fs_.0.path(), Some(1));
        assert_eq!(c.head(&key(1)), Some(e));
        assert_eq!(&*c.load(&key(1), &e).unwrap(), b"kept");
        let e2 = c.put(&key(2), 0, b"new");
        assert_eq!(e2.len, 3);
        assert!(c.head(&key(2)).is_none());
        assert_eq!(c.stats().write_errors, 1);
        assert!(c.inner.warned.load(Ordering::Relaxed));
        c.flush_stats();
    }
}
