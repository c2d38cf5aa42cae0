use std::path::{Path, PathBuf};

/// Bad input: names the file and, where there is one, the field. The CLI exits 2 on it.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {msg}", file.display(), field.as_ref().map(|f| format!(": {f}")).unwrap_or_default())]
pub struct InputError {
    pub file: PathBuf,
    pub field: Option<String>,
    pub msg: String,
}

impl InputError {
    pub fn new(file: &Path, msg: impl Into<String>) -> Self {
        InputError {
            file: file.to_path_buf(),
            field: None,
            msg: msg.into(),
        }
    }

    pub fn field(file: &Path, field: &str, msg: impl Into<String>) -> Self {
        InputError {
            file: file.to_path_buf(),
            field: Some(field.to_string()),
            msg: msg.into(),
        }
    }
}

/// Why a manifest could not be had: bad input, or Nix failing for reasons of its own (its daemon
/// not up yet at boot, a network failure, a crash), which are worth retrying and so not bad input.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("{0}")]
    Nix(String),
}
