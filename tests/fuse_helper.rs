//! mount.fuse.isofs turns mount(8)'s call into the isofs command line.

use std::process::Command;

/// The isofs arguments the helper would run, one per element.
fn helper(args: &[&str]) -> Result<Vec<String>, String> {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("isofs");
    std::fs::write(&fake, "#!/bin/sh\nprintf '%s\\n' \"$@\"\n").unwrap();
    Command::new("chmod").arg("+x").arg(&fake).status().unwrap();
    let out = Command::new("sh")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/mount-helpers/mount.fuse.isofs"
        ))
        .args(args)
        .env("ISOFS", &fake)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(String::from)
            .collect())
    } else {
        Err(String::from_utf8(out.stderr).unwrap())
    }
}

#[test]
fn options_map_to_flags_and_generic_ones_are_ignored() {
    let got = helper(&[
        "/srv/flake",
        "/mnt/my isos",
        "-o",
        "rw,noauto,manifests=/m,store=/s,cache=/c,x-systemd.automount,ventoy,allow_other,_netdev,nofail",
        "-n",
    ])
    .unwrap();
    let want = [
        "mount",
        "--flake",
        "/srv/flake",
        "--manifests",
        "/m",
        "--store",
        "/s",
        "--cache",
        "/c",
        "--ventoy",
        "--allow-other",
        "/mnt/my isos",
    ];
    assert_eq!(got, want);
    let got = helper(&[
        "f",
        "/mp",
        "-o",
        "manifests=/m,store=/s,foreground,templates=/t",
    ])
    .unwrap();
    assert_eq!(
        got,
        [
            "mount",
            "--flake",
            "f",
            "--manifests",
            "/m",
            "--store",
            "/s",
            "--templates",
            "/t",
            "--foreground",
            "/mp"
        ]
    );
}

#[test]
fn every_mount_flag_has_an_option() {
    let got = helper(&[
        "f",
        "/mp",
        "-o",
        "sync,lazytime,cache_max=2G,config=/f/isofs.toml,compress_image,compression=zstd:3,default-entry=autoinstall,hosts=a:b",
    ])
    .unwrap();
    assert_eq!(
        got,
        [
            "mount",
            "--flake",
            "f",
            "--cache-max",
            "2G",
            "--config",
            "/f/isofs.toml",
            "--compress-image",
            "--compression",
            "zstd:3",
            "--default-entry",
            "autoinstall",
            "--hosts",
            "a,b",
            "/mp"
        ]
    );
    // Sloppy: an unknown option is a warning.
    let got = helper(&["f", "/mp", "-s", "-o", "bogus,ventoy"]).unwrap();
    assert_eq!(got, ["mount", "--flake", "f", "--ventoy", "/mp"]);
}

#[test]
fn unknown_options_and_bad_calls_fail() {
    assert!(helper(&["f", "/mp", "-o", "bogus"])
        .unwrap_err()
        .contains("bogus"));
    assert!(helper(&["only-one"]).unwrap_err().contains("usage"));
}

/// mount(8)'s exit statuses: 32 ("mount failure") when isofs is missing or fails, with a message
/// saying what to do, instead of the shell's 127 or isofs's own codes.
#[test]
fn missing_or_failing_isofs_is_a_mount_failure() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/mount-helpers/mount.fuse.isofs"
    );
    let dir = tempfile::tempdir().unwrap();
    let failing = dir.path().join("isofs");
    std::fs::write(&failing, "#!/bin/sh\necho 'isofs: bad input' >&2\nexit 2\n").unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(&failing)
        .status()
        .unwrap();
    let missing = dir.path().join("nowhere/isofs");
    for (isofs, says) in [(&missing, "set ISOFS="), (&failing, "isofs: bad input")] {
        let out = Command::new("sh")
            .args([script, "f", "/mp", "-o", "ventoy"])
            .env("ISOFS", isofs)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(32), "{err}");
        assert!(err.contains(says), "{err}");
    }
}
