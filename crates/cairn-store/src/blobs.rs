//! Content-addressed blobs under `blobs/sha256/`.

use crate::{io_err, sync_dir, unique, Digest, Error, Result, Store};
use cairn_layer::hash::HashingWriter;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Checks that `d` is `sha256:` and 64 lowercase hex digits, so it can name a file safely.
pub(crate) fn check_digest(d: &str) -> Result<&str> {
    let hex = d
        .strip_prefix("sha256:")
        .filter(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
        .ok_or_else(|| Error::Other(format!("invalid digest {d:?}")))?;
    Ok(hex)
}

/// A temp file in the store's tmp dir that removes itself unless persisted.
pub(crate) struct TempFile {
    pub(crate) path: PathBuf,
    pub(crate) file: Option<fs::File>,
}

impl TempFile {
    pub(crate) fn new(dir: &Path, what: &str) -> Result<TempFile> {
        let path = dir.join(format!("{what}-{}-{:x}", std::process::id(), unique()));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(TempFile {
            path,
            file: Some(file),
        })
    }
}

/// A file writer that starts the kernel's writeback every 8 MiB, so that the fsync before the
/// rename does not have to push a whole layer to disk at once: the disk writes overlap with the
/// hashing and compressing (on a slow VM disk this halves the time an import waits in fsync).
pub(crate) struct WritebackFile {
    file: fs::File,
    written: u64,
    started: u64,
}

const WRITEBACK_STEP: u64 = 8 << 20;

impl WritebackFile {
    pub(crate) fn new(file: fs::File) -> Self {
        WritebackFile {
            file,
            written: 0,
            started: 0,
        }
    }
    pub(crate) fn into_inner(self) -> fs::File {
        self.file
    }
}

/// Flushes a [`Store::blob_writer`] buffer and gives back the file; an error names `tmp`.
pub(crate) fn unbuffer(w: io::BufWriter<WritebackFile>, tmp: &TempFile) -> Result<fs::File> {
    Ok(w.into_inner()
        .map_err(|e| Error::Io {
            path: tmp.path.clone(),
            source: e.into_error(),
        })?
        .into_inner())
}

impl Write for WritebackFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= WRITEBACK_STEP {
            use std::os::fd::AsRawFd;
            // SAFETY: the fd belongs to `self.file`, open for the duration of the call;
            // sync_file_range only schedules writeback of that range and touches no memory.
            // Failure is harmless (the fsync before the rename is what guarantees durability).
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.started as libc::off64_t,
                    (self.written - self.started) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.started = self.written;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

impl Store {
    /// Where the blob with digest `d` is (or would be) stored.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        let hex = d.strip_prefix("sha256:").unwrap_or(d);
        self.root.join("blobs/sha256").join(hex)
    }

    /// Whether the blob is in the store.
    pub fn has_blob(&self, d: &Digest) -> bool {
        check_digest(d).is_ok() && self.blob_path(d).is_file()
    }

    /// Reads a whole blob (configs, manifests: small ones).
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        check_digest(d)?;
        let p = self.blob_path(d);
        fs::read(&p).map_err(io_err(p))
    }

    /// Stores `bytes` as a blob, atomically; returns its digest.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest> {
        self.ingest(bytes, None).map(|(d, _)| d)
    }

    /// Streams `reader` into a blob, hashing on the way; if `expected` is given, a mismatch is an
    /// error and nothing is stored. Returns the digest and size.
    pub fn ingest(
        &self,
        mut reader: impl Read,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64)> {
        self.mark_in_use()?;
        if let Some(e) = expected {
            check_digest(e)?;
        }
        let (tmp, buf) = self.blob_writer("blob")?;
        let mut w = HashingWriter::new(buf);
        io::copy(&mut reader, &mut w).map_err(io_err(&tmp.path))?;
        let (buf, digest, size) = w.finish();
        let file = unbuffer(buf, &tmp)?;
        if let Some(e) = expected {
            if *e != digest {
                return Err(Error::DigestMismatch {
                    expected: e.clone(),
                    actual: digest,
                });
            }
        }
        self.persist_blob(tmp, file, &digest)?;
        Ok((digest, size))
    }

    /// A temp file for a new blob (`what` names it), buffered and written back as it fills.
    pub(crate) fn blob_writer(
        &self,
        what: &str,
    ) -> Result<(TempFile, io::BufWriter<WritebackFile>)> {
        let mut tmp = TempFile::new(&self.tmp_dir(), what)?;
        let file = tmp
            .file
            .take()
            .ok_or_else(|| Error::Other("temp file gone".into()))?;
        let w = io::BufWriter::with_capacity(256 * 1024, WritebackFile::new(file));
        Ok((tmp, w))
    }

    /// fsyncs `file` and renames its temp path to the blob path of `digest`.
    pub(crate) fn persist_blob(
        &self,
        tmp: TempFile,
        file: fs::File,
        digest: &Digest,
    ) -> Result<()> {
        let dst = self.blob_path(digest);
        if dst.is_file() {
            // Same digest, same content: keep the one that is there (tmp removes itself), but
            // refresh its mtime: prune's grace period must protect a blob that is in use again.
            let _ = fs::File::options()
                .write(true)
                .open(&dst)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
            return Ok(());
        }
        file.sync_all().map_err(io_err(&tmp.path))?;
        drop(file);
        fs::rename(&tmp.path, &dst).map_err(io_err(&dst))?;
        sync_dir(dst.parent().unwrap_or(&self.root))
    }

    /// Copies blob `d` into `w`.
    pub fn copy_blob(&self, d: &Digest, mut w: impl Write) -> Result<u64> {
        check_digest(d)?;
        let p = self.blob_path(d);
        let mut f = fs::File::open(&p).map_err(io_err(&p))?;
        io::copy(&mut f, &mut w).map_err(io_err(&p))
    }
}
