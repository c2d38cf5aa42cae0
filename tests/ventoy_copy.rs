//! `isofs ventoy DEST` against a directory standing in for a mounted Ventoy data partition, and
//! against a real exFAT stick image.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const ISO: &str = "nixos-shinji-25.11-x86_64-linux.iso";

fn ventoy(dest: &Path) -> Command {
    let mut c = isofs();
    c.arg("ventoy")
        .arg(dest)
        .args(input_args(world()))
        .args(["--hosts", "shinji"]);
    c
}

fn built_iso(out: &Path) -> PathBuf {
    build("shinji", out, &[])
}

fn mtime(p: &Path) -> std::time::SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

#[test]
fn copies_then_skips_then_replaces_stale() {
    let out = tempfile::tempdir().unwrap();
    let want = std::fs::read(built_iso(out.path())).unwrap();
    let want_hex = sha256_file(&built_iso(out.path()));
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();

    let first = stdout(&mut ventoy(d));
    assert!(first.contains("copied"), "{first}");
    assert!(
        std::fs::read(d.join(ISO)).unwrap() == want,
        "bytes differ from isofs build"
    );
    let sidecar = std::fs::read_to_string(d.join(format!("{ISO}.sha256"))).unwrap();
    assert_eq!(sidecar, format!("{want_hex}  {ISO}\n"));
    run(Command::new("sha256sum")
        .arg("-c")
        .arg(format!("{ISO}.sha256"))
        .current_dir(d));
    let leftovers: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("part"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A rerun finds the image current and writes nothing.
    let (m_iso, m_sum) = (mtime(&d.join(ISO)), mtime(&d.join(format!("{ISO}.sha256"))));
    let m_json = mtime(&d.join("ventoy/ventoy.json"));
    std::thread::sleep(std::time::Duration::from_millis(20));
    let second = stdout(&mut ventoy(d));
    assert!(second.contains("up to date"), "{second}");
    assert_eq!(mtime(&d.join(ISO)), m_iso);
    assert_eq!(mtime(&d.join(format!("{ISO}.sha256"))), m_sum);
    assert_eq!(mtime(&d.join("ventoy/ventoy.json")), m_json);

    // An older image of the same size, with its own (correct) sidecar, is stale.
    let mut old = want.clone();
    old[40000] ^= 0xff;
    std::fs::write(d.join(ISO), &old).unwrap();
    let old_hex = sha256_file(&d.join(ISO));
    std::fs::write(
        d.join(format!("{ISO}.sha256")),
        format!("{old_hex}  {ISO}\n"),
    )
    .unwrap();
    let third = stdout(&mut ventoy(d));
    assert!(third.contains("copied"), "{third}");
    assert!(std::fs::read(d.join(ISO)).unwrap() == want);
    assert_eq!(
        std::fs::read_to_string(d.join(format!("{ISO}.sha256"))).unwrap(),
        sidecar
    );

    // So is one of another size, even with our sidecar next to it.
    std::fs::write(d.join(ISO), b"truncated").unwrap();
    let fourth = stdout(&mut ventoy(d));
    assert!(fourth.contains("copied"), "{fourth}");
    assert!(std::fs::read(d.join(ISO)).unwrap() == want);
}

#[test]
fn merges_into_the_users_ventoy_json() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    std::fs::create_dir(d.join("ventoy")).unwrap();
    let user = r#"{
  "control": [ { "VTOY_DEFAULT_SEARCH_ROOT": "/ISO" } ],
  "theme": { "file": "/ventoy/theme/theme.txt" },
  "menu_alias": [
    { "image": "/ISO/debian.iso", "alias": "Debian" },
    { "image": "/nixos-shinji-25.11-x86_64-linux.iso", "alias": "stale alias" }
  ],
  "menu_tip": { "left": "10%", "tips": [ { "image": "/ISO/debian.iso", "tip": "Debian tip" } ] }
}"#;
    std::fs::write(d.join("ventoy/ventoy.json"), user).unwrap();
    stdout(&mut ventoy(d));
    let text = std::fs::read_to_string(d.join("ventoy/ventoy.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys,
        ["control", "theme", "menu_alias", "menu_tip"],
        "{text}"
    );
    assert_eq!(v["control"][0]["VTOY_DEFAULT_SEARCH_ROOT"], "/ISO");
    assert_eq!(v["theme"]["file"], "/ventoy/theme/theme.txt");
    let alias = v["menu_alias"].as_array().unwrap();
    assert_eq!(alias.len(), 2, "{text}");
    assert_eq!(alias[0]["alias"], "Debian");
    assert_eq!(alias[1]["image"], format!("/{ISO}"));
    assert_eq!(alias[1]["alias"], "NixOS 25.11 installer for shinji");
    assert_eq!(v["menu_tip"]["left"], "10%");
    let tips = v["menu_tip"]["tips"].as_array().unwrap();
    assert_eq!(tips.len(), 2);
    assert_eq!(tips[0]["tip"], "Debian tip");
    assert_eq!(tips[1]["image"], format!("/{ISO}"));

    // A file isofs cannot parse is left alone and the command fails.
    std::fs::write(d.join("ventoy/ventoy.json"), "{ not json").unwrap();
    let out = ventoy(d).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ventoy.json"), "{err}");
    assert_eq!(
        std::fs::read_to_string(d.join("ventoy/ventoy.json")).unwrap(),
        "{ not json"
    );
}

#[test]
fn creates_ventoy_json_when_absent() {
    let dest = tempfile::tempdir().unwrap();
    stdout(&mut ventoy(dest.path()));
    let text = std::fs::read_to_string(dest.path().join("ventoy/ventoy.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["menu_alias"][0]["image"], format!("/{ISO}"));
    assert_eq!(v["menu_tip"]["tips"][0]["image"], format!("/{ISO}"));
}

/// A read-only tmpfs when root (permissions do not stop root), else a mode-0555 directory.
struct ReadOnlyDir {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl ReadOnlyDir {
    fn new() -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        if unsafe { libc::geteuid() } == 0 {
            let ok = Command::new("mount")
                .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("skipping: cannot mount a read-only tmpfs");
                return None;
            }
            return Some(ReadOnlyDir { dir, mounted: true });
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
        Some(ReadOnlyDir {
            dir,
            mounted: false,
        })
    }
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(self.dir.path()).status();
        } else {
            use std::os::unix::fs::PermissionsExt;
            let _ =
                std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o755));
        }
    }
}

#[test]
fn read_only_dest_fails_clearly() {
    let Some(ro) = ReadOnlyDir::new() else {
        return;
    };
    let out = ventoy(ro.dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&ro.dir.path().display().to_string())
            && (err.contains("Read-only file system") || err.contains("Permission denied")),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(ro.dir.path()).unwrap().count(), 0);

    let file = tempfile::NamedTempFile::new().unwrap();
    let out = ventoy(file.path()).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a directory"));
}

/// A digest record that checks out but names other bytes (the cache and the image disagree): the
/// copy fails before it reaches the final name, and the record is dropped, so the next run
/// succeeds on the image's own hash.
#[test]
fn digest_record_for_other_bytes_never_reaches_the_stick() {
    use sha2::{Digest, Sha256};
    let cache = tempfile::tempdir().unwrap();
    let with_cache = |dest: &Path| {
        let mut c = isofs();
        let mut args = input_args(world());
        let at = args.iter().position(|a| a == "--cache").unwrap();
        args[at + 1] = cache.path().display().to_string();
        c.arg("ventoy")
            .arg(dest)
            .args(args)
            .args(["--hosts", "shinji"]);
        c
    };
    let first = tempfile::tempdir().unwrap();
    stdout(&mut with_cache(first.path()));
    let records = cache.path().join("digests");
    let mut names: Vec<_> = std::fs::read_dir(&records)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let name = names.pop().unwrap();
    let mut fp = [0u8; 32];
    hex::decode_to_slice(&name, &mut fp).unwrap();
    let wrong = [0x5au8; 32];
    let check = Sha256::new()
        .chain_update(fp)
        .chain_update(wrong)
        .finalize();
    std::fs::write(
        records.join(&name),
        format!("{} {}\n", hex::encode(wrong), hex::encode(&check[..16])),
    )
    .unwrap();

    let dest = tempfile::tempdir().unwrap();
    let out = with_cache(dest.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&hex::encode(wrong)), "{err}");
    let left: Vec<_> = std::fs::read_dir(dest.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!left.iter().any(|n| n.starts_with("nixos-")), "{left:?}");
    assert!(!records.join(&name).exists());

    let again = stdout(&mut with_cache(dest.path()));
    assert!(again.contains("copied"), "{again}");
    assert_eq!(
        std::fs::read(dest.path().join(ISO)).unwrap(),
        std::fs::read(first.path().join(ISO)).unwrap()
    );
}

/// Mistakes for the user to fix (a destination that is not there, a ventoy.json that is not JSON)
/// exit 2 like every bad input, with one message naming the file; the stick's file is kept.
#[test]
fn missing_dest_and_broken_ventoy_json_are_bad_input() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("not-mounted");
    let out = ventoy(&missing).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("not-mounted") && err.contains("No such file"),
        "{err}"
    );

    let json = d.path().join("ventoy/ventoy.json");
    std::fs::create_dir(d.path().join("ventoy")).unwrap();
    // Not JSON, and not UTF-8 (a Latin-1 editor): the user's file to mend, left as it is, and
    // said before any image is copied (a real one is gigabytes written for nothing).
    let broken: [&[u8]; 2] = [b"{ \"control\": [", b"{ \"menu_tip\": \"caf\xe9\" }"];
    for text in broken {
        std::fs::write(&json, text).unwrap();
        let out = ventoy(d.path()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("ventoy.json") && err.contains("left unchanged"),
            "{err}"
        );
        assert_eq!(std::fs::read(&json).unwrap(), text);
        let copied: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains(".iso"))
            .collect();
        assert!(copied.is_empty(), "{copied:?}");
    }
}

/// An exFAT stick, as Ventoy formats its data partition, mounted through exfat-fuse (this kernel
/// has no exfat driver) on a loop device; unmounted and detached on drop.
struct ExfatStick {
    dir: tempfile::TempDir,
    loop_dev: String,
}

impl ExfatStick {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("stick.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(128 << 20)
            .unwrap();
        run(Command::new("mkfs.exfat").args(["-L", "Ventoy"]).arg(&img));
        let out = stdout(Command::new("losetup").args(["-f", "--show"]).arg(&img));
        let stick = ExfatStick {
            loop_dev: out.trim().to_string(),
            dir,
        };
        std::fs::create_dir(stick.mnt()).unwrap();
        run(Command::new("mount.exfat-fuse")
            .arg(&stick.loop_dev)
            .arg(stick.mnt()));
        stick
    }

    fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
}

impl Drop for ExfatStick {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.mnt()).status();
        let _ = Command::new("losetup")
            .arg("-d")
            .arg(&self.loop_dev)
            .status();
    }
}

/// On the filesystem Ventoy really uses (exFAT: no modes, no links, its own rename rules) the
/// copy, sidecar and ventoy.json land complete, verify, and a rerun finds them current.
#[test]
fn copies_onto_an_exfat_stick() {
    let stick = ExfatStick::new();
    let d = stick.mnt();
    let first = stdout(&mut ventoy(&d));
    assert!(first.contains("copied"), "{first}");
    run(Command::new("sha256sum")
        .arg("-c")
        .arg(format!("{ISO}.sha256"))
        .current_dir(&d));
    let json = std::fs::read_to_string(d.join("ventoy/ventoy.json")).unwrap();
    assert!(json.contains(ISO), "{json}");
    let names: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!names.iter().any(|n| n.contains("part")), "{names:?}");
    let second = stdout(&mut ventoy(&d));
    assert!(second.contains("up to date"), "{second}");
}
