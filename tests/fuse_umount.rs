//! `isofs umount` refuses what is not an isofs mount. Its own test binary: `fuse_daemon` forks the
//! test process and must stay its binary's only test.

use isofs::daemon::umount;
use std::path::Path;
use std::process::Command;

fn mounted_here(mp: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mp = mp.to_str().unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(mp))
}

/// The systemd unit runs `isofs umount` as root: it must leave any other filesystem alone.
#[test]
fn umount_refuses_other_filesystems() {
    let dir = tempfile::tempdir().unwrap();
    let mp = dir.path().canonicalize().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&mp)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("cannot mount a tmpfs (not root?): skipped");
        return;
    }
    let e = umount(&mp).unwrap_err().to_string();
    assert!(
        e.contains("not an isofs mount") && e.contains("tmpfs"),
        "{e}"
    );
    assert!(mounted_here(&mp));
    Command::new("umount").arg(&mp).status().unwrap();
}
