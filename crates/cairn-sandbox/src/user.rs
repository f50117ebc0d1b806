//! `USER name|uid[:group|gid]` as docker means it, resolved through the image's own /etc/passwd
//! and /etc/group (read inside the rootfs: a symlinked /etc/passwd cannot point at the host's).

use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;

/// A user spec resolved against an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Groups to set with setgroups: the primary group, then those of /etc/group that list the
    /// user (only when no group was given explicitly, as docker).
    pub groups: Vec<u32>,
    /// Home directory from passwd, `/` when the user has no entry.
    pub home: String,
    /// The user's name, when passwd has one.
    pub name: Option<String>,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.trim().split(':').collect();
        if f.len() < 4 || f[0].starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f.get(5).copied().unwrap_or(""),
        })
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.trim().split(':').collect();
        if f.len() < 3 || f[0].starts_with('#') {
            return None;
        }
        Some(GroupEntry {
            name: f[0],
            gid: f[2].parse().ok()?,
            members: f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        })
    })
}

/// Resolves `spec` (`""` = root) against the image at `rootfs`. A name that passwd (or group)
/// lacks is an error; a numeric id needs no entry (its group is then 0 and its home `/`).
pub fn resolve(rootfs: &Path, spec: &str) -> Result<ResolvedUser> {
    let passwd = read_in_root(rootfs, "/etc/passwd")?;
    let group = read_in_root(rootfs, "/etc/group")?;
    resolve_with(spec, &passwd, &group)
}

/// [`resolve`] on the given file contents.
pub fn resolve_with(spec: &str, passwd: &str, group: &str) -> Result<ResolvedUser> {
    let spec = spec.trim();
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let numeric_uid = user_part.parse::<u32>().ok();
    let entry = passwd_entries(passwd).find(|e| match numeric_uid {
        Some(uid) => e.uid == uid,
        None => e.name == user_part,
    });
    let (uid, mut gid, home, name) = match (&entry, numeric_uid) {
        (Some(e), _) => (e.uid, e.gid, e.home.to_string(), Some(e.name.to_string())),
        (None, Some(uid)) => (uid, 0, String::from("/"), None),
        (None, None) => return Err(Error::UnknownUser(user_part.to_string())),
    };
    let home = if home.is_empty() {
        "/".to_string()
    } else {
        home
    };
    let mut groups = Vec::new();
    match group_part.filter(|g| !g.is_empty()) {
        Some(g) => {
            gid = match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => group_entries(group)
                    .find(|e| e.name == g)
                    .map(|e| e.gid)
                    .ok_or_else(|| Error::UnknownGroup(g.to_string()))?,
            };
            groups.push(gid);
        }
        None => {
            groups.push(gid);
            if let Some(n) = &name {
                for e in group_entries(group) {
                    if e.members.contains(&n.as_str()) && !groups.contains(&e.gid) {
                        groups.push(e.gid);
                    }
                }
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        groups,
        home,
        name,
    })
}

/// Reads a file of the image, resolving it inside the rootfs; a missing file reads as empty.
pub(crate) fn read_in_root(rootfs: &Path, path: &str) -> Result<String> {
    use rustix::fs::OFlags;
    match crate::syscall::open_in_root(rootfs, path, OFlags::RDONLY) {
        Ok(fd) => {
            let mut s = String::new();
            std::fs::File::from(fd)
                .read_to_string(&mut s)
                .map_err(|e| Error::io(format!("reading {path} of the image"), e))?;
            Ok(s)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(Error::io(format!("opening {path} of the image"), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                          app:x:1000:1000:App:/home/app:/bin/sh\n\
                          nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n\
                          nohome:x:1001:1001::\n";
    const GROUP: &str =
        "root:x:0:\nwheel:x:10:root,app\napp:x:1000:\naudio:x:29:app\nnogroup:x:65534:\n";

    #[test]
    fn root_by_default() {
        let u = resolve_with("", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/root"));
        assert_eq!(u.groups, vec![0, 10]);
    }

    #[test]
    fn name_gets_passwd_gid_home_and_supplementary_groups() {
        let u = resolve_with("app", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1000, "/home/app"));
        assert_eq!(u.groups, vec![1000, 10, 29]);
        assert_eq!(u.name.as_deref(), Some("app"));
    }

    #[test]
    fn explicit_group_replaces_supplementary_ones() {
        let u = resolve_with("app:nogroup", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 65534));
        assert_eq!(u.groups, vec![65534]);
        let u = resolve_with("1000:4242", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid, u.groups.clone()), (1000, 4242, vec![4242]));
    }

    #[test]
    fn numeric_uid_need_not_exist() {
        let u = resolve_with("4321", PASSWD, GROUP).unwrap();
        assert_eq!(
            (u.uid, u.gid, u.home.as_str(), u.name.clone()),
            (4321, 0, "/", None)
        );
        let u = resolve_with("65534", PASSWD, GROUP).unwrap();
        assert_eq!((u.gid, u.home.as_str()), (65534, "/nonexistent"));
    }

    #[test]
    fn unknown_names_are_clear_errors() {
        let e = resolve_with("ghost", PASSWD, GROUP).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unable to find user ghost: no matching entries in passwd file"
        );
        let e = resolve_with("app:ghosts", PASSWD, GROUP).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unable to find group ghosts: no matching entries in group file"
        );
    }

    #[test]
    fn empty_home_is_root_dir_and_garbage_lines_are_skipped() {
        let u = resolve_with("nohome", PASSWD, GROUP).unwrap();
        assert_eq!(u.home, "/");
        let u = resolve_with("app", "garbage\n#c:x:1:1\napp:x:7:8::/h:\n", "").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (7, 8, "/h"));
    }
}
