//! Mount points that the image lacks: created inside the rootfs before a run (resolved in the
//! root, so an image symlink cannot place them on the host) and removed afterwards with their
//! parent's times restored, so that they leave no trace in the change (BuildKit's stub cleaner).

use crate::error::{Error, Result};
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// What a mount point must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StubKind {
    Dir,
    File,
}

#[derive(Debug)]
struct Created {
    parent: String,
    name: String,
    kind: StubKind,
    parent_times: Timestamps,
}

/// The stubs created for one run; dropping it removes them.
#[derive(Debug)]
pub(crate) struct Stubs {
    root: PathBuf,
    created: Vec<Created>,
    /// For an overlay root: its upper dir, and the directories of the image that creating the
    /// stubs copied up into it (the rootfs removes them again if they stay pure copies).
    upper: Option<PathBuf>,
    copied_up: Vec<String>,
}

fn split(path: &str) -> (String, String) {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    match parts.split_last() {
        Some((last, rest)) => (format!("/{}", rest.join("/")), last.to_string()),
        None => ("/".into(), String::new()),
    }
}

/// Resolves `path` inside `root` as the kernel's `RESOLVE_IN_ROOT` would, but also through
/// components that do not exist yet: the result is a clean absolute path whose existing
/// components are not symlinks.
pub(crate) fn secure_join(root: &Path, path: &str) -> io::Result<String> {
    use std::collections::VecDeque;
    let parts = |p: &str| -> VecDeque<String> {
        p.split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(str::to_string)
            .collect()
    };
    let mut resolved: Vec<String> = Vec::new();
    let mut pending = parts(path);
    let mut links = 0;
    while let Some(c) = pending.pop_front() {
        if c == ".." {
            resolved.pop();
            continue;
        }
        let candidate = root.join(resolved.join("/")).join(&c);
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = std::fs::read_link(&candidate)?;
                let target = target.to_string_lossy();
                if target.starts_with('/') {
                    resolved.clear();
                }
                let mut next = parts(&target);
                next.extend(pending);
                pending = next;
            }
            _ => resolved.push(c),
        }
    }
    Ok(format!("/{}", resolved.join("/")))
}

fn open_dir(root: &Path, path: &str) -> io::Result<OwnedFd> {
    crate::syscall::open_in_root(root, path, OFlags::RDONLY | OFlags::DIRECTORY)
}

fn times_of(fd: &OwnedFd) -> io::Result<Timestamps> {
    let st = rustix::fs::fstat(fd)?;
    Ok(Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec as _,
        },
    })
}

impl Stubs {
    /// Makes sure every target exists in `root`, creating (and recording) what is missing.
    pub(crate) fn create(root: &Path, targets: &[(String, StubKind)]) -> Result<Stubs> {
        let mut stubs = Stubs {
            root: root.to_path_buf(),
            created: Vec::new(),
            upper: crate::rootfs::overlay_upper(root),
            copied_up: Vec::new(),
        };
        for (target, kind) in targets {
            stubs
                .ensure(target, *kind, 0)
                .map_err(|e| Error::io(format!("creating mount point {target}"), e))?;
        }
        Ok(stubs)
    }

    fn ensure(&mut self, path: &str, kind: StubKind, depth: usize) -> io::Result<()> {
        // Follow the image's symlinks ourselves, so that a dangling one (an absolute link to a
        // host path) gets its target created inside the root, where the mount will resolve it.
        let path = secure_join(&self.root, path)?;
        let (parent, name) = split(&path);
        if name.is_empty() || depth > 64 {
            return Ok(());
        }
        let pfd = match open_dir(&self.root, &parent) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.ensure(&parent, StubKind::Dir, depth + 1)?;
                open_dir(&self.root, &parent)?
            }
            Err(e) => return Err(e),
        };
        match rustix::fs::statat(&pfd, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            // Present (even as a symlink, which the mount resolves inside the root): the image's.
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
        let parent_times = times_of(&pfd)?;
        if let Some(upper) = &self.upper {
            // Each ancestor not yet in the upper dir is about to be copied up by this entry.
            let mut rel = String::new();
            for comp in parent.split('/').filter(|c| !c.is_empty()) {
                rel.push('/');
                rel.push_str(comp);
                if fs_exists_nofollow(&upper.join(rel.trim_start_matches('/'))) {
                    continue;
                }
                self.copied_up.push(rel.clone());
            }
        }
        match kind {
            StubKind::Dir => rustix::fs::mkdirat(&pfd, name.as_str(), Mode::from_raw_mode(0o755))?,
            StubKind::File => drop(rustix::fs::openat(
                &pfd,
                name.as_str(),
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )?),
        }
        self.created.push(Created {
            parent,
            name,
            kind,
            parent_times,
        });
        Ok(())
    }

    /// How many mount points were created (for tests).
    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        self.created.len()
    }

    fn remove_all(&mut self) {
        // Newest first: children before the directories created for them.
        while let Some(c) = self.created.pop() {
            let Ok(pfd) = open_dir(&self.root, &c.parent) else {
                continue;
            };
            let flags = match c.kind {
                StubKind::Dir => AtFlags::REMOVEDIR,
                StubKind::File => AtFlags::empty(),
            };
            // A directory the process wrote into is its change to keep: ENOTEMPTY is fine.
            if rustix::fs::unlinkat(&pfd, c.name.as_str(), flags).is_ok() {
                let _ = rustix::fs::futimens(&pfd, &c.parent_times);
            }
        }
    }
}

fn fs_exists_nofollow(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

impl Drop for Stubs {
    fn drop(&mut self) {
        self.remove_all();
        if !self.copied_up.is_empty() {
            crate::rootfs::record_copied_up(&self.root, std::mem::take(&mut self.copied_up));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn creates_missing_points_and_removes_them_with_parent_times_restored() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fs::create_dir(root.join("etc")).unwrap();
        fs::write(root.join("etc/hosts"), b"image").unwrap();
        let before = fs::metadata(root.join("etc")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let stubs = Stubs::create(
            root,
            &[
                ("/etc/hosts".into(), StubKind::File),
                ("/etc/resolv.conf".into(), StubKind::File),
                ("/a/b/c".into(), StubKind::Dir),
            ],
        )
        .unwrap();
        assert_eq!(stubs.count(), 4, "resolv.conf, a, a/b, a/b/c");
        assert!(root.join("a/b/c").is_dir() && root.join("etc/resolv.conf").is_file());
        drop(stubs);
        assert!(!root.join("a").exists() && !root.join("etc/resolv.conf").exists());
        assert_eq!(
            fs::read(root.join("etc/hosts")).unwrap(),
            b"image",
            "existing file untouched"
        );
        let after = fs::metadata(root.join("etc")).unwrap();
        assert_eq!(
            (after.mtime(), after.mtime_nsec()),
            (before.mtime(), before.mtime_nsec())
        );
    }

    #[test]
    fn symlinks_in_the_image_cannot_place_stubs_on_the_host() {
        let t = tempfile::tempdir().unwrap();
        let host = t.path().join("host");
        let root = t.path().join("root");
        fs::create_dir_all(&host).unwrap();
        fs::create_dir_all(&root).unwrap();
        // An absolute symlink in the image pointing at a host directory.
        std::os::unix::fs::symlink(&host, root.join("evil")).unwrap();
        let stubs = Stubs::create(&root, &[("/evil/x".into(), StubKind::Dir)]).unwrap();
        assert!(!host.join("x").exists(), "stub must not land on the host");
        assert!(
            root.join(host.strip_prefix("/").unwrap())
                .join("x")
                .is_dir(),
            "resolved inside the root"
        );
        drop(stubs);
        assert!(!root.join(host.strip_prefix("/").unwrap()).exists());
    }

    #[test]
    fn secure_join_stays_in_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("../../../../..", root.join("usr/up")).unwrap();
        std::os::unix::fs::symlink("/usr/lib", root.join("lib")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert_eq!(
            secure_join(root, "/usr/up/etc/passwd").unwrap(),
            "/etc/passwd"
        );
        assert_eq!(secure_join(root, "lib/x/../y").unwrap(), "/usr/lib/y");
        assert!(secure_join(root, "/loop/x").is_err());
    }

    #[test]
    fn a_directory_the_process_filled_is_kept() {
        let t = tempfile::tempdir().unwrap();
        let stubs = Stubs::create(t.path(), &[("/data/m".into(), StubKind::Dir)]).unwrap();
        fs::write(t.path().join("data/kept"), b"x").unwrap();
        drop(stubs);
        assert!(!t.path().join("data/m").exists());
        assert!(t.path().join("data/kept").exists());
    }
}
