//! The ISO that `isofs build` writes boots for real in QEMU (TCG): SeaBIOS and OVMF, as a CD and as a
//! disk (the `dd` to a USB stick case), both menu entries, UEFI through the GPT's ESP alone, and the
//! ISO as a file on a stick through GRUB's loopback.cfg (findiso=).
//! The fixture initrd prints `ISOFS-BOOT-OK host=… autoinstall=…` after checking the squashfs and flake.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn iso(default_entry: &str) -> PathBuf {
    static INSTALL: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    static AUTO: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let cell = if default_entry == "install" {
        &INSTALL
    } else {
        &AUTO
    };
    let (_, p) = cell.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        let p = build("shinji", d.path(), &["--default-entry", default_entry]);
        (d, p)
    });
    p.clone()
}

fn boot(iso: &Path, mode: &str, expect: &str) {
    let started = std::time::Instant::now();
    let out = Command::new("bash")
        .arg(repo().join("tests/boot/qemu-boot.sh"))
        .arg(iso)
        .arg(mode)
        .arg(expect)
        .output()
        .unwrap();
    eprintln!("boot {mode}: {:.1} s", started.elapsed().as_secs_f64());
    assert!(
        out.status.success(),
        "{mode}: marker /{expect}/ not seen\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

const INSTALL: &str = "ISOFS-BOOT-OK host=shinji autoinstall=no";
const AUTO: &str = "ISOFS-BOOT-OK host=shinji autoinstall=yes";

#[test]
fn seabios_cdrom() {
    boot(&iso("install"), "bios-cd", INSTALL);
}

#[test]
fn seabios_hard_disk() {
    boot(&iso("install"), "bios-hd", INSTALL);
}

#[test]
fn ovmf_cdrom() {
    boot(&iso("install"), "uefi-cd", INSTALL);
}

#[test]
fn ovmf_hard_disk() {
    boot(&iso("install"), "uefi-hd", INSTALL);
}

#[test]
fn autoinstall_entry_bios() {
    boot(&iso("autoinstall"), "bios-cd", AUTO);
}

#[test]
fn autoinstall_entry_uefi() {
    boot(&iso("autoinstall"), "uefi-hd", AUTO);
}

/// Many PCs boot USB sticks only through the ESP: hide the El Torito EFI entry and boot the disk.
#[test]
fn ovmf_disk_through_esp_alone() {
    let d = tempfile::tempdir().unwrap();
    let copy = d.path().join("esp-only.iso");
    run(Command::new("bash")
        .arg(repo().join("tests/boot/esp-only.sh"))
        .arg(iso("install"))
        .arg(&copy));
    boot(&copy, "uefi-hd", INSTALL);
}

/// The ISO as a *file* on a stick, booted the way GRUB-based multiboot sticks do it (Ventoy's
/// GRUB2 mode): a standalone GRUB loop-mounts the file and hands over to its loopback.cfg; the
/// ISO's menu passes findiso=, and stage 1 finds the image through it (a loop device).
#[test]
fn ovmf_grub_loopback_of_the_iso_file() {
    let d = tempfile::tempdir().unwrap();
    let stick = d.path().join("stick.img");
    run(Command::new("bash")
        .arg(repo().join("tests/boot/loopback-stick.sh"))
        .arg(iso("install"))
        .arg(&stick));
    boot(
        &stick,
        "uefi-hd",
        "ISOFS-BOOT-OK host=shinji autoinstall=no .*dev=loop[0-9]+ .*findiso=/nixos-shinji-25.11-x86_64-linux.iso",
    );
}
