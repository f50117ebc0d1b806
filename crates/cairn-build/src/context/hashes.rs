//! A memo of file content hashes keyed by what `stat` says, so that the digest of a COPY over a
//! large context reads each file once per build, and (when persisted) once per change.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// Start of a persisted memo file; the version is in it (and in the file name) so that a format
/// change never reads old data wrongly.
const MAGIC: &[u8] = b"cairn-context-hashes-v2\n";
/// Memo files of earlier formats, removed when a new one is written.
const OLD_FILES: &[&str] = &["context-hashes-v1.json"];

/// What identifies one version of a file's content without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    ctime: i64,
    ctime_nsec: i64,
    ino: u64,
    dev: u64,
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        Stamp {
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }

    fn to_bytes(self) -> [u8; 56] {
        let mut b = [0u8; 56];
        let words = [
            self.size,
            self.mtime as u64,
            self.mtime_nsec as u64,
            self.ctime as u64,
            self.ctime_nsec as u64,
            self.ino,
            self.dev,
        ];
        for (chunk, w) in b.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        b
    }

    fn from_bytes(b: &[u8]) -> Stamp {
        let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        Stamp {
            size: w(0),
            mtime: w(1) as i64,
            mtime_nsec: w(2) as i64,
            ctime: w(3) as i64,
            ctime_nsec: w(4) as i64,
            ino: w(5),
            dev: w(6),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    stamp: Stamp,
    sha256: [u8; 32],
    /// Looked up (and found current) during this build: kept on save without a new `lstat`.
    seen: bool,
}

/// Content hashes of files, remembered by path and stamp.
///
/// The persisted form is one compact binary file per context directory: a no-op build of a
/// 20,000-file context loads it in a few milliseconds (JSON took tens) and, since nothing was
/// added or dropped, does not write it at all.
#[derive(Debug, Default)]
pub struct HashMemo {
    map: Mutex<Paths>,
    /// An entry was added, replaced or found stale since the load: the file must be rewritten.
    dirty: AtomicBool,
}

/// Entries by the path's bytes, with a fast non-keyed hash (these are the user's own paths, not
/// input from the network): `PathBuf` keys hashed with SipHash through `Path::components` were a
/// tenth of a no-op build over 20,000 files.
type Paths = HashMap<Box<[u8]>, Entry, rustc_hash::FxBuildHasher>;

/// The memo file of the context directory `root` inside `cache_dir`.
fn memo_path(cache_dir: &Path, root: &Path) -> PathBuf {
    let h = Sha256::digest(root.as_os_str().as_bytes());
    cache_dir.join(format!("context-hashes-v2-{}.bin", hex::encode(&h[..12])))
}

/// Parses a persisted memo; `None` when it is not one (truncated, foreign, older format).
fn parse(bytes: &[u8]) -> Option<Paths> {
    let mut rest = bytes.strip_prefix(MAGIC)?;
    // Sized for entries of ~40-byte paths, so that loading 20,000 does not rehash along the way.
    let mut map = Paths::with_capacity_and_hasher(rest.len() / 128, Default::default());
    while !rest.is_empty() {
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        rest = &rest[4..];
        let path = rest.get(..len)?;
        let stamp = rest.get(len..len + 56)?;
        let sha256: [u8; 32] = rest.get(len + 56..len + 88)?.try_into().ok()?;
        map.insert(
            path.into(),
            Entry {
                stamp: Stamp::from_bytes(stamp),
                sha256,
                seen: false,
            },
        );
        rest = &rest[len + 88..];
    }
    Some(map)
}

impl HashMemo {
    /// Loads the memo of the context directory `root` persisted in `cache_dir`; a missing or
    /// unreadable file is an empty memo (the memo only saves time, it is never needed for
    /// correctness).
    pub fn load(cache_dir: &Path, root: &Path) -> HashMemo {
        let map = fs::read(memo_path(cache_dir, root))
            .ok()
            .and_then(|b| parse(&b))
            .unwrap_or_default();
        HashMemo {
            map: Mutex::new(map),
            dirty: AtomicBool::new(false),
        }
    }

    /// Writes the memo of `root` into `cache_dir` atomically (temp file, fsync, rename), only if
    /// it changed since the load. Entries not looked up during this build are kept only while
    /// their file is unchanged, so the memo does not grow with every edit.
    pub fn save(&self, cache_dir: &Path, root: &Path) -> io::Result<()> {
        if !self.dirty.load(Ordering::Relaxed) {
            return Ok(());
        }
        fs::create_dir_all(cache_dir)?;
        let mut data = MAGIC.to_vec();
        {
            let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            let mut kept: Vec<(&[u8], &Entry)> = map
                .iter()
                .filter(|(p, e)| {
                    e.seen
                        || fs::symlink_metadata(std::ffi::OsStr::from_bytes(p))
                            .is_ok_and(|m| Stamp::of(&m) == e.stamp)
                })
                .map(|(p, e)| (&**p, e))
                .collect();
            kept.sort_by(|a, b| a.0.cmp(b.0));
            for (p, e) in kept {
                let Ok(len) = u32::try_from(p.len()) else {
                    continue;
                };
                data.extend_from_slice(&len.to_le_bytes());
                data.extend_from_slice(p);
                data.extend_from_slice(&e.stamp.to_bytes());
                data.extend_from_slice(&e.sha256);
            }
        }
        let dst = memo_path(cache_dir, root);
        let tmp = cache_dir.join(format!(
            ".{}.{}.tmp",
            dst.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        let mut f = File::create(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &dst)?;
        for old in OLD_FILES {
            let _ = fs::remove_file(cache_dir.join(old));
        }
        self.dirty.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// The sha256 of the content of the regular file `path`, whose `lstat` is `meta`.
    pub fn file_sha256(&self, path: &Path, meta: &fs::Metadata) -> io::Result<[u8; 32]> {
        let stamp = Stamp::of(meta);
        let key = path.as_os_str().as_bytes();
        {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = map.get_mut(key) {
                if e.stamp == stamp {
                    e.seen = true;
                    return Ok(e.sha256);
                }
                map.remove(key);
                self.dirty.store(true, Ordering::Relaxed);
            }
        }
        let mut h = Sha256::new();
        hash_into(path, &mut h)?;
        let sha256: [u8; 32] = h.finalize().into();
        // A file modified within the last two seconds may change again without its stamp
        // changing (coarse timestamps on some filesystems: git's "racy clean" problem), so it is
        // not remembered.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        if stamp.mtime < now - 2 {
            self.map.lock().unwrap_or_else(|e| e.into_inner()).insert(
                key.into(),
                Entry {
                    stamp,
                    sha256,
                    seen: true,
                },
            );
            self.dirty.store(true, Ordering::Relaxed);
        }
        Ok(sha256)
    }
}

/// Feeds the content of the file at `path` into `h`.
fn hash_into(path: &Path, h: &mut Sha256) -> io::Result<()> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        h.update(&buf[..n]);
    }
}

/// sha256 of a file's content.
pub fn sha256_file(path: &Path) -> io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    hash_into(path, &mut h)?;
    Ok(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memo_roundtrip_and_invalidation() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a");
        fs::write(&f, b"hello").unwrap();
        // Age the file so that the racy-clean guard lets the memo keep it.
        let old = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: 1000,
                tv_nsec: 0,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: 1000,
                tv_nsec: 0,
            },
        };
        rustix::fs::utimensat(rustix::fs::CWD, &f, &old, rustix::fs::AtFlags::empty()).unwrap();
        let memo = HashMemo::default();
        let meta = fs::symlink_metadata(&f).unwrap();
        let h = memo.file_sha256(&f, &meta).unwrap();
        assert_eq!(
            hex::encode(h),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        let cache = dir.path().join("cache");
        let root = dir.path();
        memo.save(&cache, root).unwrap();
        let file = memo_path(&cache, root);
        let loaded = HashMemo::load(&cache, root);
        assert_eq!(loaded.map.lock().unwrap().len(), 1);
        // A hit changes nothing: the file is not rewritten.
        assert_eq!(loaded.file_sha256(&f, &meta).unwrap(), h);
        let before = fs::symlink_metadata(&file).unwrap().ino();
        loaded.save(&cache, root).unwrap();
        assert_eq!(fs::symlink_metadata(&file).unwrap().ino(), before);
        // Another context root has its own memo.
        assert_eq!(
            HashMemo::load(&cache, &root.join("x"))
                .map
                .lock()
                .unwrap()
                .len(),
            0
        );
        fs::write(&f, b"bye").unwrap();
        let meta2 = fs::symlink_metadata(&f).unwrap();
        assert_ne!(loaded.file_sha256(&f, &meta2).unwrap(), h);
        // The changed file's old entry is not persisted again (and the new one is too recent).
        loaded.save(&cache, root).unwrap();
        assert_eq!(HashMemo::load(&cache, root).map.lock().unwrap().len(), 0);
    }

    #[test]
    fn garbage_memo_files_are_empty_memos() {
        let good = {
            let mut v = MAGIC.to_vec();
            v.extend_from_slice(&1u32.to_le_bytes());
            v.push(b'a');
            v.extend_from_slice(&[0u8; 88]);
            v
        };
        assert_eq!(parse(&good).unwrap().len(), 1);
        for cut in 0..good.len() {
            if cut != MAGIC.len() {
                assert!(parse(&good[..cut]).is_none(), "prefix of {cut} bytes");
            }
        }
        assert!(parse(b"{\"entries\":[]}").is_none());
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&huge).is_none());
    }
}
