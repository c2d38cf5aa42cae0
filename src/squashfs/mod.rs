//! `nix-store.squashfs`, planned lazily: the bytes mksquashfs would write with `-no-hardlinks
//! -keep-as-directory -all-root -b 1048576 -comp zstd -Xcompression-level N -root-mode 0755`
//! (up to the choices below), as an [`ExtentMap`] whose data blocks are produced on read.
//!
//! Layout (SquashFS 4.0): superblock, data, inode table, directory table, fragment table, id table,
//! zero padding to 4 KiB. No export or xattr table, no compressor options block (the level is only
//! an encoder setting), no duplicate detection.
//!
//! Data is grouped per top-level entry (a store path): its files' full and last partial blocks in
//! tree order, then fragment blocks packing its files smaller than a block. So a store path's stored
//! bytes depend on that store path alone and are cached under keys derived from it
//! (see [`block`]); a second host sharing store paths reuses them.
//!
//! All metadata is built in memory at plan time. Inodes are written children before parents (a
//! directory inode must point at its finished listing); inode numbers are handed out beforehand,
//! siblings consecutively, so a listing's numbers stay within an i16 of its header's.

mod block;
mod dir;
mod inode;
mod meta;
mod superblock;

pub use block::SquashError;

use crate::cache::{BlockCache, Entry};
use crate::compression::Compression;
use crate::extent::{Builder, ExtentMap};
use crate::tree::{Node, NodeKind};
use block::{BlockSpec, DataBlock, FileKey, Piece};
use meta::MetaWriter;
use rayon::prelude::*;
use std::sync::Arc;
use superblock::*;

pub struct SquashOptions {
    pub compression: Compression,
    /// log2 of the data block size; 20 = 1 MiB.
    pub block_log: u32,
    /// The superblock's creation time; inode times come from the tree.
    pub mtime: i64,
}

/// Total file bytes below `root`, the unit of `plan`'s progress.
pub fn input_bytes(root: &Node) -> u64 {
    let mut total = 0;
    root.visit(&mut Vec::new(), &mut |_, n| {
        if let NodeKind::File(c) = &n.kind {
            total += c.size();
        }
    });
    total
}

/// Where a file's data went.
struct FilePlan {
    /// Index of its first block in the job list, and how many blocks.
    first_job: usize,
    blocks: usize,
    /// Fragment block (index among fragment jobs) and offset inside it.
    fragment: Option<(usize, u32)>,
}

/// Planning state before compression: every block to produce, in image order.
struct Layout {
    jobs: Vec<BlockSpec>,
    /// Job index of each fragment block, in fragment-table order.
    fragment_jobs: Vec<usize>,
    /// In the tree's depth-first order.
    files: Vec<FilePlan>,
}

fn path_str(rel: &[u8]) -> String {
    format!("/nix/store/{}", String::from_utf8_lossy(rel))
}

fn layout(root: &Node, opts: &SquashOptions) -> Result<Layout, SquashError> {
    let block_size = 1usize << opts.block_log;
    let c = opts.compression;
    let mut out = Layout {
        jobs: Vec::new(),
        fragment_jobs: Vec::new(),
        files: Vec::new(),
    };
    for top in root.children() {
        let in_store_path = matches!(top.kind, NodeKind::Dir(_));
        // Keys first (content-keyed files are read for them), so the packer can borrow them.
        let mut files: Vec<(Vec<u8>, Arc<ExtentMap>, FileKey)> = Vec::new();
        let mut err = None;
        top.visit(&mut top.name.clone(), &mut |rel, n| {
            if let (NodeKind::File(content), None) = (&n.kind, &err) {
                match FileKey::of(in_store_path, rel, content) {
                    Ok(k) => files.push((rel.to_vec(), content.clone(), k)),
                    Err(e) => err = Some(e),
                }
            }
        });
        if let Some(e) = err {
            return Err(e.into());
        }
        // The fragment block being filled: its members and bytes used.
        let mut members: Vec<(Piece, &FileKey)> = Vec::new();
        let mut used = 0usize;
        let mut fragments: Vec<Vec<(Piece, &FileKey)>> = Vec::new();
        for (rel, content, key) in &files {
            let size = content.size();
            let mut plan = FilePlan {
                first_job: out.jobs.len(),
                blocks: 0,
                fragment: None,
            };
            if size > 0 && size < block_size as u64 {
                if used + size as usize > block_size {
                    fragments.push(std::mem::take(&mut members));
                    used = 0;
                }
                let piece = Piece {
                    content: content.clone(),
                    offset: 0,
                    len: size as usize,
                };
                plan.fragment = Some((fragments.len(), used as u32));
                members.push((piece, key));
                used += size as usize;
            } else {
                let count = size.div_ceil(block_size as u64);
                for i in 0..count {
                    let offset = i * block_size as u64;
                    let len = (size - offset).min(block_size as u64) as usize;
                    out.jobs.push(BlockSpec {
                        key: block::data_key(c, opts.block_log, key, i),
                        pieces: vec![Piece {
                            content: content.clone(),
                            offset,
                            len,
                        }],
                        may_be_sparse: len == block_size,
                        compression: c,
                        what: format!("squashfs data block {i} of {}", path_str(rel)),
                    });
                }
                plan.blocks = count as usize;
            }
            out.files.push(plan);
        }
        if !members.is_empty() {
            fragments.push(members);
        }
        // Fragment numbers so far were local to this group.
        let base = out.fragment_jobs.len();
        for plan in out.files.iter_mut().rev().take(files.len()) {
            if let Some((f, off)) = plan.fragment {
                plan.fragment = Some((base + f, off));
            }
        }
        for (i, members) in fragments.into_iter().enumerate() {
            let keys: Vec<&FileKey> = members.iter().map(|(_, k)| *k).collect();
            out.fragment_jobs.push(out.jobs.len());
            out.jobs.push(BlockSpec {
                key: block::fragment_key(c, opts.block_log, &keys),
                what: format!(
                    "squashfs fragment block {i} of {} ({} files)",
                    path_str(&top.name),
                    members.len()
                ),
                pieces: members.into_iter().map(|(p, _)| p).collect(),
                may_be_sparse: false,
                compression: c,
            });
        }
    }
    Ok(out)
}

/// Plans the image of `root`'s children. Compresses every block not yet in `cache` (in parallel)
/// and reports each job's input bytes through `progress` as it finishes (increments, not totals).
pub fn plan(
    root: &Node,
    opts: &SquashOptions,
    cache: &BlockCache,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ExtentMap, SquashError> {
    if !matches!(root.kind, NodeKind::Dir(_)) {
        return Err(SquashError::RootNotDirectory);
    }
    if !(12..=20).contains(&opts.block_log) {
        return Err(SquashError::BlockLog(opts.block_log));
    }
    let layout = layout(root, opts)?;
    let compressed = block::Compressed::default();
    // One job per split: rayon otherwise runs ranges of jobs as unsplittable leaves, and at the
    // end one core compressed a leaf of level-19 blocks for seconds while the others idled.
    let entries: Vec<Entry> = layout
        .jobs
        .par_iter()
        .with_max_len(1)
        .map(|job| {
            let e = job.plan(cache, &compressed)?;
            progress(job.raw_len() as u64);
            Ok(e)
        })
        .collect::<Result<_, SquashError>>()?;

    // Data offsets follow from the stored sizes, in job order.
    let mut offsets = Vec::with_capacity(entries.len());
    let mut pos = SUPERBLOCK_LEN as u64;
    for e in &entries {
        offsets.push(pos);
        pos += e.len;
    }
    let data_end = pos;

    let mut fragment_table = Vec::with_capacity(16 * layout.fragment_jobs.len());
    for &j in &layout.fragment_jobs {
        fragment_table.extend_from_slice(&offsets[j].to_le_bytes()); // 0 start
        fragment_table.extend_from_slice(&block::size_word(&entries[j]).to_le_bytes()); // 8 size
        fragment_table.extend_from_slice(&0u32.to_le_bytes()); // 12 unused
    }

    let mut w = TreeWriter {
        opts,
        files: &layout.files,
        entries: &entries,
        offsets: &offsets,
        next_file: 0,
        next_number: 2,
        inodes: MetaWriter::new(opts.compression),
        dirs: MetaWriter::new(opts.compression),
    };
    let count = count_nodes(root);
    let count32 =
        u32::try_from(count).map_err(|_| unrepresentable(b"", "more than 2^32 inodes"))?;
    let root_inode = w.directory(root, b"", 1, count32 + 1, true)?;
    let inode_table = w.inodes.finish()?;
    // Inode references and directory headers hold a block's start in 32 bits.
    u32::try_from(inode_table.len()).map_err(|_| unrepresentable(b"", "inode table over 4 GiB"))?;
    let dir_table = w.dirs.finish()?;

    let inode_at = data_end;
    let dir_at = inode_at + inode_table.len() as u64;
    let frag_at = dir_at + dir_table.len() as u64;
    let (frag_bytes, frag_index_at) =
        meta::lookup_table(&fragment_table, frag_at, opts.compression)?;
    let id_at = frag_at + frag_bytes.len() as u64;
    let (id_bytes, id_index_at) = meta::lookup_table(&0u32.to_le_bytes(), id_at, opts.compression)?;
    let bytes_used = id_at + id_bytes.len() as u64;

    let mut flags = FLAG_NO_XATTRS;
    if layout.fragment_jobs.is_empty() {
        flags |= FLAG_NO_FRAGMENTS;
    }
    if opts.compression == Compression::None {
        flags |= FLAG_UNCOMPRESSED_INODES
            | FLAG_UNCOMPRESSED_DATA
            | FLAG_UNCOMPRESSED_FRAGMENTS
            | FLAG_UNCOMPRESSED_IDS;
    }
    let sb = Superblock {
        inode_count: count32,
        mkfs_time: time32(opts.mtime, b"")?,
        block_log: opts.block_log as u16,
        fragment_count: layout.fragment_jobs.len() as u32,
        flags,
        root_inode,
        bytes_used,
        id_table: id_index_at,
        inode_table: inode_at,
        directory_table: dir_at,
        fragment_table: frag_index_at,
    };

    let mut b = Builder::new();
    b.bytes("squashfs superblock", sb.encode());
    for (spec, entry) in layout.jobs.into_iter().zip(entries) {
        if entry.len == 0 {
            continue;
        }
        let label = spec.what.clone();
        b.chunk(
            &label,
            Arc::new(DataBlock {
                spec,
                entry,
                cache: cache.clone(),
            }),
        );
    }
    b.bytes("squashfs inode table", inode_table);
    b.bytes("squashfs directory table", dir_table);
    b.bytes("squashfs fragment table", frag_bytes);
    b.bytes("squashfs id table", id_bytes);
    b.pad_to("squashfs padding", 4096);
    Ok(b.finish())
}

fn count_nodes(n: &Node) -> u64 {
    1 + n.children().iter().map(count_nodes).sum::<u64>()
}

fn unrepresentable(path: &[u8], what: &str) -> SquashError {
    SquashError::Unrepresentable {
        path: path_str(path),
        what: what.into(),
    }
}

fn time32(t: i64, path: &[u8]) -> Result<u32, SquashError> {
    u32::try_from(t).map_err(|_| unrepresentable(path, &format!("time {t} does not fit 32 bits")))
}

struct TreeWriter<'a> {
    opts: &'a SquashOptions,
    files: &'a [FilePlan],
    entries: &'a [Entry],
    offsets: &'a [u64],
    /// Files are met in the same depth-first order `layout` listed them.
    next_file: usize,
    next_number: u32,
    inodes: MetaWriter,
    dirs: MetaWriter,
}

impl TreeWriter<'_> {
    /// Writes `node`'s subtree, its listing and its inode; returns the inode reference.
    fn directory(
        &mut self,
        node: &Node,
        path: &[u8],
        number: u32,
        parent: u32,
        is_root: bool,
    ) -> Result<u64, SquashError> {
        let children = node.children();
        if children.windows(2).any(|w| w[0].name >= w[1].name) {
            return Err(unrepresentable(
                path,
                "directory entries not sorted and unique",
            ));
        }
        let first = self.next_number;
        self.next_number = u32::try_from(children.len())
            .ok()
            .and_then(|n| first.checked_add(n))
            .ok_or_else(|| unrepresentable(path, "too many inodes"))?;
        let mut entries = Vec::with_capacity(children.len());
        let mut subdirs = 0u32;
        for (i, child) in children.iter().enumerate() {
            let child_path = if path.is_empty() {
                child.name.clone()
            } else {
                [path, b"/", &child.name].concat()
            };
            if child.name.is_empty() || child.name.len() > 256 || child.name.contains(&b'/') {
                return Err(unrepresentable(&child_path, "invalid file name"));
            }
            let n = first + i as u32;
            let (kind, r) = match &child.kind {
                NodeKind::Dir(_) => {
                    subdirs += 1;
                    (
                        inode::BASIC_DIR,
                        self.directory(child, &child_path, n, number, false)?,
                    )
                }
                NodeKind::File(content) => (
                    inode::BASIC_FILE,
                    self.file(child, content, &child_path, n)?,
                ),
                NodeKind::Symlink(target) => {
                    let r = self.inodes.reference();
                    let bytes = inode::symlink(
                        mode16(child),
                        time32(child.meta.mtime, &child_path)?,
                        n,
                        target,
                    );
                    self.inodes.write(&bytes)?;
                    (inode::BASIC_SYMLINK, r)
                }
            };
            entries.push(dir::DirEntry {
                name: &child.name,
                kind,
                number: n,
                inode: r,
            });
        }
        let listing = dir::listing(&entries);
        let size = u32::try_from(listing.bytes.len() + 3)
            .map_err(|_| unrepresentable(path, "directory listing over 4 GiB"))?;
        let (block, offset) = self.dirs.position();
        let first_block = self.dirs.blocks_cut();
        self.dirs.write(&listing.bytes)?;
        // Every block the listing touched starts at or before the table's end so far.
        u32::try_from(self.dirs.position().0)
            .map_err(|_| unrepresentable(path, "directory table over 4 GiB"))?;
        let index = dir::index(&listing, offset, |n| {
            self.dirs.block_start(first_block + n) as u32
        });
        // The extended directory inode counts its index entries in 16 bits.
        u16::try_from(index.len())
            .map_err(|_| unrepresentable(path, "directory listing over 512 MiB"))?;
        let r = self.inodes.reference();
        let d = inode::DirInode {
            mode: if is_root { 0o755 } else { mode16(node) },
            mtime: time32(node.meta.mtime, path)?,
            number,
            parent,
            links: subdirs + 2,
            block: block as u32,
            offset,
            size,
            index,
        };
        self.inodes.write(&inode::dir(&d))?;
        Ok(r)
    }

    fn file(
        &mut self,
        node: &Node,
        content: &ExtentMap,
        path: &[u8],
        number: u32,
    ) -> Result<u64, SquashError> {
        let plan = &self.files[self.next_file];
        self.next_file += 1;
        let jobs = plan.first_job..plan.first_job + plan.blocks;
        let words: Vec<u32> = self.entries[jobs.clone()]
            .iter()
            .map(block::size_word)
            .collect();
        let block_size = 1u64 << self.opts.block_log;
        let sparse = self.entries[jobs.clone()]
            .iter()
            .filter(|e| e.tag == block::TAG_SPARSE)
            .count() as u64
            * block_size;
        let fragment = match plan.fragment {
            Some((f, off)) => Some((
                u32::try_from(f).map_err(|_| unrepresentable(path, "too many fragments"))?,
                off,
            )),
            None => None,
        };
        let bytes = inode::file(&inode::FileInode {
            mode: mode16(node),
            mtime: time32(node.meta.mtime, path)?,
            number,
            blocks_start: self
                .offsets
                .get(jobs.start)
                .copied()
                .filter(|_| plan.blocks > 0)
                .unwrap_or(0),
            size: content.size(),
            fragment,
            words: &words,
            sparse,
        });
        let r = self.inodes.reference();
        self.inodes.write(&bytes)?;
        Ok(r)
    }
}

fn mode16(n: &Node) -> u16 {
    (n.meta.mode & 0o7777) as u16
}
