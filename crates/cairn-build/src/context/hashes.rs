//! A memo of file content hashes keyed by what `stat` says, so that the digest of a COPY over a
//! large context reads each file once per build, and (when persisted) once per change.

use hashbrown::HashTable;
use std::collections::HashMap;
use std::fs::{self, File};
use std::hash::BuildHasher;
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
    state: Mutex<Memo>,
    /// An entry was added, replaced or found stale since the load: the file must be rewritten.
    dirty: AtomicBool,
}

/// The loaded file, looked up in place, and what this build added to it.
///
/// The records stay in the bytes read from disk and the index holds only their offsets: building
/// a map of owned keys allocated once per file (20,000 allocations and a rehash) was a sixth of
/// a no-op build over 20,000 files.
#[derive(Debug, Default)]
struct Memo {
    /// The persisted memo (see [`parse`]): records `len: u32, path, stamp: 56, sha256: 32`.
    file: FileBytes,
    index: HashTable<Slot>,
    /// Entries hashed in this build (new files, changed ones).
    added: Paths,
}

/// The bytes of a memo file: mapped when read from disk (the page cache's own pages: reading
/// 2.5 MB into a fresh buffer cost ~600 page faults, a few ms on this kind of VM), owned when
/// made in memory (tests).
#[derive(Debug, Default)]
enum FileBytes {
    #[default]
    Empty,
    Mapped(memmap2::Mmap),
    #[cfg_attr(not(test), allow(dead_code))]
    Owned(Vec<u8>),
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Empty => &[],
            FileBytes::Mapped(m) => m,
            FileBytes::Owned(v) => v,
        }
    }
}

impl FileBytes {
    fn map(path: &Path) -> io::Result<FileBytes> {
        let f = File::open(path)?;
        // SAFETY: a memo file is never written in place: cairn writes a new one beside it and
        // renames it over (see `save`), so the mapped inode's bytes do not change while mapped.
        // Only a foreign process truncating the store's cache file during a build could make an
        // access fault (SIGBUS); the store is cairn's own.
        let m = unsafe { memmap2::MmapOptions::new().populate().map(&f)? };
        Ok(FileBytes::Mapped(m))
    }
}

/// A record of [`Memo::file`] in the index.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Offset of the record's path.
    at: u32,
    len: u32,
    state: SlotState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Unseen,
    /// Looked up and current.
    Seen,
    /// Looked up and stale: not kept.
    Dropped,
}

const RECORD_TAIL: usize = 56 + 32;

impl Memo {
    fn path(&self, s: &Slot) -> &[u8] {
        Memo::path_in(&self.file, s)
    }

    fn path_in<'a>(file: &'a [u8], s: &Slot) -> &'a [u8] {
        &file[s.at as usize..(s.at + s.len) as usize]
    }

    fn entry(&self, s: &Slot) -> Entry {
        Memo::entry_in(&self.file, s)
    }

    fn entry_in(file: &[u8], s: &Slot) -> Entry {
        let tail = &file[(s.at + s.len) as usize..][..RECORD_TAIL];
        Entry {
            stamp: Stamp::from_bytes(&tail[..56]),
            sha256: tail[56..].try_into().unwrap_or([0; 32]),
            seen: s.state == SlotState::Seen,
        }
    }

    /// The number of entries a save would consider (the index's live ones and the added ones).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.index
            .iter()
            .filter(|s| s.state != SlotState::Dropped)
            .count()
            + self.added.len()
    }
}

/// Entries by the path's bytes, with a fast non-keyed hash (these are the user's own paths, not
/// input from the network): `PathBuf` keys hashed with SipHash through `Path::components` were a
/// tenth of a no-op build over 20,000 files.
type Paths = HashMap<Box<[u8]>, Entry, rustc_hash::FxBuildHasher>;

fn path_hash(path: &[u8]) -> u64 {
    rustc_hash::FxBuildHasher.hash_one(path)
}

/// The memo file of the context directory `root` inside `cache_dir`.
fn memo_path(cache_dir: &Path, root: &Path) -> PathBuf {
    let h = Sha256::digest(root.as_os_str().as_bytes());
    cache_dir.join(format!("context-hashes-v2-{}.bin", hex::encode(&h[..12])))
}

/// Indexes a persisted memo in place; `None` when it is not one (truncated, foreign, older
/// format, or too large for 32-bit offsets).
fn parse(file: FileBytes) -> Option<Memo> {
    if !file.starts_with(MAGIC) || u32::try_from(file.len()).is_err() {
        return None;
    }
    let mut slots = Vec::with_capacity(file.len() / 128);
    let mut at = MAGIC.len();
    while at < file.len() {
        let len = u32::from_le_bytes(file.get(at..at + 4)?.try_into().ok()?) as usize;
        let path = at + 4;
        file.get(path..path.checked_add(len)?.checked_add(RECORD_TAIL)?)?;
        slots.push(Slot {
            at: path as u32,
            len: len as u32,
            state: SlotState::Unseen,
        });
        at = path + len + RECORD_TAIL;
    }
    let mut index = HashTable::with_capacity(slots.len());
    for s in slots {
        let p = Memo::path_in(&file, &s);
        index.insert_unique(path_hash(p), s, |s| path_hash(Memo::path_in(&file, s)));
    }
    Some(Memo {
        file,
        index,
        added: Paths::default(),
    })
}

impl HashMemo {
    /// Loads the memo of the context directory `root` persisted in `cache_dir`; a missing or
    /// unreadable file is an empty memo (the memo only saves time, it is never needed for
    /// correctness).
    pub fn load(cache_dir: &Path, root: &Path) -> HashMemo {
        let memo = FileBytes::map(&memo_path(cache_dir, root))
            .ok()
            .and_then(parse)
            .unwrap_or_default();
        HashMemo {
            state: Mutex::new(memo),
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
            let memo = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let persisted = memo
                .index
                .iter()
                .filter(|s| s.state != SlotState::Dropped)
                .map(|s| (memo.path(s), memo.entry(s)));
            let added = memo.added.iter().map(|(p, e)| (&**p, *e));
            let mut kept: Vec<(&[u8], Entry)> = persisted
                .chain(added)
                .filter(|(p, e)| {
                    e.seen
                        || fs::symlink_metadata(std::ffi::OsStr::from_bytes(p))
                            .is_ok_and(|m| Stamp::of(&m) == e.stamp)
                })
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
            let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let memo = &mut *guard;
            if let Some(e) = memo.added.get_mut(key) {
                if e.stamp == stamp {
                    e.seen = true;
                    return Ok(e.sha256);
                }
                memo.added.remove(key);
                self.dirty.store(true, Ordering::Relaxed);
            } else {
                let file = &memo.file;
                let slot = memo
                    .index
                    .find_mut(path_hash(key), |s| Memo::path_in(file, s) == key);
                if let Some(slot) = slot.filter(|s| s.state != SlotState::Dropped) {
                    let found = Memo::entry_in(file, slot);
                    if found.stamp == stamp {
                        slot.state = SlotState::Seen;
                        return Ok(found.sha256);
                    }
                    slot.state = SlotState::Dropped;
                    self.dirty.store(true, Ordering::Relaxed);
                }
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
            self.state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .added
                .insert(
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

    /// The sha256 of `path`'s content if the memo knows it for exactly this `lstat` (hashed
    /// earlier in this build or a former one); never reads the file. A file changed within two
    /// seconds of its hashing has none: it may change again without its stamp changing (see
    /// [`HashMemo::file_sha256`]).
    pub fn known_sha256(&self, path: &Path, meta: &fs::Metadata) -> Option<[u8; 32]> {
        let stamp = Stamp::of(meta);
        let key = path.as_os_str().as_bytes();
        let guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = guard.added.get(key) {
            return (e.stamp == stamp).then_some(e.sha256);
        }
        let file = &guard.file;
        let slot = guard
            .index
            .find(path_hash(key), |s| Memo::path_in(file, s) == key)
            .filter(|s| s.state != SlotState::Dropped)?;
        let found = Memo::entry_in(file, slot);
        (found.stamp == stamp).then_some(found.sha256)
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

    /// Ages `f` so that the racy-clean guard lets the memo keep it.
    fn age(f: &Path) {
        let old = rustix::fs::Timespec {
            tv_sec: 1000,
            tv_nsec: 0,
        };
        let times = rustix::fs::Timestamps {
            last_access: old,
            last_modification: old,
        };
        rustix::fs::utimensat(rustix::fs::CWD, f, &times, rustix::fs::AtFlags::empty()).unwrap();
    }

    #[test]
    fn memo_roundtrip_and_invalidation() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a");
        fs::write(&f, b"hello").unwrap();
        age(&f);
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
        assert_eq!(loaded.state.lock().unwrap().len(), 1);
        // A hit changes nothing: the file is not rewritten.
        assert_eq!(loaded.file_sha256(&f, &meta).unwrap(), h);
        let before = fs::symlink_metadata(&file).unwrap().ino();
        loaded.save(&cache, root).unwrap();
        assert_eq!(fs::symlink_metadata(&file).unwrap().ino(), before);
        // Another context root has its own memo.
        assert_eq!(
            HashMemo::load(&cache, &root.join("x"))
                .state
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
        assert_eq!(HashMemo::load(&cache, root).state.lock().unwrap().len(), 0);
    }

    #[test]
    fn known_hashes_are_only_those_already_taken() {
        let dir = tempfile::tempdir().unwrap();
        let (old, fresh) = (dir.path().join("old"), dir.path().join("fresh"));
        fs::write(&old, b"hello").unwrap();
        age(&old);
        fs::write(&fresh, b"new").unwrap();
        let memo = HashMemo::default();
        let (m_old, m_fresh) = (
            fs::symlink_metadata(&old).unwrap(),
            fs::symlink_metadata(&fresh).unwrap(),
        );
        assert_eq!(
            memo.known_sha256(&old, &m_old),
            None,
            "never reads the file"
        );
        let h = memo.file_sha256(&old, &m_old).unwrap();
        assert_eq!(memo.known_sha256(&old, &m_old), Some(h));
        // Too recent to be remembered: unknown even right after hashing it.
        memo.file_sha256(&fresh, &m_fresh).unwrap();
        assert_eq!(memo.known_sha256(&fresh, &m_fresh), None);
        // From a loaded memo too, and never for another stamp.
        let cache = dir.path().join("cache");
        memo.save(&cache, dir.path()).unwrap();
        let loaded = HashMemo::load(&cache, dir.path());
        assert_eq!(loaded.known_sha256(&old, &m_old), Some(h));
        fs::write(&old, b"bye").unwrap();
        age(&old);
        assert_eq!(
            loaded.known_sha256(&old, &fs::symlink_metadata(&old).unwrap()),
            None
        );
    }

    #[test]
    fn a_loaded_memo_answers_from_the_file_and_merges_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = (0..50).map(|i| dir.path().join(format!("f{i}"))).collect();
        let write = |f: &Path, content: String| {
            fs::write(f, content).unwrap();
            age(f);
        };
        for (i, f) in files.iter().enumerate() {
            write(f, format!("content {i}"));
        }
        let (cache, root) = (dir.path().join("cache"), dir.path());
        let memo = HashMemo::default();
        for f in &files {
            memo.file_sha256(f, &fs::symlink_metadata(f).unwrap())
                .unwrap();
        }
        memo.save(&cache, root).unwrap();

        let loaded = HashMemo::load(&cache, root);
        assert_eq!(loaded.state.lock().unwrap().len(), 50);
        for (i, f) in files.iter().enumerate().step_by(2) {
            let h = loaded
                .file_sha256(f, &fs::symlink_metadata(f).unwrap())
                .unwrap();
            assert_eq!(h, sha256_file(f).unwrap(), "{i}");
        }
        assert!(!loaded.dirty.load(Ordering::Relaxed), "hits change nothing");
        // One file changed, one removed: the new content is hashed and replaces the record,
        // the removed file's record goes at the next save.
        write(&files[4], "changed".into());
        fs::remove_file(&files[7]).unwrap();
        let h = loaded
            .file_sha256(&files[4], &fs::symlink_metadata(&files[4]).unwrap())
            .unwrap();
        assert_eq!(h, sha256_file(&files[4]).unwrap());
        loaded.save(&cache, root).unwrap();
        let again = HashMemo::load(&cache, root);
        assert_eq!(again.state.lock().unwrap().len(), 49);
        for f in files.iter().filter(|f| f.exists()) {
            let meta = fs::symlink_metadata(f).unwrap();
            assert_eq!(
                again.file_sha256(f, &meta).unwrap(),
                sha256_file(f).unwrap()
            );
        }
        assert!(!again.dirty.load(Ordering::Relaxed));
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
        assert_eq!(parse(FileBytes::Owned(good.clone())).unwrap().len(), 1);
        for cut in 0..good.len() {
            if cut != MAGIC.len() {
                assert!(
                    parse(FileBytes::Owned(good[..cut].to_vec())).is_none(),
                    "prefix of {cut} bytes"
                );
            }
        }
        assert!(parse(FileBytes::Owned(b"{\"entries\":[]}".to_vec())).is_none());
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(FileBytes::Owned(huge)).is_none());
    }
}
