//! Paths inside a prepared root: joined without climbing out, created as if it were `/`.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

/// `root` joined with the relative `sub`, refusing `..` that would climb out.
pub(super) fn join_inside(root: &Path, sub: &str) -> Option<PathBuf> {
    let mut out = root.to_path_buf();
    let mut depth = 0usize;
    for c in Path::new(sub).components() {
        match c {
            Component::Normal(p) => {
                out.push(p);
                depth += 1;
            }
            Component::ParentDir => {
                if depth == 0 {
                    return None;
                }
                out.pop();
                depth -= 1;
            }
            _ => {}
        }
    }
    Some(out)
}

/// The mount points a prepared root gets for running (`/proc`, `/dev`, `/sys`, files of `/etc`);
/// parents after children.
const MOUNT_STUBS: [&str; 7] = [
    "proc",
    "dev",
    "sys",
    "etc/resolv.conf",
    "etc/hosts",
    "etc/hostname",
    "etc",
];

/// Removes from the prepared root `root` the mount points that none of its layers `lowers` has:
/// a stage read by `COPY --from` or `RUN --mount=from=` shows its own files only, as in BuildKit
/// (a FROM scratch stage has no `/dev`). The root is thrown away after the step, so the removals
/// (whiteouts in its upper dir) reach no layer.
pub(super) fn hide_mount_stubs(root: &Path, lowers: &[PathBuf]) -> std::io::Result<()> {
    for stub in MOUNT_STUBS {
        if lowers
            .iter()
            .any(|l| fs::symlink_metadata(l.join(stub)).is_ok())
        {
            continue;
        }
        let p = root.join(stub);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {
                // Only an empty stub: a directory with entries came from the layers.
                match fs::remove_dir(&p) {
                    Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {}
                    r => r?,
                }
            }
            Ok(m) if m.is_file() && m.len() == 0 => fs::remove_file(&p)?,
            _ => {}
        }
    }
    Ok(())
}

/// `mkdir -p path` inside `root`, following symlinks as if `root` were `/` (a link in the image
/// cannot make it create directories on the host). New directories get `owner`.
pub fn mkdir_in_root(root: &Path, path: &str, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    let mut pending: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_string)
        .rev()
        .collect();
    let mut cur: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        if c == ".." {
            cur.pop();
            continue;
        }
        let mut host = root.to_path_buf();
        host.extend(&cur);
        host.push(&c);
        match fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return Err(std::io::Error::other(format!(
                        "too many levels of symbolic links in {path}"
                    )));
                }
                let target = fs::read_link(&host)?;
                let target = target.to_string_lossy().into_owned();
                if target.starts_with('/') {
                    cur.clear();
                }
                for t in target
                    .split('/')
                    .filter(|t| !t.is_empty() && *t != ".")
                    .rev()
                {
                    pending.push(t.to_string());
                }
            }
            Ok(m) if m.is_dir() => cur.push(c),
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "{path}: /{} is not a directory",
                    cur.iter()
                        .chain([&c])
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("/")
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::DirBuilder::new().mode(0o755).create(&host)?;
                if let Some((uid, gid)) = owner {
                    std::os::unix::fs::lchown(&host, Some(uid), Some(gid))?;
                }
                cur.push(c);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mkdir_stays_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        // An absolute link in the image points at the image's /, not the host's.
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
        mkdir_in_root(root.path(), "/escape/app/src", None).unwrap();
        let inside = root
            .path()
            .join(outside.path().strip_prefix("/").unwrap())
            .join("app/src");
        assert!(inside.is_dir());
        assert!(!outside.path().join("app").exists());
        std::os::unix::fs::symlink("../x", root.path().join("rel")).unwrap();
        mkdir_in_root(root.path(), "/rel/y", None).unwrap();
        assert!(root.path().join("x/y").is_dir());
        fs::write(root.path().join("file"), b"").unwrap();
        assert!(mkdir_in_root(root.path(), "/file/z", None).is_err());
    }

    #[test]
    fn join_inside_refuses_escapes() {
        let r = Path::new("/ctx");
        assert_eq!(join_inside(r, "a/../b"), Some(PathBuf::from("/ctx/b")));
        assert_eq!(join_inside(r, "/abs"), Some(PathBuf::from("/ctx/abs")));
        assert_eq!(join_inside(r, "../x"), None);
    }
}
