//! Flags, `isofs.toml` and defaults merged into one validated [`Settings`]. Flags win over the file;
//! paths in the file are relative to the file.

use super::manifest::{Manifest, StoreRoot, MINIMAL};
use super::nix::NixManifests;
use super::{flake, InputError, LoadError};
use crate::boot::DefaultEntry;
use crate::compression::Compression;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// nixpkgs' stdenv default for `SOURCE_DATE_EPOCH` (1980-01-01), used when the variable is unset.
pub const DEFAULT_EPOCH: i64 = 315_532_800;

/// The input flags shared by every subcommand, as given (all optional).
#[derive(Debug, Clone, Default)]
pub struct InputFlags {
    pub flake: Option<PathBuf>,
    pub hosts: Option<Vec<String>>,
    pub manifests: Option<PathBuf>,
    pub store: Option<PathBuf>,
    pub templates: Option<PathBuf>,
    pub compression: Option<Compression>,
    pub default_entry: Option<DefaultEntry>,
    pub cache: Option<PathBuf>,
    pub cache_max: Option<CacheCap>,
    pub config: Option<PathBuf>,
}

/// `isofs.toml`: any input flag, by its long name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ConfigFile {
    flake: Option<PathBuf>,
    hosts: Option<HostsValue>,
    manifests: Option<PathBuf>,
    store: Option<PathBuf>,
    templates: Option<PathBuf>,
    compression: Option<String>,
    default_entry: Option<String>,
    cache: Option<PathBuf>,
    cache_max: Option<SizeValue>,
}

/// `hosts = ["a", "b"]`, or `hosts = "a,b"` as the flag takes it.
#[derive(Debug)]
struct HostsValue(Vec<String>);

impl<'de> Deserialize<'de> for HostsValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = HostsValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("for hosts a list such as [\"a\", \"b\"] or a string such as \"a,b\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HostsValue, E> {
                Ok(HostsValue(v.split(',').map(str::to_string).collect()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<HostsValue, A::Error> {
                let mut hosts = Vec::new();
                while let Some(h) = seq.next_element::<String>()? {
                    hosts.push(h);
                }
                Ok(HostsValue(hosts))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `cache-max = "20G"` or `cache-max = 21474836480`.
#[derive(Debug)]
enum SizeValue {
    Text(String),
    Bytes(u64),
}

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SizeValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("for cache-max a size such as \"20G\" or a whole number of bytes")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SizeValue, E> {
                Ok(SizeValue::Text(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<SizeValue, E> {
                Ok(SizeValue::Bytes(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<SizeValue, E> {
                u64::try_from(v)
                    .map(SizeValue::Bytes)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `line L, column C: ` of a TOML error, from its byte span in `text`.
fn toml_position(text: &str, e: &toml::de::Error) -> String {
    e.span()
        .and_then(|r| text.get(..r.start))
        .map(|before| {
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: ")
        })
        .unwrap_or_default()
}

/// Everything needed to plan every selected host.
#[derive(Debug, Clone)]
pub struct Settings {
    pub flake: PathBuf,
    /// The flake's hosts, restricted by `--hosts`, in flake order.
    pub hosts: Vec<String>,
    pub manifests: ManifestSource,
    pub store: StoreRoot,
    pub templates: Option<PathBuf>,
    pub compression: Compression,
    pub default_entry: DefaultEntry,
    pub cache: PathBuf,
    /// Cap on the block cache's bytes on disk (least recently used entries go first).
    pub cache_max: Option<u64>,
    /// Volume dates (`SOURCE_DATE_EPOCH`, else [`DEFAULT_EPOCH`]).
    pub epoch: i64,
}

/// Where host manifests come from.
#[derive(Debug, Clone)]
pub enum ManifestSource {
    /// `--manifests DIR`: one `<host>.json` per host.
    Dir(PathBuf),
    /// No manifests given, `nix` on PATH: derived from the flake and cached.
    Nix(NixManifests),
}

fn default_cache() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("isofs");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/cache/isofs");
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/isofs"))
        .unwrap_or_else(|| PathBuf::from("/tmp/isofs-cache"))
}

fn epoch() -> Result<i64, InputError> {
    let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") else {
        return Ok(DEFAULT_EPOCH);
    };
    let bad = |why: &str| InputError::new(Path::new("$SOURCE_DATE_EPOCH"), format!("{v:?} {why}"));
    let secs: i64 = v
        .trim()
        .parse()
        .map_err(|_| bad("is not a whole number of seconds"))?;
    // Squashfs keeps times as unsigned 32-bit seconds.
    if !(0..=i64::from(u32::MAX)).contains(&secs) {
        return Err(bad("is outside 0..=4294967295 (squashfs times are 32-bit)"));
    }
    Ok(secs)
}

impl InputFlags {
    /// Merges flags over the config file over defaults, and checks what can be checked up front.
    pub fn resolve(self) -> Result<Settings, InputError> {
        let flake_flag = self.flake.clone().unwrap_or_else(|| PathBuf::from("."));
        let (config_path, must_exist) = match &self.config {
            Some(c) => (c.clone(), true),
            None => (flake_flag.join("isofs.toml"), false),
        };
        // A dangling link counts as there: reading it then says what is wrong, rather than the
        // settings being silently left out.
        let config = if config_path.symlink_metadata().is_ok() || must_exist {
            let text = crate::regular_file::read_to_string(&config_path)
                .map_err(|e| InputError::new(&config_path, e.to_string()))?;
            toml::from_str::<ConfigFile>(&text).map_err(|e| {
                let at = toml_position(&text, &e);
                InputError::new(&config_path, format!("{at}{}", e.message().trim_end()))
            })?
        } else {
            ConfigFile::default()
        };
        let base = config_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let rel = |p: Option<PathBuf>| p.map(|p| base.join(p));

        let flake = self.flake.or(rel(config.flake)).unwrap_or(flake_flag);
        let all_hosts = flake::hosts(&flake)?;
        let manifests = self.manifests.or(rel(config.manifests));
        // The generic minimal image is a target beside the flake's hosts when its manifest exists.
        let minimal = manifests
            .as_ref()
            .is_some_and(|d| d.join(format!("{MINIMAL}.json")).is_file())
            && !all_hosts.iter().any(|h| h == MINIMAL);
        let hosts = match self.hosts.or(config.hosts.map(|h| h.0)) {
            None => all_hosts,
            Some(wanted) => {
                // `--hosts "a, b"` and `hosts = "a,"` mean a and b, and a.
                let wanted: Vec<String> = wanted
                    .iter()
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty())
                    .collect();
                if wanted.is_empty() {
                    return Err(InputError::field(
                        &flake.join("flake.nix"),
                        "isoHosts",
                        "--hosts (or hosts in isofs.toml) names no host; leave it out for every host",
                    ));
                }
                for h in &wanted {
                    let known = all_hosts.contains(h) || (minimal && h == MINIMAL);
                    if !known {
                        return Err(InputError::field(
                            &flake.join("flake.nix"),
                            "isoHosts",
                            format!(
                                "unknown host '{h}' (isoHosts lists: {})",
                                all_hosts.join(", ")
                            ),
                        ));
                    }
                }
                let mut hosts: Vec<String> = all_hosts
                    .into_iter()
                    .filter(|h| wanted.contains(h))
                    .collect();
                if minimal && wanted.iter().any(|h| h == MINIMAL) {
                    hosts.push(MINIMAL.to_string());
                }
                hosts
            }
        };
        let compression = match (self.compression, config.compression) {
            (Some(c), _) => c,
            (None, Some(s)) => s
                .parse()
                .map_err(|m: String| InputError::field(&config_path, "compression", m))?,
            (None, None) => Compression::default(),
        };
        let default_entry = match (self.default_entry, config.default_entry) {
            (Some(d), _) => d,
            (None, Some(s)) => s
                .parse()
                .map_err(|e: crate::boot::ParseDefaultEntryError| {
                    InputError::field(&config_path, "default-entry", e.to_string())
                })?,
            (None, None) => DefaultEntry::Install,
        };
        let store = self
            .store
            .or(rel(config.store))
            .unwrap_or_else(|| PathBuf::from("/nix/store"));
        if !store.is_dir() {
            return Err(InputError::new(
                &store,
                "the store directory does not exist",
            ));
        }
        // The daemon changes directory to `/`: every path must stand on its own.
        let abs =
            |p: PathBuf| std::path::absolute(&p).map_err(|e| InputError::new(&p, e.to_string()));
        let flake = abs(flake)?;
        let cache = abs(self
            .cache
            .or(rel(config.cache))
            .unwrap_or_else(default_cache))?;
        let manifests = match (manifests, super::nix::find_on_path()) {
            (Some(dir), _) => ManifestSource::Dir(abs(dir)?),
            (None, Some(nix)) => ManifestSource::Nix(NixManifests::new(nix, &flake, &cache)?),
            (None, None) => {
                // Blamed on the settings file only where there is one.
                let file = if config_path.exists() {
                    config_path
                } else {
                    flake.join("flake.nix")
                };
                return Err(InputError::field(
                    &file,
                    "manifests",
                    "no host manifests given and no `nix` on PATH to derive them: pass --manifests DIR (one <host>.json per host), set `manifests` in isofs.toml, or put `nix` on PATH (isofs then reads nixosConfigurations.iso-<host> itself)",
                ));
            }
        };
        Ok(Settings {
            flake,
            hosts,
            manifests,
            store: StoreRoot(abs(store)?),
            templates: self
                .templates
                .or(rel(config.templates))
                .map(abs)
                .transpose()?,
            compression,
            default_entry,
            cache,
            cache_max: match (self.cache_max, config.cache_max) {
                (Some(c), _) => c,
                (None, Some(SizeValue::Bytes(n))) => CacheCap::Bytes(
                    cap(n, &n.to_string())
                        .map_err(|m| InputError::field(&config_path, "cache-max", m))?,
                ),
                (None, Some(SizeValue::Text(s))) => parse_cache_max(&s)
                    .map_err(|m| InputError::field(&config_path, "cache-max", m))?,
                (None, None) => CacheCap::Bytes(DEFAULT_CACHE_MAX),
            }
            .bytes(),
            epoch: epoch()?,
        })
    }
}

/// The cache cap when none is given: like ccache's and sccache's defaults, room for several
/// generations of a few hosts' closures (a real installer's blocks take about 1.4 GB), while the
/// blocks of store paths no flake uses any more do not pile up for ever.
pub const DEFAULT_CACHE_MAX: u64 = 10 << 30;

/// What `--cache-max` / `cache-max` say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheCap {
    Bytes(u64),
    Unlimited,
}

impl CacheCap {
    fn bytes(self) -> Option<u64> {
        match self {
            CacheCap::Bytes(n) => Some(n),
            CacheCap::Unlimited => None,
        }
    }
}

/// A size (see [`parse_size`]) or `unlimited`.
pub fn parse_cache_max(s: &str) -> Result<CacheCap, String> {
    if s.trim().eq_ignore_ascii_case("unlimited") {
        return Ok(CacheCap::Unlimited);
    }
    parse_size(s).map(CacheCap::Bytes)
}

/// `500M`, `10G`, `1T` or plain bytes (binary units).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("'{s}': unknown unit (use K, M, G or T)")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n = num
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or_else(|| format!("'{s}' is not a size such as 500M or 10G"))?;
    cap(n, s)
}

/// A cache cap of nothing would throw away every block as soon as it is written.
fn cap(n: u64, s: &str) -> Result<u64, String> {
    if n == 0 {
        return Err(format!(
            "'{s}': a cap of 0 keeps nothing (say `unlimited` for no cap)"
        ));
    }
    Ok(n)
}

impl Settings {
    /// The file errors about `host`'s manifest name (for derived ones, the cached copy).
    pub fn manifest_file(&self, host: &str) -> PathBuf {
        match &self.manifests {
            ManifestSource::Dir(dir) => dir.join(format!("{host}.json")),
            ManifestSource::Nix(n) => n.cached_file(host),
        }
    }

    /// `host`'s validated manifest and the file it was read from; derived with Nix first if needed.
    pub fn load_manifest(&self, host: &str) -> Result<(Manifest, PathBuf), LoadError> {
        match &self.manifests {
            ManifestSource::Dir(_) => {
                let file = self.manifest_file(host);
                Ok(Manifest::load(&file, host, &self.store).map(|m| (m, file))?)
            }
            ManifestSource::Nix(n) => n.load(host, &self.store),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_max_takes_sizes_and_unlimited() {
        assert_eq!(parse_cache_max("20G"), Ok(CacheCap::Bytes(20 << 30)));
        assert_eq!(parse_cache_max(" 512k"), Ok(CacheCap::Bytes(512 << 10)));
        assert_eq!(parse_cache_max("4096"), Ok(CacheCap::Bytes(4096)));
        assert_eq!(parse_cache_max("Unlimited"), Ok(CacheCap::Unlimited));
        assert!(parse_cache_max("0").unwrap_err().contains("unlimited"));
        assert!(parse_cache_max("5X").is_err());
        assert!(parse_cache_max("99999999T").is_err());
    }
}
