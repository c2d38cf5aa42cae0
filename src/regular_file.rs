//! Opening by path files that should be regular files, without waiting on anything else.
//!
//! Inputs and cache entries are opened by path, and anyone who can write there can put a fifo in a
//! file's place: `open(2)` of a fifo waits for a writer, forever, holding the thread that asked (in
//! a mount, every FUSE worker that touches the file, until the whole mount stands still). Opened
//! with `O_NONBLOCK`, a fifo opens at once and is then refused by its type; the flag changes
//! nothing for a regular file.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Opens `path` for reading without waiting for a fifo's writer. The caller looks at what it got
/// (`metadata`, or an identity check) before trusting it to be a regular file.
pub fn open_nowait(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        // A terminal put in a file's place must not become the daemon's controlling one.
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

/// The file at `path` (after links), which must be a regular file.
pub fn open(path: &Path) -> io::Result<File> {
    let f = open_nowait(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(f)
}

/// The bytes of the regular file at `path`.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The text of the regular file at `path`.
pub fn read_to_string(path: &Path) -> io::Result<String> {
    let mut text = String::new();
    open(path)?.read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o644) }, 0);
        let err = read_to_string(&fifo).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(read(&fifo).is_err());
        std::fs::write(dir.path().join("file"), "text").unwrap();
        assert_eq!(read_to_string(&dir.path().join("file")).unwrap(), "text");
    }
}
