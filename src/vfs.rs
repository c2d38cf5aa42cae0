//! The mount's pure core: a small, fixed tree of virtual files, free of FUSE types.
//!
//! The tree is built before mounting and never changes afterwards, so inode numbers are assigned
//! once, in insertion order (root = 1), and are the same on every mount of the same tree. A file's
//! bytes may still be planned in the background ([`Pending`]): only readers of that file wait.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};

use crate::extent::{ExtentMap, ReadError};

/// A virtual file: an exact size and the bytes at any offset. Implementations never change their
/// answers, so the kernel may cache both.
pub trait VirtualFile: Send + Sync {
    /// The exact size; may block until the file's plan is ready.
    fn size(&self) -> Result<u64, ReadError>;
    /// Fills `buf` from `offset`; returns fewer bytes than asked only at end of file.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, ReadError>;
    /// The size if it is known without waiting; `statfs` must not stall on a plan.
    fn size_if_ready(&self) -> Option<u64> {
        self.size().ok()
    }
}

impl VirtualFile for ExtentMap {
    fn size(&self) -> Result<u64, ReadError> {
        Ok(ExtentMap::size(self))
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, ReadError> {
        ExtentMap::read_at(self, offset, buf)
    }
}

/// A file whose map is planned in the background. The planner calls [`Pending::set`] once; until
/// then `size` and `read_at` wait, for this file only.
#[derive(Default)]
pub struct Pending {
    plan: Mutex<Option<Result<Arc<ExtentMap>, String>>>,
    ready: Condvar,
}

impl Pending {
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes the plan (or why planning failed) and wakes every waiting reader. Only the first
    /// call counts: bytes already served must never change.
    pub fn set(&self, plan: Result<Arc<ExtentMap>, String>) {
        let mut slot = self.plan.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(plan);
            self.ready.notify_all();
        }
    }

    /// Waits for the plan.
    pub fn wait(&self) -> Result<Arc<ExtentMap>, ReadError> {
        let mut slot = self.plan.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match &*slot {
                Some(plan) => return plan.clone().map_err(planning_failed),
                None => slot = self.ready.wait(slot).unwrap_or_else(|p| p.into_inner()),
            }
        }
    }

    fn try_get(&self) -> Option<Result<Arc<ExtentMap>, String>> {
        self.plan.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn planning_failed(why: String) -> ReadError {
    ReadError::Corrupt(format!("planning failed: {why}"))
}

impl VirtualFile for Pending {
    fn size(&self) -> Result<u64, ReadError> {
        Ok(self.wait()?.size())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, ReadError> {
        self.wait()?.read_at(offset, buf)
    }

    fn size_if_ready(&self) -> Option<u64> {
        self.try_get()?.ok().map(|m| m.size())
    }
}

pub const ROOT_INO: u64 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    /// Bytes for a file; 0 for a directory.
    pub size: u64,
    pub nlink: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub kind: Kind,
    pub name: String,
}

/// Why a request cannot be answered; `fs.rs` maps each to one errno.
#[derive(Debug, thiserror::Error)]
pub enum VfsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("/{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: ReadError,
    },
    #[error("cannot add {path:?}: {why}")]
    BadPath { path: String, why: &'static str },
}

enum Node {
    Dir {
        parent: u64,
        children: BTreeMap<String, u64>,
    },
    File(Arc<dyn VirtualFile>),
}

struct Entry {
    /// Path from the root without a leading slash ("" for the root), for error messages.
    path: String,
    node: Node,
}

/// The mounted tree. Directory listings are sorted by name, so they are deterministic too.
pub struct Vfs {
    /// Inode `n` lives at index `n - 1`.
    entries: Vec<Entry>,
}

impl Default for Vfs {
    fn default() -> Self {
        Self::new()
    }
}

impl Vfs {
    pub fn new() -> Self {
        Vfs {
            entries: vec![Entry {
                path: String::new(),
                node: Node::Dir {
                    parent: ROOT_INO,
                    children: BTreeMap::new(),
                },
            }],
        }
    }

    /// Adds a file at `path` ("a.iso", "ventoy/ventoy.json"), creating missing directories, and
    /// returns its inode number.
    pub fn add_file(&mut self, path: &str, file: Arc<dyn VirtualFile>) -> Result<u64, VfsError> {
        let bad = |why| VfsError::BadPath {
            path: path.to_string(),
            why,
        };
        let parts: Vec<&str> = path.split('/').collect();
        if parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == ".." || p.contains('\0'))
        {
            return Err(bad("empty, '.', '..' or NUL component"));
        }
        let (name, dirs) = parts.split_last().ok_or_else(|| bad("empty path"))?;
        let mut dir = ROOT_INO;
        for d in dirs {
            dir = match self.child(dir, d) {
                Some(ino) if matches!(self.entry(ino)?.node, Node::Dir { .. }) => ino,
                Some(_) => return Err(bad("a parent is a file")),
                None => self.insert(dir, d, |_| Node::Dir {
                    parent: dir,
                    children: BTreeMap::new(),
                })?,
            };
        }
        if self.child(dir, name).is_some() {
            return Err(bad("already exists"));
        }
        self.insert(dir, name, |_| Node::File(file))
    }

    fn insert(
        &mut self,
        dir: u64,
        name: &str,
        node: impl FnOnce(u64) -> Node,
    ) -> Result<u64, VfsError> {
        let ino = self.entries.len() as u64 + 1;
        let parent = self.entry(dir)?;
        let path = if parent.path.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", parent.path)
        };
        match &mut self.entries[(dir - 1) as usize].node {
            Node::Dir { children, .. } => children.insert(name.to_string(), ino),
            Node::File(_) => return Err(VfsError::NotDir),
        };
        self.entries.push(Entry {
            path,
            node: node(ino),
        });
        Ok(ino)
    }

    fn entry(&self, ino: u64) -> Result<&Entry, VfsError> {
        ino.checked_sub(1)
            .and_then(|i| self.entries.get(i as usize))
            .ok_or(VfsError::NotFound)
    }

    fn child(&self, dir: u64, name: &str) -> Option<u64> {
        match &self.entry(dir).ok()?.node {
            Node::Dir { children, .. } => children.get(name).copied(),
            Node::File(_) => None,
        }
    }

    /// The path of `ino` from the root, without a leading slash.
    pub fn path(&self, ino: u64) -> Result<&str, VfsError> {
        Ok(&self.entry(ino)?.path)
    }

    pub fn lookup(&self, parent: u64, name: &str) -> Result<Attr, VfsError> {
        match &self.entry(parent)?.node {
            Node::Dir { children, .. } => {
                let ino = *children.get(name).ok_or(VfsError::NotFound)?;
                self.getattr(ino)
            }
            Node::File(_) => Err(VfsError::NotDir),
        }
    }

    /// Attributes of `ino`; waits for a pending file's plan, since sizes must be exact.
    pub fn getattr(&self, ino: u64) -> Result<Attr, VfsError> {
        let entry = self.entry(ino)?;
        Ok(match &entry.node {
            Node::Dir { children, .. } => Attr {
                ino,
                kind: Kind::Dir,
                size: 0,
                nlink: 2 + children
                    .values()
                    .filter(|c| matches!(self.entries[(**c - 1) as usize].node, Node::Dir { .. }))
                    .count() as u32,
            },
            Node::File(f) => Attr {
                ino,
                kind: Kind::File,
                size: f.size().map_err(|e| read_error(entry, e))?,
                nlink: 1,
            },
        })
    }

    /// `.`, `..` and the children sorted by name; never waits for a plan.
    pub fn readdir(&self, ino: u64) -> Result<Vec<DirEntry>, VfsError> {
        match &self.entry(ino)?.node {
            Node::Dir { parent, children } => {
                let mut out = vec![
                    DirEntry {
                        ino,
                        kind: Kind::Dir,
                        name: ".".into(),
                    },
                    DirEntry {
                        ino: *parent,
                        kind: Kind::Dir,
                        name: "..".into(),
                    },
                ];
                out.extend(children.iter().map(|(name, &c)| DirEntry {
                    ino: c,
                    kind: match self.entries[(c - 1) as usize].node {
                        Node::Dir { .. } => Kind::Dir,
                        Node::File(_) => Kind::File,
                    },
                    name: name.clone(),
                }));
                Ok(out)
            }
            Node::File(_) => Err(VfsError::NotDir),
        }
    }

    /// Checks that `ino` is a file that may be opened.
    pub fn open(&self, ino: u64) -> Result<(), VfsError> {
        match self.entry(ino)?.node {
            Node::File(_) => Ok(()),
            Node::Dir { .. } => Err(VfsError::IsDir),
        }
    }

    /// Fills `buf` from `offset`, all of it except at end of file; returns the bytes filled.
    pub fn read(&self, ino: u64, offset: u64, buf: &mut [u8]) -> Result<usize, VfsError> {
        let entry = self.entry(ino)?;
        let Node::File(f) = &entry.node else {
            return Err(VfsError::IsDir);
        };
        let len = f.size().map_err(|e| read_error(entry, e))?;
        let want = (buf.len() as u64).min(len.saturating_sub(offset)) as usize;
        let mut done = 0;
        while done < want {
            let n = f
                .read_at(offset + done as u64, &mut buf[done..])
                .map_err(|e| read_error(entry, e))?;
            if n == 0 {
                return Err(read_error(
                    entry,
                    ReadError::Corrupt(format!(
                        "ended at {} before its size {len}",
                        offset + done as u64
                    )),
                ));
            }
            done += n;
        }
        Ok(want)
    }

    /// Number of inodes, and the bytes of every file whose size is known without waiting.
    pub fn usage(&self) -> (u64, u64) {
        let bytes = self
            .entries
            .iter()
            .filter_map(|e| match &e.node {
                Node::File(f) => f.size_if_ready(),
                Node::Dir { .. } => None,
            })
            .sum();
        (self.entries.len() as u64, bytes)
    }
}

fn read_error(entry: &Entry, source: ReadError) -> VfsError {
    VfsError::Read {
        path: entry.path.clone(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(bytes: &[u8]) -> Arc<dyn VirtualFile> {
        Arc::new(ExtentMap::from_bytes("t", bytes.to_vec()))
    }

    #[test]
    fn tree_inodes_and_listing_are_deterministic() {
        let mut v = Vfs::new();
        assert_eq!(v.add_file("b.iso", map(b"bb")).unwrap(), 2);
        assert_eq!(v.add_file("ventoy/ventoy.json", map(b"{}")).unwrap(), 4);
        assert_eq!(v.add_file("a.iso", map(b"a")).unwrap(), 5);
        let names: Vec<_> = v
            .readdir(ROOT_INO)
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.ino))
            .collect();
        assert_eq!(
            names,
            [
                (".", 1),
                ("..", 1),
                ("a.iso", 5),
                ("b.iso", 2),
                ("ventoy", 3)
            ]
            .map(|(n, i)| (n.to_string(), i))
        );
        let d = v.lookup(ROOT_INO, "ventoy").unwrap();
        assert_eq!((d.kind, d.ino), (Kind::Dir, 3));
        assert_eq!(v.getattr(ROOT_INO).unwrap().nlink, 3);
        assert_eq!(v.lookup(3, "ventoy.json").unwrap().size, 2);
        assert_eq!(v.path(4).unwrap(), "ventoy/ventoy.json");
        assert!(matches!(v.lookup(2, "x"), Err(VfsError::NotDir)));
        assert!(matches!(v.lookup(1, "x"), Err(VfsError::NotFound)));
        assert!(matches!(v.getattr(99), Err(VfsError::NotFound)));
        assert!(matches!(v.getattr(0), Err(VfsError::NotFound)));
    }

    #[test]
    fn bad_paths_are_refused() {
        let mut v = Vfs::new();
        v.add_file("a", map(b"")).unwrap();
        for p in ["", "/x", "x/", "a", "a/b", "x/../y", "./x"] {
            assert!(
                matches!(v.add_file(p, map(b"")), Err(VfsError::BadPath { .. })),
                "{p}"
            );
        }
    }

    fn read(v: &Vfs, ino: u64, offset: u64, size: usize) -> Result<Vec<u8>, VfsError> {
        let mut buf = vec![0xAA; size];
        let n = v.read(ino, offset, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    #[test]
    fn reads_are_exact_except_at_eof() {
        let mut v = Vfs::new();
        let ino = v.add_file("f", map(b"0123456789")).unwrap();
        assert_eq!(read(&v, ino, 2, 3).unwrap(), b"234");
        assert_eq!(read(&v, ino, 8, 100).unwrap(), b"89");
        assert!(read(&v, ino, 10, 5).unwrap().is_empty());
        assert!(read(&v, ino, u64::MAX, 5).unwrap().is_empty());
        assert!(matches!(read(&v, ROOT_INO, 0, 1), Err(VfsError::IsDir)));
        assert_eq!(v.usage(), (2, 10));
    }

    #[test]
    fn pending_waits_for_its_plan() {
        let p = Arc::new(Pending::new());
        let mut v = Vfs::new();
        let ino = v.add_file("late.iso", p.clone()).unwrap();
        assert_eq!(v.readdir(ROOT_INO).unwrap().len(), 3);
        assert_eq!(v.usage(), (2, 0));
        let v = Arc::new(v);
        let reader = {
            let v = v.clone();
            std::thread::spawn(move || read(&v, ino, 1, 2).unwrap())
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!reader.is_finished());
        p.set(Ok(Arc::new(ExtentMap::from_bytes("x", b"abc".to_vec()))));
        p.set(Err("ignored: the first plan stays".into()));
        assert_eq!(reader.join().unwrap(), b"bc");
        assert_eq!(v.getattr(ino).unwrap().size, 3);
    }

    #[test]
    fn failed_plan_is_a_read_error_naming_the_file() {
        let p = Arc::new(Pending::new());
        let mut v = Vfs::new();
        let ino = v.add_file("dir/bad.iso", p.clone()).unwrap();
        p.set(Err("manifest missing".into()));
        let e = v.getattr(ino).unwrap_err().to_string();
        assert!(
            e.contains("/dir/bad.iso") && e.contains("manifest missing"),
            "{e}"
        );
    }
}
