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
