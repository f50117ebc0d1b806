//! Compression of layer streams and detection of the compression of an incoming stream.

use crate::{Compression, Error};
use std::io::{self, BufReader, Read, Write};

/// The OCI media type of a layer blob in `compression`.
pub fn media_type(compression: Compression) -> &'static str {
    match compression {
        Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        Compression::None => "application/vnd.oci.image.layer.v1.tar",
    }
}

/// The compression found at the start of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// gzip (`1f 8b`).
    Gzip,
    /// zstd (`28 b5 2f fd`).
    Zstd,
    /// xz (`fd 37 7a 58 5a 00`).
    Xz,
    /// Anything else is read as a plain tar.
    Plain,
}

/// Classifies the first bytes of a stream (six are enough).
pub fn detect(buf: &[u8]) -> Detected {
    classify(buf)
}

fn classify(buf: &[u8]) -> Detected {
    if buf.starts_with(&[0x1f, 0x8b]) {
        Detected::Gzip
    } else if buf.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Detected::Zstd
    } else if buf.starts_with(&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]) {
        Detected::Xz
    } else {
        Detected::Plain
    }
}

/// Wraps `reader` in the decompressor its first bytes call for (gzip, zstd, xz, or none).
pub fn decompress<'a, R: Read + 'a>(reader: R) -> Result<Box<dyn Read + 'a>, Error> {
    let mut r = BufReader::with_capacity(256 * 1024, reader);
    // Read the magic into a small buffer that is then chained in front of the rest, since a
    // pipe can hand over fewer than six bytes in the first read.
    let mut head = Vec::with_capacity(6);
    (&mut r)
        .take(6)
        .read_to_end(&mut head)
        .map_err(|e| Error::io("<layer stream>", e))?;
    let kind = classify(&head);
    let chained = io::Cursor::new(head).chain(r);
    Ok(match kind {
        Detected::Gzip => Box::new(flate2::read::MultiGzDecoder::new(chained)),
        Detected::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(chained).map_err(|e| Error::io("<zstd>", e))?)
        }
        Detected::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(chained)),
        Detected::Plain => Box::new(chained),
    })
}

/// A compressing writer for one of the layer compressions.
pub(crate) enum Compressor<W: Write> {
    Gzip(crate::pgzip::ParGzWriter<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    None(W),
}

impl<W: Write> Compressor<W> {
    pub(crate) fn new(c: Compression, w: W) -> io::Result<Self> {
        Self::with_cache(c, w, None)
    }

    /// [`Compressor::new`]; gzip looks chunks up in `cache` first (same output bytes).
    pub(crate) fn with_cache(
        c: Compression,
        w: W,
        cache: Option<std::sync::Arc<dyn crate::ChunkCache>>,
    ) -> io::Result<Self> {
        Ok(match c {
            // Parallel deflate in fixed-size chunks; the bytes depend only on the input (not on
            // the thread count or the write calls): required for reproducible digests.
            Compression::Gzip => {
                let gz = crate::pgzip::ParGzWriter::new(w);
                Compressor::Gzip(match cache {
                    Some(cache) => gz.with_cache(cache),
                    None => gz,
                })
            }
            Compression::Zstd => Compressor::Zstd(zstd::stream::write::Encoder::new(w, 3)?),
            Compression::None => Compressor::None(w),
        })
    }
    pub(crate) fn finish(self) -> io::Result<W> {
        Ok(self.finish_with_records()?.0)
    }

    /// [`Compressor::finish`], with where gzip's chunks are and how many came from the cache.
    pub(crate) fn finish_with_records(self) -> io::Result<(W, Vec<crate::ChunkRecord>, u64)> {
        match self {
            Compressor::Gzip(e) => e.finish_with_records(),
            Compressor::Zstd(e) => Ok((e.finish()?, Vec::new(), 0)),
            Compressor::None(w) => Ok((w, Vec::new(), 0)),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Gzip(e) => e.write(buf),
            Compressor::Zstd(e) => e.write(buf),
            Compressor::None(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Gzip(e) => e.flush(),
            Compressor::Zstd(e) => e.flush(),
            Compressor::None(w) => w.flush(),
        }
    }
}
