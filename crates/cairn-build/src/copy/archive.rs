//! Tar archives: compression sniffed from content (as docker does, never from the name), and a
//! safe unpacker used by ADD and by a context sent as a tar.
//!
//! Safety: entry names are cleaned and one that climbs above the destination is refused; parent
//! directories are resolved inside the root (a symlink unpacked earlier, even `x -> /etc`,
//! resolves to the root's `/etc`, never the host's); the last component is never followed (an
//! existing entry there is replaced).

use std::fs::{self, OpenOptions};
use std::io::{self, Chain, Cursor, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};

use super::dest::{mkdir_all_in_root, resolve_in_root};
use super::CopyStats;

/// Compression of a stream, from its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Not compressed.
    None,
    /// gzip (`1f 8b`).
    Gzip,
    /// bzip2 (`BZh`).
    Bzip2,
    /// xz (`fd 37 7a 58 5a 00`).
    Xz,
    /// zstd (`28 b5 2f fd`).
    Zstd,
}

/// Detects the compression from the first bytes of a stream.
pub fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(b"BZh") {
        Compression::Bzip2
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Compression::Xz
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Reads up to `n` bytes (fewer only at end of stream).
fn read_head(r: &mut dyn Read, n: usize) -> io::Result<Vec<u8>> {
    let mut head = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match r.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(got);
    Ok(head)
}

/// Wraps `r` in the decompressor its first bytes call for.
pub fn decompress<'a>(mut r: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let head = read_head(&mut r, 6)?;
    let kind = sniff(&head);
    let whole: Chain<Cursor<Vec<u8>>, _> = Cursor::new(head).chain(r);
    Ok(match kind {
        Compression::None => Box::new(whole),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(whole)),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(whole)),
        Compression::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(whole)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(whole)?),
    })
}

/// Whether a 512-byte block is a tar header: its checksum is right (covers v7, ustar, GNU).
fn is_tar_header(b: &[u8]) -> bool {
    if b.len() < 512 || b.iter().all(|x| *x == 0) {
        return false;
    }
    let field = &b[148..156];
    let digits: String = field
        .iter()
        .map(|c| *c as char)
        .filter(|c| ('0'..='7').contains(c))
        .collect();
    let Ok(want) = u32::from_str_radix(&digits, 8) else {
        return false;
    };
    let sum: u32 = b[..512]
        .iter()
        .enumerate()
        .map(|(i, x)| {
            if (148..156).contains(&i) {
                32
            } else {
                *x as u32
            }
        })
        .sum();
    sum == want
}

/// Whether the file at `path` is a tar archive, compressed or not (what ADD unpacks). A
/// compressed file that is not a tar inside is not an archive: docker copies it as it is.
pub fn is_archive(path: &Path) -> io::Result<bool> {
    let f = fs::File::open(path)?;
    let mut r = match decompress(f) {
        Ok(r) => r,
        Err(_) => return Ok(false),
    };
    Ok(match read_head(&mut r, 512) {
        Ok(h) => is_tar_header(&h),
        Err(_) => false,
    })
}

fn clean_entry(p: &Path) -> Result<Option<PathBuf>, String> {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => parts.push(n),
            // The guard pops: `..` removes the previous component, or escapes when there is none.
            Component::ParentDir if parts.pop().is_none() => {
                return Err(format!("entry {} escapes the destination", p.display()));
            }
            _ => {}
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    Ok(Some(parts.iter().collect()))
}

fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Who owns unpacked entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The uid/gid written in the archive (ADD without `--chown`).
    Archive,
    /// This uid/gid (ADD `--chown`).
    Fixed(u32, u32),
    /// Whoever runs the process: no chown at all (a context tar, where owners do not matter
    /// and a non-root user could not chown anyway).
    Process,
}

/// Unpacks the (already decompressed) tar `stream` into the directory `dest`, which lies inside
/// `root`; paths resolve inside `root`.
pub fn unpack(
    stream: impl Read,
    root: &Path,
    dest: &Path,
    owner: Owner,
    stats: &mut CopyStats,
) -> Result<(), String> {
    let dest_rel = dest
        .strip_prefix(root)
        .unwrap_or(Path::new(""))
        .to_path_buf();
    let mut ar = tar::Archive::new(stream);
    let mut dir_times: Vec<(PathBuf, i64)> = Vec::new();
    let entries = ar.entries().map_err(|e| e.to_string())?;
    for entry in entries {
        let mut e = entry.map_err(|e| format!("reading archive: {e}"))?;
        let raw = e.path().map_err(|e| e.to_string())?.into_owned();
        let Some(rel) = clean_entry(&raw)? else {
            continue;
        };
        let hdr = e.header().clone();
        let ids = match owner {
            Owner::Fixed(u, g) => Some((u, g)),
            Owner::Archive => Some((hdr.uid().unwrap_or(0) as u32, hdr.gid().unwrap_or(0) as u32)),
            Owner::Process => None,
        };
        let dir_owner = ids.map(|_| match owner {
            Owner::Fixed(u, g) => (u, g),
            _ => (0, 0),
        });
        let parent_rel = dest_rel.join(rel.parent().unwrap_or(Path::new("")));
        let parent = mkdir_all_in_root(root, &parent_rel, dir_owner)
            .map_err(|e| format!("{}: {e}", rel.display()))?;
        let Some(name) = rel.file_name() else {
            continue;
        };
        let target = parent.join(name);
        let fail = |e: io::Error| format!("{}: {e}", rel.display());
        let mode = hdr.mode().unwrap_or(0o644) & 0o7777;
        let kind = hdr.entry_type();
        let mut is_link = false;
        if kind.is_dir() {
            match fs::symlink_metadata(&target) {
                Ok(m) if m.is_dir() => {}
                _ => {
                    remove_any(&target).map_err(fail)?;
                    fs::create_dir(&target).map_err(fail)?;
                    stats.dirs += 1;
                }
            }
        } else if kind.is_file() || kind.is_gnu_sparse() || kind == tar::EntryType::Continuous {
            remove_any(&target).map_err(fail)?;
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&target)
                .map_err(fail)?;
            stats.bytes += io::copy(&mut e, &mut f).map_err(fail)?;
            stats.files += 1;
        } else if kind.is_symlink() {
            let link = e
                .link_name()
                .map_err(fail)?
                .ok_or_else(|| format!("{}: symlink without target", rel.display()))?;
            remove_any(&target).map_err(fail)?;
            std::os::unix::fs::symlink(&link, &target).map_err(fail)?;
            stats.symlinks += 1;
            is_link = true;
        } else if kind.is_hard_link() {
            let link = e
                .link_name()
                .map_err(fail)?
                .ok_or_else(|| format!("{}: hardlink without target", rel.display()))?;
            let Some(link_rel) = clean_entry(&link)? else {
                return Err(format!("{}: bad hardlink target", rel.display()));
            };
            let src = resolve_in_root(root, &dest_rel.join(link_rel), false).map_err(fail)?;
            remove_any(&target).map_err(fail)?;
            fs::hard_link(&src, &target).map_err(fail)?;
            stats.hardlinks += 1;
            continue;
        } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            let ft = if kind.is_character_special() {
                rustix::fs::FileType::CharacterDevice
            } else if kind.is_block_special() {
                rustix::fs::FileType::BlockDevice
            } else {
                rustix::fs::FileType::Fifo
            };
            let dev = rustix::fs::makedev(
                hdr.device_major().ok().flatten().unwrap_or(0),
                hdr.device_minor().ok().flatten().unwrap_or(0),
            );
            remove_any(&target).map_err(fail)?;
            rustix::fs::mknodat(CWD, &target, ft, rustix::fs::Mode::from_raw_mode(mode), dev)
                .map_err(|e| fail(e.into()))?;
            stats.other += 1;
        } else {
            // pax/GNU metadata entries are consumed by the tar reader; anything else is skipped.
            continue;
        }
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::lchown(&target, Some(uid), Some(gid)).map_err(fail)?;
        }
        if !is_link {
            fs::set_permissions(&target, fs::Permissions::from_mode(mode)).map_err(fail)?;
        }
        let mtime = hdr.mtime().unwrap_or(0) as i64;
        if kind.is_dir() {
            dir_times.push((target, mtime));
        } else {
            set_mtime(&target, mtime).map_err(fail)?;
        }
    }
    while let Some((p, t)) = dir_times.pop() {
        set_mtime(&p, t).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(())
}

fn set_mtime(p: &Path, t: i64) -> io::Result<()> {
    let ts = Timespec {
        tv_sec: t,
        tv_nsec: 0,
    };
    let t = Timestamps {
        last_access: ts,
        last_modification: ts,
    };
    rustix::fs::utimensat(CWD, p, &t, AtFlags::SYMLINK_NOFOLLOW).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_magic() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(sniff(b"BZh91AY"), Compression::Bzip2);
        assert_eq!(sniff(&[0xfd, b'7', b'z', b'X', b'Z', 0]), Compression::Xz);
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(sniff(b"hello"), Compression::None);
    }

    #[test]
    fn refuses_escaping_entries() {
        assert!(clean_entry(Path::new("../x")).is_err());
        assert!(clean_entry(Path::new("a/../../x")).is_err());
        assert_eq!(
            clean_entry(Path::new("/a/./b/../c")).unwrap(),
            Some(PathBuf::from("a/c"))
        );
        assert_eq!(clean_entry(Path::new("./")).unwrap(), None);
    }
}
