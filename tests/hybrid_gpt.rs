//! The hybrid MBR + GPT read back by gdisk, util-linux fdisk and mtools, on a sparse disk image laid
//! out as the ISO planner would: system area at 0, efi.img last before the tail, backup GPT at the end.

use std::path::{Path, PathBuf};
use std::process::Command;

use isofs::{efi, hybrid};

const ISOHDPFX: &str = "/usr/lib/ISOLINUX/isohdpfx.bin";
const TOTAL: u64 = 8 * 1024 * 1024;

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

struct Disk {
    _dir: tempfile::TempDir,
    path: PathBuf,
    esp_offset: u64,
    efi_len: u64,
}

fn make_disk(volume_id: &str) -> Disk {
    let pfx = std::fs::read(ISOHDPFX).unwrap();
    let efi = efi::build(b"MZ not really an EFI binary", b"set timeout=5\n").unwrap();
    let efi_offset = TOTAL - hybrid::TAIL_BYTES - efi.len() as u64;
    let input = hybrid::HybridInput {
        isohdpfx: &pfx,
        isolinux_lba: 35,
        efi_lba: efi_offset / 2048,
        efi_size: efi.len() as u64,
        total_size: TOTAL,
        volume_id,
    };
    let system_area = hybrid::system_area(&input).unwrap();
    let tail = hybrid::tail(&input).unwrap();
    assert_eq!(tail.len() as u64, hybrid::TAIL_BYTES);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let mut img = vec![0u8; TOTAL as usize];
    img[..system_area.len()].copy_from_slice(&system_area);
    img[efi_offset as usize..][..efi.len()].copy_from_slice(&efi);
    img[(TOTAL - hybrid::TAIL_BYTES) as usize..].copy_from_slice(&tail);
    std::fs::write(&path, &img).unwrap();
    Disk {
        _dir: dir,
        path,
        esp_offset: efi_offset,
        efi_len: efi.len() as u64,
    }
}

fn sgdisk(path: &Path, flag: &str) -> String {
    run(Command::new("sgdisk").arg(flag).arg(path))
}

#[test]
fn sgdisk_verifies_primary_and_backup() {
    let disk = make_disk("nixos-shinji-25.11-x86_64");
    let verify = sgdisk(&disk.path, "-v");
    assert!(verify.contains("No problems found"), "{verify}");
    assert!(!verify.to_lowercase().contains("warning"), "{verify}");

    // Damage the primary header: gdisk then reads the backup, and must find it intact.
    let mut img = std::fs::read(&disk.path).unwrap();
    img[512 + 24] ^= 0xFF;
    std::fs::write(&disk.path, &img).unwrap();
    let out = Command::new("sgdisk")
        .arg("-v")
        .arg(&disk.path)
        .output()
        .unwrap();
    let verify = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(verify.contains("Main header: ERROR"), "{verify}");
    assert!(verify.contains("Backup header: OK"), "{verify}");
    assert!(verify.contains("Backup partition table: OK"), "{verify}");
}

#[test]
fn sgdisk_lists_both_partitions() {
    let disk = make_disk("nixos-shinji-25.11-x86_64");
    let printed = sgdisk(&disk.path, "-p");
    let esp_first = disk.esp_offset / 512;
    let esp_last = esp_first + disk.efi_len / 512 - 1;
    let rows: Vec<Vec<&str>> = printed
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.first().is_some_and(|n| *n == "1" || *n == "2"))
        .collect();
    assert_eq!(rows.len(), 2, "{printed}");
    assert_eq!(
        rows[0][1..3],
        ["64".to_string(), (esp_first - 1).to_string()],
        "{printed}"
    );
    assert_eq!(rows[0][5..], ["0700", "ISO9660"], "{printed}");
    assert_eq!(
        rows[1][1..3],
        [esp_first.to_string(), esp_last.to_string()],
        "{printed}"
    );
    assert_eq!(
        rows[1][5..],
        ["EF00", "EFI", "boot", "partition"],
        "{printed}"
    );
    let gdisk = run(Command::new("gdisk").arg("-l").arg(&disk.path));
    assert!(gdisk.contains("MBR: hybrid"), "{gdisk}");
    assert!(gdisk.contains("GPT: present"), "{gdisk}");
}

#[test]
fn fdisk_sees_gpt_and_hybrid_mbr() {
    let disk = make_disk("nixos-shinji-25.11-x86_64");
    let gpt = run(Command::new("fdisk").arg("-l").arg(&disk.path));
    assert!(gpt.contains("Disklabel type: gpt"), "{gpt}");
    assert!(gpt.contains("Microsoft basic data"), "{gpt}");
    assert!(gpt.contains("EFI System"), "{gpt}");
    assert!(!gpt.contains("corrupt"), "{gpt}");

    let mbr = run(Command::new("fdisk")
        .args(["-l", "--type", "dos"])
        .arg(&disk.path));
    let esp_first = disk.esp_offset / 512;
    let mbr_rows: Vec<Vec<&str>> = mbr
        .lines()
        .filter(|l| l.starts_with(disk.path.to_str().unwrap()))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(mbr_rows.len(), 3, "{mbr}");
    assert_eq!(mbr_rows[0][1..3], ["1", "63"], "{mbr}");
    assert_eq!(mbr_rows[0][5], "ee", "{mbr}");
    assert_eq!(mbr_rows[1][1], "*", "{mbr}");
    assert_eq!(
        mbr_rows[1][2..4],
        ["64".to_string(), (esp_first - 1).to_string()],
        "{mbr}"
    );
    assert_eq!(mbr_rows[2][1], esp_first.to_string(), "{mbr}");
    assert_eq!(mbr_rows[2][5], "ef", "{mbr}");
}

#[test]
fn mtools_reads_the_esp_at_its_partition_offset() {
    let disk = make_disk("nixos-shinji-25.11-x86_64");
    let listing = run(Command::new("mdir")
        .arg("-i")
        .arg(format!("{}@@{}", disk.path.display(), disk.esp_offset))
        .arg("::/EFI/BOOT"));
    assert!(listing.contains("BOOTX64"), "{listing}");
}

#[test]
fn identity_follows_the_volume_id() {
    let guids = |vid: &str| {
        let disk = make_disk(vid);
        let out = sgdisk(&disk.path, "-p");
        let disk_guid = out
            .lines()
            .find_map(|l| l.strip_prefix("Disk identifier (GUID): "))
            .unwrap()
            .to_string();
        let img = std::fs::read(&disk.path).unwrap();
        (disk_guid, img[440..444].to_vec(), img[..32768].to_vec())
    };
    let a = guids("nixos-a-25.11-x86_64");
    assert_eq!(a, guids("nixos-a-25.11-x86_64"));
    let b = guids("nixos-b-25.11-x86_64");
    assert_ne!(a.0, b.0);
    assert_ne!(a.1, b.1);
}
