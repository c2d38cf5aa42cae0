//! Volume descriptors (ECMA-119 8.4, 8.5, 8.3; Joliet SVD) and the dates they carry.
//!
//! The primary and the Joliet supplementary descriptor share one layout; the Joliet one differs in
//! type (2), the escape sequence `%/E` (UCS-2 level 3) at byte 88, and text fields in UCS-2 BE padded
//! with UCS-2 spaces. The Joliet volume identifier holds only the first 16 characters.

use super::dir_record::{both16, both32};
use super::SECTOR;

pub(crate) struct Civil {
    pub year: i64,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

/// UTC calendar fields of `ts` seconds since the epoch (days-from-civil inverted, proleptic
/// Gregorian). `ts` is clamped to years 1..=9999 first so no arithmetic can overflow.
pub(crate) fn civil(ts: i64) -> Civil {
    const MIN: i64 = -62_135_596_800; // 0001-01-01T00:00:00Z
    const MAX: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let ts = ts.clamp(MIN, MAX);
    let (days, secs) = (ts.div_euclid(86_400), ts.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        hour: (secs / 3600) as u8,
        minute: (secs / 60 % 60) as u8,
        second: (secs % 60) as u8,
    }
}

/// Volume date, 17 bytes (8.4.26.1): `YYYYMMDDHHMMSScc` in digits + GMT offset (0).
pub(crate) fn date17(ts: i64) -> [u8; 17] {
    let c = civil(ts);
    let s = format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}00",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    );
    let mut d = [0u8; 17];
    d[..16].copy_from_slice(s.as_bytes());
    d
}

/// "Not specified" (8.4.26.1): sixteen `0` digits and a zero offset.
const NO_DATE: [u8; 17] = *b"0000000000000000\0";

pub(crate) struct Descriptor<'a> {
    pub joliet: bool,
    pub volume_id: &'a str,
    pub publisher: &'a str,
    pub application_id: &'a str,
    pub space_sectors: u32,
    pub path_table_size: u32,
    pub l_path_table: u32,
    pub m_path_table: u32,
    /// The 34-byte record of the root directory.
    pub root_record: &'a [u8],
    pub timestamp: i64,
}

fn text(field: &mut [u8], s: &str, joliet: bool) {
    if joliet {
        let mut units = s.encode_utf16().chain(std::iter::repeat(0x20));
        for pair in field.chunks_exact_mut(2) {
            pair.copy_from_slice(&units.next().unwrap_or(0x20).to_be_bytes());
        }
    } else {
        field.fill(b' ');
        let n = s.len().min(field.len());
        field[..n].copy_from_slice(&s.as_bytes()[..n]);
    }
}

impl Descriptor<'_> {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let j = self.joliet;
        let mut d = vec![0u8; SECTOR as usize];
        d[0] = if j { 2 } else { 1 }; // 0: volume descriptor type
        d[1..6].copy_from_slice(b"CD001"); // 1: standard identifier
        d[6] = 1; // 6: volume descriptor version
        d[7] = 0; // 7: volume flags (SVD) / unused (PVD)
        text(&mut d[8..40], "", j); // 8: system identifier
        text(&mut d[40..72], self.volume_id, j); // 40: volume identifier
        d[80..88].copy_from_slice(&both32(self.space_sectors)); // 80: volume space size
        if j {
            d[88..91].copy_from_slice(b"%/E"); // 88: escape sequences (UCS-2 level 3)
        }
        d[120..124].copy_from_slice(&both16(1)); // 120: volume set size
        d[124..128].copy_from_slice(&both16(1)); // 124: volume sequence number
        d[128..132].copy_from_slice(&both16(SECTOR as u16)); // 128: logical block size
        d[132..140].copy_from_slice(&both32(self.path_table_size)); // 132: path table size
        d[140..144].copy_from_slice(&self.l_path_table.to_le_bytes()); // 140: type L path table
        d[148..152].copy_from_slice(&self.m_path_table.to_be_bytes()); // 148: type M path table
        d[156..190].copy_from_slice(self.root_record); // 156: root directory record
        text(&mut d[190..318], "", j); // 190: volume set identifier
                                       // a-characters have no lower case (ECMA-119 7.4.1): like xorriso, the PVD upper-cases these
                                       // two; the volume ID stays as given because blkid and the kernel report it as the label.
        let case = |s: &str| {
            if j {
                s.to_string()
            } else {
                s.to_ascii_uppercase()
            }
        };
        text(&mut d[318..446], &case(self.publisher), j); // 318: publisher identifier
        text(&mut d[446..574], "", j); // 446: data preparer identifier
        text(&mut d[574..702], &case(self.application_id), j); // 574: application identifier
        text(&mut d[702..739], "", j); // 702: copyright file identifier
        text(&mut d[739..776], "", j); // 739: abstract file identifier
        text(&mut d[776..813], "", j); // 776: bibliographic file identifier
        let date = date17(self.timestamp);
        d[813..830].copy_from_slice(&date); // 813: creation date
        d[830..847].copy_from_slice(&date); // 830: modification date
        d[847..864].copy_from_slice(&NO_DATE); // 847: expiration date
        d[864..881].copy_from_slice(&date); // 864: effective date
        d[881] = 1; // 881: file structure version
        d
    }
}

/// Volume descriptor set terminator (8.3).
pub(crate) fn terminator() -> Vec<u8> {
    let mut d = vec![0u8; SECTOR as usize];
    d[0] = 255; // 0: type
    d[1..6].copy_from_slice(b"CD001"); // 1: standard identifier
    d[6] = 1; // 6: version
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(&date17(315_532_800)[..16], b"1980010100000000");
        assert_eq!(&date17(1_764_091_192)[..16], b"2025112517195200");
        assert_eq!(&date17(951_782_400)[..8], b"20000229");
        assert_eq!(&date17(i64::MIN)[..4], b"0001");
    }
}
