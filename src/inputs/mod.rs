//! The three inputs — flake tree, store, boot templates — and the settings that say where they are.

mod error;
pub mod flake;
pub mod manifest;
pub mod nix;
pub mod settings;

pub use error::{InputError, LoadError};
