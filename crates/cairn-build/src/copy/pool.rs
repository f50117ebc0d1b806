//! COPY's side of the store's file pool ([`cairn_store::FilePool`]): big context files are
//! hard-linked from the pool into the step's layer instead of written again.
//!
//! A COPY writes through the overlay's merged mount, where a file of the underlying filesystem
//! cannot be linked (EXDEV). So the copy itself only plans: for a file the pool has, it creates
//! an empty placeholder and gives it owner, mode and times as a copy would (which also creates
//! the entry and its parents in the upper dir exactly as a copy would), and records
//! [`PoolOp::Link`]; for one it lacks, it copies as usual and records [`PoolOp::Publish`]. Once
//! the copy is done, the solver runs the ops on the upper dir ([`PoolOps::apply`]): the pool
//! object is renamed over the placeholder, a copied file is linked into the pool.
//!
//! Only context files qualify, regular, not hard-linked in the context (link count 1), of at
//! least [`MIN_SIZE`] bytes, without xattrs, whose content hash the context's memo holds for
//! their exact `lstat` (the digest the step's cache key used; never a file changed within two
//! seconds of its hashing). The key ([`key_of`]) binds what the layer's tar takes from the file:
//! path in the image, content, owner, mode and mtime (the tar has no atime or ctime). The path
//! keeps one object from appearing at two paths of one image (two layers linking it), which a
//! later `COPY --from` or a `tar` in a RUN would see as a hard link; and one COPY links a key at
//! most once, so two identical files stay two files in its layer.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cairn_store::FilePool;
use rustix::fs::{AtFlags, CWD};
use sha2::{Digest, Sha256};

use super::error::{io_err, Result};
use super::write::times_of;
use crate::context::hashes::HashMemo;

/// Smallest file the pool takes: below it, linking and its bookkeeping save little next to a
/// copy (bigctx: the 20,000 small files stay copies).
pub const MIN_SIZE: u64 = 256 * 1024;

/// The pool key of a file: sha256 over the image path of the file (relative to the root), its
/// content's sha256 and the uid, gid, mode and mtime it gets in the layer.
pub fn key_of(
    image_path: &Path,
    content_sha256: &[u8; 32],
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: (i64, i64),
) -> String {
    let mut h = Sha256::new();
    let path = image_path.as_os_str().as_bytes();
    h.update(b"cairn-file-pool-v1\0");
    h.update((path.len() as u64).to_le_bytes());
    h.update(path);
    h.update(content_sha256);
    for n in [uid as i64, gid as i64, mode as i64, mtime.0, mtime.1] {
        h.update(n.to_le_bytes());
    }
    hex::encode(h.finalize())
}

/// One thing to do in the upper dir after the copy.
#[derive(Debug)]
pub enum PoolOp {
    /// `target` is an empty placeholder: put the pool object `key` there.
    Link {
        /// The file's path in the merged root.
        target: PathBuf,
        /// Its pool key.
        key: String,
        /// The context file (a copy from it is the fallback).
        source: PathBuf,
        /// What the placeholder was given: uid, gid, mode, and the source's `lstat` (times).
        attrs: Attrs,
    },
    /// `target` was copied from `source`: make it the pool object `key`, unless the source
    /// changed since it was selected.
    Publish {
        /// The file's path in the merged root.
        target: PathBuf,
        /// Its pool key.
        key: String,
        /// The context file.
        source: PathBuf,
        /// What the copy was given, and the source's `lstat` when it was selected.
        attrs: Attrs,
    },
}

/// Owner and mode a pooled file was given, and its source's `lstat`.
#[derive(Debug, Clone)]
pub struct Attrs {
    /// Owner in the layer.
    pub uid: u32,
    /// Group in the layer.
    pub gid: u32,
    /// Permission bits in the layer (after `--chmod`).
    pub mode: u32,
    /// The source's `lstat` at selection.
    pub meta: fs::Metadata,
}

impl PoolOp {
    fn target(&self) -> &Path {
        match self {
            PoolOp::Link { target, .. } | PoolOp::Publish { target, .. } => target,
        }
    }
}

/// What a COPY left for the pool to do, in order.
#[derive(Debug, Default)]
pub struct PoolOps {
    cmd: &'static str,
    ops: Vec<PoolOp>,
}

/// What [`PoolOps::apply`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PoolApplied {
    /// Placeholders replaced by pool objects.
    pub linked: u64,
    /// Placeholders filled by a copy because linking failed.
    pub copied: u64,
    /// Files put into the pool.
    pub published: u64,
    /// Files not published: the source changed during the build, the file is not what was
    /// copied, or the pool refused.
    pub skipped: u64,
}

impl PoolOps {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The ops, in order.
    pub fn ops(&self) -> &[PoolOp] {
        &self.ops
    }

    /// Runs the ops on `upper`, the upper dir of the overlay mounted at `merged` that the copy
    /// wrote through. They change the upper dir while the overlay may still be mounted: nothing
    /// reads those paths through the mount afterwards (the layer is read from the upper dir,
    /// then the overlay goes), so its caches never serve the replaced placeholders.
    ///
    /// A failed link fills the placeholder with a copy of the pool object (or of the source, if
    /// the object is gone): the step fails only if that fails too, naming the file. A failed
    /// publish only leaves the file out of the pool.
    pub fn apply(&self, merged: &Path, upper: &Path, pool: &FilePool) -> Result<PoolApplied> {
        let mut done = PoolApplied::default();
        for op in &self.ops {
            // Keys are only made for targets below the root (their path in the image is in it).
            let rel = op.target().strip_prefix(merged).unwrap_or(op.target());
            let at = upper.join(rel);
            match op {
                PoolOp::Link {
                    key, source, attrs, ..
                } => {
                    let shown = || Path::new("/").join(rel);
                    // A placeholder that is gone was removed by no COPY: say so rather than
                    // leave the file out of the layer.
                    let m = fs::symlink_metadata(&at).map_err(io_err(self.cmd, shown()))?;
                    if !(m.is_file() && m.nlink() == 1 && m.size() == 0) {
                        // Not the placeholder: something written there after it wins.
                        done.skipped += 1;
                        continue;
                    }
                    let linked = if is_placeholder(&at, attrs) {
                        link_keeping_dir_times(pool, key, &at)
                    } else {
                        Ok(false)
                    };
                    match linked {
                        Ok(true) => done.linked += 1,
                        Ok(false) => {
                            fill(&at, pool, key, source, attrs)
                                .map_err(io_err(self.cmd, shown()))?;
                            done.copied += 1;
                        }
                        // Linked, but its directory's times could not be restored.
                        Err(e) => {
                            let dir = shown().parent().map(Path::to_path_buf).unwrap_or_default();
                            return Err(io_err(self.cmd, dir)(e));
                        }
                    }
                }
                PoolOp::Publish {
                    key, source, attrs, ..
                } => {
                    if unchanged(source, &attrs.meta)
                        && is_copy(&at, attrs)
                        && pool.publish(key, &at).unwrap_or(false)
                    {
                        done.published += 1;
                    } else {
                        done.skipped += 1;
                    }
                }
            }
        }
        Ok(done)
    }
}

/// The planning half, held by the copy's writer.
pub(crate) struct Planner<'a> {
    pub pool: &'a FilePool,
    pub memo: &'a HashMemo,
    /// Keys linked or published by this COPY: each at most once.
    used: HashSet<String>,
    ops: Vec<PoolOp>,
    /// Target → index in `ops` of the op still pending there.
    at: HashMap<PathBuf, usize>,
    /// Ops dropped because their target was written again later.
    dropped: Vec<bool>,
}

impl<'a> Planner<'a> {
    pub fn new(pool: &'a FilePool, memo: &'a HashMemo) -> Self {
        Planner {
            pool,
            memo,
            used: HashSet::new(),
            ops: Vec::new(),
            at: HashMap::new(),
            dropped: Vec::new(),
        }
    }

    /// The key of `src` (lstat `meta`) copied to `target` (`image_path` in the root) with
    /// `uid`, `gid`, `mode`, if it qualifies and this COPY has not used it yet.
    pub fn key(
        &mut self,
        src: &Path,
        meta: &fs::Metadata,
        image_path: &Path,
        (uid, gid, mode): (u32, u32, u32),
    ) -> Option<String> {
        if !meta.is_file() || meta.nlink() != 1 || meta.size() < MIN_SIZE {
            return None;
        }
        // Any xattr (or not knowing): a copy, which carries them as it can.
        if !no_xattrs(src) {
            return None;
        }
        let sha = self.memo.known_sha256(src, meta)?;
        let key = key_of(
            image_path,
            &sha,
            uid,
            gid,
            mode,
            (meta.mtime(), meta.mtime_nsec()),
        );
        self.used.insert(key.clone()).then_some(key)
    }

    /// A non-directory is about to be written at `target`: an op planned there is void.
    pub fn replacing(&mut self, target: &Path) {
        if self.at.is_empty() {
            return;
        }
        if let Some(i) = self.at.remove(target) {
            self.dropped[i] = true;
        }
    }

    pub fn push(&mut self, op: PoolOp) {
        self.at.insert(op.target().to_path_buf(), self.ops.len());
        self.ops.push(op);
        self.dropped.push(false);
    }

    pub fn finish(self, cmd: &'static str) -> PoolOps {
        let ops = self
            .ops
            .into_iter()
            .zip(self.dropped)
            .filter_map(|(op, dropped)| (!dropped).then_some(op))
            .collect();
        PoolOps { cmd, ops }
    }
}

/// Whether the source is as it was selected: a file edited during the build must not enter the
/// pool under a digest its new content may not have.
fn unchanged(source: &Path, then: &fs::Metadata) -> bool {
    fs::symlink_metadata(source).is_ok_and(|now| {
        now.is_file()
            && (now.dev(), now.ino(), now.size()) == (then.dev(), then.ino(), then.size())
            && (now.mtime(), now.mtime_nsec()) == (then.mtime(), then.mtime_nsec())
            && (now.ctime(), now.ctime_nsec()) == (then.ctime(), then.ctime_nsec())
    })
}

/// Whether `at` (in the upper dir) is a file with the owner, mode and mtime the copy gave it,
/// linked nowhere else, `size` bytes long, without xattrs. The last keeps every pool object
/// without them, and a placeholder that got some where it was made (a default ACL of its
/// directory, a security label) from being replaced by an object without.
fn matches(at: &Path, a: &Attrs, size: u64) -> bool {
    fs::symlink_metadata(at).is_ok_and(|m| {
        m.is_file()
            && m.nlink() == 1
            && m.size() == size
            && (m.uid(), m.gid(), m.mode() & 0o7777) == (a.uid, a.gid, a.mode)
            && (m.mtime(), m.mtime_nsec()) == (a.meta.mtime(), a.meta.mtime_nsec())
    }) && no_xattrs(at)
}

/// `path` has no xattrs (or its filesystem none at all).
fn no_xattrs(path: &Path) -> bool {
    matches!(
        rustix::fs::llistxattr(path, &mut [0u8; 0][..]),
        Ok(0) | Err(rustix::io::Errno::NOTSUP)
    )
}

/// Still the placeholder the copy made (empty).
fn is_placeholder(at: &Path, a: &Attrs) -> bool {
    matches(at, a, 0)
}

/// Still the copy of the source (as long as the source was).
fn is_copy(at: &Path, a: &Attrs) -> bool {
    matches(at, a, a.meta.size())
}

/// Links the object over `at`, then gives `at`'s directory back the times it had (the link and
/// the rename changed them; a directory's mtime is in the layer). `Ok(false)`: not linked, `at`
/// untouched; an error: linked, but the directory's times are wrong.
fn link_keeping_dir_times(pool: &FilePool, key: &str, at: &Path) -> io::Result<bool> {
    let Some(dir) = at.parent() else {
        return Ok(false);
    };
    let Ok(before) = fs::symlink_metadata(dir) else {
        return Ok(false);
    };
    if pool.link_to(key, at).is_err() {
        return Ok(false);
    }
    rustix::fs::utimensat(CWD, dir, &times_of(&before), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(true)
}

/// Fills the placeholder `at` with the content of the object `key` (the content the step's
/// digest had) or, if it is gone, of `source` (what a plain copy would have read), and gives it
/// the owner, mode and times it should have. Never writes into a file linked elsewhere (a pool
/// object).
fn fill(at: &Path, pool: &FilePool, key: &str, source: &Path, a: &Attrs) -> io::Result<()> {
    let mut from = match pool.open(key) {
        Some(f) => f,
        None => File::open(source)?,
    };
    let mut to = OpenOptions::new().write(true).open(at)?;
    let m = to.metadata()?;
    if !m.is_file() || m.nlink() != 1 {
        return Err(io::Error::other("the placeholder was replaced"));
    }
    to.set_len(0)?;
    io::copy(&mut from, &mut to)?;
    drop(to);
    std::os::unix::fs::lchown(at, Some(a.uid), Some(a.gid))?;
    fs::set_permissions(at, fs::Permissions::from_mode(a.mode))?;
    rustix::fs::utimensat(CWD, at, &times_of(&a.meta), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::{Timespec, Timestamps};

    struct Env {
        _tmp: tempfile::TempDir,
        store: cairn_store::Store,
        src: PathBuf,
        merged: PathBuf,
        upper: PathBuf,
    }

    fn env() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let store = cairn_store::Store::open(&tmp.path().join("store")).unwrap();
        let (src, merged, upper) = (
            tmp.path().join("ctx"),
            tmp.path().join("merged"),
            store.root().join("tmp/upper"),
        );
        for d in [&src, &merged, &upper.join("d")] {
            fs::create_dir_all(d).unwrap();
        }
        Env {
            _tmp: tmp,
            store,
            src,
            merged,
            upper,
        }
    }

    fn set_times(p: &Path, sec: i64, nsec: i64) {
        let t = Timespec {
            tv_sec: sec,
            tv_nsec: nsec as _,
        };
        let ts = Timestamps {
            last_access: t,
            last_modification: t,
        };
        rustix::fs::utimensat(CWD, p, &ts, AtFlags::SYMLINK_NOFOLLOW).unwrap();
    }

    /// A context file `name` with `content`, and its copy in the upper dir at `d/name` with the
    /// attributes the copier would give it; returns the attributes.
    fn copied(e: &Env, name: &str, content: &[u8]) -> Attrs {
        let src = e.src.join(name);
        fs::write(&src, content).unwrap();
        set_times(&src, 1_600_000_000, 123_456_789);
        let meta = fs::symlink_metadata(&src).unwrap();
        let at = e.upper.join("d").join(name);
        fs::write(&at, content).unwrap();
        fs::set_permissions(&at, fs::Permissions::from_mode(0o640)).unwrap();
        set_times(&at, 1_600_000_000, 123_456_789);
        Attrs {
            uid: meta.uid(),
            gid: meta.gid(),
            mode: 0o640,
            meta,
        }
    }

    fn publish(e: &Env, name: &str, key: &str, attrs: Attrs) -> PoolOp {
        PoolOp::Publish {
            target: e.merged.join("d").join(name),
            key: key.into(),
            source: e.src.join(name),
            attrs,
        }
    }

    const K1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const K2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn a_source_changed_since_its_selection_is_not_published() {
        let e = env();
        let pool = e.store.file_pool();
        let a = copied(&e, "same", b"as selected");
        let b = copied(&e, "edited", b"as selected");
        // Edited after the selection (and the copy), even back to the same size and mtime: its
        // ctime tells.
        fs::write(e.src.join("edited"), b"as edited!!").unwrap();
        set_times(&e.src.join("edited"), 1_600_000_000, 123_456_789);
        let ops = PoolOps {
            cmd: "COPY",
            ops: vec![publish(&e, "same", K1, a), publish(&e, "edited", K2, b)],
        };
        let done = ops.apply(&e.merged, &e.upper, &pool).unwrap();
        assert_eq!((done.published, done.skipped), (1, 1));
        assert!(pool.has(K1));
        assert!(!pool.has(K2));
    }

    #[test]
    fn a_placeholder_becomes_the_object_and_its_directory_keeps_its_times() {
        let e = env();
        let pool = e.store.file_pool();
        // Published by an earlier build.
        let a = copied(&e, "big", b"big content");
        let obj = e.upper.join("d/big");
        assert!(pool.publish(K1, &obj).unwrap());
        fs::remove_file(&obj).unwrap();
        // This build's placeholder.
        fs::write(&obj, b"").unwrap();
        fs::set_permissions(&obj, fs::Permissions::from_mode(0o640)).unwrap();
        set_times(&obj, 1_600_000_000, 123_456_789);
        let dir = e.upper.join("d");
        set_times(&dir, 1_500_000_000, 5);
        let op = |key: &str| PoolOps {
            cmd: "COPY",
            ops: vec![PoolOp::Link {
                target: e.merged.join("d/big"),
                key: key.into(),
                source: e.src.join("big"),
                attrs: a.clone(),
            }],
        };
        let done = op(K1).apply(&e.merged, &e.upper, &pool).unwrap();
        assert_eq!(done.linked, 1);
        assert_eq!(fs::read(&obj).unwrap(), b"big content");
        let m = fs::symlink_metadata(&obj).unwrap();
        assert_eq!(m.nlink(), 2);
        let d = fs::symlink_metadata(&dir).unwrap();
        assert_eq!((d.mtime(), d.mtime_nsec()), (1_500_000_000, 5));
        // Not a placeholder any more: a second run leaves it alone.
        let done = op(K1).apply(&e.merged, &e.upper, &pool).unwrap();
        assert_eq!(done.skipped, 1);

        // An object that is gone: the placeholder is filled from the source instead.
        fs::remove_file(&obj).unwrap();
        fs::write(&obj, b"").unwrap();
        fs::set_permissions(&obj, fs::Permissions::from_mode(0o640)).unwrap();
        set_times(&obj, 1_600_000_000, 123_456_789);
        let done = op(K2).apply(&e.merged, &e.upper, &pool).unwrap();
        assert_eq!(done.copied, 1);
        assert_eq!(fs::read(&obj).unwrap(), b"big content");
        let m = fs::symlink_metadata(&obj).unwrap();
        assert_eq!(m.nlink(), 1);
        assert_eq!(m.mode() & 0o7777, 0o640);
        assert_eq!((m.mtime(), m.mtime_nsec()), (1_600_000_000, 123_456_789));
        // The pool object was never written.
        let mut kept = String::new();
        io::Read::read_to_string(&mut pool.open(K1).unwrap(), &mut kept).unwrap();
        assert_eq!(kept, "big content");
    }

    #[test]
    fn keys_bind_path_content_owner_mode_and_mtime() {
        let sha = [7u8; 32];
        let base = key_of(Path::new("ctx/big"), &sha, 0, 0, 0o644, (1, 2));
        assert_eq!(base.len(), 64);
        for other in [
            key_of(Path::new("ctx/big2"), &sha, 0, 0, 0o644, (1, 2)),
            key_of(Path::new("ctx/big"), &[8u8; 32], 0, 0, 0o644, (1, 2)),
            key_of(Path::new("ctx/big"), &sha, 1, 0, 0o644, (1, 2)),
            key_of(Path::new("ctx/big"), &sha, 0, 1, 0o644, (1, 2)),
            key_of(Path::new("ctx/big"), &sha, 0, 0, 0o600, (1, 2)),
            key_of(Path::new("ctx/big"), &sha, 0, 0, 0o644, (1, 3)),
            key_of(Path::new("ctx/big"), &sha, 0, 0, 0o644, (2, 2)),
        ] {
            assert_ne!(base, other);
        }
    }
}
