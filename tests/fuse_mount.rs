//! Real FUSE mounts of synthetic trees, read back by the kernel and Debian's tools.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use isofs::digest::{sha256_of, DigestCache, LazyDigest, Sidecar, Sums};
use isofs::extent::{Builder, ExtentMap, InputFile, ReadError};
use isofs::fs::{session, FsOptions};
use isofs::vfs::{Pending, Vfs, VirtualFile};
use sha2::{Digest, Sha256};

const MTIME: u64 = 1_700_000_000;

/// A live mount, unmounted on drop even when the test fails.
struct Mounted {
    dir: tempfile::TempDir,
    session: Option<fuser::BackgroundSession>,
}

impl Mounted {
    fn new(vfs: Vfs) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let opts = FsOptions {
            mtime: SystemTime::UNIX_EPOCH + Duration::from_secs(MTIME),
            ..FsOptions::default()
        };
        let s = session(Arc::new(vfs), dir.path(), &opts)
            .unwrap()
            .spawn()
            .unwrap();
        Mounted {
            dir,
            session: Some(s),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            if s.umount_and_join().is_err() {
                // Still busy (a failed assertion left a file open): detach so nothing leaks.
                let c =
                    std::ffi::CString::new(self.dir.path().as_os_str().to_str().unwrap()).unwrap();
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

/// Deterministic pseudo-random numbers (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng(seed | 1);
    (0..len).map(|_| r.next() as u8).collect()
}

/// A few MiB mixing planned bytes, zeros and input files, with unaligned extent boundaries.
fn mixed_map(dir: &Path) -> ExtentMap {
    let f1 = dir.join("input1");
    let f2 = dir.join("input2");
    std::fs::write(&f1, pattern(3 * 1024 * 1024 + 123, 1)).unwrap();
    std::fs::write(&f2, pattern(777, 2)).unwrap();
    let mut b = Builder::new();
    b.bytes("header", pattern(1000, 3));
    b.file("input1", Arc::new(InputFile::open(&f1).unwrap()));
    b.zeros("gap", 1024 * 1024 + 7);
    b.bytes("middle", pattern(65_537, 4));
    b.file("input2", Arc::new(InputFile::open(&f2).unwrap()));
    b.zeros("pad", 4099);
    b.bytes("trailer", b"THE END".to_vec());
    b.finish()
}

fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn open_direct(path: &Path) -> File {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap()
}

#[test]
fn mixed_map_through_kernel_and_tools() {
    let inputs = tempfile::tempdir().unwrap();
    let map = Arc::new(mixed_map(inputs.path()));
    let want = map.to_vec().unwrap();
    let mut vfs = Vfs::new();
    vfs.add_file("mixed.iso", map.clone()).unwrap();
    vfs.add_file(
        "sub/dir/small.bin",
        Arc::new(ExtentMap::from_bytes("s", b"hi".to_vec())),
    )
    .unwrap();
    let m = Mounted::new(vfs);
    let iso = m.path("mixed.iso");

    // Many concurrent random reads first, while the page cache is cold; O_DIRECT keeps every one a
    // FUSE request.
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let (iso, want) = (&iso, &want);
            s.spawn(move || {
                let f = open_direct(iso);
                let mut r = Rng(0x9e37_79b9 + t);
                let mut buf = vec![0u8; 3 << 20];
                for _ in 0..150 {
                    let off = r.below(want.len() as u64 + 100);
                    let len = 1 + r.below(buf.len() as u64) as usize;
                    let n = f.read_at(&mut buf[..len], off).unwrap();
                    let end = (off as usize + len).min(want.len()).max(off as usize);
                    let expect = want.get(off as usize..end).unwrap_or(&[]);
                    assert_eq!(n, expect.len(), "thread {t} off {off} len {len}");
                    assert!(buf[..n] == *expect, "thread {t}: mismatch at {off}+{len}");
                }
            });
        }
    });

    // Buffered, unaligned reads straddling each extent boundary and the end of file.
    let f = File::open(&iso).unwrap();
    for e in map.extents() {
        for (back, len) in [(1u64, 2usize), (5, 4096), (4095, 8191)] {
            let off = e.start.saturating_sub(back);
            let mut buf = vec![0u8; len];
            let n = f.read_at(&mut buf, off).unwrap();
            let end = (off as usize + len).min(want.len());
            assert_eq!(&buf[..n], &want[off as usize..end]);
        }
    }
    let mut tail = [0u8; 16];
    assert_eq!(f.read_at(&mut tail, want.len() as u64 - 3).unwrap(), 3);
    assert_eq!(&tail[..3], b"END");
    assert_eq!(f.read_at(&mut tail, want.len() as u64).unwrap(), 0);

    let out = tempfile::tempdir().unwrap();
    let cp = out.path().join("cp");
    run(Command::new("cp").arg(&iso).arg(&cp));
    assert!(std::fs::read(&cp).unwrap() == want, "cp");
    for (name, extra) in [("dd", None), ("dd-direct", Some("iflag=direct"))] {
        let dst = out.path().join(name);
        let mut cmd = Command::new("dd");
        cmd.arg(format!("if={}", iso.display()))
            .arg(format!("of={}", dst.display()))
            .arg("bs=4M")
            .arg("status=none");
        cmd.args(extra);
        run(&mut cmd);
        assert!(std::fs::read(&dst).unwrap() == want, "{name}");
    }
    let sum = run(Command::new("sha256sum").arg(&iso));
    assert_eq!(sum.split_whitespace().next().unwrap(), sha_hex(&want));

    // Attributes: exact size, read-only modes, fixed time, stable inodes.
    let meta = std::fs::metadata(&iso).unwrap();
    assert_eq!(meta.len(), want.len() as u64);
    assert_eq!(meta.permissions().mode() & 0o7777, 0o444);
    assert_eq!(meta.mtime() as u64, MTIME);
    assert_eq!(meta.ino(), 2);
    let dmeta = std::fs::metadata(m.path("sub/dir")).unwrap();
    assert!(dmeta.is_dir());
    assert_eq!(dmeta.permissions().mode() & 0o7777, 0o555);
    assert_eq!(std::fs::read(m.path("sub/dir/small.bin")).unwrap(), b"hi");
    let names: Vec<String> = std::fs::read_dir(m.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["mixed.iso", "sub"]);
    assert!(std::fs::OpenOptions::new().write(true).open(&iso).is_err());
    assert!(File::create(m.path("new")).is_err());
    let df = run(Command::new("stat")
        .args(["-f", "-c", "%b %S %f"])
        .arg(m.dir.path()));
    let total: u64 = want.len() as u64 + 2;
    assert_eq!(
        df.trim(),
        format!("{} {} 0", total.div_ceil(1 << 20), 1 << 20)
    );
}

#[test]
fn multi_gib_map_crosses_4gib() {
    let gib = 1u64 << 30;
    let mut b = Builder::new();
    let mut marks = Vec::new();
    for i in 0..5u64 {
        b.zeros("zeros", gib - 4097 + i * 3);
        marks.push((b.position(), pattern(4097, 10 + i)));
        b.bytes("mark", pattern(4097, 10 + i));
    }
    b.zeros("zeros", 100);
    b.bytes("end", b"last bytes".to_vec());
    let map = Arc::new(b.finish());
    let size = map.size();
    assert!(size > 5 * gib);
    let mut vfs = Vfs::new();
    vfs.add_file("big.iso", map.clone()).unwrap();
    let m = Mounted::new(vfs);
    let iso = m.path("big.iso");
    assert_eq!(std::fs::metadata(&iso).unwrap().len(), size);

    let f = File::open(&iso).unwrap();
    for (off, bytes) in &marks {
        let mut buf = vec![0xaau8; bytes.len() + 20];
        assert_eq!(f.read_at(&mut buf, off - 10).unwrap(), buf.len());
        assert!(buf[..10].iter().all(|&b| b == 0));
        assert_eq!(&buf[10..10 + bytes.len()], &bytes[..]);
        assert!(buf[10 + bytes.len()..].iter().all(|&b| b == 0));
    }
    let mut end = [0u8; 32];
    assert_eq!(f.read_at(&mut end, size - 10).unwrap(), 10);
    assert_eq!(&end[..10], b"last bytes");

    let sum = run(Command::new("sha256sum").arg(&iso));
    let want = hex::encode(sha256_of(&*map, &|_| {}).unwrap());
    assert_eq!(sum.split_whitespace().next().unwrap(), want);
}

/// Collects log lines, to count what a failure logs.
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static LogBuf {
    static LOGS: OnceLock<LogBuf> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = LogBuf::default();
        let w = buf.clone();
        tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .init();
        buf
    })
}

#[test]
fn changed_input_is_eio_and_the_mount_keeps_serving() {
    let logs = logs();
    let inputs = tempfile::tempdir().unwrap();
    let changing = inputs.path().join("changing");
    std::fs::write(&changing, pattern(10_000, 5)).unwrap();
    let mut b = Builder::new();
    b.bytes("head", b"head".to_vec());
    b.file("changing", Arc::new(InputFile::open(&changing).unwrap()));
    let stale = Arc::new(b.finish());
    let good = Arc::new(mixed_map(inputs.path()));
    let mut vfs = Vfs::new();
    vfs.add_file("stale-host.iso", stale).unwrap();
    vfs.add_file("good.iso", good.clone()).unwrap();
    let m = Mounted::new(vfs);

    std::fs::write(&changing, pattern(10_001, 6)).unwrap();
    let f = open_direct(&m.path("stale-host.iso"));
    let mut buf = vec![0u8; 4096];
    let err = f.read_at(&mut buf, 0).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("stale-host.iso"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].contains("changing"), "{}", lines[0]);

    assert!(std::fs::read(m.path("good.iso")).unwrap() == good.to_vec().unwrap());
    assert_eq!(
        f.read_at(&mut buf, 0).unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    // The same failure again is not logged again.
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let again = text
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("stale-host.iso"))
        .count();
    assert_eq!(again, 1, "{text}");
}

/// Counts reads, to prove a digest came from the cache.
struct Counting(Arc<ExtentMap>, AtomicUsize);

impl VirtualFile for Counting {
    fn size(&self) -> Result<u64, ReadError> {
        Ok(self.0.size())
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, ReadError> {
        self.1.fetch_add(1, Ordering::Relaxed);
        self.0.read_at(offset, buf)
    }
}

/// Two images, their Ventoy sidecars and SHA256SUMS, digests cached in `cache`.
fn digest_tree(cache: &Path, images: &[(&str, Arc<Counting>, u8)]) -> Vfs {
    let cache = Arc::new(DigestCache::new(cache));
    let mut vfs = Vfs::new();
    let mut sums = Vec::new();
    for (name, file, fp) in images {
        let fp = *fp;
        let digest = LazyDigest::new(file.clone(), Box::new(move || Ok([fp; 32])), cache.clone());
        vfs.add_file(name, file.clone()).unwrap();
        vfs.add_file(
            &format!("{name}.sha256"),
            Arc::new(Sidecar::new(name, digest.clone())),
        )
        .unwrap();
        sums.push((name.to_string(), digest));
    }
    vfs.add_file("SHA256SUMS", Arc::new(Sums::new(sums)))
        .unwrap();
    vfs
}

#[test]
fn sidecars_and_sums_verify_and_are_cached() {
    let inputs = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let a = Arc::new(mixed_map(inputs.path()));
    let b = Arc::new(ExtentMap::from_bytes("b", pattern(5000, 9)));
    let images = |a: &Arc<ExtentMap>, b: &Arc<ExtentMap>| {
        vec![
            (
                "zeta.iso",
                Arc::new(Counting(a.clone(), AtomicUsize::new(0))),
                1u8,
            ),
            (
                "alpha.iso",
                Arc::new(Counting(b.clone(), AtomicUsize::new(0))),
                2u8,
            ),
        ]
    };
    let first = images(&a, &b);
    let m = Mounted::new(digest_tree(cache.path(), &first));
    let sums = std::fs::read_to_string(m.path("SHA256SUMS")).unwrap();
    let (ha, hb) = (sha_hex(&a.to_vec().unwrap()), sha_hex(&b.to_vec().unwrap()));
    assert_eq!(sums, format!("{hb}  alpha.iso\n{ha}  zeta.iso\n"));
    let side = std::fs::read_to_string(m.path("zeta.iso.sha256")).unwrap();
    assert_eq!(side, format!("{ha}  zeta.iso\n"));
    assert_eq!(
        std::fs::metadata(m.path("zeta.iso.sha256")).unwrap().len(),
        side.len() as u64
    );
    run(Command::new("sha256sum")
        .arg("-c")
        .arg("SHA256SUMS")
        .current_dir(m.dir.path()));
    run(Command::new("sha256sum")
        .arg("-c")
        .arg("alpha.iso.sha256")
        .current_dir(m.dir.path()));
    drop(m);

    // A remount over the same cache answers without reading either image.
    let second = images(&a, &b);
    let m = Mounted::new(digest_tree(cache.path(), &second));
    assert_eq!(std::fs::read_to_string(m.path("SHA256SUMS")).unwrap(), sums);
    assert_eq!(
        std::fs::read_to_string(m.path("zeta.iso.sha256")).unwrap(),
        side
    );
    for (_, file, _) in &second {
        assert_eq!(file.1.load(Ordering::Relaxed), 0);
    }
}

#[test]
fn pending_file_is_listed_at_once_and_read_when_planned() {
    let late = Arc::new(Pending::new());
    let failed = Arc::new(Pending::new());
    let mut vfs = Vfs::new();
    vfs.add_file("late.iso", late.clone()).unwrap();
    vfs.add_file("failed.iso", failed.clone()).unwrap();
    vfs.add_file(
        "ready.txt",
        Arc::new(ExtentMap::from_bytes("r", b"ready".to_vec())),
    )
    .unwrap();
    let m = Mounted::new(vfs);

    let names: Vec<String> = std::fs::read_dir(m.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["failed.iso", "late.iso", "ready.txt"]);
    assert_eq!(std::fs::read(m.path("ready.txt")).unwrap(), b"ready");

    let path = m.path("late.iso");
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut v).unwrap();
        v
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !reader.is_finished(),
        "read returned before the plan was set"
    );
    // Other files are served meanwhile.
    assert_eq!(std::fs::read(m.path("ready.txt")).unwrap(), b"ready");
    let data = pattern(200_000, 7);
    late.set(Ok(Arc::new(ExtentMap::from_bytes("late", data.clone()))));
    assert!(reader.join().unwrap() == data);

    failed.set(Err("no manifest for host".into()));
    let e = std::fs::metadata(m.path("failed.iso")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
}

fn cpath(p: &Path) -> std::ffi::CString {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

/// What `ls -l`, `cp`, `test -w` and `close` send besides reads gets a read-only filesystem's
/// answers, and none of it reaches the log as an unimplemented call.
#[test]
fn everyday_calls_get_read_only_answers() {
    let logs = logs();
    let mut vfs = Vfs::new();
    let body = pattern(10_000, 9);
    vfs.add_file(
        "dir/a.iso",
        Arc::new(ExtentMap::from_bytes("a", body.clone())),
    )
    .unwrap();
    let m = Mounted::new(vfs);
    let file = m.path("dir/a.iso");
    let (f, d) = (cpath(&file), cpath(&m.path("dir")));
    let errno = || std::io::Error::last_os_error().raw_os_error();
    unsafe {
        assert_eq!(libc::access(f.as_ptr(), libc::R_OK), 0);
        assert_eq!(libc::access(d.as_ptr(), libc::R_OK | libc::X_OK), 0);
        assert_eq!(libc::access(f.as_ptr(), libc::W_OK), -1);
        assert_eq!(errno(), Some(libc::EROFS));
        assert_eq!(libc::access(f.as_ptr(), libc::X_OK), -1);
        assert_eq!(errno(), Some(libc::EACCES));
        let mut value = [0u8; 64];
        let name = c"user.anything";
        let n = libc::getxattr(f.as_ptr(), name.as_ptr(), value.as_mut_ptr().cast(), 64);
        assert_eq!((n, errno()), (-1, Some(libc::ENODATA)));
        assert_eq!(libc::listxattr(f.as_ptr(), std::ptr::null_mut(), 0), 0);
        assert_eq!(
            libc::listxattr(d.as_ptr(), value.as_mut_ptr().cast(), 64),
            0
        );
    }
    let opened = File::open(&file).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&opened);
    unsafe {
        assert_eq!(libc::lseek(fd, 123, libc::SEEK_DATA), 123);
        assert_eq!(libc::lseek(fd, 123, libc::SEEK_HOLE), 10_000);
        assert_eq!(libc::lseek(fd, 10_000, libc::SEEK_DATA), -1);
        assert_eq!(errno(), Some(libc::ENXIO));
        assert_eq!(libc::lseek(fd, 0, libc::SEEK_SET), 0);
    }
    opened.sync_all().unwrap();
    drop(opened);
    run(Command::new("ls").arg("-lR").arg(m.dir.path()));
    let copy = tempfile::tempdir().unwrap();
    run(Command::new("cp").arg(&file).arg(copy.path()));
    assert!(std::fs::read(copy.path().join("a.iso")).unwrap() == body);
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(!text.contains("Not Implemented"), "{text}");
}
