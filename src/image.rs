//! One host's installer ISO, planned: the three inputs in, one [`ExtentMap`] out.
//!
//! The ISO tree mirrors nixpkgs' installer image (see `shared/format-notes.md`); the squashfs holds the
//! closure; the FAT `efi.img` and the menus are rendered per host; the hybrid MBR/GPT is decided last,
//! once the ISO layout has fixed every LBA.

use crate::boot::{DefaultEntry, MenuInput, TemplateError, Templates};
use crate::cache::BlockCache;
use crate::extent::{ExtentMap, InputFile, ReadError, Source};
use crate::inputs::manifest::{Manifest, StoreRoot, MINIMAL};
use crate::inputs::settings::Settings;
use crate::inputs::InputError;
use crate::tree::{self, InsertError, Meta, Node, Replace, WalkOptions};
use crate::{efi, hybrid, iso9660, squashfs};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Nix store timestamps are 1; every file isofs takes from an input gets it.
pub const STORE_MTIME: i64 = 1;
const ISOLINUX_BIN: &str = "isolinux/isolinux.bin";
const EFI_IMG: &str = "boot/efi.img";
/// isolinux.bin carries this at 0x40 when it can be booted from a hybrid MBR.
const ISOHYBRID_SIGNATURE: [u8; 4] = [0xFB, 0xC0, 0x78, 0x70];

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("{0}")]
    Format(String),
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Nix failed for reasons of its own while deriving a manifest.
    #[error("{0}")]
    Nix(String),
}

impl From<crate::inputs::LoadError> for PlanError {
    fn from(e: crate::inputs::LoadError) -> Self {
        match e {
            crate::inputs::LoadError::Input(e) => PlanError::Input(e),
            crate::inputs::LoadError::Nix(m) => PlanError::Nix(m),
        }
    }
}

fn tree_err(e: InsertError) -> PlanError {
    PlanError::Format(format!("ISO tree: {e}"))
}

fn format_err(what: &str) -> impl FnOnce(String) -> PlanError + '_ {
    move |e| PlanError::Format(format!("{what}: {e}"))
}

/// A planned ISO and what names it.
#[derive(Debug, Clone)]
pub struct HostImage {
    pub host: String,
    pub iso_name: String,
    pub volume_id: String,
    pub map: Arc<ExtentMap>,
    /// Equal fingerprints mean equal bytes: keys cached digests.
    pub fingerprint: [u8; 32],
}

/// Everything shared by the hosts of one run.
pub struct Planner {
    pub settings: Settings,
    pub templates: Templates,
    pub flake: Node,
    pub cache: BlockCache,
}

impl Planner {
    pub fn new(settings: Settings) -> Result<Self, PlanError> {
        let templates = match &settings.templates {
            Some(dir) => {
                // A mistyped directory would otherwise give the built-in menus without a word.
                std::fs::read_dir(dir)
                    .map_err(|e| InputError::new(dir, format!("templates directory: {e}")))?;
                Templates::load(dir).map_err(|e| InputError::new(dir, e.to_string()))?
            }
            None => Templates::builtin(),
        };
        Ok(Planner {
            templates,
            flake: crate::inputs::flake::flake_tree(&settings.flake)?,
            cache: BlockCache::open_with_limit(&settings.cache, settings.cache_max),
            settings,
        })
    }

    /// What `build`, `hosts`, `mount` and `ventoy` serve: the selected hosts, then the generic
    /// minimal image when `minimal.json` exists in the manifests directory — unless `--hosts`
    /// narrowed the flake's hosts, which asks for those hosts only.
    pub fn targets(&self) -> Result<Vec<String>, PlanError> {
        let mut t = self.settings.hosts.clone();
        let narrowed = crate::inputs::flake::hosts(&self.settings.flake)? != t;
        if !narrowed
            && !t.iter().any(|h| h == MINIMAL)
            && self.settings.manifest_file(MINIMAL).is_file()
        {
            t.push(MINIMAL.to_string());
        }
        Ok(t)
    }

    /// Validates a host's manifest without planning anything.
    pub fn manifest(&self, host: &str) -> Result<(Manifest, String), PlanError> {
        let (m, file) = self.settings.load_manifest(host)?;
        let vol = m.volume_id(&file)?;
        Ok((m, vol))
    }

    /// Plans `host`. `progress(done, total)` is called as store bytes are compressed (or found in
    /// the cache): `done` is the increment, `total` the bytes the squashfs holds.
    pub fn plan(
        &self,
        host: &str,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<HostImage, PlanError> {
        let (m, volume_id) = self.manifest(host)?;
        let store = &self.settings.store;
        let epoch = self.settings.epoch;
        let store_root = squashfs_root(&m, store, &self.settings.manifest_file(host))?;
        let total = squashfs::input_bytes(&store_root);
        let squash = squashfs::plan(
            &store_root,
            &squashfs::SquashOptions {
                compression: self.settings.compression,
                block_log: 20,
                mtime: epoch,
            },
            &self.cache,
            &|done| progress(done, total),
        )
        .map_err(|e| PlanError::Format(format!("nix-store.squashfs: {e}")))?;

        let read = |field: &str, logical: &str| -> Result<Vec<u8>, PlanError> {
            let p = store.real(logical);
            crate::regular_file::read(&p).map_err(|e| {
                InputError::field(
                    &self.settings.manifest_file(host),
                    field,
                    format!("{}: {e}", p.display()),
                )
                .into()
            })
        };
        let isolinux_bin = read("syslinux", &format!("{}/isolinux.bin", m.syslinux))?;
        if isolinux_bin.get(0x40..0x44) != Some(&ISOHYBRID_SIGNATURE[..]) {
            return Err(InputError::field(
                &self.settings.manifest_file(host),
                "syslinux",
                "isolinux.bin lacks the isohybrid signature (FB C0 78 70 at 0x40): use syslinux's isolinux.bin",
            )
            .into());
        }
        let isohdpfx = read("syslinux", &format!("{}/isohdpfx.bin", m.syslinux))?;
        let bootx64 = read("grubEfi", &m.grub_efi)?;

        if m.is_minimal() && self.settings.default_entry == DefaultEntry::Autoinstall {
            tracing::info!(
                "{host}: a minimal image has no autoinstall entry (it installs no host); its menus \
                 boot install by default"
            );
        }
        let kernel_iso = format!("/boot/{}", m.kernel.trim_start_matches("/nix/store/"));
        let initrd_iso = format!("/boot/{}", m.initrd.trim_start_matches("/nix/store/"));
        let menu = MenuInput {
            host: &m.host,
            volume_id: &volume_id,
            release: &m.release,
            kernel: &kernel_iso,
            initrd: &initrd_iso,
            init: &m.init,
            kernel_params: &m.kernel_params,
            // A configured autoinstall default cannot apply to an image without that entry.
            default_entry: if m.is_minimal() {
                DefaultEntry::Install
            } else {
                self.settings.default_entry
            },
            minimal: m.is_minimal(),
        };
        let manifest_file = self.settings.manifest_file(host);
        let isolinux_cfg = self
            .templates
            .isolinux_cfg(&menu)
            .map_err(|e| menu_error(&manifest_file, e))?;
        let grub_cfg = self
            .templates
            .grub_cfg(&menu)
            .map_err(|e| menu_error(&manifest_file, e))?;
        let efi_img = efi::build(&bootx64, grub_cfg.as_bytes())
            .map_err(|e| format_err("efi.img")(e.to_string()))?;

        let file_meta = Meta::root(0o444, STORE_MTIME);
        let dir_meta = Meta::root(0o555, STORE_MTIME);
        let mut root = Node::dir("", dir_meta, Vec::new());
        let input = |logical: &str| -> Result<ExtentMap, PlanError> {
            let p = store.real(logical);
            let f = InputFile::open(&p).map_err(|e| InputError::new(&p, e.to_string()))?;
            Ok(ExtentMap::from_file(logical, f))
        };
        let generated = |name: &str, bytes: Vec<u8>| {
            Node::file(name, file_meta, ExtentMap::from_bytes(name, bytes))
        };
        // The files isofs generates under /boot go first: a kernel or initrd whose store name
        // would take one of their places is an error, not a silent swap.
        for (dir, node) in [
            ("boot", generated("efi.img", efi_img)),
            (
                "boot/grub",
                generated("loopback.cfg", self.templates.loopback_cfg().into_bytes()),
            ),
        ] {
            root.insert(dir, node, dir_meta, Replace::Yes)
                .map_err(tree_err)?;
        }
        for (field, logical, iso_path) in [
            ("kernel", &m.kernel, &kernel_iso),
            ("initrd", &m.initrd, &initrd_iso),
        ] {
            let (dir, name) = iso_path.rsplit_once('/').expect("has a slash");
            root.insert(
                dir,
                Node::file(name, file_meta, input(logical)?),
                dir_meta,
                Replace::No,
            )
            .map_err(|e| InputError::field(&manifest_file, field, e.to_string()))?;
        }
        let syslinux = tree::walk(
            &store.real(&m.syslinux),
            b"isolinux",
            &WalkOptions {
                mtime: STORE_MTIME,
                read_only: true,
                keep: None,
                skip_root_git: false,
            },
        )
        .map_err(|e| InputError::field(&manifest_file, "syslinux", e.to_string()))?;
        // In this order: isolinux.cfg replaces one the syslinux directory may ship.
        let mut rest = vec![
            ("", syslinux),
            (
                "isolinux",
                generated("isolinux.cfg", isolinux_cfg.into_bytes()),
            ),
            (
                "EFI/BOOT",
                Node::file("BOOTX64.EFI", file_meta, input(&m.grub_efi)?),
            ),
            ("EFI/BOOT", generated("grub.cfg", grub_cfg.into_bytes())),
            (
                "EFI",
                Node::file("nixos-installer-image", file_meta, ExtentMap::default()),
            ),
            ("", Node::file("nix-store.squashfs", file_meta, squash)),
            ("", generated("version.txt", m.release.clone().into_bytes())),
        ];
        // The generic image installs no particular host, so it carries no flake.
        if !m.is_minimal() {
            rest.push(("", self.flake.clone()));
        }
        for (dir, node) in rest {
            root.insert(dir, node, dir_meta, Replace::Yes)
                .map_err(tree_err)?;
        }

        let layout = iso9660::plan(
            &root,
            &iso9660::IsoOptions {
                volume_id: volume_id.clone(),
                application_id: "nixos".into(),
                publisher: "nixos".into(),
                timestamp: epoch,
                boot: Some(iso9660::BootOptions {
                    catalog_path: ".boot.cat".into(),
                    bios_image: ISOLINUX_BIN.into(),
                    efi_image: Some(EFI_IMG.into()),
                }),
                tail_bytes: hybrid::TAIL_BYTES,
            },
        )
        .map_err(|e| PlanError::Format(format!("ISO 9660: {e}")))?;
        let (isolinux_lba, _) = layout.file_extent(ISOLINUX_BIN).expect("planned above");
        let (efi_lba, efi_size) = layout.file_extent(EFI_IMG).expect("planned above");
        let hybrid_input = hybrid::HybridInput {
            isohdpfx: &isohdpfx,
            isolinux_lba,
            efi_lba,
            efi_size,
            total_size: layout.total_size(),
            volume_id: &volume_id,
        };
        let system_area =
            hybrid::system_area(&hybrid_input).map_err(|e| format_err("MBR/GPT")(e.to_string()))?;
        let tail =
            hybrid::tail(&hybrid_input).map_err(|e| format_err("backup GPT")(e.to_string()))?;
        let map = layout.finish(&system_area, &tail);
        let image = HostImage {
            host: host.to_string(),
            iso_name: m.iso_name(),
            volume_id,
            fingerprint: fingerprint(&map),
            map: Arc::new(map),
        };
        crate::status::record(&self.settings, &image);
        self.cache.flush_stats();
        Ok(image)
    }
}

/// Templates are checked when loaded, so a value a menu cannot hold came from the manifest: blame
/// the field it came from.
fn menu_error(manifest_file: &std::path::Path, e: TemplateError) -> PlanError {
    let field = match &e {
        TemplateError::BadValue { what, .. } => match *what {
            "kernel parameter" => "kernelParams",
            "kernel path" => "kernel",
            "initrd path" => "initrd",
            "init path" => "init",
            "volume ID" => "volumeID",
            other => other,
        },
        TemplateError::CommandLineTooLong(_) => "kernelParams",
        _ => return PlanError::Format(e.to_string()),
    };
    InputError::field(manifest_file, field, e.to_string()).into()
}

/// The squashfs root: one directory (or file) per store path, plus `nix-path-registration`.
fn squashfs_root(
    m: &Manifest,
    store: &StoreRoot,
    manifest_file: &std::path::Path,
) -> Result<Node, PlanError> {
    let opts = WalkOptions {
        mtime: STORE_MTIME,
        read_only: false,
        keep: None,
        skip_root_git: false,
    };
    let mut children = Vec::with_capacity(m.store_paths.len() + 1);
    for p in &m.store_paths {
        let name = p.trim_start_matches("/nix/store/");
        let node = tree::walk(&store.real(p), name.as_bytes(), &opts)
            .map_err(|e| InputError::field(manifest_file, "storePaths", e.to_string()))?;
        children.push(node);
    }
    if let Some(r) = &m.registration {
        let real = store.real(r);
        let f = InputFile::open(&real).map_err(|e| InputError::new(&real, e.to_string()))?;
        children.push(Node::file(
            "nix-path-registration",
            Meta::root(0o444, STORE_MTIME),
            ExtentMap::from_file(r, f),
        ));
    }
    Ok(Node::dir("", Meta::root(0o755, STORE_MTIME), children))
}

/// SHA-256 over what every extent is made of — never over file data, so it is cheap.
pub fn fingerprint(map: &ExtentMap) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"isofs-image-v1");
    h.update(map.size().to_le_bytes());
    for e in map.extents() {
        h.update(e.start.to_le_bytes());
        h.update(e.len.to_le_bytes());
        match &e.source {
            Source::Zero => h.update([0u8]),
            Source::Bytes(b, o) => {
                h.update([1u8]);
                h.update(Sha256::digest(&b[*o as usize..(*o + e.len) as usize]));
            }
            Source::File(f, o) => {
                h.update([2u8]);
                h.update(f.path.as_os_str().as_encoded_bytes());
                h.update([0u8]);
                for v in f.identity.words().into_iter().chain([*o]) {
                    h.update(v.to_le_bytes());
                }
            }
            Source::Chunk(c, o) => {
                h.update([3u8]);
                h.update(c.fingerprint());
                h.update(o.to_le_bytes());
            }
        }
    }
    h.finalize().into()
}

/// Where `offset` of a planned image comes from, for `isofs explain`.
pub fn explain(map: &ExtentMap, offset: u64) -> Option<String> {
    map.locate(offset)
        .map(|(e, inner)| format!("{}: {}", e.label, e.source.describe(inner)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// Fingerprints key cached sidecars: a store file rewritten in place (same name, size, inode
    /// and mtime 1) must change it, or a stale `.sha256` would be served for new bytes.
    #[test]
    fn fingerprint_sees_a_rewrite_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abcdef").unwrap();
        let one = std::fs::FileTimes::new()
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1));
        let open = || std::fs::File::options().write(true).open(&path).unwrap();
        open().set_times(one).unwrap();
        let map = || ExtentMap::from_file("f", InputFile::open(&path).unwrap());
        let before = fingerprint(&map());
        assert_eq!(fingerprint(&map()), before);
        std::thread::sleep(std::time::Duration::from_millis(20));
        open().write_all_at(b"ABCDEF", 0).unwrap();
        open().set_times(one).unwrap();
        assert_ne!(fingerprint(&map()), before);
    }
}
