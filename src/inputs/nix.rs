//! Host manifests derived by Nix itself, for when `--manifests` is not given and `nix` is on PATH.
//!
//! For host `h` the live system is `nixosConfigurations.iso-h`. Four commands, so that the NixOS
//! module system is evaluated only twice:
//!
//! 1. `nix build --no-link --print-out-paths FLAKE#nixosConfigurations.iso-h.config.system.build.toplevel`
//!    — the toplevel (an attribute path, so Nix's flake evaluation cache serves repeats);
//! 2. `nix eval --json FLAKE#nixosConfigurations.iso-h --apply FACTS` — everything else, read where
//!    nixpkgs' `iso-image.nix` reads it (see [`FACTS`]);
//! 3. `nix build --no-link --print-out-paths CLOSUREINFO.drv^out` — the `closureInfo` of the roots,
//!    which realises every root (syslinux, the EFI directory, `isoImage.storeContents`) on the way;
//! 4. `nix path-info --recursive TOPLEVEL ROOTS...` — `storePaths`.
//!
//! The result is cached as `<cache>/manifests/<key>.json`, the key hashing the flake's state (its
//! `flake.lock`, its git revision or contents) and the host, so an unchanged flake costs no Nix call.

use super::manifest::{Manifest, StoreRoot, STORE_DIR};
use super::{InputError, LoadError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Flakes and the `nix` command are still "experimental" to stock Nix.
const FEATURES: [&str; 2] = ["--extra-experimental-features", "nix-command flakes"];

/// Applied to `nixosConfigurations.iso-<host>`: the manifest facts nixpkgs' `iso-image.nix` uses.
///
/// GRUB EFI: `iso-image.nix` builds `BOOT<ARCH>.EFI` with grub-mkimage into a let-bound `efiDir` that
/// no attribute exposes; it reaches the ISO only as the `isoImage.contents` entry whose target is
/// `/EFI` (source `"${efiDir}/EFI"`), so that entry is the one read. Its file name follows current
/// nixpkgs (`EFI/BOOT/BOOT${toUpper efiArch}.EFI`). `dirOf` keeps the string's context, so the EFI
/// directory is a root of the closure (and of `closureInfo`, whose build realises it).
const FACTS: &str = r#"c: let
  cfg = c.config;
  pkgs = c.pkgs;
  s = builtins.unsafeDiscardStringContext;
  efi = builtins.filter (x: x.target == "/EFI") cfg.isoImage.contents;
  efiSrc = if efi == [ ] then null else (builtins.head efi).source;
  roots = cfg.isoImage.storeContents ++ [ pkgs.syslinux ]
    ++ (if efiSrc == null then [ ] else [ (dirOf efiSrc) ]);
in {
  release = cfg.system.nixos.release;
  volumeID = cfg.isoImage.volumeID;
  system = pkgs.stdenv.hostPlatform.system;
  kernelParams = cfg.boot.kernelParams;
  kernel = s "${cfg.boot.kernelPackages.kernel}/${cfg.system.boot.loader.kernelFile}";
  initrd = s "${cfg.system.build.initialRamdisk}/${cfg.system.boot.loader.initrdFile}";
  syslinux = s "${pkgs.syslinux}/share/syslinux";
  grubEfi = if efiSrc == null then null
    else s "${efiSrc}/BOOT/BOOT${pkgs.lib.toUpper pkgs.stdenv.hostPlatform.efiArch}.EFI";
  roots = map (r: s "${r}") roots;
  closureInfo = s (pkgs.closureInfo { rootPaths = roots; }).drvPath;
}"#;

/// Bumped whenever what a derivation produces changes, so old cache entries are not reused.
const CACHE_FORMAT: &[u8] = b"isofs-nix-manifest-v2";

/// How many trailing lines of Nix's stderr an error quotes.
const STDERR_LINES: usize = 15;

/// What Nix prints when it, not the flake, is at fault: no daemon (not started yet at boot), no
/// network for a substituter or an input, no room in the store.
const ENVIRONMENT_FAILURES: [&str; 6] = [
    "cannot connect to socket",
    "cannot connect to daemon",
    "Connection refused",
    "Could not resolve host",
    "unable to download",
    "No space left on device",
];

/// What [`FACTS`] evaluates to.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Facts {
    release: String,
    /// The label the live system's stage 1 looks for (`root=LABEL=…`, or its fstab with a
    /// systemd initrd): the ISO must carry exactly this one.
    #[serde(rename = "volumeID", default)]
    volume_id: Option<String>,
    system: String,
    kernel_params: Vec<String>,
    kernel: String,
    initrd: String,
    syslinux: String,
    grub_efi: Option<String>,
    roots: Vec<String>,
    closure_info: String,
}

/// `<host>.json` as written: the fields of [`Manifest`], in the order of the design's example.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestOut {
    host: String,
    release: String,
    system: String,
    toplevel: String,
    kernel: String,
    initrd: String,
    init: String,
    kernel_params: Vec<String>,
    store_paths: Vec<String>,
    syslinux: String,
    grub_efi: String,
    #[serde(rename = "volumeID", skip_serializing_if = "Option::is_none")]
    volume_id: Option<String>,
    registration: String,
}

/// `boot.kernelParams` of an installer closure without what isofs writes itself before them
/// (`root=LABEL=<volume ID> boot.shell_on_fail`, which nixpkgs' iso-image module also adds), so
/// the command line does not say them twice.
fn own_params(params: Vec<String>, volume_id: Option<&str>) -> Vec<String> {
    let root = volume_id.map(|v| format!("root=LABEL={v}"));
    params
        .into_iter()
        .filter(|p| p != "boot.shell_on_fail" && Some(p) != root.as_ref())
        .collect()
}

/// The first `nix` on `PATH`, as `Command` would find it.
pub fn find_on_path() -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|d| !d.as_os_str().is_empty())
        .map(|d| d.join("nix"))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Derives and caches the manifests of one flake, in the state it had when this was made.
#[derive(Debug, Clone)]
pub struct NixManifests {
    nix: PathBuf,
    flake: PathBuf,
    dir: PathBuf,
    state: [u8; 32],
}

impl NixManifests {
    /// `flake` must be absolute (Nix reads it as a path flake reference); the cache goes under
    /// `<cache>/manifests`.
    pub fn new(nix: PathBuf, flake: &Path, cache: &Path) -> Result<Self, InputError> {
        Ok(NixManifests {
            nix,
            flake: flake.to_path_buf(),
            dir: cache.join("manifests"),
            state: flake_state(flake)?,
        })
    }

    /// Where `host`'s manifest is cached for this flake state.
    pub fn cached_file(&self, host: &str) -> PathBuf {
        let mut h = Sha256::new();
        h.update(self.state);
        h.update(host.as_bytes());
        self.dir.join(format!("{}.json", hex::encode(h.finalize())))
    }

    /// `host`'s validated manifest and the file it was read from: the cached one when it is still
    /// valid (its store paths may have been garbage-collected since), else derived anew.
    pub fn load(&self, host: &str, store: &StoreRoot) -> Result<(Manifest, PathBuf), LoadError> {
        let file = self.cached_file(host);
        if file.exists() {
            match Manifest::load(&file, host, store) {
                Ok(m) => return Ok((m, file)),
                Err(e) => {
                    tracing::warn!("cached manifest no longer valid ({e}); deriving it again")
                }
            }
        }
        tracing::info!(
            "deriving {host}'s manifest with {} (the first time builds the live system)",
            self.nix.display()
        );
        let m = self.derive(host)?;
        let mut text = serde_json::to_string_pretty(&m)
            .map_err(|e| InputError::new(&file, format!("cannot encode: {e}")))?;
        text.push('\n');
        write_atomic(&file, text.as_bytes())?;
        Ok(Manifest::load(&file, host, store).map(|m| (m, file))?)
    }

    fn attr(&self, host: &str) -> String {
        format!("{}#nixosConfigurations.iso-{host}", self.flake.display())
    }

    /// The error for `host`: blamed on the flake's `nixosConfigurations.iso-<host>`.
    fn err(&self, host: &str, msg: String) -> InputError {
        InputError::field(
            &self.flake.join("flake.nix"),
            &format!("nixosConfigurations.iso-{host}"),
            msg,
        )
    }

    /// Runs `nix <args>`; stdout on success, else the tail of stderr: blamed on the flake unless
    /// Nix failed for reasons of its own.
    fn run(&self, host: &str, args: &[&str]) -> Result<String, LoadError> {
        let what = args.first().copied().unwrap_or_default();
        let out = Command::new(&self.nix)
            .args(FEATURES)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| self.err(host, format!("cannot run {}: {e}", self.nix.display())))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = lines[lines.len().saturating_sub(STDERR_LINES)..].join("\n");
            // `--print-out-paths` came with Nix 2.9 (Debian 12 ships 2.8): say what to do instead
            // of leaving the user with Nix's complaint about a flag.
            let hint = if stderr.contains("unrecognised flag") {
                "; this Nix is too old to derive manifests (isofs needs 2.13 or later): \
                 upgrade it, or give --manifests"
            } else {
                ""
            };
            let msg = format!("nix {what} failed ({}): {tail}{hint}", out.status);
            // Not the flake's fault: nothing to blame it for, and a later try may succeed.
            let environment = std::os::unix::process::ExitStatusExt::signal(&out.status).is_some()
                || ENVIRONMENT_FAILURES.iter().any(|m| stderr.contains(m));
            return Err(if environment {
                LoadError::Nix(format!("{}: {msg}", self.attr(host)))
            } else {
                self.err(host, msg).into()
            });
        }
        String::from_utf8(out.stdout).map_err(|_| {
            self.err(host, format!("nix {what} printed non-UTF-8 output"))
                .into()
        })
    }

    fn derive(&self, host: &str) -> Result<ManifestOut, LoadError> {
        let attr = self.attr(host);
        let toplevel_attr = format!("{attr}.config.system.build.toplevel");
        let built = self.run(
            host,
            &["build", "--no-link", "--print-out-paths", &toplevel_attr],
        )?;
        let toplevel = single_path(&built).ok_or_else(|| {
            self.err(
                host,
                format!("nix build printed {built:?}, not one store path"),
            )
        })?;

        let json = self.run(host, &["eval", "--json", &attr, "--apply", FACTS])?;
        let facts: Facts = serde_json::from_str(&json)
            .map_err(|e| self.err(host, format!("nix eval printed unexpected JSON: {e}")))?;
        let grub_efi = facts.grub_efi.ok_or_else(|| {
            self.err(
                host,
                "isoImage.contents has no /EFI entry: the live system is not EFI-bootable (isoImage.makeEfiBootable)".into(),
            )
        })?;

        let drv = format!("{}^out", facts.closure_info);
        let built = self.run(host, &["build", "--no-link", "--print-out-paths", &drv])?;
        let closure_info = single_path(&built).ok_or_else(|| {
            self.err(
                host,
                format!("nix build printed {built:?}, not one store path"),
            )
        })?;

        let mut roots = vec![toplevel.clone()];
        for r in facts.roots {
            if !roots.contains(&r) {
                roots.push(r);
            }
        }
        let mut args = vec!["path-info", "--recursive"];
        args.extend(roots.iter().map(String::as_str));
        let listed = self.run(host, &args)?;
        let mut store_paths: Vec<String> = listed
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        store_paths.sort();
        store_paths.dedup();

        Ok(ManifestOut {
            host: host.to_string(),
            release: facts.release,
            system: facts.system,
            init: format!("{toplevel}/init"),
            toplevel,
            kernel: facts.kernel,
            initrd: facts.initrd,
            kernel_params: own_params(facts.kernel_params, facts.volume_id.as_deref()),
            store_paths,
            syslinux: facts.syslinux,
            grub_efi,
            volume_id: facts.volume_id,
            registration: format!("{closure_info}/registration"),
        })
    }
}

/// The one store path `nix build --print-out-paths` printed for one output.
fn single_path(out: &str) -> Option<String> {
    let mut lines = out.lines().map(str::trim).filter(|l| !l.is_empty());
    let p = lines.next()?;
    (lines.next().is_none() && p.starts_with(STORE_DIR)).then(|| p.to_string())
}

fn write_atomic(file: &Path, bytes: &[u8]) -> Result<(), InputError> {
    crate::staged::write(file, bytes)
        .map_err(|e| InputError::new(file, format!("cannot write: {e}")))
}

/// Hashes what decides the manifests: where the flake is, its lock, and its sources — the git
/// revision plus the uncommitted diff of tracked files (what Nix sees of a git flake), or, outside
/// git, every file.
fn flake_state(flake: &Path) -> Result<[u8; 32], InputError> {
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    field(CACHE_FORMAT);
    field(flake.as_os_str().as_encoded_bytes());
    let lock = flake.join("flake.lock");
    match crate::regular_file::read(&lock) {
        Ok(b) => {
            field(b"lock");
            field(&b);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => field(b"no lock"),
        Err(e) => return Err(InputError::new(&lock, e.to_string())),
    }
    match git_revision(flake) {
        Some(rev) => {
            field(b"git");
            field(&rev);
        }
        None => {
            field(b"tree");
            field(&tree_hash(flake)?);
        }
    }
    Ok(h.finalize().into())
}

fn git(flake: &Path, args: &[&str]) -> Option<Vec<u8>> {
    let out = Command::new("git")
        .arg("-C")
        .arg(flake)
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status.success().then_some(out.stdout)
}

/// `HEAD`, plus a hash of `git diff HEAD` when tracked files changed; `None` when the flake is not a
/// tracked part of a git work tree (then Nix reads the directory as it is).
fn git_revision(flake: &Path) -> Option<Vec<u8>> {
    git(flake, &["ls-files", "--error-unmatch", "flake.nix"])?;
    let mut rev = git(flake, &["rev-parse", "HEAD"])?;
    let status = git(flake, &["status", "--porcelain", "--untracked-files=no"])?;
    if !status.is_empty() {
        let diff = git(flake, &["diff", "HEAD", "--binary"])?;
        rev.extend_from_slice(b" dirty ");
        rev.extend_from_slice(hex::encode(Sha256::digest(&diff)).as_bytes());
    }
    Some(rev)
}

/// Every name, kind, executable bit and content below `dir`, in byte order of names; not `.git`.
fn tree_hash(dir: &Path) -> Result<[u8; 32], InputError> {
    fn io(p: &Path) -> impl FnOnce(std::io::Error) -> InputError + '_ {
        move |e| InputError::new(p, e.to_string())
    }
    fn walk(dir: &Path, rel: &Path, h: &mut Sha256) -> Result<(), InputError> {
        use std::os::unix::fs::PermissionsExt;
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io(dir))?;
        names.sort();
        for name in names {
            if rel.as_os_str().is_empty() && name == ".git" {
                continue;
            }
            let path = dir.join(&name);
            let rel = rel.join(&name);
            let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
            let mut field = |b: &[u8]| {
                h.update((b.len() as u64).to_le_bytes());
                h.update(b);
            };
            field(rel.as_os_str().as_encoded_bytes());
            if meta.is_dir() {
                field(b"d");
                walk(&path, &rel, h)?;
            } else if meta.is_symlink() {
                field(b"l");
                let target = std::fs::read_link(&path).map_err(io(&path))?;
                field(target.as_os_str().as_encoded_bytes());
            } else if meta.is_file() {
                let exec = meta.permissions().mode() & 0o111 != 0;
                field(if exec { b"x" } else { b"f" });
                field(&crate::regular_file::read(&path).map_err(io(&path))?);
            }
            // Fifos, sockets and devices are left out of the image's flake too (and a fifo's read
            // would wait for a writer); their names above still count.
        }
        Ok(())
    }
    let mut h = Sha256::new();
    walk(dir, Path::new(""), &mut h)?;
    Ok(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nixpkgs' iso-image module puts `root=LABEL=<isoImage.volumeID>` and `boot.shell_on_fail`
    /// in `boot.kernelParams`; isofs writes both itself, from the same volume ID.
    #[test]
    fn own_params_leave_out_what_isofs_writes() {
        let params = [
            "root=LABEL=nixos-minimal-25.11-x86_64",
            "boot.shell_on_fail",
            "loglevel=4",
            "root=LABEL=other",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            own_params(params.clone(), Some("nixos-minimal-25.11-x86_64")),
            ["loglevel=4", "root=LABEL=other"]
        );
        assert_eq!(
            own_params(params, None),
            [
                "root=LABEL=nixos-minimal-25.11-x86_64",
                "loglevel=4",
                "root=LABEL=other"
            ]
        );
    }

    #[test]
    fn single_path_wants_one_store_path() {
        assert_eq!(
            single_path("/nix/store/abc-x\n").as_deref(),
            Some("/nix/store/abc-x")
        );
        assert_eq!(single_path(""), None);
        assert_eq!(single_path("/nix/store/a\n/nix/store/b\n"), None);
        assert_eq!(single_path("warning: dirty\n"), None);
    }

    #[test]
    fn tree_hash_sees_contents_modes_and_names() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("flake.nix"), "{ }").unwrap();
        let a = tree_hash(d.path()).unwrap();
        assert_eq!(a, tree_hash(d.path()).unwrap());
        std::fs::write(d.path().join("flake.nix"), "{ x = 1; }").unwrap();
        let b = tree_hash(d.path()).unwrap();
        assert_ne!(a, b);
        std::fs::set_permissions(
            d.path().join("flake.nix"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let c = tree_hash(d.path()).unwrap();
        assert_ne!(b, c);
        std::fs::create_dir(d.path().join(".git")).unwrap();
        assert_eq!(c, tree_hash(d.path()).unwrap());
    }
}
