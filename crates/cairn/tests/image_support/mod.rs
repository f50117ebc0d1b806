//! The image tests' helpers now live in `common`; this name stays for the test files that still
//! say `mod image_support;` (interop_docker.rs, mounts_e2e.rs).

#[path = "../common/mod.rs"]
mod common;

#[allow(unused_imports)]
pub use common::*;
