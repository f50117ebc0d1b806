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
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

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
/// Build cache key → diffID of the snapshot that is the entry's only copy of its layer: a step
/// of a stage that the build did not export (a builder stage) is not compressed, as BuildKit
/// does not compress its build cache. The entry lives while the snapshot does.
pub(crate) const CACHE_SNAPSHOTS: TableDefinition<&str, &str> =
    TableDefinition::new("cache_snapshots");
/// Repository digest (`docker.io/library/alpine@sha256:…`, the digest a registry served, of an
/// index when the tag named one) → image ID.
pub(crate) const REPO_DIGESTS: TableDefinition<&str, &str> = TableDefinition::new("repo_digests");

/// Turns any redb error into ours.
pub(crate) fn dbe<E: std::fmt::Display>(e: E) -> Error {
    Error::Db(e.to_string())
}

/// The metadata database of one store, opened read-only and upgraded to a writer on the first
/// write.
///
/// Why: a redb writer handle costs fsyncs when it opens and again when it closes (its header is
/// rewritten both times), ~5 `fdatasync`s that `cairn images`, `cairn run` or a no-op build
/// paid though they write nothing. A read-only handle in the same concurrency mode shares the file
/// with writers in this and other processes and sees their commits.
pub(crate) struct Db {
    path: PathBuf,
    reader: Option<redb::ReadOnlyDatabase>,
    writer: OnceLock<redb::Database>,
    /// Serialises the first `begin_write`s, so that one writer handle is opened.
    opening: Mutex<()>,
}

impl Db {
    pub(crate) fn open(path: &Path) -> Result<Db> {
        let mut db = Db {
            path: path.to_path_buf(),
            reader: None,
            writer: OnceLock::new(),
            opening: Mutex::new(()),
        };
        // A store made before a table was added, or a file that needs a repair (which only a
        // writer can do), is opened for writing at once.
        if path.exists() {
            if let Ok(r) = redb::Builder::new()
                .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
                .open_read_only(path)
            {
                if has_all_tables(&r) {
                    db.reader = Some(r);
                    return Ok(db);
                }
            }
        }
        db.writer()?;
        Ok(db)
    }

    fn writer(&self) -> Result<&redb::Database> {
        if let Some(w) = self.writer.get() {
            return Ok(w);
        }
        let _g = self.opening.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = self.writer.get() {
            return Ok(w);
        }
        let w = open_writer(&self.path)?;
        Ok(self.writer.get_or_init(|| w))
    }

    /// A read transaction: a consistent snapshot that sees every commit made before it began.
    /// Once this process has a writer, reads go through it.
    pub(crate) fn begin_read(&self) -> Result<redb::ReadTransaction> {
        match (self.writer.get(), &self.reader) {
            (None, Some(r)) => r.begin_read().map_err(dbe),
            _ => self.writer()?.begin_read().map_err(dbe),
        }
    }

    /// A write transaction, opening the writer handle first if this is the first.
    pub(crate) fn begin_write(&self) -> Result<redb::WriteTransaction> {
        self.writer()?.begin_write().map_err(dbe)
    }
}

fn has_all_tables(db: &impl ReadableDatabase) -> bool {
    let Ok(r) = db.begin_read() else {
        return false;
    };
    // REPO_DIGESTS and CACHE_SNAPSHOTS came last: stores made before them get them on their next
    // write open.
    r.open_table(IMAGES).is_ok()
        && r.open_table(TAGS).is_ok()
        && r.open_table(LAYERS).is_ok()
        && r.open_table(CACHE).is_ok()
        && r.open_table(CACHE_BLOBS).is_ok()
        && r.open_table(REPO_DIGESTS).is_ok()
        && r.open_table(CACHE_SNAPSHOTS).is_ok()
}

fn open_writer(path: &Path) -> Result<redb::Database> {
    let db = redb::Builder::new()
        .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
        .create(path)
        .map_err(|e| Error::Db(format!("{}: {e}", path.display())))?;
    // Create the tables once, so that read transactions can always open them.
    if !has_all_tables(&db) {
        let w = db.begin_write().map_err(dbe)?;
        {
            w.open_table(IMAGES).map_err(dbe)?;
            w.open_table(TAGS).map_err(dbe)?;
            w.open_table(LAYERS).map_err(dbe)?;
            w.open_table(CACHE).map_err(dbe)?;
            w.open_table(CACHE_BLOBS).map_err(dbe)?;
            w.open_table(REPO_DIGESTS).map_err(dbe)?;
            w.open_table(CACHE_SNAPSHOTS).map_err(dbe)?;
        }
        w.commit().map_err(dbe)?;
    }
    Ok(db)
}
