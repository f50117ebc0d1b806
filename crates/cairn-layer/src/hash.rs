//! Hashing adapters: the digest of a stream is computed as it passes, never by re-reading it.

use sha2::{Digest as _, Sha256};
use std::io::{self, Read, Write};

/// Formats a finished sha256 as an OCI digest string.
pub fn digest_string(hasher: Sha256) -> crate::Digest {
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// The `sha256:<hex>` digest of a byte slice.
pub fn sha256_digest(bytes: &[u8]) -> crate::Digest {
    let mut h = Sha256::new();
    h.update(bytes);
    digest_string(h)
}

/// A writer that hashes and counts what goes through it.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    /// Returns the inner writer, the digest and the byte count of everything written.
    pub fn finish(self) -> (W, crate::Digest, u64) {
        (self.inner, digest_string(self.hasher), self.count)
    }
    /// The inner writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts what is read through it.
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    /// The digest and the byte count of everything read so far.
    pub fn finish(self) -> (R, crate::Digest, u64) {
        (self.inner, digest_string(self.hasher), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}
