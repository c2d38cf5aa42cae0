//! Mount lifecycle: check the mountpoint, detach from the caller, serve until unmounted or told to
//! stop.
//!
//! `mount(8)` waits for its helper to exit, so unless `foreground` the process forks before doing
//! anything else and the original process exits only when the forked daemon reports that the
//! mount answers (or why it failed). The fork happens first because threads do not survive a
//! fork: the tree, and the planner threads that fill its pending files, are built by the daemon
//! itself (the `build` closure). SIGINT and SIGTERM unmount cleanly and exit 0; an external
//! `umount` ends the daemon too.

use std::ffi::CString;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{mpsc, Arc, OnceLock};
use std::time::SystemTime;

use anyhow::{anyhow, bail, Context};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::fs::{self as isofs_fs, FsOptions};
use crate::inputs::InputError;
use crate::vfs::Vfs;

/// `statfs` magic of every FUSE filesystem (linux/magic.h).
const FUSE_SUPER_MAGIC: libc::c_long = 0x6573_5546;

#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Stay attached (under systemd, and for debugging).
    pub foreground: bool,
    pub allow_other: bool,
    /// Shown as the mount's source in `/proc/mounts`.
    pub fs_name: String,
    /// FUSE worker threads (at least 4 are used).
    pub threads: usize,
    /// The timestamp every file shows.
    pub mtime: SystemTime,
}

impl Default for MountOptions {
    fn default() -> Self {
        let fs = FsOptions::default();
        MountOptions {
            foreground: false,
            allow_other: fs.allow_other,
            fs_name: fs.fs_name,
            threads: fs.threads,
            mtime: fs.mtime,
        }
    }
}

impl MountOptions {
    fn fs_options(&self) -> FsOptions {
        FsOptions {
            mtime: self.mtime,
            allow_other: self.allow_other,
            fs_name: self.fs_name.clone(),
            threads: self.threads,
        }
    }
}

/// Mounts the tree made by `build` on `mountpoint`.
///
/// In the foreground this returns when the mount ends (unmounted, or SIGINT/SIGTERM). Otherwise it
/// returns in the calling process once the detached daemon's mount answers; the daemon itself never
/// returns (it exits the process). Call it before starting any thread, and start planner threads
/// inside `build`.
pub fn mount(
    mountpoint: &Path,
    opts: &MountOptions,
    build: impl FnOnce() -> anyhow::Result<Vfs>,
) -> anyhow::Result<()> {
    take_notify_socket();
    let mountpoint = prepare_mountpoint(mountpoint)?;
    if opts.foreground {
        // Registered before building so a stop request during planning is not lost.
        let signals = Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
        let vfs = build()?;
        return serve(vfs, &mountpoint, opts, signals, || {});
    }
    detach(&mountpoint, opts, build)
}

/// Unmounts an isofs mount (live or left by a dead daemon); refuses any other filesystem, and
/// fails if files on it are open.
pub fn umount(mountpoint: &Path) -> anyhow::Result<()> {
    let mountpoint = absolute(mountpoint)?;
    match mount_at(&mountpoint)? {
        None => match std::fs::symlink_metadata(&mountpoint) {
            Err(e) => Err(InputError::new(&mountpoint, e.to_string()).into()),
            Ok(_) => bail!("{}: not mounted", mountpoint.display()),
        },
        Some(m) if !m.is_isofs() => bail!(
            "{}: not an isofs mount (it is {}, source {:?}); use umount(8) for that",
            mountpoint.display(),
            m.fstype,
            m.source
        ),
        Some(_) => unmount(&mountpoint),
    }
}

/// What a plain (not lazy) unmount came to.
enum Unmount {
    Done,
    /// Files on the mount are open.
    Busy,
}

fn unmount(mountpoint: &Path) -> anyhow::Result<()> {
    match try_unmount(mountpoint)? {
        Unmount::Done => Ok(()),
        Unmount::Busy => bail!(
            "{}: busy (files are open); close them, or detach lazily with `umount -l`",
            mountpoint.display()
        ),
    }
}

fn try_unmount(mountpoint: &Path) -> anyhow::Result<Unmount> {
    let c = c_path(mountpoint)?;
    // SAFETY: `c` is a valid NUL-terminated path.
    // The path was resolved already: a symlink swapped in since must not redirect the unmount.
    if unsafe { libc::umount2(c.as_ptr(), libc::UMOUNT_NOFOLLOW) } == 0 {
        return Ok(Unmount::Done);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EPERM) => Ok(match fusermount(&["-u"], mountpoint)? {
            true => Unmount::Done,
            false => Unmount::Busy,
        }),
        Some(libc::EBUSY) => Ok(Unmount::Busy),
        Some(libc::EINVAL) => bail!("{}: not mounted", mountpoint.display()),
        _ => Err(anyhow!(err).context(format!("unmounting {}", mountpoint.display()))),
    }
}

fn c_path(p: &Path) -> anyhow::Result<CString> {
    crate::extent::c_path(p).with_context(|| p.display().to_string())
}

/// Runs `fusermount3 ARGS MOUNTPOINT` (how a user who is not root unmounts). Ok(false): the mount
/// is busy (files are open), which fusermount3 reports only in words.
fn fusermount(args: &[&str], mountpoint: &Path) -> anyhow::Result<bool> {
    let out = Command::new("fusermount3")
        .args(args)
        .arg(mountpoint)
        // Its reasons are strerror(3) texts: untranslated, so "busy" can be recognised.
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .output()
        .context("running fusermount3")?;
    if out.status.success() {
        return Ok(true);
    }
    let said = String::from_utf8_lossy(&out.stderr);
    if said.contains("busy") {
        return Ok(false);
    }
    bail!(
        "fusermount3 {} {}: {}",
        args.join(" "),
        mountpoint.display(),
        said.trim()
            .strip_prefix("fusermount3: ")
            .unwrap_or(said.trim())
    )
}

/// The absolute mountpoint, after checking it is a directory that is not already served, and
/// clearing a stale FUSE mount left by a daemon that died.
fn prepare_mountpoint(mountpoint: &Path) -> anyhow::Result<PathBuf> {
    let abs = absolute(mountpoint)?;
    match std::fs::metadata(&abs) {
        Err(e) if is_disconnected(&e) => {
            tracing::warn!("{}: clearing a stale mount ({e})", abs.display());
            detach_lazily(&abs)?;
            if let Err(e) = std::fs::metadata(&abs) {
                bail!(
                    "{}: still unusable after clearing a stale mount: {e}",
                    abs.display()
                );
            }
        }
        Err(e) => {
            return Err(InputError::new(&abs, format!("not a usable mountpoint: {e}")).into())
        }
        Ok(m) if !m.is_dir() => {
            return Err(InputError::new(&abs, "not a usable mountpoint: not a directory").into())
        }
        Ok(_) => {}
    }
    if let Some(m) = mount_at(&abs)?.filter(MountEntry::is_fuse) {
        bail!(
            "{} is already mounted ({}, source {:?}); unmount it first: {} {}",
            abs.display(),
            m.fstype,
            m.source,
            if m.is_isofs() {
                "isofs umount"
            } else {
                "umount"
            },
            shell_word(&abs)
        );
    }
    if std::fs::read_dir(&abs).is_ok_and(|mut d| d.next().is_some()) {
        tracing::warn!(
            "{}: not empty; its files are hidden while mounted",
            abs.display()
        );
    }
    Ok(abs)
}

/// `path` made absolute and free of symlinks (so `/mnt/link` and its target are one mountpoint),
/// without touching the last component itself unless it is a symlink: it may be a dead mount.
fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    let mut path = path.to_path_buf();
    // As many links as the kernel follows in one lookup (MAXSYMLINKS).
    for _ in 0..40 {
        let name = path
            .file_name()
            .ok_or_else(|| anyhow!("mountpoint {}: not a directory name", path.display()))?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let parent = parent.canonicalize().map_err(|e| {
            InputError::new(
                &path,
                format!("not a usable mountpoint: {}: {e}", parent.display()),
            )
        })?;
        let abs = parent.join(name);
        match std::fs::read_link(&abs) {
            Ok(target) => path = parent.join(target),
            Err(_) => return Ok(abs),
        }
    }
    bail!(
        "mountpoint {}: too many levels of symbolic links",
        path.display()
    )
}

/// `path` as one word for a POSIX shell, to paste into a command.
fn shell_word(path: &Path) -> String {
    let s = path.to_string_lossy();
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._+-:@%,=".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn is_disconnected(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOTCONN) | Some(libc::ECONNABORTED)
    )
}

fn detach_lazily(mountpoint: &Path) -> anyhow::Result<()> {
    let c = c_path(mountpoint)?;
    // SAFETY: `c` is a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) } == 0 {
        return Ok(());
    }
    fusermount(&["-u", "-z"], mountpoint).map(|_| ())
}

struct MountEntry {
    /// `major:minor`.
    dev: String,
    fstype: String,
    source: String,
}

impl MountEntry {
    fn is_fuse(&self) -> bool {
        self.fstype == "fuse" || self.fstype.starts_with("fuse.")
    }

    fn is_isofs(&self) -> bool {
        self.fstype == "fuse.isofs"
    }
}

/// The topmost mount exactly at `path`, from /proc/self/mountinfo.
fn mount_at(path: &Path) -> anyhow::Result<Option<MountEntry>> {
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let want = path.as_os_str().as_bytes();
    let mut found = None;
    for line in info.lines() {
        // Fields (proc(5)): id parent major:minor root mountpoint options [optional...] - fstype source super-options
        let mut halves = line.splitn(2, " - ");
        let (Some(left), Some(right)) = (halves.next(), halves.next()) else {
            continue;
        };
        let mut l = left.split(' ');
        let (Some(dev), Some(mp)) = (l.nth(2), l.nth(1)) else {
            continue;
        };
        let mut r = right.split(' ');
        let (Some(fstype), Some(source)) = (r.next(), r.next()) else {
            continue;
        };
        if unescape(mp) == want {
            // Later lines are mounted on top of earlier ones.
            found = Some(MountEntry {
                dev: dev.to_string(),
                fstype: fstype.to_string(),
                source: String::from_utf8_lossy(&unescape(source)).into(),
            });
        }
    }
    Ok(found)
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(d)) => {
                out.push(
                    d.iter()
                        .fold(0u8, |acc, c| acc.wrapping_mul(8) + (c - b'0')),
                );
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Whether `mountpoint` is a FUSE mount that answers (a `statfs` round trip to its daemon).
pub fn is_live(mountpoint: &Path) -> bool {
    let Ok(c) = c_path(mountpoint) else {
        return false;
    };
    // SAFETY: statfs fills the zeroed struct; `c` is a valid path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0)
        && st.f_type as libc::c_long == FUSE_SUPER_MAGIC
}

enum Event {
    Signal(i32),
    Ended(std::io::Result<()>),
}

/// The kernel reads a FUSE file ahead in windows of the mount's readahead (128 KiB by default), one
/// request each; 4 MiB windows keep several 1 MiB requests in flight while streaming an ISO. Only
/// root may set it; without it the mount still works, just with smaller requests.
const READAHEAD_KB: u32 = 4096;

fn raise_readahead(mountpoint: &Path) {
    // The device comes from mountinfo, not stat: a stat would put the root's attributes in the
    // kernel's cache for the attribute TTL, and a dead daemon's mount would then still stat fine
    // instead of saying ENOTCONN.
    let Ok(Some(m)) = mount_at(mountpoint) else {
        return;
    };
    let knob = format!("/sys/class/bdi/{}/read_ahead_kb", m.dev);
    if let Err(e) = std::fs::write(&knob, READAHEAD_KB.to_string()) {
        tracing::debug!("{knob}: {e}; keeping the default readahead");
    }
}

/// Mounts, calls `ready` once the mount answers, and serves until the mount ends.
fn serve(
    vfs: Vfs,
    mountpoint: &Path,
    opts: &MountOptions,
    mut signals: Signals,
    ready: impl FnOnce(),
) -> anyhow::Result<()> {
    let session = isofs_fs::session(Arc::new(vfs), mountpoint, &opts.fs_options())
        .with_context(|| format!("mounting on {}", mountpoint.display()))?;
    let (tx, rx) = mpsc::channel();
    let signal_handle = signals.handle();
    let sig_tx = tx.clone();
    std::thread::spawn(move || {
        for s in signals.forever() {
            if sig_tx.send(Event::Signal(s)).is_err() {
                break;
            }
        }
    });
    // fuser unmounts by path when its session handle drops; after an external `umount` that could
    // hit a newer mount at the same place (seen with a quick remount). So the handle is never
    // dropped: only its serving thread is kept. The daemon unmounts by itself, and exits at the end.
    let background = ManuallyDrop::new(session.spawn().context("starting the FUSE threads")?);
    // SAFETY: moves the join handle out of a value that is never dropped or used again.
    let serving = unsafe { std::ptr::read(&background.guard) };
    std::thread::spawn(move || {
        let ended = serving
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("FUSE thread panicked")));
        let _ = tx.send(Event::Ended(ended));
    });
    if !is_live(mountpoint) {
        let _ = detach_lazily(mountpoint);
        bail!("{}: mounted but not answering", mountpoint.display());
    }
    raise_readahead(mountpoint);
    tracing::info!("serving {}", mountpoint.display());
    notify_systemd("READY=1");
    ready();
    let mut result = Ok(());
    let mut detached = false;
    while let Ok(ev) = rx.recv() {
        match ev {
            // The mount point may hold someone else's mount by now: never unmount by path again.
            Event::Signal(s) if detached => {
                tracing::info!("signal {s}: no longer serving the detached mount's open files");
                break;
            }
            Event::Signal(s) => {
                tracing::info!("signal {s}: unmounting {}", mountpoint.display());
                notify_systemd("STOPPING=1");
                // Requests still running (a plan, a hash, a compression) answer nobody now.
                // Open files keep the mount busy: it is detached now, and they are served until
                // closed.
                match try_unmount(mountpoint) {
                    Ok(Unmount::Done) => break,
                    Ok(Unmount::Busy) => tracing::warn!(
                        "{}: files are open; detaching the mount, serving them until they are closed",
                        mountpoint.display()
                    ),
                    Err(e) => tracing::warn!("{e:#}; detaching the mount instead"),
                }
                detach_lazily(mountpoint)?;
                detached = true;
            }
            Event::Ended(r) => {
                result = r.with_context(|| format!("serving {}", mountpoint.display()));
                break;
            }
        }
    }
    signal_handle.close();
    tracing::info!("unmounted {}", mountpoint.display());
    result
}

/// systemd's notification socket, taken out of the environment (as sd_notify(3) advises) so that
/// processes isofs starts (`nix`, `fusermount3`) do not report to systemd as if they were isofs.
static NOTIFY_SOCKET: OnceLock<Option<std::ffi::OsString>> = OnceLock::new();

/// Moves NOTIFY_SOCKET from the environment to [`NOTIFY_SOCKET`]; call while single-threaded.
fn take_notify_socket() {
    NOTIFY_SOCKET.get_or_init(|| {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        std::env::remove_var("NOTIFY_SOCKET");
        socket
    });
}

/// Tells systemd how the service is doing, when it runs one (a `Type=notify` unit such as
/// `isofs@.service` sets NOTIFY_SOCKET): "ready" means the mount answers. A lost message only costs
/// the unit its start-up timeout, so failures are logged, not fatal.
fn notify_systemd(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(Some(socket)) = NOTIFY_SOCKET.get() else {
        return;
    };
    let sent = (|| {
        // A leading '@' names a socket in the abstract namespace (sd_notify(3)).
        let addr = match socket.as_bytes().strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name)?,
            None => SocketAddr::from_pathname(socket)?,
        };
        UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)
    })();
    if let Err(e) = sent {
        tracing::warn!("telling systemd {state} through {socket:?}: {e}");
    }
}

fn pipe() -> anyhow::Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds on success; each is owned exactly once below.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe");
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((File::from(r), File::from(w)))
}

fn fork() -> anyhow::Result<libc::pid_t> {
    // SAFETY: the caller is single-threaded (documented on `mount`), so the child inherits a
    // consistent process.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).context("fork");
    }
    Ok(pid)
}

/// Double fork: the daemon is not a session leader (it can never gain a terminal) and is nobody's
/// zombie; the caller learns the outcome through a pipe.
fn detach(
    mountpoint: &Path,
    opts: &MountOptions,
    build: impl FnOnce() -> anyhow::Result<Vfs>,
) -> anyhow::Result<()> {
    let (rx, tx) = pipe()?;
    let first = fork()?;
    if first > 0 {
        drop(tx);
        let mut status = 0;
        // SAFETY: waits for our own child, which exits right after forking the daemon.
        unsafe { libc::waitpid(first, &mut status, 0) };
        // The daemon keeps the pipe open while it serves, so read its first line, and to the end
        // (its exit) only when that line is not "ready".
        let mut rx = BufReader::new(rx);
        let mut report = String::new();
        rx.read_line(&mut report)
            .context("reading the mount daemon's report")?;
        if report == "ready\n" {
            if !is_live(mountpoint) {
                bail!(
                    "{}: the daemon reported ready but the mount does not answer",
                    mountpoint.display()
                );
            }
            return Ok(());
        }
        let _ = rx.read_to_string(&mut report);
        if report.is_empty() {
            bail!("the mount daemon exited without a report");
        }
        bail!("{}", report.trim_end());
    }
    drop(rx);
    // SAFETY: setsid has no memory effects; it fails only if already a group leader, which a
    // fresh child is not.
    unsafe { libc::setsid() };
    if fork()? > 0 {
        // SAFETY: exits the intermediate child without running the parent's destructors/atexit.
        unsafe { libc::_exit(0) };
    }
    let code = match run_daemon(mountpoint, opts, build, tx) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e:#}");
            1
        }
    };
    std::process::exit(code)
}

fn run_daemon(
    mountpoint: &Path,
    opts: &MountOptions,
    build: impl FnOnce() -> anyhow::Result<Vfs>,
    mut report: File,
) -> anyhow::Result<()> {
    let signals = Signals::new([SIGINT, SIGTERM]);
    let setup = signals
        .context("installing signal handlers")
        .and_then(|s| Ok((s, build()?)));
    let (signals, vfs) = match setup {
        Ok(v) => v,
        Err(e) => {
            let _ = writeln!(report, "{e:#}");
            return Err(e);
        }
    };
    let mut sent = false;
    let result = serve(vfs, mountpoint, opts, signals, || {
        sent = writeln!(report, "ready").is_ok();
        let _ = report.flush();
        // Do not keep the caller's working directory busy.
        let _ = std::env::set_current_dir("/");
        quiet_stdio();
    });
    if !sent {
        if let Err(e) = &result {
            let _ = writeln!(report, "{e:#}");
        }
    }
    result
}

/// Points stdin at /dev/null, and stdout/stderr too when they are pipes: a caller that reads our
/// output to its end (a shell's `$(...)`, a test harness) would otherwise wait for the daemon to
/// exit. A terminal, file or journal socket is kept, so later log lines still land there.
fn quiet_stdio() {
    let Ok(null) = File::options().read(true).write(true).open("/dev/null") else {
        return;
    };
    let is_pipe = |fd: i32| {
        // SAFETY: the fd is borrowed only for this fstat; the File is forgotten, not closed.
        let f = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
        f.metadata().is_ok_and(|m| m.file_type().is_fifo())
    };
    for fd in [0, 1, 2] {
        if fd == 0 || is_pipe(fd) {
            // SAFETY: dup2 onto a standard fd; both fds are valid.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(r"/mnt/my\040isos"), b"/mnt/my isos");
        assert_eq!(unescape(r"a\134b"), b"a\\b");
        assert_eq!(unescape(r"trail\04"), b"trail\\04");
    }

    #[test]
    fn mountpoint_must_be_an_existing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("file");
        std::fs::write(&f, b"").unwrap();
        let e = prepare_mountpoint(&f).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
        let e = prepare_mountpoint(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("No such file"), "{e}");
        assert_eq!(
            prepare_mountpoint(dir.path()).unwrap(),
            dir.path().canonicalize().unwrap()
        );
    }
}
