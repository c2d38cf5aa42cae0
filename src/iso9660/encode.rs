//! Turns a placed [`Tree`] into the regions of an [`IsoLayout`]: descriptors, path tables,
//! directories, continuation areas, the boot catalog, and the file contents (embedded, with the
//! boot info table patched into the BIOS image).

use super::dir_record::{self, Record, FLAG_DIR, FLAG_MULTI_EXTENT};
use super::layout::{normalise, Listed, Placed, Places, Target, Tree};
use super::{el_torito, path_table, volume};
use super::{IsoError, IsoLayout, IsoOptions, Region, RegionData, MAX_EXTENT, PVD_LBA, SECTOR};
use std::collections::BTreeMap;
use std::sync::Arc;

/// (LBA, length, flags) of each record describing a file of `size` bytes at `lba`.
fn file_extents(lba: u32, size: u64) -> Vec<(u32, u32, u8)> {
    if size == 0 {
        return vec![(0, 0, 0)];
    }
    let n = size.div_ceil(MAX_EXTENT);
    (0..n)
        .map(|i| {
            let off = i * MAX_EXTENT;
            let len = MAX_EXTENT.min(size - off) as u32;
            let flags = if i + 1 < n { FLAG_MULTI_EXTENT } else { 0 };
            (lba + (off / SECTOR) as u32, len, flags)
        })
        .collect()
}

struct Out {
    regions: Vec<Region>,
}

impl Out {
    fn bytes(&mut self, lba: u64, label: impl Into<String>, data: Vec<u8>) {
        self.regions.push(Region {
            offset: lba * SECTOR,
            label: label.into(),
            data: RegionData::Bytes(data.into()),
        });
    }
}

impl Tree {
    pub(super) fn encode(mut self, opts: &IsoOptions, p: &Places) -> Result<IsoLayout, IsoError> {
        let mut out = Out {
            regions: Vec::new(),
        };
        self.descriptors(opts, p, &mut out);
        self.path_tables(p, &mut out);
        for &d in &p.iso_bfs {
            let data = self.directory(d, false, p);
            let label = format!("ISO 9660 directory {}", self.dirs[d].label_path());
            out.bytes(u64::from(self.dirs[d].iso.lba), label, data);
        }
        if p.ce_len > 0 {
            out.bytes(
                p.ce_start,
                "Rock Ridge continuation areas",
                self.continuation(p),
            );
        }
        for &d in &p.jol_bfs {
            let data = self.directory(d, true, p);
            let label = format!("Joliet directory {}", self.dirs[d].label_path());
            out.bytes(u64::from(self.dirs[d].jol.lba), label, data);
        }
        let mut files = BTreeMap::new();
        if let (Some(b), Some(cat), Some(bios)) = (&opts.boot, p.catalog, self.bios) {
            let efi = self.efi.map(|f| {
                let f = &self.files[f];
                (f.lba, el_torito::efi_sectors(f.map.size()))
            });
            let catalog = el_torito::catalog(self.files[bios].lba, efi);
            let path = normalise(&b.catalog_path);
            out.bytes(cat, format!("El Torito boot catalog {path}"), catalog);
            files.insert(path, (cat, SECTOR));
            self.patch_boot_info_table(bios)?;
        }
        for &fi in &p.file_order {
            let f = &self.files[fi];
            files.insert(f.path.clone(), (u64::from(f.lba), f.map.size()));
            if f.map.size() > 0 {
                out.regions.push(Region {
                    offset: u64::from(f.lba) * SECTOR,
                    label: f.path.clone(),
                    data: RegionData::Map(f.map.clone()),
                });
            }
        }
        out.regions.sort_by_key(|r| r.offset);
        Ok(IsoLayout {
            regions: out.regions,
            files,
            tail_offset: p.tail_offset,
            tail_bytes: opts.tail_bytes,
        })
    }

    fn descriptors(&self, opts: &IsoOptions, p: &Places, out: &mut Out) {
        let root = &self.dirs[0];
        let descriptor = |joliet: bool, pt_size: u64, l: u64, m: u64, at: Placed| {
            let root_record = Record {
                lba: at.lba,
                size: at.size,
                flags: FLAG_DIR,
                mtime: root.meta.mtime,
                id: &[0],
                sua: &[],
            }
            .encode();
            volume::Descriptor {
                joliet,
                volume_id: &opts.volume_id,
                publisher: &opts.publisher,
                application_id: &opts.application_id,
                space_sectors: p.space_sectors,
                path_table_size: pt_size as u32,
                l_path_table: l as u32,
                m_path_table: m as u32,
                root_record: &root_record,
                timestamp: opts.timestamp,
            }
            .encode()
        };
        let [iso_l, iso_m, jol_l, jol_m] = p.path_tables;
        let pvd = descriptor(false, p.iso_pt_size, iso_l, iso_m, root.iso);
        out.bytes(u64::from(PVD_LBA), "primary volume descriptor", pvd);
        if let (Some(br), Some(cat)) = (p.boot_record, p.catalog) {
            let record = el_torito::boot_record(cat as u32);
            out.bytes(br, "El Torito boot record", record);
        }
        let svd = descriptor(true, p.jol_pt_size, jol_l, jol_m, root.jol);
        out.bytes(p.svd, "Joliet supplementary volume descriptor", svd);
        let term = volume::terminator();
        out.bytes(p.terminator, "volume descriptor set terminator", term);
    }

    fn path_tables(&self, p: &Places, out: &mut Out) {
        let (iso_ids, jol_ids) = self.dir_ids();
        let table = |order: &[usize], ids: &[Vec<u8>], joliet: bool| {
            let mut number = vec![0u16; self.dirs.len()];
            for (i, &d) in order.iter().enumerate() {
                // `collect` caps the directory count at 65535.
                number[d] = (i + 1) as u16;
            }
            let entries: Vec<path_table::PathEntry> = order
                .iter()
                .map(|&d| path_table::PathEntry {
                    id: &ids[d],
                    lba: if joliet {
                        self.dirs[d].jol.lba
                    } else {
                        self.dirs[d].iso.lba
                    },
                    parent: number[self.dirs[d].parent],
                })
                .collect();
            (
                path_table::encode(&entries, false),
                path_table::encode(&entries, true),
            )
        };
        let (l, m) = table(&p.iso_bfs, &iso_ids, false);
        out.bytes(p.path_tables[0], "ISO 9660 L path table", l);
        out.bytes(p.path_tables[1], "ISO 9660 M path table", m);
        let (l, m) = table(&p.jol_bfs, &jol_ids, true);
        out.bytes(p.path_tables[2], "Joliet L path table", l);
        out.bytes(p.path_tables[3], "Joliet M path table", m);
    }

    /// The records of one directory extent.
    fn directory(&self, di: usize, joliet: bool, p: &Places) -> Vec<u8> {
        let listing: Vec<Listed> = self.listing(di, joliet);
        let mut records = Vec::new();
        for l in &listing {
            let sua = l.sua.map(|s| s.encode_inline()).unwrap_or_default();
            let extents = match l.target {
                Target::Dir(c) => {
                    let at = if joliet {
                        self.dirs[c].jol
                    } else {
                        self.dirs[c].iso
                    };
                    vec![(at.lba, at.size, FLAG_DIR)]
                }
                Target::File(f) => file_extents(self.files[f].lba, self.files[f].map.size()),
                Target::Nothing => vec![(0, 0, 0)],
                Target::Catalog => vec![(p.catalog.unwrap_or(0) as u32, SECTOR as u32, 0)],
            };
            for (lba, size, flags) in extents {
                let record = Record {
                    lba,
                    size,
                    flags,
                    mtime: l.mtime,
                    id: l.id,
                    sua: &sua,
                };
                records.push(record.encode());
            }
        }
        dir_record::pack(&records)
    }

    fn continuation(&self, p: &Places) -> Vec<u8> {
        let mut area = vec![0u8; p.ce_len as usize];
        for d in &self.dirs {
            let suas = [&d.dot, &d.dotdot]
                .into_iter()
                .chain(d.entries.iter().map(|e| &e.sua));
            for sua in suas {
                for (i, &(lba, off)) in sua.area_at.iter().enumerate() {
                    let at = ((u64::from(lba) - p.ce_start) * SECTOR + u64::from(off)) as usize;
                    let b = sua.encode_area(i);
                    area[at..at + b.len()].copy_from_slice(&b);
                }
            }
        }
        area
    }

    /// Serves the BIOS image with its boot info table (bytes 8..64) filled in.
    fn patch_boot_info_table(&mut self, bios: usize) -> Result<(), IsoError> {
        let f = &self.files[bios];
        let size = f.map.size();
        if !(64..=u64::from(u32::MAX)).contains(&size) {
            return Err(IsoError::BiosImageSize {
                path: f.path.clone(),
                size,
            });
        }
        let image = f.map.to_vec()?;
        let table = el_torito::boot_info_table(PVD_LBA, f.lba, &image);
        let patched = f.map.with_patch("boot info table", 8, &table);
        self.files[bios].map = Arc::new(patched);
        Ok(())
    }
}
