//! What `isofs mount` shows: every host's ISO, its `.sha256` sidecar, `SHA256SUMS`, (with
//! `--ventoy`) `ventoy/ventoy.json` and (with `--compress-image`) `<name>.iso.zst`, each backed by
//! the same plans `isofs build` writes.
//!
//! Names are known from the manifests, so the tree exists at once; each ISO is planned on its own
//! thread and only readers of that ISO wait for it.

use crate::compressed::{self, CompressedImage};
use crate::digest::{DigestCache, Fingerprint, LazyDigest, Sidecar, Sums};
use crate::extent::ExtentMap;
use crate::image::{self, PlanError, Planner};
use crate::ventoy::{ventoy_json, VentoyImage};
use crate::vfs::{Pending, Vfs, VirtualFile};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Names and validated manifests of the hosts to serve, gathered before the daemon detaches so bad
/// input fails the `isofs mount` command itself.
pub struct Served {
    pub hosts: Vec<ServedHost>,
}

pub struct ServedHost {
    pub host: String,
    pub iso_name: String,
    pub release: String,
    pub minimal: bool,
}

impl Served {
    /// FUSE worker threads for this tree: every file that may wait (each host's ISO for its plan,
    /// its sidecar and `.zst` for a hash or a compression, SHA256SUMS for all of them) can hold
    /// one, and four more keep the listing and finished files answering meanwhile.
    pub fn threads(&self) -> usize {
        3 * self.hosts.len() + 1 + 4
    }

    pub fn check(planner: &Planner) -> Result<Served, image::PlanError> {
        let hosts = planner
            .targets()?
            .iter()
            .map(|h| {
                let (m, _) = planner.manifest(h)?;
                Ok(ServedHost {
                    host: h.clone(),
                    iso_name: m.iso_name(),
                    release: m.release.clone(),
                    minimal: m.is_minimal(),
                })
            })
            .collect::<Result<_, image::PlanError>>()?;
        Ok(Served { hosts })
    }
}

/// Builds the tree and starts one planner thread per host. Runs inside the daemon (after it forked).
/// With `compress_image`, each ISO also shows as `<name>.iso.zst`, compressed on first access.
pub fn build_vfs(
    planner: Planner,
    served: &Served,
    ventoy: bool,
    compress_image: bool,
) -> anyhow::Result<Vfs> {
    let planner = Arc::new(planner);
    let digests = Arc::new(DigestCache::new(&planner.settings.cache));
    let mut vfs = Vfs::new();
    let mut sums = Vec::new();
    for h in &served.hosts {
        let pending = Arc::new(Pending::new());
        vfs.add_file(&h.iso_name, pending.clone())?;
        // The planner computed the fingerprint with the plan; readers wait for the plan, then take it.
        let fp = Arc::new(OnceLock::new());
        let fingerprint = || -> Fingerprint {
            let (pending, fp) = (pending.clone(), fp.clone());
            Box::new(move || {
                pending.wait()?;
                Ok(*fp.get().expect("set before the plan is published"))
            })
        };
        let digest = LazyDigest::new(pending.clone(), fingerprint(), digests.clone());
        vfs.add_file(
            &format!("{}.sha256", h.iso_name),
            Arc::new(Sidecar::new(&h.iso_name, digest.clone())),
        )?;
        sums.push((h.iso_name.clone(), digest));
        if compress_image {
            vfs.add_file(
                &format!("{}.zst", h.iso_name),
                Arc::new(CompressedImage::new(
                    pending.clone(),
                    fingerprint(),
                    &planner.settings.cache,
                    compressed::LEVEL,
                )),
            )?;
        }
        spawn_planner(planner.clone(), h.host.clone(), pending, fp);
    }
    vfs.add_file("SHA256SUMS", Arc::new(Sums::new(sums)))?;
    if ventoy {
        let images: Vec<_> = served
            .hosts
            .iter()
            .map(|h| VentoyImage {
                iso_name: &h.iso_name,
                host: &h.host,
                release: &h.release,
                minimal: h.minimal,
            })
            .collect();
        let json: Arc<dyn VirtualFile> = Arc::new(ExtentMap::from_bytes(
            "ventoy.json",
            ventoy_json(&images).into_bytes(),
        ));
        vfs.add_file("ventoy/ventoy.json", json)?;
    }
    Ok(vfs)
}

fn spawn_planner(
    planner: Arc<Planner>,
    host: String,
    pending: Arc<Pending>,
    fingerprint: Arc<OnceLock<[u8; 32]>>,
) {
    let on_failure = pending.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("plan-{host}"))
        .spawn(move || {
            let started = Instant::now();
            tracing::info!("{host}: planning");
            // A daemon has no terminal: progress goes to the log, every tenth of the input, once
            // planning has taken a second (a plan from a warm cache needs no progress report).
            let done = AtomicU64::new(0);
            // A panic would leave every lookup of this host's files waiting forever: it becomes
            // this host's planning error instead.
            let planned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                planner.plan(&host, &|n, total| {
                    let total = total.max(1);
                    let before = done.fetch_add(n, Ordering::Relaxed);
                    let (a, b) = (before * 10 / total, (before + n) * 10 / total);
                    if b > a && started.elapsed() >= Duration::from_secs(1) {
                        tracing::info!("{host}: planning {}%", (b * 10).min(100));
                    }
                })
            }));
            let result = planned.unwrap_or_else(|p| {
                let what = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(PlanError::Format(format!("planner panicked: {what}")))
            });
            match &result {
                Ok(img) => tracing::info!(
                    "{host}: {} planned ({} bytes) in {:.1} s",
                    img.iso_name,
                    img.map.size(),
                    started.elapsed().as_secs_f64()
                ),
                Err(e) => tracing::error!("{host}: planning failed: {e}"),
            }
            pending.set(
                result
                    .map(|i| {
                        fingerprint.get_or_init(|| i.fingerprint);
                        i.map
                    })
                    .map_err(|e| e.to_string()),
            );
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start a planner thread: {e}");
        on_failure.set(Err(format!("cannot start a planner thread: {e}")));
    }
}
