//! A memo of file content hashes keyed by what `stat` says, so that the digest of a COPY over a
//! large context reads each file once per build, and (when persisted) once per change.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// File name of the persisted memo inside the cache directory; the version is in the name so
/// that a format change never reads old data wrongly.
const MEMO_FILE: &str = "context-hashes-v1.json";

/// What identifies one version of a file's content without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Persisted {
    entries: Vec<(String, Stamp, String)>,
}

/// Content hashes of files, remembered by path and stamp.
#[derive(Debug, Default)]
pub struct HashMemo {
    map: Mutex<HashMap<PathBuf, (Stamp, String)>>,
}

impl HashMemo {
    /// Loads the memo persisted in `cache_dir`; a missing or unreadable file is an empty memo
    /// (the memo only saves time, it is never needed for correctness).
    pub fn load(cache_dir: &Path) -> HashMemo {
        let memo = HashMemo::default();
        let Ok(text) = fs::read(cache_dir.join(MEMO_FILE)) else {
            return memo;
        };
        if let Ok(p) = serde_json::from_slice::<Persisted>(&text) {
            let mut map = memo.map.lock().unwrap_or_else(|e| e.into_inner());
            for (path, stamp, hash) in p.entries {
                map.insert(PathBuf::from(path), (stamp, hash));
            }
        }
        memo
    }

    /// Writes the memo into `cache_dir` atomically (temp file, fsync, rename). Entries of files
    /// that are gone or changed are dropped, so the memo does not grow with every edit.
    pub fn save(&self, cache_dir: &Path) -> io::Result<()> {
        fs::create_dir_all(cache_dir)?;
        let entries: Vec<(String, Stamp, String)> = {
            let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            let mut v: Vec<_> = map
                .iter()
                .filter(|(p, (s, _))| fs::symlink_metadata(p).is_ok_and(|m| Stamp::of(&m) == *s))
                .filter_map(|(p, (s, h))| Some((p.to_str()?.to_string(), *s, h.clone())))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let data = serde_json::to_vec(&Persisted { entries }).map_err(io::Error::other)?;
        let tmp = cache_dir.join(format!(".{MEMO_FILE}.{}.tmp", std::process::id()));
        let mut f = File::create(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, cache_dir.join(MEMO_FILE))
    }

    /// The sha256 (hex) of the content of the regular file `path`, whose `lstat` is `meta`.
    pub fn file_sha256(&self, path: &Path, meta: &fs::Metadata) -> io::Result<String> {
        let stamp = Stamp::of(meta);
        if let Some((s, h)) = self.map.lock().unwrap_or_else(|e| e.into_inner()).get(path) {
            if *s == stamp {
                return Ok(h.clone());
            }
        }
        let hash = sha256_file(path)?;
        // A file modified within the last two seconds may change again without its stamp
        // changing (coarse timestamps on some filesystems: git's "racy clean" problem), so it is
        // not remembered.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        if stamp.mtime < now - 2 {
            self.map
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(path.to_path_buf(), (stamp, hash.clone()));
        }
        Ok(hash)
    }
}

/// sha256 (hex) of a file's content.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
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
            h,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        let cache = dir.path().join("cache");
        memo.save(&cache).unwrap();
        let loaded = HashMemo::load(&cache);
        assert_eq!(loaded.map.lock().unwrap().len(), 1);
        fs::write(&f, b"bye").unwrap();
        let meta2 = fs::symlink_metadata(&f).unwrap();
        assert_ne!(loaded.file_sha256(&f, &meta2).unwrap(), h);
        // The changed file's old entry is not persisted again.
        loaded.save(&cache).unwrap();
        assert_eq!(HashMemo::load(&cache).map.lock().unwrap().len(), 0);
    }
}
