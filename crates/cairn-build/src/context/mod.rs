//! The build context: a directory (or a tar on stdin) filtered by `.dockerignore`.
//!
//! CONTRACT (the engine calls these; add freely, change only with the callers):
//! ```text
//! BuildContext::open(dir: &Path, dockerfile: Option<&Path>) -> Result<BuildContext>
//!     // reads <dockerfile>.dockerignore next to the Dockerfile if present, else <dir>/.dockerignore
//! BuildContext::from_tar(reader: impl Read, scratch: &Path) -> Result<BuildContext>
//! ctx.root() -> &Path
//! ctx.is_ignored(rel: &Path) -> bool
//! ```
//! Added:
//! ```text
//! ctx.with_hash_cache(cache_dir: &Path) -> BuildContext   // persisted content-hash memo
//! ctx.save_hash_cache() -> Result<()>                      // call once at the end of a build
//! ctx.ignore_file() -> Option<&Path>                       // which .dockerignore was read
//! ```
//!
//! As in BuildKit, the Dockerfile and `.dockerignore` are ordinary context files: the engine reads
//! the Dockerfile from disk whatever the rules say, and `COPY . .` copies both unless they are
//! listed in `.dockerignore`.

#![deny(missing_docs)]

pub mod hashes;
pub mod ignore;
pub mod pattern;
mod untar;

use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

pub use ignore::IgnoreRules;
pub use pattern::PatternError;

/// Errors of reading a build context.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The context directory (or a file in it) could not be read.
    #[error("build context {path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A `.dockerignore` line is not a valid pattern.
    #[error("{file}: {source}")]
    Ignore {
        /// The ignore file.
        file: PathBuf,
        /// The pattern error.
        source: PatternError,
    },
    /// The tar given as context is malformed or tries to write outside the scratch directory.
    #[error("build context tar: {0}")]
    Tar(String),
}

/// Result of context operations.
pub type Result<T> = std::result::Result<T, ContextError>;

/// A build context: the root directory COPY and ADD read from, and the `.dockerignore` rules that
/// hide part of it.
#[derive(Debug)]
pub struct BuildContext {
    root: PathBuf,
    rules: IgnoreRules,
    ignore_file: Option<PathBuf>,
    memo: hashes::HashMemo,
    memo_dir: Option<PathBuf>,
}

impl BuildContext {
    /// Opens the directory `dir` as the context. The ignore file is `<dockerfile>.dockerignore`
    /// when it exists next to the Dockerfile (BuildKit's per-Dockerfile ignore file wins), else
    /// `<dir>/.dockerignore`, else nothing is ignored.
    pub fn open(dir: &Path, dockerfile: Option<&Path>) -> Result<BuildContext> {
        let root = fs::canonicalize(dir).map_err(|source| ContextError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let meta = fs::metadata(&root).map_err(|source| ContextError::Io {
            path: root.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(ContextError::Io {
                path: root,
                source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            });
        }
        let mut candidates = Vec::new();
        if let Some(df) = dockerfile {
            let mut name = df.as_os_str().to_owned();
            name.push(".dockerignore");
            candidates.push(PathBuf::from(name));
        }
        candidates.push(root.join(".dockerignore"));
        let mut ctx = BuildContext {
            root,
            rules: IgnoreRules::default(),
            ignore_file: None,
            memo: hashes::HashMemo::default(),
            memo_dir: None,
        };
        for c in candidates {
            match fs::read(&c) {
                Ok(bytes) => {
                    let lines = ignore::read_dockerignore(&String::from_utf8_lossy(&bytes));
                    ctx.rules =
                        IgnoreRules::new(&lines).map_err(|source| ContextError::Ignore {
                            file: c.clone(),
                            source,
                        })?;
                    ctx.ignore_file = Some(c);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(ContextError::Io { path: c, source }),
            }
        }
        Ok(ctx)
    }

    /// Extracts a context sent as a tar stream (plain, gzip, bzip2, xz or zstd, as `docker build -`
    /// accepts) into `scratch` and opens it. No entry can land outside `scratch`: `..` and
    /// absolute names are refused, and symlinks already extracted are never followed.
    pub fn from_tar(reader: impl Read, scratch: &Path) -> Result<BuildContext> {
        fs::create_dir_all(scratch).map_err(|source| ContextError::Io {
            path: scratch.to_path_buf(),
            source,
        })?;
        let stream = crate::copy::archive::decompress(reader)
            .map_err(|e| ContextError::Tar(e.to_string()))?;
        untar::extract(stream, scratch).map_err(ContextError::Tar)?;
        BuildContext::open(scratch, None)
    }

    /// Adds a persisted content-hash memo kept in `cache_dir` (created if needed): digests of
    /// unchanged files (same size, mtime, ctime, inode) are then not recomputed across builds.
    pub fn with_hash_cache(mut self, cache_dir: &Path) -> BuildContext {
        self.memo = hashes::HashMemo::load(cache_dir, &self.root);
        self.memo_dir = Some(cache_dir.to_path_buf());
        self
    }

    /// Persists the memo given to [`BuildContext::with_hash_cache`]; a no-op without one.
    pub fn save_hash_cache(&self) -> Result<()> {
        match &self.memo_dir {
            Some(d) => self
                .memo
                .save(d, &self.root)
                .map_err(|source| ContextError::Io {
                    path: d.clone(),
                    source,
                }),
            None => Ok(()),
        }
    }

    /// The context directory (absolute, symlinks resolved).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `.dockerignore` that was read, if any.
    pub fn ignore_file(&self) -> Option<&Path> {
        self.ignore_file.as_deref()
    }

    /// The rules of the ignore file.
    pub fn rules(&self) -> &IgnoreRules {
        &self.rules
    }

    /// Whether `rel` (relative to the root; a leading `/` or `./` is allowed) is excluded by
    /// `.dockerignore`. The root itself is never excluded.
    pub fn is_ignored(&self, rel: &Path) -> bool {
        if self.rules.is_empty() {
            return false;
        }
        let mut parts = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
                Component::ParentDir => {
                    parts.pop();
                }
                _ => {}
            }
        }
        if parts.is_empty() {
            return false;
        }
        self.rules.is_excluded(&parts.join("/"))
    }

    /// The content hash memo (shared by every COPY of the build).
    pub(crate) fn memo(&self) -> &hashes::HashMemo {
        &self.memo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerfile_specific_ignore_wins() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(".dockerignore"), "a\n").unwrap();
        fs::write(d.path().join("Dockerfile.dev"), "FROM scratch\n").unwrap();
        fs::write(d.path().join("Dockerfile.dev.dockerignore"), "b\n").unwrap();
        let ctx = BuildContext::open(d.path(), Some(&d.path().join("Dockerfile.dev"))).unwrap();
        assert!(ctx.is_ignored(Path::new("b")));
        assert!(!ctx.is_ignored(Path::new("a")));
        let ctx = BuildContext::open(d.path(), Some(&d.path().join("Dockerfile"))).unwrap();
        assert!(ctx.is_ignored(Path::new("a")));
        assert!(ctx.is_ignored(Path::new("/a/x")));
        assert!(!ctx.is_ignored(Path::new(".")));
    }

    #[test]
    fn bad_ignore_file_is_an_error_naming_it() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(".dockerignore"), "[a-\n").unwrap();
        let e = BuildContext::open(d.path(), None).unwrap_err().to_string();
        assert!(e.contains(".dockerignore"), "{e}");
    }
}
