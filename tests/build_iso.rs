//! `isofs build` end to end on the fixture world, checked only with independent readers:
//! xorriso/osirrox, isoinfo, 7z, bsdtar, sgdisk, mtools, unsquashfs and the kernel's squashfs.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const HOST: &str = "shinji";
const ISO: &str = "nixos-shinji-25.11-x86_64-linux.iso";

/// One build shared by the read-only checks below.
fn built() -> &'static Path {
    static OUT: OnceLock<tempfile::TempDir> = OnceLock::new();
    let out = OUT.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        build(HOST, d.path(), &[]);
        d
    });
    out.path()
}

fn iso() -> std::path::PathBuf {
    built().join("iso").join(ISO)
}

fn manifest() -> serde_json::Value {
    let text = std::fs::read_to_string(world().join(format!("manifests/{HOST}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn store_real(logical: &str) -> std::path::PathBuf {
    world()
        .join("store")
        .join(logical.trim_start_matches("/nix/store/"))
}

#[test]
fn writes_iso_sidecar_and_sums() {
    let out = built();
    let iso = iso();
    let size = std::fs::metadata(&iso).unwrap().len();
    assert_eq!(size % 2048, 0, "size must be a multiple of 2048 for Ventoy");
    let hex = sha256_file(&iso);
    let sidecar = std::fs::read_to_string(out.join(format!("iso/{ISO}.sha256"))).unwrap();
    assert_eq!(sidecar, format!("{hex}  {ISO}\n"));
    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    assert_eq!(sums, format!("{hex}  iso/{ISO}\n"));
    run(Command::new("sha256sum")
        .arg("-c")
        .arg("SHA256SUMS")
        .current_dir(out));
}

/// A second host built into the same OUT (as `result` is reused): SHA256SUMS covers both ISOs.
/// OUT left as a link into the store by `nix build` is replaced like nix replaces it, not
/// written through (the store is read-only).
#[test]
fn second_build_into_a_nix_result_link_keeps_sums_whole() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("result");
    std::os::unix::fs::symlink("/nix/store/00000000000000000000000000000000-iso", &out).unwrap();
    build("kenpachi", &out, &[]);
    build(HOST, &out, &[]);
    assert!(out.is_dir() && !out.is_symlink());
    let kenpachi = "nixos-kenpachi-25.11-x86_64-linux.iso";
    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    let want = format!(
        "{}  iso/{kenpachi}\n{}  iso/{ISO}\n",
        sha256_file(&out.join("iso").join(kenpachi)),
        sha256_file(&out.join("iso").join(ISO))
    );
    assert_eq!(sums, want);
    run(Command::new("sha256sum")
        .arg("-c")
        .arg("SHA256SUMS")
        .current_dir(&out));
}

#[test]
fn xorriso_sees_el_torito_and_partitions() {
    let report = stdout(Command::new("xorriso").args(["-indev"]).arg(iso()).args([
        "-report_el_torito",
        "plain",
        "-report_system_area",
        "plain",
    ]));
    assert!(
        report.contains("El Torito boot img :   1  BIOS  y   none"),
        "{report}"
    );
    assert!(
        report.contains("El Torito boot img :   2  UEFI  y   none"),
        "{report}"
    );
    assert!(report.contains("GPT partition name"), "{report}");
    assert!(report.contains("MBR partition table"), "{report}");
    assert!(report.contains("isohybrid"), "{report}");
}

#[test]
fn isoinfo_shows_volume_id_and_rock_ridge() {
    let d = stdout(Command::new("isoinfo").arg("-d").arg("-i").arg(iso()));
    assert!(d.contains("Volume id: nixos-shinji-25.11-x86_64"), "{d}");
    assert!(d.contains("Rock Ridge signatures version 1 found"), "{d}");
    assert!(d.contains("Joliet with UCS level 3 found"), "{d}");
}

#[test]
fn gpt_is_valid() {
    let d = tempfile::tempdir().unwrap();
    // sgdisk may want to write; give it a copy.
    let copy = d.path().join("disk.img");
    std::fs::copy(iso(), &copy).unwrap();
    let v = Command::new("sgdisk")
        .arg("-v")
        .arg(&copy)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(text.contains("No problems found"), "{text}");
}

/// Extracts the image with `tool` and checks the tree against the inputs.
fn check_extraction(tool: &str) {
    let d = tempfile::tempdir().unwrap();
    let x = d.path().join("x");
    std::fs::create_dir(&x).unwrap();
    let iso = iso();
    let mut c = match tool {
        "osirrox" => {
            let mut c = Command::new("osirrox");
            c.arg("-indev").arg(&iso).args(["-extract", "/"]).arg(&x);
            c
        }
        "bsdtar" => {
            let mut c = Command::new("bsdtar");
            c.arg("-xf").arg(&iso).arg("-C").arg(&x);
            c
        }
        "7z" => {
            let mut c = Command::new("7zz");
            c.arg("x")
                .arg("-y")
                .arg(format!("-o{}", x.display()))
                .arg(&iso);
            c
        }
        _ => unreachable!(),
    };
    run(&mut c);
    let m = manifest();
    let kernel = m["kernel"].as_str().unwrap();
    let on_iso = x
        .join("boot")
        .join(kernel.trim_start_matches("/nix/store/"));
    assert_eq!(
        std::fs::read(&on_iso).unwrap(),
        std::fs::read(store_real(kernel)).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(x.join("version.txt")).unwrap(),
        "25.11"
    );
    assert!(x.join("EFI/nixos-installer-image").exists());
    assert_eq!(
        std::fs::read(x.join("EFI/BOOT/BOOTX64.EFI")).unwrap(),
        std::fs::read(store_real(m["grubEfi"].as_str().unwrap())).unwrap()
    );
    assert!(std::fs::read_to_string(x.join("isolinux/isolinux.cfg"))
        .unwrap()
        .contains("isofs.host=shinji"));
    // 7z does not restore symlinks faithfully; compare contents only where links are kept.
    if tool != "7z" {
        let problems = diff_trees(&world().join("flake"), &x.join("nixos-flake"), false);
        assert!(problems.is_empty(), "{tool}: flake differs: {problems:#?}");
    }
    let squash = x.join("nix-store.squashfs");
    assert!(std::fs::metadata(&squash).unwrap().len() > 0);
}

#[test]
fn osirrox_extraction_equals_inputs() {
    check_extraction("osirrox");
}

#[test]
fn bsdtar_extraction_equals_inputs() {
    check_extraction("bsdtar");
}

#[test]
fn sevenzip_extraction_equals_inputs() {
    check_extraction("7z");
}

/// The squashfs, taken out of the ISO, read by unsquashfs and by the kernel, equals the closure.
#[test]
fn squashfs_equals_closure() {
    let d = tempfile::tempdir().unwrap();
    let sq = d.path().join("store.squashfs");
    run(Command::new("osirrox")
        .arg("-indev")
        .arg(iso())
        .args(["-extract", "/nix-store.squashfs"])
        .arg(&sq));
    let un = d.path().join("un");
    run(Command::new("unsquashfs")
        .arg("-no-xattrs")
        .arg("-d")
        .arg(&un)
        .arg(&sq));
    let mnt = d.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    run(Command::new("mount")
        .args(["-o", "loop,ro", "-t", "squashfs"])
        .arg(&sq)
        .arg(&mnt));
    struct Umount<'a>(&'a Path);
    impl Drop for Umount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Umount(&mnt);
    let m = manifest();
    for p in m["storePaths"].as_array().unwrap() {
        let name = p.as_str().unwrap().trim_start_matches("/nix/store/");
        for (reader, root) in [("unsquashfs", &un), ("kernel", &mnt)] {
            let problems = diff_trees(&store_real(p.as_str().unwrap()), &root.join(name), true);
            assert!(problems.is_empty(), "{reader}: {name}: {problems:#?}");
        }
    }
    let init = m["init"]
        .as_str()
        .unwrap()
        .trim_start_matches("/nix/store/");
    assert!(
        mnt.join(init).exists(),
        "init= path must exist in the squashfs"
    );
    let root_mode = stdout(Command::new("stat").args(["-c", "%a %u %g"]).arg(&mnt));
    assert_eq!(root_mode.trim(), "755 0 0");
}

#[test]
fn efi_image_holds_grub() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("efi.img");
    run(Command::new("osirrox")
        .arg("-indev")
        .arg(iso())
        .args(["-extract", "/boot/efi.img"])
        .arg(&img));
    run(Command::new("fsck.fat").arg("-n").arg(&img));
    let got = d.path().join("BOOTX64.EFI");
    run(Command::new("mcopy")
        .arg("-i")
        .arg(&img)
        .arg("::EFI/BOOT/BOOTX64.EFI")
        .arg(&got));
    let m = manifest();
    assert_eq!(
        std::fs::read(got).unwrap(),
        std::fs::read(store_real(m["grubEfi"].as_str().unwrap())).unwrap()
    );
}

/// Same inputs → same bytes: a second run, the inputs copied elsewhere, flake files touched.
#[test]
fn deterministic_across_runs_paths_and_touches() {
    let first = sha256_file(&iso());
    let d = tempfile::tempdir().unwrap();
    let again = build(HOST, &d.path().join("again"), &[]);
    assert_eq!(sha256_file(&again), first);

    let copy = d.path().join("world");
    run(Command::new("cp").arg("-a").arg(world()).arg(&copy));
    run(Command::new("bash").arg("-c").arg(format!(
        "find '{}' -type f -exec touch -d '2001-02-03 04:05:06' {{}} +",
        copy.join("flake").display()
    )));
    let out = d.path().join("moved");
    let cache = d.path().join("cache");
    let printed = stdout(
        isofs()
            .args(["build", HOST, "--out"])
            .arg(&out)
            .args(inputs_for(&copy, &copy.join("flake"), &cache)),
    );
    assert_eq!(sha256_file(Path::new(printed.trim())), first);

    // Built from inside a flake outside git with the default `--out result`, as README shows:
    // the next build leaves `result` (the last ISO) out of /nixos-flake, so the bytes stay put.
    let flake = copy.join("flake");
    let in_flake = || {
        stdout(
            isofs()
                .args(["build", HOST])
                .args(inputs_for(&copy, Path::new("."), &cache))
                .current_dir(&flake),
        )
    };
    let built = flake.join(in_flake().trim());
    assert_eq!(sha256_file(&built), first);
    in_flake();
    assert_eq!(
        sha256_file(&built),
        first,
        "the previous result was embedded"
    );
}

#[test]
fn hosts_lists_names_and_volume_ids() {
    let out = stdout(isofs().arg("hosts").args(input_args(world())));
    assert!(
        out.contains("shinji\tnixos-shinji-25.11-x86_64-linux.iso\tnixos-shinji-25.11-x86_64"),
        "{out}"
    );
    assert!(out.contains("kenpachi\t"), "{out}");
}

#[test]
fn explain_names_regions() {
    let out = stdout(
        isofs()
            .args(["explain", HOST, "32768"])
            .args(input_args(world())),
    );
    assert!(
        out.to_lowercase().contains("primary volume descriptor"),
        "{out}"
    );
    let explain = |offset: u64| {
        stdout(
            isofs()
                .args(["explain", HOST, &offset.to_string()])
                .args(input_args(world())),
        )
    };
    assert!(explain(600).contains("1: GPT header"));
    // A squashfs data block is named once, with how it is stored.
    let size = std::fs::metadata(iso()).unwrap().len();
    let block = (0..size)
        .step_by(1 << 20)
        .map(explain)
        .find(|out| out.contains("squashfs data block"))
        .expect("some MiB of the image is squashfs file data");
    assert_eq!(block.matches("squashfs data block").count(), 1, "{block}");
    assert!(
        block.contains(", compressed, byte ") || block.contains("stored uncompressed, byte "),
        "{block}"
    );
}

#[test]
fn unknown_host_is_exit_2() {
    let out = isofs()
        .args(["build", "nosuchhost"])
        .args(input_args(world()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown host 'nosuchhost'"), "{err}");
}

/// libisofs refuses a whole image holding a symlink target of 1024 bytes or more, so such a link in
/// the flake is left out with a warning naming it; a 1023-byte one is kept and reads back.
#[test]
fn flake_links_too_long_for_xorriso_are_left_out() {
    let d = tempfile::tempdir().unwrap();
    let flake = flake_copy(d.path());
    let kept = "k/".repeat(511) + "k";
    let dropped = "d/".repeat(512);
    std::os::unix::fs::symlink(&kept, flake.join("kept-link")).unwrap();
    std::os::unix::fs::symlink(&dropped, flake.join("long-link")).unwrap();
    let mut args = input_args(world());
    args[1] = flake.display().to_string();
    let out = run(isofs()
        .args(["build", HOST, "--out"])
        .arg(d.path().join("out"))
        .args(&args));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("long-link")),
        "{log}"
    );
    let iso = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let listing = stdout(
        Command::new("xorriso")
            .args(["-abort_on", "FAILURE", "-indev"])
            .arg(&iso)
            .args(["-find", "/nixos-flake", "-type", "l", "-exec", "lsdl", "--"]),
    );
    assert!(
        listing.contains(&format!("'/nixos-flake/kept-link' -> '{kept}'")),
        "{listing}"
    );
    assert!(!listing.contains("long-link"), "{listing}");
}

/// Ctrl-C while the ISO is being written: the run dies of SIGINT and leaves no partial file behind (before, a hidden `.part` of up to the image's size stayed until
/// the next build into the same place).
#[test]
fn ctrl_c_during_a_build_leaves_no_partial_files() {
    let d = tempfile::tempdir().unwrap();
    let flake = flake_copy(d.path());
    // A large (sparse) file in the flake makes the write phase last long enough to interrupt.
    std::fs::File::create(flake.join("big.bin"))
        .unwrap()
        .set_len(768 << 20)
        .unwrap();
    let out = d.path().join("out");
    let mut child = isofs()
        .args(["build", HOST, "--out"])
        .arg(&out)
        .args(inputs_for(
            world(),
            &flake,
            &repo().join("target/test-cache"),
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let partial = || {
        std::fs::read_dir(out.join("iso")).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".part"))
        })
    };
    let started = std::time::Instant::now();
    while !partial() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the build ended before its write phase was seen"
        );
        assert!(
            started.elapsed().as_secs() < 120,
            "no write phase in 2 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    // Dead *of* SIGINT (not exit 130), so that a shell loop around isofs stops too.
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}");
    let left: Vec<_> = std::fs::read_dir(out.join("iso"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
