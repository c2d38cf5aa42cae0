//! A bounded, deterministic fuzz harness for the input parsers, run by `cargo test` on stable.
//!
//! Mutations of the world's flake.nix and manifests (bit flips, truncations, splices, deletions,
//! duplications, random Unicode and raw bytes; for manifests also JSON-aware edits of fields and
//! store paths) go into `hosts_from_source` and `Manifest::load`. Each must return without panicking:
//! `Ok` with a result that honours the validation rules, or an error naming the file.
//!
//! `ISOFS_FUZZ_ITERS` (default 200) sets the executions per target, `ISOFS_FUZZ_SEED` the sequence.

mod common;
mod fuzz_rng;
use common::*;
use fuzz_rng::{env_or, seed, Rng};
use isofs::inputs::flake::{hosts_from_source, validate_host};
use isofs::inputs::manifest::{Manifest, StoreRoot};
use serde_json::{json, Value};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

const SNIPPETS: &[&str] = &[
    "isoHosts",
    " = [ ",
    " ]; ",
    "\"",
    "${",
    "}",
    "''",
    "let ",
    " in ",
    "#",
    "/*",
    "*/",
    "\\",
    "\n",
    "\"a/b\"",
    "\"..\"",
    "\u{0}",
    "\u{7f}",
    "é",
    "ファイル",
    "😀",
    "\u{200b}",
    "\u{feff}",
    "/nix/store/",
    "/../",
    "//",
    "null",
    "[]",
    "{}",
    ",",
    ":",
    "1e999",
    "-0",
    "\\u0000",
    "\\ud800",
];

fn random_unicode(rng: &mut Rng) -> String {
    (0..1 + rng.below(8))
        .map(|_| {
            if rng.chance(30) {
                rng.pick(SNIPPETS).to_string()
            } else {
                // Any scalar value: the surrogate gap falls back to U+FFFD.
                char::from_u32(rng.below(0x11_0000) as u32)
                    .unwrap_or('\u{fffd}')
                    .to_string()
            }
        })
        .collect()
}

/// One to four random edits of `input`, splicing from `corpus`.
fn mutate(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(8) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => v.truncate(at),
            2 => {
                let other = rng.pick(corpus);
                let from = rng.below(other.len() + 1);
                let to = from + rng.below(other.len() - from + 1);
                let end = (at + rng.below(64)).min(v.len());
                v.splice(at..end, other[from..to].iter().copied());
            }
            3 => {
                let s = random_unicode(rng);
                v.splice(at..at, s.into_bytes());
            }
            4 => {
                let end = (at + rng.below(200)).min(v.len());
                v.drain(at..end);
            }
            5 => {
                let end = (at + rng.below(200)).min(v.len());
                let dup = v[at..end].to_vec();
                v.splice(at..at, dup);
            }
            6 => {
                let n = 1 + rng.below(6);
                let b = rng.bytes(n);
                v.splice(at..at, b);
            }
            _ => {
                let s = rng.pick(SNIPPETS).as_bytes().to_vec();
                v.splice(at..at, s);
            }
        }
    }
    v
}

fn show(input: &[u8]) -> String {
    let s: String = String::from_utf8_lossy(input).chars().take(600).collect();
    format!("{s:?} ({} bytes)", input.len())
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn fuzz_flake_nix() {
    let iters = env_or("ISOFS_FUZZ_ITERS", 200);
    let seed = seed();
    let mut rng = Rng::new(seed);
    let file = Path::new("/fuzz/flake.nix");
    let corpus: Vec<Vec<u8>> = vec![
        std::fs::read(world().join("flake/flake.nix")).unwrap(),
        br#"{ isoHosts = [ "a" "b-c" "d_e" ]; }"#.to_vec(),
        br#"{ outputs = { self, ... }: let isoHosts = [ "x" ]; in { }; }"#.to_vec(),
        b"let isoHosts = [ ''shinji'' ]; in isoHosts".to_vec(),
    ];
    let (mut ok, mut rejected) = (0u64, 0u64);
    for i in 0..iters {
        let base = rng.pick(&corpus).clone();
        let input = mutate(&mut rng, &base, &corpus);
        let src = String::from_utf8_lossy(&input).into_owned();
        let res = catch_unwind(AssertUnwindSafe(|| hosts_from_source(file, &src)));
        let why = match res {
            Err(p) => Some(format!("panicked: {}", panic_text(p))),
            Ok(Ok(hosts)) => {
                ok += 1;
                let mut seen = std::collections::BTreeSet::new();
                if hosts.is_empty() {
                    Some("Ok with no hosts".into())
                } else {
                    hosts.iter().find_map(|h| {
                        validate_host(h)
                            .err()
                            .or_else(|| (!seen.insert(h)).then(|| format!("{h} twice")))
                    })
                }
            }
            Ok(Err(e)) => {
                rejected += 1;
                let text = e.to_string();
                (!text.starts_with("/fuzz/flake.nix"))
                    .then(|| format!("error without file: {text}"))
            }
        };
        if let Some(why) = why {
            panic!(
                "seed {seed:#x} iteration {i}: {why}\ninput: {}",
                show(&input)
            );
        }
    }
    println!("fuzz_parsers: flake.nix: {iters} executions ({ok} accepted, {rejected} rejected), seed {seed:#x}");
}

const FIELDS: &[&str] = &[
    "host",
    "release",
    "system",
    "toplevel",
    "kernel",
    "initrd",
    "init",
    "kernelParams",
    "storePaths",
    "syslinux",
    "grubEfi",
    "volumeID",
    "registration",
    "bogus",
];

/// A value that is plausible for some field: store paths bent in the ways validation must catch.
fn random_value(rng: &mut Rng, m: &Value) -> Value {
    let paths: Vec<&str> = m["storePaths"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let a_path = || -> String {
        paths
            .first()
            .map_or("/nix/store/x".to_string(), |p| p.to_string())
    };
    match rng.below(12) {
        0 => Value::Null,
        1 => json!(rng.next() as i64),
        2 => json!(random_unicode(rng)),
        3 => json!([random_unicode(rng), 1, null]),
        4 => json!({ "k": random_unicode(rng) }),
        5 => json!(format!("{}/../..{}", a_path(), random_unicode(rng))),
        6 => json!(format!("{}/./x", a_path())),
        7 => json!(format!("{}//y", a_path())),
        8 => json!(format!("/etc/{}", random_unicode(rng))),
        9 => json!(format!(
            "{}/",
            rng.pick(&["/nix/store", "/nix/store/a", "/nix"])
        )),
        10 => json!(paths
            .get(rng.below(paths.len().max(1)))
            .map_or("/nix/store/y", |p| p)),
        _ => json!(format!("/nix/store/{}", random_unicode(rng))),
    }
}

/// JSON-aware edits: fields replaced, removed, added; store paths duplicated, dropped, bent.
fn mutate_json(rng: &mut Rng, m: &mut Value) {
    for _ in 0..1 + rng.below(3) {
        let field = *rng.pick(FIELDS);
        match rng.below(5) {
            0 => {
                if let Some(o) = m.as_object_mut() {
                    o.remove(field);
                }
            }
            1 | 2 => {
                let v = random_value(rng, m);
                m[field] = v;
            }
            _ => {
                let v = random_value(rng, m);
                if let Some(a) = m["storePaths"].as_array_mut() {
                    let i = rng.below(a.len() + 1);
                    match rng.below(3) {
                        0 if i < a.len() => {
                            a.remove(i);
                        }
                        1 if i < a.len() => a[i] = v,
                        _ => a.insert(i, v),
                    }
                }
            }
        }
    }
}

/// What an accepted manifest promises: every path a logical, normalised `/nix/store` path.
fn check_accepted(m: &Manifest) -> Option<String> {
    let mut paths = vec![
        &m.toplevel,
        &m.kernel,
        &m.initrd,
        &m.init,
        &m.syslinux,
        &m.grub_efi,
    ];
    paths.extend(&m.store_paths);
    paths.extend(&m.registration);
    paths.into_iter().find_map(|p| {
        let bad = !p.starts_with("/nix/store/")
            || p.split('/')
                .skip(1)
                .any(|c| c.is_empty() || c == "." || c == "..");
        bad.then(|| format!("accepted path {p:?}"))
    })
}

#[test]
fn fuzz_manifests() {
    let iters = env_or("ISOFS_FUZZ_ITERS", 200);
    let seed = seed() ^ 0x4D41_4E49;
    let mut rng = Rng::new(seed);
    let store = StoreRoot(world().join("store"));
    let originals: Vec<(String, Vec<u8>)> = ["shinji", "kenpachi"]
        .iter()
        .map(|h| {
            let text = std::fs::read(world().join(format!("manifests/{h}.json"))).unwrap();
            (h.to_string(), text)
        })
        .collect();
    let corpus: Vec<Vec<u8>> = originals.iter().map(|(_, t)| t.clone()).collect();
    let d = tempfile::tempdir().unwrap();
    let (mut ok, mut rejected) = (0u64, 0u64);
    for i in 0..iters * 2 {
        let (host, text) = rng.pick(&originals).clone();
        // Half byte-level (mostly syntax), half JSON-aware (mostly semantics).
        let input = if i % 2 == 0 {
            mutate(&mut rng, &text, &corpus)
        } else {
            let mut v: Value = serde_json::from_slice(&text).unwrap();
            mutate_json(&mut rng, &mut v);
            serde_json::to_vec_pretty(&v).unwrap()
        };
        let file = d.path().join(format!("{host}.json"));
        std::fs::write(&file, &input).unwrap();
        let res = catch_unwind(AssertUnwindSafe(|| {
            Manifest::load(&file, &host, &store).and_then(|m| m.volume_id(&file).map(|_| m))
        }));
        let why = match res {
            Err(p) => Some(format!("panicked: {}", panic_text(p))),
            Ok(Ok(m)) => {
                ok += 1;
                check_accepted(&m)
            }
            Ok(Err(e)) => {
                rejected += 1;
                let text = e.to_string();
                (!text.starts_with(&file.display().to_string()))
                    .then(|| format!("error without file: {text}"))
            }
        };
        if let Some(why) = why {
            panic!(
                "seed {seed:#x} iteration {i} ({host}): {why}\ninput: {}",
                show(&input)
            );
        }
    }
    println!(
        "fuzz_parsers: manifests: {} executions ({ok} accepted, {rejected} rejected), seed {seed:#x}",
        iters * 2
    );
}
