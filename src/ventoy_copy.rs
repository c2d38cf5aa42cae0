//! `isofs ventoy DEST`: puts every image, its `.sha256` sidecar and our `ventoy.json` entries on a
//! mounted Ventoy data partition, replacing only stale images.
//!
//! An image on DEST is current when its size is ours and its sidecar holds our digest; our digest
//! comes from the digest cache (keyed by the plan's fingerprint), so a rerun reads nothing but two
//! small files per image. Everything is written under a temporary name, synced, then renamed and
//! the directory synced: a failed or interrupted copy never leaves a partial image under the final
//! name, and a crash between image and sidecar leaves a sidecar that no longer matches, which the
//! next run treats as stale.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::digest::{copy_hashing, DigestCache, StreamError};
use crate::extent::ReadError;
use crate::image::HostImage;
use crate::staged::{self, Staged};
use crate::ventoy::{merge_ventoy_json, ventoy_json, VentoyImage, VentoyJsonError};

#[derive(Debug, thiserror::Error)]
pub enum VentoyError {
    #[error("{}: {why} (give the mounted Ventoy data partition)", path.display())]
    BadDest { path: PathBuf, why: String },
    // The cause is in the message, not a `source`: anyhow's `{:#}` would print it twice.
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: io::Error },
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{}: {err}; left unchanged", path.display())]
    Json { path: PathBuf, err: VentoyJsonError },
    #[error("{name}: copied bytes hash to {copied}, but this plan's digest is {expected}")]
    Mismatch {
        name: String,
        copied: String,
        expected: String,
    },
}

impl VentoyError {
    /// The user's to fix (the destination, their ventoy.json): the CLI exits 2 on it.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, VentoyError::BadDest { .. } | VentoyError::Json { .. })
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> VentoyError + '_ {
    move |err| VentoyError::Io {
        path: path.to_path_buf(),
        err,
    }
}

/// What [`sync_image`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Copied,
    UpToDate,
}

/// Checks that `dest` is a directory before anything is planned.
pub fn check_dest(dest: &Path) -> Result<(), VentoyError> {
    match std::fs::metadata(dest) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(VentoyError::BadDest {
            path: dest.to_path_buf(),
            why: "not a directory".into(),
        }),
        Err(e) => Err(VentoyError::BadDest {
            path: dest.to_path_buf(),
            why: e.to_string(),
        }),
    }
}

/// Makes `dest/<iso name>` and its sidecar hold `image`, unless they already do. `verify` reports
/// bytes hashed to learn our digest (only when DEST's copy looks current but the digest cache has
/// no entry); `copy` reports bytes copied.
pub fn sync_image(
    dest: &Path,
    image: &HostImage,
    digests: &DigestCache,
    verify: &dyn Fn(u64),
    copy: &dyn Fn(u64),
) -> Result<Outcome, VentoyError> {
    let name = &image.iso_name;
    let target = dest.join(name);
    let sidecar = dest.join(format!("{name}.sha256"));
    let size = image.map.size();
    let known = digests.get(&image.fingerprint);
    let same_size = std::fs::metadata(&target).is_ok_and(|m| m.is_file() && m.len() == size);
    if same_size {
        if let Some(theirs) = sidecar_digest(&sidecar) {
            let ours = match known {
                Some(d) => d,
                None => digests.digest(&image.fingerprint, &*image.map, verify)?,
            };
            if theirs == ours {
                return Ok(Outcome::UpToDate);
            }
        }
    }
    let copied = write_synced(dest, name, |f| {
        let copied = copy_image(image, f, &target, copy)?;
        match known.filter(|k| *k != copied) {
            // Nothing reaches the final name. Which of the two is wrong cannot be told here: the
            // record goes, and the next run judges the image by its own hash.
            Some(expected) => {
                digests.forget(&image.fingerprint);
                Err(VentoyError::Mismatch {
                    name: name.clone(),
                    copied: hex::encode(copied),
                    expected: hex::encode(expected),
                })
            }
            None => Ok(copied),
        }
    })?;
    digests.put(&image.fingerprint, &copied);
    let line = format!("{}  {name}\n", hex::encode(copied));
    write_synced(dest, &format!("{name}.sha256"), |f| {
        f.write_all(line.as_bytes()).map_err(io_err(&sidecar))
    })?;
    Ok(Outcome::Copied)
}

/// The digest a `sha256sum` sidecar names, if it holds a well-formed one.
fn sidecar_digest(path: &Path) -> Option<[u8; 32]> {
    let text = crate::regular_file::read_to_string(path).ok()?;
    let hex_part = text.split_whitespace().next()?;
    let mut d = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut d).ok()?;
    Some(d)
}

/// Copies `image` into `f`, the staged file for `target` (which a write error names).
fn copy_image(
    image: &HostImage,
    f: &mut File,
    target: &Path,
    progress: &dyn Fn(u64),
) -> Result<[u8; 32], VentoyError> {
    copy_hashing(&*image.map, f, progress).map_err(|e| match e {
        StreamError::Read(e) => e.into(),
        StreamError::Write(err) => io_err(target)(err),
    })
}

/// Writes `dir/name` through a staged temporary: `fill`, fsync, rename, fsync the directory. On
/// failure the temporary is removed and `dir/name` is untouched.
fn write_synced<T>(
    dir: &Path,
    name: &str,
    fill: impl FnOnce(&mut File) -> Result<T, VentoyError>,
) -> Result<T, VentoyError> {
    let target = dir.join(name);
    let mut staged = Staged::create(&target).map_err(io_err(&target))?;
    let v = fill(staged.file())?;
    staged.commit().map_err(io_err(&target))?;
    staged::sync_dir(dir).map_err(io_err(dir))?;
    Ok(v)
}

/// What `dest/ventoy/ventoy.json` becomes with our entries (the whole file when there is none);
/// `None` when it would not change. The user's other keys and other images' entries stay.
pub fn merged_json(dest: &Path, images: &[VentoyImage]) -> Result<Option<String>, VentoyError> {
    let path = dest.join("ventoy").join("ventoy.json");
    match crate::regular_file::read_to_string(&path) {
        Ok(old) => {
            // Windows editors may leave a byte order mark, which JSON parsers reject.
            let body = old.strip_prefix('\u{feff}').unwrap_or(&old);
            let new =
                merge_ventoy_json(body, images).map_err(|err| VentoyError::Json { path, err })?;
            Ok((new != old).then_some(new))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Some(ventoy_json(images))),
        // Latin-1 bytes, a directory or a fifo in its place: the user's file to mend.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::InvalidData
                    | io::ErrorKind::InvalidInput
                    | io::ErrorKind::IsADirectory
            ) =>
        {
            Err(VentoyError::Json {
                path,
                err: VentoyJsonError::NotText(e),
            })
        }
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// Writes `text` (from [`merged_json`]) as `dest/ventoy/ventoy.json`.
pub fn write_json(dest: &Path, text: &str) -> Result<(), VentoyError> {
    let dir = dest.join("ventoy");
    let path = dir.join("ventoy.json");
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    write_synced(&dir, "ventoy.json", |f| {
        f.write_all(text.as_bytes()).map_err(io_err(&path))
    })
}
