//! The generic minimal installer: `minimal.json` (`"edition": "minimal"`, no host) next to the
//! hosts' manifests, generated here from shinji.json.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const ISO: &str = "nixos-minimal-25.11-x86_64-linux.iso";

/// A manifests directory holding the world's manifests plus `minimal.json`.
fn manifests_with_minimal(dir: &Path, minimal: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let m = dir.join("manifests");
    std::fs::create_dir(&m).unwrap();
    for e in std::fs::read_dir(world().join("manifests")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), m.join(e.file_name())).unwrap();
    }
    let text = std::fs::read_to_string(m.join("shinji.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let obj = v.as_object_mut().unwrap();
    obj.remove("host");
    obj.insert("edition".into(), "minimal".into());
    minimal(&mut v);
    std::fs::write(
        m.join("minimal.json"),
        serde_json::to_vec_pretty(&v).unwrap(),
    )
    .unwrap();
    m
}

fn isofs_with(manifests: &Path, args: &[&str]) -> Command {
    let mut flags = input_args(world());
    let i = flags.iter().position(|f| f == "--manifests").unwrap();
    flags[i + 1] = manifests.display().to_string();
    let mut c = isofs();
    c.args(args).args(flags);
    c
}

fn extract(iso: &Path, inner: &str, to: &Path) -> String {
    run(Command::new("osirrox")
        .arg("-indev")
        .arg(iso)
        .arg("-extract")
        .arg(inner)
        .arg(to));
    std::fs::read_to_string(to).unwrap()
}

#[test]
fn minimal_image_has_no_flake_and_one_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let m = manifests_with_minimal(tmp.path(), |_| {});

    let hosts = stdout(&mut isofs_with(&m, &["hosts"]));
    assert!(
        hosts.contains(&format!("minimal\t{ISO}\tnixos-minimal-25.11-x86_64\n")),
        "{hosts}"
    );
    assert!(hosts.starts_with("shinji\t"), "{hosts}");

    let out = tmp.path().join("out");
    let printed = stdout(&mut isofs_with(
        &m,
        &["build", "minimal", "--out", out.to_str().unwrap()],
    ));
    let iso = PathBuf::from(printed.trim());
    assert_eq!(iso, out.join("iso").join(ISO));

    let d = stdout(Command::new("isoinfo").arg("-d").arg("-i").arg(&iso));
    assert!(d.contains("Volume id: nixos-minimal-25.11-x86_64\n"), "{d}");
    let root = stdout(Command::new("isoinfo").args(["-R", "-f", "-i"]).arg(&iso));
    assert!(root.lines().any(|l| l == "/nix-store.squashfs"), "{root}");
    assert!(
        !root.lines().any(|l| l.starts_with("/nixos-flake")),
        "{root}"
    );

    let grub = extract(&iso, "/EFI/BOOT/grub.cfg", &tmp.path().join("grub.cfg"));
    let entries: Vec<_> = grub
        .lines()
        .filter(|l| l.starts_with("menuentry"))
        .collect();
    assert_eq!(entries, ["menuentry \"NixOS 25.11 installer\" {"], "{grub}");
    assert!(
        !grub.contains("autoinstall") && !grub.contains("isofs.host="),
        "{grub}"
    );
    let isolinux = extract(&iso, "/isolinux/isolinux.cfg", &tmp.path().join("iso.cfg"));
    let labels: Vec<_> = isolinux
        .lines()
        .filter(|l| l.trim_start().starts_with("LABEL "))
        .collect();
    assert_eq!(labels.len(), 1, "{isolinux}");
    assert!(!isolinux.contains("autoinstall"), "{isolinux}");

    // `--hosts` asks for those hosts only, and may name the minimal image too.
    let only = stdout(&mut isofs_with(&m, &["hosts", "--hosts", "shinji"]));
    assert_eq!(only.lines().count(), 1, "{only}");
    let named = stdout(&mut isofs_with(&m, &["hosts", "--hosts", "minimal,shinji"]));
    let names: Vec<_> = named
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(names, ["shinji", "minimal"], "{named}");

    // An autoinstall default for every image leaves the minimal one booting install, and says so.
    let auto = isofs_with(
        &m,
        &[
            "build",
            "minimal",
            "--default-entry",
            "autoinstall",
            "--out",
            tmp.path().join("auto").to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&auto.stderr);
    assert!(auto.status.success(), "{err}");
    assert!(err.contains("no autoinstall entry"), "{err}");
}

#[test]
fn minimal_manifest_must_not_name_a_host() {
    let tmp = tempfile::tempdir().unwrap();
    let m = manifests_with_minimal(tmp.path(), |v| {
        v.as_object_mut()
            .unwrap()
            .insert("host".into(), "shinji".into());
    });
    let out = isofs_with(&m, &["hosts"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("minimal.json") && err.contains("host"),
        "{err}"
    );
}
