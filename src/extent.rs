//! The one place bytes are assembled.
//!
//! Every virtual file (an ISO, a squashfs inside it, a FAT image, a sidecar) is an [`ExtentMap`]: a
//! sorted, gap-free list of extents, each backed by a [`Source`]. Planning builds the map and so fixes
//! every offset and the exact size before a data byte is produced; `read_at` is a binary search plus a
//! fill from each touched source. Sources that can go stale (input files) are checked on every read, so a
//! changed input yields an error, never different bytes.

use std::ffi::{CStr, CString};
use std::fmt;
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Why a range could not be produced. Every variant names the input at fault.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: changed since planning ({what}); remount or rebuild to replan")]
    Changed { path: PathBuf, what: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Corrupt(String),
}

impl ReadError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        ReadError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What an input file looked like when it was planned. A read that finds anything else fails.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
    pub ino: u64,
    pub dev: u64,
    /// Status change time: a file rewritten in place under the same name, size and mtime (every
    /// store file has mtime 1) still gets a new one, so it is checked like the rest. A `chmod` or a
    /// new hard link (`nix-store --optimise`) also moves it: reads then fail until a remount
    /// replans, an error rather than a byte nobody can vouch for.
    pub ctime_sec: i64,
    pub ctime_nsec: i64,
}

impl FileIdentity {
    fn of(st: &libc::stat) -> Self {
        FileIdentity {
            size: st.st_size as u64,
            mtime_sec: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec,
            ino: st.st_ino,
            dev: st.st_dev,
            ctime_sec: st.st_ctime,
            ctime_nsec: st.st_ctime_nsec,
        }
    }

    /// Every field, for keys and fingerprints that must change whenever the identity does.
    pub fn words(&self) -> [u64; 7] {
        let FileIdentity {
            size,
            mtime_sec,
            mtime_nsec,
            ino,
            dev,
            ctime_sec,
            ctime_nsec,
        } = *self;
        [
            size,
            mtime_sec as u64,
            mtime_nsec as u64,
            ino,
            dev,
            ctime_sec as u64,
            ctime_nsec as u64,
        ]
    }

    fn mismatch(&self, now: &FileIdentity) -> Option<String> {
        if self.size != now.size {
            Some(format!("size {} -> {}", self.size, now.size))
        } else if (self.mtime_sec, self.mtime_nsec) != (now.mtime_sec, now.mtime_nsec) {
            Some("modification time differs".into())
        } else if (self.ino, self.dev) != (now.ino, now.dev) {
            Some("replaced by another file".into())
        } else if (self.ctime_sec, self.ctime_nsec) != (now.ctime_sec, now.ctime_nsec) {
            Some("ctime differs: rewritten in place, or its mode or links changed".into())
        } else if self != now {
            Some("file identity differs".into())
        } else {
            None
        }
    }
}

/// A regular input file on disk, pinned to the identity it had at planning time.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InputFile {
    pub path: PathBuf,
    pub identity: FileIdentity,
    checked: LastCheck,
}

/// How long a successful check of an input stands before the next one stats again, as NFS caches
/// attributes: a fragment block at the edge of two reads (hundreds of small files) is checked once,
/// not twice. Bytes served in that window are still the planned ones; only the detection of a
/// change can lag by this much.
const RECHECK_AFTER: Duration = Duration::from_secs(1);

/// When `check` last found the file unchanged ([`now_ns`], 0: never). Not part
/// of the file's identity: clones start afresh and comparisons ignore it.
#[derive(Debug, Default)]
struct LastCheck(AtomicU64);

impl Clone for LastCheck {
    fn clone(&self) -> Self {
        LastCheck::default()
    }
}

impl PartialEq for LastCheck {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for LastCheck {}

impl std::hash::Hash for LastCheck {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

/// Nanoseconds since the first call in this process, never 0.
fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
}

/// `fstatat(dir, name, flags)`: std has no call relative to a directory, and a stat relative to
/// the file's own directory walks one path component instead of the whole path.
fn stat_at(dir: RawFd, name: &CStr, flags: libc::c_int) -> std::io::Result<libc::stat> {
    // SAFETY: `name` is NUL-terminated and `st` is a plain struct the call fills.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, flags) } == 0 {
        Ok(st)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

pub(crate) fn c_path(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))
}

/// Checks that `files` are still the ones planned, as [`InputFile::check`] does one at a time,
/// but stats runs of files in one directory relative to it: a fragment block holds hundreds of
/// small files from a few directories, and the full-path walks were a fifth of a streaming
/// daemon's time.
pub fn check_all<'a>(files: impl IntoIterator<Item = &'a InputFile>) -> Result<(), ReadError> {
    let now = now_ns();
    let mut dir: Option<(&Path, Option<File>)> = None;
    for f in files {
        if f.recently_checked(now) {
            continue;
        }
        let (Some(parent), Some(name)) = (f.path.parent(), f.path.file_name()) else {
            f.check()?;
            continue;
        };
        if dir.as_ref().is_none_or(|(p, _)| *p != parent) {
            let fd = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
                .open(parent)
                .ok();
            dir = Some((parent, fd));
        }
        match &dir {
            Some((_, Some(fd))) => {
                let name = c_path(Path::new(name)).map_err(|e| ReadError::io(&f.path, e))?;
                f.compare(stat_at(fd.as_raw_fd(), &name, 0), now)?;
            }
            // The directory is gone or unreadable: the full path says which.
            _ => f.check()?,
        }
    }
    Ok(())
}

impl InputFile {
    /// Pins `path` as it is now (following no symlink: callers pass regular files).
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let st = stat_at(libc::AT_FDCWD, &c_path(path)?, libc::AT_SYMLINK_NOFOLLOW)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(InputFile {
            path: path.to_path_buf(),
            identity: FileIdentity::of(&st),
            checked: LastCheck::default(),
        })
    }

    pub fn size(&self) -> u64 {
        self.identity.size
    }

    /// Fills `buf` from `offset` if the file is the one planned both before and after the read: a
    /// write racing the read moves the file's times before its bytes land, so bytes the read saw
    /// from it are caught by the second look.
    pub fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let file = crate::regular_file::open_nowait(&self.path).map_err(|e| self.vanished(e))?;
        self.same_as_planned(&file)?;
        file.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                ReadError::Changed {
                    path: self.path.clone(),
                    what: "truncated while reading".into(),
                }
            } else {
                ReadError::io(&self.path, e)
            }
        })?;
        self.same_as_planned(&file)
    }

    fn same_as_planned(&self, file: &File) -> Result<(), ReadError> {
        let st = stat_at(file.as_raw_fd(), c"", libc::AT_EMPTY_PATH)
            .map_err(|e| ReadError::io(&self.path, e))?;
        match self.identity.mismatch(&FileIdentity::of(&st)) {
            Some(what) => Err(ReadError::Changed {
                path: self.path.clone(),
                what,
            }),
            None => Ok(()),
        }
    }

    /// Checks, without reading, that the file is still the one planned: one `stat`, or none if
    /// the last one found it unchanged less than [`RECHECK_AFTER`] ago.
    pub fn check(&self) -> Result<(), ReadError> {
        let now = now_ns();
        if self.recently_checked(now) {
            return Ok(());
        }
        let path = c_path(&self.path).map_err(|e| ReadError::io(&self.path, e))?;
        self.compare(stat_at(libc::AT_FDCWD, &path, 0), now)
    }

    fn recently_checked(&self, now: u64) -> bool {
        let last = self.checked.0.load(Ordering::Relaxed);
        // Another thread may have stored a time later than this caller's `now`.
        last != 0 && now.saturating_sub(last) < RECHECK_AFTER.as_nanos() as u64
    }

    /// Judges a fresh stat of the file (taken at `now`) against the planned identity.
    fn compare(&self, st: std::io::Result<libc::stat>, now: u64) -> Result<(), ReadError> {
        let st = st.map_err(|e| self.vanished(e))?;
        match self.identity.mismatch(&FileIdentity::of(&st)) {
            Some(what) => Err(ReadError::Changed {
                path: self.path.clone(),
                what,
            }),
            None => {
                self.checked.0.store(now, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    fn vanished(&self, e: std::io::Error) -> ReadError {
        if e.kind() == std::io::ErrorKind::NotFound {
            ReadError::Changed {
                path: self.path.clone(),
                what: "removed".into(),
            }
        } else {
            ReadError::io(&self.path, e)
        }
    }
}

/// Bytes produced on demand by a format module (e.g. a compressed squashfs block).
// A chunk is never empty: planners skip zero-length extents.
#[allow(clippy::len_without_is_empty)]
pub trait Chunk: Send + Sync + fmt::Debug {
    fn len(&self) -> u64;
    /// Fills `buf` with the chunk's bytes from `offset`; `offset + buf.len() <= len()`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError>;
    /// One line for `isofs explain`.
    fn describe(&self) -> String;
    /// Names the chunk's bytes (e.g. the SHA-256 of a compressed block): equal fingerprints mean equal
    /// bytes. Feeds the image fingerprint that keys cached digests.
    fn fingerprint(&self) -> [u8; 32];
}

/// Where an extent's bytes come from. The `u64` is the offset inside the source at which the extent
/// starts, so that maps can be embedded in one another without copying data.
#[derive(Clone, Debug)]
pub enum Source {
    Zero,
    Bytes(Arc<[u8]>, u64),
    File(Arc<InputFile>, u64),
    Chunk(Arc<dyn Chunk>, u64),
}

impl Source {
    fn fill(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        match self {
            Source::Zero => {
                buf.fill(0);
                Ok(())
            }
            Source::Bytes(b, base) => {
                let start = (base + offset) as usize;
                buf.copy_from_slice(&b[start..start + buf.len()]);
                Ok(())
            }
            Source::File(f, base) => f.read_exact_at(base + offset, buf),
            Source::Chunk(c, base) => c.read_at(base + offset, buf),
        }
    }

    fn shifted(&self, by: u64) -> Source {
        match self {
            Source::Zero => Source::Zero,
            Source::Bytes(b, o) => Source::Bytes(b.clone(), o + by),
            Source::File(f, o) => Source::File(f.clone(), o + by),
            Source::Chunk(c, o) => Source::Chunk(c.clone(), o + by),
        }
    }

    /// Human-readable owner of the byte at `offset` inside this source.
    pub fn describe(&self, offset: u64) -> String {
        match self {
            Source::Zero => "zero padding".into(),
            Source::Bytes(b, o) => {
                format!("planned metadata ({} bytes), byte {}", b.len(), o + offset)
            }
            Source::File(f, o) => format!("{} at offset {}", f.path.display(), o + offset),
            Source::Chunk(c, o) => format!("{}, byte {}", c.describe(), o + offset),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Extent {
    pub start: u64,
    pub len: u64,
    pub source: Source,
    /// What this region is ("primary volume descriptor", "/boot/efi.img", ...), for `explain`.
    pub label: Arc<str>,
}

/// A virtual file: its exact size and where every byte comes from.
#[derive(Clone, Debug, Default)]
pub struct ExtentMap {
    extents: Vec<Extent>,
    size: u64,
}

impl ExtentMap {
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn extents(&self) -> &[Extent] {
        &self.extents
    }

    /// A map of `bytes` alone.
    pub fn from_bytes(label: &str, bytes: impl Into<Arc<[u8]>>) -> Self {
        let mut b = Builder::new();
        b.bytes(label, bytes);
        b.finish()
    }

    /// A map of one whole input file.
    pub fn from_file(label: &str, file: InputFile) -> Self {
        let mut b = Builder::new();
        b.file(label, Arc::new(file));
        b.finish()
    }

    /// The input file behind this map, when it is exactly one whole file.
    pub fn as_single_file(&self) -> Option<&Arc<InputFile>> {
        match self.extents.as_slice() {
            [Extent {
                source: Source::File(f, 0),
                len,
                ..
            }] if *len == f.size() => Some(f),
            _ => None,
        }
    }

    /// Index of the extent holding byte `offset`.
    fn index_of(&self, offset: u64) -> Option<usize> {
        if offset >= self.size {
            return None;
        }
        Some(self.extents.partition_point(|e| e.start + e.len <= offset))
    }

    /// The extent owning byte `offset` and the offset inside it.
    pub fn locate(&self, offset: u64) -> Option<(&Extent, u64)> {
        self.index_of(offset)
            .map(|i| (&self.extents[i], offset - self.extents[i].start))
    }

    /// Fills `buf` from `offset`; returns how many bytes were filled (fewer only at end of file).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, ReadError> {
        let Some(mut i) = self.index_of(offset) else {
            return Ok(0);
        };
        let want = buf.len().min((self.size - offset) as usize);
        let mut done = 0usize;
        while done < want {
            let e = &self.extents[i];
            let pos = offset + done as u64;
            let inner = pos - e.start;
            let n = ((e.len - inner) as usize).min(want - done);
            e.source.fill(inner, &mut buf[done..done + n])?;
            done += n;
            i += 1;
        }
        Ok(want)
    }

    /// The whole file in memory; for small maps and tests.
    pub fn to_vec(&self) -> Result<Vec<u8>, ReadError> {
        let mut v = vec![0u8; self.size as usize];
        self.read_at(0, &mut v)?;
        Ok(v)
    }
}

/// Lays out a map front to back.
#[derive(Default)]
pub struct Builder {
    extents: Vec<Extent>,
    pos: u64,
}

impl Builder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn position(&self) -> u64 {
        self.pos
    }

    pub fn push(&mut self, label: &str, len: u64, source: Source) {
        if len == 0 {
            return;
        }
        if let (Source::Zero, Some(last)) = (&source, self.extents.last_mut()) {
            if matches!(last.source, Source::Zero) && *last.label == *label {
                last.len += len;
                self.pos += len;
                return;
            }
        }
        self.extents.push(Extent {
            start: self.pos,
            len,
            source,
            label: label.into(),
        });
        self.pos += len;
    }

    pub fn bytes(&mut self, label: &str, bytes: impl Into<Arc<[u8]>>) {
        let bytes: Arc<[u8]> = bytes.into();
        let len = bytes.len() as u64;
        self.push(label, len, Source::Bytes(bytes, 0));
    }

    pub fn zeros(&mut self, label: &str, len: u64) {
        self.push(label, len, Source::Zero);
    }

    pub fn file(&mut self, label: &str, file: Arc<InputFile>) {
        let len = file.size();
        self.push(label, len, Source::File(file, 0));
    }

    pub fn chunk(&mut self, label: &str, chunk: Arc<dyn Chunk>) {
        let len = chunk.len();
        self.push(label, len, Source::Chunk(chunk, 0));
    }

    /// Appends every extent of `map`. `label` (if non-empty) prefixes the embedded labels.
    pub fn append(&mut self, label: &str, map: &ExtentMap) {
        for e in &map.extents {
            let l = if label.is_empty() {
                e.label.to_string()
            } else {
                format!("{label}: {}", e.label)
            };
            self.push(&l, e.len, e.source.clone());
        }
    }

    /// Zero-fills up to the next multiple of `align`.
    pub fn pad_to(&mut self, label: &str, align: u64) {
        let rem = self.pos % align;
        if rem != 0 {
            self.zeros(label, align - rem);
        }
    }

    pub fn finish(self) -> ExtentMap {
        ExtentMap {
            size: self.pos,
            extents: self.extents,
        }
    }
}

impl ExtentMap {
    /// A copy whose bytes `[offset, offset + patch.len())` come from `patch` instead; used for the
    /// few bytes (boot info table, system area) decided after the layout.
    pub fn with_patch(&self, label: &str, offset: u64, patch: &[u8]) -> ExtentMap {
        let end = offset + patch.len() as u64;
        assert!(end <= self.size, "patch past end of map");
        let mut b = Builder::new();
        let patch: Arc<[u8]> = patch.into();
        let mut patched = false;
        for e in &self.extents {
            let (es, ee) = (e.start, e.start + e.len);
            if ee <= offset || es >= end {
                if es >= end && !patched {
                    b.push(label, end - offset, Source::Bytes(patch.clone(), 0));
                    patched = true;
                }
                b.push(&e.label, e.len, e.source.clone());
                continue;
            }
            if es < offset {
                b.push(&e.label, offset - es, e.source.clone());
            }
            if !patched {
                b.push(label, end - offset, Source::Bytes(patch.clone(), 0));
                patched = true;
            }
            if ee > end {
                b.push(&e.label, ee - end, e.source.shifted(end - es));
            }
        }
        if !patched {
            b.push(label, end - offset, Source::Bytes(patch, 0));
        }
        b.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_all_names_the_changed_file_in_any_directory() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("x")).unwrap();
        let paths = ["a", "b", "x/c", "x/d"].map(|n| d.path().join(n));
        for p in &paths {
            std::fs::write(p, b"same").unwrap();
        }
        let pin = || paths.each_ref().map(|p| InputFile::open(p).unwrap());
        let files = pin();
        check_all(&files).unwrap();
        std::fs::write(&paths[2], b"other").unwrap();
        std::fs::remove_file(&paths[3]).unwrap();
        // Fresh pins: a check that passed a moment ago stands for RECHECK_AFTER.
        let stale = files.each_ref().map(|f| (*f).clone());
        match check_all(&stale) {
            Err(ReadError::Changed { path, what }) => {
                assert_eq!((path, what.as_str()), (paths[2].clone(), "size 4 -> 5"))
            }
            other => panic!("{other:?}"),
        }
        match check_all(&stale[3..]) {
            Err(ReadError::Changed { path, what }) => {
                assert_eq!((path, what.as_str()), (paths[3].clone(), "removed"))
            }
            other => panic!("{other:?}"),
        }
        let untouched: Vec<_> = paths[..2]
            .iter()
            .map(|p| InputFile::open(p).unwrap())
            .collect();
        check_all(&untouched).unwrap();
    }

    fn sample() -> ExtentMap {
        let mut b = Builder::new();
        b.bytes("a", b"hello".to_vec());
        b.zeros("pad", 3);
        b.bytes("b", b"world".to_vec());
        b.pad_to("pad", 16);
        b.finish()
    }

    #[test]
    fn reads_across_extents_and_eof() {
        let m = sample();
        assert_eq!(m.size(), 16);
        let mut buf = [0xffu8; 8];
        assert_eq!(m.read_at(3, &mut buf).unwrap(), 8);
        assert_eq!(&buf, b"lo\0\0\0wor");
        assert_eq!(m.read_at(14, &mut buf).unwrap(), 2);
        assert_eq!(m.read_at(16, &mut buf).unwrap(), 0);
    }

    #[test]
    fn patch_replaces_exact_range() {
        let m = sample();
        let p = m.with_patch("patch", 4, b"XYZ");
        let mut want = m.to_vec().unwrap();
        want[4..7].copy_from_slice(b"XYZ");
        assert_eq!(p.to_vec().unwrap(), want);
        assert_eq!(p.size(), m.size());
    }

    #[test]
    fn changed_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abcdef").unwrap();
        let m = ExtentMap::from_file("f", InputFile::open(&path).unwrap());
        assert_eq!(m.to_vec().unwrap(), b"abcdef");
        std::fs::write(&path, b"abc").unwrap();
        assert!(matches!(m.to_vec(), Err(ReadError::Changed { .. })));
    }

    /// Store files all have mtime 1: a rewrite in place of the same size that puts mtime back
    /// leaves only the status change time to tell.
    #[test]
    fn rewrite_in_place_with_the_old_mtime_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abcdef").unwrap();
        let old =
            std::fs::FileTimes::new().set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1));
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_times(old)
            .unwrap();
        let pinned = InputFile::open(&path).unwrap();
        let m = ExtentMap::from_file("f", pinned.clone());
        // ctime ticks with the kernel's timestamp granularity; step past it.
        std::thread::sleep(Duration::from_millis(20));
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.write_all_at(b"ABCDEF", 0).unwrap();
        f.set_times(old).unwrap();
        let now = InputFile::open(&path).unwrap().identity;
        assert_eq!(
            (now.size, now.mtime_sec, now.mtime_nsec, now.ino),
            (6, 1, 0, pinned.identity.ino)
        );
        match m.to_vec() {
            Err(ReadError::Changed { what, .. }) => assert!(what.contains("ctime differs")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(pinned.check(), Err(ReadError::Changed { .. })));
    }
}
