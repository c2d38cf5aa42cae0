//! isofs: bootable NixOS installer ISOs computed on read.
//!
//! The core is pure: inputs are planned into [`extent::ExtentMap`]s (one per virtual file) and bytes
//! are produced by `read_at`. The CLI and the FUSE adapter are thin shells over it.

pub mod boot;
pub mod cache;
pub mod check;
pub mod cli;
pub mod completions;
pub mod compressed;
pub mod compression;
pub mod daemon;
pub mod digest;
pub mod efi;
pub mod extent;
pub mod fs;
pub mod hybrid;
pub mod image;
pub mod inputs;
pub mod iso9660;
pub mod mount;
pub mod regular_file;
pub mod squashfs;
pub mod staged;
pub mod status;
pub mod tree;
pub mod ventoy;
pub mod ventoy_copy;
pub mod vfs;
