//! isofs: bootable NixOS installer ISOs computed on read.
//!
//! The core is pure: inputs are planned into [`extent::ExtentMap`]s (one per virtual file) and bytes
//! are produced by `read_at`. The CLI and the FUSE adapter are thin shells over it.

pub mod boot_stub;
pub mod check;
pub mod compression;
pub mod extent;
pub mod inputs;
pub mod tree;
pub mod ventoy;
