//! A file tree as the formats see it: names as raw bytes, normalised metadata, file contents as
//! [`ExtentMap`]s. The ISO9660 and squashfs planners both take a [`Node`]; neither touches the disk
//! except through the contents' sources.

use crate::extent::{ExtentMap, InputFile};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Metadata that reaches the image. Only permission bits live in `mode`; the kind is in [`NodeKind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch. Inputs are normalised, so this never depends on when a file was touched.
    pub mtime: i64,
}

impl Meta {
    pub fn root(mode: u32, mtime: i64) -> Self {
        Meta {
            mode,
            uid: 0,
            gid: 0,
            mtime,
        }
    }
}

#[derive(Clone, Debug)]
pub enum NodeKind {
    /// Children sorted bytewise by name, names unique.
    Dir(Vec<Node>),
    File(Arc<ExtentMap>),
    Symlink(Vec<u8>),
}

#[derive(Clone, Debug)]
pub struct Node {
    pub name: Vec<u8>,
    pub meta: Meta,
    pub kind: NodeKind,
}

impl Node {
    pub fn dir(name: &str, meta: Meta, mut children: Vec<Node>) -> Node {
        children.sort_by(|a, b| a.name.cmp(&b.name));
        Node {
            name: name.as_bytes().to_vec(),
            meta,
            kind: NodeKind::Dir(children),
        }
    }

    pub fn file(name: &str, meta: Meta, content: ExtentMap) -> Node {
        Node {
            name: name.as_bytes().to_vec(),
            meta,
            kind: NodeKind::File(Arc::new(content)),
        }
    }

    pub fn children(&self) -> &[Node] {
        match &self.kind {
            NodeKind::Dir(c) => c,
            _ => &[],
        }
    }

    /// Looks up a `/`-separated path below this node.
    pub fn find(&self, path: &str) -> Option<&Node> {
        path.split('/')
            .filter(|c| !c.is_empty())
            .try_fold(self, |n, c| {
                n.children().iter().find(|ch| ch.name == c.as_bytes())
            })
    }

    /// Inserts `node` at `dir_path` (created with `dir_meta` where missing), keeping children sorted.
    /// A node of the same name is replaced, unless `Replace::No` asks for an error instead.
    pub fn insert(
        &mut self,
        dir_path: &str,
        node: Node,
        dir_meta: Meta,
        replace: Replace,
    ) -> Result<(), InsertError> {
        let mut cur = self;
        let mut at = String::new();
        for comp in dir_path.split('/').filter(|c| !c.is_empty()) {
            let NodeKind::Dir(children) = &mut cur.kind else {
                return Err(InsertError::NotADirectory(at));
            };
            at = format!("{at}/{comp}");
            let idx = match children.binary_search_by(|c| c.name.as_slice().cmp(comp.as_bytes())) {
                Ok(i) => i,
                Err(i) => {
                    children.insert(i, Node::dir(comp, dir_meta, Vec::new()));
                    i
                }
            };
            cur = &mut children[idx];
        }
        let NodeKind::Dir(children) = &mut cur.kind else {
            return Err(InsertError::NotADirectory(at));
        };
        match children.binary_search_by(|c| c.name.cmp(&node.name)) {
            Ok(_) if replace == Replace::No => Err(InsertError::Taken(format!(
                "{at}/{}",
                String::from_utf8_lossy(&node.name)
            ))),
            Ok(i) => {
                children[i] = node;
                Ok(())
            }
            Err(i) => {
                children.insert(i, node);
                Ok(())
            }
        }
    }

    /// Calls `f(path, node)` for every node, parents before children, in sorted order.
    pub fn visit<'a>(&'a self, prefix: &mut Vec<u8>, f: &mut impl FnMut(&[u8], &'a Node)) {
        f(prefix, self);
        for c in self.children() {
            let len = prefix.len();
            prefix.push(b'/');
            prefix.extend_from_slice(&c.name);
            c.visit(prefix, f);
            prefix.truncate(len);
        }
    }
}

/// How a directory on disk becomes a tree.
pub struct WalkOptions<'a> {
    /// The timestamp every node gets (Nix stores use 1).
    pub mtime: i64,
    /// Keep the source's permission bits (store paths) or reduce them to read-only `0444`/`0555`
    /// (flake trees, as Nix copies them into the store). Never grants more than the source had.
    pub read_only: bool,
    /// Relative paths (with `/`) to keep; directories are kept when they hold something kept.
    /// `None` keeps everything.
    pub keep: Option<&'a dyn Fn(&Path) -> bool>,
    /// Leave out a `.git` at the top (a flake checkout's; a store path's own `.git`, as
    /// `fetchgit { leaveDotGit = true; }` makes, is content).
    pub skip_root_git: bool,
}

/// Whether [`Node::insert`] may replace a node of the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replace {
    Yes,
    No,
}

#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    #[error("{0} is a file, not a directory")]
    NotADirectory(String),
    #[error("{0} is already taken")]
    Taken(String),
}

#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: a {what}, not a directory, file or symlink: nothing an image can hold")]
    Special { path: PathBuf, what: &'static str },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WalkError + '_ {
    move |source| WalkError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads the directory `root` into a tree named `name`. Symlinks are kept as links and never followed;
/// sockets, fifos and devices are skipped with a warning (an installer image has no use for them),
/// and refused as the root.
pub fn walk(root: &Path, name: &[u8], opts: &WalkOptions) -> Result<Node, WalkError> {
    let meta = std::fs::symlink_metadata(root).map_err(io_err(root))?;
    let refused = |what| WalkError::Special {
        path: root.to_path_buf(),
        what,
    };
    if let Some(what) = special(&meta.file_type()) {
        return Err(refused(what));
    }
    // The root is always kept, so only a special file comes back as nothing.
    walk_node(root, Path::new(""), name.to_vec(), &meta, opts)?
        .ok_or_else(|| refused("special file"))
}

/// What a file that is neither a directory, a regular file nor a symlink is, if it is one.
fn special(ft: &std::fs::FileType) -> Option<&'static str> {
    if ft.is_fifo() {
        Some("fifo")
    } else if ft.is_socket() {
        Some("socket")
    } else if ft.is_block_device() || ft.is_char_device() {
        Some("device node")
    } else {
        None
    }
}

fn walk_node(
    path: &Path,
    rel: &Path,
    name: Vec<u8>,
    meta: &std::fs::Metadata,
    opts: &WalkOptions,
) -> Result<Option<Node>, WalkError> {
    let ft = meta.file_type();
    let perm = meta.mode() & 0o7777;
    let mode = if opts.read_only {
        if ft.is_dir() || perm & 0o111 != 0 {
            perm & 0o555
        } else {
            0o444 & perm
        }
    } else {
        perm
    };
    let node_meta = Meta {
        mode,
        uid: 0,
        gid: 0,
        mtime: opts.mtime,
    };
    let is_root = rel.as_os_str().is_empty();
    let kept = || is_root || opts.keep.is_none_or(|k| k(rel));
    let kind = if ft.is_dir() {
        let mut children = Vec::new();
        // Names only: a `DirEntry` holds its directory open, which would cost one descriptor per
        // level of a deep tree for as long as its subtree is walked.
        let mut names: Vec<OsString> = std::fs::read_dir(path)
            .map_err(io_err(path))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io_err(path))?;
        names.sort();
        for fname in names {
            if opts.skip_root_git && is_root && fname == OsStr::new(".git") {
                continue;
            }
            let child_path = path.join(&fname);
            let child_meta = std::fs::symlink_metadata(&child_path).map_err(io_err(&child_path))?;
            let child_rel = rel.join(&fname);
            if let Some(n) = walk_node(
                &child_path,
                &child_rel,
                fname.as_bytes().to_vec(),
                &child_meta,
                opts,
            )? {
                children.push(n);
            }
        }
        if children.is_empty() && !kept() {
            return Ok(None);
        }
        // Already in name order: the names were sorted as bytes above.
        NodeKind::Dir(children)
    } else if !kept() {
        return Ok(None);
    } else if ft.is_symlink() {
        let target = std::fs::read_link(path).map_err(io_err(path))?;
        NodeKind::Symlink(target.as_os_str().as_bytes().to_vec())
    } else if ft.is_file() {
        let f = InputFile::open(path).map_err(io_err(path))?;
        NodeKind::File(Arc::new(ExtentMap::from_file(
            &String::from_utf8_lossy(rel.as_os_str().as_bytes()),
            f,
        )))
    } else {
        let what = special(&ft).unwrap_or("special file");
        tracing::warn!("{}: skipping {what}", path.display());
        return Ok(None);
    };
    Ok(Some(Node {
        name,
        meta: node_meta,
        kind,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_refuses_paths_through_files_and_taken_names() {
        let m = Meta::root(0o555, 1);
        let file = |n: &str| Node::file(n, m, ExtentMap::default());
        let mut t = Node::dir("", m, Vec::new());
        t.insert("boot", file("efi.img"), m, Replace::No).unwrap();
        assert!(matches!(
            t.insert("boot/efi.img", file("x"), m, Replace::Yes),
            Err(InsertError::NotADirectory(p)) if p == "/boot/efi.img"
        ));
        assert!(matches!(
            t.insert("boot", file("efi.img"), m, Replace::No),
            Err(InsertError::Taken(p)) if p == "/boot/efi.img"
        ));
        t.insert("boot", file("efi.img"), m, Replace::Yes).unwrap();
        assert_eq!(t.find("boot").unwrap().children().len(), 1);
    }

    #[test]
    fn walk_keeps_links_and_normalises() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink("../../etc/passwd", d.path().join("a/l")).unwrap();
        std::fs::create_dir(d.path().join(".git")).unwrap();
        let t = walk(
            d.path(),
            b"",
            &WalkOptions {
                mtime: 1,
                read_only: true,
                keep: None,
                skip_root_git: true,
            },
        )
        .unwrap();
        assert!(t.find(".git").is_none());
        assert!(
            matches!(t.find("a/l").unwrap().kind, NodeKind::Symlink(ref s) if s == b"../../etc/passwd")
        );
        let f = t.find("a/b/f").unwrap();
        assert_eq!(f.meta.mode & 0o222, 0);
        assert_eq!(f.meta.mtime, 1);
    }
}
