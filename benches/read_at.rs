//! `ExtentMap::read_at` over maps with many extents: the cost of a FUSE read before any source does
//! real work (binary search, per-extent dispatch, copies).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use isofs::extent::{Builder, ExtentMap, InputFile, Source};
use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;

const POOL: usize = 1 << 20;

/// `n` extents alternating 1..8 KiB slices of one buffer with zero padding to 2 KiB, as an ISO's
/// directory records, file data and sector padding alternate.
fn bytes_map(n: usize) -> ExtentMap {
    let pool: Arc<[u8]> = (0..POOL)
        .map(|i| (i * 31 % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    let mut b = Builder::new();
    for i in 0..n {
        let len = 1024 * (1 + (i * 7 % 8)) as u64;
        let off = (i * 4096 % (POOL - 8192)) as u64;
        b.push("data", len, Source::Bytes(pool.clone(), off));
        b.pad_to("pad", 2048);
    }
    b.finish()
}

/// `n` extents of 64 KiB slices of one real file, so each read also pays its identity check and
/// `pread`.
fn file_map(n: usize, dir: &std::path::Path) -> ExtentMap {
    let path = dir.join("input");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&vec![0x5a; 16 << 20]).unwrap();
    drop(f);
    let file = Arc::new(InputFile::open(&path).unwrap());
    let mut b = Builder::new();
    for i in 0..n {
        let off = (i as u64 * 65536) % (16 << 20);
        b.push("file", 65536, Source::File(file.clone(), off));
    }
    b.finish()
}

/// Deterministic offsets spread over the map.
fn offsets(size: u64, read: u64, count: usize) -> Vec<u64> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % (size - read)
        })
        .collect()
}

fn bench_map(c: &mut Criterion, group: &str, map: &ExtentMap) {
    let mut g = c.benchmark_group(group);
    for read in [4096usize, 1 << 20] {
        let offs = offsets(map.size(), read as u64, 1024);
        let mut buf = vec![0u8; read];
        let mut i = 0;
        g.throughput(Throughput::Bytes(read as u64));
        g.bench_with_input(BenchmarkId::new("random", read), &read, |b, _| {
            b.iter(|| {
                i = (i + 1) % offs.len();
                black_box(map.read_at(offs[i], &mut buf).unwrap())
            })
        });
        let mut pos = 0u64;
        g.bench_with_input(BenchmarkId::new("sequential", read), &read, |b, _| {
            b.iter(|| {
                if pos + read as u64 > map.size() {
                    pos = 0;
                }
                let n = map.read_at(pos, &mut buf).unwrap();
                pos += n as u64;
                black_box(n)
            })
        });
    }
    g.finish();
}

fn read_at(c: &mut Criterion) {
    let map = bytes_map(200_000);
    bench_map(c, &format!("bytes_{}_extents", map.extents().len()), &map);
    let dir = tempfile::tempdir().unwrap();
    let map = file_map(20_000, dir.path());
    bench_map(c, &format!("file_{}_extents", map.extents().len()), &map);
}

criterion_group!(benches, read_at);
criterion_main!(benches);
