//! efi.img read back by dosfstools and mtools.

use std::path::Path;
use std::process::Command;

use isofs::efi;

fn payload(len: usize) -> Vec<u8> {
    // Not compressible to a pattern a reader could get right by accident.
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.env("MTOOLS_SKIP_CHECK", "1").output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn mcopy_out(img: &Path, path: &str, dir: &Path) -> Vec<u8> {
    let dest = dir.join("out");
    run(Command::new("mcopy")
        .arg("-n")
        .arg("-i")
        .arg(img)
        .arg(format!("::{path}"))
        .arg(&dest));
    std::fs::read(dest).unwrap()
}

#[test]
fn fsck_clean_and_mtools_extracts_inputs() {
    let bootx64 = payload(2_500_000);
    let grub_cfg = b"search --set=root --file /EFI/nixos-installer-image\n".to_vec();
    let img = efi::build(&bootx64, &grub_cfg).unwrap();
    // 110% of 2.5 MB is 2.62 MiB: floored to 2 MiB plus one.
    assert_eq!(img.len(), 3 * 1024 * 1024);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("efi.img");
    std::fs::write(&path, &img).unwrap();

    run(Command::new("fsck.fat").arg("-n").arg("-v").arg(&path));

    let listing = run(Command::new("mdir")
        .arg("-i")
        .arg(&path)
        .arg("-/")
        .arg("::"));
    assert!(listing.contains("BOOTX64"), "{listing}");
    assert!(
        listing.contains("grub.cfg") || listing.contains("GRUB     CFG"),
        "{listing}"
    );
    assert_eq!(
        mcopy_out(&path, "/EFI/BOOT/BOOTX64.EFI", dir.path()),
        bootx64
    );
    assert_eq!(mcopy_out(&path, "/EFI/BOOT/grub.cfg", dir.path()), grub_cfg);

    let info = run(Command::new("minfo").arg("-i").arg(&path).arg("::"));
    assert!(info.contains("serial number: 12345678"), "{info}");
    assert!(info.contains("disk type=\"FAT12   \""), "{info}");
    let label = run(Command::new("mlabel")
        .arg("-s")
        .arg("-i")
        .arg(&path)
        .arg("::"));
    assert!(label.contains("EFIBOOT"), "{label}");
}

#[test]
fn only_the_two_files() {
    let img = efi::build(b"MZ", b"x").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("efi.img");
    std::fs::write(&path, &img).unwrap();
    let listing = run(Command::new("mdir")
        .arg("-i")
        .arg(&path)
        .arg("-/")
        .arg("-b")
        .arg("::"));
    let mut files: Vec<&str> = listing.lines().filter(|l| !l.ends_with('/')).collect();
    files.sort();
    assert_eq!(
        files,
        ["::/EFI/BOOT/BOOTX64.EFI", "::/EFI/BOOT/grub.cfg"],
        "{listing}"
    );
}

#[test]
fn builds_are_byte_identical() {
    let bootx64 = payload(700_000);
    let a = efi::build(&bootx64, b"set timeout=5\n").unwrap();
    let b = efi::build(&bootx64, b"set timeout=5\n").unwrap();
    assert!(a == b);
}

#[test]
fn large_content_falls_back_to_fat16_and_stays_clean() {
    let bootx64 = payload(130 * 1024 * 1024);
    let img = efi::build(&bootx64, b"").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("efi.img");
    std::fs::write(&path, &img).unwrap();
    run(Command::new("fsck.fat").arg("-n").arg(&path));
    let info = run(Command::new("minfo").arg("-i").arg(&path).arg("::"));
    assert!(info.contains("disk type=\"FAT16   \""), "{info}");
}
