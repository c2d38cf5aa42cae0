//! Property: squashfs directory listings survive any mix of entry counts and name lengths — headers
//! split at 256 entries and whenever the inode metadata block changes — as read by unsquashfs.

use isofs::cache::BlockCache;
use isofs::compression::Compression;
use isofs::extent::ExtentMap;
use isofs::squashfs::{plan, SquashOptions};
use isofs::tree::{Meta, Node};
use proptest::prelude::*;
use std::process::Command;

/// A store-path directory with `names` as files (each holding its own name) and `dirs` empty
/// subdirectories, so inode sizes vary and inodes spill over metadata blocks.
fn tree(names: &[String], dirs: usize) -> Node {
    let meta = Meta::root(0o555, 1);
    let mut children: Vec<Node> = names
        .iter()
        .map(|n| {
            Node::file(
                n,
                Meta::root(0o444, 1),
                ExtentMap::from_bytes(n, n.as_bytes().to_vec()),
            )
        })
        .collect();
    for i in 0..dirs {
        children.push(Node::dir(&format!("d{i:03}"), meta, Vec::new()));
    }
    let sp = Node::dir("0000000000000000000000000000000a-props", meta, children);
    Node::dir("", Meta::root(0o755, 1), vec![sp])
}

fn names() -> impl Strategy<Value = Vec<String>> {
    // Long names make directory entries (and so headers) large; the set makes them unique.
    proptest::collection::btree_set("[a-z][a-z0-9._-]{0,120}", 1..700)
        .prop_map(|s| s.into_iter().filter(|n| !n.starts_with('d')).collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, rng_seed: proptest::test_runner::RngSeed::Fixed(0x150f5), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_entry_is_listed_and_read_back((names, dirs) in (names(), 0usize..40)) {
        let root = tree(&names, dirs);
        let opts = SquashOptions { compression: Compression::None, block_log: 17, mtime: 1 };
        let map = plan(&root, &opts, &BlockCache::memory_only(), &|_| {}).unwrap();
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("img");
        std::fs::write(&img, map.to_vec().unwrap()).unwrap();
        let out = d.path().join("out");
        let st = Command::new("unsquashfs").arg("-no-xattrs").arg("-q").arg("-d").arg(&out).arg(&img)
            .output().unwrap();
        prop_assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
        let sp = out.join("0000000000000000000000000000000a-props");
        let mut got: Vec<String> = std::fs::read_dir(&sp).unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        got.sort();
        let mut want: Vec<String> = names.clone();
        want.extend((0..dirs).map(|i| format!("d{i:03}")));
        want.sort();
        prop_assert_eq!(&got, &want);
        for n in &names {
            prop_assert_eq!(std::fs::read(sp.join(n)).unwrap(), n.as_bytes());
        }
    }
}
