//! Directories deeper than ISO 9660's eight levels: relocated into `rr_moved` with Rock Ridge
//! CL/PL/RE, and put back in place by independent readers (osirrox, bsdtar, xorriso); the Joliet tree
//! keeps the original nesting (7-Zip).

use isofs::iso9660::{plan, IsoOptions};
use isofs::tree::{walk, WalkOptions};
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const TS: i64 = 315_532_800;
const DEEP: &str = "a/b/c/d/e/f/g/h/i/j/k";

/// `rr_moved_file`: the tree takes the relocation directory's first choice of name.
fn fixture(dir: &Path, rr_moved_file: bool) {
    let p = |s: &str| dir.join(s);
    fs::create_dir_all(p(DEEP)).unwrap();
    fs::write(p(&format!("{DEEP}/file")), b"twelve levels down").unwrap();
    fs::write(p(&format!("{DEEP}/run.sh")), b"#!/bin/sh\necho deep\n").unwrap();
    fs::set_permissions(
        p(&format!("{DEEP}/run.sh")),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("k/file", p("a/b/c/d/e/f/g/h/i/j/link")).unwrap();
    std::os::unix::fs::symlink("../../../../../../../../..", p(&format!("{DEEP}/top"))).unwrap();
    // Another `h` at level 9: its name collides with the first one's in `rr_moved`.
    fs::create_dir_all(p("x/b/c/d/e/f/g/h/empty")).unwrap();
    fs::write(p("x/b/c/d/e/f/g/h/note"), b"second h").unwrap();
    // Deep enough to be relocated twice.
    let chain: Vec<String> = (1..=20).map(|i| format!("n{i}")).collect();
    let chain = chain.join("/");
    fs::create_dir_all(p(&chain)).unwrap();
    fs::write(p(&format!("{chain}/leaf.txt")), b"leaf").unwrap();
    if rr_moved_file {
        fs::write(p("rr_moved"), b"not the relocation directory").unwrap();
    }
}

fn options() -> IsoOptions {
    IsoOptions {
        volume_id: "DEEP".into(),
        application_id: "isofs".into(),
        publisher: "isofs".into(),
        timestamp: TS,
        boot: None,
        tail_bytes: 0,
    }
}

fn image(src: &Path) -> Vec<u8> {
    let opts = WalkOptions {
        mtime: TS,
        read_only: false,
        keep: None,
        skip_root_git: false,
    };
    let tree = walk(src, b"", &opts).unwrap();
    plan(&tree, &options())
        .unwrap()
        .finish(&[], &[])
        .to_vec()
        .unwrap()
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd} {args:?}: {text}");
    text
}

/// Every path under `dir`, relative, sorted.
fn paths(dir: &Path) -> BTreeSet<String> {
    fn rec(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.insert(p.strip_prefix(base).unwrap().display().to_string());
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                rec(base, &p, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    rec(dir, dir, &mut out);
    out
}

/// `out` holds exactly what `src` does: same paths, bytes, and (`exact`) modes and link targets.
fn same_tree(src: &Path, out: &Path, exact: bool) {
    let mut want = paths(src);
    if !exact {
        // Joliet has no symlinks.
        want.retain(|p| !fs::symlink_metadata(src.join(p)).unwrap().is_symlink());
    }
    assert_eq!(want, paths(out), "{out:?}");
    for p in &want {
        let (s, o) = (src.join(p), out.join(p));
        let (sm, om) = (
            fs::symlink_metadata(&s).unwrap(),
            fs::symlink_metadata(&o).unwrap(),
        );
        if sm.is_symlink() {
            assert_eq!(
                fs::read_link(&s).unwrap(),
                fs::read_link(&o).unwrap(),
                "{p}"
            );
            continue;
        }
        assert_eq!(sm.is_dir(), om.is_dir(), "{p}");
        if exact {
            assert_eq!(sm.mode() & 0o7777, om.mode() & 0o7777, "{p}");
        }
        if sm.is_file() {
            assert_eq!(fs::read(&s).unwrap(), fs::read(&o).unwrap(), "{p}");
        }
    }
}

use std::os::unix::fs::MetadataExt;

#[test]
fn deep_directories_are_relocated_and_restored() {
    check(false, "rr_moved", "RR_MOVED");
}

#[test]
fn relocation_directory_avoids_a_file_of_its_name() {
    check(true, ".rr_moved", "_RR_MOVED");
}

/// `rr` and `iso`: the relocation directory's Rock Ridge and ISO 9660 names.
fn check(rr_moved_file: bool, rr: &str, iso: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fixture(&src, rr_moved_file);
    let bytes = image(&src);
    assert!(bytes == image(&src), "planning is deterministic");
    let img = tmp.path().join("deep.iso");
    fs::write(&img, &bytes).unwrap();
    let img_s = img.to_str().unwrap();

    // Rock Ridge readers see the original tree, and no relocation directory.
    let out = tmp.path().join("osirrox");
    run(
        "osirrox",
        &["-indev", img_s, "-extract", "/", out.to_str().unwrap()],
    );
    same_tree(&src, &out, true);
    let out = tmp.path().join("bsdtar");
    fs::create_dir(&out).unwrap();
    run("bsdtar", &["-xf", img_s, "-C", out.to_str().unwrap()]);
    same_tree(&src, &out, true);
    let found: BTreeSet<String> = run("xorriso", &["-indev", img_s, "-find", "/"])
        .lines()
        .filter_map(|l| l.strip_prefix("'/")?.strip_suffix('\''))
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    assert_eq!(found, paths(&src));

    // Joliet keeps the nesting.
    let out = tmp.path().join("7z");
    run("7zz", &["x", "-y", &format!("-o{}", out.display()), img_s]);
    same_tree(&src, &out, false);

    // The plain ISO 9660 tree: nothing below level 8, the moved directories under `iso`,
    // where the second `h` got a new name.
    let plain = run("isoinfo", &["-l", "-i", img_s]);
    let dirs: Vec<&str> = plain
        .lines()
        .filter_map(|l| l.strip_prefix("Directory listing of "))
        .collect();
    assert!(
        dirs.contains(&format!("/{iso}/H/I/J/K/").as_str()),
        "{plain}"
    );
    assert!(
        dirs.contains(&format!("/{iso}/H1/EMPTY/").as_str()),
        "{plain}"
    );
    assert!(
        dirs.contains(&format!("/{iso}/N8/N9/N10/N11/N12/N13/").as_str()),
        "{plain}"
    );
    assert!(
        dirs.contains(&format!("/{iso}/N14/N15/N16/N17/N18/N19/").as_str()),
        "{plain}"
    );
    assert!(dirs.iter().all(|d| d.matches('/').count() <= 8), "{dirs:?}");
    // The path table agrees: every directory once, the relocated ones under `iso`.
    let pt = run("isoinfo", &["-p", "-i", img_s]);
    // "  number:  parent  lba  name"
    let rows: Vec<Vec<&str>> = pt
        .lines()
        .filter(|l| l.contains(':'))
        .map(|l| l.split([' ', ':']).filter(|w| !w.is_empty()).collect())
        .collect();
    assert_eq!(rows.len(), dirs.len(), "{pt}");
    let number = |name: &str| rows.iter().find(|r| r.get(3) == Some(&name)).unwrap()[0];
    let moved: Vec<&str> = rows
        .iter()
        .filter(|r| r[1] == number(iso))
        .map(|r| r[3])
        .collect();
    assert_eq!(moved, ["H", "H1", "N14", "N20", "N8"], "{pt}");

    // isoinfo reads the Rock Ridge tree (it does not follow CL, so the moved directories show
    // under `rr` and the placeholders as entries with link counts).
    let rl = run("isoinfo", &["-R", "-l", "-i", img_s]);
    assert!(
        rl.contains(&format!("Directory listing of /{rr}/h/i/j/k/")),
        "{rl}"
    );
    let placeholder = rl
        .lines()
        .skip_while(|l| *l != "Directory listing of /a/b/c/d/e/f/g/")
        .find(|l| l.ends_with(" h "))
        .unwrap_or_else(|| panic!("{rl}"));
    // `h` holds `i`: three links.
    assert!(placeholder.starts_with("drwxr-xr-x   3 "), "{placeholder}");
    assert!(!rl.to_lowercase().contains("error"), "{rl}");
}
