//! `--compress-image`: `<name>.iso.zst` from `isofs build` and in a live mount, checked with zstd.

mod common;
use common::*;
use isofs::inputs::settings::InputFlags;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

const ISO: &str = "nixos-shinji-25.11-x86_64-linux.iso";

fn unzstd(p: &Path) -> Vec<u8> {
    run(Command::new("zstd").args(["-d", "-q", "-c"]).arg(p)).stdout
}

#[test]
fn build_writes_a_zst_that_decompresses_to_the_iso() {
    let out = tempfile::tempdir().unwrap();
    // `build` prints the ISO's path, then the .zst's.
    build("shinji", out.path(), &["--compress-image"]);
    let iso = out.path().join("iso").join(ISO);
    let zst = out.path().join("iso").join(format!("{ISO}.zst"));
    assert!(
        unzstd(&zst) == std::fs::read(&iso).unwrap(),
        "zstd -d differs from the ISO"
    );
    // The frame records the image size and a content checksum, as `zstd -l` shows.
    let list = stdout(Command::new("zstd").args(["-l", "-v"]).arg(&zst));
    let size = std::fs::metadata(&iso).unwrap().len();
    assert!(list.contains(&format!("({size} B)")), "{list}");
    assert!(list.contains("Check: XXH64"), "{list}");

    // A later build without --compress-image removes the .zst, which would hold the old image.
    build("shinji", out.path(), &[]);
    assert!(!zst.exists());
}

struct Mounted {
    dir: tempfile::TempDir,
    session: Option<fuser::BackgroundSession>,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            if s.umount_and_join().is_err() {
                let c = std::ffi::CString::new(self.dir.path().to_str().unwrap()).unwrap();
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

fn mount(cache: PathBuf) -> Mounted {
    let w = world();
    let settings = InputFlags {
        flake: Some(w.join("flake")),
        hosts: Some(vec!["shinji".into()]),
        manifests: Some(w.join("manifests")),
        store: Some(w.join("store")),
        cache: Some(cache),
        ..Default::default()
    }
    .resolve()
    .unwrap();
    let planner = isofs::image::Planner::new(settings).unwrap();
    let served = isofs::mount::Served::check(&planner).unwrap();
    let vfs = isofs::mount::build_vfs(planner, &served, false, true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let session = isofs::fs::session(Arc::new(vfs), dir.path(), &Default::default())
        .unwrap()
        .spawn()
        .unwrap();
    Mounted {
        dir,
        session: Some(session),
    }
}

#[test]
fn mount_shows_the_zst_with_its_size() {
    let m = mount(repo().join("target/test-cache"));
    let names: Vec<_> = std::fs::read_dir(m.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.contains(&format!("{ISO}.zst")), "{names:?}");
    let zst = m.dir.path().join(format!("{ISO}.zst"));
    let size = std::fs::metadata(&zst).unwrap().len();
    let bytes = std::fs::read(&zst).unwrap();
    assert_eq!(bytes.len() as u64, size);
    let iso = std::fs::read(m.dir.path().join(ISO)).unwrap();
    assert!(
        unzstd(&zst) == iso,
        "zstd -d of the mounted .zst differs from the mounted ISO"
    );
}

/// A new plan of the same host and settings (here after a flake edit) retires the previous plan's
/// cached `.zst`: each is as large as the image, and would otherwise pile up until `--cache-max`.
#[test]
fn a_newer_plan_retires_the_old_zst() {
    let d = tempfile::tempdir().unwrap();
    let flake = flake_copy(d.path());
    let cache = d.path().join("cache");
    let build_here = || {
        run(isofs()
            .args(["build", "shinji", "--compress-image", "--out"])
            .arg(d.path().join("out"))
            .args(inputs_for(world(), &flake, &cache)));
    };
    let entries = || std::fs::read_dir(cache.join("zst")).unwrap().count();
    build_here();
    assert_eq!(entries(), 1);
    std::fs::write(flake.join("README.md"), "edited\n").unwrap();
    build_here();
    assert_eq!(entries(), 1, "the old plan's .zst should be gone");
    let zst = d.path().join("out/iso").join(format!("{ISO}.zst"));
    assert!(unzstd(&zst) == std::fs::read(d.path().join("out/iso").join(ISO)).unwrap());
}
