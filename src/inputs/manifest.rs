//! Host manifests: `<host>.json`, the contract with Nix (see `shared/design.md`).
//!
//! Paths are logical `/nix/store/...`; `StoreRoot` maps them to where the store really is. Validation
//! is strict because the manifest decides what isofs reads: nothing outside the listed closure.

use super::InputError;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub const STORE_DIR: &str = "/nix/store";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Manifest {
    /// Empty for a minimal image, which has no host.
    #[serde(default)]
    pub host: String,
    /// `minimal` for the generic installer (the seed's systems/iso); absent for a host's image.
    #[serde(default)]
    pub edition: Option<Edition>,
    pub release: String,
    pub system: String,
    pub toplevel: String,
    pub kernel: String,
    pub initrd: String,
    pub init: String,
    pub kernel_params: Vec<String>,
    pub store_paths: Vec<String>,
    pub syslinux: String,
    pub grub_efi: String,
    #[serde(rename = "volumeID", default)]
    pub volume_id: Option<String>,
    #[serde(default)]
    pub registration: Option<String>,
}

/// Which image a manifest describes besides a host's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Edition {
    /// No host flake, no autoinstall entry; served as `minimal.json`, named `nixos-minimal-…`.
    Minimal,
}

/// The name a minimal manifest is served under (its file is `minimal.json`).
pub const MINIMAL: &str = "minimal";

/// Where the logical `/nix/store` really is (`--store`).
#[derive(Debug, Clone)]
pub struct StoreRoot(pub PathBuf);

impl StoreRoot {
    /// The real path of a validated logical path.
    pub fn real(&self, logical: &str) -> PathBuf {
        let rel = logical
            .strip_prefix(STORE_DIR)
            .unwrap_or(logical)
            .trim_start_matches('/');
        self.0.join(rel)
    }
}

/// The store path (`/nix/store/<name>`) a logical path lies in.
pub fn store_path_of(logical: &str) -> &str {
    let rest = &logical[STORE_DIR.len() + 1..];
    let end = rest
        .find('/')
        .map_or(logical.len(), |i| STORE_DIR.len() + 1 + i);
    &logical[..end]
}

/// What ISO 9660 (as isofs writes it, after xorriso) accepts in a volume ID.
fn volume_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// The first directory between `logical`'s store path and its last component that is a link, on
/// disk under `store`. The store path itself may be a link: a store
/// assembled from links to store paths elsewhere is still a store.
fn link_on_the_way(store: &StoreRoot, logical: &str) -> Option<PathBuf> {
    let top = store_path_of(logical);
    let mut at = store.real(top);
    let inner = logical[top.len()..].trim_start_matches('/');
    let mut parts: Vec<&str> = inner.split('/').filter(|c| !c.is_empty()).collect();
    parts.pop();
    for part in parts {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => return Some(at),
            Ok(m) if m.is_dir() => {}
            // A file or nothing on the way is reported with the file itself.
            _ => return None,
        }
    }
    None
}

fn check_logical(file: &Path, field: &str, p: &str) -> Result<(), InputError> {
    let bad = |m: &str| Err(InputError::field(file, field, format!("{p:?}: {m}")));
    let Some(rest) = p.strip_prefix("/nix/store/") else {
        return bad("not under /nix/store");
    };
    if rest.is_empty() {
        return bad("names no store path");
    }
    // Not `Path::components`: it drops inner `.` components, which would then reach the ISO's names.
    if rest.split('/').any(|c| c == "." || c == "..") {
        return bad("has a '.' or '..' component");
    }
    if p.contains("//") || p.ends_with('/') || p.contains('\0') {
        return bad("is not a normalised path");
    }
    // Nix never names a store file so; a newline would also break every message naming it.
    if p.chars().any(char::is_control) {
        return bad("has a control character");
    }
    Ok(())
}

impl Manifest {
    /// Parses and validates `<host>.json`; `expected_host` is the host the file is for.
    pub fn load(
        file: &Path,
        expected_host: &str,
        store: &StoreRoot,
    ) -> Result<Manifest, InputError> {
        let text = crate::regular_file::read_to_string(file)
            .map_err(|e| InputError::new(file, e.to_string()))?;
        // Editors on Windows may leave a byte order mark, which JSON parsers reject.
        let body = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let mut de = serde_json::Deserializer::from_str(body);
        let m: Manifest = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { None } else { Some(path) };
            InputError {
                file: file.to_path_buf(),
                field,
                msg: e.into_inner().to_string(),
            }
        })?;
        de.end()
            .map_err(|e| InputError::new(file, format!("trailing data: {e}")))?;
        m.validate(file, expected_host, store)?;
        Ok(m)
    }

    fn validate(
        &self,
        file: &Path,
        expected_host: &str,
        store: &StoreRoot,
    ) -> Result<(), InputError> {
        if self.is_minimal() {
            if !self.host.is_empty() {
                return Err(InputError::field(
                    file,
                    "host",
                    "a minimal image has no host: remove \"host\" or \"edition\"",
                ));
            }
            if expected_host != MINIMAL {
                return Err(InputError::field(
                    file,
                    "edition",
                    format!("a minimal manifest must be named {MINIMAL}.json"),
                ));
            }
        } else if self.host.is_empty() {
            return Err(InputError::field(
                file,
                "host",
                "missing (only an \"edition\": \"minimal\" manifest has no host)",
            ));
        } else if self.host != expected_host {
            return Err(InputError::field(
                file,
                "host",
                format!(
                    "is '{}' but the file is for host '{expected_host}'",
                    self.host
                ),
            ));
        }
        // Both go into the ISO's file name and its volume ID, whose alphabet is the narrower.
        for (field, v) in [("release", &self.release), ("system", &self.system)] {
            if v.is_empty() || !v.bytes().all(volume_id_byte) {
                return Err(InputError::field(
                    file,
                    field,
                    format!("{v:?} is not valid: use letters, digits, '.', '_' and '-'"),
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for (i, p) in self.store_paths.iter().enumerate() {
            let field = format!("storePaths[{i}]");
            check_logical(file, &field, p)?;
            if store_path_of(p) != p {
                return Err(InputError::field(
                    file,
                    &field,
                    format!("{p:?} is not a top-level store path"),
                ));
            }
            if !seen.insert(p.as_str()) {
                return Err(InputError::field(
                    file,
                    &field,
                    format!("{p:?} is listed twice"),
                ));
            }
            if let Err(e) = std::fs::symlink_metadata(store.real(p)) {
                return Err(InputError::field(
                    file,
                    &field,
                    format!(
                        "{p:?} is missing from the store ({}): {e}",
                        store.real(p).display()
                    ),
                ));
            }
        }
        // `registration` is outside the closure in nixpkgs too (closureInfo is not part of it); it is
        // read because the manifest names it.
        if let Some(r) = &self.registration {
            check_logical(file, "registration", r)?;
        }
        let fields: [(&str, &String); 6] = [
            ("toplevel", &self.toplevel),
            ("kernel", &self.kernel),
            ("initrd", &self.initrd),
            ("init", &self.init),
            ("syslinux", &self.syslinux),
            ("grubEfi", &self.grub_efi),
        ];
        for (field, p) in fields {
            check_logical(file, field, p)?;
            if !seen.contains(store_path_of(p)) {
                return Err(InputError::field(
                    file,
                    field,
                    format!("{p:?} is not inside any of storePaths (isofs reads only the closure)"),
                ));
            }
        }
        // Checked as they are read, without following links (a link would lead out of `--store`).
        // `init` is only run, from inside the squashfs: anything but a directory will do there.
        let init = [("init", &self.init, false)];
        for (field, p, regular) in [
            ("kernel", &self.kernel, true),
            ("initrd", &self.initrd, true),
            ("grubEfi", &self.grub_efi, true),
            ("syslinux", &format!("{}/isolinux.bin", self.syslinux), true),
            ("syslinux", &format!("{}/isohdpfx.bin", self.syslinux), true),
            ("syslinux", &format!("{}/ldlinux.c32", self.syslinux), true),
        ]
        .into_iter()
        .chain(
            self.registration
                .as_ref()
                .map(|r| ("registration", r, true)),
        )
        .chain(init)
        {
            let real = store.real(p);
            if let Some(link) = link_on_the_way(store, p) {
                return Err(InputError::field(
                    file,
                    field,
                    format!(
                        "{} passes through the link {} (isofs follows no links inside a store \
                         path: one could lead out of the store)",
                        real.display(),
                        link.display()
                    ),
                ));
            }
            let why = match std::fs::symlink_metadata(&real) {
                Ok(m) if m.is_file() || !(regular || m.is_dir()) => continue,
                Ok(_) if regular => "is not a regular file".to_string(),
                Ok(_) => "is a directory, not the stage-2 init".to_string(),
                Err(e) => format!("is missing: {e}"),
            };
            return Err(InputError::field(
                file,
                field,
                format!("{} {why}", real.display()),
            ));
        }
        if self.system != "x86_64-linux" {
            return Err(InputError::field(
                file,
                "system",
                format!(
                    "{:?}: isofs writes x86_64 images only (isolinux, EFI/BOOT/BOOTX64.EFI)",
                    self.system
                ),
            ));
        }
        if let Some(v) = &self.volume_id {
            if v.is_empty() || v.len() > 32 || !v.bytes().all(volume_id_byte) {
                return Err(InputError::field(
                    file,
                    "volumeID",
                    format!("{v:?} must be 1 to 32 characters of A-Z a-z 0-9 _ - ."),
                ));
            }
        }
        Ok(())
    }

    /// The CPU part of `system` (`x86_64` of `x86_64-linux`), as nixpkgs puts it in the volume ID.
    pub fn arch(&self) -> &str {
        self.system.split('-').next().unwrap_or(&self.system)
    }

    pub fn is_minimal(&self) -> bool {
        self.edition == Some(Edition::Minimal)
    }

    /// What names the image: the host, or `minimal`.
    fn label(&self) -> &str {
        if self.is_minimal() {
            MINIMAL
        } else {
            &self.host
        }
    }

    /// `nixos-<host>-<release>-<system>.iso` (`nixos-minimal-…` for a minimal image).
    pub fn iso_name(&self) -> String {
        format!(
            "nixos-{}-{}-{}.iso",
            self.label(),
            self.release,
            self.system
        )
    }

    /// `volumeID` if set, else `nixos-<host>-<release>-<arch>`, which must fit ISO 9660's 32 characters.
    pub fn volume_id(&self, file: &Path) -> Result<String, InputError> {
        if let Some(v) = &self.volume_id {
            return Ok(v.clone());
        }
        let v = format!("nixos-{}-{}-{}", self.label(), self.release, self.arch());
        if v.len() > 32 {
            return Err(InputError::field(
                file,
                "host",
                format!(
                    "volume ID '{v}' is {} characters, over ISO 9660's 32: shorten the host name or set \"volumeID\" in the manifest",
                    v.len()
                ),
            ));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_path_of_splits() {
        assert_eq!(store_path_of("/nix/store/abc-x/bin/y"), "/nix/store/abc-x");
        assert_eq!(store_path_of("/nix/store/abc-x"), "/nix/store/abc-x");
    }

    #[test]
    fn logical_paths_are_checked() {
        let f = Path::new("m.json");
        assert!(check_logical(f, "k", "/nix/store/abc").is_ok());
        for bad in [
            "/etc/passwd",
            "/nix/store/",
            "/nix/store/a/../b",
            "/nix/store/a//b",
            "nix/store/a",
            "/nix/store/a/./b",
            "/nix/store/a/.",
            "/nix/store/a\nb",
        ] {
            assert!(check_logical(f, "k", bad).is_err(), "{bad}");
        }
    }
}
