//! `read_at` over a planned host image agrees with the image materialised in one pass, for any
//! range — biased toward extent boundaries and the end of the image — and that image is the very
//! file `isofs build` writes.

mod common;
use common::*;
use isofs::image::{HostImage, Planner};
use isofs::inputs::settings::InputFlags;
use proptest::prelude::*;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

const HOST: &str = "shinji";

struct Planned {
    image: HostImage,
    whole: Vec<u8>,
}

fn planned() -> &'static Planned {
    static P: OnceLock<Planned> = OnceLock::new();
    P.get_or_init(|| {
        let w = world();
        let settings = InputFlags {
            flake: Some(w.join("flake")),
            manifests: Some(w.join("manifests")),
            store: Some(w.join("store")),
            cache: Some(repo().join("target/test-cache")),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let image = Planner::new(settings.clone())
            .unwrap()
            .plan(HOST, &|_, _| {})
            .unwrap();
        let whole = image.map.to_vec().unwrap();
        assert_eq!(whole.len() as u64, image.map.size());
        Planned { image, whole }
    })
}

/// (offset, length): anywhere, around an extent's start, just before the end, or past it.
fn ranges() -> impl Strategy<Value = (u64, usize)> {
    let p = planned();
    let size = p.whole.len() as u64;
    let starts: Vec<u64> = p.image.map.extents().iter().map(|e| e.start).collect();
    let offset = prop_oneof![
        0..size,
        (prop::sample::select(starts), -70i64..70).prop_map(|(s, d)| s.saturating_add_signed(d)),
        (0u64..300_000).prop_map(move |d| size.saturating_sub(d)),
        (0u64..5000).prop_map(move |d| size + d),
    ];
    let len = prop_oneof![0usize..80, 0usize..70_000, 0usize..(3 << 20)];
    (offset, len)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, rng_seed: proptest::test_runner::RngSeed::Fixed(0x150f5), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn read_at_equals_whole_image((offset, len) in ranges()) {
        let p = planned();
        let size = p.whole.len();
        let mut buf = vec![0xA5u8; len];
        let n = p.image.map.read_at(offset, &mut buf).unwrap();
        let from = (offset as usize).min(size);
        let to = from.saturating_add(len).min(size);
        prop_assert_eq!(n, to - from, "short count at {} + {}", offset, len);
        prop_assert!(buf[..n] == p.whole[from..to], "bytes differ at {} + {}", offset, len);
        prop_assert!(buf[n..].iter().all(|b| *b == 0xA5), "wrote past the count");
    }
}

/// Reading in fixed-size pieces, as FUSE does, rebuilds the image exactly.
#[test]
fn sequential_reads_of_every_size_rebuild_the_image() {
    let p = planned();
    for piece in [1usize << 12, 131_072, 1 << 20, 3_000_001] {
        let mut got = Vec::with_capacity(p.whole.len());
        let mut buf = vec![0u8; piece];
        loop {
            let n = p.image.map.read_at(got.len() as u64, &mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got == p.whole, "piece {piece}");
    }
}

#[test]
fn in_process_bytes_equal_isofs_build() {
    let p = planned();
    let d = tempfile::tempdir().unwrap();
    let iso = build(HOST, d.path(), &[]);
    assert_eq!(
        iso.file_name().unwrap().to_str(),
        Some(p.image.iso_name.as_str())
    );
    assert_eq!(
        sha256_file(&iso),
        hex::encode(Sha256::digest(&p.whole)),
        "isofs build wrote other bytes than read_at serves"
    );
}
