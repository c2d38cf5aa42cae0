//! The fastest any isofs mount can stream on this machine: the real daemon (same fuser options,
//! worker threads, request size and readahead as `isofs mount`) serving one file whose bytes cost
//! nothing to produce (a copy from a buffer that stays in cache). `benches/mount-throughput.sh`
//! and `benches/compare.sh` dd it next to the real ISO, so the mount's first-read figure can be
//! read against what FUSE itself allows, not only against the page cache.
//!
//! usage: cargo bench --bench fuse_ceiling -- MOUNTPOINT SIZE_MIB
//! Serves in the foreground until unmounted or sent SIGINT/SIGTERM. Without arguments (as in a
//! plain `cargo bench`) it does nothing.

use std::path::Path;
use std::sync::Arc;

use isofs::daemon::{self, MountOptions};
use isofs::extent::ReadError;
use isofs::vfs::{Vfs, VirtualFile};

/// One whole maximum FUSE request's worth of pattern, so a read is a single copy.
const PATTERN_LEN: usize = 4 << 20;

struct Free {
    size: u64,
    pattern: Vec<u8>,
}

impl VirtualFile for Free {
    fn size(&self) -> Result<u64, ReadError> {
        Ok(self.size)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, ReadError> {
        let n = (buf.len() as u64).min(self.size.saturating_sub(offset)) as usize;
        let mut done = 0;
        while done < n {
            let at = (offset as usize + done) % PATTERN_LEN;
            let take = (n - done).min(PATTERN_LEN - at);
            buf[done..done + take].copy_from_slice(&self.pattern[at..at + take]);
            done += take;
        }
        Ok(n)
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [mountpoint, mib] = args.as_slice() else {
        return Ok(());
    };
    let size = mib.parse::<u64>()? << 20;
    let pattern = (0..PATTERN_LEN).map(|i| (i * 7 + i / 4096) as u8).collect();
    let opts = MountOptions {
        foreground: true,
        ..MountOptions::default()
    };
    daemon::mount(Path::new(mountpoint), &opts, || {
        let mut vfs = Vfs::new();
        vfs.add_file("free.bin", Arc::new(Free { size, pattern }))?;
        Ok(vfs)
    })
}
