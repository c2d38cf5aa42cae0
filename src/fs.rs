//! The fuser adapter: each request is one call into [`Vfs`] and one reply.
//!
//! The tree and every file's bytes are fixed for the life of a mount, so attributes and entries get
//! long TTLs and opened files keep the page cache (`FOPEN_KEEP_CACHE`). Requests that wait for a
//! pending plan hold only their own worker thread, so several threads serve the rest meanwhile.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, KernelConfig, LockOwner, MountOption, OpenAccMode, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyXattr,
    Request, Session, SessionACL,
};

use crate::vfs::{Attr, Kind, Vfs, VfsError};

/// Largest read the kernel sends us; also the `max_read` mount option. The kernel caps requests at
/// `fs.fuse.max_pages_limit` pages (256, i.e. 1 MiB, by default); where that is raised, 4 MiB
/// requests mean a quarter of the round trips (about a tenth more throughput at FUSE's ceiling).
pub const MAX_READ: u32 = 4 << 20;

/// Nothing in a mounted tree ever changes.
const TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Reported block size: large, so `cp` and friends read in large requests.
const BLKSIZE: u32 = 1 << 20;

#[derive(Clone, Debug)]
pub struct FsOptions {
    /// The timestamp every file and directory shows (e.g. from `SOURCE_DATE_EPOCH`).
    pub mtime: SystemTime,
    /// Let users other than the mounting one read the tree.
    pub allow_other: bool,
    /// Shown as the mount's source in `/proc/mounts`.
    pub fs_name: String,
    /// Worker threads; at least 4 so waits for a plan do not stall the mount.
    pub threads: usize,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            mtime: SystemTime::UNIX_EPOCH,
            allow_other: false,
            fs_name: "isofs".into(),
            threads: 4,
        }
    }
}

pub struct IsoFs {
    vfs: Arc<Vfs>,
    mtime: SystemTime,
    uid: u32,
    gid: u32,
    /// Read failures already logged: the kernel retries a failed readahead page by page, and one
    /// changed input fails every read that touches it, so each is logged at error level once.
    logged: Mutex<HashSet<String>>,
}

impl IsoFs {
    pub fn new(vfs: Arc<Vfs>, opts: &FsOptions) -> Self {
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        IsoFs {
            vfs,
            mtime: opts.mtime,
            uid,
            gid,
            logged: Mutex::default(),
        }
    }

    /// The errno for `e`; read errors are logged here, naming the file, once per failure.
    fn errno(&self, e: VfsError) -> Errno {
        match e {
            VfsError::NotFound => Errno::ENOENT,
            VfsError::NotDir => Errno::ENOTDIR,
            VfsError::IsDir => Errno::EISDIR,
            VfsError::BadPath { .. } => Errno::EINVAL,
            e @ VfsError::Read { .. } => {
                let msg = e.to_string();
                let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
                if logged.contains(&msg) {
                    tracing::debug!("{msg}");
                } else {
                    if logged.len() < LOGGED_FAILURES {
                        logged.insert(msg.clone());
                    }
                    tracing::error!("{msg}");
                }
                Errno::EIO
            }
        }
    }

    fn attr(&self, a: &Attr) -> FileAttr {
        let (kind, perm) = match a.kind {
            Kind::Dir => (FileType::Directory, 0o555),
            Kind::File => (FileType::RegularFile, 0o444),
        };
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: a.size.div_ceil(512),
            atime: self.mtime,
            mtime: self.mtime,
            ctime: self.mtime,
            crtime: self.mtime,
            kind,
            perm,
            nlink: a.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLKSIZE,
            flags: 0,
        }
    }
}

/// How many different read failures a mount remembers having logged; past that, each is logged
/// again (memory stays bounded however many inputs go bad).
const LOGGED_FAILURES: usize = 4096;

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
    }
}

impl Filesystem for IsoFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Sizes the kernel's request pages (max_pages) so that reads of MAX_READ fit in one request;
        // the kernel clamps it to what it supports.
        let _ = config.set_max_write(MAX_READ);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str() else {
            return reply.error(Errno::ENOENT);
        };
        match self.vfs.lookup(parent.0, name) {
            Ok(a) => reply.entry(&TTL, &self.attr(&a), Generation(0)),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.vfs.getattr(ino.0) {
            Ok(a) => reply.attr(&TTL, &self.attr(&a)),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.vfs.open(ino.0) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // One buffer per worker thread, reused: a fresh one per request costs a page fault per
        // page, or a memset, for every byte served.
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUF.with_borrow_mut(|buf| {
            let size = size as usize;
            if buf.len() < size {
                buf.resize(size, 0);
            }
            match self.vfs.read(ino.0, offset, &mut buf[..size]) {
                Ok(n) => reply.data(&buf[..n]),
                Err(e) => reply.error(self.errno(e)),
            }
        });
    }

    // The calls below are what everyday readers (`ls -l`, `cp`, `close`, `test -w`) send besides
    // reads. fuser's defaults answer ENOSYS with a warning in the log; the answers here are what a
    // read-only filesystem without holes or extended attributes means.

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok()
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _data: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok()
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.vfs.getattr(ino.0) {
            Err(e) => reply.error(self.errno(e)),
            Ok(_) if mask.contains(AccessFlags::W_OK) => reply.error(Errno::EROFS),
            Ok(a) if a.kind == Kind::File && mask.contains(AccessFlags::X_OK) => {
                reply.error(Errno::EACCES)
            }
            Ok(_) => reply.ok(),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, _name: &OsStr, _size: u32, reply: ReplyXattr) {
        match self.vfs.getattr(ino.0) {
            Ok(_) => reply.error(Errno::NO_XATTR),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        // A caller asks for the length with size 0, for the list itself otherwise.
        match self.vfs.getattr(ino.0) {
            Ok(_) if size == 0 => reply.size(0),
            Ok(_) => reply.data(&[]),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    /// The kernel asks only for SEEK_DATA and SEEK_HOLE: every byte is data.
    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let size = match self.vfs.getattr(ino.0) {
            Ok(a) => a.size as i64,
            Err(e) => return reply.error(self.errno(e)),
        };
        match whence {
            _ if offset < 0 => reply.error(Errno::EINVAL),
            libc::SEEK_DATA | libc::SEEK_HOLE if offset >= size => reply.error(Errno::ENXIO),
            libc::SEEK_DATA => reply.offset(offset),
            libc::SEEK_HOLE => reply.offset(size),
            _ => reply.error(Errno::EINVAL),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.vfs.readdir(ino.0) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.vfs.readdir(ino.0) {
            Ok(entries) => {
                // An entry's offset is the index of the one after it, where the next call resumes.
                for (i, e) in entries.iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(e.ino), i as u64 + 1, file_type(e.kind), &e.name) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let (files, bytes) = self.vfs.usage();
        let bsize = BLKSIZE as u64;
        reply.statfs(bytes.div_ceil(bsize), 0, 0, files, 0, BLKSIZE, 255, BLKSIZE);
    }
}

/// The fuser configuration for a read-only isofs mount.
pub fn config(opts: &FsOptions) -> Config {
    let mut c = Config::default();
    c.mount_options = vec![
        MountOption::RO,
        MountOption::NoExec,
        MountOption::NoAtime,
        MountOption::FSName(opts.fs_name.clone()),
        // As a kernel option (fuser hands `Subtype` only to fusermount3), so that mounts made as
        // root show as `fuse.isofs` too, as mount(8), findmnt -t and `isofs umount` expect.
        MountOption::CUSTOM("subtype=isofs".into()),
        MountOption::CUSTOM(format!("max_read={MAX_READ}")),
    ];
    c.acl = if opts.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    c.n_threads = Some(opts.threads.max(4));
    c.clone_fd = true;
    c
}

/// Mounts `vfs` on `mountpoint` (the kernel handshake is done when this returns). Requests are
/// served once the session runs (`run`, or `spawn` for a background thread); dropping it unmounts.
pub fn session(vfs: Arc<Vfs>, mountpoint: &Path, opts: &FsOptions) -> io::Result<Session<IsoFs>> {
    Session::new(IsoFs::new(vfs, opts), mountpoint, &config(opts))
}
