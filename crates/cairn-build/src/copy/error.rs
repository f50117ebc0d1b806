//! Errors of COPY and ADD. Each message starts with the instruction (`COPY failed: ...`) and names
//! the file, in docker's words where docker has words for it.

use std::io;
use std::path::PathBuf;

/// Why a COPY or ADD failed. `cmd` is `"COPY"` or `"ADD"`.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A source is missing from the context (or hidden by `.dockerignore`).
    #[error("{cmd} failed: file not found in build context or excluded by .dockerignore: stat {path}: file does not exist")]
    NotInContext {
        /// COPY or ADD.
        cmd: &'static str,
        /// The source as written.
        path: String,
    },
    /// A source is missing from the `--from` stage or image.
    #[error("{cmd} failed: stat {path}: file does not exist (in the --from source)")]
    NotInSource {
        /// COPY or ADD.
        cmd: &'static str,
        /// The source as written.
        path: String,
    },
    /// No source was given.
    #[error("{cmd} failed: no source files were specified")]
    NoSources {
        /// COPY or ADD.
        cmd: &'static str,
    },
    /// Several sources (or a glob matching several) need a destination ending in `/`.
    #[error("{cmd} failed: when using {cmd} with more than one source file, the destination must be a directory and end with a / (got {dest:?})")]
    DestNotDir {
        /// COPY or ADD.
        cmd: &'static str,
        /// The destination as written.
        dest: String,
    },
    /// A pattern (source glob, `--exclude`, `--parents`) is malformed.
    #[error("{cmd} failed: {source}")]
    Pattern {
        /// COPY or ADD.
        cmd: &'static str,
        /// The pattern error.
        source: crate::context::PatternError,
    },
    /// A flag value is invalid (`--chmod`, `--checksum`, `--chown`, a URL for COPY, ...).
    #[error("{cmd} failed: {message}")]
    Invalid {
        /// COPY or ADD.
        cmd: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Reading a source or writing the destination failed.
    #[error("{cmd} failed: {path}: {source}")]
    Io {
        /// COPY or ADD.
        cmd: &'static str,
        /// The file concerned (host path of the source, or image path of the destination).
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Fetching a URL failed.
    #[error("ADD failed: {url}: {message}")]
    Fetch {
        /// The URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// A downloaded file does not match `--checksum`.
    #[error("ADD failed: checksum mismatch for {url}: expected {expected}, got {actual}")]
    Checksum {
        /// The URL.
        url: String,
        /// The `--checksum` value.
        expected: String,
        /// What the download hashed to.
        actual: String,
    },
    /// An archive given to ADD is malformed or tries to escape the destination.
    #[error("ADD failed: {archive}: {message}")]
    Archive {
        /// The archive's source path.
        archive: String,
        /// What is wrong.
        message: String,
    },
    /// `--chown` names a user or group the stage does not have.
    #[error("unable to convert uid/gid chown string to host mapping: {message}")]
    Chown {
        /// What could not be resolved.
        message: String,
    },
    /// The caller's cancel said stop (the build was interrupted); the copy is partial.
    #[error("{cmd} cancelled")]
    Cancelled {
        /// COPY or ADD.
        cmd: &'static str,
    },
}

/// Result of COPY/ADD operations.
pub type Result<T> = std::result::Result<T, CopyError>;

/// Adds `cmd` and a path to an `io::Error`.
pub(crate) fn io_err(
    cmd: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> CopyError {
    let path = path.into();
    move |source| CopyError::Io { cmd, path, source }
}
