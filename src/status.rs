//! `isofs status`: the cache's size and hit rate, and what each host's last plan was.
//!
//! A plan record (`<cache>/plans/<settings>-<host>.json`, `<settings>` naming the flake and the
//! other settings that shape the image: one cache may serve several flakes and configurations) is
//! written after every successful plan; it names the image and
//! its fingerprint, so status can say whether the sidecar digest is already known without planning
//! (which, on a cold cache, would compress the whole closure).

use crate::digest::DigestCache;
use crate::image::{HostImage, Planner};
use crate::inputs::settings::{ManifestSource, Settings};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlanRecord {
    pub iso_name: String,
    pub size: u64,
    pub fingerprint: String,
}

/// `<cache>/plans/<settings>-<host>.json`: one record per host and per set of settings that shape
/// the image (the flake and store as resolved, so `dir` and `dir/` are one, manifests, templates,
/// compression, default entry, dates), so a status with other flags does not show another
/// configuration's plan as if it were this one's.
fn record_path(s: &Settings, host: &str) -> PathBuf {
    let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let manifests = match &s.manifests {
        ManifestSource::Dir(d) => real(d),
        ManifestSource::Nix(_) => PathBuf::from("(derived with nix)"),
    };
    let mut h = Sha256::new();
    for part in [
        real(&s.flake).into_os_string(),
        manifests.into_os_string(),
        real(&s.store.0).into_os_string(),
        s.templates
            .as_deref()
            .map(real)
            .unwrap_or_default()
            .into_os_string(),
        s.compression.to_string().into(),
        format!("{:?} {}", s.default_entry, s.epoch).into(),
    ] {
        h.update(part.as_encoded_bytes());
        h.update([0]);
    }
    s.cache
        .join("plans")
        .join(format!("{}-{host}.json", hex::encode(&h.finalize()[..8])))
}

/// Remembers `image` as `host`'s last plan with settings `s`; best effort (a read-only cache just
/// forgets).
pub fn record(s: &Settings, image: &HostImage) {
    let rec = PlanRecord {
        iso_name: image.iso_name.clone(),
        size: image.map.size(),
        fingerprint: hex::encode(image.fingerprint),
    };
    let path = record_path(s, &image.host);
    // The plan this one replaces will not be served again unless its inputs come back: its
    // image-sized `.zst` goes now rather than waiting for the cache cap, unless another record
    // (another flake or configuration with the very same image) still names it.
    let replaced = read_record(&path).filter(|old| old.fingerprint != rec.fingerprint);
    if let Some(old) = replaced.filter(|old| !named_elsewhere(&path, &old.fingerprint)) {
        if let Ok(Ok(fp)) = hex::decode(&old.fingerprint).map(<[u8; 32]>::try_from) {
            crate::compressed::retire(&s.cache, &fp);
        }
    }
    let json = serde_json::to_vec_pretty(&rec).expect("plain struct");
    if let Err(e) = crate::staged::write(&path, &json) {
        tracing::debug!("{}: plan record not written: {e}", path.display());
    }
}

/// Whether a plan record beside `path` names `fingerprint`.
fn named_elsewhere(path: &Path, fingerprint: &str) -> bool {
    let plans = path.parent().unwrap_or(Path::new("."));
    std::fs::read_dir(plans)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path() != path)
        .any(|e| read_record(&e.path()).is_some_and(|r| r.fingerprint == fingerprint))
}

fn read_record(path: &Path) -> Option<PlanRecord> {
    serde_json::from_slice(&crate::regular_file::read(path).ok()?).ok()
}

fn last_plan(s: &Settings, host: &str) -> Option<PlanRecord> {
    read_record(&record_path(s, host))
}

/// The text `isofs status` prints; `cap` is the configured `--cache-max`.
pub fn report(planner: &Planner, cap: Option<u64>) -> String {
    let s = &planner.settings;
    let mut out = String::new();
    let (entries, bytes) = planner.cache.disk_usage();
    let stats = planner.cache.persisted_stats();
    let _ = writeln!(out, "cache       {}", s.cache.display());
    let _ = writeln!(
        out,
        "blocks      {entries} entries, {:.1} MiB{}",
        bytes as f64 / (1 << 20) as f64,
        cap.map(|m| format!(" (cap {})", human_size(m)))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "hit rate    {} ({} hits, {} misses, {} blocks compressed, all runs)",
        stats
            .hit_rate()
            .map(|r| format!("{:.1}%", r * 100.0))
            .unwrap_or_else(|| "n/a".into()),
        stats.hits,
        stats.misses,
        stats.compressed
    );
    let digests = DigestCache::new(&s.cache);
    for host in &s.hosts {
        let line = match planner.manifest(host) {
            Err(e) => format!("manifest error: {e}"),
            Ok((m, vol)) => match last_plan(s, host) {
                None => format!("{}  {vol}  not planned yet", m.iso_name()),
                Some(r) => {
                    let digest = hex::decode(&r.fingerprint)
                        .ok()
                        .and_then(|f| <[u8; 32]>::try_from(f).ok())
                        .and_then(|f| digests.get(&f))
                        .map(|d| format!("sha256 {}", hex::encode(d)))
                        .unwrap_or_else(|| "sha256 not computed yet".into());
                    format!(
                        "{}  {vol}  last plan {} bytes, fingerprint {}…, {digest}",
                        r.iso_name,
                        r.size,
                        r.fingerprint.get(..12).unwrap_or(&r.fingerprint)
                    )
                }
            },
        };
        let _ = writeln!(out, "host {host:<12} {line}");
    }
    out
}

/// `512.0 MiB`, `10.0 GiB`: the unit that keeps the figure readable.
fn human_size(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}
