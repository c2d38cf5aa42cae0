//! `<name>.iso.zst`, the seed's `isoImage.compressImage`: the image through zstd, made once per
//! plan and kept in the cache as `<cache>/zst/<fingerprint hex>-<level>.iso.zst`.
//!
//! A compressed size cannot be known without compressing, so unlike every other virtual file the
//! `.zst` has no plan-time size: its first `stat` (or lookup, or read) compresses the whole image
//! and only then answers. The cache makes that a one-time cost per plan, across mounts and builds.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, TryLockError};

use crate::digest::Fingerprint;
use crate::extent::ReadError;
use crate::staged::Staged;
use crate::vfs::{Pending, VirtualFile};

/// zstd's own default, which is also what nixpkgs' `zstd -T$NIX_BUILD_CORES` uses. Most of an
/// image is the squashfs, already zstd-compressed block by block; higher levels spend minutes of
/// CPU to shave well under a percent off it.
pub const LEVEL: i32 = 3;

/// Reads of the image in large pieces keep per-call overhead (extent lookup) negligible.
const CHUNK: usize = 4 << 20;

/// Where the compressed form of the plan `fingerprint` is cached.
pub fn cache_path(cache_dir: &Path, fingerprint: &[u8; 32], level: i32) -> PathBuf {
    cache_dir
        .join("zst")
        .join(format!("{}-{level}.iso.zst", hex::encode(fingerprint)))
}

/// Compresses all of `file` into `dest` (through a temporary name, synced, so `dest` only ever
/// holds a whole frame); `progress` gets the image bytes read so far. Returns the compressed size.
pub fn compress(
    file: &dyn VirtualFile,
    dest: &Path,
    level: i32,
    progress: &dyn Fn(u64),
) -> Result<u64, ReadError> {
    let mut staged = Staged::create(dest).map_err(|e| ReadError::io(dest, e))?;
    let tmp = staged.tmp_path().to_path_buf();
    let size = write_frame(file, staged.file(), &tmp, level, progress)?;
    staged.commit().map_err(|e| ReadError::io(dest, e))?;
    Ok(size)
}

fn write_frame(
    file: &dyn VirtualFile,
    out: &mut File,
    tmp: &Path,
    level: i32,
    progress: &dyn Fn(u64),
) -> Result<u64, ReadError> {
    let io = |e: io::Error| ReadError::io(tmp, e);
    let size = file.size()?;
    let mut enc = zstd::stream::Encoder::new(BufWriter::with_capacity(1 << 20, &mut *out), level)
        .map_err(io)?;
    // One worker or more gives the same bytes whatever the count; none would give other bytes.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    enc.multithread(workers.max(1)).map_err(io)?;
    enc.include_contentsize(true).map_err(io)?;
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
    enc.finish()
        .map_err(io)?
        .into_inner()
        .map_err(|e| io(e.into_error()))?;
    Ok(out.metadata().map_err(io)?.len())
}

/// The cached compressed form of the plan `fingerprint` (`file`'s bytes), made now if missing.
pub fn cached(
    cache_dir: &Path,
    fingerprint: &[u8; 32],
    file: &dyn VirtualFile,
    level: i32,
    progress: &dyn Fn(u64),
) -> Result<PathBuf, ReadError> {
    let path = cache_path(cache_dir, fingerprint, level);
    let found = File::open(&path)
        .and_then(|f| f.metadata().map(|m| (f, m)))
        .ok()
        .filter(|(_, m)| m.is_file());
    match found {
        // Used now: the block cache's eviction counts and orders these files too.
        Some((f, m)) => crate::cache::touch(&f, &m),
        None => {
            compress(file, &path, level, progress)?;
        }
    }
    Ok(path)
}

/// The mount's `<name>.iso.zst`: waits for the image's plan, then for its compressed form.
pub struct CompressedImage {
    image: Arc<Pending>,
    fingerprint: Fingerprint,
    cache_dir: PathBuf,
    level: i32,
    /// The cached file once made; held while making it, so concurrent first users wait for one run.
    ready: Mutex<Option<(File, u64)>>,
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

    /// Runs `f` on the compressed file and its size, producing it first if needed. Failures are
    /// not remembered: a later access retries.
    fn with_file<T>(&self, f: impl FnOnce(&File, u64) -> T) -> Result<T, ReadError> {
        let mut slot = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            let map = self.image.wait()?;
            let fp = (self.fingerprint)()?;
            let started = std::time::Instant::now();
            let path = cached(&self.cache_dir, &fp, &*map, self.level, &|_| {})?;
            let file = File::open(&path).map_err(|e| ReadError::io(&path, e))?;
            let size = file.metadata().map_err(|e| ReadError::io(&path, e))?.len();
            tracing::info!(
                "{}: ready ({size} bytes) after {:.1} s",
                path.display(),
                started.elapsed().as_secs_f64()
            );
            *slot = Some((file, size));
        }
        let (file, size) = slot.as_ref().expect("filled above");
        Ok(f(file, *size))
    }
}

impl VirtualFile for CompressedImage {
    fn size(&self) -> Result<u64, ReadError> {
        self.with_file(|_, size| size)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, ReadError> {
        self.with_file(|file, size| {
            let want = (size.saturating_sub(offset)).min(buf.len() as u64) as usize;
            file.read_exact_at(&mut buf[..want], offset).map(|()| want)
        })?
        .map_err(|e| ReadError::io(&self.cache_dir.join("zst"), e))
    }

    fn size_if_ready(&self) -> Option<u64> {
        match self.ready.try_lock() {
            Ok(slot) => slot.as_ref().map(|(_, size)| *size),
            Err(TryLockError::Poisoned(p)) => p.into_inner().as_ref().map(|(_, size)| *size),
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
        let cached = cache_path(dir.path(), &fp, LEVEL);
        assert_eq!(std::fs::metadata(cached).unwrap().len(), size);
    }
}
