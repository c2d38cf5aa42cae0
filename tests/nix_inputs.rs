//! Host manifests derived with `nix` (no `--manifests`), against `fixtures/nix-standin/nix`: a stand-in
//! that replays real Nix's outputs for the fixture world and logs every call. PATH is always set
//! explicitly, as CI machines may have Debian's nix-bin at /usr/bin/nix.

mod common;

use common::{add_iso_host, flake_copy, isofs, repo, world};
use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Output};

/// An isofs run with the stand-in first on PATH, logging to `log`.
fn with_standin(log: &Path) -> Command {
    let mut path = OsString::from(repo().join("fixtures/nix-standin"));
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    let mut c = isofs();
    c.env("PATH", path)
        .env("NIX_STANDIN_WORLD", world())
        .env("NIX_STANDIN_LOG", log);
    c
}

fn inputs(flake: &Path, cache: &Path) -> Vec<OsString> {
    vec![
        "--flake".into(),
        flake.into(),
        "--store".into(),
        world().join("store").into(),
        "--cache".into(),
        cache.into(),
    ]
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "isofs failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn calls(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn manifest(log: &Path, flake: &Path, cache: &Path, host: &str) -> serde_json::Value {
    let out = ok(with_standin(log)
        .arg("manifest")
        .arg(host)
        .args(inputs(flake, cache))
        .output()
        .unwrap());
    serde_json::from_slice(&out.stdout).expect("isofs manifest prints JSON")
}

fn recorded(host: &str) -> serde_json::Value {
    let text = std::fs::read(world().join(format!("manifests/{host}.json"))).unwrap();
    serde_json::from_slice(&text).unwrap()
}

fn iso_sum(out: &Path) -> String {
    std::fs::read_to_string(out.join("SHA256SUMS")).unwrap()
}

#[test]
fn derived_manifest_matches_the_recorded_one_and_builds_the_same_iso() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("nix.log");
    let cache = tmp.path().join("cache");
    let flake = world().join("flake");

    for host in ["shinji", "kenpachi"] {
        assert_eq!(
            manifest(&log, &flake, &cache, host),
            recorded(host),
            "{host}"
        );
    }
    let first = calls(&log);
    // Per host: the toplevel, the facts, closureInfo, the closure; each as real Nix needs it spelled.
    assert_eq!(first.len(), 8, "{first:#?}");
    let features = "--extra-experimental-features nix-command\\ flakes ";
    assert!(first.iter().all(|c| c.starts_with(features)), "{first:#?}");
    let attr = format!("{}#nixosConfigurations.iso-shinji", flake.display());
    assert_eq!(
        first[0],
        format!("{features}build --no-link --print-out-paths {attr}.config.system.build.toplevel ")
    );
    assert!(first[1].starts_with(&format!("{features}eval --json {attr} --apply ")));
    assert!(first[2].contains("build --no-link --print-out-paths /nix/store/"));
    assert!(first[2].ends_with(".drv\\^out "), "{}", first[2]);
    assert!(first[3].contains("path-info --recursive /nix/store/"));

    // Served from the cache: no new Nix call, byte-identical output.
    let again = ok(with_standin(&log)
        .args(["manifest", "shinji"])
        .args(inputs(&flake, &cache))
        .output()
        .unwrap());
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&again.stdout).unwrap(),
        recorded("shinji")
    );
    let derived_out = tmp.path().join("derived");
    ok(with_standin(&log)
        .args(["build", "shinji", "--out"])
        .arg(&derived_out)
        .args(inputs(&flake, &cache))
        .output()
        .unwrap());
    assert_eq!(calls(&log), first, "a cached manifest must not call nix");

    let given_out = tmp.path().join("given");
    ok(isofs()
        .args(["build", "shinji", "--out"])
        .arg(&given_out)
        .args(inputs(&flake, &cache))
        .arg("--manifests")
        .arg(world().join("manifests"))
        .output()
        .unwrap());
    assert_eq!(iso_sum(&derived_out), iso_sum(&given_out));
}

#[test]
fn without_nix_or_manifests_says_what_to_provide() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("bin");
    std::fs::create_dir(&empty).unwrap();
    for args in [
        &["manifest", "shinji"][..],
        &["build", "shinji"],
        &["hosts"],
    ] {
        let out = isofs()
            .env("PATH", &empty)
            .args(args)
            .args(inputs(&world().join("flake"), &tmp.path().join("cache")))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        for needle in [
            "--manifests DIR",
            "no `nix` on PATH",
            "nixosConfigurations.iso-<host>",
            "flake.nix: manifests:",
        ] {
            assert!(err.contains(needle), "{args:?}: {needle:?} not in {err}");
        }
        // The fixture flake has no isofs.toml: the message must not name one.
        assert!(!err.contains("isofs.toml:"), "{args:?}: {err}");
    }
}

#[test]
fn nix_failures_are_reported_and_not_cached() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("nix.log");
    let cache = tmp.path().join("cache");
    let flake = flake_copy(tmp.path());
    add_iso_host(&flake, "rei");

    let out = with_standin(&log)
        .args(["manifest", "rei"])
        .args(inputs(&flake, &cache))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("nixosConfigurations.iso-rei: nix build failed"),
        "{err}"
    );
    assert!(err.contains("does not provide attribute"), "{err}");

    // A Nix too old for the commands isofs issues (Debian 12's 2.8): told what to do, exit 2. No
    // Nix daemon (yet, at boot): not bad input, so exit 1, which a service retries.
    for (knob, code, needles) in [
        ("NIX_STANDIN_OLD", 2, ["too old", "--manifests"]),
        (
            "NIX_STANDIN_NO_DAEMON",
            1,
            ["nixosConfigurations.iso-shinji", "Connection refused"],
        ),
    ] {
        let out = with_standin(&log)
            .args(["manifest", "shinji"])
            .args(inputs(&flake, &cache))
            .env(knob, "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{knob}: {err}");
        assert!(needles.iter().all(|n| err.contains(n)), "{knob}: {err}");
    }
    let cached = std::fs::read_dir(cache.join("manifests"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(cached, 0, "a failed derivation left a cache entry");
}

#[test]
fn the_cache_key_follows_the_flake_lock_and_sources() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("nix.log");
    let cache = tmp.path().join("cache");
    let flake = flake_copy(tmp.path());
    let n = |expect: usize, why: &str| {
        assert_eq!(manifest(&log, &flake, &cache, "shinji"), recorded("shinji"));
        assert_eq!(calls(&log).len(), expect, "{why}");
    };

    // Outside git: the directory's contents.
    n(4, "first derivation");
    n(4, "unchanged directory");
    std::fs::write(flake.join("flake.lock"), "{\"version\": 7}\n").unwrap();
    n(8, "a new flake.lock");
    n(8, "unchanged again");
    std::fs::write(flake.join("README.md"), "edited\n").unwrap();
    n(12, "an edited file");

    // In git: the revision, and the diff when tracked files are dirty.
    let git = |args: &[&str]| {
        let st = Command::new("git")
            .arg("-C")
            .arg(&flake)
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "one"]);
    n(16, "a git revision");
    std::fs::write(flake.join("untracked.txt"), "nix does not see me\n").unwrap();
    n(16, "an untracked file");
    std::fs::write(flake.join("README.md"), "edited twice\n").unwrap();
    n(20, "a dirty tracked file");
    n(20, "the same dirty state");
    git(&["commit", "-qam", "two"]);
    n(24, "a new revision");
}
