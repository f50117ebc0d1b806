//! The sandbox's error type.

use std::io;

/// A sandbox result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while preparing a rootfs or running a process.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call or file operation failed; `context` says what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path involved.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// `USER name` names a user that the image's /etc/passwd does not have.
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    /// `USER x:group` names a group that the image's /etc/group does not have.
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
    /// The process spec is not usable (empty argv, relative or escaping mount target, ...).
    #[error("invalid process spec: {0}")]
    InvalidSpec(String),
    /// The container could not be set up (mounts, namespaces, pivot_root) before the command ran.
    #[error("container setup failed: {0}")]
    Setup(String),
    /// The command could not be started: not found (code 127) or not executable (code 126).
    /// `code` is what a shell or docker would exit with.
    #[error("{message}")]
    Exec {
        /// Docker-style message, e.g. `exec: "foo": executable file not found in $PATH`.
        message: String,
        /// 127 for not found, 126 for not executable or another exec failure.
        code: i32,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Adds context to `io::Result`s.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}
