//! Path resolution confined to a root directory, the way a process chrooted into it would see
//! paths: an absolute symlink restarts at the root, `..` stops at the root.
//!
//! This is a component walk rather than `openat2(RESOLVE_IN_ROOT)`: the copier works with paths
//! (std's file APIs, copy_file_range through `io::copy`), and nothing else writes to a stage's
//! rootfs while a COPY runs, so the race openat2 guards against cannot happen here.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// Linux's own limit on symlinks followed in one lookup.
const MAX_LINKS: usize = 40;

/// What to do with components that do not exist.
#[derive(Clone, Copy)]
enum Missing {
    /// Keep them as they are (the result names a path that does not exist yet).
    Keep,
    /// Create them as directories, mode 0755, owned by this uid/gid if given.
    Create(Option<(u32, u32)>),
}

/// Resolves `path` (absolute or relative: both are taken from `root`) inside `root`, following
/// symlinks (the last component too when `follow_final`) without ever leaving `root`.
pub fn resolve_in_root(root: &Path, path: &Path, follow_final: bool) -> io::Result<PathBuf> {
    walk(root, path, follow_final, Missing::Keep)
}

/// Like `mkdir -p` inside `root`: resolves `path` in the root and creates the missing
/// directories (0755, owned by `owner` (`None`: left to the process), as BuildKit creates a
/// COPY destination's parents).
/// Returns the resolved path of the directory.
pub fn mkdir_all_in_root(
    root: &Path,
    path: &Path,
    owner: impl Into<Option<(u32, u32)>>,
) -> io::Result<PathBuf> {
    let p = walk(root, path, true, Missing::Create(owner.into()))?;
    let meta = fs::metadata(&p)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{} is not a directory", display_in_root(root, &p)),
        ));
    }
    Ok(p)
}

/// `p` as the image sees it (`/etc/x`), for error messages.
pub fn display_in_root(root: &Path, p: &Path) -> String {
    match p.strip_prefix(root) {
        Ok(rel) => format!("/{}", rel.display()),
        Err(_) => p.display().to_string(),
    }
}

fn components(p: &Path) -> Vec<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

fn walk(root: &Path, path: &Path, follow_final: bool, missing: Missing) -> io::Result<PathBuf> {
    // Pending components, next one last.
    let mut pending: Vec<OsString> = components(path);
    pending.reverse();
    let mut cur = root.to_path_buf();
    let mut depth = 0usize;
    let mut links = 0usize;
    // Once a component is missing (and not created) nothing below it exists either; the rest is
    // appended lexically, `..` still clamped at the root.
    let mut absent = false;
    while let Some(comp) = pending.pop() {
        if comp == ".." {
            if depth > 0 {
                cur.pop();
                depth -= 1;
            }
            continue;
        }
        let cand = cur.join(&comp);
        let last = pending.is_empty();
        if absent {
            cur = cand;
            depth += 1;
            continue;
        }
        match fs::symlink_metadata(&cand) {
            Ok(m) if m.file_type().is_symlink() && (!last || follow_final) => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::other(format!(
                        "too many levels of symbolic links: {}",
                        cand.display()
                    )));
                }
                let target = fs::read_link(&cand)?;
                if target.is_absolute() {
                    cur = root.to_path_buf();
                    depth = 0;
                }
                let mut t = components(&target);
                t.reverse();
                pending.extend(t);
            }
            Ok(m) => {
                if !last && !m.is_dir() && !m.file_type().is_symlink() {
                    return Err(io::Error::new(
                        io::ErrorKind::NotADirectory,
                        format!("{} is not a directory", display_in_root(root, &cand)),
                    ));
                }
                cur = cand;
                depth += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Missing::Create(owner) = missing {
                    fs::create_dir(&cand)?;
                    // Explicit: the process umask must not decide the image's modes.
                    fs::set_permissions(&cand, fs::Permissions::from_mode(0o755))?;
                    if let Some((uid, gid)) = owner {
                        std::os::unix::fs::lchown(&cand, Some(uid), Some(gid))?;
                    }
                } else {
                    absent = true;
                }
                cur = cand;
                depth += 1;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn absolute_and_dotdot_symlinks_stay_inside() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        fs::create_dir_all(root.join("real")).unwrap();
        symlink("/etc", root.join("etc-link")).unwrap();
        symlink("../../../../../real", root.join("up")).unwrap();
        assert_eq!(
            resolve_in_root(&root, Path::new("/etc-link/passwd"), true).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            resolve_in_root(&root, Path::new("up"), true).unwrap(),
            root.join("real")
        );
        assert_eq!(
            resolve_in_root(&root, Path::new("up"), false).unwrap(),
            root.join("up")
        );
        assert_eq!(
            resolve_in_root(&root, Path::new("../../x/../y"), true).unwrap(),
            root.join("y")
        );
    }

    #[test]
    fn loops_are_errors() {
        let d = tempfile::tempdir().unwrap();
        symlink("b", d.path().join("a")).unwrap();
        symlink("a", d.path().join("b")).unwrap();
        assert!(resolve_in_root(d.path(), Path::new("a/x"), true).is_err());
    }

    #[test]
    fn mkdir_all_creates_through_symlinks_inside_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        symlink("/opt", root.join("app")).unwrap();
        let p = mkdir_all_in_root(root, Path::new("/app/x/y"), (0, 0)).unwrap();
        assert_eq!(p, root.join("opt/x/y"));
        assert!(root.join("opt/x/y").is_dir());
        let mode = fs::metadata(root.join("opt/x"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);
        fs::write(root.join("file"), b"").unwrap();
        assert!(mkdir_all_in_root(root, Path::new("/file/sub"), (0, 0)).is_err());
    }
}
