//! Files that appear under their final name only when complete.
//!
//! A staged file is written to a temporary next to its destination, named for this process and
//! call (`.<name>.<pid>.<n>.part`) and created exclusively, so two writers of the same destination
//! (two `isofs build`s into one `--out`, a mount and a build sharing a cache) never write into one
//! file; it is synced and renamed over the destination, and removed if it is dropped uncommitted.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Temporaries being written, for [`remove_on_signal`].
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

fn forget(tmp: &Path) {
    live().retain(|t| t != tmp);
}

/// From now on, Ctrl-C, SIGTERM or SIGHUP ends the process only after removing the temporaries
/// being written (a partial multi-GiB ISO on a Ventoy stick, say). The process then dies *of* the
/// signal, so a shell loop stops on Ctrl-C and systemd sees a clean stop. Signals the caller set
/// to be ignored (`nohup`, background jobs of scripts) stay ignored. Nothing under a final name is
/// touched: a commit renames first.
pub fn remove_on_signal() -> io::Result<()> {
    let wanted: Vec<i32> = [SIGINT, SIGTERM, SIGHUP]
        .into_iter()
        .filter(|&s| !ignored(s))
        .collect();
    let mut signals = Signals::new(&wanted)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                for tmp in live().drain(..) {
                    let _ = std::fs::remove_file(tmp);
                }
                eprintln!("\nisofs: interrupted (signal {signal}); partial files removed");
                let _ = signal_hook::low_level::emulate_default_handler(signal);
                std::process::exit(128 + signal);
            }
        })?;
    Ok(())
}

/// Whether `signal` is set to be ignored (inherited `SIG_IGN`).
fn ignored(signal: i32) -> bool {
    // SAFETY: a null new action only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

pub struct Staged {
    /// `None` once committed.
    file: Option<File>,
    tmp: PathBuf,
    dest: PathBuf,
}

impl Staged {
    /// A fresh temporary for `dest`, in `dest`'s directory (created if missing). Temporaries of
    /// `dest` left by writers that died (Ctrl-C, `kill -9`, a crash) are removed first, so an
    /// interrupted multi-GiB write does not stay behind for every retry.
    pub fn create(dest: &Path) -> io::Result<Staged> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let dir = dest.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let name = dest.file_name().unwrap_or_default().to_string_lossy();
        remove_dead_temporaries(dir, &name);
        let tmp = dir.join(format!(
            ".{name}.{}.{}.part",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", tmp.display())))?;
        live().push(tmp.clone());
        Ok(Staged {
            file: Some(file),
            tmp,
            dest: dest.to_path_buf(),
        })
    }

    /// Where the bytes go until [`commit`](Self::commit); for messages.
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("not committed")
    }

    /// Syncs the bytes and renames them over the destination.
    pub fn commit(mut self) -> io::Result<()> {
        self.file().sync_all()?;
        std::fs::rename(&self.tmp, &self.dest)?;
        self.file = None;
        forget(&self.tmp);
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
            forget(&self.tmp);
        }
    }
}

/// Removes `.<name>.<pid>.<n>.part` in `dir` whose writer process no longer exists.
fn remove_dead_temporaries(dir: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{name}.");
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(pid) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|f| f.strip_suffix(".part"))
            .and_then(|f| f.split_once('.'))
            .and_then(|(pid, n)| n.parse::<u64>().ok().and(pid.parse::<libc::pid_t>().ok()))
        else {
            continue;
        };
        // SAFETY: signal 0 only asks whether the process exists.
        let gone = pid > 0
            && unsafe { libc::kill(pid, 0) } != 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// `dest` holding `bytes`, staged.
pub fn write(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut s = Staged::create(dest)?;
    s.file().write_all(bytes)?;
    s.commit()
}

/// Makes renames into `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn two_writers_never_share_a_temporary() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("x.iso");
        let mut a = Staged::create(&dest).unwrap();
        let mut b = Staged::create(&dest).unwrap();
        assert_ne!(a.tmp_path(), b.tmp_path());
        a.file().write_all(b"aaaa").unwrap();
        b.file().write_all(b"bb").unwrap();
        a.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"aaaa");
        let leftover = b.tmp_path().to_path_buf();
        drop(b);
        assert!(!leftover.exists());
        assert_eq!(std::fs::read(&dest).unwrap(), b"aaaa");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    /// A writer that died leaves its temporary; the next writer of the same file removes it, and
    /// leaves a live writer's (and other files') alone.
    #[test]
    fn temporaries_of_dead_writers_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("x.iso");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let dead_tmp = d.path().join(format!(".x.iso.{dead}.0.part"));
        let live_tmp = d
            .path()
            .join(format!(".x.iso.{}.99.part", std::process::id()));
        let other = d.path().join(format!(".y.iso.{dead}.0.part"));
        for p in [&dead_tmp, &live_tmp, &other] {
            std::fs::write(p, b"partial").unwrap();
        }
        let s = Staged::create(&dest).unwrap();
        assert!(!dead_tmp.exists());
        assert!(live_tmp.exists() && other.exists());
        drop(s);
    }
}
