//! An existing tar (any compression) → a layer blob, in one pass: the bytes are passed through
//! unchanged (so the same tar always gives the same diffID), validated entry by entry, and
//! compressed, with both digests computed on the way.

use crate::compress::Compressor;
use crate::hash::HashingWriter;
use crate::{Compression, Error, LayerDescriptor, UnpackStats};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

/// Copies what is read into a writer, so that the tar parser and the compressor see the same
/// bytes without buffering the stream.
struct Tee<R, W> {
    r: R,
    w: W,
    err: Option<io::Error>,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.r.read(buf)?;
        if let Err(e) = self.w.write_all(&buf[..n]) {
            // Reported after the parse, with the write error rather than a confusing tar error.
            let kind = e.kind();
            self.err = Some(e);
            return Err(io::Error::new(kind, "output failed"));
        }
        Ok(n)
    }
}

fn check_name(raw: &[u8]) -> Result<(), Error> {
    let p = Path::new(std::ffi::OsStr::from_bytes(raw));
    if p.components().any(|c| {
        matches!(
            c,
            Component::ParentDir | Component::RootDir | Component::Prefix(_)
        )
    }) {
        return Err(Error::Escape {
            entry: String::from_utf8_lossy(raw).into_owned(),
        });
    }
    Ok(())
}

/// Reads a tar (plain, gzip, zstd or xz) from `reader` and writes it to `out` as a layer blob in
/// `compression`. Entries that would escape a root (absolute, `..`, hardlinks to such names) are
/// refused. Returns the descriptor and the sizes (content size as docker counts it).
pub fn transcode_layer<R: Read, W: Write>(
    reader: R,
    compression: Compression,
    out: W,
) -> Result<(LayerDescriptor, UnpackStats), Error> {
    let plain = crate::compress::decompress(reader)?;
    let compressor = Compressor::new(compression, HashingWriter::new(out))
        .map_err(|e| Error::io("<compressor>", e))?;
    let mut tee = Tee {
        r: plain,
        w: HashingWriter::new(io::BufWriter::with_capacity(256 * 1024, compressor)),
        err: None,
    };
    let mut stats = UnpackStats::default();
    let parsed = (|| {
        let mut archive = tar::Archive::new(&mut tee);
        for entry in archive.entries().map_err(|e| Error::io("<tar>", e))? {
            let mut entry = entry.map_err(|e| Error::io("<tar>", e))?;
            let kind = entry.header().entry_type();
            if matches!(
                kind,
                tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
            ) {
                continue;
            }
            check_name(&entry.path_bytes())?;
            if kind == tar::EntryType::Link {
                if let Some(l) = entry.link_name_bytes() {
                    check_name(&l).map_err(|_| Error::Escape {
                        entry: format!(
                            "{} (hardlink to {})",
                            String::from_utf8_lossy(&entry.path_bytes()),
                            String::from_utf8_lossy(&l)
                        ),
                    })?;
                }
            }
            match kind {
                tar::EntryType::Regular | tar::EntryType::Continuous => stats.bytes += entry.size(),
                tar::EntryType::Symlink => {
                    stats.bytes += entry.link_name_bytes().map(|l| l.len() as u64).unwrap_or(0)
                }
                _ => {}
            }
            stats.entries += 1;
            io::copy(&mut entry, &mut io::sink()).map_err(|e| Error::io("<tar>", e))?;
        }
        // Whatever follows the end-of-archive blocks is part of the stream, and of the diffID.
        io::copy(archive.into_inner(), &mut io::sink()).map_err(|e| Error::io("<tar>", e))?;
        Ok(())
    })();
    if let Some(e) = tee.err.take() {
        return Err(Error::io("<output>", e));
    }
    parsed?;
    if stats.entries == 0 {
        return Err(Error::Other(
            "the input is not a tar archive (no entries)".into(),
        ));
    }
    let (buffered, diff_id, tar_size) = tee.w.finish();
    let compressor = buffered
        .into_inner()
        .map_err(|e| Error::io("<output>", e.into_error()))?;
    let (mut out, digest, size) = compressor
        .finish()
        .map_err(|e| Error::io("<compressor>", e))?
        .finish();
    out.flush().map_err(|e| Error::io("<output>", e))?;
    stats.diff_id = diff_id.clone();
    stats.tar_size = tar_size;
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
