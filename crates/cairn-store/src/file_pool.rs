//! The file pool: big files that COPY steps took from build contexts, kept once for the whole
//! store and hard-linked into the layers (overlay upper dirs, then snapshots) that hold them. A
//! COPY that reruns because some other file of the context changed links such a file into its
//! new layer instead of writing it again.
//!
//! ```text
//! ROOT/files/<key>            an object: a regular file, only ever linked, never written
//! ROOT/files/<key>.<boot ID>  an object published in that boot and not yet known durable
//! ```
//!
//! The key is the caller's (cairn-build's COPY): it binds everything a layer tar takes from the
//! file (content, path, owner, mode, mtime), so an object linked anywhere under its key gives
//! the layer that copying the file would have given. Objects are immutable because everything
//! else that links them is: snapshots are read-only overlay lowers (a RUN that changes such a
//! file gets a copy-up, a new inode), and an upper dir that links one is not written again
//! before it becomes a snapshot.
//!
//! Durability: an object is published from an upper dir whose data may still be only in the
//! page cache, so a crash could leave it torn under a name that claims its content. It is
//! therefore published under a name carrying the boot ID, which only this boot looks up, and a
//! thread renames it to its plain name once `fdatasync` returned. After a crash (a new boot) an
//! object still under the old boot's name is never used, and `prune` removes it.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{unique, Store};

/// The store's pool of linked files (see the module docs).
#[derive(Debug, Clone)]
pub struct FilePool {
    dir: PathBuf,
}

impl Store {
    /// The store's file pool, `ROOT/files/` (on the filesystem of `ROOT/tmp`, where build
    /// steps' upper dirs are, and of the snapshots).
    pub fn file_pool(&self) -> FilePool {
        FilePool {
            dir: self.root.join("files"),
        }
    }
}

/// This boot's ID (hex digits only), `None` where the kernel does not say.
pub(crate) fn boot_id() -> Option<&'static str> {
    static ID: OnceLock<Option<String>> = OnceLock::new();
    ID.get_or_init(|| {
        let s = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let id: String = s.chars().filter(char::is_ascii_hexdigit).collect();
        (id.len() >= 16).then_some(id)
    })
    .as_deref()
}

/// A key as the pool accepts it: lower-case hex, 16 to 128 digits (a file name, never a path).
fn valid_key(key: &str) -> bool {
    (16..=128).contains(&key.len()) && key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What [`FilePool::prune`] removed.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PoolPruned {
    pub files: usize,
    pub bytes: u64,
}

impl FilePool {
    /// The pool's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn plain(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// The name of an object published in this boot and not yet synced.
    fn pending(&self, key: &str) -> Option<PathBuf> {
        boot_id().map(|b| self.dir.join(format!("{key}.{b}")))
    }

    /// Where the object `key` can be linked from: its plain name, else this boot's pending one.
    fn candidates(&self, key: &str) -> Vec<PathBuf> {
        if !valid_key(key) {
            return Vec::new();
        }
        let mut c = vec![self.plain(key)];
        c.extend(self.pending(key));
        c
    }

    /// Whether the pool holds an object under `key` that this boot may use.
    pub fn has(&self, key: &str) -> bool {
        self.candidates(key)
            .iter()
            .any(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
    }

    /// The object `key` opened for reading, if this boot may use one.
    pub fn open(&self, key: &str) -> Option<fs::File> {
        self.candidates(key)
            .iter()
            .find_map(|p| fs::File::open(p).ok())
    }

    /// Puts the object `key` at `dest` (a path on the pool's filesystem), replacing what is
    /// there: linked to a temp name beside `dest`, then renamed over it, so `dest` is never
    /// missing. The rename changes the times of `dest`'s directory; restoring them is the
    /// caller's business.
    pub fn link_to(&self, key: &str, dest: &Path) -> io::Result<()> {
        if dest.file_name().is_none() {
            return Err(io::Error::other("no file name"));
        }
        let tmp = dest.with_file_name(format!(".cairn-pool-{}-{:x}", std::process::id(), unique()));
        let mut last = io::Error::from(io::ErrorKind::NotFound);
        // The plain name again last: a pending object may be renamed to it meanwhile.
        let mut from = self.candidates(key);
        if let Some(p) = from.first().cloned() {
            from.push(p);
        }
        for obj in from {
            match fs::hard_link(&obj, &tmp) {
                Ok(()) => {
                    return fs::rename(&tmp, dest).inspect_err(|_| {
                        let _ = fs::remove_file(&tmp);
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Makes the regular file `from` (on the pool's filesystem) the object `key`, by linking it.
    /// `from` must hold exactly what `key` says and never be written again. `Ok(false)` when the
    /// pool has that object already or cannot take it (no boot ID). It is usable at once in this
    /// boot; a thread makes it durable and gives it its plain name (see the module docs).
    pub fn publish(&self, key: &str, from: &Path) -> io::Result<bool> {
        if !valid_key(key) {
            return Err(io::Error::other(format!("invalid pool key {key:?}")));
        }
        let Some(pending) = self.pending(key) else {
            return Ok(false);
        };
        if self.has(key) {
            return Ok(false);
        }
        fs::create_dir_all(&self.dir)?;
        match fs::hard_link(from, &pending) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(e),
        }
        let plain = self.plain(key);
        // Not joined: if the process ends first, the object stays pending, usable in this boot.
        let _ = std::thread::Builder::new()
            .name("cairn-pool-sync".into())
            .spawn(move || {
                let synced = fs::File::open(&pending).and_then(|f| f.sync_data());
                if synced.is_ok() {
                    let _ = fs::rename(&pending, &plain);
                }
            });
        Ok(true)
    }

    /// Entries `prune` would remove, for `check`'s garbage list.
    pub(crate) fn garbage(&self) -> Vec<String> {
        self.unused(None)
            .into_iter()
            .map(|(name, why, _)| format!("pool file files/{name}: {why}"))
            .collect()
    }

    /// Removes objects that nothing links any more (link count 1) and objects of other boots.
    /// With `spare_recent`, objects linked or unlinked (their ctime) within that time stay: a
    /// build in progress may be about to link one.
    pub(crate) fn prune(&self, spare_recent: Option<Duration>) -> PoolPruned {
        let mut out = PoolPruned::default();
        for (name, _, size) in self.unused(spare_recent) {
            if fs::remove_file(self.dir.join(&name)).is_ok() {
                out.files += 1;
                out.bytes += size;
            }
        }
        out
    }

    /// (name, why, bytes freed) of each entry to remove.
    fn unused(&self, spare_recent: Option<Duration>) -> Vec<(String, &'static str, u64)> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(m) = fs::symlink_metadata(e.path()) else {
                continue;
            };
            let recent = spare_recent.is_some_and(|grace| m.ctime() > now - grace.as_secs() as i64);
            let (key, boot) = match name.split_once('.') {
                Some((k, b)) => (k, Some(b)),
                None => (name.as_str(), None),
            };
            let size = if m.nlink() == 1 { m.len() } else { 0 };
            if !valid_key(key) || !m.is_file() {
                if !recent {
                    out.push((name.clone(), "not a pool object", size));
                }
            } else if boot.is_some_and(|b| Some(b) != boot_id()) {
                // Maybe torn by a crash; never looked up again.
                out.push((
                    name.clone(),
                    "published before a reboot, never synced",
                    size,
                ));
            } else if m.nlink() == 1 && !recent {
                out.push((name.clone(), "nothing uses it", size));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(dir: &Path) -> FilePool {
        FilePool {
            dir: dir.join("files"),
        }
    }

    const KEY: &str = "00112233445566778899aabbccddeeff";

    #[test]
    fn publish_link_and_prune() {
        let t = tempfile::tempdir().unwrap();
        let p = pool(t.path());
        let src = t.path().join("src");
        fs::write(&src, b"content").unwrap();
        assert!(!p.has(KEY));
        assert!(p.publish(KEY, &src).unwrap());
        assert!(p.has(KEY));
        // Published once; a second publish is a no-op.
        assert!(!p.publish(KEY, &src).unwrap());
        let dest = t.path().join("dest");
        fs::write(&dest, b"").unwrap();
        p.link_to(KEY, &dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"content");
        assert_eq!(
            fs::metadata(&dest).unwrap().ino(),
            fs::metadata(&src).unwrap().ino()
        );
        // No temp names left beside dest.
        let names: Vec<_> = fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        // Used by src and dest: kept.
        assert_eq!(p.prune(None).files, 0);
        fs::remove_file(&src).unwrap();
        fs::remove_file(&dest).unwrap();
        // Recently unlinked: spared when asked to.
        assert_eq!(p.prune(Some(Duration::from_secs(3600))).files, 0);
        assert_eq!(p.garbage().len(), 1);
        assert_eq!(p.prune(None).files, 1);
        assert!(!p.has(KEY));
    }

    #[test]
    fn objects_of_another_boot_are_never_used() {
        let t = tempfile::tempdir().unwrap();
        let p = pool(t.path());
        fs::create_dir_all(p.dir()).unwrap();
        let old = p
            .dir()
            .join(format!("{KEY}.0123456789abcdef0123456789abcdef"));
        fs::write(&old, b"maybe torn").unwrap();
        let keep = t.path().join("snapshot-file");
        fs::hard_link(&old, &keep).unwrap();
        assert!(!p.has(KEY));
        let dest = t.path().join("dest");
        assert!(p.link_to(KEY, &dest).is_err());
        assert_eq!(p.prune(Some(Duration::from_secs(3600))).files, 1);
        assert!(!old.exists());
    }

    #[test]
    fn keys_are_file_names() {
        let t = tempfile::tempdir().unwrap();
        let p = pool(t.path());
        assert!(p.publish("../../etc/passwd", &t.path().join("x")).is_err());
        assert!(!p.has("../x"));
        assert!(!p.has(""));
    }
}
