//! `--chown=user[:group]` resolved against the stage's own `/etc/passwd` and `/etc/group`, as
//! BuildKit does: a name must exist there; a numeric user without a group gets gid = uid; a named
//! user without a group gets the user's primary group.

use std::fs;
use std::path::Path;

use super::dest::resolve_in_root;
use super::error::{CopyError, Result};

fn lookup(rootfs: &Path, file: &str, name: &str) -> Result<Option<(u32, u32)>> {
    let path = resolve_in_root(rootfs, Path::new(file), true).map_err(|e| CopyError::Chown {
        message: format!("{file}: {e}"),
    })?;
    let text = match fs::read(&path) {
        Ok(t) => String::from_utf8_lossy(&t).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CopyError::Chown {
                message: format!("{file}: {e}"),
            })
        }
    };
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 3 && f[0] == name {
            let id = f[2].parse().ok();
            let gid = f.get(3).and_then(|g| g.parse().ok());
            if let Some(id) = id {
                return Ok(Some((id, gid.unwrap_or(id))));
            }
        }
    }
    Ok(None)
}

/// Resolves a `--chown` value to (uid, gid) using the passwd/group files of `rootfs`.
pub fn resolve_chown(rootfs: &Path, spec: &str) -> Result<(u32, u32)> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() {
        return Err(CopyError::Chown {
            message: format!("invalid --chown value {spec:?}"),
        });
    }
    let (uid, primary) = match user.parse::<u32>() {
        Ok(n) => (n, n),
        Err(_) => lookup(rootfs, "/etc/passwd", user)?.ok_or_else(|| CopyError::Chown {
            message: format!("unable to find user {user}: no matching entries in passwd file"),
        })?,
    };
    let gid = match group {
        None | Some("") => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                lookup(rootfs, "/etc/group", g)?
                    .ok_or_else(|| CopyError::Chown {
                        message: format!(
                            "unable to find group {g}: no matching entries in group file"
                        ),
                    })?
                    .0
            }
        },
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_names_and_numbers() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("etc")).unwrap();
        fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        fs::write(d.path().join("etc/group"), "root:x:0:\nstaff:x:50:app\n").unwrap();
        let r = |s| resolve_chown(d.path(), s);
        assert_eq!(r("app").unwrap(), (1000, 1001));
        assert_eq!(r("app:staff").unwrap(), (1000, 50));
        assert_eq!(r("42").unwrap(), (42, 42));
        assert_eq!(r("42:7").unwrap(), (42, 7));
        assert_eq!(r("1:staff").unwrap(), (1, 50));
        assert!(r("nobody")
            .unwrap_err()
            .to_string()
            .contains("unable to find user nobody"));
        assert!(r("app:nogroup").is_err());
    }
}
