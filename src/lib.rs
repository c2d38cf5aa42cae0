//! isofs: bootable NixOS installer ISOs computed on read.
//!
//! The core is pure: inputs are planned into [`extent::ExtentMap`]s (one per virtual file) and bytes
//! are produced by `read_at`. The CLI and the FUSE adapter are thin shells over it.

pub mod compression;
pub mod daemon;
pub mod digest;
pub mod extent;
pub mod fs;
pub mod tree;
pub mod vfs;
