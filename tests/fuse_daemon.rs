//! The mount lifecycle: detaching, refusing a live mount, clearing a stale one, stopping on
//! SIGTERM. One test function, run in order, because the daemon forks the test process.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use isofs::daemon::{is_live, mount, umount, MountOptions};
use isofs::extent::ExtentMap;
use isofs::vfs::Vfs;

fn tree() -> anyhow::Result<Vfs> {
    let mut vfs = Vfs::new();
    vfs.add_file(
        "host.iso",
        Arc::new(ExtentMap::from_bytes("h", b"iso bytes".to_vec())),
    )?;
    Ok(vfs)
}

fn opts(foreground: bool) -> MountOptions {
    MountOptions {
        foreground,
        fs_name: "isofs-test".into(),
        ..MountOptions::default()
    }
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mounted_here(mp: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mp = mp.to_str().unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(mp))
}

/// Runs `f` in a forked child and returns its pid; the child exits 0 if `f` returns Ok.
fn fork_child(f: impl FnOnce() -> anyhow::Result<()>) -> libc::pid_t {
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let code = match f() {
            Ok(()) => 0,
            Err(e) => {
                // Straight to fd 2: the harness's output capture does not survive a fork.
                let msg = format!("child: {e:#}\n");
                unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
                1
            }
        };
        unsafe { libc::_exit(code) };
    }
    pid
}

fn exit_status(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status),
        "child did not exit normally: {status}"
    );
    libc::WEXITSTATUS(status)
}

/// Detaches whatever is still mounted at the path when a failed assertion ends the test, so the
/// daemons it started see their mount end and exit instead of lingering.
struct DetachOnDrop(std::path::PathBuf);

impl Drop for DetachOnDrop {
    fn drop(&mut self) {
        let c = std::ffi::CString::new(self.0.to_str().unwrap()).unwrap();
        while mounted_here(&self.0) {
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                break;
            }
        }
    }
}

#[test]
fn lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let mp = dir.path().canonicalize().unwrap();
    let _cleanup = DetachOnDrop(mp.clone());

    // Detached: returns once the mount answers; the daemon outlives the call.
    mount(&mp, &opts(false), tree).unwrap();
    assert!(is_live(&mp));
    assert_eq!(std::fs::read(mp.join("host.iso")).unwrap(), b"iso bytes");
    let e = mount(&mp, &opts(false), tree).unwrap_err().to_string();
    assert!(
        e.contains("already mounted") && e.contains("isofs-test"),
        "{e}"
    );
    umount(&mp).unwrap();
    wait_for("unmount", || !mounted_here(&mp));
    assert!(umount(&mp).unwrap_err().to_string().contains("not mounted"));
    let nowhere = mp.join("nowhere");
    assert!(umount(&nowhere)
        .unwrap_err()
        .to_string()
        .contains("No such file or directory"));

    // A build failure reaches the caller, and nothing stays mounted.
    let e = mount(&mp, &opts(false), || {
        anyhow::bail!("no manifest for host shinji")
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("no manifest for host shinji"), "{e}");
    assert!(!mounted_here(&mp));

    // A daemon killed outright leaves a dead mount; the next mount clears it.
    let killed = fork_child(|| mount(&mp, &opts(true), tree));
    wait_for("foreground mount", || is_live(&mp));
    unsafe { libc::kill(killed, libc::SIGKILL) };
    exit_status_signalled(killed);
    let err = std::fs::metadata(&mp).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN));
    mount(&mp, &opts(false), tree).unwrap();
    assert_eq!(std::fs::read(mp.join("host.iso")).unwrap(), b"iso bytes");
    umount(&mp).unwrap();
    wait_for("unmount", || !mounted_here(&mp));

    // SIGTERM in the foreground: clean unmount, exit 0.
    let served = fork_child(|| mount(&mp, &opts(true), tree));
    wait_for("foreground mount", || is_live(&mp));
    unsafe { libc::kill(served, libc::SIGTERM) };
    assert_eq!(exit_status(served), 0);
    assert!(!mounted_here(&mp));
    assert!(std::fs::metadata(&mp).unwrap().is_dir());

    // Busy at SIGTERM: detached lazily, its open file still served; a second signal ends that
    // daemon without touching a newer mount at the same place.
    let first = fork_child(|| mount(&mp, &opts(true), tree));
    wait_for("foreground mount", || is_live(&mp));
    let open = std::fs::File::open(mp.join("host.iso")).unwrap();
    unsafe { libc::kill(first, libc::SIGTERM) };
    wait_for("lazy detach", || !mounted_here(&mp));
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut &open, &mut bytes).unwrap();
    assert_eq!(bytes, b"iso bytes");
    mount(&mp, &opts(false), tree).unwrap();
    unsafe { libc::kill(first, libc::SIGTERM) };
    assert_eq!(exit_status(first), 0);
    assert!(is_live(&mp));
    assert_eq!(std::fs::read(mp.join("host.iso")).unwrap(), b"iso bytes");
    drop(open);
    umount(&mp).unwrap();
    wait_for("unmount", || !mounted_here(&mp));
}

fn exit_status_signalled(pid: libc::pid_t) {
    let mut status = 0;
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFSIGNALED(status));
}
