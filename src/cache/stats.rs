//! Counters kept across runs in `<dir>/stats`, so that `isofs status` can show a hit rate.
//!
//! The file is text, one `name value` per line after a version line:
//! ```text
//! isofs-cache-stats 1
//! hits 1234
//! misses 56
//! compressed 56
//! loads 789
//! ```
//! Each process adds what it counted since its last flush: under an exclusive lock on
//! `<dir>/.stats.lock` it reads the file, adds, writes a temporary file and renames it into place,
//! so a reader sees an old or a new file, never a torn one. Unknown lines are ignored and an
//! unreadable file counts as zeros: the counters are a report, never an input to the bytes.

use super::Counters;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

const FILE: &str = "stats";
const LOCK: &str = ".stats.lock";
const VERSION_LINE: &str = "isofs-cache-stats 1";

/// Counters summed over every run that used the directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PersistedStats {
    /// Plan-time lookups answered by an entry.
    pub hits: u64,
    /// Plan-time lookups that found nothing usable.
    pub misses: u64,
    /// Blocks compressed.
    pub compressed: u64,
    /// Payloads read back from disk (mount reads, builds).
    pub loads: u64,
}

impl PersistedStats {
    /// The counters persisted in `dir` (zeros when there are none yet).
    pub fn read(dir: &Path) -> PersistedStats {
        crate::regular_file::read_to_string(&dir.join(FILE))
            .map(|s| Self::parse(&s))
            .unwrap_or_default()
    }

    /// Hits over lookups, if there were any lookups.
    pub fn hit_rate(&self) -> Option<f64> {
        let lookups = self.hits + self.misses;
        (lookups > 0).then(|| self.hits as f64 / lookups as f64)
    }

    fn parse(s: &str) -> PersistedStats {
        let mut lines = s.lines();
        let mut out = PersistedStats::default();
        if lines.next() != Some(VERSION_LINE) {
            return out;
        }
        for line in lines {
            let Some((name, value)) = line.split_once(' ') else {
                continue;
            };
            let Ok(v) = value.parse::<u64>() else {
                continue;
            };
            match name {
                "hits" => out.hits = v,
                "misses" => out.misses = v,
                "compressed" => out.compressed = v,
                "loads" => out.loads = v,
                _ => {}
            }
        }
        out
    }

    fn encode(&self) -> String {
        format!(
            "{VERSION_LINE}\nhits {}\nmisses {}\ncompressed {}\nloads {}\n",
            self.hits, self.misses, self.compressed, self.loads
        )
    }

    fn plus(&self, d: &PersistedStats) -> PersistedStats {
        PersistedStats {
            hits: self.hits.saturating_add(d.hits),
            misses: self.misses.saturating_add(d.misses),
            compressed: self.compressed.saturating_add(d.compressed),
            loads: self.loads.saturating_add(d.loads),
        }
    }

    fn minus(&self, d: &PersistedStats) -> PersistedStats {
        PersistedStats {
            hits: self.hits - d.hits,
            misses: self.misses - d.misses,
            compressed: self.compressed - d.compressed,
            loads: self.loads - d.loads,
        }
    }
}

/// Adds `counters` minus what `flushed` says was already added. Failures are logged at debug level
/// and retried at the next flush.
pub(super) fn flush(dir: &Path, counters: &Counters, flushed: &Mutex<PersistedStats>) {
    let mut flushed = flushed.lock().unwrap_or_else(|p| p.into_inner());
    let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let now = PersistedStats {
        hits: g(&counters.hits),
        misses: g(&counters.misses),
        compressed: g(&counters.compressed),
        loads: g(&counters.loads),
    };
    let delta = now.minus(&flushed);
    if delta == PersistedStats::default() {
        return;
    }
    match add(dir, &delta) {
        Ok(()) => *flushed = now,
        Err(e) => tracing::debug!("cannot update {}: {e}", dir.join(FILE).display()),
    }
}

fn add(dir: &Path, delta: &PersistedStats) -> std::io::Result<()> {
    // Not waiting for a reader should the lock be a fifo.
    use std::os::unix::fs::OpenOptionsExt;
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(dir.join(LOCK))?;
    lock.lock()?;
    let total = PersistedStats::read(dir).plus(delta);
    let tmp = dir.join(format!(".stats.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(total.encode().as_bytes())?;
        drop(f);
        fs::rename(&tmp, dir.join(FILE))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
