//! `isofs check` on small fixture flakes: one that passes every rule, one per broken rule, and the
//! fixture world's flake.

mod common;

use common::{add_iso_host, repo};
use isofs::check::{check_host, render, Finding, Level};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The fixture world's flake, written fresh into `dir` by make-flake.sh.
fn fixture_world_flake(dir: &Path) -> PathBuf {
    let flake = dir.join("flake");
    let st = Command::new("bash")
        .arg(repo().join("fixtures/make-flake.sh"))
        .arg(&flake)
        .arg(repo().join("mount-helpers/installer.nix"))
        .args(["shinji", "kenpachi"])
        .status()
        .unwrap();
    assert!(st.success());
    flake
}

fn check(fixture: &str, host: &str) -> Vec<Finding> {
    check_host(&repo().join("fixtures/check").join(fixture), host, "25.11")
}

/// Asserts the one finding for `rule`: its level, file and line.
fn assert_rule(findings: &[Finding], rule: &str, level: Level, file: &str, line: Option<usize>) {
    let f = findings
        .iter()
        .find(|f| f.rule == rule)
        .unwrap_or_else(|| panic!("no {rule} finding in\n{}", render(findings)));
    assert_eq!(
        (f.level, f.file.as_path(), f.line),
        (level, Path::new(file), line),
        "\n{}",
        render(findings)
    );
}

fn assert_others_pass(findings: &[Finding], rule: &str) {
    let others: Vec<_> = findings.iter().filter(|f| f.rule != rule).collect();
    assert_eq!(others.len(), 3, "\n{}", render(findings));
    assert!(
        others.iter().all(|f| f.level == Level::Pass),
        "\n{}",
        render(findings)
    );
}

#[test]
fn passing_host() {
    let f = check("ok", "shinji");
    assert_eq!(f.len(), 4);
    assert_rule(&f, "disko", Level::Pass, "hosts/shinji/disk.nix", Some(3));
    assert_rule(
        &f,
        "filesystems",
        Level::Pass,
        "hosts/shinji/hardware-configuration.nix",
        None,
    );
    assert_rule(
        &f,
        "initrd-modules",
        Level::Pass,
        "hosts/shinji/hardware-configuration.nix",
        Some(6),
    );
    assert_rule(&f, "volume-id", Level::Pass, "flake.nix", Some(9));
    assert_eq!(
        render(&f).lines().next(),
        Some("PASS shinji disko: hosts/shinji/disk.nix:3: imports inputs.disko.nixosModules.disko")
    );
    assert!(render(&f).contains("has nvme"), "{}", render(&f));
}

#[test]
fn no_disko_import() {
    let f = check("no-disko", "rei");
    assert_rule(&f, "disko", Level::Fail, "flake.nix", Some(8));
    assert_others_pass(&f, "disko");
}

#[test]
fn live_file_systems() {
    let f = check("live-fs", "asuka");
    let hw = "hosts/asuka/hardware-configuration.nix";
    assert_rule(&f, "filesystems", Level::Fail, hw, Some(4));
    assert_others_pass(&f, "filesystems");
}

#[test]
fn no_block_device_module() {
    let f = check("no-block", "misato");
    let hw = "hosts/misato/hardware-configuration.nix";
    assert_rule(&f, "initrd-modules", Level::Fail, hw, Some(3));
    assert_others_pass(&f, "initrd-modules");
}

#[test]
fn computed_module_list_cannot_be_told() {
    let f = check("computed", "gendo");
    let hw = "hosts/gendo/hardware-configuration.nix";
    assert_rule(&f, "initrd-modules", Level::Warn, hw, Some(3));
    assert!(render(&f).contains("cannot tell statically"));
    assert_others_pass(&f, "initrd-modules");
}

#[test]
fn host_name_too_long_for_volume_id() {
    let f = check("long-name", "kenpachi-workstation");
    assert_rule(&f, "volume-id", Level::Fail, "flake.nix", Some(6));
    assert_others_pass(&f, "volume-id");
    assert!(render(&f).contains("nixos-kenpachi-workstation-25.11-x86_64 has 39 characters"));
}

#[test]
fn unreadable_import_fails() {
    let d = tempfile::tempdir().unwrap();
    let ok = repo().join("fixtures/check/ok");
    let host = d.path().join("hosts/shinji");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::copy(ok.join("flake.nix"), d.path().join("flake.nix")).unwrap();
    std::fs::write(
        host.join("default.nix"),
        "{ name, ... }:\n{\n  imports = [ ./missing.nix ./${name}.nix ];\n}\n",
    )
    .unwrap();
    let f = check_host(d.path(), "shinji", "25.11");
    assert_rule(&f, "files", Level::Fail, "hosts/shinji/missing.nix", None);
    assert_rule(
        &f,
        "disko",
        Level::Warn,
        "hosts/shinji/default.nix",
        Some(3),
    );
    assert_rule(
        &f,
        "initrd-modules",
        Level::Warn,
        "hosts/shinji/default.nix",
        Some(3),
    );
}

/// Every host of the fixture world's flake (`ISOFS_WORLD`, else written fresh by make-flake.sh) passes.
#[test]
fn world_flake_passes() {
    let d = tempfile::tempdir().unwrap();
    let flake = match std::env::var_os("ISOFS_WORLD") {
        Some(w) => PathBuf::from(w).join("flake"),
        None => fixture_world_flake(d.path()),
    };
    let hosts = isofs::inputs::flake::hosts(&flake).unwrap();
    assert!(!hosts.is_empty());
    for h in &hosts {
        let f = check_host(&flake, h, "25.11");
        assert!(f.iter().all(|f| f.level == Level::Pass), "{}", render(&f));
        let disko = f.iter().find(|f| f.rule == "disko").unwrap();
        assert_eq!(disko.file, Path::new("flake.nix"), "{}", render(&f));
    }
}

/// A flake with two hosts: what one host's module list imports says nothing about the other.
#[test]
fn hosts_are_checked_apart() {
    let d = tempfile::tempdir().unwrap();
    let flake = r#"{
  outputs = inputs@{ nixpkgs, ... }: {
    nixosConfigurations = {
      a = nixpkgs.lib.nixosSystem { modules = [ inputs.disko.nixosModules.default ./hosts/a ./roles/${role} ]; };
      b = nixpkgs.lib.nixosSystem {
        modules = [ ./hosts/b ];
      };
    };
  };
}
"#;
    std::fs::write(d.path().join("flake.nix"), flake).unwrap();
    for h in ["a", "b"] {
        let dir = d.path().join("hosts").join(h);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("default.nix"),
            "{ boot.initrd.availableKernelModules = [ \"nvme\" ]; }\n",
        )
        .unwrap();
    }
    let a = check_host(d.path(), "a", "25.11");
    assert_rule(&a, "disko", Level::Pass, "flake.nix", Some(4));
    // `./roles/${role}` read as `./roles/a` leads nowhere: not followed, and not a broken file.
    assert!(a.iter().all(|f| f.rule != "files"), "{}", render(&a));
    let b = check_host(d.path(), "b", "25.11");
    assert_rule(&b, "disko", Level::Fail, "flake.nix", Some(6));
}

/// A host added to isoHosts without its directory: `./hosts/${name}` exists for the other hosts,
/// so for this one it is most likely missing (nixos-install would fail): a warning naming it, not
/// a PASS (a failure would wrong a host configured by a list of its own).
#[test]
fn listed_host_without_its_directory_is_named() {
    let d = tempfile::tempdir().unwrap();
    let flake = fixture_world_flake(d.path());
    add_iso_host(&flake, "ghost");
    let f = check_host(&flake, "ghost", "25.11");
    let files = f
        .iter()
        .find(|f| f.rule == "files")
        .unwrap_or_else(|| panic!("{}", render(&f)));
    assert_eq!(files.level, Level::Warn, "{}", render(&f));
    assert!(
        files
            .message
            .contains("hosts/ghost does not exist (it does for shinji)"),
        "{}",
        render(&f)
    );
    assert!(check_host(&flake, "shinji", "25.11")
        .iter()
        .all(|f| f.level == Level::Pass));
}

/// A host the flake does not list is a usage error, not a report of passing rules.
#[test]
fn unknown_host_is_an_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_isofs"))
        .args(["check", "no-such-host", "--flake"])
        .arg(repo().join("fixtures/world/flake"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown host 'no-such-host'") && err.contains("flake.nix"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

/// The passing fixture copied into a temporary directory with `files` (path, text) written over.
fn ok_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let st = Command::new("cp")
        .arg("-r")
        .arg(repo().join("fixtures/check/ok/."))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(st.success());
    for (path, text) in files {
        std::fs::write(dir.path().join(path), text).unwrap();
    }
    dir
}

/// (name, files written over the passing fixture, the rule, its expected level)
type Case = (
    &'static str,
    Vec<(&'static str, String)>,
    &'static str,
    Level,
);

/// Valid ways of writing a host that the checker cannot or need not follow: each is a PASS or a
/// "cannot tell statically" WARN, never a FAIL.
#[test]
fn valid_nix_it_cannot_follow_is_no_failure() {
    let disk_body = "disko.devices.disk.main = { type = \"disk\"; device = \"/dev/vda\"; };";
    let cases: Vec<Case> = vec![
        (
            "modules from a variable",
            vec![
                (
                    "flake.nix",
                    "{ outputs = inputs@{ nixpkgs, ... }: let isoHosts = [ \"shinji\" ]; \
                     common = [ inputs.disko.nixosModules.disko ]; in { \
                     nixosConfigurations.shinji = nixpkgs.lib.nixosSystem { \
                     modules = common ++ [ ./hosts/shinji ]; }; }; }"
                        .into(),
                ),
                ("hosts/shinji/disk.nix", format!("{{ ... }}: {{ {disk_body} }}")),
            ],
            "disko",
            Level::Warn,
        ),
        (
            "disko under `with inputs;`",
            vec![(
                "hosts/shinji/disk.nix",
                format!("{{ inputs, ... }}: {{ imports = with inputs; [ disko.nixosModules.disko ]; {disk_body} }}"),
            )],
            "disko",
            Level::Warn,
        ),
        (
            "disko inherited from inputs",
            vec![(
                "hosts/shinji/disk.nix",
                format!("{{ inputs, ... }}: let inherit (inputs) disko; in {{ imports = [ disko.nixosModules.disko ]; {disk_body} }}"),
            )],
            "disko",
            Level::Pass,
        ),
        (
            "initrd modules under `with lib;`",
            vec![(
                "hosts/shinji/hardware-configuration.nix",
                "{ lib, ... }: { boot.initrd = with lib; { availableKernelModules = mkDefault [ \"nvme\" ]; }; }".into(),
            )],
            "initrd-modules",
            Level::Pass,
        ),
        (
            "initrd modules inherited",
            vec![(
                "hosts/shinji/hardware-configuration.nix",
                "{ ... }: let availableKernelModules = [ \"nvme\" ]; in { boot.initrd = { inherit availableKernelModules; }; }".into(),
            )],
            "initrd-modules",
            Level::Warn,
        ),
        (
            "a let binding named fileSystems",
            vec![(
                "hosts/shinji/hardware-configuration.nix",
                "{ ... }: let fileSystems = [ \"ext4\" ]; in { boot.supportedFilesystems = fileSystems; boot.initrd.availableKernelModules = [ \"nvme\" ]; }".into(),
            )],
            "filesystems",
            Level::Pass,
        ),
        (
            "a draft nothing imports",
            vec![("hosts/shinji/wip.nix", "{ this is not nix".into())],
            "files",
            Level::Warn,
        ),
    ];
    for (name, files, rule, level) in cases {
        let files: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
        let dir = ok_with(&files);
        let f = check_host(dir.path(), "shinji", "25.11");
        assert!(
            f.iter().all(|f| f.level != Level::Fail),
            "{name}:\n{}",
            render(&f)
        );
        let got = f.iter().find(|f| f.rule == rule).map(|f| f.level);
        assert_eq!(got, Some(level), "{name}:\n{}", render(&f));
    }
}
