//! The flake: which hosts get an ISO (`isoHosts` in flake.nix) and the tree embedded at `/nixos-flake`.

use super::InputError;
use crate::tree::{self, Node, NodeKind, WalkOptions};
use rnix::ast::{self, InterpolPart};
use rowan::ast::AstNode;
use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Hosts must be usable as a hostname, a file name and inside a volume ID.
pub fn validate_host(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty host name".into());
    }
    if name.len() > 63 {
        return Err(format!("host name '{name}' is longer than 63 characters"));
    }
    if name.starts_with('-') {
        return Err(format!("host name '{name}' starts with '-'"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "host name {name:?} contains {c:?}: only letters, digits, '-' and '_' are allowed"
        ));
    }
    Ok(())
}

fn line_of(src: &str, node: &rnix::SyntaxNode) -> usize {
    let offset: usize = node.text_range().start().into();
    src[..offset].matches('\n').count() + 1
}

/// The string literals of `isoHosts = [ ... ];`, wherever the binding sits (let-in or attribute set).
pub fn hosts_from_source(file: &Path, src: &str) -> Result<Vec<String>, InputError> {
    let parse = rnix::Root::parse(src);
    if let Some(e) = parse.errors().first() {
        return Err(InputError::new(file, format!("cannot parse: {e}")));
    }
    let root = parse.tree();
    let binding = root
        .syntax()
        .descendants()
        .filter_map(ast::AttrpathValue::cast)
        .find(|apv| {
            apv.attrpath().is_some_and(|p| {
                let attrs: Vec<_> = p.attrs().collect();
                matches!(attrs.as_slice(), [ast::Attr::Ident(i)] if i.to_string() == "isoHosts")
            })
        })
        .ok_or_else(|| {
            InputError::field(file, "isoHosts", "no `isoHosts = [ ... ];` binding found")
        })?;
    let value = binding
        .value()
        .ok_or_else(|| InputError::field(file, "isoHosts", "binding has no value"))?;
    let ast::Expr::List(list) = value else {
        return Err(InputError::field(
            file,
            "isoHosts",
            format!(
                "line {}: not a literal list (cannot tell statically)",
                line_of(src, binding.syntax())
            ),
        ));
    };
    let mut hosts = Vec::new();
    for item in list.items() {
        let line = line_of(src, item.syntax());
        let literal = match &item {
            ast::Expr::Str(s) => {
                let parts = s.normalized_parts();
                match parts.as_slice() {
                    [InterpolPart::Literal(l)] => Some(l.clone()),
                    _ => None,
                }
            }
            _ => None,
        };
        let name = literal.ok_or_else(|| {
            InputError::field(
                file,
                "isoHosts",
                format!("line {line}: entry `{item}` is not a string literal"),
            )
        })?;
        validate_host(&name)
            .map_err(|m| InputError::field(file, "isoHosts", format!("line {line}: {m}")))?;
        if hosts.contains(&name) {
            return Err(InputError::field(
                file,
                "isoHosts",
                format!("line {line}: host '{name}' listed twice"),
            ));
        }
        // FAT and exFAT, where Ventoy keeps ISOs, fold case: one image would replace the other.
        if let Some(other) = hosts.iter().find(|h| h.eq_ignore_ascii_case(&name)) {
            return Err(InputError::field(
                file,
                "isoHosts",
                format!(
                    "line {line}: hosts '{other}' and '{name}' differ only in case; their ISOs \
                     would overwrite each other on a FAT or exFAT stick"
                ),
            ));
        }
        hosts.push(name);
    }
    if hosts.is_empty() {
        return Err(InputError::field(file, "isoHosts", "the list is empty"));
    }
    Ok(hosts)
}

/// Hosts of the flake in `dir`.
pub fn hosts(dir: &Path) -> Result<Vec<String>, InputError> {
    let file = dir.join("flake.nix");
    let src = crate::regular_file::read_to_string(&file)
        .map_err(|e| InputError::new(&file, e.to_string()))?;
    hosts_from_source(&file, &src)
}

/// The files git tracks below `dir`, relative to it; `None` when `dir` is not in a git work tree.
fn git_tracked(dir: &Path) -> Option<HashSet<PathBuf>> {
    use std::os::unix::ffi::OsStrExt;
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["ls-files", "-z", "--cached"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(
        out.stdout
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| PathBuf::from(std::ffi::OsStr::from_bytes(p)))
            .collect(),
    )
}

/// What Nix would put in `self`: in a git checkout the tracked files (working-tree contents), otherwise
/// the whole tree; never `.git`. Modes reduced to read-only, times normalised to 1 as in the store.
///
/// A flake directory inside someone else's checkout with an untracked flake.nix (Nix would refuse it)
/// is taken whole, with a warning, rather than embedded empty.
pub fn flake_tree(dir: &Path) -> Result<Node, InputError> {
    let tracked = git_tracked(dir).filter(|t| {
        let ok = t.contains(Path::new("flake.nix"));
        if !ok {
            tracing::warn!(
                "{}: flake.nix is not tracked by the enclosing git checkout; embedding the whole directory",
                dir.display()
            );
        }
        ok
    });
    // Outside git, Nix would take `result` links as links; isofs's `result` is a directory holding
    // the ISOs, and embedding it would put each build's image into the next one.
    let outputs = if tracked.is_none() {
        build_outputs(dir)
    } else {
        Vec::new()
    };
    for out in &outputs {
        tracing::info!(
            "{}: left out of /nixos-flake (a build output; a git flake would not track it)",
            dir.join(out).display()
        );
    }
    let keep = |rel: &Path| match &tracked {
        Some(t) => t.contains(rel),
        None => !outputs.iter().any(|o| rel.starts_with(o)),
    };
    let opts = WalkOptions {
        mtime: 1,
        read_only: true,
        keep: Some(&keep),
        skip_root_git: true,
    };
    // The flake itself, not a link to it: `--flake ~/nixos` may well be a symlink.
    let real = dir
        .canonicalize()
        .map_err(|e| InputError::new(dir, e.to_string()))?;
    let mut root = tree::walk(&real, b"nixos-flake", &opts)
        .map_err(|e| InputError::new(dir, e.to_string()))?;
    drop_long_links(&mut root, dir);
    Ok(root)
}

/// `result` and `result-*` at the top of `dir`, as links or directories: where `nix build` and
/// `isofs build` put their outputs (and what every flake's .gitignore lists). A file such as
/// `result-parser.nix` is source, and stays.
fn build_outputs(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            is_output_name(e.file_name().as_bytes())
                && e.file_type().is_ok_and(|t| t.is_dir() || t.is_symlink())
        })
        .map(|e| PathBuf::from(e.file_name()))
        .collect();
    found.sort();
    found
}

/// Whether a build written to `out` would end up in the next image's /nixos-flake: `out` is inside
/// a flake that is not a git checkout, under a name other than `result`/`result-*`.
pub fn would_embed(flake: &Path, out: &Path) -> bool {
    let (Ok(flake), Ok(out)) = (flake.canonicalize(), std::path::absolute(out)) else {
        return false;
    };
    let Some(first) = out
        .strip_prefix(&flake)
        .ok()
        .and_then(|r| r.components().next())
    else {
        return false;
    };
    !is_output_name(first.as_os_str().as_bytes()) && git_tracked(&flake).is_none()
}

fn is_output_name(name: &[u8]) -> bool {
    name == b"result" || name.starts_with(b"result-")
}

/// Symlink targets this long are valid Rock Ridge, and Linux reads them, but libisofs (xorriso,
/// osirrox) refuses to load an image holding one at all, so such a link would cost users every
/// xorriso-based tool on the whole ISO. xorriso does not write them either.
const LIBISOFS_LINK_MAX: usize = 1024;

/// Leaves out links with targets of [`LIBISOFS_LINK_MAX`] bytes or more, each with a warning.
fn drop_long_links(node: &mut Node, path: &Path) {
    if let NodeKind::Dir(children) = &mut node.kind {
        children.retain_mut(|c| {
            let child = path.join(std::ffi::OsStr::from_bytes(&c.name));
            match &c.kind {
                NodeKind::Symlink(t) if t.len() >= LIBISOFS_LINK_MAX => {
                    tracing::warn!(
                        "{}: skipping symlink: its {}-byte target would make the ISO unreadable to xorriso (limit {})",
                        child.display(),
                        t.len(),
                        LIBISOFS_LINK_MAX - 1
                    );
                    false
                }
                _ => {
                    drop_long_links(c, &child);
                    true
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Output links and directories go; a source file with a similar name, and `results/`, stay.
    #[test]
    fn build_outputs_are_links_or_directories_named_result() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("result")).unwrap();
        std::os::unix::fs::symlink("/nix/store/x-dev", d.path().join("result-dev")).unwrap();
        std::fs::write(d.path().join("result-parser.nix"), "{ }").unwrap();
        std::fs::create_dir(d.path().join("results")).unwrap();
        assert_eq!(
            build_outputs(d.path()),
            [PathBuf::from("result"), PathBuf::from("result-dev")]
        );
    }

    fn parse(src: &str) -> Result<Vec<String>, InputError> {
        hosts_from_source(Path::new("flake.nix"), src)
    }

    #[test]
    fn finds_hosts_in_let_and_attrsets() {
        let let_in =
            r#"{ outputs = { self, ... }: let isoHosts = [ "shinji" "kenpachi" ]; in { }; }"#;
        assert_eq!(parse(let_in).unwrap(), ["shinji", "kenpachi"]);
        let attrs = r#"{ isoHosts = [ "a" ]; }"#;
        assert_eq!(parse(attrs).unwrap(), ["a"]);
    }

    #[test]
    fn rejects_bad_hosts() {
        for (src, needle) in [
            ("{ isoHosts = [ ]; }", "empty"),
            ("{ x = 1; }", "no `isoHosts"),
            ("{ isoHosts = [ \"a/b\" ]; }", "contains '/'"),
            ("{ isoHosts = [ \"..\" ]; }", "contains '.'"),
            ("{ isoHosts = [ \"a b\" ]; }", "contains ' '"),
            ("{ isoHosts = [ \"a${x}\" ]; }", "not a string literal"),
            ("{ isoHosts = [ foo ]; }", "not a string literal"),
            ("{ isoHosts = map f [ ]; }", "not a literal list"),
            ("{ isoHosts = [ \"a\" \"a\" ]; }", "twice"),
            ("{ isoHosts = [ ", "cannot parse"),
        ] {
            let e = parse(src).unwrap_err().to_string();
            assert!(e.contains(needle), "{src}: {e}");
        }
    }
}
