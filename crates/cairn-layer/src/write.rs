//! Directory tree → deterministic tar stream.
//!
//! Determinism: entries are emitted in byte order of their names, depth first, with numeric
//! owners only (no uname/gname), no atime/ctime, mtimes optionally clamped, xattrs sorted, and a
//! fixed header format (ustar, PAX records only where ustar cannot say it). The same tree therefore
//! always gives the same bytes.

use crate::compress::Compressor;
use crate::hash::HashingWriter;
use crate::{DiffSource, Error, LayerDescriptor, WriteOptions};
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

const BLOCK: usize = 512;
/// Larger than any numeric field of a ustar header can hold in octal (7 digits).
const USTAR_ID_MAX: u64 = 0o7777777;
/// 11 octal digits.
const USTAR_SIZE_MAX: u64 = 0o77777777777;

/// Writes the diff described by `source` as a tar, compressed with `compression`, to `out`, and
/// returns its descriptor (digest and size of the compressed stream, diffID of the tar).
pub fn write_layer<W: Write>(
    source: DiffSource<'_>,
    compression: crate::Compression,
    opts: &WriteOptions,
    out: W,
) -> Result<LayerDescriptor, Error> {
    write_layer_with_stats(source, compression, opts, out).map(|(d, _)| d)
}

/// Sizes measured while a layer was written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Size of the uncompressed tar.
    pub tar_size: u64,
    /// Regular file bytes, each hardlinked file once: the sum of the entries' tar header sizes
    /// (symlinks, hardlinks, directories and devices count 0). That is the size docker (20.10,
    /// overlay2) records for a layer BuildKit built: moby's `ChecksumForGraphID` adds up the
    /// tar-split entries' sizes of the layer's diff. Layers docker loads, pulls or imports are
    /// measured by a directory walk instead, which also counts symlink target lengths; cairn
    /// measures those on the way in ([`crate::UnpackStats::bytes`]).
    pub content_size: u64,
    /// Number of archive entries.
    pub entries: u64,
    /// gzip with a [`crate::ChunkCache`]: where each compressed chunk is in the blob.
    pub gzip_chunks: Vec<crate::ChunkRecord>,
    /// gzip with a cache: how many chunks were taken from it rather than compressed.
    pub reused_chunks: u64,
}

/// [`write_layer`], also returning the sizes measured on the way.
pub fn write_layer_with_stats<W: Write>(
    source: DiffSource<'_>,
    compression: crate::Compression,
    opts: &WriteOptions,
    out: W,
) -> Result<(LayerDescriptor, WriteStats), Error> {
    let compressed = HashingWriter::new(out);
    let compressor = Compressor::with_cache(compression, compressed, opts.chunk_cache.clone())
        .map_err(|e| Error::io("<compressor>", e))?;
    let mut tar = TarWriter {
        out: HashingWriter::new(io::BufWriter::with_capacity(256 * 1024, compressor)),
        opts: opts.clone(),
        links: HashMap::new(),
        buf: vec![0u8; 256 * 1024],
        stats: WriteStats::default(),
    };
    match source {
        DiffSource::Tree(root) => tar.walk_tree(root, Path::new(""), Mode::Tree)?,
        DiffSource::OverlayUpper(root) => tar.walk_tree(root, Path::new(""), Mode::Overlay)?,
        DiffSource::Compare { lower, upper } => tar.walk_compare(lower, upper, Path::new(""))?,
    }
    tar.out
        .write_all(&[0u8; BLOCK * 2])
        .map_err(|e| Error::io("<tar>", e))?;
    let mut stats = tar.stats;
    let (buffered, diff_id, tar_size) = tar.out.finish();
    stats.tar_size = tar_size;
    let compressor = buffered
        .into_inner()
        .map_err(|e| Error::io("<tar>", e.into_error()))?;
    let (compressed, gzip_chunks, reused_chunks) = compressor
        .finish_with_records()
        .map_err(|e| Error::io("<compressor>", e))?;
    stats.gzip_chunks = gzip_chunks;
    stats.reused_chunks = reused_chunks;
    let (mut out, digest, size) = compressed.finish();
    out.flush().map_err(|e| Error::io("<output>", e))?;
    Ok((
        LayerDescriptor {
            digest,
            diff_id,
            size,
            media_type: crate::compress::media_type(compression).to_string(),
        },
        stats,
    ))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Tree,
    Overlay,
}

struct TarWriter<W: Write> {
    out: HashingWriter<W>,
    opts: WriteOptions,
    /// (dev, ino) of files with several links → the archive path of the first one written.
    links: HashMap<(u64, u64), PathBuf>,
    buf: Vec<u8>,
    stats: WriteStats,
}

/// Children of a directory, sorted by the bytes of their names.
fn sorted_children(dir: &Path) -> Result<Vec<OsString>, Error> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        names.push(e.map_err(|e| Error::io(dir, e))?.file_name());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

fn lstat(p: &Path) -> Result<fs::Metadata, Error> {
    fs::symlink_metadata(p).map_err(|e| Error::io(p, e))
}

fn is_whiteout_dev(m: &fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

/// Sorted (name, value) xattrs of a path, without following a final symlink.
pub(crate) fn read_xattrs(p: &Path) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, Error> {
    let mut out = BTreeMap::new();
    let size = match rustix::fs::llistxattr_query(p) {
        Ok(n) => n,
        // No xattr support on this filesystem: nothing to record.
        Err(rustix::io::Errno::OPNOTSUPP) => return Ok(out),
        Err(e) => return Err(Error::io(p, e.into())),
    };
    if size == 0 {
        return Ok(out);
    }
    let mut list = vec![0u8; size];
    let n = rustix::fs::llistxattr(p, &mut list[..]).map_err(|e| Error::io(p, e.into()))?;
    list.truncate(n);
    for name in list.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = OsStr::from_bytes(name);
        let len = match rustix::fs::lgetxattr_query(p, cname) {
            Ok(n) => n,
            // Removed between list and get.
            Err(rustix::io::Errno::NODATA) => continue,
            Err(e) => return Err(Error::io(p, e.into())),
        };
        let mut val = vec![0u8; len];
        let n =
            rustix::fs::lgetxattr(p, cname, &mut val[..]).map_err(|e| Error::io(p, e.into()))?;
        val.truncate(n);
        out.insert(name.to_vec(), val);
    }
    Ok(out)
}

fn is_opaque(x: &BTreeMap<Vec<u8>, Vec<u8>>) -> bool {
    [&b"trusted.overlay.opaque"[..], b"user.overlay.opaque"]
        .iter()
        .any(|k| x.get(*k).is_some_and(|v| v == b"y"))
}

/// Overlayfs keeps its bookkeeping in these namespaces; they never belong in a layer.
fn is_overlay_internal(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    // The length prefix counts itself, so find the fixed point of its digit count.
    let base = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = base + 1;
    while len != base + len.to_string().len() {
        len = base + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// What one archive entry says, before it is encoded.
struct EntrySpec<'a> {
    path: &'a Path,
    kind: tar::EntryType,
    meta: Option<&'a fs::Metadata>,
    link: Option<&'a [u8]>,
    size: u64,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl<W: Write> TarWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.out.write_all(bytes).map_err(|e| Error::io("<tar>", e))
    }

    fn check_cancel(&self) -> Result<(), Error> {
        match &self.opts.cancel {
            Some(cancel) if cancel() => Err(Error::Cancelled),
            _ => Ok(()),
        }
    }

    fn mtime(&self, m: &fs::Metadata) -> u64 {
        let t = m.mtime().max(0);
        match self.opts.clamp_mtime {
            Some(c) => t.min(c.max(0)) as u64,
            None => t as u64,
        }
    }

    fn header(&mut self, e: EntrySpec<'_>) -> Result<(), Error> {
        self.stats.entries += 1;
        let mut h = tar::Header::new_ustar();
        let mut pax = Vec::new();
        let mut name = e.path.as_os_str().as_bytes().to_vec();
        if e.kind == tar::EntryType::Directory {
            name.push(b'/');
        }
        let name_path = PathBuf::from(OsString::from_vec(name.clone()));
        if name.len() > 100 || h.set_path(&name_path).is_err() {
            pax_record(&mut pax, b"path", &name);
            // The ustar name is only a fallback for readers without PAX support.
            let cut = name.len().min(100);
            h.as_old_mut().name[..cut].copy_from_slice(&name[..cut]);
        }
        if let Some(link) = e.link {
            if link.len() > 100 {
                pax_record(&mut pax, b"linkpath", link);
                h.as_old_mut().linkname.copy_from_slice(&link[..100]);
            } else {
                h.set_link_name_literal(link)
                    .map_err(|err| Error::io(e.path, err))?;
            }
        }
        let (mode, uid, gid, mtime) = match e.meta {
            Some(m) => (
                m.mode() & 0o7777,
                m.uid() as u64,
                m.gid() as u64,
                self.mtime(m),
            ),
            None => (
                0o644,
                0,
                0,
                self.opts.clamp_mtime.unwrap_or(0).max(0) as u64,
            ),
        };
        h.set_mode(mode);
        for (key, v, set) in [
            (
                &b"uid"[..],
                uid,
                tar::Header::set_uid as fn(&mut tar::Header, u64),
            ),
            (&b"gid"[..], gid, tar::Header::set_gid),
        ] {
            if v > USTAR_ID_MAX {
                pax_record(&mut pax, key, v.to_string().as_bytes());
                set(&mut h, 0);
            } else {
                set(&mut h, v);
            }
        }
        h.set_mtime(mtime);
        if e.size > USTAR_SIZE_MAX {
            pax_record(&mut pax, b"size", e.size.to_string().as_bytes());
            h.set_size(0);
        } else {
            h.set_size(e.size);
        }
        h.set_entry_type(e.kind);
        if matches!(e.kind, tar::EntryType::Char | tar::EntryType::Block) {
            if let Some(m) = e.meta {
                let rdev = m.rdev();
                let (maj, min) = (libc::major(rdev), libc::minor(rdev));
                h.set_device_major(maj)
                    .map_err(|err| Error::io(e.path, err))?;
                h.set_device_minor(min)
                    .map_err(|err| Error::io(e.path, err))?;
            }
        }
        for (k, v) in &e.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            pax_record(&mut pax, &key, v);
        }
        if !pax.is_empty() {
            let mut ph = tar::Header::new_ustar();
            // A fixed name keeps the PAX header itself deterministic.
            ph.set_path("PaxHeaders/entry")
                .map_err(|err| Error::io(e.path, err))?;
            ph.set_entry_type(tar::EntryType::XHeader);
            ph.set_mode(0o644);
            ph.set_mtime(0);
            ph.set_size(pax.len() as u64);
            ph.set_cksum();
            self.write(ph.as_bytes())?;
            let pad = (BLOCK - pax.len() % BLOCK) % BLOCK;
            pax.resize(pax.len() + pad, 0);
            self.write(&pax)?;
        }
        h.set_cksum();
        self.write(h.as_bytes())
    }

    /// Copies exactly `size` bytes of `file` after its header, and refuses a file that changed
    /// size while it was read (the header already promised `size`).
    fn copy_file(&mut self, path: &Path, size: u64) -> Result<(), Error> {
        let mut f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut left = size;
        let mut buf = std::mem::take(&mut self.buf);
        let res = (|| {
            while left > 0 {
                self.check_cancel()?;
                let want = buf.len().min(left as usize);
                let n = f.read(&mut buf[..want]).map_err(|e| Error::io(path, e))?;
                if n == 0 {
                    return Err(Error::Other(format!(
                        "{}: file shrank while it was archived",
                        path.display()
                    )));
                }
                self.write(&buf[..n])?;
                left -= n as u64;
            }
            let pad = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
            self.write(&[0u8; BLOCK][..pad])
        })();
        self.buf = buf;
        res
    }

    /// Emits one filesystem object (not a whiteout) at archive path `rel`.
    fn emit(&mut self, abs: &Path, rel: &Path, m: &fs::Metadata, mode: Mode) -> Result<(), Error> {
        self.check_cancel()?;
        let ft = m.file_type();
        let mut xattrs = read_xattrs(abs)?;
        if mode == Mode::Overlay {
            xattrs.retain(|k, _| !is_overlay_internal(k));
        }
        let spec = |kind, link, size, xattrs| EntrySpec {
            path: rel,
            kind,
            meta: Some(m),
            link,
            size,
            xattrs,
        };
        if ft.is_dir() {
            self.header(spec(tar::EntryType::Directory, None, 0, xattrs))
        } else if ft.is_symlink() {
            // Counts 0 in content_size: see WriteStats.
            let target = fs::read_link(abs).map_err(|e| Error::io(abs, e))?;
            self.header(spec(
                tar::EntryType::Symlink,
                Some(target.as_os_str().as_bytes()),
                0,
                xattrs,
            ))
        } else if ft.is_file() {
            if m.nlink() > 1 {
                let key = (m.dev(), m.ino());
                if let Some(first) = self.links.get(&key).cloned() {
                    return self.header(spec(
                        tar::EntryType::Link,
                        Some(first.as_os_str().as_bytes()),
                        0,
                        xattrs,
                    ));
                }
                self.links.insert(key, rel.to_path_buf());
            }
            self.stats.content_size += m.len();
            self.header(spec(tar::EntryType::Regular, None, m.len(), xattrs))?;
            self.copy_file(abs, m.len())
        } else if ft.is_char_device() {
            self.header(spec(tar::EntryType::Char, None, 0, xattrs))
        } else if ft.is_block_device() {
            self.header(spec(tar::EntryType::Block, None, 0, xattrs))
        } else if ft.is_fifo() {
            self.header(spec(tar::EntryType::Fifo, None, 0, xattrs))
        } else {
            // Sockets cannot be archived; docker skips them too.
            Ok(())
        }
    }

    /// A whiteout entry `.wh.<name>` (or the opaque marker) in directory `dir_rel`.
    fn whiteout(&mut self, dir_rel: &Path, name: &OsStr) -> Result<(), Error> {
        let mut wh = OsString::from(".wh.");
        wh.push(name);
        let p = dir_rel.join(wh);
        self.header(EntrySpec {
            path: &p,
            kind: tar::EntryType::Regular,
            meta: None,
            link: None,
            size: 0,
            xattrs: BTreeMap::new(),
        })
    }

    fn walk_tree(&mut self, root: &Path, rel: &Path, mode: Mode) -> Result<(), Error> {
        let dir = root.join(rel);
        for name in sorted_children(&dir)? {
            let abs = dir.join(&name);
            let r = rel.join(&name);
            let m = lstat(&abs)?;
            if mode == Mode::Overlay && is_whiteout_dev(&m) {
                self.whiteout(rel, &name)?;
                continue;
            }
            self.emit(&abs, &r, &m, mode)?;
            if m.is_dir() {
                if mode == Mode::Overlay && is_opaque(&read_xattrs(&abs)?) {
                    // Right after the directory and before its new children, so that an
                    // applier that empties the directory on the marker keeps them.
                    self.whiteout(&r, OsStr::new(".wh..opq"))?;
                }
                self.walk_tree(root, &r, mode)?;
            }
        }
        Ok(())
    }

    /// Emits what `upper` changed relative to `lower`, below `rel`. Returns whether anything was
    /// emitted, so that the caller emits the parent directory first when a child changed.
    fn walk_compare(&mut self, lower: &Path, upper: &Path, rel: &Path) -> Result<(), Error> {
        self.compare_dir(lower, upper, rel, &mut Vec::new())
    }

    /// `pending`: directories (archive paths) whose header is owed before any change below them.
    fn compare_dir(
        &mut self,
        lower: &Path,
        upper: &Path,
        rel: &Path,
        pending: &mut Vec<PathBuf>,
    ) -> Result<(), Error> {
        let udir = upper.join(rel);
        let ldir = lower.join(rel);
        let unames = sorted_children(&udir)?;
        let lnames = match fs::symlink_metadata(&ldir) {
            Ok(m) if m.is_dir() => sorted_children(&ldir)?,
            _ => Vec::new(),
        };
        // Merge the two sorted lists so that entries and whiteouts come out in name order.
        let (mut i, mut j) = (0, 0);
        while i < unames.len() || j < lnames.len() {
            let ord = match (unames.get(i), lnames.get(j)) {
                (Some(u), Some(l)) => u.as_bytes().cmp(l.as_bytes()),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match ord {
                std::cmp::Ordering::Greater => {
                    // Only in lower: deleted.
                    self.flush_pending(upper, pending)?;
                    self.whiteout(rel, &lnames[j])?;
                    j += 1;
                }
                std::cmp::Ordering::Less => {
                    let name = &unames[i];
                    let (abs, r) = (udir.join(name), rel.join(name));
                    let m = lstat(&abs)?;
                    self.flush_pending(upper, pending)?;
                    self.emit(&abs, &r, &m, Mode::Tree)?;
                    if m.is_dir() {
                        self.walk_tree(upper, &r, Mode::Tree)?;
                    }
                    i += 1;
                }
                std::cmp::Ordering::Equal => {
                    let name = &unames[i];
                    let (uabs, labs, r) = (udir.join(name), ldir.join(name), rel.join(name));
                    let um = lstat(&uabs)?;
                    let lm = lstat(&labs)?;
                    let changed = differs(&uabs, &um, &labs, &lm)?;
                    if changed {
                        self.flush_pending(upper, pending)?;
                        self.emit(&uabs, &r, &um, Mode::Tree)?;
                    }
                    if um.is_dir() {
                        if lm.is_dir() {
                            if !changed {
                                pending.push(r.clone());
                            }
                            self.compare_dir(lower, upper, &r, pending)?;
                            if !changed && pending.last() == Some(&r) {
                                pending.pop();
                            }
                        } else {
                            self.walk_tree(upper, &r, Mode::Tree)?;
                        }
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        Ok(())
    }

    /// Writes the headers of unchanged parent directories that a change below them needs.
    fn flush_pending(&mut self, upper: &Path, pending: &mut Vec<PathBuf>) -> Result<(), Error> {
        for r in std::mem::take(pending) {
            let abs = upper.join(&r);
            let m = lstat(&abs)?;
            self.emit(&abs, &r, &m, Mode::Tree)?;
        }
        Ok(())
    }
}

/// Whether an object present in both trees changed, by the same metadata docker compares
/// (type, mode, owner, size, mtime to the nanosecond, device number, link target, xattrs).
fn differs(ua: &Path, u: &fs::Metadata, la: &Path, l: &fs::Metadata) -> Result<bool, Error> {
    if u.mode() != l.mode() || u.uid() != l.uid() || u.gid() != l.gid() || u.rdev() != l.rdev() {
        return Ok(true);
    }
    if !u.is_dir()
        && (u.len() != l.len() || u.mtime() != l.mtime() || u.mtime_nsec() != l.mtime_nsec())
    {
        return Ok(true);
    }
    if u.file_type().is_symlink()
        && fs::read_link(ua).map_err(|e| Error::io(ua, e))?
            != fs::read_link(la).map_err(|e| Error::io(la, e))?
    {
        return Ok(true);
    }
    Ok(read_xattrs(ua)? != read_xattrs(la)?)
}
