//! The command line: clap definitions, raw flags → validated settings, one function per subcommand.

use crate::boot::DefaultEntry;
use crate::compression::Compression;
use crate::image::{self, HostImage, Planner};
use crate::inputs::settings::{InputFlags, Settings};
use crate::inputs::InputError;
use crate::staged::{self, Staged};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::{Path, PathBuf};

const ABOUT: &str = "Serve bootable NixOS installer ISOs that do not exist on disk";

const LONG_ABOUT: &str = "\
isofs plans, for every host a NixOS flake lists in `isoHosts`, the installer ISO that \
`nix build .#iso-<host>` would make — hybrid (BIOS + UEFI, CD + USB stick), the live store as a zstd \
squashfs, the flake embedded at /nixos-flake — and produces its bytes on read. `isofs mount` shows the \
ISOs, their .sha256 sidecars and SHA256SUMS as files; `isofs build` writes the very same bytes to disk.

Inputs: the flake (--flake, hosts from `isoHosts = [ ... ];` in flake.nix), one manifest per host \
(--manifests DIR/<host>.json: the live system's closure, kernel, initrd, syslinux, GRUB EFI), the store \
holding that closure (--store), and optional menu templates (--templates). An `isofs.toml` in the flake \
directory (or --config FILE) may set any input flag by its long name; flags win.";

const EXAMPLES: &str = "\
EXAMPLES:
    # List the hosts, their ISO names and volume IDs
    isofs hosts --flake ~/nixos --manifests ~/nixos/manifests

    # Write result/iso/nixos-shinji-25.11-x86_64-linux.iso (+ .sha256) and result/SHA256SUMS
    isofs build shinji --flake ~/nixos --manifests ~/nixos/manifests

    # Serve every host's ISO without writing one
    isofs mount /mnt/isos --flake ~/nixos --manifests ~/nixos/manifests
    cp /mnt/isos/*.iso* /media/ventoy/ && (cd /mnt/isos && sha256sum -c SHA256SUMS)
    isofs umount /mnt/isos

    # Which input owns byte 1234567 of an image?
    isofs explain shinji 1234567

ENVIRONMENT:
    RUST_LOG            log filter (default: info), e.g. RUST_LOG=isofs=debug
    SOURCE_DATE_EPOCH   volume dates of the ISO (default 315532800, 1980-01-01, as nixpkgs)

EXIT STATUS:
    0 success, 1 runtime failure, 2 bad input or usage";

#[derive(Parser, Debug)]
#[command(name = "isofs", version, about = ABOUT, long_about = LONG_ABOUT, after_long_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Flags shared by every subcommand that reads inputs.
#[derive(Args, Debug, Clone)]
pub struct InputArgs {
    /// Flake directory; hosts are the string literals of `isoHosts` in its flake.nix [default: .]
    #[arg(long, value_name = "DIR")]
    pub flake: Option<PathBuf>,
    /// Only these hosts (comma-separated)
    #[arg(long, value_name = "HOST,...", value_delimiter = ',')]
    pub hosts: Option<Vec<String>>,
    /// Directory of host manifests, one <host>.json per host
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    /// Where the logical /nix/store really is [default: /nix/store]
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Directory overriding the built-in isolinux.cfg / grub.cfg templates
    #[arg(long, value_name = "DIR")]
    pub templates: Option<PathBuf>,
    /// Squashfs compression: zstd:N (1-22) or none [default: zstd:19]
    #[arg(long, value_name = "zstd:N|none", value_parser = parse_compression)]
    pub compression: Option<Compression>,
    /// Menu entry booted when the timeout expires; a minimal image, which has no autoinstall entry,
    /// keeps install [default: install]
    #[arg(long, value_name = "install|autoinstall", value_parser = default_entry_parser())]
    pub default_entry: Option<DefaultEntry>,
    /// Where compressed blocks and planning data are kept
    /// [default: $XDG_CACHE_HOME/isofs, /var/cache/isofs for root]
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Cap on the block cache's size on disk, e.g. 20G, or unlimited (least recently used blocks
    /// go first) [default: 10G]
    #[arg(long, value_name = "SIZE|unlimited", value_parser = crate::inputs::settings::parse_cache_max)]
    pub cache_max: Option<crate::inputs::settings::CacheCap>,
    /// Config file [default: <flake>/isofs.toml when present]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    s.parse()
}

/// The two entries as a list, so that shell completions offer them.
fn default_entry_parser() -> impl clap::builder::TypedValueParser<Value = DefaultEntry> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["install", "autoinstall"])
        .try_map(|s| s.parse::<DefaultEntry>())
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Write HOST's ISO, its .sha256 sidecar and SHA256SUMS, like `nix build .#iso-<host>`
    #[command(
        after_help = "Writes OUT/iso/<name>.iso, OUT/iso/<name>.iso.sha256 and OUT/SHA256SUMS (a line \
                      for every ISO in OUT/iso). An OUT that is nix build's link into the store is \
                      replaced by a directory."
    )]
    Build {
        host: String,
        /// Output directory
        #[arg(long, value_name = "DIR", default_value = "result")]
        out: PathBuf,
        /// Also write OUT/iso/<name>.iso.zst (zstd level 3, multi-threaded; cached per plan)
        #[arg(long)]
        compress_image: bool,
        #[command(flatten)]
        inputs: InputArgs,
    },
    /// One line per host: host, ISO file name, volume ID
    Hosts {
        #[command(flatten)]
        inputs: InputArgs,
    },
    /// Mount every host's ISO, .sha256 sidecar and SHA256SUMS (read-only FUSE)
    #[command(after_help = "\
The mount returns at once; each ISO is planned in the background and only its readers wait.
A stale mount left by a killed daemon is cleared first. SIGINT/SIGTERM or `isofs umount` unmount.

    isofs mount /mnt/isos --flake ~/nixos --manifests ~/nixos/manifests --ventoy
    mount -t fuse.isofs ~/nixos /mnt/isos -o manifests=/home/me/nixos/manifests   (mount-helpers/)")]
    Mount {
        /// An existing directory (a symlink to one is followed)
        mountpoint: PathBuf,
        #[command(flatten)]
        mount: MountArgs,
        #[command(flatten)]
        inputs: InputArgs,
    },
    /// Check statically that hosts are ISO-installable (exit 1 on any failure)
    ///
    /// With rnix, no evaluation: disko imported, no live fileSystems in hardware-configuration.nix,
    /// a block-device module in the initrd, a host name that fits the volume ID. One PASS/WARN/FAIL
    /// line per rule with file and line; "cannot tell statically" where the Nix is not literal.
    #[command(
        after_help = "    isofs check                 # every host in isoHosts\n    isofs check shinji --flake ~/nixos"
    )]
    Check {
        /// Hosts to check [default: every host in isoHosts]
        hosts: Vec<String>,
        /// Flake directory
        #[arg(long, value_name = "DIR", default_value = ".")]
        flake: PathBuf,
        /// NixOS release used in the volume ID
        #[arg(long, default_value = "25.11", value_parser = clap::builder::NonEmptyStringValueParser::new())]
        release: String,
    },
    /// Fill the block cache ahead of time: plan HOSTs (default: all), compressing what is not cached
    #[command(
        after_help = "    isofs warm                  # every host; later builds and mounts read no store file twice"
    )]
    Warm {
        /// Hosts to warm [default: every host]
        #[arg(value_name = "HOST")]
        names: Vec<String>,
        #[command(flatten)]
        inputs: InputArgs,
    },
    /// Show the cache (size, entries, hit rate) and each host's last plan
    Status {
        #[command(flatten)]
        inputs: InputArgs,
    },
    /// Unmount an isofs mount
    Umount { mountpoint: PathBuf },
    /// Which region or input file (and offset in it) owns byte OFFSET of HOST's ISO
    Explain {
        host: String,
        /// Byte offset (decimal, or hex with 0x)
        #[arg(value_parser = parse_offset)]
        offset: u64,
        #[command(flatten)]
        inputs: InputArgs,
    },
    /// Print HOST's manifest (the JSON of <host>.json)
    ///
    /// Without --manifests it is derived with `nix` from nixosConfigurations.iso-HOST and cached by
    /// flake lock and revision.
    Manifest {
        host: String,
        #[command(flatten)]
        inputs: InputArgs,
    },
    /// Copy every image and its .sha256 sidecar to a mounted Ventoy partition
    ///
    /// Also adds their menu aliases and tips to its ventoy/ventoy.json, keeping the user's keys.
    #[command(after_help = VENTOY_HELP)]
    Ventoy {
        /// The mounted Ventoy data partition, e.g. /media/me/Ventoy
        dest: PathBuf,
        #[command(flatten)]
        inputs: InputArgs,
    },
    /// Print a completion script for SHELL to stdout
    #[command(
        after_help = "    isofs completions bash > /etc/bash_completion.d/isofs\n    \
        isofs completions zsh > \"${fpath[1]}/_isofs\"\n    \
        isofs completions fish > ~/.config/fish/completions/isofs.fish"
    )]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the isofs(1) man page (roff) to stdout
    #[command(
        after_help = "    isofs man | man -l -\n    isofs man > /usr/local/share/man/man1/isofs.1"
    )]
    Man,
}

const VENTOY_HELP: &str = "\
An image already on DEST is kept when its size is this plan's and its .sha256 sidecar holds this
plan's digest (from the digest cache, else one read of the image); otherwise it is copied, hashed
while copying, under a temporary name, synced, then renamed. ventoy/ventoy.json keeps the user's
other keys and other images' entries; entries for our images are replaced.

    isofs ventoy /media/me/Ventoy --flake ~/nixos --manifests ~/nixos/manifests";

/// Flags of `isofs mount`.
#[derive(Args, Debug)]
pub struct MountArgs {
    /// Stay in the foreground (under systemd, or for debugging); otherwise detach once the mount is live
    #[arg(long)]
    pub foreground: bool,
    /// Also show ventoy/ventoy.json (menu aliases and tips) for a Ventoy stick that has none yet
    #[arg(long)]
    pub ventoy: bool,
    /// Let other users read the mount (needs user_allow_other in /etc/fuse.conf when not root)
    #[arg(long)]
    pub allow_other: bool,
    /// Also show <name>.iso.zst. Its size is unknown until it is compressed: the first stat,
    /// lookup or read of a .zst (ls -l too) blocks until the whole image is compressed (zstd
    /// level 3, multi-threaded) into the cache; later ones, in any mount, are instant
    #[arg(long)]
    pub compress_image: bool,
}

fn parse_offset(s: &str) -> Result<u64, String> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .map_err(|e| format!("'{s}' is not a byte offset: {e}"))
}

impl InputArgs {
    pub fn resolve(&self) -> Result<Settings, InputError> {
        InputFlags {
            flake: self.flake.clone(),
            hosts: self.hosts.clone(),
            manifests: self.manifests.clone(),
            store: self.store.clone(),
            templates: self.templates.clone(),
            compression: self.compression,
            default_entry: self.default_entry,
            cache: self.cache.clone(),
            cache_max: self.cache_max,
            config: self.config.clone(),
        }
        .resolve()
    }
}

/// A host named on the command line must be one of the flake's (after `--hosts`).
fn check_host(settings: &Settings, host: &str) -> Result<(), InputError> {
    if settings.hosts.iter().any(|h| h == host) {
        return Ok(());
    }
    if host == crate::inputs::manifest::MINIMAL && settings.manifest_file(host).is_file() {
        return Ok(());
    }
    Err(not_selected(&settings.flake, host, &settings.hosts))
}

/// The error for `host`, which is not among the `selected` hosts of `flake`: either unknown to
/// its isoHosts, or left out by a host filter.
fn not_selected(flake: &Path, host: &str, selected: &[String]) -> InputError {
    let listed = crate::inputs::flake::hosts(flake).unwrap_or_default();
    let msg = if listed.iter().any(|h| h == host) {
        format!(
            "'{host}' is in isoHosts but left out by --hosts or `hosts` in isofs.toml (selected: {})",
            selected.join(", ")
        )
    } else {
        format!("unknown host '{host}' (hosts: {})", selected.join(", "))
    };
    InputError::field(&flake.join("flake.nix"), "isoHosts", msg)
}

pub fn bar(len: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:>12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

/// Plans `host` with a progress bar over the bytes the squashfs compresses.
pub fn plan_with_progress(planner: &Planner, host: &str) -> anyhow::Result<HostImage> {
    let pb = bar(0, "planning");
    let image = planner.plan(host, &|n, total| {
        pb.set_length(total);
        pb.inc(n);
    })?;
    pb.finish_and_clear();
    Ok(image)
}

/// Resolves the inputs and plans the one host named on the command line.
fn plan_one(inputs: &InputArgs, host: &str) -> anyhow::Result<(Planner, HostImage)> {
    let settings = inputs.resolve()?;
    check_host(&settings, host)?;
    let planner = Planner::new(settings)?;
    let image = plan_with_progress(&planner, host)?;
    Ok((planner, image))
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    // Commands that write files clean up after Ctrl-C; a mount has its own signal handling (and
    // forks, which a signal thread started here would not survive).
    if matches!(
        cli.cmd,
        Cmd::Build { .. } | Cmd::Warm { .. } | Cmd::Ventoy { .. }
    ) {
        staged::remove_on_signal().context("installing signal handlers")?;
    }
    match cli.cmd {
        Cmd::Build {
            host,
            out,
            compress_image,
            inputs,
        } => {
            let (planner, image) = plan_one(&inputs, &host)?;
            if crate::inputs::flake::would_embed(&planner.settings.flake, &out) {
                tracing::warn!(
                    "{}: inside the flake, which is not a git checkout: the next build or mount \
                     embeds it in /nixos-flake (name it result, or write outside the flake)",
                    out.display()
                );
            }
            // Gone before the new ISO lands, so no failure below leaves it next to a newer ISO.
            if remove_stale_compressed(&image, &out)? && !compress_image {
                tracing::info!("removed {}.zst (an earlier build's image)", image.iso_name);
            }
            let digest = write_image(&image, &out)?;
            // A mount, `isofs ventoy` and `isofs status` of this plan need not hash it again.
            crate::digest::DigestCache::new(&planner.settings.cache)
                .put(&image.fingerprint, &digest);
            let hex = hex::encode(digest);
            println!("{}", out.join("iso").join(&image.iso_name).display());
            tracing::info!("{}  {}", hex, image.iso_name);
            if compress_image {
                write_compressed(&image, &planner.settings.cache, &out)?;
            }
            Ok(())
        }
        Cmd::Mount {
            mountpoint,
            mount,
            inputs,
        } => {
            let settings = inputs.resolve()?;
            let planner = Planner::new(settings)?;
            let served = crate::mount::Served::check(&planner)?;
            let opts = crate::daemon::MountOptions {
                foreground: mount.foreground,
                allow_other: mount.allow_other,
                // The flake, as an fstab line names it, so `mount -a` sees the mount as done.
                fs_name: std::fs::canonicalize(&planner.settings.flake)
                    .unwrap_or_else(|_| planner.settings.flake.clone())
                    .display()
                    .to_string(),
                mtime: std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs(planner.settings.epoch.max(0) as u64),
                threads: served.threads(),
            };
            crate::daemon::mount(&mountpoint, &opts, move || {
                crate::mount::build_vfs(planner, &served, mount.ventoy, mount.compress_image)
            })
        }
        Cmd::Check {
            hosts,
            flake,
            release,
        } => {
            let all = crate::inputs::flake::hosts(&flake)?;
            if let Some(unknown) = hosts.iter().find(|h| !all.contains(h)) {
                return Err(not_selected(&flake, unknown, &all).into());
            }
            // In flake order, each once, however the arguments named them.
            let hosts: Vec<String> = if hosts.is_empty() {
                all
            } else {
                all.into_iter().filter(|h| hosts.contains(h)).collect()
            };
            let mut worst = crate::check::Level::Pass;
            for host in &hosts {
                let findings = crate::check::check_host(&flake, host, &release);
                print!("{}", crate::check::render(&findings));
                if let Some(l) = findings.iter().map(|f| f.level).max() {
                    worst = worst.max(l);
                }
            }
            if worst == crate::check::Level::Fail {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Warm { names, inputs } => {
            let settings = inputs.resolve()?;
            let hosts = if names.is_empty() {
                settings.hosts.clone()
            } else {
                names
            };
            for h in &hosts {
                check_host(&settings, h)?;
            }
            let planner = Planner::new(settings)?;
            for h in &hosts {
                let before = planner.cache.stats().compressed;
                let image = plan_with_progress(&planner, h)?;
                println!(
                    "{h}\t{}\t{} bytes\t{} blocks compressed",
                    image.iso_name,
                    image.map.size(),
                    planner.cache.stats().compressed - before
                );
            }
            planner.cache.flush_stats();
            let evicted = planner.cache.stats().evicted;
            if evicted > 0 {
                tracing::warn!(
                    "the cache cap made room by evicting {evicted} entries, some of them perhaps \
                     just warmed; later builds compress those again (raise --cache-max)"
                );
            }
            Ok(())
        }
        Cmd::Status { inputs } => {
            let settings = inputs.resolve()?;
            let cap = settings.cache_max;
            // A report leaves the cache as it is: the cap is shown, not enforced.
            let planner = Planner::new(Settings {
                cache_max: None,
                ..settings
            })?;
            print!("{}", crate::status::report(&planner, cap));
            Ok(())
        }
        Cmd::Umount { mountpoint } => crate::daemon::umount(&mountpoint),
        Cmd::Ventoy { dest, inputs } => run_ventoy(&dest, &inputs),
        Cmd::Completions { shell } => {
            crate::completions::completions(shell, &mut std::io::stdout());
            Ok(())
        }
        Cmd::Man => Ok(crate::completions::man_page(&mut std::io::stdout())?),
        Cmd::Hosts { inputs } => {
            let settings = inputs.resolve()?;
            // Listing writes nothing, so it does not trim the cache to a cap either.
            let planner = Planner::new(Settings {
                cache_max: None,
                ..settings
            })?;
            // All or nothing: a bad manifest fails the listing before any line is printed.
            let mut lines = String::new();
            for host in &planner.targets()? {
                let (m, vol) = planner.manifest(host)?;
                lines.push_str(&format!("{host}\t{}\t{vol}\n", m.iso_name()));
            }
            print!("{lines}");
            Ok(())
        }
        Cmd::Explain {
            host,
            offset,
            inputs,
        } => {
            let (_, image) = plan_one(&inputs, &host)?;
            match image::explain(&image.map, offset) {
                Some(s) => {
                    println!("{s}");
                    Ok(())
                }
                None => Err(InputError::new(
                    Path::new(&image.iso_name),
                    format!(
                        "offset {offset} is past the end ({} bytes)",
                        image.map.size()
                    ),
                )
                .into()),
            }
        }
        Cmd::Manifest { host, inputs } => {
            let settings = inputs.resolve()?;
            check_host(&settings, &host)?;
            let (_, file) = settings
                .load_manifest(&host)
                .map_err(image::PlanError::from)?;
            let text = crate::regular_file::read_to_string(&file)
                .map_err(|e| InputError::new(&file, e.to_string()))?;
            print!("{text}");
            Ok(())
        }
    }
}

/// Writes the ISO (hashing in the same pass), its sidecar and SHA256SUMS; returns the digest.
/// Files appear under their final names only when complete, the sidecar right after its ISO.
fn write_image(image: &HostImage, out: &Path) -> anyhow::Result<[u8; 32]> {
    replace_nix_result_link(out)?;
    let dir = out.join("iso");
    std::fs::create_dir_all(&dir)
        .map_err(|e| InputError::new(&dir, format!("cannot create: {e}")))?;
    let final_path = dir.join(&image.iso_name);
    let mut iso = Staged::create(&final_path)
        .map_err(|e| InputError::new(&final_path, format!("cannot write: {e}")))?;
    let pb = bar(image.map.size(), "writing");
    let tmp = iso.tmp_path().to_path_buf();
    let digest = crate::digest::copy_hashing(&*image.map, iso.file(), &|n| pb.set_position(n))
        .with_context(|| format!("writing {}", tmp.display()))?;
    let hex = hex::encode(digest);
    let sidecar_path = dir.join(format!("{}.sha256", image.iso_name));
    let mut sidecar = Staged::create(&sidecar_path)
        .with_context(|| format!("writing {}", sidecar_path.display()))?;
    sidecar
        .file()
        .write_all(format!("{hex}  {}\n", image.iso_name).as_bytes())
        .with_context(|| format!("writing {}", sidecar.tmp_path().display()))?;
    iso.commit()
        .with_context(|| format!("syncing and renaming {}", final_path.display()))?;
    pb.finish_and_clear();
    sidecar
        .commit()
        .with_context(|| format!("renaming to {}", sidecar_path.display()))?;
    let sums = out.join("SHA256SUMS");
    staged::write(&sums, sums_of_sidecars(&dir)?.as_bytes())
        .with_context(|| format!("writing {}", sums.display()))?;
    Ok(digest)
}

/// `nix build` leaves `result` as a link into the (read-only) store; like a new `nix build`, this
/// build replaces the link, not what it points to. Any other link is followed.
fn replace_nix_result_link(out: &Path) -> anyhow::Result<()> {
    let Ok(target) = std::fs::read_link(out) else {
        return Ok(());
    };
    if target.starts_with("/nix/store/") {
        tracing::info!(
            "{}: replacing the link to {} (left by nix build)",
            out.display(),
            target.display()
        );
        std::fs::remove_file(out)
            .map_err(|e| InputError::new(out, format!("cannot replace the link: {e}")))?;
    }
    Ok(())
}

/// SHA256SUMS for every ISO in `dir` with its sidecar (this build's and earlier ones'), sorted by
/// name, so `sha256sum -c SHA256SUMS` checks all that is there.
fn sums_of_sidecars(dir: &Path) -> anyhow::Result<String> {
    let mut sums = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        let Some(iso) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".sha256"))
        else {
            continue;
        };
        // Only sidecars as isofs writes them: `<hex>  <iso>`, naming the ISO next to them.
        let text = crate::regular_file::read_to_string(&path).unwrap_or_default();
        let hex = text
            .strip_suffix(&format!("  {iso}\n"))
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        match hex {
            Some(hex) if dir.join(iso).is_file() => sums.push((iso.to_string(), hex.to_string())),
            _ => tracing::warn!(
                "{}: not a sidecar of an ISO here; left out of SHA256SUMS",
                path.display()
            ),
        }
    }
    sums.sort();
    Ok(sums
        .iter()
        .map(|(iso, hex)| format!("{hex}  iso/{iso}\n"))
        .collect())
}

/// A `.zst` left by an earlier `--compress-image` build holds that build's image, not this one:
/// removed (and made again if asked for), so nothing in OUT/iso disagrees with the ISO next to it.
fn remove_stale_compressed(image: &HostImage, out: &Path) -> anyhow::Result<bool> {
    let stale = out.join("iso").join(format!("{}.zst", image.iso_name));
    // Only if there is one: on a read-only OUT even unlinking a missing file fails, and an OUT
    // that is not a directory is for `write_image` to report.
    if std::fs::symlink_metadata(&stale).is_err() {
        return Ok(false);
    }
    std::fs::remove_file(&stale).map_err(|e| {
        InputError::new(
            &stale,
            format!("cannot remove this earlier build's image: {e}"),
        )
    })?;
    Ok(true)
}

/// `isofs build --compress-image`: the cached `.zst` (made now if missing), copied next to the ISO.
fn write_compressed(image: &HostImage, cache: &Path, out: &Path) -> anyhow::Result<()> {
    let pb = bar(image.map.size(), "compressing");
    let cached = crate::compressed::cached(
        cache,
        &image.fingerprint,
        &*image.map,
        crate::compressed::LEVEL,
        &|n| pb.set_position(n),
    )?;
    pb.finish_and_clear();
    let dest = out.join("iso").join(format!("{}.zst", image.iso_name));
    let copy = || -> std::io::Result<()> {
        let mut staged = Staged::create(&dest)?;
        cached.copy_to(staged.file())?;
        staged.commit()
    };
    copy().with_context(|| format!("writing {}", dest.display()))?;
    println!("{}", dest.display());
    Ok(())
}

/// `isofs ventoy DEST`: every target planned, synced to DEST, then ventoy.json merged.
fn run_ventoy(dest: &Path, inputs: &InputArgs) -> anyhow::Result<()> {
    use crate::ventoy_copy::{self, Outcome};
    ventoy_copy::check_dest(dest)?;
    let settings = inputs.resolve()?;
    let planner = Planner::new(settings)?;
    let digests = crate::digest::DigestCache::new(&planner.settings.cache);
    let targets = planner.targets()?;
    let mut names = Vec::new();
    for host in &targets {
        let (m, _) = planner.manifest(host)?;
        names.push((
            m.iso_name(),
            host.clone(),
            m.release.clone(),
            m.is_minimal(),
        ));
    }
    let images: Vec<_> = names
        .iter()
        .map(
            |(iso_name, host, release, minimal)| crate::ventoy::VentoyImage {
                iso_name,
                host,
                release,
                minimal: *minimal,
            },
        )
        .collect();
    // Merged first: a ventoy.json the merge refuses is reported before gigabytes are copied.
    let json = ventoy_copy::merged_json(dest, &images)?;
    for host in &targets {
        let image = plan_with_progress(&planner, host)?;
        let size = image.map.size();
        let verify = bar(size, "verifying");
        let copy = bar(size, "copying");
        let outcome =
            ventoy_copy::sync_image(dest, &image, &digests, &|n| verify.set_position(n), &|n| {
                copy.set_position(n)
            })?;
        verify.finish_and_clear();
        copy.finish_and_clear();
        let what = match outcome {
            Outcome::Copied => "copied",
            Outcome::UpToDate => "up to date",
        };
        println!("{what}\t{}", dest.join(&image.iso_name).display());
    }
    // Unchanged (`None`): not rewritten.
    if let Some(text) = json {
        ventoy_copy::write_json(dest, &text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }
}
