//! Writing selected sources into a rootfs, with BuildKit's (fsutil `copy`) rules: a directory
//! that the copy creates takes its source's metadata, one that exists keeps its own at the top
//! but is updated below it; files replace non-directories; hardlinks within one copy stay
//! hardlinks; symlinks are copied as they are; owners come from `--chown`, else from the source
//! (a `--from` rootfs) or are root (the context).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};

use super::chmod::ModeChange;
use super::cores;
use super::dest::{display_in_root, resolve_in_root};
use super::error::{io_err, CopyError, Result};
use super::pool::{Attrs, Planner, PoolOp};
use super::select::Entry;
use super::Cancel;
use super::CopyStats;

/// Whose ownership copied entries get.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Owners {
    /// `--chown`, or root for context files and downloads.
    Fixed(u32, u32),
    /// The source's own uid/gid (`--from` a stage or image).
    Keep,
}

pub(crate) struct Writer<'a> {
    spec: Spec<'a>,
    pub stats: CopyStats,
    /// (dev, ino) of a multiply linked source file → where its first copy went.
    links: HashMap<(u64, u64), PathBuf>,
    /// Directory times are set last: writing into a directory changes its mtime.
    dir_times: Vec<(PathBuf, Timestamps)>,
    /// Big files linked from or published to the store's file pool (see `pool`).
    pub pool: Option<Planner<'a>>,
}

/// What every entry of one copy is written with; shared by the threads of a directory copy.
#[derive(Clone, Copy)]
struct Spec<'a> {
    cmd: &'static str,
    root: &'a Path,
    owners: Owners,
    mode: Option<&'a ModeChange>,
    cancel: Option<Cancel<'a>>,
}

/// Below this many independent files, a directory copy stays on one thread.
const PARALLEL_MIN_FILES: usize = 256;
/// Batches a directory copy's files are cut into, per thread: big enough that the threads seldom
/// write into the same directory at once (they contend for its lock), small enough to end
/// together.
const BATCHES_PER_THREAD: usize = 8;

fn ts(sec: i64, nsec: i64) -> Timespec {
    Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    }
}

pub(super) fn times_of(meta: &fs::Metadata) -> Timestamps {
    Timestamps {
        last_access: ts(meta.atime(), meta.atime_nsec()),
        last_modification: ts(meta.mtime(), meta.mtime_nsec()),
    }
}

impl Spec<'_> {
    fn dest_err(&self, p: &Path) -> impl FnOnce(io::Error) -> CopyError {
        io_err(self.cmd, display_in_root(self.root, p))
    }

    fn owner_for(&self, meta: Option<&fs::Metadata>) -> (u32, u32) {
        match (self.owners, meta) {
            (Owners::Fixed(u, g), _) => (u, g),
            (Owners::Keep, Some(m)) => (m.uid(), m.gid()),
            (Owners::Keep, None) => (0, 0),
        }
    }

    /// The permission bits an entry copied from a source with lstat `meta` gets.
    fn mode_for(&self, meta: &fs::Metadata) -> u32 {
        let mode = meta.mode() & 0o7777;
        match self.mode {
            Some(m) => m.apply(mode, meta.is_dir()),
            None => mode,
        }
    }

    /// Sets owner, mode and xattrs of `target` after `src_meta` (the source's lstat); times are
    /// the caller's (a directory's are set last).
    fn attrs(&self, target: &Path, src: Option<&Path>, src_meta: &fs::Metadata) -> Result<()> {
        let (uid, gid) = self.owner_for(Some(src_meta));
        std::os::unix::fs::lchown(target, Some(uid), Some(gid)).map_err(self.dest_err(target))?;
        if !src_meta.file_type().is_symlink() {
            // After chown, which clears setuid/setgid.
            fs::set_permissions(target, fs::Permissions::from_mode(self.mode_for(src_meta)))
                .map_err(self.dest_err(target))?;
        }
        if let Some(src) = src {
            copy_xattrs(src, target);
        }
        Ok(())
    }

    /// [`Spec::attrs`], then the times, for a non-directory.
    fn finish_node(&self, target: &Path, src: &Path, src_meta: &fs::Metadata) -> Result<()> {
        self.attrs(target, Some(src), src_meta)?;
        rustix::fs::utimensat(CWD, target, &times_of(src_meta), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.dest_err(target)(e.into()))
    }

    /// A directory copy whose target `t` is there but is not a directory (BuildKit's words).
    fn not_a_directory(&self, t: &Path) -> CopyError {
        CopyError::Invalid {
            cmd: self.cmd,
            message: format!(
                "cannot copy to non-directory: {}",
                display_in_root(self.root, t)
            ),
        }
    }

    /// Stops the copy when the caller's cancel says so.
    fn check_cancel(&self) -> Result<()> {
        match self.cancel {
            Some(cancel) if cancel() => Err(CopyError::Cancelled { cmd: self.cmd }),
            _ => Ok(()),
        }
    }

    /// Makes room for a non-directory at `target`: an existing file or symlink is replaced, a
    /// directory is an error (as BuildKit).
    fn clear(&self, target: &Path) -> Result<()> {
        match fs::symlink_metadata(target) {
            Ok(m) if m.is_dir() => Err(CopyError::Invalid {
                cmd: self.cmd,
                message: format!(
                    "cannot replace directory {} with a non-directory",
                    display_in_root(self.root, target)
                ),
            }),
            Ok(_) => fs::remove_file(target).map_err(self.dest_err(target)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.dest_err(target)(e)),
        }
    }

    /// A new file at `target` for writing: created first, cleared only if something is there
    /// (O_EXCL sees a symlink too): a copy into a new directory does not look every target up
    /// beforehand.
    fn create(&self, target: &Path) -> Result<File> {
        match create_new(target) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.clear(target)?;
                create_new(target)
            }
            r => r,
        }
        .map_err(self.dest_err(target))
    }

    /// Copies the regular file `src` (lstat `meta`) to a new file at `target`, with its owner,
    /// mode, xattrs and times. These are set through the open descriptors: by path, each call
    /// looked the target up again through the overlay (a third of a 20,000-file copy's calls).
    fn copy_file(
        &self,
        src: &Path,
        meta: &fs::Metadata,
        target: &Path,
        stats: &mut CopyStats,
    ) -> Result<()> {
        let from = File::open(src).map_err(io_err(self.cmd, src))?;
        let to = self.create(target)?;
        stats.bytes += copy_file_content(&from, &to).map_err(self.dest_err(target))?;
        stats.files += 1;
        let (uid, gid) = self.owner_for(Some(meta));
        std::os::unix::fs::fchown(&to, Some(uid), Some(gid)).map_err(self.dest_err(target))?;
        // After chown, which clears setuid/setgid.
        to.set_permissions(fs::Permissions::from_mode(self.mode_for(meta)))
            .map_err(self.dest_err(target))?;
        copy_fd_xattrs(&from, &to);
        rustix::fs::futimens(&to, &times_of(meta)).map_err(|e| self.dest_err(target)(e.into()))
    }

    /// Writes a non-directory that shares nothing with the other entries of the copy: a regular
    /// file that is not a hard link (nor pooled), a symlink, a device, fifo or socket.
    fn plain_node(
        &self,
        src: &Path,
        meta: &fs::Metadata,
        target: &Path,
        stats: &mut CopyStats,
    ) -> Result<()> {
        let ft = meta.file_type();
        if ft.is_file() {
            return self.copy_file(src, meta, target, stats);
        }
        self.clear(target)?;
        if ft.is_symlink() {
            let link = fs::read_link(src).map_err(io_err(self.cmd, src))?;
            std::os::unix::fs::symlink(&link, target).map_err(self.dest_err(target))?;
            stats.symlinks += 1;
        } else {
            // Devices, fifos and sockets only come from a --from rootfs in practice.
            let kind = rustix::fs::FileType::from_raw_mode(meta.mode());
            let mode = rustix::fs::Mode::from_raw_mode(meta.mode() & 0o7777);
            rustix::fs::mknodat(CWD, target, kind, mode, meta.rdev())
                .map_err(|e| self.dest_err(target)(e.into()))?;
            stats.other += 1;
        }
        self.finish_node(target, src, meta)
    }

    /// Runs [`Spec::plain_node`] over `jobs` (source, lstat, target), on all cores when the
    /// targets are `distinct`; the first failure in job order is the one returned.
    fn plain_nodes(
        &self,
        jobs: &[(PathBuf, &fs::Metadata, PathBuf)],
        distinct: bool,
    ) -> Result<CopyStats> {
        let threads = if jobs.len() < PARALLEL_MIN_FILES || !distinct {
            1
        } else {
            cores::available().min(jobs.len() / (PARALLEL_MIN_FILES / 2))
        };
        let batch = (jobs.len() / (threads * BATCHES_PER_THREAD)).max(1);
        let per_job = cores::map(jobs, threads, batch, |(src, meta, target)| {
            self.check_cancel()?;
            let mut stats = CopyStats::default();
            self.plain_node(src, meta, target, &mut stats)
                .map(|()| stats)
        })?;
        let mut total = CopyStats::default();
        for stats in &per_job {
            total.add(stats);
        }
        Ok(total)
    }
}

impl<'a> Writer<'a> {
    pub fn new(
        cmd: &'static str,
        root: &'a Path,
        owners: Owners,
        mode: Option<&'a ModeChange>,
    ) -> Self {
        Writer {
            spec: Spec {
                cmd,
                root,
                owners,
                mode,
                cancel: None,
            },
            stats: CopyStats::default(),
            links: HashMap::new(),
            dir_times: Vec::new(),
            pool: None,
        }
    }

    /// Asks `cancel` before each file (see [`super::Cancel`]).
    pub fn with_cancel(mut self, cancel: Option<Cancel<'a>>) -> Self {
        self.spec.cancel = cancel;
        self
    }

    fn dest_err(&self, p: &Path) -> impl FnOnce(io::Error) -> CopyError {
        self.spec.dest_err(p)
    }

    /// Sets owner, mode and xattrs of the directory `target` after `src_meta` (the source's
    /// lstat); its times are set last, by [`Writer::done`] (writing into it changes them).
    fn finish_dir(&mut self, target: &Path, src: &Path, src_meta: &fs::Metadata) -> Result<()> {
        self.spec.attrs(target, Some(src), src_meta)?;
        self.dir_times
            .push((target.to_path_buf(), times_of(src_meta)));
        Ok(())
    }

    /// Whether the non-directory `meta` is written by [`Spec::plain_node`]: not a candidate for
    /// the pool, not a hard link (whose first copy the others link to).
    fn is_plain(&self, meta: &fs::Metadata) -> bool {
        !meta.is_file()
            || (meta.nlink() == 1 && (self.pool.is_none() || meta.size() < super::pool::MIN_SIZE))
    }

    /// Copies one non-directory `src` (lstat `meta`) to `target`.
    pub fn node(&mut self, src: &Path, meta: &fs::Metadata, target: &Path) -> Result<()> {
        self.spec.check_cancel()?;
        if let Some(p) = &mut self.pool {
            p.replacing(target);
        }
        if meta.is_file() {
            if let Some((key, attrs)) = self.pool_key(src, meta, target) {
                return self.pooled(src, meta, target, key, attrs);
            }
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = self.links.get(&key) {
                    self.spec.clear(target)?;
                    fs::hard_link(first, target).map_err(self.dest_err(target))?;
                    self.stats.hardlinks += 1;
                    return Ok(());
                }
                self.links.insert(key, target.to_path_buf());
            }
        }
        self.spec.plain_node(src, meta, target, &mut self.stats)
    }

    /// The pool key of the regular file `src` (lstat `meta`) copied to `target`, and what the
    /// copy gives it, if the pool may serve or take it (see `pool`).
    fn pool_key(
        &mut self,
        src: &Path,
        meta: &fs::Metadata,
        target: &Path,
    ) -> Option<(String, Attrs)> {
        if self.pool.is_none() || meta.size() < super::pool::MIN_SIZE {
            return None;
        }
        let (uid, gid) = self.spec.owner_for(Some(meta));
        let mode = self.spec.mode_for(meta);
        let image_path = target.strip_prefix(self.spec.root).ok()?;
        let key = self
            .pool
            .as_mut()?
            .key(src, meta, image_path, (uid, gid, mode))?;
        let attrs = Attrs {
            uid,
            gid,
            mode,
            meta: meta.clone(),
        };
        Some((key, attrs))
    }

    /// Copies a file the pool may serve or take: a pool hit leaves an empty placeholder with the
    /// file's owner, mode and times (the pool object is linked over it later); a miss copies.
    fn pooled(
        &mut self,
        src: &Path,
        meta: &fs::Metadata,
        target: &Path,
        key: String,
        attrs: Attrs,
    ) -> Result<()> {
        let source = src.to_path_buf();
        let target_buf = target.to_path_buf();
        let op = if self.pool.as_ref().is_some_and(|p| p.pool.has(&key)) {
            drop(self.spec.create(target)?);
            self.stats.files += 1;
            self.spec.finish_node(target, src, meta)?;
            PoolOp::Link {
                target: target_buf,
                key,
                source,
                attrs,
            }
        } else {
            self.spec.copy_file(src, meta, target, &mut self.stats)?;
            PoolOp::Publish {
                target: target_buf,
                key,
                source,
                attrs,
            }
        };
        if let Some(p) = &mut self.pool {
            p.push(op);
        }
        Ok(())
    }

    /// Writes an inline file (heredoc, download) at `target`, mode `mode` before `--chmod`.
    pub fn inline(
        &mut self,
        content: &mut dyn Read,
        target: &Path,
        mode: u32,
        mtime: i64,
    ) -> Result<()> {
        if let Some(p) = &mut self.pool {
            p.replacing(target);
        }
        self.spec.clear(target)?;
        self.stats.bytes += write_new(content, target).map_err(self.dest_err(target))?;
        self.stats.files += 1;
        let (uid, gid) = self.spec.owner_for(None);
        std::os::unix::fs::lchown(target, Some(uid), Some(gid)).map_err(self.dest_err(target))?;
        let mode = self.spec.mode.map(|m| m.apply(mode, false)).unwrap_or(mode);
        fs::set_permissions(target, fs::Permissions::from_mode(mode))
            .map_err(self.dest_err(target))?;
        let t = Timestamps {
            last_access: ts(mtime, 0),
            last_modification: ts(mtime, 0),
        };
        rustix::fs::utimensat(CWD, target, &t, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.dest_err(target)(e.into()))?;
        Ok(())
    }

    /// Copies the contents of the directory `src` (lstat `meta`, entries already selected) into
    /// `target` (resolved in the root). `target` takes `src`'s metadata only if created here
    /// (callers create it beforehand, as BuildKit does, so in practice it keeps its own).
    pub fn dir(
        &mut self,
        src: &Path,
        meta: &fs::Metadata,
        entries: &[Entry],
        target: &Path,
    ) -> Result<()> {
        match fs::symlink_metadata(target) {
            // An existing top directory keeps its owner and mode; its times become the
            // source's, as fsutil restores them.
            Ok(m) if m.is_dir() => self.dir_times.push((target.to_path_buf(), times_of(meta))),
            Ok(_) => return Err(self.spec.not_a_directory(target)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(target).map_err(self.dest_err(target))?;
                self.stats.dirs += 1;
                self.finish_dir(target, src, meta)?;
            }
            Err(e) => return Err(self.dest_err(target)(e)),
        }
        let mut placed: HashMap<&Path, PathBuf> = HashMap::new();
        // Directories are made here, in order; the files that share nothing with others are
        // written afterwards on all cores (a copy of 20,000 small files kept one core busy and
        // the other idle).
        let mut plain = Vec::new();
        // A directory reached through a symlink of the destination (merged /usr) may give two
        // entries one target; the later one must win, so those copies keep their order.
        let mut aliased = false;
        for e in entries {
            let parent = match e.rel.parent() {
                Some(p) if !p.as_os_str().is_empty() => match placed.get(p) {
                    Some(t) => t.clone(),
                    // The walk emits parents first; a missing one means it was not a directory.
                    None => continue,
                },
                _ => target.to_path_buf(),
            };
            let name = e.rel.file_name().unwrap_or(OsStr::new(""));
            let t = parent.join(name);
            let path = src.join(&e.rel);
            if e.meta.is_dir() {
                let resolved = self.subdir(&t)?;
                aliased |= resolved != t;
                let t = resolved;
                self.finish_dir(&t, &path, &e.meta)?;
                placed.insert(&e.rel, t);
            } else if self.is_plain(&e.meta) {
                if let Some(p) = &mut self.pool {
                    p.replacing(&t);
                }
                plain.push((path, &e.meta, t));
            } else {
                self.node(&path, &e.meta, &t)?;
            }
        }
        let stats = self.spec.plain_nodes(&plain, !aliased)?;
        self.stats.add(&stats);
        Ok(())
    }

    /// The directory at `t` for a directory entry: created if missing, reused if it exists. An
    /// existing symlink there is followed inside the root when it leads to a directory (merged
    /// /usr: `lib -> usr/lib`); BuildKit refuses that case, we prefer the image it would build
    /// if it did not, and the root confinement keeps it safe.
    fn subdir(&mut self, t: &Path) -> Result<PathBuf> {
        match fs::symlink_metadata(t) {
            Ok(m) if m.is_dir() => Ok(t.to_path_buf()),
            Ok(m) if m.file_type().is_symlink() => {
                let rel = t.strip_prefix(self.spec.root).unwrap_or(t);
                let r = resolve_in_root(self.spec.root, rel, true).map_err(self.dest_err(t))?;
                if r.is_dir() {
                    Ok(r)
                } else {
                    Err(self.spec.not_a_directory(t))
                }
            }
            Ok(_) => Err(self.spec.not_a_directory(t)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(t).map_err(self.dest_err(t))?;
                self.stats.dirs += 1;
                Ok(t.to_path_buf())
            }
            Err(e) => Err(self.dest_err(t)(e)),
        }
    }

    /// Sets the deferred directory times (deepest first) and returns the counters.
    pub fn done(mut self) -> Result<CopyStats> {
        while let Some((p, t)) = self.dir_times.pop() {
            rustix::fs::utimensat(CWD, &p, &t, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| self.dest_err(&p)(e.into()))?;
        }
        Ok(self.stats)
    }
}

/// Creates `target`, which must not exist, for writing (mode 0600 until the copy sets its own).
fn create_new(target: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(target)
}

/// Copies the content of the regular file `from` into the new file `to`; returns the bytes
/// written. sendfile(2) moves them inside the kernel: through `dyn Read` they went through an
/// 8 KiB buffer in user space (a tenth of a big COPY's CPU), and the copy_file_range that std
/// tries first fails (EXDEV) from the context's filesystem into the overlay, one wasted syscall
/// per file. Where sendfile cannot serve (EINVAL, ENOSYS), a plain copy does.
fn copy_file_content(from: &File, to: &File) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        match rustix::fs::sendfile(to, from, None, 1 << 30) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) if total == 0 => {
                let (mut from, mut to) = (from, to);
                return io::copy(&mut from, &mut to);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Creates `target` (which must not exist) with `content`; returns the bytes written.
fn write_new(content: &mut dyn Read, target: &Path) -> io::Result<u64> {
    io::copy(content, &mut create_new(target)?)
}

/// [`copy_xattrs`] between open files.
fn copy_fd_xattrs(src: &File, dst: &File) {
    copy_xattrs_with(
        |names| rustix::fs::flistxattr(src, names),
        |name, value| rustix::fs::fgetxattr(src, name, value),
        |name, value| {
            let _ = rustix::fs::fsetxattr(dst, name, value, rustix::fs::XattrFlags::empty());
        },
    )
}

/// Copies extended attributes; failures (unsupported filesystem, `security.*` without the
/// capability) are ignored, as BuildKit ignores them.
pub(crate) fn copy_xattrs(src: &Path, dst: &Path) {
    copy_xattrs_with(
        |names| rustix::fs::llistxattr(src, names),
        |name, value| rustix::fs::lgetxattr(src, name, value),
        |name, value| {
            let _ = rustix::fs::lsetxattr(dst, name, value, rustix::fs::XattrFlags::empty());
        },
    )
}

fn copy_xattrs_with(
    list: impl FnOnce(&mut [u8]) -> rustix::io::Result<usize>,
    get: impl Fn(&[u8], &mut [u8]) -> rustix::io::Result<usize>,
    set: impl Fn(&[u8], &[u8]),
) {
    // Most files have none: no allocation for them.
    let mut names = [0u8; 4096];
    let Ok(n) = list(&mut names) else {
        return;
    };
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let mut value = vec![0u8; 64 * 1024];
        if let Ok(len) = get(name, &mut value) {
            set(name, &value[..len]);
        }
    }
}
