//! `squashfs::plan` of a small generated store with a warm block cache: what a replan (a second
//! mount, a second host) costs when no block needs compressing.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use isofs::cache::BlockCache;
use isofs::compression::Compression;
use isofs::squashfs::{input_bytes, plan, SquashOptions};
use isofs::tree::{walk, WalkOptions};
use std::fs;
use std::hint::black_box;
use std::path::Path;

/// Eight store paths of 100 small files (fragments) and a few multi-block files each.
fn make_store(root: &Path) {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    for p in 0..8 {
        let sp = root.join(format!("{p:032}-pkg-{p}"));
        fs::create_dir_all(sp.join("share/doc")).unwrap();
        fs::create_dir_all(sp.join("lib")).unwrap();
        for f in 0..100 {
            let text = format!("package {p} file {f}\n").repeat(1 + f * 3);
            fs::write(sp.join(format!("share/doc/file-{f:03}.txt")), text).unwrap();
        }
        for f in 0..3 {
            let mut data = noise(1 << 20);
            data.extend(b"library text ".repeat(60_000));
            fs::write(sp.join(format!("lib/lib{f}.so")), data).unwrap();
        }
    }
}

fn bench_plan(c: &mut Criterion) {
    let src = tempfile::tempdir().unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    make_store(src.path());
    let root = walk(
        src.path(),
        b"",
        &WalkOptions {
            mtime: 1,
            read_only: false,
            keep: None,
            skip_root_git: false,
        },
    )
    .unwrap();
    let opts = SquashOptions {
        compression: Compression::Zstd(19),
        block_log: 20,
        mtime: 1,
    };
    let cache = BlockCache::open(cache_dir.path());
    // Warm-up: every block compressed once and stored.
    plan(&root, &opts, &cache, &|_| {}).unwrap();

    let mut g = c.benchmark_group("plan");
    g.throughput(Throughput::Bytes(input_bytes(&root)));
    g.bench_function("warm_cache_zstd19", |b| {
        b.iter(|| {
            // A fresh handle per plan, as a new process would have: no payloads in memory.
            let cache = BlockCache::open(cache_dir.path());
            black_box(plan(&root, &opts, &cache, &|_| {}).unwrap().size())
        })
    });
    g.finish();
}

criterion_group!(benches, bench_plan);
criterion_main!(benches);
