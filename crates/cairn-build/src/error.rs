//! Errors of the build engine.

use std::path::PathBuf;

/// A RUN that exited with a non-zero status: everything the CLI needs to show it as BuildKit
/// does (the step, the last lines of its output, the Dockerfile line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFailure {
    /// Dockerfile name as given (`Dockerfile`, `build/Dockerfile.prod`).
    pub file: String,
    /// 1-based line of the instruction.
    pub line: usize,
    /// Last line of the instruction (continuations, heredocs).
    pub end_line: usize,
    /// The instruction as written.
    pub instruction: String,
    /// The vertex name, `[builder 3/4] RUN go build`.
    pub vertex: String,
    /// The argv that ran.
    pub argv: Vec<String>,
    /// Its exit status.
    pub exit_code: i32,
    /// The last lines of its output.
    pub tail: Vec<String>,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Dockerfile could not be parsed or planned.
    #[error(transparent)]
    Dockerfile(#[from] cairn_dockerfile::Error),
    /// A base image (FROM, --from) is not in the store.
    #[error(
        "base image {reference:?} not found in the store: import it first \
         (`cairn import ROOTFS.tar {reference}` or `cairn load`)"
    )]
    BaseImageNotFound {
        /// The reference as written.
        reference: String,
    },
    /// A RUN failed.
    #[error(
        "process {:?} did not complete successfully: exit code: {}",
        .0.argv.join(" "),
        .0.exit_code
    )]
    RunFailed(Box<RunFailure>),
    /// A step failed for another reason; carries where it is in the Dockerfile.
    #[error("{file}:{line}: {instruction}: {message}")]
    Step {
        /// Dockerfile name.
        file: String,
        /// 1-based line.
        line: usize,
        /// The instruction as written.
        instruction: String,
        /// What went wrong.
        message: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] cairn_store::Error),
    /// The sandbox failed (outside of a RUN's own exit status).
    #[error(transparent)]
    Sandbox(#[from] cairn_sandbox::Error),
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// SIGINT, SIGTERM or SIGHUP arrived (see `cairn_sandbox::kill_containers_on_termination`):
    /// running RUNs were killed and no further step started.
    #[error("build interrupted by signal {signal}")]
    Interrupted {
        /// The signal number.
        signal: i32,
    },
    /// Another stage failed first; this one stopped.
    #[error("cancelled: another stage failed")]
    Cancelled,
    /// Anything else, as a message for the user.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// The process exit code `cairn build` should end with: the failing RUN's, else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::RunFailed(f) if f.exit_code > 0 => f.exit_code,
            Error::Interrupted { signal } => 128 + signal,
            _ => 1,
        }
    }
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
