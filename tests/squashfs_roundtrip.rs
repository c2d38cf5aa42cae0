//! The planned squashfs, read back by independent readers: unsquashfs and the Linux kernel.

use isofs::cache::BlockCache;
use isofs::compression::Compression;
use isofs::extent::{ExtentMap, ReadError};
use isofs::squashfs::{input_bytes, plan, SquashOptions};
use isofs::tree::{walk, Node, WalkOptions};
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const STORE_PATH: &str = "0a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p-foo-1.0";
const MANY: &str = "zz9yy8xx7ww6vv5uu4tt3ss2rr1qq0pp-many";
const STORE_LIKE: &str = "yy9xx8ww7vv6uu5tt4ss3rr2qq1pp0oo-store-like";

/// Deterministic bytes that zstd cannot shrink.
fn noise(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

fn make_source(root: &Path) {
    fs::write(
        root.join("nix-path-registration"),
        b"/nix/store/x\nsha256:0\n",
    )
    .unwrap();
    let sp = root.join(STORE_PATH);
    fs::create_dir_all(sp.join("share/a/b/c")).unwrap();
    fs::create_dir_all(sp.join("share/empty-dir")).unwrap();
    fs::create_dir_all(sp.join("bin")).unwrap();
    fs::write(sp.join("share/a/b/c/deep.txt"), b"deep\n").unwrap();
    fs::write(sp.join("share/empty"), b"").unwrap();
    fs::write(sp.join("bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(sp.join("bin/tool"), fs::Permissions::from_mode(0o555)).unwrap();
    fs::write(sp.join("bin/ro"), b"read only").unwrap();
    fs::set_permissions(sp.join("bin/ro"), fs::Permissions::from_mode(0o444)).unwrap();
    symlink("tool", sp.join("bin/rel-link")).unwrap();
    symlink("/nix/store/abc-other/bin/x", sp.join("bin/abs-link")).unwrap();
    symlink("../nowhere/at/all", sp.join("bin/dangling")).unwrap();
    // 1 MiB of noise, 1 MiB of zeros (a sparse block), then text: a partial last block.
    let mut big = noise(1 << 20, 0x1234_5678);
    big.extend(std::iter::repeat_n(0u8, 1 << 20));
    big.extend(b"compressible line of text\n".repeat(20_000));
    fs::write(sp.join("share/big.bin"), &big).unwrap();
    fs::write(sp.join("ünïcödé-ファイル"), b"utf8 name").unwrap();
    fs::write(sp.join("café"), b"e").unwrap();
    // Store-path-like names, enough for a listing of ~20 metadata blocks: its directory inode
    // carries an index, which the kernel's lookups below go through.
    let store_like = root.join(STORE_LIKE);
    fs::create_dir_all(&store_like).unwrap();
    for i in 0..2500u32 {
        let hash: String = (0..32)
            .map(|k| (b'a' + ((i * 7 + k * 13) % 26) as u8) as char)
            .collect();
        fs::write(
            store_like.join(format!("{hash}-package-{i:05}")),
            format!("{i}\n"),
        )
        .unwrap();
    }
    let many = root.join(MANY);
    fs::create_dir_all(&many).unwrap();
    for i in 0..310 {
        fs::write(
            many.join(format!("entry-{i:04}")),
            format!("file {i}\n").repeat(i % 7),
        )
        .unwrap();
    }
}

/// A temporary directory holding `src/` made by [`make_source`].
fn source() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    make_source(&src);
    (tmp, src)
}

/// Extracts `img` to `out` with unsquashfs.
fn unsquash(img: &Path, out: &Path) {
    let st = Command::new("unsquashfs")
        .args(["-no-progress", "-d"])
        .arg(out)
        .arg(img)
        .status()
        .unwrap();
    assert!(st.success(), "unsquashfs failed");
}

fn tree_of(root: &Path) -> Node {
    walk(
        root,
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

fn opts(compression: Compression) -> SquashOptions {
    SquashOptions {
        compression,
        block_log: 20,
        mtime: 1,
    }
}

fn plan_with(tree: &Node, c: Compression, cache: &BlockCache) -> ExtentMap {
    plan(tree, &opts(c), cache, &|_| {}).unwrap()
}

/// Every entry of `src` exists in `out` with the same kind, permissions and bytes, and nothing else.
fn compare(src: &Path, out: &Path, check_mode: bool) {
    let sm = fs::symlink_metadata(src).unwrap();
    let om = fs::symlink_metadata(out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    assert_eq!(sm.file_type(), om.file_type(), "{}", out.display());
    if check_mode {
        assert_eq!(sm.mode() & 0o7777, om.mode() & 0o7777, "{}", out.display());
    }
    if sm.is_symlink() {
        assert_eq!(fs::read_link(src).unwrap(), fs::read_link(out).unwrap());
    } else if sm.is_file() {
        assert!(
            fs::read(src).unwrap() == fs::read(out).unwrap(),
            "{} differs",
            out.display()
        );
    } else {
        let names = |p: &Path| {
            let mut v: Vec<_> = fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            v.sort();
            v
        };
        let (sn, on) = (names(src), names(out));
        assert_eq!(sn, on, "{}", out.display());
        for n in sn {
            compare(&src.join(&n), &out.join(&n), true);
        }
    }
}

fn write_image(map: &ExtentMap, path: &Path) {
    // Stream in odd-sized pieces so that reads straddle blocks.
    let mut out = Vec::with_capacity(map.size() as usize);
    let mut buf = vec![0u8; 300_001];
    let mut off = 0;
    while off < map.size() {
        let n = map.read_at(off, &mut buf).unwrap();
        out.extend_from_slice(&buf[..n]);
        off += n as u64;
    }
    assert_eq!(out.len() % 4096, 0);
    fs::write(path, out).unwrap();
}

struct Mounted<'a>(&'a Path);

impl<'a> Mounted<'a> {
    /// `img` mounted by the kernel's squashfs driver on `mnt` (created).
    fn kernel(img: &Path, mnt: &'a Path) -> Self {
        fs::create_dir(mnt).unwrap();
        let st = Command::new("mount")
            .args(["-o", "loop,ro", "-t", "squashfs"])
            .arg(img)
            .arg(mnt)
            .status()
            .unwrap();
        assert!(st.success(), "kernel mount failed");
        Mounted(mnt)
    }
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

fn roundtrip(c: Compression) {
    let (tmp, src) = source();
    let tree = tree_of(&src);
    let cache = BlockCache::open(&tmp.path().join("cache"));
    let map = plan_with(&tree, c, &cache);
    assert_eq!(&map.to_vec().unwrap()[..4], b"hsqs");
    let img = tmp.path().join("img.squashfs");
    write_image(&map, &img);

    let out = tmp.path().join("out");
    unsquash(&img, &out);
    compare(&src, &out, false);
    let fsck = Command::new("unsquashfs")
        .arg("-s")
        .arg(&img)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&fsck.stdout);
    assert!(text.contains("zstd"), "{text}");
    assert!(text.contains("Block size 1048576"), "{text}");

    let mnt = tmp.path().join("mnt");
    let guard = Mounted::kernel(&img, &mnt);
    compare(&src, &mnt, false);
    assert_eq!(fs::metadata(&mnt).unwrap().mode() & 0o7777, 0o755);
    assert_eq!(fs::metadata(mnt.join(MANY)).unwrap().uid(), 0);
    drop(guard);
}

#[test]
fn zstd_image_reads_back_in_unsquashfs_and_kernel() {
    roundtrip(Compression::Zstd(19));
}

#[test]
fn uncompressed_image_reads_back_in_unsquashfs_and_kernel() {
    roundtrip(Compression::None);
}

#[test]
fn deterministic_and_cached() {
    let (tmp, src) = source();
    let tree = tree_of(&src);
    let c = Compression::Zstd(3);
    let first = plan_with(&tree, c, &BlockCache::memory_only())
        .to_vec()
        .unwrap();
    let again = plan_with(&tree, c, &BlockCache::memory_only())
        .to_vec()
        .unwrap();
    assert!(first == again, "two plans differ");

    let dir = tmp.path().join("cache");
    let cold = BlockCache::open(&dir);
    let seen = std::sync::atomic::AtomicU64::new(0);
    let map = plan(&tree, &opts(c), &cold, &|n| {
        // Increments: they add up to the input, once each.
        seen.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    })
    .unwrap();
    assert_eq!(seen.into_inner(), input_bytes(&tree));
    assert!(cold.stats().compressed > 0);
    assert!(map.to_vec().unwrap() == first);

    let warm = BlockCache::open(&dir);
    let map = plan_with(&tree, c, &warm);
    let s = warm.stats();
    assert_eq!((s.compressed, s.misses), (0, 0), "{s:?}");
    assert!(map.to_vec().unwrap() == first);
    assert_eq!(warm.stats().compressed, 0);

    // Flip one payload byte in the largest entry: detected on read, recomputed, same image.
    let mut biggest = None;
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else if biggest.as_ref().is_none_or(|(s, _)| m.len() > *s) {
                biggest = Some((m.len(), e.path()));
            }
        }
    }
    let victim = biggest.unwrap().1;
    let mut raw = fs::read(&victim).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 0x40;
    fs::write(&victim, raw).unwrap();
    let fresh = BlockCache::open(&dir);
    let map = plan_with(&tree, c, &fresh);
    assert!(map.to_vec().unwrap() == first);
    let s = fresh.stats();
    assert_eq!((s.corrupt, s.compressed), (1, 1), "{s:?}");
}

/// A file shipped by two store paths is compressed once: the copy's blocks take the stored bytes
/// of the first, and the image is byte for byte what compressing them again would give.
#[test]
fn identical_blocks_are_compressed_once() {
    let (tmp, src) = source();
    let c = Compression::Zstd(3);
    // One planning thread: two threads may each compress one of a pair of twins at the same
    // moment (harmless, and not what is counted here).
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let alone = plan_with(&tree_of(&src), c, &BlockCache::memory_only());
    let single = BlockCache::open(&tmp.path().join("single"));
    one.install(|| plan_with(&tree_of(&src), c, &single));

    let twin = src.join("1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6q-twin-1.0");
    fs::create_dir(&twin).unwrap();
    fs::copy(
        src.join(STORE_PATH).join("share/big.bin"),
        twin.join("big.bin"),
    )
    .unwrap();
    let tree = tree_of(&src);
    let cache = BlockCache::open(&tmp.path().join("cache"));
    let map = one.install(|| plan_with(&tree, c, &cache));
    // The copy's three data blocks (noise, zeros, partial text) are the original's bytes.
    let (s, s1) = (cache.stats(), single.stats());
    assert_eq!(
        (s.compressed, s.loads),
        (s1.compressed, 3),
        "{s:?} vs {s1:?}"
    );
    assert_ne!(map.to_vec().unwrap(), alone.to_vec().unwrap());
    let again = plan_with(&tree, c, &BlockCache::memory_only());
    assert!(map.to_vec().unwrap() == again.to_vec().unwrap());
    let img = tmp.path().join("img.squashfs");
    write_image(&map, &img);
    let out = tmp.path().join("out");
    unsquash(&img, &out);
    compare(&src, &out, false);
}

#[test]
fn changed_input_fails_the_read() {
    let (tmp, src) = source();
    let tree = tree_of(&src);
    let dir = tmp.path().join("cache");
    let map = plan_with(&tree, Compression::Zstd(3), &BlockCache::open(&dir));
    fs::write(src.join(STORE_PATH).join("share/big.bin"), b"replaced").unwrap();
    assert!(matches!(map.to_vec(), Err(ReadError::Changed { .. })));
    // Also from a cold cache instance (blocks loaded from disk, inputs checked).
    let map = plan_with(&tree, Compression::Zstd(3), &BlockCache::open(&dir));
    assert!(matches!(map.to_vec(), Err(ReadError::Changed { .. })));
}

/// The same metadata as mksquashfs with the flags nixpkgs uses (directory sizes aside: they count
/// listing headers, which depend on where each tool's inodes fall into metadata blocks).
#[test]
fn listing_matches_mksquashfs() {
    let (tmp, src) = source();
    let tree = tree_of(&src);
    let ours = tmp.path().join("ours.img");
    write_image(
        &plan_with(&tree, Compression::Zstd(3), &BlockCache::memory_only()),
        &ours,
    );
    let reference = tmp.path().join("ref.img");
    let mut sources: Vec<_> = fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    sources.sort();
    let st = Command::new("mksquashfs")
        .args(&sources)
        .arg(&reference)
        .args([
            "-no-hardlinks",
            "-keep-as-directory",
            "-all-root",
            "-b",
            "1048576",
        ])
        .args([
            "-comp",
            "zstd",
            "-Xcompression-level",
            "3",
            "-root-mode",
            "0755",
        ])
        .args([
            "-all-time",
            "1",
            "-mkfs-time",
            "1",
            "-no-progress",
            "-quiet",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let listing = |img: &Path| {
        let out = Command::new("unsquashfs")
            .arg("-lln")
            .arg(img)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let size = if f[0].starts_with('d') { "-" } else { f[2] };
                format!("{} {} {size} {}", f[0], f[1], f[5..].join(" "))
            })
            .collect::<Vec<_>>()
    };
    let (a, b) = (listing(&ours), listing(&reference));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y);
    }
}

/// A file past 4 GiB (extended inode, 64-bit size and start) with data on both sides of the 4 GiB
/// mark and in its last partial block, mostly sparse so the image stays small: listed by unsquashfs
/// and read back byte for byte through the kernel at those offsets.
#[test]
fn file_past_4_gib_reads_back_in_unsquashfs_and_kernel() {
    use std::os::unix::fs::FileExt;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let sp = src.join(STORE_PATH);
    fs::create_dir_all(&sp).unwrap();
    let size: u64 = (4 << 30) + 12 * 1024 + 5;
    let marks: [(u64, &[u8]); 4] = [
        (0, b"start"),
        ((4 << 30) - 3, b"across 4 GiB"),
        ((4 << 30) + 4096, b"past 4 GiB"),
        (size - 4, b"end!"),
    ];
    let f = fs::File::create(sp.join("huge.img")).unwrap();
    f.set_len(size).unwrap();
    for (at, bytes) in marks {
        f.write_all_at(bytes, at).unwrap();
    }
    drop(f);
    fs::write(sp.join("small"), b"small").unwrap();

    let tree = tree_of(&src);
    let map = plan_with(&tree, Compression::Zstd(1), &BlockCache::memory_only());
    assert!(
        map.size() < 64 << 20,
        "sparse blocks take no room: {}",
        map.size()
    );
    let img = tmp.path().join("img.squashfs");
    write_image(&map, &img);

    let list = Command::new("unsquashfs")
        .args(["-lls", "-no-progress"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(list.status.success());
    let text = String::from_utf8_lossy(&list.stdout);
    let line = text
        .lines()
        .find(|l| l.ends_with("/huge.img"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains(&format!(" {size} ")), "{line}");

    let mnt = tmp.path().join("mnt");
    let _guard = Mounted::kernel(&img, &mnt);
    let huge = fs::File::open(mnt.join(STORE_PATH).join("huge.img")).unwrap();
    assert_eq!(huge.metadata().unwrap().len(), size);
    for (at, bytes) in marks {
        // The mark and 4 KiB on each side of it: zeros, or a neighbouring mark.
        let from = at.saturating_sub(4096);
        let mut got = vec![0xaau8; (at - from) as usize + bytes.len() + 4096];
        let n = huge.read_at(&mut got, from).unwrap();
        assert_eq!(n as u64, (from + got.len() as u64).min(size) - from);
        let mut want = vec![0u8; n];
        for (m, b) in marks {
            for (i, &c) in b.iter().enumerate() {
                if let Some(w) = (m + i as u64)
                    .checked_sub(from)
                    .and_then(|o| want.get_mut(o as usize))
                {
                    *w = c;
                }
            }
        }
        assert!(got[..n] == want[..], "at {at}");
    }
    assert_eq!(
        fs::read(mnt.join(STORE_PATH).join("small")).unwrap(),
        b"small"
    );
}
