//! The isohybrid system area (MBR + primary GPT) and the backup GPT at the image's end, so that the
//! ISO, copied raw to a USB stick, boots on BIOS and UEFI machines. Pure encoders: the ISO planner
//! gives the layout, these return bytes.
//!
//! Layout in 512-byte sectors (LBA), for an image of `N` sectors:
//! - LBA 0: MBR. Bytes 0..432 are syslinux's `isohdpfx.bin` boot code, which loads `isolinux.bin`
//!   from the 512-byte LBA stored at byte 432.
//! - LBA 1: primary GPT header; LBA 2..64: 248 entries of 128 bytes.
//! - GPT partition 1, "ISO9660": basic data, LBA 64 (the ISO's 2 KiB block 16, the PVD) up to the
//!   sector before efi.img. Partition 2, "EFI boot partition": EFI System, exactly efi.img.
//! - LBA N-63..N-2: backup entries; LBA N-1: backup header. The planner reserves [`TAIL_BYTES`]
//!   (whole 2 KiB blocks) for this, so 1 zero sector precedes the backup entries.
//!
//! Why a *hybrid* MBR (four entries: 0xEE, active 0x17, 0xEF, empty), and not the plain protective
//! MBR of the UEFI spec nor xorriso's `-isohybrid-gpt-basdat` form (active type 0x00 from LBA 0,
//! 0xEF, no 0xEE):
//! - UEFI firmware trusts a GPT only behind an MBR entry of type 0xEE starting at LBA 1 (UEFI 2.x
//!   §5.2.3; EDK2/OVMF's `PartitionDxe` looks for exactly that). Without it the disk is "legacy MBR"
//!   and the GPT is ignored, so the 0xEE entry comes first (where GRUB and gdisk expect it) and
//!   covers only the GPT structures before partition 1 (LBA 1..63).
//! - Many real BIOSes (and SeaBIOS's boot menu heuristics on some setups) only boot a USB disk whose
//!   MBR has a partition marked active (0x80), and some refuse an active 0xEE entry. So the data
//!   partition gets its own active MBR entry, type 0x17 (syslinux `isohybrid`'s default: a hidden
//!   type, so no OS tries to mount the ISO9660 region through it).
//! - The 0xEF entry lets MBR-only UEFI implementations find the ESP, and lets gdisk see that every
//!   MBR entry mirrors a GPT partition (so `sgdisk -v` reports no mismatch).
//!
//! Identity (disk GUID, partition GUIDs, MBR disk signature) is SHA-256 of the volume ID with a
//! per-field tag: the same volume ID always gives the same bytes, different hosts differ.

use sha2::{Digest, Sha256};

const SECTOR: u64 = 512;
/// MBR bytes taken from isohdpfx.bin; 432.. hold isolinux's LBA, the signature and partitions.
const BOOT_CODE: usize = 432;
/// As many entries as fill LBA 2..64 (xorriso does the same): with fewer, gdisk warns about the gap
/// between the table and the first usable LBA.
const ENTRY_COUNT: u32 = 248;
const ENTRY_SIZE: u32 = 128;
const ENTRY_SECTORS: u64 = (ENTRY_COUNT * ENTRY_SIZE) as u64 / SECTOR;
const HEADER_SIZE: u32 = 92;
const PRIMARY_ENTRIES_LBA: u64 = 2;
/// Partition 1 starts at the PVD; LBAs before it hold the MBR and primary GPT.
const FIRST_USABLE_LBA: u64 = 64;
/// The ISO9660 system area: 16 blocks of 2 KiB.
pub const SYSTEM_AREA_BYTES: u64 = 32768;
/// Backup entries + backup header, rounded up to whole 2 KiB ISO blocks.
pub const TAIL_BYTES: u64 = ((ENTRY_SECTORS + 1) * SECTOR).div_ceil(2048) * 2048;

/// GPT partition type GUIDs (UEFI spec, table 5-7 and Microsoft's basic data partition).
const BASIC_DATA: &str = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7";
const EFI_SYSTEM: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";

/// MBR partition types.
const MBR_GPT_PROTECTIVE: u8 = 0xEE;
const MBR_HIDDEN_DATA: u8 = 0x17;
const MBR_EFI_SYSTEM: u8 = 0xEF;

/// Where the ISO planner put things. All LBAs are ISO 2 KiB blocks; sizes are bytes.
pub struct HybridInput<'a> {
    /// syslinux `isohdpfx.bin`; bytes 0..432 become the MBR boot code. Debian ships the 432 bytes
    /// alone, other builds pad to 512; anything past 432 is ignored.
    pub isohdpfx: &'a [u8],
    /// 2 KiB LBA of isolinux.bin.
    pub isolinux_lba: u64,
    /// 2 KiB LBA of efi.img, the last file before the tail.
    pub efi_lba: u64,
    pub efi_size: u64,
    /// Bytes of the whole image (a multiple of 2048), i.e. the disk size when written raw.
    pub total_size: u64,
    /// Seeds disk/partition GUIDs and the MBR disk signature.
    pub volume_id: &'a str,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HybridError {
    #[error("isohdpfx.bin must hold at least 432 bytes of boot code, got {0}")]
    IsohdpfxSize(usize),
    #[error("image size {0} is not a whole number of 2048-byte blocks")]
    Unaligned(u64),
    #[error("image of {0} bytes is too large for MBR partition entries (2 TiB limit)")]
    TooLarge(u64),
    #[error("efi.img is empty")]
    EmptyEfi,
    #[error("efi.img at block {efi_lba} leaves no room for the ISO9660 partition before it")]
    EfiTooEarly { efi_lba: u64 },
    #[error("efi.img (block {efi_lba}, {efi_size} bytes) overlaps the backup GPT of a {total_size}-byte image")]
    EfiPastEnd {
        efi_lba: u64,
        efi_size: u64,
        total_size: u64,
    },
    #[error("isolinux.bin at block {0} lies outside the image")]
    IsolinuxOutside(u64),
}

/// The checked layout in 512-byte sectors.
struct Layout {
    /// Sectors in the whole image.
    sectors: u64,
    /// Inclusive sector ranges of GPT partitions 1 and 2.
    data: (u64, u64),
    esp: (u64, u64),
    isolinux_sector: u64,
}

impl Layout {
    fn check(input: &HybridInput) -> Result<Self, HybridError> {
        if input.isohdpfx.len() < BOOT_CODE {
            return Err(HybridError::IsohdpfxSize(input.isohdpfx.len()));
        }
        if !input.total_size.is_multiple_of(2048) {
            return Err(HybridError::Unaligned(input.total_size));
        }
        let sectors = input.total_size / SECTOR;
        if sectors > u64::from(u32::MAX) {
            return Err(HybridError::TooLarge(input.total_size));
        }
        if input.efi_size == 0 {
            return Err(HybridError::EmptyEfi);
        }
        // Sizes below are bounded by `sectors` (< 2^32) before any multiplication can overflow.
        let past_end = HybridError::EfiPastEnd {
            efi_lba: input.efi_lba,
            efi_size: input.efi_size,
            total_size: input.total_size,
        };
        if input.efi_lba >= sectors || input.efi_size > input.total_size {
            return Err(past_end);
        }
        let esp_first = input.efi_lba * 4;
        let esp_last = esp_first + input.efi_size.div_ceil(SECTOR) - 1;
        if esp_last > last_usable_lba(sectors) {
            return Err(past_end);
        }
        if esp_first <= FIRST_USABLE_LBA {
            return Err(HybridError::EfiTooEarly {
                efi_lba: input.efi_lba,
            });
        }
        if input.isolinux_lba >= sectors / 4 {
            return Err(HybridError::IsolinuxOutside(input.isolinux_lba));
        }
        Ok(Layout {
            sectors,
            data: (FIRST_USABLE_LBA, esp_first - 1),
            esp: (esp_first, esp_last),
            isolinux_sector: input.isolinux_lba * 4,
        })
    }

    fn backup_header_lba(&self) -> u64 {
        self.sectors - 1
    }

    fn backup_entries_lba(&self) -> u64 {
        self.sectors - 1 - ENTRY_SECTORS
    }
}

fn last_usable_lba(sectors: u64) -> u64 {
    sectors.saturating_sub(2 + ENTRY_SECTORS)
}

/// MBR (sector 0) + primary GPT header (LBA 1) + entries (LBA 2..64): the ISO9660 system area,
/// exactly [`SYSTEM_AREA_BYTES`].
pub fn system_area(input: &HybridInput) -> Result<Vec<u8>, HybridError> {
    let layout = Layout::check(input)?;
    let ids = Identity::of(input.volume_id);
    let mut out = vec![0u8; SYSTEM_AREA_BYTES as usize];
    mbr(input.isohdpfx, &layout, ids.mbr_signature, &mut out[..512]);
    let entries = entries(&layout, &ids);
    let header = gpt_header(&layout, &ids, &entries, Side::Primary);
    out[512..1024].copy_from_slice(&header);
    let at = (PRIMARY_ENTRIES_LBA * SECTOR) as usize;
    out[at..at + entries.len()].copy_from_slice(&entries);
    Ok(out)
}

/// The last [`TAIL_BYTES`] of the image: zero padding, backup entries, backup header (last sector).
pub fn tail(input: &HybridInput) -> Result<Vec<u8>, HybridError> {
    let layout = Layout::check(input)?;
    let ids = Identity::of(input.volume_id);
    let entries = entries(&layout, &ids);
    let header = gpt_header(&layout, &ids, &entries, Side::Backup);
    let mut out = vec![0u8; TAIL_BYTES as usize];
    let header_at = out.len() - SECTOR as usize;
    let entries_at = header_at - entries.len();
    out[entries_at..header_at].copy_from_slice(&entries);
    out[header_at..].copy_from_slice(&header);
    Ok(out)
}

/// GUIDs and the disk signature, derived from the volume ID.
#[derive(Debug, PartialEq, Eq)]
struct Identity {
    disk: [u8; 16],
    data: [u8; 16],
    esp: [u8; 16],
    mbr_signature: u32,
}

impl Identity {
    fn of(volume_id: &str) -> Self {
        let digest = |tag: &str| -> [u8; 32] {
            Sha256::new()
                .chain_update(b"isofs ")
                .chain_update(tag)
                .chain_update(b"\0")
                .chain_update(volume_id)
                .finalize()
                .into()
        };
        let sig = digest("mbr signature");
        Identity {
            disk: derived_guid(&digest("disk guid")),
            data: derived_guid(&digest("iso9660 partition guid")),
            esp: derived_guid(&digest("esp partition guid")),
            mbr_signature: u32::from_le_bytes([sig[0], sig[1], sig[2], sig[3]]),
        }
    }
}

/// A GUID in its textual (big-endian) byte order from hash bytes, marked as an RFC 9562 version 8
/// ("custom") UUID, then put in GPT's mixed-endian on-disk order.
fn derived_guid(hash: &[u8; 32]) -> [u8; 16] {
    let mut be = [0u8; 16];
    be.copy_from_slice(&hash[..16]);
    be[6] = (be[6] & 0x0F) | 0x80;
    be[8] = (be[8] & 0x3F) | 0x80;
    mixed_endian(be)
}

/// GPT stores the first three GUID fields little-endian, the last two as bytes.
const fn mixed_endian(be: [u8; 16]) -> [u8; 16] {
    let mut le = be;
    le[0] = be[3];
    le[1] = be[2];
    le[2] = be[1];
    le[3] = be[0];
    le[4] = be[5];
    le[5] = be[4];
    le[6] = be[7];
    le[7] = be[6];
    le
}

/// "XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX" constants, parsed at compile time.
const fn guid(text: &str) -> [u8; 16] {
    let s = text.as_bytes();
    let mut be = [0u8; 16];
    let mut i = 0;
    let mut n = 0;
    while i < s.len() {
        if s[i] != b'-' {
            let hi = hex_digit(s[i]);
            let lo = hex_digit(s[i + 1]);
            be[n] = hi << 4 | lo;
            n += 1;
            i += 1;
        }
        i += 1;
    }
    mixed_endian(be)
}

const fn hex_digit(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'A'..=b'F' => c - b'A' + 10,
        _ => panic!("GUID constants are upper-case hex"),
    }
}

const BASIC_DATA_GUID: [u8; 16] = guid(BASIC_DATA);
const EFI_SYSTEM_GUID: [u8; 16] = guid(EFI_SYSTEM);

fn mbr(isohdpfx: &[u8], layout: &Layout, signature: u32, out: &mut [u8]) {
    out[0..BOOT_CODE].copy_from_slice(&isohdpfx[0..BOOT_CODE]);
    // 432: isohdpfx reads isolinux.bin's 512-byte LBA here (u64 LE).
    out[432..440].copy_from_slice(&layout.isolinux_sector.to_le_bytes());
    // 440: disk signature; 444: two zero bytes ("copy protected" marker unused).
    out[440..444].copy_from_slice(&signature.to_le_bytes());
    let entries = [
        (false, MBR_GPT_PROTECTIVE, 1, FIRST_USABLE_LBA - 1),
        (true, MBR_HIDDEN_DATA, layout.data.0, layout.data.1),
        (false, MBR_EFI_SYSTEM, layout.esp.0, layout.esp.1),
    ];
    for (i, (active, kind, first, last)) in entries.into_iter().enumerate() {
        let at = 446 + 16 * i;
        mbr_entry(active, kind, first, last, &mut out[at..at + 16]);
    }
    // 510: boot signature.
    out[510] = 0x55;
    out[511] = 0xAA;
}

/// One 16-byte MBR partition entry. `Layout::check` keeps every sector below 2^32.
fn mbr_entry(active: bool, kind: u8, first: u64, last: u64, out: &mut [u8]) {
    out[0] = if active { 0x80 } else { 0x00 }; // 0: status
    out[1..4].copy_from_slice(&chs(first)); // 1: CHS of first sector
    out[4] = kind; // 4: partition type
    out[5..8].copy_from_slice(&chs(last)); // 5: CHS of last sector
    out[8..12].copy_from_slice(&(first as u32).to_le_bytes()); // 8: first LBA
    out[12..16].copy_from_slice(&((last - first + 1) as u32).to_le_bytes()); // 12: sector count
}

/// CHS in the usual 255-head, 63-sector geometry; beyond cylinder 1023 the conventional maximum
/// (FE FF FF) tells the BIOS to use the LBA fields.
fn chs(lba: u64) -> [u8; 3] {
    const HEADS: u64 = 255;
    const SPT: u64 = 63;
    let cylinder = lba / (HEADS * SPT);
    if cylinder > 1023 {
        return [0xFE, 0xFF, 0xFF];
    }
    let head = (lba / SPT) % HEADS;
    let sector = lba % SPT + 1;
    [
        head as u8,
        ((cylinder >> 2) & 0xC0) as u8 | sector as u8,
        (cylinder & 0xFF) as u8,
    ]
}

/// The GPT entries (UEFI spec §5.3.3), identical for primary and backup.
fn entries(layout: &Layout, ids: &Identity) -> Vec<u8> {
    let mut out = vec![0u8; (ENTRY_COUNT * ENTRY_SIZE) as usize];
    let parts = [
        (BASIC_DATA_GUID, ids.data, layout.data, "ISO9660"),
        (EFI_SYSTEM_GUID, ids.esp, layout.esp, "EFI boot partition"),
    ];
    for (i, (kind, unique, (first, last), name)) in parts.into_iter().enumerate() {
        let e = &mut out[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
        e[0..16].copy_from_slice(&kind); // 0: partition type GUID
        e[16..32].copy_from_slice(&unique); // 16: unique partition GUID
        e[32..40].copy_from_slice(&first.to_le_bytes()); // 32: first LBA
        e[40..48].copy_from_slice(&last.to_le_bytes()); // 40: last LBA (inclusive)
                                                        // 48: attributes, none; 56: name, UTF-16LE, 36 code units.
        for (j, unit) in name.encode_utf16().enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&unit.to_le_bytes());
        }
    }
    out
}

#[derive(Clone, Copy)]
enum Side {
    Primary,
    Backup,
}

/// A GPT header sector (UEFI spec §5.3.2).
fn gpt_header(layout: &Layout, ids: &Identity, entries: &[u8], side: Side) -> [u8; 512] {
    let (my_lba, alternate_lba, entries_lba) = match side {
        Side::Primary => (1, layout.backup_header_lba(), PRIMARY_ENTRIES_LBA),
        Side::Backup => (layout.backup_header_lba(), 1, layout.backup_entries_lba()),
    };
    let mut h = [0u8; 512];
    h[0..8].copy_from_slice(b"EFI PART"); // 0: signature
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes()); // 8: revision 1.0
    h[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes()); // 12: header size
                                                           // 16: header CRC32, computed last over bytes 0..92 with this field zero; 20: reserved.
    h[24..32].copy_from_slice(&my_lba.to_le_bytes()); // 24: this header's LBA
    h[32..40].copy_from_slice(&alternate_lba.to_le_bytes()); // 32: the other header's LBA
    h[40..48].copy_from_slice(&FIRST_USABLE_LBA.to_le_bytes()); // 40: first usable LBA
    h[48..56].copy_from_slice(&last_usable_lba(layout.sectors).to_le_bytes()); // 48: last usable LBA
    h[56..72].copy_from_slice(&ids.disk); // 56: disk GUID
    h[72..80].copy_from_slice(&entries_lba.to_le_bytes()); // 72: entries LBA
    h[80..84].copy_from_slice(&ENTRY_COUNT.to_le_bytes()); // 80: number of entries
    h[84..88].copy_from_slice(&ENTRY_SIZE.to_le_bytes()); // 84: entry size
    h[88..92].copy_from_slice(&crc32(entries).to_le_bytes()); // 88: entries CRC32
    let crc = crc32(&h[..HEADER_SIZE as usize]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320) as the UEFI spec requires. A 1 KiB table
/// is all it takes; not worth a dependency.
fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |c, &b| {
        TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(volume_id: &str) -> HybridInput<'_> {
        static PFX: [u8; 512] = [0x33; 512];
        HybridInput {
            isohdpfx: &PFX,
            isolinux_lba: 40,
            efi_lba: 1000,
            efi_size: 1 << 20,
            total_size: 1000 * 2048 + (1 << 20) + TAIL_BYTES,
            volume_id,
        }
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn guid_constant_is_mixed_endian() {
        assert_eq!(
            EFI_SYSTEM_GUID,
            [
                0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E,
                0xC9, 0x3B
            ]
        );
    }

    #[test]
    fn tail_size_is_whole_blocks() {
        assert_eq!(TAIL_BYTES, 32768);
        assert_eq!(tail(&input("X")).unwrap().len() as u64, TAIL_BYTES);
    }

    #[test]
    fn mbr_fields() {
        let sa = system_area(&input("X")).unwrap();
        assert_eq!(sa.len() as u64, SYSTEM_AREA_BYTES);
        assert_eq!(&sa[0..432], &[0x33; 432][..]);
        assert_eq!(u64::from_le_bytes(sa[432..440].try_into().unwrap()), 160);
        assert_eq!(&sa[510..512], &[0x55, 0xAA]);
        assert_eq!(sa[446 + 4], 0xEE);
        assert_eq!(sa[446 + 16], 0x80);
        assert_eq!(sa[446 + 32 + 4], 0xEF);
        assert_eq!(&sa[512..520], b"EFI PART");
    }

    #[test]
    fn rejects_bad_layouts() {
        let mut i = input("X");
        i.efi_lba = 10;
        assert!(matches!(
            system_area(&i),
            Err(HybridError::EfiTooEarly { .. })
        ));
        let mut i = input("X");
        i.total_size -= 2048;
        assert!(matches!(tail(&i), Err(HybridError::EfiPastEnd { .. })));
        let mut i = input("X");
        i.total_size += 512;
        assert_eq!(tail(&i), Err(HybridError::Unaligned(i.total_size)));
        let mut i = input("X");
        i.isohdpfx = &[0; 431];
        assert_eq!(system_area(&i), Err(HybridError::IsohdpfxSize(431)));
        let mut i = input("X");
        i.efi_lba = u64::MAX;
        assert!(system_area(&i).is_err());
    }

    #[test]
    fn identity_is_deterministic_and_distinct() {
        assert_eq!(Identity::of("a"), Identity::of("a"));
        let (a, b) = (Identity::of("a"), Identity::of("b"));
        assert_ne!(a.disk, b.disk);
        assert_ne!(a.mbr_signature, b.mbr_signature);
        assert_ne!(a.data, a.esp);
    }
}
