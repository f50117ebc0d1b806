//! The layer codec: a directory tree or an overlay upper dir → a deterministic tar diff
//! (gzip/zstd, digest and diffID computed while streaming), and a tar → a directory with every
//! path-escape refused.
//!
//! CONTRACT (used by cairn-store, cairn-sandbox and cairn-build, written in parallel): add freely,
//! change a signature only together with its callers.

use std::path::Path;

/// `sha256:<hex>`.
pub type Digest = String;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    None,
}

/// What was written: the blob's digest and size, and the digest of the uncompressed tar (diffID).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerDescriptor {
    pub digest: Digest,
    pub diff_id: Digest,
    pub size: u64,
    pub media_type: String,
}

/// Where a diff comes from.
#[derive(Debug, Clone, Copy)]
pub enum DiffSource<'a> {
    /// An overlayfs upper dir: 0/0 char devices and `trusted.overlay.opaque` become OCI whiteouts.
    OverlayUpper(&'a Path),
    /// A plain tree: every entry is an addition.
    Tree(&'a Path),
    /// Two trees (native snapshotter): entries of `upper` that differ from `lower`, and whiteouts
    /// for what `upper` deleted.
    Compare { lower: &'a Path, upper: &'a Path },
}

/// How a tar is laid onto a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnpackMode {
    /// The target is a snapshot used as an overlay lowerdir: OCI whiteouts become overlay whiteouts.
    OverlayLower,
    /// The target is a full rootfs: whiteouts delete what they name.
    Apply,
}

#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Clamp every mtime to at most this (SOURCE_DATE_EPOCH); None keeps mtimes.
    pub clamp_mtime: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("layer entry {entry:?} escapes the target root")]
    Escape { entry: String },
    #[error("{0}")]
    Other(String),
}
