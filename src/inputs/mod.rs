//! The three inputs — flake tree, store, boot templates — and the settings that say where they are.

mod error;
pub mod flake;
pub mod manifest;
pub mod nix;
pub mod settings;

pub use error::InputError;

/// The text of the file at `path`, which must be a regular file (after links). A fifo opened to be
/// read would wait for a writer forever; opened without blocking, it is refused instead.
pub fn read_text(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut text = String::new();
    f.read_to_string(&mut text)?;
    Ok(text)
}
