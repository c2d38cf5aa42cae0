//! `isofs mount` of the fixture world serves exactly what `isofs build` writes, through a real FUSE
//! mount read by ordinary tools, and fails a read (EIO, one log line) rather than serve a wrong byte.

mod common;
use common::*;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const SHINJI: &str = "nixos-shinji-25.11-x86_64-linux.iso";
const KENPACHI: &str = "nixos-kenpachi-25.11-x86_64-linux.iso";

/// Both hosts built once to disk: the reference bytes.
fn reference() -> &'static Path {
    static OUT: OnceLock<tempfile::TempDir> = OnceLock::new();
    OUT.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        build("shinji", &d.path().join("shinji"), &[]);
        build("kenpachi", &d.path().join("kenpachi"), &[]);
        d
    })
    .path()
}

fn reference_iso(name: &str) -> PathBuf {
    let host = if name == SHINJI { "shinji" } else { "kenpachi" };
    reference().join(host).join("iso").join(name)
}

/// A mount that is unmounted when dropped, whatever the test did.
struct Mount {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Mount {
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = isofs().arg("umount").arg(self.dir.path()).output();
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn wait_live(p: &Path) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        let out = Command::new("stat")
            .args(["-f", "-c", "%T"])
            .arg(p)
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("fuse") {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{} never became a FUSE mount", p.display());
}

/// `isofs mount` detached (the default), like a user runs it.
fn mount_detached(args: &[String], extra: &[&str]) -> Mount {
    let dir = tempfile::tempdir().unwrap();
    run(isofs().arg("mount").arg(dir.path()).args(args).args(extra));
    wait_live(dir.path());
    Mount { dir, child: None }
}

/// `isofs mount --foreground` with its log captured in `log`.
fn mount_foreground(args: &[String], log: &Path) -> Mount {
    let dir = tempfile::tempdir().unwrap();
    let child = isofs()
        .arg("mount")
        .arg(dir.path())
        .arg("--foreground")
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(File::create(log).unwrap())
        .spawn()
        .unwrap();
    wait_live(dir.path());
    Mount {
        dir,
        child: Some(child),
    }
}

/// The mount most tests share. Statics are never dropped, so it is unmounted at process exit.
static SHARED: OnceLock<Mount> = OnceLock::new();

extern "C" fn unmount_shared() {
    if let Some(m) = SHARED.get() {
        let _ = isofs().arg("umount").arg(m.path()).output();
    }
}

fn mounted() -> &'static Mount {
    SHARED.get_or_init(|| {
        reference();
        // SAFETY: registers a plain function; it runs once, at exit, on the main thread.
        assert_eq!(unsafe { libc::atexit(unmount_shared) }, 0);
        mount_detached(&input_args(world()), &["--ventoy"])
    })
}

#[test]
fn listing_sizes_and_modes() {
    let m = mounted();
    let mut names: Vec<String> = std::fs::read_dir(m.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "SHA256SUMS",
            KENPACHI,
            &format!("{KENPACHI}.sha256"),
            SHINJI,
            &format!("{SHINJI}.sha256"),
            "ventoy"
        ]
    );
    for iso in [SHINJI, KENPACHI] {
        let meta = std::fs::metadata(m.path().join(iso)).unwrap();
        assert_eq!(
            meta.len(),
            std::fs::metadata(reference_iso(iso)).unwrap().len()
        );
        assert_eq!(meta.len() % 2048, 0);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o7777, 0o444);
    }
    let json = std::fs::read_to_string(m.path().join("ventoy/ventoy.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["menu_alias"].as_array().unwrap().len(), 2);
}

#[test]
fn cp_dd_and_sha256sum_equal_the_build() {
    let m = mounted();
    let tmp = tempfile::tempdir().unwrap();
    for iso in [SHINJI, KENPACHI] {
        let want = sha256_file(&reference_iso(iso));
        let src = m.path().join(iso);
        assert_eq!(sha256_file(&src), want, "sha256sum {iso}");
        let copy = tmp.path().join("cp.iso");
        run(Command::new("cp").arg(&src).arg(&copy));
        assert_eq!(sha256_file(&copy), want, "cp {iso}");
        for flags in [&["bs=4M"][..], &["bs=1M", "iflag=direct"][..]] {
            let out = tmp.path().join("dd.iso");
            run(Command::new("dd")
                .arg(format!("if={}", src.display()))
                .arg(format!("of={}", out.display()))
                .args(flags)
                .arg("status=none"));
            assert_eq!(sha256_file(&out), want, "dd {flags:?} {iso}");
        }
        let sidecar = std::fs::read_to_string(m.path().join(format!("{iso}.sha256"))).unwrap();
        assert_eq!(sidecar, format!("{want}  {iso}\n"));
    }
    run(Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(m.path()));
}

#[test]
fn eight_concurrent_readers_over_two_hosts() {
    let m = mounted();
    let refs: Vec<(Vec<u8>, PathBuf)> = [SHINJI, KENPACHI]
        .iter()
        .map(|n| (std::fs::read(reference_iso(n)).unwrap(), m.path().join(n)))
        .collect();
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let refs = &refs;
            s.spawn(move || {
                let (want, path) = &refs[(t % 2) as usize];
                let f = File::open(path).unwrap();
                let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ t;
                for _ in 0..200 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let off = seed % (want.len() as u64 + 4096);
                    let len = 1 + (seed >> 40) as usize % (3 << 20);
                    let mut buf = vec![0u8; len];
                    let mut got = 0;
                    while got < len {
                        let n = f.read_at(&mut buf[got..], off + got as u64).unwrap();
                        if n == 0 {
                            break;
                        }
                        got += n;
                    }
                    let end = (off as usize + len).min(want.len());
                    let expect = if (off as usize) < want.len() {
                        &want[off as usize..end]
                    } else {
                        &[][..]
                    };
                    assert_eq!(&buf[..got], expect, "thread {t} offset {off} len {len}");
                }
            });
        }
    });
}

/// A mount of a private copy of the world (own cache, so blocks cached by other tests cannot hide
/// a change) with shinji planned but not read (once read, the kernel's page cache may answer
/// later reads without asking the daemon), and a file only shinji's image holds.
struct OwnWorld {
    _dir: tempfile::TempDir,
    world: PathBuf,
    mount: Mount,
    log: PathBuf,
    shinji_only: PathBuf,
}

fn own_world_mount() -> OwnWorld {
    reference();
    let d = tempfile::tempdir().unwrap();
    let w = d.path().join("world");
    run(Command::new("cp").arg("-a").arg(world()).arg(&w));
    let mut args = input_args(&w);
    *args.last_mut().unwrap() = d.path().join("cache").display().to_string();
    let log = d.path().join("daemon.log");
    let mount = mount_foreground(&args, &log);
    // The size waits for the plan.
    assert_eq!(
        std::fs::metadata(mount.path().join(SHINJI)).unwrap().len(),
        std::fs::metadata(reference_iso(SHINJI)).unwrap().len()
    );
    let victim = std::fs::read_dir(w.join("store"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-shinji-tools-1.0"))
        .expect("shinji-only store path");
    let shinji_only = walk_files(&victim)
        .into_iter()
        .next()
        .expect("a file in it");
    OwnWorld {
        _dir: d,
        world: w,
        mount,
        log,
        shinji_only,
    }
}

/// Reads all of `path`, which must fail with EIO, within a minute (a hung read fails the test
/// rather than hanging it).
fn read_fails_with_eio(path: &Path) {
    let path = path.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = tx.send(File::open(&path).unwrap().read_to_end(&mut sink));
    });
    let got = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the read hangs");
    let err = got.expect_err("reading a changed input must fail");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
}

/// A store file changed after planning: reads of the image that touch it fail with EIO and one log
/// line names it; the other host, which does not contain it, keeps working.
#[test]
fn changed_store_file_is_eio_and_the_rest_keeps_working() {
    let o = own_world_mount();
    let mut bytes = std::fs::read(&o.shinji_only).unwrap();
    bytes.push(b'!');
    std::fs::write(&o.shinji_only, &bytes).unwrap();
    let shinji = o.mount.path().join(SHINJI);
    read_fails_with_eio(&shinji);
    assert_eq!(
        sha256_file(&o.mount.path().join(KENPACHI)),
        sha256_file(&reference_iso(KENPACHI))
    );
    // Read again, as `sha256sum` after a failed `cp` would: still one line for the one change.
    read_fails_with_eio(&shinji);
    let text = std::fs::read_to_string(&o.log).unwrap();
    let name = o
        .shinji_only
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let lines = text
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains(&name))
        .count();
    assert_eq!(lines, 1, "error lines naming {name}:\n{text}");
}

/// A boot file (read straight from the store, unlike squashfs blocks, which come from the cache)
/// replaced by a fifo after planning: opening it to read would wait for a writer and hold the FUSE
/// worker (with enough readers, the whole mount); it is an EIO like any change.
#[test]
fn store_file_turned_fifo_is_eio_not_a_hang() {
    let o = own_world_mount();
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(o.world.join("manifests/shinji.json")).unwrap(),
    )
    .unwrap();
    let initrd = o.world.join("store").join(
        manifest["initrd"]
            .as_str()
            .unwrap()
            .trim_start_matches("/nix/store/"),
    );
    std::fs::remove_file(&initrd).unwrap();
    run(Command::new("mkfifo").arg(&initrd));
    read_fails_with_eio(&o.mount.path().join(SHINJI));
    read_fails_with_eio(&o.mount.path().join(SHINJI));
    // Two ISOs, their sidecars and SHA256SUMS: the listing still answers.
    let entries = std::fs::read_dir(o.mount.path()).unwrap().count();
    assert!(entries >= 5, "{entries} entries");
}

fn walk_files(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            out.extend(walk_files(&e.path()));
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    out.sort();
    out
}

/// The repository's helper where mount(8) looks for it; on drop, whatever was there before (or
/// nothing) is put back, so the test leaves the machine as it found it.
struct InstalledHelper {
    path: &'static Path,
    before: Option<Vec<u8>>,
}

impl InstalledHelper {
    fn new() -> Self {
        let path = Path::new("/sbin/mount.fuse.isofs");
        let before = std::fs::read(path).ok();
        std::fs::copy(repo().join("mount-helpers/mount.fuse.isofs"), path).unwrap();
        InstalledHelper { path, before }
    }
}

impl Drop for InstalledHelper {
    fn drop(&mut self) {
        let _ = match &self.before {
            Some(bytes) => std::fs::write(self.path, bytes),
            None => std::fs::remove_file(self.path),
        };
    }
}

/// `mount -t fuse.isofs` through the helper in mount-helpers/, from an fstab line.
#[test]
fn mount_dash_t_fuse_isofs() {
    reference();
    let _helper = InstalledHelper::new();
    let dir = tempfile::tempdir().unwrap();
    let w = world();
    // nofail as in README's fstab line (a boot must not hang on it); the count below still
    // catches a second mount.
    let options = format!(
        "manifests={},store={},cache={},hosts=shinji,nofail",
        w.join("manifests").display(),
        w.join("store").display(),
        repo().join("target/test-cache").display()
    );
    // As an fstab line: `mount -a` mounts it, and a second `mount -a` sees it mounted (source,
    // mountpoint and type fuse.isofs match) instead of failing on a second mount.
    let fstab = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        fstab.path(),
        format!(
            "{} {} fuse.isofs {options} 0 0\n",
            w.join("flake").display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let mount_a = || {
        // mount(8) gives helpers a fixed PATH; the helper honours $ISOFS.
        run(Command::new("mount")
            .args(["-a", "-T"])
            .arg(fstab.path())
            .env("ISOFS", env!("CARGO_BIN_EXE_isofs")))
    };
    mount_a();
    let m = Mount { dir, child: None };
    wait_live(m.path());
    mount_a();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let at = format!(" {} fuse.isofs ", m.path().display());
    assert_eq!(mounts.matches(&at).count(), 1, "{mounts}");
    assert_eq!(
        sha256_file(&m.path().join(SHINJI)),
        sha256_file(&reference_iso(SHINJI))
    );
    assert!(!m.path().join(KENPACHI).exists());
}

/// Two daemons sharing one (cold) cache serve the same, correct bytes at the same time.
#[test]
fn two_daemons_share_one_cache() {
    reference();
    let d = tempfile::tempdir().unwrap();
    let mut args = input_args(world());
    *args.last_mut().unwrap() = d.path().join("cache").display().to_string();
    let a = mount_detached(&args, &[]);
    let b = mount_detached(&args, &[]);
    let want = sha256_file(&reference_iso(SHINJI));
    std::thread::scope(|s| {
        let ha = s.spawn(|| sha256_file(&a.path().join(SHINJI)));
        let hb = s.spawn(|| sha256_file(&b.path().join(SHINJI)));
        assert_eq!(ha.join().unwrap(), want);
        assert_eq!(hb.join().unwrap(), want);
    });
}

/// `kill -9` of the daemon during a copy: the copy fails, the next `isofs mount` on the same
/// mountpoint clears the dead mount, and serves correct bytes from the cache the dead one left.
#[test]
fn kill_9_during_copy_then_remount() {
    reference();
    let d = tempfile::tempdir().unwrap();
    let mut args = input_args(world());
    *args.last_mut().unwrap() = d.path().join("cache").display().to_string();
    let log = d.path().join("daemon.log");
    let mut m = mount_foreground(&args, &log);
    let src = m.path().join(SHINJI);
    let mut cp = Command::new("dd")
        .arg(format!("if={}", src.display()))
        .arg(format!("of={}", d.path().join("partial.iso").display()))
        .args(["bs=64k", "iflag=direct", "status=none"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut daemon = m.child.take().unwrap();
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    let _ = cp.wait();
    let stat = std::fs::metadata(m.path());
    assert!(stat.is_err(), "the dead mount should be disconnected");
    // Same mountpoint, detached daemon: clears the stale mount first.
    run(isofs().arg("mount").arg(m.path()).args(&args));
    wait_live(m.path());
    assert_eq!(sha256_file(&src), sha256_file(&reference_iso(SHINJI)));
}

/// As `mount-helpers/isofs@.service` runs it (`Type=notify`, inputs from a settings file): the
/// file's inputs are used (`hosts` as the flag writes it), READY=1 is sent once the mount answers,
/// STOPPING=1 on SIGTERM, and the daemon exits 0 having unmounted.
#[test]
fn runs_as_the_systemd_unit_does() {
    let d = tempfile::tempdir().unwrap();
    let w = world();
    let config = d.path().join("mnt-isos.toml");
    std::fs::write(
        &config,
        format!(
            "flake = {:?}\nmanifests = {:?}\nstore = {:?}\ncache = \"cache\"\nhosts = \"shinji\"\n",
            w.join("flake"),
            w.join("manifests"),
            w.join("store")
        ),
    )
    .unwrap();
    let socket_path = d.path().join("notify");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mnt = d.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut daemon = isofs()
        .arg("mount")
        .arg(&mnt)
        .arg("--foreground")
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut msg = [0u8; 64];
    let n = socket.recv(&mut msg).expect("READY=1 within a minute");
    assert_eq!(&msg[..n], b"READY=1");
    let stat = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&stat.stdout).contains("fuse"));
    assert!(mnt.join(SHINJI).exists() && !mnt.join(KENPACHI).exists());
    assert!(
        d.path().join("cache").is_dir(),
        "cache relative to the settings file"
    );
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let n = socket.recv(&mut msg).unwrap();
    assert_eq!(&msg[..n], b"STOPPING=1");
    assert!(daemon.wait().unwrap().success());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains(&mnt.display().to_string()), "{mounts}");
}

/// A mountpoint named through a symlink is the directory it points to: a second mount through
/// either name is refused, `isofs umount` accepts either name, and the mount shows as
/// `fuse.isofs` with the flake as its source (what mount(8) compares for `mount -a`).
#[test]
fn symlinked_mountpoint_is_one_mountpoint() {
    // Unmounted on drop even if an assertion fails.
    let m = Mount {
        dir: tempfile::tempdir().unwrap(),
        child: None,
    };
    let real = m.path().to_path_buf();
    let d = tempfile::tempdir().unwrap();
    let link = d.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let args = input_args(world());
    run(isofs().arg("mount").arg(&link).args(&args));
    for again in [&link, &real] {
        let out = isofs()
            .arg("mount")
            .arg(again)
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("already mounted"),
            "{err}"
        );
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let ours: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(&real.display().to_string()))
        .collect();
    let flake = world().join("flake").canonicalize().unwrap();
    assert_eq!(ours.len(), 1, "{mounts}");
    assert!(
        ours[0].starts_with(&format!(
            "{} {} fuse.isofs ",
            flake.display(),
            real.display()
        )),
        "{}",
        ours[0]
    );
    run(isofs().arg("umount").arg(&link));
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains(&real.display().to_string()), "{mounts}");
    drop(m);
}

/// A missing mountpoint is bad input (exit 2, one message); a non-empty one is used, with a
/// warning that its files are hidden meanwhile.
#[test]
fn mountpoint_mistakes() {
    let d = tempfile::tempdir().unwrap();
    for missing in ["nowhere", "nowhere/deeper"] {
        let out = isofs()
            .arg("mount")
            .arg(d.path().join(missing))
            .args(input_args(world()))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains(&format!("{missing}: not a usable mountpoint")),
            "{err}"
        );
    }

    let m = Mount {
        dir: tempfile::tempdir().unwrap(),
        child: None,
    };
    std::fs::write(m.path().join("mine.txt"), b"hidden while mounted").unwrap();
    let out = isofs()
        .arg("mount")
        .arg(m.path())
        .args(input_args(world()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("not empty"), "{err}");
    wait_live(m.path());
    assert!(!m.path().join("mine.txt").exists());
}

/// A child process killed (and reaped) when dropped, so a failed assertion leaves no reader
/// holding a mount open.
struct KilledOnDrop(Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lets every user open /dev/fuse, as udev does on a desktop (this machine's is 0600, so only the
/// setuid fusermount3 path is closed to other users); the old mode is put back on drop.
struct OpenDevFuse(u32);

impl OpenDevFuse {
    fn new() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata("/dev/fuse").unwrap().permissions().mode() & 0o7777;
        std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(mode | 0o666))
            .unwrap();
        OpenDevFuse(mode)
    }
}

impl Drop for OpenDevFuse {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(self.0));
    }
}

/// A user's own mount, the usual case on a NixOS desktop: as `nobody`, `isofs mount` falls back
/// to the setuid fusermount3, plans into the default cache under the user's home, serves the ISO
/// with the bytes `isofs build` writes, and `isofs umount` removes it through fusermount3 (and
/// says "busy" as for root while a file is open).
#[test]
fn unprivileged_user_mounts_reads_and_unmounts() {
    use std::os::unix::fs::PermissionsExt;
    reference();
    let _dev = OpenDevFuse::new();
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Unmounted on drop even if an assertion fails.
    let m = Mount {
        dir: tempfile::TempDir::new_in(d.path()).unwrap(),
        child: None,
    };
    let (mnt, home) = (m.path().to_path_buf(), d.path().join("home"));
    std::fs::create_dir(&home).unwrap();
    for dir in [&mnt, &home] {
        std::os::unix::fs::chown(dir, Some(65534), Some(65534)).unwrap();
    }
    let as_nobody = |program: &str| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(program)
            .env("HOME", &home)
            .env_remove("XDG_CACHE_HOME");
        c
    };
    let w = world();
    run(as_nobody(env!("CARGO_BIN_EXE_isofs"))
        .arg("mount")
        .arg(&mnt)
        .arg("--flake")
        .arg(w.join("flake"))
        .arg("--manifests")
        .arg(w.join("manifests"))
        .arg("--store")
        .arg(w.join("store"))
        .args(["--hosts", "shinji"]));
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        mounts.lines().any(|l| l.contains(&format!(
            " {} fuse.isofs ro,nosuid,nodev,noexec,noatime,user_id=65534,",
            mnt.display()
        ))),
        "{mounts}"
    );
    let hashed = run(as_nobody("sha256sum").arg(mnt.join(SHINJI)));
    let hex = String::from_utf8_lossy(&hashed.stdout);
    assert!(
        hex.starts_with(&sha256_file(&reference_iso(SHINJI))),
        "{hex}"
    );
    assert!(
        home.join(".cache/isofs").is_dir(),
        "default cache under the user's home"
    );
    // With a file open, fusermount3's refusal reads as isofs's own "busy" advice.
    let mut holder = KilledOnDrop(
        as_nobody("sh")
            .arg("-c")
            .arg(format!(
                "exec 3<'{}'; echo open; exec sleep 30",
                mnt.join(SHINJI).display()
            ))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.0.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let busy = as_nobody(env!("CARGO_BIN_EXE_isofs"))
        .arg("umount")
        .arg(&mnt)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&busy.stderr);
    assert_eq!(busy.status.code(), Some(1), "{err}");
    assert!(err.contains("busy (files are open)"), "{err}");
    drop(holder);
    run(as_nobody(env!("CARGO_BIN_EXE_isofs"))
        .arg("umount")
        .arg(&mnt));
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains(&mnt.display().to_string()), "{mounts}");
    drop(m);
}
