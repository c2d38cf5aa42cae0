//! The FAT image (`/boot/efi.img`) that UEFI firmware boots from: El Torito's EFI entry and the GPT's
//! EFI System Partition both point at it.
//!
//! Rules it follows (those of nixpkgs' `iso-image.nix`, so that firmware sees the same thing):
//! - only `EFI/BOOT/BOOTX64.EFI` and `EFI/BOOT/grub.cfg`; the ISO-only marker
//!   `/EFI/nixos-installer-image` is *not* here, so GRUB's `search --file` finds the ISO9660 tree;
//! - size = 110% of the file bytes, floored to whole MiB, plus one MiB (the shell arithmetic of
//!   nixpkgs: `(size * 110 / 100 / 1 MiB + 1) * 1 MiB`);
//! - FAT12 (FAT16 only when the content is too big for FAT12's 4084 clusters of at most 32 KiB),
//!   label `EFIBOOT`, volume serial `1234-5678`.
//!
//! Determinism: fatfs has no randomness, and every timestamp comes from [`Epoch`] (1980-01-01
//! 00:00:00, the DOS epoch and nixpkgs' `SOURCE_DATE_EPOCH`), so equal inputs give equal bytes.

use std::io::{Cursor, Write};

use fatfs::{Date, DateTime, FatType, FileSystem, FormatVolumeOptions, FsOptions, Time};

const MIB: u64 = 1024 * 1024;
const LABEL: [u8; 11] = *b"EFIBOOT    ";
const SERIAL: u32 = 0x1234_5678;

#[derive(Debug, thiserror::Error)]
pub enum EfiError {
    #[error("efi.img: content of {0} bytes is too large for a FAT12/FAT16 boot image")]
    TooLarge(u64),
    #[error("efi.img: {what}: {source}")]
    Fat {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn fat(what: &'static str) -> impl FnOnce(std::io::Error) -> EfiError {
    move |source| EfiError::Fat { what, source }
}

/// Every timestamp fatfs asks for: the DOS epoch.
#[derive(Debug)]
struct Epoch;

impl fatfs::TimeProvider for Epoch {
    fn get_current_date(&self) -> Date {
        Date {
            year: 1980,
            month: 1,
            day: 1,
        }
    }

    fn get_current_date_time(&self) -> DateTime {
        DateTime {
            date: self.get_current_date(),
            time: Time {
                hour: 0,
                min: 0,
                sec: 0,
                millis: 0,
            },
        }
    }
}

static EPOCH: Epoch = Epoch;

/// Image size for `content` file bytes, by the nixpkgs rule.
pub fn image_size(content: u64) -> u64 {
    (content.saturating_mul(110) / 100 / MIB + 1).saturating_mul(MIB)
}

/// Builds the FAT image holding `EFI/BOOT/BOOTX64.EFI` and `EFI/BOOT/grub.cfg`.
pub fn build(bootx64_efi: &[u8], grub_cfg: &[u8]) -> Result<Vec<u8>, EfiError> {
    let content = bootx64_efi.len() as u64 + grub_cfg.len() as u64;
    let size = image_size(content);
    // FAT16 tops out at 65524 clusters of 64 KiB; past ~2 GiB a boot image makes no sense anyway.
    let sectors = u32::try_from(size / 512)
        .ok()
        .filter(|s| *s <= 4 * 1024 * 1024)
        .ok_or(EfiError::TooLarge(content))?;

    let mut disk = Cursor::new(vec![0u8; size as usize]);
    // Asking for FAT12 only picks FAT12's cluster size; fatfs then takes the FAT type that the
    // resulting cluster count dictates, which is FAT16 once the content outgrows FAT12.
    let options = FormatVolumeOptions::new()
        .fat_type(FatType::Fat12)
        .total_sectors(sectors)
        .volume_id(SERIAL)
        .volume_label(LABEL);
    fatfs::format_volume(&mut disk, options).map_err(fat("format"))?;

    {
        let fs_options = FsOptions::new()
            .update_accessed_date(false)
            .time_provider(&EPOCH);
        let fs = FileSystem::new(&mut disk, fs_options).map_err(fat("mount"))?;
        write_tree(&fs, bootx64_efi, grub_cfg)?;
        // Unmounting clears the "dirty" bit fatfs set on mount; without it fsck.fat complains.
        fs.unmount().map_err(fat("unmount"))?;
    }
    let mut img = disk.into_inner();
    drop_dot_lfns(&mut img)?;
    Ok(img)
}

/// fatfs 0.3 writes a long-name entry in front of every `.` and `..` entry, which `fsck.fat` (and
/// the FAT spec: dot entries are short names only) rejects. Dot entries are always the first two of
/// a directory's first cluster, so the fix is local: drop those long-name entries from the first
/// cluster of every subdirectory and close the gap. Nothing refers to an entry's position, so moving
/// entries within the cluster is safe.
fn drop_dot_lfns(img: &mut [u8]) -> Result<(), EfiError> {
    let bad = || EfiError::Fat {
        what: "re-read",
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "unexpected FAT layout"),
    };
    let u16_at = |at: usize| u16::from_le_bytes([img[at], img[at + 1]]) as usize;
    // BPB fields (FAT12/16): 11 bytes/sector, 13 sectors/cluster, 14 reserved sectors, 16 FATs,
    // 17 root entries, 22 sectors/FAT.
    let sector = u16_at(11);
    let cluster = sector * usize::from(img[13]);
    let root = (u16_at(14) + usize::from(img[16]) * u16_at(22)) * sector;
    let data = root + u16_at(17) * 32;
    let mut pending = subdirs(&img[root..data]);
    while let Some(first_cluster) = pending.pop() {
        let at = first_cluster
            .checked_sub(2)
            .map(|n| data + n * cluster)
            .filter(|at| at + cluster <= img.len())
            .ok_or_else(bad)?;
        let dir = &mut img[at..at + cluster];
        let mut kept = Vec::with_capacity(cluster);
        let mut lfn_run: Vec<&[u8]> = Vec::new();
        for entry in dir.chunks(32).take_while(|e| e[0] != 0) {
            if entry[11] == 0x0F {
                lfn_run.push(entry);
                continue;
            }
            if !entry.starts_with(b".") {
                kept.extend(lfn_run.iter().copied().flatten());
            }
            lfn_run.clear();
            kept.extend_from_slice(entry);
        }
        kept.resize(cluster, 0);
        dir.copy_from_slice(&kept);
        pending.extend(subdirs(dir));
    }
    Ok(())
}

/// First clusters of the subdirectories listed in a directory region (skipping `.` and `..`).
fn subdirs(entries: &[u8]) -> Vec<usize> {
    entries
        .chunks(32)
        .take_while(|e| e[0] != 0)
        // 0: name (0xE5 = deleted); 11: attributes (0x10 directory, 0x0F long name); 26: first cluster.
        .filter(|e| e[0] != 0xE5 && e[0] != b'.' && e[11] != 0x0F && e[11] & 0x10 != 0)
        .map(|e| usize::from(u16::from_le_bytes([e[26], e[27]])))
        .collect()
}

fn write_tree<T: fatfs::ReadWriteSeek>(
    fs: &FileSystem<T>,
    bootx64_efi: &[u8],
    grub_cfg: &[u8],
) -> Result<(), EfiError> {
    let boot = fs
        .root_dir()
        .create_dir("EFI")
        .and_then(|efi| efi.create_dir("BOOT"))
        .map_err(fat("create EFI/BOOT"))?;
    write_file(&boot, "BOOTX64.EFI", bootx64_efi)?;
    write_file(&boot, "grub.cfg", grub_cfg)
}

fn write_file<T: fatfs::ReadWriteSeek>(
    dir: &fatfs::Dir<'_, T>,
    name: &'static str,
    bytes: &[u8],
) -> Result<(), EfiError> {
    let mut file = dir.create_file(name).map_err(fat(name))?;
    file.write_all(bytes).map_err(fat(name))?;
    file.flush().map_err(fat(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_rule_matches_nixpkgs() {
        assert_eq!(image_size(0), MIB);
        assert_eq!(image_size(900 * 1024), MIB);
        assert_eq!(image_size(MIB), 2 * MIB);
        assert_eq!(image_size(3 * MIB), 4 * MIB);
    }

    #[test]
    fn is_fat12_with_label_and_serial() {
        let img = build(&[0xAB; 100_000], b"set timeout=5\n").unwrap();
        assert_eq!(img.len() as u64, MIB);
        let fs = FileSystem::new(Cursor::new(img), FsOptions::new()).unwrap();
        assert_eq!(fs.fat_type(), FatType::Fat12);
        assert_eq!(fs.volume_id(), SERIAL);
        assert_eq!(fs.volume_label(), "EFIBOOT");
    }
}
