//! Helpers shared by the layer tests: build trees, compare trees.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// One object of a tree as the comparison sees it.
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum Obj {
    Dir {
        mode: u32,
        uid: u32,
        gid: u32,
    },
    File {
        mode: u32,
        uid: u32,
        gid: u32,
        mtime: i64,
        content: Vec<u8>,
        link_group: Option<String>,
    },
    Symlink {
        target: String,
    },
    CharDev {
        rdev: u64,
    },
    Fifo {
        mode: u32,
    },
}

/// Every object under `root` by relative path; hardlinked files share a `link_group` (the first
/// path of the group in sorted order).
pub fn snapshot(root: &Path) -> BTreeMap<String, Obj> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut paths = Vec::new();
    collect(root, root, &mut paths);
    paths.sort();
    for rel in paths {
        let p = root.join(&rel);
        let m = fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        let obj = if ft.is_dir() {
            Obj::Dir {
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
            }
        } else if ft.is_symlink() {
            Obj::Symlink {
                target: fs::read_link(&p).unwrap().to_string_lossy().into_owned(),
            }
        } else if ft.is_file() {
            let group = if m.nlink() > 1 {
                Some(
                    inodes
                        .entry((m.dev(), m.ino()))
                        .or_insert_with(|| rel.clone())
                        .clone(),
                )
            } else {
                None
            };
            Obj::File {
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                mtime: m.mtime(),
                content: fs::read(&p).unwrap(),
                link_group: group,
            }
        } else if std::os::unix::fs::FileTypeExt::is_char_device(&ft) {
            Obj::CharDev { rdev: m.rdev() }
        } else {
            Obj::Fifo {
                mode: m.mode() & 0o7777,
            }
        };
        out.insert(rel, obj);
    }
    out
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
        if e.file_type().unwrap().is_dir() {
            collect(root, &p, out);
        }
    }
}

pub fn write(p: &Path, content: &[u8], mode: u32) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(p, content).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn set_mtime(p: &Path, secs: i64) {
    let t = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// A raw tar entry, written without the checks of the tar crate so that tests can craft
/// malicious names.
pub fn raw_entry(out: &mut Vec<u8>, name: &[u8], kind: tar::EntryType, link: &[u8], data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(data.len() as u64);
    h.set_entry_type(kind);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, pad));
}

pub fn raw_end(out: &mut Vec<u8>) {
    out.extend(std::iter::repeat_n(0u8, 1024));
}
