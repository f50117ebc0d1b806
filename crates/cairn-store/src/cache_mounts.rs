//! Cache mounts (`RUN --mount=type=cache`): opening one under a lock, listing them with their
//! sizes, emptying them.
//!
//! ```text
//! ROOT/cache-mounts/<h>/      the directory bound into RUN steps (h: hash of the cache id)
//! ROOT/cache-mounts/<h>.lock  flock: shared by `sharing=shared` users, exclusive by `locked` and
//!                             `private` ones and by prune (which skips a busy mount)
//! ROOT/cache-mounts/<h>.id    the cache id, for `cairn system df -v`
//! ```
//!
//! The lock file is never removed: a process waiting on it must lock the same inode that the
//! next user opens.

use std::fs;
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

use crate::{io_err, Error, Result, Store};

/// How [`Store::open_cache_mount`] locks a cache mount for its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheLock {
    /// `sharing=shared`: any number of shared users at once; waits only for exclusive ones.
    Shared,
    /// `sharing=locked`: waits until no one else uses the mount.
    Exclusive,
    /// `sharing=private`: the mount if no one else uses it, else nothing (the caller then makes
    /// a fresh directory of its own).
    TryExclusive,
}

/// A cache mount opened by [`Store::open_cache_mount`]; the lock is held until it is dropped.
#[derive(Debug)]
pub struct CacheMount {
    /// The directory to bind.
    pub dir: PathBuf,
    /// True when this call created the directory (new cache, or emptied by prune): the caller
    /// then applies `mode`, `uid`, `gid` and seeds it from `from`.
    pub created: bool,
    /// The locked lock file; dropping it releases the lock.
    _lock: fs::File,
}

/// One cache mount, as `cairn system df` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheMountInfo {
    /// The cache id (`id=`, or the target when no id was given); the directory name when the id
    /// file is missing.
    pub id: String,
    /// The directory.
    pub dir: PathBuf,
    /// Bytes of the regular files in it.
    pub size: u64,
    /// A build is using it right now.
    pub in_use: bool,
}

/// What [`Store::prune_cache_mounts`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheMountsPruned {
    /// Cache mounts emptied.
    pub removed: usize,
    /// Bytes freed.
    pub reclaimed: u64,
    /// Cache mounts left alone because a build uses them.
    pub busy: usize,
}

/// The build cache as `cairn system df` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildCacheUsage {
    /// Cache records (one per cached step).
    pub entries: usize,
    /// Bytes of the distinct blobs the records keep alive, and of the snapshots that are the
    /// only copy of a record's layer (a builder stage's, see `Store::cache_put_snapshot`).
    pub size: u64,
    /// Of those, bytes that no image uses (what `system prune --build-cache` could free).
    pub reclaimable: u64,
}

impl Store {
    /// Counts the build cache records and sizes the blobs and snapshots they keep.
    pub fn build_cache_usage(&self) -> Result<BuildCacheUsage> {
        use redb::ReadableTable as _;
        let mut blobs = std::collections::BTreeSet::new();
        let mut entries = 0usize;
        {
            let r = self.db.begin_read()?;
            let t = match r.open_table(crate::db::CACHE_BLOBS) {
                Ok(t) => t,
                // A store that never cached a step has no table yet.
                Err(redb::TableError::TableDoesNotExist(_)) => {
                    return Ok(BuildCacheUsage::default())
                }
                Err(e) => return Err(crate::db::dbe(e)),
            };
            for row in t.iter().map_err(crate::db::dbe)? {
                let (_, v) = row.map_err(crate::db::dbe)?;
                entries += 1;
                let list: Vec<String> = serde_json::from_slice(v.value()).unwrap_or_default();
                blobs.extend(list);
            }
        }
        let used: std::collections::BTreeSet<String> = self
            .list_images()?
            .into_iter()
            .flat_map(|i| i.layers.into_iter().map(|l| l.digest))
            .collect();
        let mut rep = BuildCacheUsage {
            entries,
            ..Default::default()
        };
        for b in &blobs {
            let size = fs::metadata(self.blob_path(b))
                .map(|m| m.len())
                .unwrap_or(0);
            rep.size += size;
            if !used.contains(b) {
                rep.reclaimable += size;
            }
        }
        // No image has these layers (an image's layers have blobs): all reclaimable.
        let held: std::collections::BTreeSet<String> = self
            .cache_snapshot_lists()?
            .into_iter()
            .map(|(_, d)| d)
            .collect();
        for d in held {
            let size = tree_size(&self.snapshot_path(&d))?;
            rep.size += size;
            rep.reclaimable += size;
        }
        Ok(rep)
    }

    fn cache_mounts_root(&self) -> PathBuf {
        self.root.join("cache-mounts")
    }

    /// Opens the cache mount `id` for a RUN step, locked as `lock` says (blocking for
    /// [`CacheLock::Shared`] and [`CacheLock::Exclusive`]); `None` when `TryExclusive` finds it
    /// busy. The directory is created after the lock is taken, so that a concurrent prune cannot
    /// remove it under the step.
    pub fn open_cache_mount(&self, id: &str, lock: CacheLock) -> Result<Option<CacheMount>> {
        let base = self.cache_mounts_root();
        fs::create_dir_all(&base).map_err(io_err(&base))?;
        let h = cairn_layer::hash::sha256_digest(id.as_bytes());
        let name = &h["sha256:".len()..][..32];
        let lock_path = base.join(format!("{name}.lock"));
        let file = crate::open_lock_file(&lock_path)?;
        let op = match lock {
            CacheLock::Shared => FlockOperation::LockShared,
            CacheLock::Exclusive => FlockOperation::LockExclusive,
            CacheLock::TryExclusive => FlockOperation::NonBlockingLockExclusive,
        };
        match rustix::fs::flock(&file, op) {
            Ok(()) => {}
            Err(e) if lock == CacheLock::TryExclusive && e == rustix::io::Errno::WOULDBLOCK => {
                return Ok(None)
            }
            Err(e) => {
                return Err(Error::Io {
                    path: lock_path,
                    source: e.into(),
                })
            }
        }
        let dir = base.join(name);
        let created = match fs::create_dir(&dir) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(io_err(&dir)(e)),
        };
        let id_path = base.join(format!("{name}.id"));
        if created || !id_path.exists() {
            crate::write_atomic(&id_path, id.as_bytes())?;
        }
        Ok(Some(CacheMount {
            dir,
            created,
            _lock: file,
        }))
    }

    /// Every cache mount of the store with its size, sorted by id.
    pub fn cache_mounts(&self) -> Result<Vec<CacheMountInfo>> {
        let base = self.cache_mounts_root();
        let entries = match fs::read_dir(&base) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&base)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(&base))?;
            let dir = entry.path();
            if !entry.file_type().map_err(io_err(&dir))?.is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let id = fs::read_to_string(base.join(format!("{name}.id"))).unwrap_or(name.clone());
            let in_use = match lock_file(&base.join(format!("{name}.lock")))? {
                Some(f) => !try_exclusive(&f),
                None => false,
            };
            out.push(CacheMountInfo {
                id,
                size: tree_size(&dir)?,
                dir,
                in_use,
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Empties every cache mount that no build uses (`cairn builder prune`).
    pub fn prune_cache_mounts(&self) -> Result<CacheMountsPruned> {
        let base = self.cache_mounts_root();
        let mut rep = CacheMountsPruned::default();
        for m in self.cache_mounts()? {
            let name = m
                .dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let lock_path = base.join(format!("{name}.lock"));
            let file = crate::open_lock_file(&lock_path)?;
            if !try_exclusive(&file) {
                rep.busy += 1;
                continue;
            }
            // Renamed first so that an interrupted removal never leaves a half-empty cache
            // that the next build would take for a complete one.
            let doomed = self
                .tmp_dir()
                .join(format!("cache-mount-{name}-{}", std::process::id()));
            fs::rename(&m.dir, &doomed).map_err(io_err(&m.dir))?;
            fs::remove_dir_all(&doomed).map_err(io_err(&doomed))?;
            let _ = fs::remove_file(base.join(format!("{name}.id")));
            rep.removed += 1;
            rep.reclaimed += m.size;
            drop(file);
        }
        if let Ok(d) = fs::File::open(&base) {
            // The removals must survive a crash before the report says they happened.
            let _ = d.sync_all();
        }
        Ok(rep)
    }
}

fn lock_file(p: &Path) -> Result<Option<fs::File>> {
    match fs::OpenOptions::new().write(true).open(p) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(p)(e)),
    }
}

/// Takes an exclusive lock if it is free (released when `f` is closed).
fn try_exclusive(f: &fs::File) -> bool {
    rustix::fs::flock(f, FlockOperation::NonBlockingLockExclusive).is_ok()
}

/// Bytes of the regular files under `dir` (symlinks not followed, hard links counted once per
/// link, as `du --apparent-size -l` would).
fn tree_size(dir: &Path) -> Result<u64> {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match fs::read_dir(&d) {
            Ok(e) => e,
            // A step may remove a directory while we walk; it then has no size.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&d)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err(&d))?;
            let Ok(md) = entry.path().symlink_metadata() else {
                continue;
            };
            if md.is_dir() {
                stack.push(entry.path());
            } else if md.is_file() {
                total += md.len();
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_list_lock_and_prune() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let m = store
            .open_cache_mount("/root/.npm", CacheLock::Shared)
            .unwrap()
            .unwrap();
        assert!(m.created);
        fs::write(m.dir.join("f"), b"12345").unwrap();
        // A shared user blocks an exclusive try, and prune skips the mount it holds.
        assert!(store
            .open_cache_mount("/root/.npm", CacheLock::TryExclusive)
            .unwrap()
            .is_none());
        let list = store.cache_mounts().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(
            (list[0].id.as_str(), list[0].size, list[0].in_use),
            ("/root/.npm", 5, true)
        );
        assert_eq!(store.prune_cache_mounts().unwrap().busy, 1);
        drop(m);
        let again = store
            .open_cache_mount("/root/.npm", CacheLock::TryExclusive)
            .unwrap()
            .unwrap();
        assert!(!again.created && again.dir.join("f").exists());
        drop(again);
        let rep = store.prune_cache_mounts().unwrap();
        assert_eq!((rep.removed, rep.reclaimed, rep.busy), (1, 5, 0));
        assert!(store.cache_mounts().unwrap().is_empty());
        let fresh = store
            .open_cache_mount("/root/.npm", CacheLock::Exclusive)
            .unwrap()
            .unwrap();
        assert!(fresh.created && !fresh.dir.join("f").exists());
    }
}
