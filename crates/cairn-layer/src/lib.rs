//! The layer codec: a directory tree or an overlay upper dir → a deterministic tar diff
//! (gzip/zstd, digest and diffID computed while streaming), and a tar → a directory with every
//! path-escape refused.
//!
//! CONTRACT (used by cairn-store, cairn-sandbox and cairn-build, written in parallel): add freely,
//! change a signature only together with its callers.
//!
//! ```text
//! write_layer(DiffSource, Compression, &WriteOptions, out: impl Write) -> Result<LayerDescriptor>
//! write_layer_with_stats(..same..) -> Result<(LayerDescriptor, WriteStats)>   // + tar and content sizes
//! unpack_layer(reader: impl Read, target: &Path, UnpackMode) -> Result<UnpackStats>
//! measure_layer(reader: impl Read) -> Result<UnpackStats>  // diffID + sizes, writes nothing
//! transcode_layer(reader, Compression, out) -> Result<(LayerDescriptor, UnpackStats)> // tar as-is → blob, validated
//! decompress(reader) -> Result<Box<dyn Read>>     // gzip / zstd / xz / plain, detected
//! hash::{HashingWriter, HashingReader, sha256_digest}
//! ```
//!
//! ```no_run
//! # fn main() -> Result<(), cairn_layer::Error> {
//! use cairn_layer::{write_layer, unpack_layer, Compression, DiffSource, UnpackMode, WriteOptions};
//! let mut blob = Vec::new();
//! let desc = write_layer(DiffSource::Tree("rootfs".as_ref()), Compression::Gzip,
//!                        &WriteOptions { clamp_mtime: Some(0), ..Default::default() }, &mut blob)?;
//! let stats = unpack_layer(&blob[..], "out".as_ref(), UnpackMode::Apply)?;
//! assert_eq!(stats.diff_id, desc.diff_id);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

use std::path::Path;

pub mod compress;
pub mod hash;
mod pgzip;
mod transcode;
mod unpack;
mod write;

pub use compress::{decompress, media_type};
pub use transcode::transcode_layer;
pub use unpack::{measure_layer, unpack_layer, UnpackStats};
pub use write::{write_layer, write_layer_with_stats, WriteStats};

/// `sha256:<hex>`.
pub type Digest = String;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// gzip (flate2, default level): what docker writes and every tool reads.
    #[default]
    Gzip,
    /// zstd level 3: smaller and faster, read by containerd ≥ 1.5 and podman.
    Zstd,
    /// A plain tar.
    None,
}

/// What was written: the blob's digest and size, and the digest of the uncompressed tar (diffID).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerDescriptor {
    /// sha256 of the blob as stored (compressed).
    pub digest: Digest,
    /// sha256 of the uncompressed tar: what the image config's `rootfs.diff_ids` lists.
    pub diff_id: Digest,
    /// Size in bytes of the blob as stored.
    pub size: u64,
    /// OCI media type of the blob (`application/vnd.oci.image.layer.v1.tar+gzip`, ...).
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
    Compare {
        /// The tree before.
        lower: &'a Path,
        /// The tree after.
        upper: &'a Path,
    },
}

/// How a tar is laid onto a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnpackMode {
    /// The target is a snapshot used as an overlay lowerdir: OCI whiteouts become overlay whiteouts.
    OverlayLower,
    /// The target is a full rootfs: whiteouts delete what they name.
    Apply,
}

/// Options of [`write_layer`].
#[derive(Clone, Default)]
pub struct WriteOptions {
    /// Clamp every mtime to at most this (SOURCE_DATE_EPOCH); None keeps mtimes.
    pub clamp_mtime: Option<i64>,
    /// gzip only: compressed chunks of earlier layers to reuse (see [`ChunkCache`]); with it,
    /// [`WriteStats::gzip_chunks`] says where this layer's chunks are.
    pub chunk_cache: Option<std::sync::Arc<dyn ChunkCache>>,
    /// Asked between entries and between reads of a file: `true` stops the layer with
    /// [`Error::Cancelled`] (a build interrupted while a big layer is written does not wait for
    /// it).
    pub cancel: Option<std::sync::Arc<dyn Fn() -> bool + Send + Sync>>,
}

impl std::fmt::Debug for WriteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteOptions")
            .field("clamp_mtime", &self.clamp_mtime)
            .field("chunk_cache", &self.chunk_cache.is_some())
            .field("cancel", &self.cancel.is_some())
            .finish()
    }
}

/// The key of one compressed chunk of a gzip layer: a sha256 of what its bytes are a function
/// of (the chunking format, the preceding 32 KiB and the chunk's own input).
pub type ChunkKey = [u8; 32];

/// Where one chunk of a gzip blob written by [`write_layer`] is: `len` bytes at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRecord {
    /// What the chunk compresses (see [`ChunkKey`]).
    pub key: ChunkKey,
    /// Byte offset in the blob.
    pub offset: u64,
    /// Compressed length.
    pub len: u64,
    /// [`chunk_check`] of the key and the compressed bytes, computed as they were written: a
    /// cache hands it back with the bytes it reads later (see [`ChunkCache`]).
    pub check: u32,
}

/// What a [`ChunkCache`] answers: a chunk's compressed bytes, read back from where they were
/// recorded, and the [`ChunkRecord::check`] recorded with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedChunk {
    /// The compressed bytes.
    pub bytes: Vec<u8>,
    /// The check recorded when the bytes were written (never one computed from `bytes`).
    pub check: u32,
}

/// The check binding a chunk's key to its compressed bytes: CRC-32 of `key ‖ bytes` (zlib-rs'
/// crc32: ~0.16 ms for a chunk, against ~1 ms for the key's sha256 of its input and ~2.6 ms
/// for inflating it).
pub fn chunk_check(key: &ChunkKey, bytes: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(key);
    crc.update(bytes);
    crc.sum()
}

/// Compressed chunks of earlier gzip layers, by key. The codec does not inflate a hit: it uses
/// it only if [`chunk_check`]`(key, bytes)` equals the check recorded with the bytes when they
/// were written (and, for a chunk that is not a stream's last, the bytes end with the empty
/// stored block of a sync flush). So bytes damaged or misplaced since they were recorded (a
/// wrong offset, another chunk's bytes, bit rot) and a check belonging to another key are
/// refused: a wrong answer costs time, not a wrong blob. That holds only if the cache returns
/// the check it recorded, not one derived from what it reads; an implementation should also
/// refuse records it cannot trust (the store checksums each record of its index files).
pub trait ChunkCache: Send + Sync {
    /// The compressed bytes of the chunk `key` and their recorded check, if known.
    fn get(&self, key: &ChunkKey) -> Option<CachedChunk>;
}

/// Errors of the codec.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem or stream operation failed.
    #[error("{path}: {source}")]
    Io {
        /// What was being read or written.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An archive entry would land outside the target directory; nothing was written for it.
    #[error("layer entry {entry:?} escapes the target root")]
    Escape {
        /// The entry's name as written in the archive.
        entry: String,
    },
    /// [`WriteOptions::cancel`] said stop.
    #[error("cancelled")]
    Cancelled,
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}
