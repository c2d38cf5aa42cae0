//! The planned ISO read back by independent tools: xorriso/osirrox, isoinfo, bsdtar, 7-Zip.

use isofs::extent::{Builder, ExtentMap, Source};
use isofs::iso9660::{plan, BootOptions, IsoLayout, IsoOptions};
use isofs::tree::{walk, Meta, Node, Replace, WalkOptions};
use std::fs;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

const TS: i64 = 315_532_800;
const VOLID: &str = "nixos-test-25.11-x86_64";
const TAIL: u64 = 16 * 2048;

fn long(c: char, n: usize) -> String {
    std::iter::repeat_n(c, n).collect()
}

fn fixture(dir: &Path) {
    let p = |s: &str| dir.join(s);
    fs::create_dir_all(p("a/b/c/d")).unwrap();
    fs::write(p("a/b/c/d/deep.txt"), b"deep").unwrap();
    fs::write(p("empty"), b"").unwrap();
    fs::create_dir(p("emptydir")).unwrap();
    fs::write(p("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(p("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("../x", p("a/up")).unwrap();
    std::os::unix::fs::symlink("/nix/store/abc-foo/bin/sh", p("abs")).unwrap();
    std::os::unix::fs::symlink(
        format!("./{}/{}", long('q', 200), long('r', 180)),
        p("longlink"),
    )
    .unwrap();
    fs::write(p("héllo wörld.txt"), "unicode").unwrap();
    fs::write(p("日本語.txt"), "nihongo").unwrap();
    fs::create_dir(p("many")).unwrap();
    for i in 0..210 {
        fs::write(p(&format!("many/file-number-{i:04}.dat")), format!("{i}")).unwrap();
    }
    fs::write(p(&format!("{}.txt", long('L', 80))), b"long 1").unwrap();
    fs::write(p(&format!("{}x.txt", long('L', 79))), b"long 2").unwrap();
    let big: Vec<u8> = (0..2_621_447u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(p("nix-store.squashfs"), big).unwrap();
}

fn isolinux_bytes() -> Vec<u8> {
    (0..4000u32).map(|i| (i % 253) as u8).collect()
}

fn efi_bytes() -> Vec<u8> {
    (0..9000u32).map(|i| (i % 241) as u8 ^ 0x5a).collect()
}

fn options() -> IsoOptions {
    IsoOptions {
        volume_id: VOLID.into(),
        application_id: "nixos".into(),
        publisher: "nixos".into(),
        timestamp: TS,
        boot: Some(BootOptions {
            catalog_path: ".boot.cat".into(),
            bios_image: "isolinux/isolinux.bin".into(),
            efi_image: Some("boot/efi.img".into()),
        }),
        tail_bytes: TAIL,
    }
}

fn tree(dir: &Path) -> Node {
    let mut t = walk(
        dir,
        b"",
        &WalkOptions {
            mtime: TS,
            read_only: false,
            keep: None,
            skip_root_git: false,
        },
    )
    .unwrap();
    let meta = Meta {
        mode: 0o444,
        uid: 0,
        gid: 0,
        mtime: TS,
    };
    let dmeta = Meta {
        mode: 0o555,
        ..meta
    };
    t.insert(
        "isolinux",
        Node::file(
            "isolinux.bin",
            meta,
            ExtentMap::from_bytes("isolinux.bin", isolinux_bytes()),
        ),
        dmeta,
        Replace::Yes,
    )
    .unwrap();
    t.insert(
        "boot",
        Node::file(
            "efi.img",
            meta,
            ExtentMap::from_bytes("efi.img", efi_bytes()),
        ),
        dmeta,
        Replace::Yes,
    )
    .unwrap();
    t
}

/// Writes `map` to `path`, leaving zero extents as holes so huge images stay cheap.
fn write_sparse(map: &ExtentMap, path: &Path) {
    let f = fs::File::create(path).unwrap();
    f.set_len(map.size()).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    for e in map.extents() {
        if matches!(e.source, Source::Zero) {
            continue;
        }
        let mut off = e.start;
        while off < e.start + e.len {
            let n = (e.start + e.len - off).min(buf.len() as u64) as usize;
            assert_eq!(map.read_at(off, &mut buf[..n]).unwrap(), n);
            f.write_all_at(&buf[..n], off).unwrap();
            off += n as u64;
        }
    }
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Every entry under `src` exists under `out` with the same bytes (and link targets / modes).
fn compare(src: &Path, out: &Path, links_and_modes: bool) {
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let (s, o) = (e.path(), out.join(e.file_name()));
        let m = fs::symlink_metadata(&s).unwrap();
        if m.file_type().is_symlink() {
            if links_and_modes {
                assert_eq!(
                    fs::read_link(&s).unwrap(),
                    fs::read_link(&o).unwrap(),
                    "{o:?}"
                );
            }
            continue;
        }
        let om = fs::symlink_metadata(&o).unwrap_or_else(|_| panic!("missing {o:?}"));
        if links_and_modes {
            assert_eq!(
                m.permissions().mode() & 0o777,
                om.permissions().mode() & 0o777,
                "{o:?}"
            );
        }
        if m.is_dir() {
            compare(&s, &o, links_and_modes);
        } else {
            assert_eq!(fs::read(&s).unwrap(), fs::read(&o).unwrap(), "{o:?}");
        }
    }
}

fn check_boot_files(out: &Path) {
    let bios = fs::read(out.join("isolinux/isolinux.bin")).unwrap();
    let orig = isolinux_bytes();
    assert_eq!(bios.len(), orig.len());
    assert_eq!(bios[..8], orig[..8]);
    assert_eq!(bios[64..], orig[64..]);
    assert_eq!(u32::from_le_bytes(bios[8..12].try_into().unwrap()), 16);
    assert_eq!(fs::read(out.join("boot/efi.img")).unwrap(), efi_bytes());
    assert_eq!(fs::metadata(out.join(".boot.cat")).unwrap().len(), 2048);
}

fn build(src: &Path, img: &Path) -> (IsoLayout, ExtentMap) {
    let finished = || {
        plan(&tree(src), &options())
            .unwrap()
            .finish(&[0; 32768], &vec![0; TAIL as usize])
    };
    let map = finished();
    assert!(
        map.to_vec().unwrap() == finished().to_vec().unwrap(),
        "planning is deterministic"
    );
    write_sparse(&map, img);
    let layout = plan(&tree(src), &options()).unwrap();
    (layout, map)
}

#[test]
fn independent_readers_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fixture(&src);
    let img = tmp.path().join("test.iso");
    let (layout, map) = build(&src, &img);
    let img_s = img.to_str().unwrap();
    assert_eq!(map.size(), layout.total_size());
    assert_eq!(layout.total_size() % 2048, 0);
    assert_eq!(layout.tail_offset() + TAIL, layout.total_size());

    // The EFI image is last before the tail; the boot info table names the BIOS image's own LBA.
    let (efi_lba, efi_size) = layout.file_extent("/boot/efi.img").unwrap();
    assert_eq!(
        (efi_lba * 2048 + efi_size).next_multiple_of(2048),
        layout.tail_offset()
    );
    let (bios_lba, _) = layout.file_extent("isolinux/isolinux.bin").unwrap();
    let mut t = [0u8; 8];
    map.read_at(bios_lba * 2048 + 8, &mut t).unwrap();
    assert_eq!(
        t,
        [16, 0, 0, 0, bios_lba as u8, (bios_lba >> 8) as u8, 0, 0]
    );
    assert_eq!(layout.file_extent("empty"), Some((0, 0)));
    let label = |off: u64| map.locate(off).unwrap().0.label.to_string();
    assert_eq!(label(16 * 2048), "primary volume descriptor");
    assert!(label(efi_lba * 2048).starts_with("/boot/efi.img"));
    assert!(label(layout.tail_offset()).starts_with("tail (padding, backup GPT"));
    assert!(label(0).starts_with("system area (512-byte sector 0: MBR"));

    let d = run("isoinfo", &["-d", "-i", img_s]);
    assert!(d.contains(&format!("Volume id: {VOLID}")), "{d}");
    assert!(d.contains("Rock Ridge signatures version 1 found"), "{d}");
    assert!(d.contains("Joliet with UCS level 3 found"), "{d}");
    assert!(d.contains("El Torito VD version 1 found"), "{d}");

    let et = run("xorriso", &["-indev", img_s, "-report_el_torito", "plain"]);
    let boot_lines: Vec<&str> = et
        .lines()
        .filter(|l| l.starts_with("El Torito boot img :"))
        .collect();
    assert_eq!(boot_lines.len(), 2, "{et}");
    assert!(
        boot_lines[0].contains("BIOS") && boot_lines[0].contains(" y "),
        "{et}"
    );
    assert!(
        boot_lines[1].contains("UEFI") && boot_lines[1].contains(" y "),
        "{et}"
    );

    let rl = run("isoinfo", &["-R", "-l", "-i", img_s]);
    assert!(rl.contains("file-number-0209.dat"), "{rl}");
    assert!(rl.contains("nix-store.squashfs"));
    // isoinfo has no UTF-8 output charset: the ASCII names through it, the rest through xorriso.
    let jl = run("isoinfo", &["-J", "-l", "-i", img_s]);
    let xj = run(
        "xorriso",
        &[
            "-rockridge",
            "off",
            "-joliet",
            "on",
            "-indev",
            img_s,
            "-ls",
            "/",
        ],
    );
    assert!(
        xj.contains("日本語.txt") && xj.contains("héllo wörld.txt"),
        "{xj}"
    );
    assert!(jl.contains(&format!("{}.txt", long('L', 60))), "{jl}");
    assert!(!jl.contains(&long('L', 61)), "{jl}");

    let out = tmp.path().join("osirrox");
    run(
        "osirrox",
        &["-indev", img_s, "-extract", "/", out.to_str().unwrap()],
    );
    compare(&src, &out, true);
    check_boot_files(&out);

    let out = tmp.path().join("bsdtar");
    fs::create_dir(&out).unwrap();
    run("bsdtar", &["-xf", img_s, "-C", out.to_str().unwrap()]);
    compare(&src, &out, true);
    check_boot_files(&out);

    let out = tmp.path().join("7z");
    run("7zz", &["x", "-y", &format!("-o{}", out.display()), img_s]);
    compare(&src.join("many"), &out.join("many"), false);
    compare(&src.join("a"), &out.join("a"), false);
    assert_eq!(
        fs::read(out.join("nix-store.squashfs")).unwrap(),
        fs::read(src.join("nix-store.squashfs")).unwrap()
    );
    assert_eq!(fs::read(out.join("日本語.txt")).unwrap(), b"nihongo");
    check_boot_files(&out);
}

#[test]
fn file_over_4gib_uses_multiple_extents() {
    let size: u64 = 4_831_838_208 + 5; // 4.5 GiB and a few bytes
    let mut b = Builder::new();
    b.bytes("head", b"HEAD".to_vec());
    b.zeros("zeros", size - 8);
    b.bytes("tail", b"TAIL".to_vec());
    let meta = Meta {
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: TS,
    };
    let root = Node::dir(
        "",
        Meta {
            mode: 0o755,
            ..meta
        },
        vec![
            Node::file("big.squashfs", meta, b.finish()),
            Node::file("small", meta, ExtentMap::from_bytes("s", b"x".to_vec())),
        ],
    );
    let opts = IsoOptions {
        boot: None,
        tail_bytes: 0,
        ..options()
    };
    let layout = plan(&root, &opts).unwrap();
    assert_eq!(layout.file_extent("/big.squashfs").unwrap().1, size);
    let map = layout.finish(&[], &[]);
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("big.iso");
    write_sparse(&map, &img);
    let img_s = img.to_str().unwrap();
    let ls = run("xorriso", &["-indev", img_s, "-lsl", "/"]);
    let line = ls
        .lines()
        .find(|l| l.contains("big.squashfs"))
        .unwrap_or_else(|| panic!("{ls}"));
    assert!(line.contains(&size.to_string()), "{ls}");
    let il = run("isoinfo", &["-l", "-i", img_s]);
    assert_eq!(il.matches("BIG.SQUASHFS;1").count(), 2, "{il}");
}

#[test]
fn bad_inputs_are_errors() {
    let meta = Meta {
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: TS,
    };
    // Relocation needs a free name for its directory.
    let mut deep = Node::dir("", meta, vec![Node::dir("rr_moved", meta, vec![])]);
    deep.insert(
        "1/2/3/4/5/6/7/8",
        Node::dir("x", meta, vec![]),
        meta,
        Replace::Yes,
    )
    .unwrap();
    let err = plan(
        &deep,
        &IsoOptions {
            boot: None,
            ..options()
        },
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("relocate"), "{err}");
    let ok = Node::dir("", meta, vec![]);
    let bad_id = IsoOptions {
        volume_id: "has space".into(),
        boot: None,
        ..options()
    };
    assert!(plan(&ok, &bad_id).is_err());
    let long_id = IsoOptions {
        volume_id: long('a', 33),
        boot: None,
        ..options()
    };
    assert!(plan(&ok, &long_id).is_err());
    assert!(plan(&ok, &options()).is_err(), "boot images missing");
}

/// xorriso with the nixpkgs flags on the same inputs reports the same El Torito setup and volume.
#[test]
fn matches_xorriso_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("version.txt"), b"25.11").unwrap();
    fs::create_dir(src.join("many")).unwrap();
    for i in 0..30 {
        fs::write(src.join(format!("many/f{i}")), b"x").unwrap();
    }
    let img = tmp.path().join("ours.iso");
    build(&src, &img);

    let xsrc = tmp.path().join("xsrc");
    run("cp", &["-a", src.to_str().unwrap(), xsrc.to_str().unwrap()]);
    fs::create_dir(xsrc.join("isolinux")).unwrap();
    fs::create_dir(xsrc.join("boot")).unwrap();
    fs::write(xsrc.join("isolinux/isolinux.bin"), isolinux_bytes()).unwrap();
    fs::write(xsrc.join("boot/efi.img"), efi_bytes()).unwrap();
    let ximg = tmp.path().join("xorriso.iso");
    let out = Command::new("xorriso")
        .env("SOURCE_DATE_EPOCH", TS.to_string())
        .args([
            "-as",
            "mkisofs",
            "-iso-level",
            "3",
            "-volid",
            VOLID,
            "-appid",
            "nixos",
        ])
        .args([
            "-publisher",
            "nixos",
            "-full-iso9660-filenames",
            "-joliet",
            "-r",
        ])
        .args([
            "-eltorito-boot",
            "isolinux/isolinux.bin",
            "-eltorito-catalog",
            ".boot.cat",
        ])
        .args(["-no-emul-boot", "-boot-load-size", "4", "-boot-info-table"])
        .args([
            "-eltorito-alt-boot",
            "-e",
            "boot/efi.img",
            "-no-emul-boot",
            "-o",
        ])
        .args([ximg.as_os_str(), xsrc.as_os_str()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let et = |img: &Path| -> Vec<String> {
        run(
            "xorriso",
            &[
                "-indev",
                img.to_str().unwrap(),
                "-report_el_torito",
                "plain",
            ],
        )
        .lines()
        .filter(|l| l.starts_with("El Torito"))
        .map(|l| match l.strip_prefix("El Torito boot img :") {
            // The last column is the LBA, which depends on the layout.
            Some(cols) => cols.rsplit_once(' ').unwrap().0.to_string(),
            None if l.starts_with("El Torito catalog") => String::new(),
            None => l.to_string(),
        })
        .collect()
    };
    assert_eq!(et(&img), et(&ximg));
    let info = |img: &Path| -> Vec<String> {
        run("isoinfo", &["-d", "-i", img.to_str().unwrap()])
            .lines()
            .filter(|l| !l.starts_with("Volume size") && !l.starts_with("Data preparer"))
            // Sector numbers depend on the layout.
            .filter(|l| !l.contains("Bootoff") && !l.contains("in sector"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(info(&img), info(&ximg));
}
