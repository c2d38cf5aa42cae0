//! `isofs status`: cache size, entries and hit rate, and each host's last plan, per flake.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

const ISO: &str = "nixos-shinji-25.11-x86_64-linux.iso";

/// `isofs SUB` over the world's manifests and store, with `flake` and `cache`.
fn run_with(sub: &str, flake: &Path, cache: &Path, extra: &[&str]) -> String {
    stdout(
        isofs()
            .arg(sub)
            .args(extra)
            .args(inputs_for(world(), flake, cache)),
    )
}

fn build_shinji(flake: &Path, cache: &Path, out: &Path) {
    run_with(
        "build",
        flake,
        cache,
        &["shinji", "--out", out.to_str().unwrap()],
    );
}

fn host_line<'a>(report: &'a str, host: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.starts_with(&format!("host {host} ")))
        .unwrap_or_else(|| panic!("no line for {host} in\n{report}"))
}

#[test]
fn reports_plans_and_digests_per_flake() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let flake = world().join("flake");

    let before = run_with("status", &flake, &cache, &[]);
    assert!(
        host_line(&before, "shinji").contains("not planned yet"),
        "{before}"
    );
    assert!(before.contains("0 entries"), "{before}");

    let out = tmp.path().join("out");
    build_shinji(&flake, &cache, &out);
    let hex = sha256_file(&out.join("iso").join(ISO));
    let after = run_with("status", &flake, &cache, &[]);
    let line = host_line(&after, "shinji");
    assert!(
        line.contains(ISO) && line.contains(&format!("sha256 {hex}")),
        "{after}"
    );
    assert!(
        host_line(&after, "kenpachi").contains("not planned yet"),
        "{after}"
    );
    assert!(
        !after.contains(" 0 entries") && after.contains("hit rate"),
        "{after}"
    );

    // The same flake named with a trailing slash is the same flake; other settings are not.
    let slash = Path::new(&format!("{}/", flake.display())).to_path_buf();
    let again = run_with("status", &slash, &cache, &[]);
    assert!(host_line(&again, "shinji").contains("last plan"), "{again}");
    let none = run_with("status", &flake, &cache, &["--compression", "none"]);
    assert!(
        host_line(&none, "shinji").contains("not planned yet"),
        "{none}"
    );

    // Another flake sharing the cache has plans of its own.
    let other = tmp.path().join("other-flake");
    run(Command::new("cp").arg("-r").arg(&flake).arg(&other));
    let theirs = run_with("status", &other, &cache, &[]);
    assert!(
        host_line(&theirs, "shinji").contains("not planned yet"),
        "{theirs}"
    );

    // A damaged record is reported as it is, never a panic.
    let plans = cache.join("plans");
    for e in std::fs::read_dir(&plans).unwrap() {
        std::fs::write(
            e.unwrap().path(),
            r#"{"iso_name":"x.iso","size":1,"fingerprint":"ab"}"#,
        )
        .unwrap();
    }
    let damaged = run_with("status", &flake, &cache, &[]);
    assert!(
        host_line(&damaged, "shinji").contains("sha256 not computed yet"),
        "{damaged}"
    );
}

/// `(entries, MiB, blocks compressed)` from a status report.
fn cache_figures(report: &str) -> (u64, f64, u64) {
    let blocks = report
        .lines()
        .find(|l| l.starts_with("blocks "))
        .unwrap_or_else(|| panic!("{report}"));
    let mut words = blocks.split_whitespace().skip(1);
    let entries = words.next().unwrap().parse().unwrap();
    let mib = words.nth(1).unwrap().parse().unwrap();
    let rate = report.lines().find(|l| l.starts_with("hit rate")).unwrap();
    let compressed = rate
        .split(", ")
        .find(|p| p.ends_with("blocks compressed"))
        .and_then(|p| p.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    (entries, mib, compressed)
}

/// `isofs warm` plans every host into the cache, after which a build compresses nothing; with
/// `--cache-max` the cache stays within its cap (and warm says it evicted), `isofs status` only
/// shows the cap (10 GiB unless given, none for `unlimited`), and a cap of 0 is refused.
#[test]
fn warm_fills_the_cache_and_cache_max_caps_it() {
    let tmp = tempfile::tempdir().unwrap();
    let flake = world().join("flake");
    let cache = tmp.path().join("cache");
    run_with("warm", &flake, &cache, &[]);
    let warmed = run_with("status", &flake, &cache, &[]);
    for host in ["shinji", "kenpachi"] {
        assert!(host_line(&warmed, host).contains("last plan"), "{warmed}");
    }
    let (entries, _, compressed) = cache_figures(&warmed);
    assert!(entries > 0 && compressed > 0, "{warmed}");
    let out = tmp.path().join("out");
    build_shinji(&flake, &cache, &out);
    let built = run_with("status", &flake, &cache, &[]);
    assert_eq!(cache_figures(&built).2, compressed, "{built}");

    // A report shows a cap without enforcing it.
    let shown = run_with("status", &flake, &cache, &["--cache-max", "1M"]);
    assert!(shown.contains("(cap 1.0 MiB)"), "{shown}");
    assert!(built.contains("(cap 10.0 GiB)"), "default cap: {built}");
    let unlimited = run_with("status", &flake, &cache, &["--cache-max", "unlimited"]);
    assert!(!unlimited.contains("(cap"), "{unlimited}");
    let after = run_with("status", &flake, &cache, &[]);
    assert_eq!(cache_figures(&after).0, cache_figures(&built).0, "{after}");

    let capped = tmp.path().join("capped");
    let warm = isofs()
        .args(["warm", "--cache-max", "2M"])
        .args(inputs_for(world(), &flake, &capped))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&warm.stderr);
    assert!(warm.status.success(), "{err}");
    assert!(
        err.contains("evicting") && err.contains("--cache-max"),
        "{err}"
    );
    let (_, mib, _) = cache_figures(&run_with("status", &flake, &capped, &[]));
    assert!(mib <= 2.0, "{mib} MiB over a 2 MiB cap");

    let zero = isofs()
        .args(["status", "--cache-max", "0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&zero.stderr);
    assert_eq!(zero.status.code(), Some(2), "{err}");
    assert!(err.contains("keeps nothing"), "{err}");
}

/// Every file of a warm cache (block entries, counters, plan records, digest records) replaced by
/// a fifo: a fifo opened to be read waits for a writer, so each is taken as a missing entry
/// instead, and the build makes the same image (under `timeout`: a hang fails the test).
#[test]
fn fifos_in_the_cache_are_missing_entries_not_hangs() {
    let tmp = tempfile::tempdir().unwrap();
    let flake = world().join("flake");
    let cache = tmp.path().join("cache");
    let first = tmp.path().join("first");
    build_shinji(&flake, &cache, &first);
    let mut turned = 0;
    let mut dirs = vec![cache.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                std::fs::remove_file(&p).unwrap();
                run(Command::new("mkfifo").arg(&p));
                turned += 1;
            }
        }
    }
    assert!(turned > 10, "{turned} cache files");
    let again = tmp.path().join("again");
    let out = Command::new("timeout")
        .arg("300")
        .arg(env!("CARGO_BIN_EXE_isofs"))
        .args(["build", "shinji", "--out"])
        .arg(&again)
        .args(inputs_for(world(), &flake, &cache))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let iso = "iso/nixos-shinji-25.11-x86_64-linux.iso";
    assert_eq!(sha256_file(&again.join(iso)), sha256_file(&first.join(iso)));
}
