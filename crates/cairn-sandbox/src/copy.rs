//! Copying trees with everything a layer can carry: owners, modes (setuid included), xattrs,
//! nanosecond times, hard links, symlinks, devices, fifos. Used by the native snapshotter, which
//! flattens overlay-style snapshots (whiteouts as 0/0 char devices, opaque dirs as
//! `trusted.overlay.opaque=y`) into one directory.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::other("path contains NUL"))
}

/// Names of the extended attributes of `p` (not following a symlink).
pub(crate) fn list_xattrs(p: &Path) -> io::Result<Vec<CString>> {
    let c = cpath(p)?;
    let mut buf = vec![0u8; 1024];
    loop {
        let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            buf.truncate(n as usize);
            break;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ERANGE) => buf.resize(buf.len() * 4, 0),
            // Filesystems without xattrs simply have none.
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(err),
        }
    }
    Ok(buf
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .filter_map(|s| CString::new(s).ok())
        .collect())
}

/// The value of xattr `name` of `p`, None if absent.
pub(crate) fn get_xattr(p: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let c = cpath(p)?;
    let n = CString::new(name).map_err(|_| io::Error::other("xattr name contains NUL"))?;
    let mut buf = vec![0u8; 256];
    loop {
        let r =
            unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            buf.truncate(r as usize);
            return Ok(Some(buf));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ERANGE) => buf.resize(buf.len() * 16, 0),
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => return Ok(None),
            _ => return Err(err),
        }
    }
}

fn copy_xattrs(src: &Path, dst: &Path) -> io::Result<()> {
    let s = cpath(src)?;
    let d = cpath(dst)?;
    for name in list_xattrs(src)? {
        // Overlay's own bookkeeping (opaque, origin, redirect) describes the snapshot, not the file.
        if name.as_bytes().starts_with(b"trusted.overlay.") {
            continue;
        }
        let mut buf = vec![0u8; 65536];
        let n = unsafe {
            libc::lgetxattr(
                s.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let r = unsafe {
            libc::lsetxattr(
                d.as_ptr(),
                name.as_ptr(),
                buf.as_ptr().cast(),
                n as usize,
                0,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Gives `dst` the owner, mode, xattrs and times of `src` (metadata `m`). Owner before mode,
/// because chown clears setuid bits; times last, because every other change touches ctime only
/// but creating children touched mtime.
pub(crate) fn copy_metadata(src: &Path, m: &fs::Metadata, dst: &Path) -> io::Result<()> {
    copy_metadata_with(src, m, dst, true)
}

/// [`copy_metadata`], with xattrs the destination filesystem refuses skipped unless `strict`.
pub(crate) fn copy_metadata_with(
    src: &Path,
    m: &fs::Metadata,
    dst: &Path,
    strict: bool,
) -> io::Result<()> {
    let d = cpath(dst)?;
    if unsafe { libc::lchown(d.as_ptr(), m.uid(), m.gid()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let is_link = m.file_type().is_symlink();
    if !is_link && unsafe { libc::chmod(d.as_ptr(), m.mode() & 0o7777) } < 0 {
        return Err(io::Error::last_os_error());
    }
    match copy_xattrs(src, dst) {
        Err(e)
            if !strict && matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM)) => {}
        r => r?,
    }
    set_times(dst, m)
}

/// Sets the atime and mtime of `dst` (not following a symlink) to those of `m`.
pub(crate) fn set_times(dst: &Path, m: &fs::Metadata) -> io::Result<()> {
    let d = cpath(dst)?;
    let times = [
        libc::timespec {
            tv_sec: m.atime(),
            tv_nsec: m.atime_nsec(),
        },
        libc::timespec {
            tv_sec: m.mtime(),
            tv_nsec: m.mtime_nsec(),
        },
    ];
    if unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            d.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn is_whiteout(m: &fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

/// Lays the tree `src` onto `dst` (which exists). With `overlay_whiteouts`, a 0/0 char device in
/// `src` deletes its path in `dst` and an opaque directory replaces the one in `dst` instead of
/// merging with it, which is how a stack of overlay lowerdirs reads.
pub(crate) fn apply_tree(src: &Path, dst: &Path, overlay_whiteouts: bool) -> io::Result<()> {
    let mut links = HashMap::new();
    copy_dir_contents(src, dst, overlay_whiteouts, &mut links)?;
    let m = fs::symlink_metadata(src)?;
    copy_metadata(src, &m, dst)
}

fn copy_dir_contents(
    src: &Path,
    dst: &Path,
    whiteouts: bool,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(src)?.collect::<io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let s = src.join(&name);
        let d = dst.join(&name);
        let m = fs::symlink_metadata(&s)?;
        let ctx = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", s.display()));
        if whiteouts && is_whiteout(&m) {
            remove_any(&d).map_err(ctx)?;
            continue;
        }
        if m.is_dir() {
            let existing = fs::symlink_metadata(&d).ok();
            let opaque =
                whiteouts && get_xattr(&s, OPAQUE_XATTR)?.as_deref() == Some(b"y".as_slice());
            match existing {
                Some(e) if e.is_dir() && !opaque => {}
                Some(_) => {
                    remove_any(&d).map_err(ctx)?;
                    fs::create_dir(&d).map_err(ctx)?;
                }
                None => fs::create_dir(&d).map_err(ctx)?,
            }
            copy_dir_contents(&s, &d, whiteouts, links)?;
            copy_metadata(&s, &m, &d).map_err(ctx)?;
            continue;
        }
        remove_any(&d).map_err(ctx)?;
        let key = (m.dev(), m.ino());
        if m.nlink() > 1 {
            if let Some(first) = links.get(&key) {
                fs::hard_link(first, &d).map_err(ctx)?;
                continue;
            }
        }
        let ft = m.file_type();
        if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&s)?, &d).map_err(ctx)?;
        } else if ft.is_file() {
            fs::copy(&s, &d).map_err(ctx)?;
        } else {
            let kind = if ft.is_char_device() {
                libc::S_IFCHR
            } else if ft.is_block_device() {
                libc::S_IFBLK
            } else if ft.is_fifo() {
                libc::S_IFIFO
            } else {
                libc::S_IFSOCK
            };
            let c = cpath(&d)?;
            if unsafe { libc::mknod(c.as_ptr(), kind | (m.mode() & 0o7777), m.rdev()) } < 0 {
                return Err(ctx(io::Error::last_os_error()));
            }
        }
        copy_metadata(&s, &m, &d).map_err(ctx)?;
        if m.nlink() > 1 {
            links.insert(key, d);
        }
    }
    Ok(())
}

/// Looks `rel` up through overlay lowerdirs (top first) and returns the metadata of the entry the
/// merged view would show, None if no layer has it or the topmost one whites it out.
pub(crate) fn lookup_in_lowers(
    lowers_top_first: &[&Path],
    rel: &OsStr,
) -> Option<(PathBuf, fs::Metadata)> {
    for l in lowers_top_first {
        let p = l.join(rel);
        if let Ok(m) = fs::symlink_metadata(&p) {
            if is_whiteout(&m) {
                return None;
            }
            return Some((p, m));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn copies_modes_times_links_and_hardlinks() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        let dst = t.path().join("dst");
        fs::create_dir_all(src.join("d")).unwrap();
        fs::write(src.join("d/f"), b"data").unwrap();
        fs::set_permissions(src.join("d/f"), fs::Permissions::from_mode(0o4751)).unwrap();
        fs::hard_link(src.join("d/f"), src.join("h")).unwrap();
        std::os::unix::fs::symlink("d/f", src.join("l")).unwrap();
        let old = fs::metadata(src.join("d")).unwrap();
        fs::create_dir(&dst).unwrap();
        apply_tree(&src, &dst, false).unwrap();
        let f = fs::metadata(dst.join("d/f")).unwrap();
        assert_eq!(f.mode() & 0o7777, 0o4751);
        assert_eq!(fs::read(dst.join("h")).unwrap(), b"data");
        assert_eq!(
            f.ino(),
            fs::metadata(dst.join("h")).unwrap().ino(),
            "hard link kept"
        );
        assert_eq!(fs::read_link(dst.join("l")).unwrap(), PathBuf::from("d/f"));
        let d = fs::metadata(dst.join("d")).unwrap();
        assert_eq!((d.mtime(), d.mtime_nsec()), (old.mtime(), old.mtime_nsec()));
    }
}
