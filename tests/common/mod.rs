//! Shared by the integration tests: the fixture world, the isofs binary, independent tools.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Adds `host` to the isoHosts of a flake made by `fixtures/make-flake.sh` for shinji and kenpachi.
pub fn add_iso_host(flake: &Path, host: &str) {
    let nix = flake.join("flake.nix");
    let text = std::fs::read_to_string(&nix).unwrap();
    let added = text.replace(
        r#"isoHosts = [ "shinji" "kenpachi" ];"#,
        &format!(r#"isoHosts = [ "shinji" "kenpachi" "{host}" ];"#),
    );
    assert_ne!(text, added, "the fixture flake's isoHosts changed shape");
    std::fs::write(&nix, added).unwrap();
}

/// The fixture world (flake, store, manifests), made once by `fixtures/make-world.sh`.
pub fn world() -> &'static Path {
    static WORLD: OnceLock<PathBuf> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = std::env::var_os("ISOFS_WORLD")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join("fixtures/world"));
        // flock: several test binaries may ask at once.
        let st = Command::new("flock")
            .arg(repo().join("fixtures/.world.lock"))
            .arg("bash")
            .arg(repo().join("fixtures/make-world.sh"))
            .arg(&dir)
            .status()
            .expect("run make-world.sh");
        assert!(st.success(), "fixtures/make-world.sh failed");
        dir
    })
}

pub fn isofs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_isofs"))
}

/// The standard input flags for the world, with a cache shared by the tests.
pub fn input_args(world: &Path) -> Vec<String> {
    inputs_for(
        world,
        &world.join("flake"),
        &repo().join("target/test-cache"),
    )
}

/// The input flags for `world`'s manifests and store, with `flake` and `cache` of one's own.
pub fn inputs_for(world: &Path, flake: &Path, cache: &Path) -> Vec<String> {
    vec![
        "--flake".into(),
        flake.display().to_string(),
        "--manifests".into(),
        world.join("manifests").display().to_string(),
        "--store".into(),
        world.join("store").display().to_string(),
        "--cache".into(),
        cache.display().to_string(),
    ]
}

/// A scratch copy of the world's flake in `dir` (outside any git checkout).
pub fn flake_copy(dir: &Path) -> PathBuf {
    let flake = dir.join("flake");
    run(Command::new("cp")
        .arg("-a")
        .arg(world().join("flake"))
        .arg(&flake));
    flake
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    if !out.status.success() {
        panic!(
            "{:?} failed ({}):\n{}\n{}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

pub fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).expect("utf-8")
}

/// `isofs build HOST --out OUT` over the world; returns the ISO path.
pub fn build(host: &str, out: &Path, extra: &[&str]) -> PathBuf {
    let w = world();
    let mut c = isofs();
    c.arg("build")
        .arg(host)
        .arg("--out")
        .arg(out)
        .args(input_args(w))
        .args(extra);
    let printed = stdout(&mut c);
    PathBuf::from(printed.trim())
}

pub fn sha256_file(p: &Path) -> String {
    let out = stdout(Command::new("sha256sum").arg(p));
    out.split_whitespace().next().unwrap().to_string()
}

/// Recursively compares two directory trees: names, kinds, contents, symlink targets, and (when
/// `modes`) permission bits.
pub fn diff_trees(a: &Path, b: &Path, modes: bool) -> Vec<String> {
    let out = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(a)
        .arg(b)
        .output()
        .expect("diff");
    let mut problems: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    if modes {
        let list = |d: &Path| {
            stdout(Command::new("bash").arg("-c").arg(format!(
                "cd '{}' && find . -printf '%p %y %m\\n' | LC_ALL=C sort",
                d.display()
            )))
        };
        let (la, lb) = (list(a), list(b));
        if la != lb {
            for (x, y) in la.lines().zip(lb.lines()) {
                if x != y {
                    problems.push(format!("mode/kind: {x} vs {y}"));
                }
            }
        }
    }
    problems
}
