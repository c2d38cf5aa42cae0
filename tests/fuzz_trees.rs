//! A bounded, deterministic fuzz harness for the two planners: random small trees (directories,
//! files of awkward sizes, symlinks with long or odd targets, names that are non-UTF-8, 255 bytes,
//! case twins, `;1`-suffixed, Unicode) are planned as ISO 9660 (no boot) and as squashfs, read
//! through `read_at` in random pieces, and extracted by osirrox and unsquashfs; the extraction must
//! equal the generated tree.
//!
//! `ISOFS_FUZZ_TREE_ITERS` (default 8) sets the trees per format, `ISOFS_FUZZ_SEED` the sequence.

mod common;
mod fuzz_rng;
use common::*;
use fuzz_rng::{env_or, seed, Rng};
use isofs::cache::BlockCache;
use isofs::compression::Compression;
use isofs::extent::ExtentMap;
use isofs::tree::{walk, Node, WalkOptions};
use isofs::{iso9660, squashfs};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// Directories below the root; ISO 9660 allows eight levels, the root being the first.
const MAX_DEPTH: usize = 6;

fn random_name(rng: &mut Rng, siblings: &BTreeSet<Vec<u8>>) -> Vec<u8> {
    const PIECES: &[&str] = &[
        "a",
        "B",
        "z",
        "0",
        "9",
        ".",
        "-",
        "_",
        " ",
        ";1",
        "~",
        "é",
        "ファイル",
        "😀",
        "readme",
        "README",
        ".hidden",
        "x.tar.gz",
        "a.b.c.d",
    ];
    // Case twins and shared long prefixes make the ISO and Joliet name mangling collide.
    if !siblings.is_empty() && rng.chance(15) {
        let mut n = rng.pick(&siblings.iter().collect::<Vec<_>>()).to_vec();
        if rng.chance(50) {
            n.iter_mut().for_each(|b| *b = b.to_ascii_uppercase());
        } else {
            n.truncate(254);
            n.push(b'0' + rng.below(10) as u8);
        }
        return n;
    }
    let mut n = Vec::new();
    let len = if rng.chance(10) {
        200 + rng.below(56)
    } else {
        1 + rng.below(12)
    };
    while n.len() < len {
        if rng.chance(8) {
            n.push(0x80 + rng.below(0x80) as u8);
        } else {
            n.extend_from_slice(rng.pick(PIECES).as_bytes());
        }
    }
    while n.len() > 255 {
        n.pop();
    }
    n
}

fn random_target(rng: &mut Rng, max: usize) -> Vec<u8> {
    match rng.below(5) {
        0 => b"/nix/store/abc-other/bin/x".to_vec(),
        1 => b"../".repeat(1 + rng.below(6)),
        2 => {
            // Long targets span several Rock Ridge SL records and continuation areas.
            let parts = 1 + rng.below(60);
            let mut t = (0..parts)
                .map(|i| format!("component-{i}-{}", "c".repeat(rng.below(40))))
                .collect::<Vec<_>>()
                .join("/")
                .into_bytes();
            t.truncate(max);
            t
        }
        3 => {
            let mut t = b"odd-\xff\xfe-".to_vec();
            t.extend(rng.bytes(3).iter().map(|b| b | 0x80));
            t
        }
        _ => b"./sibling".to_vec(),
    }
}

fn random_content(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(6) {
        0 => 0,
        1 => rng.below(100),
        2 => rng.below(5000),
        3 => 4096 * (1 + rng.below(4)),
        4 => 2048 * rng.below(3) + rng.below(2) * 2047,
        _ => rng.below(300_000),
    };
    match rng.below(3) {
        0 => rng.bytes(len),
        1 => vec![0; len],
        _ => b"compressible text line\n"
            .iter()
            .copied()
            .cycle()
            .take(len)
            .collect(),
    }
}

/// Fills `dir` with up to `budget` entries, link targets at most `max_target` bytes.
fn generate(rng: &mut Rng, dir: &Path, depth: usize, budget: &mut usize, max_target: usize) {
    let mut names = BTreeSet::new();
    for _ in 0..rng.below(if depth == 0 { 14 } else { 8 }) {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        let name = random_name(rng, &names);
        if name == b"." || name == b".." || !names.insert(name.clone()) {
            continue;
        }
        let p = dir.join(OsStr::from_bytes(&name));
        match rng.below(10) {
            0..=2 if depth < MAX_DEPTH => {
                std::fs::create_dir(&p).unwrap();
                generate(rng, &p, depth + 1, budget, max_target);
            }
            3 | 4 => {
                let t = random_target(rng, max_target);
                std::os::unix::fs::symlink(OsStr::from_bytes(&t), &p).unwrap();
            }
            _ => {
                std::fs::write(&p, random_content(rng)).unwrap();
                let mode = *rng.pick(&[0o644, 0o755, 0o444, 0o600, 0o555]);
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            }
        }
    }
}

/// The map, read through `read_at` in random pieces; checked against `to_vec`.
fn materialise(rng: &mut Rng, map: &ExtentMap) -> Vec<u8> {
    let mut out = Vec::with_capacity(map.size() as usize);
    loop {
        let most = if rng.chance(50) { 3000 } else { 200_000 };
        let mut buf = vec![0u8; 1 + rng.below(most)];
        let n = map.read_at(out.len() as u64, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(out.len() as u64, map.size());
    assert!(out == map.to_vec().unwrap(), "pieces differ from to_vec");
    out
}

fn tree_of(src: &Path) -> Node {
    walk(
        src,
        b"",
        &WalkOptions {
            mtime: 1,
            read_only: false,
            keep: None,
            skip_root_git: false,
        },
    )
    .unwrap()
}

/// One generated tree in `d/src` (mode 0755 root), and its entry count.
fn generated(rng: &mut Rng, d: &Path, max_target: usize) -> (std::path::PathBuf, usize) {
    let src = d.join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o755)).unwrap();
    let max = 1 + rng.below(150);
    let mut budget = max;
    generate(rng, &src, 0, &mut budget, max_target);
    (src, max - budget)
}

/// Every entry below `dir` by relative path (raw bytes): kind, permission bits, content or target.
fn listing(dir: &Path) -> BTreeMap<Vec<u8>, (char, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().as_os_str().as_bytes().to_vec();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let mode = m.permissions().mode() & 0o7777;
            let entry = if m.is_symlink() {
                (
                    'l',
                    0,
                    std::fs::read_link(&p)
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                )
            } else if m.is_dir() {
                stack.push(p);
                ('d', mode, Vec::new())
            } else {
                ('f', mode, std::fs::read(&p).unwrap())
            };
            out.insert(rel, entry);
        }
    }
    out
}

/// Rock Ridge cannot say "trailing slash" in a link target: xorriso writes `../` as `..` too.
fn rock_ridge_target(t: &[u8]) -> Vec<u8> {
    let end = t
        .iter()
        .rposition(|b| *b != b'/')
        .map_or(t.len().min(1), |i| i + 1);
    t[..end].to_vec()
}

fn diff(src: &Path, extracted: &Path, iso: bool) -> Vec<String> {
    let (mut a, b) = (listing(src), listing(extracted));
    if iso {
        for v in a.values_mut().filter(|v| v.0 == 'l') {
            v.2 = rock_ridge_target(&v.2);
        }
    }
    let mut problems = Vec::new();
    for (k, v) in &a {
        let name = String::from_utf8_lossy(k);
        match b.get(k) {
            None => problems.push(format!("missing {name:?}")),
            Some(w) if w.0 != v.0 || w.1 != v.1 => problems.push(format!(
                "{name:?}: {} {:o} became {} {:o}",
                v.0, v.1, w.0, w.1
            )),
            Some(w) if w.2 != v.2 && v.0 == 'l' => problems.push(format!(
                "{name:?}: link to {:?} became {:?}",
                String::from_utf8_lossy(&v.2),
                String::from_utf8_lossy(&w.2)
            )),
            Some(w) if w.2 != v.2 => problems.push(format!(
                "{name:?}: {} bytes became {} other bytes",
                v.2.len(),
                w.2.len()
            )),
            Some(_) => {}
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        problems.push(format!("extra {:?}", String::from_utf8_lossy(k)));
    }
    problems
}

fn check(what: &str, seed: u64, i: u64, src: &Path, extracted: &Path) {
    let problems = diff(src, extracted, what == "ISO 9660");
    assert!(
        problems.is_empty(),
        "{what}: seed {seed:#x} tree {i}: extraction differs:\n{}",
        problems.join("\n")
    );
}

#[test]
fn fuzz_iso9660_trees() {
    let iters = env_or("ISOFS_FUZZ_TREE_ITERS", 8);
    let seed = seed() ^ 0x0150_9660;
    let mut rng = Rng::new(seed);
    let mut entries = 0;
    for i in 0..iters {
        let d = tempfile::tempdir().unwrap();
        // libisofs (osirrox) refuses a whole image holding a link target of about 1 KiB or more.
        let (src, n) = generated(&mut rng, d.path(), 1000);
        entries += n;
        let layout = iso9660::plan(
            &tree_of(&src),
            &iso9660::IsoOptions {
                volume_id: "FUZZ".into(),
                application_id: String::new(),
                publisher: String::new(),
                timestamp: 0,
                boot: None,
                tail_bytes: 0,
            },
        )
        .unwrap_or_else(|e| panic!("seed {seed:#x} tree {i}: {e}"));
        let bytes = materialise(&mut rng, &layout.finish(&[], &[]));
        let iso = d.path().join("t.iso");
        std::fs::write(&iso, bytes).unwrap();
        let x = d.path().join("x");
        run(Command::new("osirrox")
            .arg("-indev")
            .arg(&iso)
            .args(["-extract", "/"])
            .arg(&x));
        check("ISO 9660", seed, i, &src, &x);
    }
    println!("fuzz_trees: ISO 9660: {iters} trees, {entries} entries, seed {seed:#x}");
}

#[test]
fn fuzz_squashfs_trees() {
    let iters = env_or("ISOFS_FUZZ_TREE_ITERS", 8);
    let seed = seed() ^ 0x0500_54F5;
    let mut rng = Rng::new(seed);
    let mut entries = 0;
    for i in 0..iters {
        let d = tempfile::tempdir().unwrap();
        let (src, n) = generated(&mut rng, d.path(), 4000);
        entries += n;
        let compression = *rng.pick(&[
            Compression::None,
            Compression::Zstd(1),
            Compression::Zstd(3),
        ]);
        let block_log = 12 + rng.below(9) as u32;
        let map = squashfs::plan(
            &tree_of(&src),
            &squashfs::SquashOptions {
                compression,
                block_log,
                mtime: 0,
            },
            &BlockCache::memory_only(),
            &|_| {},
        )
        .unwrap_or_else(|e| panic!("seed {seed:#x} tree {i}: {e}"));
        let bytes = materialise(&mut rng, &map);
        let img = d.path().join("t.squashfs");
        std::fs::write(&img, bytes).unwrap();
        let x = d.path().join("x");
        run(Command::new("unsquashfs")
            .args(["-no-xattrs", "-quiet", "-no-progress", "-d"])
            .arg(&x)
            .arg(&img));
        check(
            &format!("squashfs {compression} block_log {block_log}"),
            seed,
            i,
            &src,
            &x,
        );
    }
    println!("fuzz_trees: squashfs: {iters} trees, {entries} entries, seed {seed:#x}");
}
