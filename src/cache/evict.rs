//! Size accounting and least-recently-used eviction of the on-disk entries.
//!
//! "Recently used" is an entry's mtime: written when the entry is created, bumped by a hit (at most
//! once a minute per entry). Ties are broken by name so that an order is always defined.
//!
//! Safe with other processes using the directory: a scan only lists, an eviction only unlinks whole
//! entries. A reader that had the entry open keeps reading the unlinked file; one that opens it
//! afterwards finds nothing and recomputes. Temporary files of writes in flight are left alone
//! unless they are old enough to be leftovers of a crashed process.

use super::BlockCache;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

/// A temporary file untouched for this long belongs to no live write.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// What one [`BlockCache::evict_to`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvictStats {
    pub removed_entries: u64,
    pub removed_bytes: u64,
    pub kept_entries: u64,
    pub kept_bytes: u64,
    /// Leftover temporary files of crashed writers, removed.
    pub stale_temporaries: u64,
}

struct Found {
    mtime: SystemTime,
    name: String,
    path: PathBuf,
    bytes: u64,
}

impl BlockCache {
    /// Entries and their bytes (file sizes, header included) in the directory now.
    pub fn disk_usage(&self) -> (u64, u64) {
        let Some(dir) = self.dir() else {
            return (0, 0);
        };
        let found = scan(dir, false).0;
        (found.len() as u64, found.iter().map(|f| f.bytes).sum())
    }

    /// Deletes least recently used entries until the rest take at most `max_bytes`. Best effort:
    /// an entry that cannot be deleted is counted as kept.
    pub fn evict_to(&self, max_bytes: u64) -> EvictStats {
        let Some(dir) = self.dir() else {
            return EvictStats::default();
        };
        let (mut found, stale_temporaries) = scan(dir, true);
        found.sort_by(|a, b| (a.mtime, &a.name).cmp(&(b.mtime, &b.name)));
        let mut total: u64 = found.iter().map(|f| f.bytes).sum();
        let mut stats = EvictStats {
            stale_temporaries,
            ..EvictStats::default()
        };
        for f in &found {
            if total <= max_bytes {
                break;
            }
            let gone = match fs::remove_file(&f.path) {
                Ok(()) => true,
                // Another process evicted it first, which is as good.
                Err(e) => e.kind() == std::io::ErrorKind::NotFound,
            };
            if gone {
                total -= f.bytes;
                stats.removed_entries += 1;
                stats.removed_bytes += f.bytes;
            }
        }
        stats.kept_bytes = total;
        stats.kept_entries = found.len() as u64 - stats.removed_entries;
        self.inner.usage.store(total, Ordering::Relaxed);
        self.inner
            .counters
            .evicted
            .fetch_add(stats.removed_entries, Ordering::Relaxed);
        if stats.removed_entries > 0 {
            tracing::debug!(
                "block cache {}: evicted {} entries ({} bytes), kept {} bytes",
                dir.display(),
                stats.removed_entries,
                stats.removed_bytes,
                total
            );
        }
        stats
    }
}

/// The entries under `dir`: blocks (`<2 hex>/<64 hex>`) and compressed images
/// (`zst/<64 hex>-<level>.zst-entry`); and how many stale temporaries (of blocks, images and digest
/// records) were removed when `clean` is set. Anything else in the directory is not ours to count
/// or delete.
fn scan(dir: &Path, clean: bool) -> (Vec<Found>, u64) {
    let mut found = Vec::new();
    let mut stale = 0;
    let Ok(top) = fs::read_dir(dir) else {
        return (found, stale);
    };
    for sub in top.flatten() {
        if !sub.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let is_entry: fn(&str) -> bool = match sub.file_name().to_str() {
            Some(n) if n.len() == 2 && n.bytes().all(is_lower_hex) => is_block_name,
            Some("zst") => is_zst_name,
            // Digest records are a few bytes each, and a missing one costs a whole hashing pass.
            Some("digests") => |_| false,
            _ => continue,
        };
        scan_dir(&sub.path(), clean, is_entry, &mut found, &mut stale);
    }
    (found, stale)
}

fn scan_dir(
    dir: &Path,
    clean: bool,
    is_entry: fn(&str) -> bool,
    found: &mut Vec<Found>,
    stale: &mut u64,
) {
    let now = SystemTime::now();
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(meta) = e.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let Some(name) = e.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        // Block writes use `.tmp-<pid>-<n>`, images and digest records `staged` temporaries.
        if name.starts_with(".tmp-") || (name.starts_with('.') && name.ends_with(".part")) {
            let old = now.duration_since(mtime).unwrap_or_default() >= STALE_TMP;
            if clean && old && fs::remove_file(e.path()).is_ok() {
                *stale += 1;
            }
            continue;
        }
        if is_entry(&name) {
            found.push(Found {
                mtime,
                path: e.path(),
                name,
                bytes: meta.len(),
            });
        }
    }
}

fn is_block_name(n: &str) -> bool {
    n.len() == 64 && n.bytes().all(is_lower_hex)
}

/// `<64 hex>-<level>.zst-entry` ([`crate::compressed::cache_path`]).
fn is_zst_name(n: &str) -> bool {
    n.strip_suffix(".zst-entry")
        .and_then(|s| s.split_once('-'))
        .is_some_and(|(fp, level)| {
            is_block_name(fp) && !level.is_empty() && level.bytes().all(|b| b.is_ascii_digit())
        })
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}
