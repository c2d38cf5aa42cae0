//! SHA-256 of virtual files, and the virtual files made from digests (`<iso>.sha256`, `SHA256SUMS`).
//!
//! Hashing a multi-GiB image costs a full read, so a digest is computed at most once per mount
//! ([`LazyDigest`]) and at most once per plan across mounts ([`DigestCache`], keyed by the plan's
//! fingerprint: equal fingerprints mean equal bytes). Digest files have their size known up front
//! (a hex digest is always 64 characters), so listing and `stat` never trigger hashing; only a read
//! of their bytes does.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

use crate::extent::ReadError;
use crate::vfs::VirtualFile;

/// Large reads keep per-call overhead (extent lookup, block cache) negligible.
const CHUNK: usize = 4 << 20;

/// Length of a `sha256sum` line's digest part.
const HEX_LEN: usize = 64;

/// Why streaming a virtual file out failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("writing: {0}")]
    Write(#[source] io::Error),
}

/// Hashes all of `file`, calling `progress` with the number of bytes hashed so far.
pub fn sha256_of(file: &dyn VirtualFile, progress: &dyn Fn(u64)) -> Result<[u8; 32], ReadError> {
    copy_hashing(file, &mut io::sink(), progress).map_err(|e| match e {
        StreamError::Read(e) => e,
        StreamError::Write(_) => unreachable!("io::sink never fails"),
    })
}

/// Writes all of `file` to `out` and returns its SHA-256, in one pass, calling `progress` with the
/// bytes done so far. Reading (which verifies cached blocks) runs one chunk ahead of hashing and
/// writing, on its own thread, so the costs overlap.
pub fn copy_hashing(
    file: &dyn VirtualFile,
    out: &mut dyn Write,
    progress: &dyn Fn(u64),
) -> Result<[u8; 32], StreamError> {
    let size = file.size()?;
    let mut out = HashingWriter::new(out);
    std::thread::scope(|s| {
        let (full_tx, full_rx) = sync_channel::<Vec<u8>>(2);
        let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(3);
        for _ in 0..3 {
            // Cannot fail: the receiver is alive and the channel has room for all three.
            let _ = empty_tx.send(Vec::with_capacity(CHUNK));
        }
        let reader = std::thread::Builder::new()
            .name("read-ahead".into())
            .spawn_scoped(s, move || -> Result<(), ReadError> {
                let mut offset = 0u64;
                while offset < size {
                    let Ok(mut buf) = empty_rx.recv() else {
                        return Ok(());
                    };
                    let want = (size - offset).min(CHUNK as u64) as usize;
                    buf.resize(want, 0);
                    let mut done = 0;
                    while done < want {
                        let n = file.read_at(offset + done as u64, &mut buf[done..])?;
                        if n == 0 {
                            return Err(ReadError::Corrupt(format!(
                                "virtual file ended at {} before its size {size}",
                                offset + done as u64
                            )));
                        }
                        done += n;
                    }
                    offset += want as u64;
                    if full_tx.send(buf).is_err() {
                        return Ok(());
                    }
                }
                Ok(())
            })
            .map_err(|e| ReadError::io(Path::new("a read-ahead thread"), e))?;
        // Dropping the channels on a write error stops the reader at its next send or receive.
        for buf in full_rx {
            out.write_all(&buf).map_err(StreamError::Write)?;
            progress(out.written());
            // The reader may already have finished; a lost spare buffer is harmless.
            let _ = empty_tx.send(buf);
        }
        reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            .map_err(StreamError::Read)
    })?;
    Ok(out.finish().1)
}

/// What a [`HashingWriter`] feeds the bytes to.
pub trait Feed {
    fn feed(&mut self, bytes: &[u8]);
}

impl Feed for Sha256 {
    fn feed(&mut self, bytes: &[u8]) {
        sha2::Digest::update(self, bytes);
    }
}

impl Feed for xxhash_rust::xxh3::Xxh3 {
    fn feed(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

/// A writer that hashes (SHA-256 unless told otherwise) what passes through it, so an image is
/// written and hashed in one pass.
pub struct HashingWriter<W, H = Sha256> {
    inner: W,
    hasher: H,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self::with_hasher(inner, Sha256::new())
    }

    /// The inner writer and the digest of everything written.
    pub fn finish(self) -> (W, [u8; 32]) {
        (self.inner, self.hasher.finalize().into())
    }
}

impl<W: Write, H: Feed> HashingWriter<W, H> {
    pub fn with_hasher(inner: W, hasher: H) -> Self {
        HashingWriter {
            inner,
            hasher,
            written: 0,
        }
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// The inner writer, the hasher and the byte count.
    pub fn into_parts(self) -> (W, H, u64) {
        (self.inner, self.hasher, self.written)
    }
}

impl<W: Write, H: Feed> Write for HashingWriter<W, H> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.feed(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Digests on disk, one file per fingerprint: `<cache>/digests/<fingerprint hex>` holding the
/// digest's 64 hex characters, a space, a check (32 hex characters: the first half of the SHA-256
/// of fingerprint and digest) and a newline. A record that does not check out (a flipped bit, a
/// torn write, an older format) is a miss, never a digest. A cache that cannot be written costs a
/// rehash on the next mount, never a failure; it is reported once.
pub struct DigestCache {
    dir: Option<PathBuf>,
    warned: AtomicBool,
}

impl DigestCache {
    /// A cache under `cache_dir/digests`.
    pub fn new(cache_dir: &Path) -> Self {
        DigestCache {
            dir: Some(cache_dir.join("digests")),
            warned: AtomicBool::new(false),
        }
    }

    /// A cache that remembers nothing (every lookup misses).
    pub fn disabled() -> Self {
        DigestCache {
            dir: None,
            warned: AtomicBool::new(false),
        }
    }

    pub fn get(&self, fingerprint: &[u8; 32]) -> Option<[u8; 32]> {
        let text = crate::regular_file::read(&self.record(fingerprint)?).ok()?;
        let (digest_hex, check_hex) = text.strip_suffix(b"\n")?.split_at_checked(64)?;
        let mut digest = [0u8; 32];
        hex::decode_to_slice(digest_hex, &mut digest).ok()?;
        (check_hex == format!(" {}", hex::encode(record_check(fingerprint, &digest))).as_bytes())
            .then_some(digest)
    }

    /// Drops the record for `fingerprint`, so the next use hashes again.
    pub fn forget(&self, fingerprint: &[u8; 32]) {
        if let Some(p) = self.record(fingerprint) {
            let _ = fs::remove_file(p);
        }
    }

    fn record(&self, fingerprint: &[u8; 32]) -> Option<PathBuf> {
        Some(self.dir.as_ref()?.join(hex::encode(fingerprint)))
    }

    pub fn put(&self, fingerprint: &[u8; 32], digest: &[u8; 32]) {
        let Some(dir) = &self.dir else {
            return;
        };
        if let Err(e) = write_record(dir, fingerprint, digest) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "digest cache {}: {e}; digests will be recomputed on the next mount",
                    dir.display()
                );
            }
        }
    }

    /// The cached digest for `fingerprint`, else hashes `file` and records the result.
    pub fn digest(
        &self,
        fingerprint: &[u8; 32],
        file: &dyn VirtualFile,
        progress: &dyn Fn(u64),
    ) -> Result<[u8; 32], ReadError> {
        if let Some(d) = self.get(fingerprint) {
            return Ok(d);
        }
        let d = sha256_of(file, progress)?;
        self.put(fingerprint, &d);
        Ok(d)
    }
}

fn record_check(fingerprint: &[u8; 32], digest: &[u8; 32]) -> [u8; 16] {
    let h = Sha256::new()
        .chain_update(fingerprint)
        .chain_update(digest)
        .finalize();
    h[..16].try_into().expect("16 of 32 bytes")
}

fn write_record(dir: &Path, fingerprint: &[u8; 32], digest: &[u8; 32]) -> io::Result<()> {
    let line = format!(
        "{} {}\n",
        hex::encode(digest),
        hex::encode(record_check(fingerprint, digest))
    );
    crate::staged::write(&dir.join(hex::encode(fingerprint)), line.as_bytes())
}

/// Names a virtual file's bytes before they are read; for an image, the fingerprint of its plan.
/// It may wait for the plan, like [`VirtualFile::size`].
pub type Fingerprint = Box<dyn Fn() -> Result<[u8; 32], ReadError> + Send + Sync>;

/// The digest of one virtual file, computed on first use and then remembered. Concurrent first
/// users wait for one computation rather than hashing in parallel.
pub struct LazyDigest {
    file: Arc<dyn VirtualFile>,
    fingerprint: Fingerprint,
    cache: Arc<DigestCache>,
    value: Mutex<Option<[u8; 32]>>,
}

impl LazyDigest {
    pub fn new(
        file: Arc<dyn VirtualFile>,
        fingerprint: Fingerprint,
        cache: Arc<DigestCache>,
    ) -> Arc<Self> {
        Arc::new(LazyDigest {
            file,
            fingerprint,
            cache,
            value: Mutex::new(None),
        })
    }

    /// The digest; errors are not remembered, so a later read retries.
    pub fn get(&self) -> Result<[u8; 32], ReadError> {
        let mut value = self.value.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = *value {
            return Ok(d);
        }
        let fp = (self.fingerprint)()?;
        let d = self.cache.digest(&fp, &*self.file, &|_| {})?;
        *value = Some(d);
        Ok(d)
    }
}

/// One `sha256sum` line.
fn sum_line(digest: &[u8; 32], name: &str) -> String {
    format!("{}  {name}\n", hex::encode(digest))
}

fn sum_line_len(name: &str) -> u64 {
    (HEX_LEN + 2 + name.len() + 1) as u64
}

/// Copies the part of `line` (which starts at `line_start` in its file) that overlaps the read
/// `[offset, offset + buf.len())`.
fn copy_overlap(line: &[u8], line_start: u64, offset: u64, buf: &mut [u8]) {
    let from = offset.max(line_start);
    let to = (offset + buf.len() as u64).min(line_start + line.len() as u64);
    if from < to {
        let src = &line[(from - line_start) as usize..(to - line_start) as usize];
        buf[(from - offset) as usize..(to - offset) as usize].copy_from_slice(src);
    }
}

/// `<name>.sha256`: `"<hex>  <name>\n"`, the digest first as Ventoy expects.
pub struct Sidecar {
    name: String,
    digest: Arc<LazyDigest>,
}

impl Sidecar {
    /// `name` is the file name the line refers to (e.g. `shinji.iso`).
    pub fn new(name: &str, digest: Arc<LazyDigest>) -> Self {
        Sidecar {
            name: name.to_string(),
            digest,
        }
    }
}

impl VirtualFile for Sidecar {
    fn size(&self) -> Result<u64, ReadError> {
        Ok(sum_line_len(&self.name))
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, ReadError> {
        let size = sum_line_len(&self.name);
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let n = buf.len().min((size - offset) as usize);
        let line = sum_line(&self.digest.get()?, &self.name);
        copy_overlap(line.as_bytes(), 0, offset, &mut buf[..n]);
        Ok(n)
    }
}

/// `SHA256SUMS`: one `sha256sum` line per file, sorted by name. A read hashes only the files whose
/// lines it touches.
pub struct Sums {
    /// (name, digest, offset of its line), sorted by name.
    lines: Vec<(String, Arc<LazyDigest>, u64)>,
    size: u64,
}

impl Sums {
    pub fn new(mut entries: Vec<(String, Arc<LazyDigest>)>) -> Self {
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut size = 0;
        let lines = entries
            .into_iter()
            .map(|(name, d)| {
                let start = size;
                size += sum_line_len(&name);
                (name, d, start)
            })
            .collect();
        Sums { lines, size }
    }
}

impl VirtualFile for Sums {
    fn size(&self) -> Result<u64, ReadError> {
        Ok(self.size)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, ReadError> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let n = buf.len().min((self.size - offset) as usize);
        let end = offset + n as u64;
        let first = self
            .lines
            .partition_point(|(name, _, start)| start + sum_line_len(name) <= offset);
        for (name, digest, start) in &self.lines[first..] {
            if *start >= end {
                break;
            }
            let line = sum_line(&digest.get()?, name);
            copy_overlap(line.as_bytes(), *start, offset, &mut buf[..n]);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extent::{Builder, ExtentMap};
    use std::sync::atomic::{AtomicU64, AtomicUsize};

    /// Counts reads, to prove what was (not) hashed.
    struct Counting(ExtentMap, AtomicUsize);

    impl VirtualFile for Counting {
        fn size(&self) -> Result<u64, ReadError> {
            Ok(self.0.size())
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, ReadError> {
            self.1.fetch_add(1, Ordering::Relaxed);
            self.0.read_at(offset, buf)
        }
    }

    fn sample(len: usize) -> ExtentMap {
        let mut b = Builder::new();
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        b.bytes("data", bytes);
        b.zeros("pad", 3 * CHUNK as u64 + 17);
        b.bytes("tail", b"end".to_vec());
        b.finish()
    }

    fn lazy(file: Arc<dyn VirtualFile>, fp: u8, cache: Arc<DigestCache>) -> Arc<LazyDigest> {
        LazyDigest::new(file, Box::new(move || Ok([fp; 32])), cache)
    }

    #[test]
    fn digest_matches_one_shot_sha256() {
        let m = sample(CHUNK + 5);
        let want: [u8; 32] = Sha256::digest(m.to_vec().unwrap()).into();
        let last = AtomicU64::new(0);
        let got = sha256_of(&m, &|n| last.store(n, Ordering::Relaxed)).unwrap();
        assert_eq!(got, want);
        assert_eq!(last.load(Ordering::Relaxed), m.size());
        let empty = ExtentMap::default();
        assert_eq!(
            hex::encode(sha256_of(&empty, &|_| {}).unwrap()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn hashing_writer_hashes_what_it_writes() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"ab").unwrap();
        w.write_all(b"c").unwrap();
        assert_eq!(w.written(), 3);
        let (v, d) = w.finish();
        assert_eq!(v, b"abc");
        assert_eq!(
            hex::encode(d),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn cache_survives_a_new_instance_and_rejects_junk() {
        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(Counting(sample(10), AtomicUsize::new(0)));
        let c1 = Arc::new(DigestCache::new(dir.path()));
        let d1 = lazy(file.clone(), 1, c1).get().unwrap();
        let reads = file.1.load(Ordering::Relaxed);
        assert!(reads > 0);
        let c2 = Arc::new(DigestCache::new(dir.path()));
        assert_eq!(lazy(file.clone(), 1, c2.clone()).get().unwrap(), d1);
        assert_eq!(file.1.load(Ordering::Relaxed), reads);
        let rec = dir.path().join("digests").join(hex::encode([1u8; 32]));
        let text = fs::read_to_string(&rec).unwrap();
        assert!(text.starts_with(&format!("{} ", hex::encode(d1))));
        assert_eq!(text.len(), 64 + 1 + 32 + 1);
        // One flipped digit, a record for other bytes, a digest without its check, junk: misses.
        let mut flipped = text.clone().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        let other = text.replacen(&hex::encode(d1), &hex::encode([7u8; 32]), 1);
        for bad in [
            flipped,
            other.into_bytes(),
            format!("{}\n", hex::encode(d1)).into_bytes(),
            b"zz\n".to_vec(),
        ] {
            fs::write(&rec, &bad).unwrap();
            assert_eq!(c2.get(&[1; 32]), None);
        }
        assert_eq!(lazy(file.clone(), 1, c2.clone()).get().unwrap(), d1);
        assert_eq!(c2.get(&[1; 32]), Some(d1));
        c2.forget(&[1; 32]);
        assert_eq!(c2.get(&[1; 32]), None);
    }

    #[test]
    fn unwritable_cache_still_computes() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        fs::write(&blocker, b"").unwrap();
        let cache = Arc::new(DigestCache::new(&blocker));
        let m: Arc<dyn VirtualFile> = Arc::new(sample(1));
        let d = lazy(m.clone(), 2, cache.clone()).get().unwrap();
        assert_eq!(d, sha256_of(&*m, &|_| {}).unwrap());
        assert_eq!(lazy(m, 2, cache).get().unwrap(), d);
    }

    #[test]
    fn sidecar_and_sums_bytes() {
        let cache = Arc::new(DigestCache::disabled());
        let a: Arc<dyn VirtualFile> = Arc::new(ExtentMap::from_bytes("a", b"abc".to_vec()));
        let b: Arc<dyn VirtualFile> = Arc::new(ExtentMap::default());
        let da = lazy(a, 1, cache.clone());
        let db = lazy(b, 2, cache);
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let nul = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

        let side = Sidecar::new("a.iso", da.clone());
        let want = format!("{abc}  a.iso\n");
        assert_eq!(side.size().unwrap(), want.len() as u64);
        let mut buf = vec![0u8; 200];
        assert_eq!(side.read_at(0, &mut buf).unwrap(), want.len());
        assert_eq!(&buf[..want.len()], want.as_bytes());
        assert_eq!(side.read_at(66, &mut buf[..3]).unwrap(), 3);
        assert_eq!(&buf[..3], b"a.i");

        let sums = Sums::new(vec![("z.iso".into(), db), ("a.iso".into(), da)]);
        let want = format!("{abc}  a.iso\n{nul}  z.iso\n");
        assert_eq!(sums.size().unwrap(), want.len() as u64);
        for (off, len) in [(0, 200), (60, 20), (71, 1), (72, 64), (100, 100)] {
            let mut buf = vec![0u8; len];
            let n = sums.read_at(off, &mut buf).unwrap();
            let end = (off as usize + len).min(want.len());
            assert_eq!(
                &buf[..n],
                &want.as_bytes()[off as usize..end],
                "{off}+{len}"
            );
        }
    }

    #[test]
    fn sums_read_hashes_only_touched_lines() {
        let cache = Arc::new(DigestCache::disabled());
        let a = Arc::new(Counting(sample(1), AtomicUsize::new(0)));
        let b = Arc::new(Counting(sample(2), AtomicUsize::new(0)));
        let sums = Sums::new(vec![
            ("a".into(), lazy(a.clone(), 1, cache.clone())),
            ("b".into(), lazy(b.clone(), 2, cache)),
        ]);
        let mut buf = [0u8; 10];
        sums.read_at(0, &mut buf).unwrap();
        assert!(a.1.load(Ordering::Relaxed) > 0);
        assert_eq!(b.1.load(Ordering::Relaxed), 0);
    }
}
