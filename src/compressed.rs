//! `<name>.iso.zst`, the seed's `isoImage.compressImage`: the image through zstd, made once per
//! plan and kept in the cache as `<cache>/zst/<fingerprint hex>-<level>.zst-entry`: a header
//! holding the length and XXH3-128 of the `.zst` bytes that follow it, checked when the entry is
//! opened, so a damaged entry is compressed again rather than served.
//!
//! A compressed size cannot be known without compressing, so unlike every other virtual file the
//! `.zst` has no plan-time size: its first `stat` (or lookup, or read) compresses the whole image
//! and only then answers. The cache makes that a one-time cost per plan, across mounts and builds.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, TryLockError};

use crate::digest::{Fingerprint, HashingWriter};
use crate::extent::ReadError;
use crate::staged::Staged;
use crate::vfs::{Pending, VirtualFile};
use xxhash_rust::xxh3::Xxh3;

/// zstd's own default, which is also what nixpkgs' `zstd -T$NIX_BUILD_CORES` uses. Most of an
/// image is the squashfs, already zstd-compressed block by block; higher levels spend minutes of
/// CPU to shave well under a percent off it.
pub const LEVEL: i32 = 3;

/// Reads of the image in large pieces keep per-call overhead (extent lookup) negligible.
const CHUNK: usize = 4 << 20;

/// Where the compressed form of the plan `fingerprint` is cached: a header, then the `.zst`
/// bytes.
pub fn cache_path(cache_dir: &Path, fingerprint: &[u8; 32], level: i32) -> PathBuf {
    cache_dir
        .join("zst")
        .join(format!("{}-{level}.zst-entry", hex::encode(fingerprint)))
}

/// Z02: the frame carries zstd's content checksum (Z01 entries, without it, are made again).
const MAGIC: &[u8; 8] = b"isofsZ02";
const HEADER_LEN: u64 = 32;

fn encode_header(len: u64, checksum: u128) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..8].copy_from_slice(MAGIC); // 0 magic
    h[8..16].copy_from_slice(&len.to_le_bytes()); // 8 length of the .zst bytes
    h[16..32].copy_from_slice(&checksum.to_le_bytes()); // 16 their XXH3-128
    h
}

/// A cached compressed image whose bytes matched their checksum when it was opened. The open file
/// stays readable if the cache evicts the entry meanwhile.
pub struct Entry {
    file: File,
    len: u64,
}

impl Entry {
    /// Length of the `.zst` bytes.
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, HEADER_LEN + offset)
    }

    /// Every `.zst` byte, in `CHUNK` pieces.
    pub fn copy_to(&self, out: &mut impl Write) -> io::Result<()> {
        let mut buf = vec![0u8; CHUNK];
        let mut pos = 0;
        while pos < self.len {
            let n = (self.len - pos).min(CHUNK as u64) as usize;
            self.read_exact_at(&mut buf[..n], pos)?;
            out.write_all(&buf[..n])?;
            pos += n as u64;
        }
        Ok(())
    }

    /// The entry at `path` if it is whole and its bytes match their checksum; a damaged one is
    /// deleted (and reported), a missing one is just `None`.
    fn open_checked(path: &Path) -> Option<Entry> {
        let file = crate::regular_file::open_nowait(path).ok()?;
        let meta = file.metadata().ok().filter(|m| m.is_file())?;
        let mut h = [0u8; HEADER_LEN as usize];
        let header = file.read_exact_at(&mut h, 0).ok().and_then(|()| {
            let len = u64::from_le_bytes(h[8..16].try_into().ok()?);
            let want = u128::from_le_bytes(h[16..32].try_into().ok()?);
            (&h[0..8] == MAGIC && meta.len() == HEADER_LEN + len).then_some((len, want))
        });
        if let Some((len, want)) = header {
            let entry = Entry { file, len };
            let mut check = HashingWriter::with_hasher(io::sink(), Xxh3::new());
            if entry.copy_to(&mut check).is_ok() && check.into_parts().1.digest128() == want {
                crate::cache::touch(&entry.file, &meta);
                return Some(entry);
            }
        }
        tracing::warn!(
            "{}: damaged cached image, compressing again",
            path.display()
        );
        let _ = std::fs::remove_file(path);
        None
    }
}

/// Compresses all of `file` into the cache entry `dest` (through a staged temporary, so `dest`
/// only ever holds a whole entry; its header is written last) and returns it open. zstd runs
/// multi-threaded on all cores; the output does not depend on the thread count (zstd guarantees it
/// for any count ≥ 1). `progress` gets the image bytes read so far.
pub fn compress(
    file: &dyn VirtualFile,
    dest: &Path,
    level: i32,
    progress: &dyn Fn(u64),
) -> Result<Entry, ReadError> {
    let mut staged = Staged::create(dest).map_err(|e| ReadError::io(dest, e))?;
    let tmp = staged.tmp_path().to_path_buf();
    let io = |e: io::Error| ReadError::io(&tmp, e);
    let out = staged.file();
    out.write_all(&[0u8; HEADER_LEN as usize]).map_err(io)?;
    let (len, checksum) = write_frame(file, &mut *out, &tmp, level, progress)?;
    out.write_all_at(&encode_header(len, checksum), 0)
        .map_err(io)?;
    staged.commit().map_err(|e| ReadError::io(dest, e))?;
    // Its bytes were checksummed on their way out: no need to read them back to check.
    let file = crate::regular_file::open(dest).map_err(|e| ReadError::io(dest, e))?;
    Ok(Entry { file, len })
}

/// The zstd frame of `file` into `out`; its length and XXH3-128.
fn write_frame(
    file: &dyn VirtualFile,
    out: &mut File,
    tmp: &Path,
    level: i32,
    progress: &dyn Fn(u64),
) -> Result<(u64, u128), ReadError> {
    let io = |e: io::Error| ReadError::io(tmp, e);
    let size = file.size()?;
    let sink = HashingWriter::with_hasher(BufWriter::with_capacity(1 << 20, out), Xxh3::new());
    let mut enc = zstd::stream::Encoder::new(sink, level).map_err(io)?;
    // One worker or more gives the same bytes whatever the count; none would give other bytes.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    enc.multithread(workers.max(1)).map_err(io)?;
    enc.include_contentsize(true).map_err(io)?;
    // As the zstd CLI (and so nixpkgs' compressImage) writes it: `zstd -t` and every `zstd -d`
    // of the copied file check it.
    enc.include_checksum(true).map_err(io)?;
    enc.set_pledged_src_size(Some(size)).map_err(io)?;
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    while pos < size {
        let want = (size - pos).min(CHUNK as u64) as usize;
        let n = file.read_at(pos, &mut buf[..want])?;
        if n == 0 {
            return Err(ReadError::Corrupt(format!(
                "image ended at {pos} before its size {size}"
            )));
        }
        enc.write_all(&buf[..n]).map_err(io)?;
        pos += n as u64;
        progress(pos);
    }
    let (mut sink, hasher, len) = enc.finish().map_err(io)?.into_parts();
    sink.flush().map_err(io)?;
    Ok((len, hasher.digest128()))
}

/// The cached compressed form of the plan `fingerprint` (`file`'s bytes), checked, made now if
/// missing or damaged.
pub fn cached(
    cache_dir: &Path,
    fingerprint: &[u8; 32],
    file: &dyn VirtualFile,
    level: i32,
    progress: &dyn Fn(u64),
) -> Result<Entry, ReadError> {
    let path = cache_path(cache_dir, fingerprint, level);
    match Entry::open_checked(&path) {
        Some(e) => Ok(e),
        None => compress(file, &path, level, progress),
    }
}

/// Removes the cached compressed forms (any level) of the plan `fingerprint`, once a newer plan
/// of the same host and settings has replaced it: each is as large as the image, and a flake edit
/// would otherwise leave one behind every time. An open entry stays readable to its reader.
pub fn retire(cache_dir: &Path, fingerprint: &[u8; 32]) {
    let prefix = format!("{}-", hex::encode(fingerprint));
    let Ok(entries) = std::fs::read_dir(cache_dir.join("zst")) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".zst-entry") {
            match std::fs::remove_file(e.path()) {
                Ok(()) => {
                    tracing::debug!("{}: retired (replaced by a newer plan)", e.path().display())
                }
                Err(err) => tracing::debug!("{}: not retired: {err}", e.path().display()),
            }
        }
    }
}

/// The mount's `<name>.iso.zst`: waits for the image's plan, then for its compressed form.
pub struct CompressedImage {
    image: Arc<Pending>,
    fingerprint: Fingerprint,
    cache_dir: PathBuf,
    level: i32,
    /// The cached entry once made; held while making it, so concurrent first users wait for one run.
    ready: Mutex<Option<Entry>>,
}

impl CompressedImage {
    /// `fingerprint` names the image's plan (the one the planner computed; it may wait for it).
    pub fn new(
        image: Arc<Pending>,
        fingerprint: Fingerprint,
        cache_dir: &Path,
        level: i32,
    ) -> Self {
        CompressedImage {
            image,
            fingerprint,
            cache_dir: cache_dir.to_path_buf(),
            level,
            ready: Mutex::new(None),
        }
    }

    /// Runs `f` on the compressed entry, producing it first if needed. Failures are not
    /// remembered: a later access retries.
    fn with_entry<T>(&self, f: impl FnOnce(&Entry) -> T) -> Result<T, ReadError> {
        let mut slot = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            let map = self.image.wait()?;
            let fp = (self.fingerprint)()?;
            let started = std::time::Instant::now();
            let entry = cached(&self.cache_dir, &fp, &*map, self.level, &|_| {})?;
            tracing::info!(
                "{}: ready ({} bytes) after {:.1} s",
                cache_path(&self.cache_dir, &fp, self.level).display(),
                entry.len(),
                started.elapsed().as_secs_f64()
            );
            *slot = Some(entry);
        }
        Ok(f(slot.as_ref().expect("filled above")))
    }
}

impl VirtualFile for CompressedImage {
    fn size(&self) -> Result<u64, ReadError> {
        self.with_entry(Entry::len)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, ReadError> {
        self.with_entry(|e| {
            let want = (e.len().saturating_sub(offset)).min(buf.len() as u64) as usize;
            e.read_exact_at(&mut buf[..want], offset).map(|()| want)
        })?
        .map_err(|e| ReadError::io(&self.cache_dir.join("zst"), e))
    }

    fn size_if_ready(&self) -> Option<u64> {
        match self.ready.try_lock() {
            Ok(slot) => slot.as_ref().map(Entry::len),
            Err(TryLockError::Poisoned(p)) => p.into_inner().as_ref().map(Entry::len),
            Err(TryLockError::WouldBlock) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extent::ExtentMap;
    use crate::image;

    #[test]
    fn round_trips_and_caches() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let map = Arc::new(ExtentMap::from_bytes("x", data.clone()));
        let pending = Arc::new(Pending::new());
        pending.set(Ok(map.clone()));
        let fp = image::fingerprint(&map);
        let z = CompressedImage::new(pending, Box::new(move || Ok(fp)), dir.path(), LEVEL);
        assert_eq!(z.size_if_ready(), None);
        let size = z.size().unwrap();
        assert_eq!(z.size_if_ready(), Some(size));
        let mut all = vec![0u8; size as usize + 10];
        assert_eq!(z.read_at(0, &mut all).unwrap(), size as usize);
        assert_eq!(zstd::decode_all(&all[..size as usize]).unwrap(), data);
        let path = cache_path(dir.path(), &fp, LEVEL);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), HEADER_LEN + size);

        // A flipped bit in the cached entry is caught on open and the image compressed again.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER_LEN as usize + 100] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let again = cached(dir.path(), &fp, &*map, LEVEL, &|_| {}).unwrap();
        let mut copy = Vec::new();
        again.copy_to(&mut copy).unwrap();
        assert_eq!(copy, all[..size as usize]);
    }
}
