//! Tar stream → directory, with every escape refused.
//!
//! Every filesystem operation is relative to a directory fd opened with `openat2(RESOLVE_BENEATH)`
//! from the target root, and the final component is never followed. So no entry, symlink planted by
//! an earlier entry, or hardlink target can make a write land outside the target: the kernel
//! refuses the resolution (EXDEV) and we report the entry by name before touching anything.

use crate::hash::HashingReader;
use crate::{Error, UnpackMode};
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use rustix::io::Errno;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// What an unpack did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Entries read from the archive (PAX headers excluded).
    pub entries: u64,
    /// Regular file bytes plus symlink target lengths (hardlinks count once): the size docker
    /// reports for a layer it loaded, pulled or imported (overlay2's directory walk of the
    /// unpacked layer: lstat sizes, a symlink's being its target's length). Layers a build wrote
    /// count their regular files only ([`crate::WriteStats::content_size`]).
    pub bytes: u64,
    /// Entries skipped because this process lacks the privilege (device nodes when not root).
    pub skipped: u64,
    /// sha256 of the whole uncompressed tar stream: the layer's diffID.
    pub diff_id: crate::Digest,
    /// Size of the uncompressed tar stream.
    pub tar_size: u64,
}

/// Unpacks the layer read from `reader` (gzip, zstd, xz or plain tar, detected) into `target`,
/// which must exist. Whiteouts are handled as `mode` says.
pub fn unpack_layer<R: Read>(
    reader: R,
    target: &Path,
    mode: UnpackMode,
) -> Result<UnpackStats, Error> {
    let plain = crate::compress::decompress(reader)?;
    let mut hashed = HashingReader::new(plain);
    let stats = {
        let mut archive = tar::Archive::new(&mut hashed);
        let mut u = Unpacker::new(target, mode)?;
        let entries = archive.entries().map_err(|e| Error::io("<tar>", e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| Error::io("<tar>", e))?;
            u.entry(&mut entry)?;
        }
        u.finish()?
    };
    // The tar reader stops at the end-of-archive blocks; the diffID covers the whole stream.
    io::copy(&mut hashed, &mut io::sink()).map_err(|e| Error::io("<tar>", e))?;
    let (_, diff_id, tar_size) = hashed.finish();
    Ok(UnpackStats {
        diff_id,
        tar_size,
        ..stats
    })
}

/// Reads a layer (compressed or not) to its end without writing anything, and returns what an
/// unpack would report: diffID, tar size, content size. Used to verify and size foreign layers.
pub fn measure_layer<R: Read>(reader: R) -> Result<UnpackStats, Error> {
    let plain = crate::compress::decompress(reader)?;
    let mut hashed = HashingReader::new(plain);
    let mut stats = UnpackStats::default();
    {
        let mut archive = tar::Archive::new(&mut hashed);
        for entry in archive.entries().map_err(|e| Error::io("<tar>", e))? {
            let entry = entry.map_err(|e| Error::io("<tar>", e))?;
            match entry.header().entry_type() {
                tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
                tar::EntryType::Regular | tar::EntryType::Continuous => stats.bytes += entry.size(),
                tar::EntryType::Symlink => {
                    stats.bytes += entry.link_name_bytes().map(|l| l.len() as u64).unwrap_or(0)
                }
                _ => {}
            }
            stats.entries += 1;
        }
    }
    io::copy(&mut hashed, &mut io::sink()).map_err(|e| Error::io("<tar>", e))?;
    let (_, diff_id, tar_size) = hashed.finish();
    stats.diff_id = diff_id;
    stats.tar_size = tar_size;
    Ok(stats)
}

struct Unpacker {
    root: OwnedFd,
    root_path: PathBuf,
    mode: UnpackMode,
    is_root: bool,
    stats: UnpackStats,
    /// Paths written by this layer: an opaque marker in Apply mode must not delete them.
    written: HashSet<PathBuf>,
    /// Directory metadata is applied last: creating children would change the mtime, and a
    /// read-only mode would stop us creating them.
    dirs: Vec<(PathBuf, u32, i64)>,
}

/// An entry path split into its parent components and final name, every component checked.
fn split_path(entry: &str, raw: &[u8]) -> Result<(PathBuf, Option<OsString>), Error> {
    let p = Path::new(OsStr::from_bytes(raw));
    let mut parts: Vec<&OsStr> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => parts.push(n),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(Error::Escape {
                    entry: entry.to_string(),
                })
            }
            Component::ParentDir => {
                return Err(Error::Escape {
                    entry: entry.to_string(),
                })
            }
        }
    }
    let last = parts.pop().map(|s| s.to_os_string());
    Ok((parts.iter().collect(), last))
}

fn errno_io(e: Errno) -> io::Error {
    e.into()
}

impl Unpacker {
    fn new(target: &Path, mode: UnpackMode) -> Result<Self, Error> {
        let root = rustix::fs::open(
            target,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io(target, e.into()))?;
        Ok(Unpacker {
            root,
            root_path: target.to_path_buf(),
            mode,
            is_root: rustix::process::geteuid().is_root(),
            stats: UnpackStats::default(),
            written: HashSet::new(),
            dirs: Vec::new(),
        })
    }

    fn err(&self, entry: &str, e: impl Into<io::Error>) -> Error {
        Error::io(
            format!("{}: entry {entry:?}", self.root_path.display()),
            e.into(),
        )
    }

    /// Opens directory `rel` (relative to the root) beneath the root, creating missing
    /// components with mode 0755, never leaving the root.
    fn open_dir(&self, entry: &str, rel: &Path, create: bool) -> Result<OwnedFd, Error> {
        let how = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
        if rel.as_os_str().is_empty() {
            return rustix::fs::openat2(&self.root, ".", flags, Mode::empty(), how)
                .map_err(|e| self.err(entry, errno_io(e)));
        }
        match rustix::fs::openat2(&self.root, rel, flags, Mode::empty(), how) {
            Ok(fd) => return Ok(fd),
            Err(Errno::XDEV) | Err(Errno::LOOP) => {
                return Err(Error::Escape {
                    entry: entry.to_string(),
                })
            }
            Err(Errno::NOENT) if create => {}
            Err(e) => return Err(self.err(entry, errno_io(e))),
        }
        // Walk down one component at a time, creating what is missing.
        let mut dir = rustix::fs::openat2(&self.root, ".", flags, Mode::empty(), how)
            .map_err(|e| self.err(entry, errno_io(e)))?;
        for c in rel.components() {
            let name = c.as_os_str();
            match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(self.err(entry, errno_io(e))),
            }
            dir = match rustix::fs::openat2(&dir, name, flags, Mode::empty(), how) {
                Ok(fd) => fd,
                Err(Errno::XDEV) | Err(Errno::LOOP) => {
                    return Err(Error::Escape {
                        entry: entry.to_string(),
                    })
                }
                Err(e) => return Err(self.err(entry, errno_io(e))),
            };
        }
        Ok(dir)
    }

    fn entry<R: Read>(&mut self, e: &mut tar::Entry<'_, R>) -> Result<(), Error> {
        let kind = e.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            return Ok(());
        }
        let raw = e.path_bytes().into_owned();
        let entry = String::from_utf8_lossy(&raw).into_owned();
        self.stats.entries += 1;
        let (parent, name) = split_path(&entry, &raw)?;
        let Some(name) = name else {
            // The root itself ("./"): only its metadata, applied at the end.
            if kind == tar::EntryType::Directory {
                let h = e.header();
                let mode = h.mode().map_err(|x| self.err(&entry, x))?;
                let mtime = h.mtime().unwrap_or(0) as i64;
                self.dirs.push((PathBuf::new(), mode, mtime));
            }
            return Ok(());
        };
        let pdir = self.open_dir(&entry, &parent, true)?;
        let rel = parent.join(&name);

        let nb = name.as_bytes();
        if let Some(hidden) = nb.strip_prefix(b".wh.") {
            return self.whiteout(&entry, &pdir, &parent, hidden);
        }

        let h = e.header().clone();
        let mode = h.mode().map_err(|x| self.err(&entry, x))? & 0o7777;
        let uid = h.uid().map_err(|x| self.err(&entry, x))?;
        let gid = h.gid().map_err(|x| self.err(&entry, x))?;
        let mtime = h.mtime().unwrap_or(0) as i64;
        let mut xattrs = Vec::new();
        if let Some(exts) = e.pax_extensions().map_err(|x| self.err(&entry, x))? {
            for ext in exts {
                let ext = ext.map_err(|x| self.err(&entry, x))?;
                if let Some(k) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                    xattrs.push((k.to_vec(), ext.value_bytes().to_vec()));
                }
            }
        }

        // An existing directory stays (its metadata is updated); anything else is replaced.
        let existing = rustix::fs::statat(&pdir, &name, AtFlags::SYMLINK_NOFOLLOW).ok();
        let existing_is_dir = existing
            .as_ref()
            .is_some_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Directory);
        if existing.is_some() && !(kind == tar::EntryType::Directory && existing_is_dir) {
            remove_at(&pdir, &name).map_err(|x| self.err(&entry, errno_io(x)))?;
        }
        self.written.insert(rel.clone());

        match kind {
            tar::EntryType::Directory => {
                if !existing_is_dir {
                    rustix::fs::mkdirat(&pdir, &name, Mode::from_raw_mode(0o755))
                        .map_err(|x| self.err(&entry, errno_io(x)))?;
                }
                self.own(&entry, &pdir, &name, uid, gid)?;
                if !xattrs.is_empty() {
                    let fd = self.open_dir(&entry, &rel, false)?;
                    self.set_xattrs(&entry, &fd, &xattrs)?;
                }
                self.dirs.push((rel, mode, mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let fd = rustix::fs::openat(
                    &pdir,
                    &name,
                    OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::WRONLY
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|x| self.err(&entry, errno_io(x)))?;
                let mut f = std::fs::File::from(fd);
                let n = io::copy(e, &mut f).map_err(|x| self.err(&entry, x))?;
                self.stats.bytes += n;
                // chown first: it clears setuid/setgid bits that the chmod then sets.
                if self.is_root {
                    rustix::fs::fchown(&f, Some(uid_of(uid)), Some(gid_of(gid)))
                        .map_err(|x| self.err(&entry, errno_io(x)))?;
                }
                rustix::fs::fchmod(&f, Mode::from_raw_mode(mode))
                    .map_err(|x| self.err(&entry, errno_io(x)))?;
                self.set_xattrs(&entry, &f, &xattrs)?;
                rustix::fs::futimens(&f, &times(mtime))
                    .map_err(|x| self.err(&entry, errno_io(x)))?;
            }
            tar::EntryType::Symlink => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| {
                        Error::Other(format!("entry {entry:?}: symlink without target"))
                    })?
                    .into_owned();
                self.stats.bytes += target.len() as u64;
                rustix::fs::symlinkat(OsStr::from_bytes(&target), &pdir, &name)
                    .map_err(|x| self.err(&entry, errno_io(x)))?;
                self.own(&entry, &pdir, &name, uid, gid)?;
                let _ =
                    rustix::fs::utimensat(&pdir, &name, &times(mtime), AtFlags::SYMLINK_NOFOLLOW);
            }
            tar::EntryType::Link => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| {
                        Error::Other(format!("entry {entry:?}: hardlink without target"))
                    })?
                    .into_owned();
                let tstr = String::from_utf8_lossy(&target).into_owned();
                let (tparent, tname) = split_path(&entry, &target).map_err(|_| Error::Escape {
                    entry: format!("{entry} (hardlink to {tstr})"),
                })?;
                let tname = tname.ok_or_else(|| Error::Escape {
                    entry: format!("{entry} (hardlink to {tstr})"),
                })?;
                let tdir = self.open_dir(&entry, &tparent, false)?;
                // linkat without AT_SYMLINK_FOLLOW links a symlink itself, never its target.
                rustix::fs::linkat(&tdir, &tname, &pdir, &name, AtFlags::empty())
                    .map_err(|x| self.err(&entry, errno_io(x)))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let ft = match kind {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let dev = rustix::fs::makedev(
                    h.device_major().ok().flatten().unwrap_or(0),
                    h.device_minor().ok().flatten().unwrap_or(0),
                );
                match rustix::fs::mknodat(&pdir, &name, ft, Mode::from_raw_mode(mode), dev) {
                    Ok(()) => {}
                    // Unprivileged: device nodes cannot be made; skip them as rootless tools do.
                    Err(Errno::PERM) if !self.is_root && ft != FileType::Fifo => {
                        self.stats.skipped += 1;
                        return Ok(());
                    }
                    Err(x) => return Err(self.err(&entry, errno_io(x))),
                }
                self.own(&entry, &pdir, &name, uid, gid)?;
                rustix::fs::chmodat(&pdir, &name, Mode::from_raw_mode(mode), AtFlags::empty())
                    .map_err(|x| self.err(&entry, errno_io(x)))?;
                let _ =
                    rustix::fs::utimensat(&pdir, &name, &times(mtime), AtFlags::SYMLINK_NOFOLLOW);
            }
            other => {
                return Err(Error::Other(format!(
                    "entry {entry:?}: unsupported tar entry type {other:?}"
                )))
            }
        }
        Ok(())
    }

    fn own(
        &self,
        entry: &str,
        dir: &OwnedFd,
        name: &OsStr,
        uid: u64,
        gid: u64,
    ) -> Result<(), Error> {
        if !self.is_root {
            return Ok(());
        }
        rustix::fs::chownat(
            dir,
            name,
            Some(uid_of(uid)),
            Some(gid_of(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|x| self.err(entry, errno_io(x)))
    }

    fn set_xattrs(
        &self,
        entry: &str,
        fd: impl AsFd,
        xattrs: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), Error> {
        for (k, v) in xattrs {
            match rustix::fs::fsetxattr(
                &fd,
                OsStr::from_bytes(k),
                v,
                rustix::fs::XattrFlags::empty(),
            ) {
                Ok(()) => {}
                // trusted.* needs CAP_SYS_ADMIN and some filesystems have no xattrs: not fatal
                // for a rootless unpack, as with docker's rootless mode.
                Err(Errno::PERM) | Err(Errno::OPNOTSUPP) if !self.is_root => {}
                Err(x) => return Err(self.err(entry, errno_io(x))),
            }
        }
        Ok(())
    }

    fn whiteout(
        &mut self,
        entry: &str,
        pdir: &OwnedFd,
        parent: &Path,
        hidden: &[u8],
    ) -> Result<(), Error> {
        if hidden == b".wh..opq" {
            match self.mode {
                UnpackMode::OverlayLower => {
                    rustix::fs::fsetxattr(
                        pdir,
                        "trusted.overlay.opaque",
                        b"y",
                        rustix::fs::XattrFlags::empty(),
                    )
                    .map_err(|x| self.err(entry, errno_io(x)))?;
                }
                UnpackMode::Apply => {
                    let names: Vec<OsString> =
                        list_dir(pdir).map_err(|x| self.err(entry, errno_io(x)))?;
                    for n in names {
                        if !self.written.contains(&parent.join(&n)) {
                            remove_at(pdir, &n).map_err(|x| self.err(entry, errno_io(x)))?;
                        }
                    }
                }
            }
            return Ok(());
        }
        let name = OsStr::from_bytes(hidden);
        if hidden.is_empty() || name == "." || name == ".." || hidden.contains(&b'/') {
            return Err(Error::Escape {
                entry: entry.to_string(),
            });
        }
        match rustix::fs::statat(pdir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => remove_at(pdir, name).map_err(|x| self.err(entry, errno_io(x)))?,
            Err(Errno::NOENT) => {}
            Err(x) => return Err(self.err(entry, errno_io(x))),
        }
        if self.mode == UnpackMode::OverlayLower {
            rustix::fs::mknodat(pdir, name, FileType::CharacterDevice, Mode::empty(), 0)
                .map_err(|x| self.err(entry, errno_io(x)))?;
        }
        self.written.insert(parent.join(name));
        Ok(())
    }

    fn finish(mut self) -> Result<UnpackStats, Error> {
        // Deepest first, so a parent's mtime is set after its children's metadata changes.
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.0.components().count()));
        for (rel, mode, mtime) in dirs {
            let entry = rel.to_string_lossy().into_owned();
            let fd = self.open_dir(&entry, &rel, false)?;
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & 0o7777))
                .map_err(|x| self.err(&entry, errno_io(x)))?;
            rustix::fs::futimens(&fd, &times(mtime)).map_err(|x| self.err(&entry, errno_io(x)))?;
        }
        Ok(self.stats)
    }
}

fn uid_of(v: u64) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(v as u32)
}
fn gid_of(v: u64) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(v as u32)
}

fn times(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn list_dir(dir: &OwnedFd) -> Result<Vec<OsString>, Errno> {
    let mut out = Vec::new();
    let d = rustix::fs::Dir::read_from(dir)?;
    for e in d {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    Ok(out)
}

/// Removes `name` in `dir`, recursively if it is a directory, never following symlinks.
pub(crate) fn remove_at(dir: &OwnedFd, name: &OsStr) -> Result<(), Errno> {
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return rustix::fs::unlinkat(dir, name, AtFlags::empty());
    }
    let sub = rustix::fs::openat(
        dir,
        name,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for n in list_dir(&sub)? {
        remove_at(&sub, &n)?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}
