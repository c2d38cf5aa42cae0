//! El Torito (1995): the boot record volume descriptor, the boot catalog and the boot info table.
//!
//! Catalog layout (one 2048-byte sector, 32-byte entries): validation entry (platform x86, checksum
//! making the sixteen LE u16 words sum to 0, key 55 AA); default entry (bootable, no emulation,
//! load segment 0 = 0x7C0, 4 virtual 512-byte sectors) for the BIOS image; then, for EFI, a final
//! section header (0x91, platform 0xEF, one entry) and its entry (bootable, no emulation).
//!
//! The EFI entry's sector count is the image size in 512-byte units, rounded up to whole
//! 2048-byte blocks as xorriso does. An image of 32 MiB or more does not fit the u16 field; the
//! count is then 0, which UEFI firmware (EDK2) reads as "up to the end of the medium" — the image
//! sits last before the tail, so that range starts with the whole image.

use super::SECTOR;

/// Boot record volume descriptor (sector 17).
pub(crate) fn boot_record(catalog_lba: u32) -> Vec<u8> {
    let mut d = vec![0u8; SECTOR as usize];
    d[0] = 0; // 0: boot record indicator
    d[1..6].copy_from_slice(b"CD001"); // 1: ISO 9660 identifier
    d[6] = 1; // 6: version
    let id = b"EL TORITO SPECIFICATION";
    d[7..7 + id.len()].copy_from_slice(id); // 7: boot system identifier (zero padded)
    d[71..75].copy_from_slice(&catalog_lba.to_le_bytes()); // 71: boot catalog LBA
    d
}

fn boot_entry(e: &mut [u8], lba: u32, sectors: u16) {
    e[0] = 0x88; // 0: boot indicator (bootable)
    e[1] = 0; // 1: boot media type (no emulation)
    e[2..4].copy_from_slice(&0u16.to_le_bytes()); // 2: load segment (0 = 0x7C0)
    e[4] = 0; // 4: system type
    e[6..8].copy_from_slice(&sectors.to_le_bytes()); // 6: sector count (512-byte units)
    e[8..12].copy_from_slice(&lba.to_le_bytes()); // 8: load RBA
}

/// 512-byte sector count for an EFI image of `size` bytes: whole 2048-byte blocks, as xorriso
/// counts them (see the module note for images that do not fit).
pub(crate) fn efi_sectors(size: u64) -> u16 {
    u16::try_from(size.div_ceil(SECTOR) * 4).unwrap_or(0)
}

/// The boot catalog sector.
pub(crate) fn catalog(bios_lba: u32, efi: Option<(u32, u16)>) -> Vec<u8> {
    let mut c = vec![0u8; SECTOR as usize];
    let v = &mut c[0..32];
    v[0] = 1; // 0: header ID
    v[1] = 0; // 1: platform ID (80x86)
    v[30] = 0x55; // 30: key byte
    v[31] = 0xAA; // 31: key byte
    let sum = v.chunks_exact(2).fold(0u16, |s, w| {
        s.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
    });
    v[28..30].copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes()); // 28: checksum
    boot_entry(&mut c[32..64], bios_lba, 4);
    if let Some((lba, sectors)) = efi {
        let h = &mut c[64..96];
        h[0] = 0x91; // 0: header indicator (final section)
        h[1] = 0xEF; // 1: platform ID (EFI)
        h[2..4].copy_from_slice(&1u16.to_le_bytes()); // 2: number of section entries
                                                      // Selection criteria type (byte 12) stays 0: none.
        boot_entry(&mut c[96..128], lba, sectors);
    }
    c
}

/// Boot info table (bytes 8..64 of the BIOS image): PVD LBA, image LBA, image length, and the
/// 32-bit sum of the image's LE u32 words from byte 64 (a short last word is zero-padded).
pub(crate) fn boot_info_table(pvd_lba: u32, lba: u32, image: &[u8]) -> [u8; 56] {
    let mut t = [0u8; 56];
    let sum = image[64.min(image.len())..].chunks(4).fold(0u32, |s, w| {
        let mut b = [0u8; 4];
        b[..w.len()].copy_from_slice(w);
        s.wrapping_add(u32::from_le_bytes(b))
    });
    t[0..4].copy_from_slice(&pvd_lba.to_le_bytes()); // 8: LBA of primary volume descriptor
    t[4..8].copy_from_slice(&lba.to_le_bytes()); // 12: LBA of boot file
    t[8..12].copy_from_slice(&(image.len() as u32).to_le_bytes()); // 16: boot file length
    t[12..16].copy_from_slice(&sum.to_le_bytes()); // 20: checksum; 24..64 reserved
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_entry_sums_to_zero() {
        let c = catalog(30, Some((40, 2880)));
        let sum = c[..32].chunks_exact(2).fold(0u16, |s, w| {
            s.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
        });
        assert_eq!(sum, 0);
        assert_eq!(efi_sectors(40 << 20), 0);
        assert_eq!(efi_sectors(1_474_560), 2880);
        assert_eq!(efi_sectors(9000), 20);
    }
}
