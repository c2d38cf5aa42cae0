//! Rock Ridge (RRIP 1.10/1.12) System Use entries and their SUSP framing (SUSP 1.10).
//!
//! Rules hidden here:
//! - SP is the first entry of the root's `.` record; ER (`RRIP_1991A`) follows in the root's `.`
//!   record, in practice in its continuation area since it is 237 bytes;
//! - every entry is ≤ 255 bytes: long names are split over several NM entries, long link targets
//!   over several SL entries, each but the last flagged CONTINUE;
//! - when a record's System Use area would exceed the 255-byte record, the tail of its entries moves
//!   to continuation areas reached through CE; a continuation area never crosses a sector (Linux
//!   reads exactly one block for it), so long tails chain several areas, each ending in a CE;
//! - PX carries the serial number (the 44-byte form), as xorriso writes it;
//! - directory relocation (RRIP 1.12 4.1.5): CL and PL name a directory whose LBA is known only
//!   after allocation, so they stay symbolic ([`Item::Link`]) until encoding.

use super::dir_record::both32;
use super::SECTOR;

/// One System Use entry; `Ce` points to the next continuation area of the same record and is
/// resolved once areas have places; `Link` is a CL or PL entry naming a directory by its index in
/// the planner's directory list.
#[derive(Clone, Debug)]
pub(crate) enum Item {
    Raw(Vec<u8>),
    Ce,
    Link(&'static [u8; 2], usize),
}

pub(crate) const CE_LEN: usize = 28;
const LINK_LEN: usize = 12;

impl Item {
    fn len(&self) -> usize {
        match self {
            Item::Raw(v) => v.len(),
            Item::Ce => CE_LEN,
            Item::Link(..) => LINK_LEN,
        }
    }
}

impl From<Vec<u8>> for Item {
    fn from(v: Vec<u8>) -> Item {
        Item::Raw(v)
    }
}

fn entry(sig: &[u8; 2], body: &[u8]) -> Vec<u8> {
    let mut e = Vec::with_capacity(4 + body.len());
    e.extend_from_slice(sig); // 0: signature
    e.push((4 + body.len()) as u8); // 2: length
    e.push(1); // 3: entry version
    e.extend_from_slice(body); // 4: data
    e
}

/// SP: "SUSP in use", no bytes skipped.
pub(crate) fn sp() -> Vec<u8> {
    entry(b"SP", &[0xBE, 0xEF, 0]) // 4: check bytes, 6: LEN_SKP
}

/// ER naming RRIP 1.10.
pub(crate) fn er() -> Vec<u8> {
    const ID: &[u8] = b"RRIP_1991A";
    const DES: &[u8] =
        b"THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS";
    const SRC: &[u8] = b"PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.";
    let mut b = vec![ID.len() as u8, DES.len() as u8, SRC.len() as u8, 1]; // 4: LEN_ID, LEN_DES, LEN_SRC, EXT_VER
    b.extend_from_slice(ID); // 8: identifier
    b.extend_from_slice(DES); // descriptor
    b.extend_from_slice(SRC); // source
    entry(b"ER", &b)
}

/// PX: POSIX mode (with file type bits), links, uid, gid, serial number.
pub(crate) fn px(mode: u32, nlink: u32, uid: u32, gid: u32, ino: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(40);
    for v in [mode, nlink, uid, gid, ino] {
        b.extend_from_slice(&both32(v)); // 4, 12, 20, 28, 36
    }
    entry(b"PX", &b)
}

/// TF: modify, access and attribute-change times, all `mtime`, in the 7-byte form.
pub(crate) fn tf(mtime: i64) -> Vec<u8> {
    let mut b = vec![0x0E]; // 4: flags MODIFY | ACCESS | ATTRIBUTES
    let d = super::dir_record::date7(mtime);
    for _ in 0..3 {
        b.extend_from_slice(&d);
    }
    entry(b"TF", &b)
}

/// CL (child link) in the placeholder left where directory `dir` was before relocation.
pub(crate) fn cl(dir: usize) -> Item {
    Item::Link(b"CL", dir)
}

/// PL (parent link) in the `..` record of a relocated directory, naming its original parent.
pub(crate) fn pl(dir: usize) -> Item {
    Item::Link(b"PL", dir)
}

/// RE: this directory record is a relocation artefact that Rock Ridge readers leave out.
pub(crate) fn re() -> Vec<u8> {
    entry(b"RE", &[])
}

/// Room for data in one entry after its 5-byte header.
const ENTRY_DATA: usize = 250;

/// NM entries holding `name`.
pub(crate) fn nm(name: &[u8]) -> Vec<Vec<u8>> {
    let chunks: Vec<&[u8]> = name.chunks(ENTRY_DATA).collect();
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut b = vec![u8::from(i + 1 < chunks.len())]; // 4: flags (CONTINUE)
            b.extend_from_slice(c);
            entry(b"NM", &b)
        })
        .collect()
}

const COMP_CONTINUE: u8 = 0x01;
const COMP_CURRENT: u8 = 0x02;
const COMP_PARENT: u8 = 0x04;
const COMP_ROOT: u8 = 0x08;

/// SL entries for `target`: a leading `/` is a ROOT component, `.` and `..` are CURRENT and PARENT,
/// an empty component (`a//b`, `//x`) another ROOT component, so readers give the target back as
/// written; a trailing `/` is dropped, as xorriso drops it. A component longer than fits is
/// split into several component records flagged CONTINUE, possibly across SL entries.
pub(crate) fn sl(target: &[u8]) -> Vec<Vec<u8>> {
    let mut comps: Vec<(u8, &[u8])> = Vec::new();
    let mut rest = target;
    if let Some(r) = rest.strip_prefix(b"/") {
        comps.push((COMP_ROOT, &[]));
        rest = r;
    }
    let rest = rest.strip_suffix(b"/").unwrap_or(rest);
    for part in rest.split(|&b| b == b'/').filter(|_| !rest.is_empty()) {
        comps.push(match part {
            b"." => (COMP_CURRENT, &[]),
            b".." => (COMP_PARENT, &[]),
            // As xorriso writes it: a zero-length ROOT component reads back as the extra `/`
            // (libisofs skips a zero-length plain one).
            b"" => (COMP_ROOT, &[]),
            p => (0, p),
        });
    }
    if comps.is_empty() {
        comps.push((0, &[]));
    }
    let mut bodies: Vec<Vec<u8>> = vec![Vec::new()];
    for (flags, mut rest) in comps {
        loop {
            let room = ENTRY_DATA - bodies.last().map_or(0, Vec::len);
            if room < 2 + usize::from(!rest.is_empty()) {
                bodies.push(Vec::new());
                continue;
            }
            let n = rest.len().min(room - 2).min(255);
            let more = n < rest.len();
            let body = bodies.last_mut().expect("never empty");
            body.push(flags | if more { COMP_CONTINUE } else { 0 }); // component flags
            body.push(n as u8); // component length
            body.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if !more {
                break;
            }
        }
    }
    let last = bodies.len() - 1;
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, comps)| {
            let mut b = vec![u8::from(i < last)]; // 4: flags (CONTINUE in next SL)
            b.extend(comps); // 5: component area
            entry(b"SL", &b)
        })
        .collect()
}

/// A record's System Use entries, split between the record and its continuation areas.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sua {
    pub inline: Vec<Item>,
    pub areas: Vec<Vec<Item>>,
    /// (sector, byte offset) of each area, set by the layout.
    pub area_at: Vec<(u32, u32)>,
}

fn items_len(items: &[Item]) -> usize {
    items.iter().map(Item::len).sum()
}

/// Fills `cap` bytes from the front of `rest`, ending in a CE when not everything fits.
fn fill(rest: &mut &[Item], cap: usize) -> Vec<Item> {
    let mut out = Vec::new();
    let mut used = 0;
    while let Some((first, tail)) = rest.split_first() {
        if used + items_len(rest) <= cap {
            out.extend_from_slice(rest);
            *rest = &[];
            break;
        }
        if used + first.len() + CE_LEN > cap {
            out.push(Item::Ce);
            break;
        }
        used += first.len();
        out.push(first.clone());
        *rest = tail;
    }
    out
}

impl Sua {
    /// Places `entries` (each ≤ 255 bytes, no `Ce`) with at most `budget` bytes in the record
    /// itself.
    pub(crate) fn split(entries: &[Item], budget: usize) -> Sua {
        let mut rest = entries;
        let inline = fill(&mut rest, budget);
        let mut areas = Vec::new();
        while !rest.is_empty() {
            areas.push(fill(&mut rest, SECTOR as usize));
        }
        Sua {
            inline,
            areas,
            area_at: Vec::new(),
        }
    }

    pub(crate) fn inline_len(&self) -> usize {
        items_len(&self.inline)
    }

    pub(crate) fn area_lens(&self) -> impl Iterator<Item = usize> + '_ {
        self.areas.iter().map(|a| items_len(a))
    }

    /// `dir_lbas` resolves the directory indices of `Link` items.
    fn encode_items(&self, items: &[Item], next_area: usize, dir_lbas: &[u32]) -> Vec<u8> {
        let mut out = Vec::new();
        for it in items {
            match it {
                Item::Raw(v) => out.extend_from_slice(v),
                Item::Link(sig, dir) => out.extend(entry(sig, &both32(dir_lbas[*dir]))), // 4: location
                Item::Ce => {
                    let (lba, off) = self.area_at[next_area];
                    let mut b = Vec::with_capacity(24);
                    b.extend_from_slice(&both32(lba)); // 4: block of continuation area
                    b.extend_from_slice(&both32(off)); // 12: offset in block
                    b.extend_from_slice(&both32(items_len(&self.areas[next_area]) as u32)); // 20: length
                    out.extend(entry(b"CE", &b));
                }
            }
        }
        out
    }

    /// Bytes of the System Use area inside the record.
    pub(crate) fn encode_inline(&self, dir_lbas: &[u32]) -> Vec<u8> {
        self.encode_items(&self.inline, 0, dir_lbas)
    }

    /// Bytes of continuation area `i`.
    pub(crate) fn encode_area(&self, i: usize, dir_lbas: &[u32]) -> Vec<u8> {
        self.encode_items(&self.areas[i], i + 1, dir_lbas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reassembles an SL target the way a reader does.
    fn read_sl(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut need_slash = false;
        for e in entries {
            assert_eq!(&e[..2], b"SL");
            assert_eq!(e[2] as usize, e.len());
            let mut c = &e[5..];
            while !c.is_empty() {
                let (f, n) = (c[0], c[1] as usize);
                if need_slash {
                    out.push(b'/');
                }
                match f & !COMP_CONTINUE {
                    COMP_ROOT => out.push(b'/'),
                    COMP_CURRENT => out.push(b'.'),
                    COMP_PARENT => out.extend_from_slice(b".."),
                    _ => out.extend_from_slice(&c[2..2 + n]),
                }
                need_slash = f & (COMP_CONTINUE | COMP_ROOT) == 0;
                c = &c[2 + n..];
            }
        }
        out
    }

    #[test]
    fn symlink_components() {
        assert_eq!(read_sl(&sl(b"../x")), b"../x");
        assert_eq!(read_sl(&sl(b"/nix/store/abc")), b"/nix/store/abc");
        assert_eq!(read_sl(&sl(b"./a")), b"./a");
        for (target, back) in [
            (&b"a//b"[..], &b"a//b"[..]),
            (b"//x", b"//x"),
            (b"/", b"/"),
            (b"a/", b"a"),
            (b"", b""),
        ] {
            assert_eq!(
                read_sl(&sl(target)),
                back,
                "{}",
                String::from_utf8_lossy(target)
            );
        }
        let long = format!("/{}/{}", "a".repeat(300), "b".repeat(600));
        let entries = sl(long.as_bytes());
        assert!(entries.len() > 2 && entries.iter().all(|e| e.len() <= 255));
        assert_eq!(read_sl(&entries), long.as_bytes());
    }

    #[test]
    fn relocation_entries() {
        let s = Sua::split(&[cl(1), pl(0), re().into()], 200);
        let lbas = [20, 0x0102_0304];
        let mut want = b"CL\x0c\x01\x04\x03\x02\x01\x01\x02\x03\x04".to_vec();
        want.extend(b"PL\x0c\x01\x14\0\0\0\0\0\0\x14");
        want.extend(b"RE\x04\x01");
        assert_eq!(s.encode_inline(&lbas), want);
    }

    #[test]
    fn split_overflow_uses_continuation() {
        let entries: Vec<Item> = vec![
            sp().into(),
            px(0o40755, 2, 0, 0, 1).into(),
            tf(0).into(),
            er().into(),
        ];
        let s = Sua::split(&entries, 220);
        assert!(s.inline_len() <= 220);
        assert!(matches!(s.inline.last(), Some(Item::Ce)));
        assert_eq!(s.areas.len(), 1);
        let many: Vec<Item> = (0..20).map(|_| er().into()).collect();
        let s = Sua::split(&many, 100);
        assert!(s.area_lens().all(|l| l <= SECTOR as usize));
        assert!(s.areas.len() >= 3);
    }
}
