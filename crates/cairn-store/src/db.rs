//! The metadata database.
//!
//! Why redb: it is pure Rust (no C toolchain, no SQLite version skew), its commits are ACID with
//! a checksummed copy-on-write B-tree, so a `kill -9` at any instant leaves the last committed
//! state (no journal to replay by hand), and since 4.x it lets several processes open one file
//! (`ConcurrencyMode::MultiWriter`) with write transactions serialised by file locks. Readers see
//! a consistent snapshot and never wait. sled is unmaintained and lmdb needs C and a fixed map
//! size; SQLite would work but brings a C dependency for six key-value tables.

use crate::{Error, Result};
use redb::{ReadableDatabase, TableDefinition};
use std::path::Path;

/// Image ID (config digest) → JSON of [`crate::images::ImageMeta`].
pub(crate) const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
/// Normalised reference (`docker.io/library/alpine:latest`) → image ID.
pub(crate) const TAGS: TableDefinition<&str, &str> = TableDefinition::new("tags");
/// Layer blob digest → JSON of [`crate::images::LayerInfo`] (diffID, sizes).
pub(crate) const LAYERS: TableDefinition<&str, &[u8]> = TableDefinition::new("layers");
/// Build cache key → opaque value.
pub(crate) const CACHE: TableDefinition<&str, &[u8]> = TableDefinition::new("cache");
/// Build cache key → JSON list of the blob digests the value needs.
pub(crate) const CACHE_BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("cache_blobs");
/// Repository digest (`docker.io/library/alpine@sha256:…`, the digest a registry served, of an
/// index when the tag named one) → image ID.
pub(crate) const REPO_DIGESTS: TableDefinition<&str, &str> = TableDefinition::new("repo_digests");

/// Turns any redb error into ours.
pub(crate) fn dbe<E: std::fmt::Display>(e: E) -> Error {
    Error::Db(e.to_string())
}

pub(crate) fn open(path: &Path) -> Result<redb::Database> {
    let db = redb::Builder::new()
        .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
        .create(path)
        .map_err(|e| Error::Db(format!("{}: {e}", path.display())))?;
    // Create the tables once, so that read transactions can always open them.
    let missing = {
        let r = db.begin_read().map_err(dbe)?;
        // REPO_DIGESTS came later: stores made before it get it on their next open.
        r.open_table(CACHE_BLOBS).is_err() || r.open_table(REPO_DIGESTS).is_err()
    };
    if missing {
        let w = db.begin_write().map_err(dbe)?;
        {
            w.open_table(IMAGES).map_err(dbe)?;
            w.open_table(TAGS).map_err(dbe)?;
            w.open_table(LAYERS).map_err(dbe)?;
            w.open_table(CACHE).map_err(dbe)?;
            w.open_table(CACHE_BLOBS).map_err(dbe)?;
            w.open_table(REPO_DIGESTS).map_err(dbe)?;
        }
        w.commit().map_err(dbe)?;
    }
    Ok(db)
}
