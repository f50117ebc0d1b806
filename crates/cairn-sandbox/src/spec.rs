//! What the caller asks to run.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The PATH a process gets when its environment has none (docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One process to run in a container, as a Dockerfile `RUN` or `cairn run` means it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// The argv, exec form: `args[0]` is looked up in the container's PATH when it has no `/`.
    /// The shell form is the caller's job (prefix the SHELL).
    pub args: Vec<String>,
    /// `K=V` entries. PATH defaults to [`DEFAULT_PATH`], HOME to the user's home, HOSTNAME to the
    /// hostname, when absent.
    pub env: Vec<String>,
    /// `name|uid[:group|gid]`, resolved through the image's /etc/passwd and /etc/group; "" = root.
    pub user: String,
    /// Working directory inside the container, created if missing; "" = `/`.
    pub cwd: String,
    /// Hostname of the container's UTS namespace; "" keeps the host's.
    pub hostname: String,
    /// The host's network or a new one with only loopback.
    pub network: Network,
    /// Extra mounts (binds, tmpfs), applied in order of target depth.
    pub mounts: Vec<MountSpec>,
    /// Run on a new pseudo-terminal (`-t`); output arrives as [`OutputStream::Stdout`].
    pub tty: bool,
    /// Give the process the caller's stdin (`-i`); otherwise it reads /dev/null.
    pub stdin: bool,
    /// Keep every capability instead of docker's default set (`RUN --security=insecure`, which a
    /// build grants only with `--allow security.insecure`).
    #[serde(default)]
    pub privileged: bool,
}

/// Network namespace of the process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// Share the host's network namespace (docker's `--network host`, BuildKit's RUN default here).
    #[default]
    Host,
    /// A new network namespace with only loopback, up.
    None,
}

/// A mount that is not part of the image; it never reaches a layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// What is mounted.
    pub kind: MountKind,
    /// Absolute path inside the container, without `..`; resolved inside the rootfs (symlinks in
    /// the image cannot point it outside).
    pub target: String,
}

/// What a [`MountSpec`] mounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    /// A host file or directory (recursive bind).
    Bind {
        /// Host path.
        source: PathBuf,
        /// Mount it read-only.
        readonly: bool,
    },
    /// A fresh tmpfs.
    Tmpfs {
        /// Size limit in bytes; None = the kernel's default (half of RAM).
        size: Option<u64>,
    },
}

/// Which stream a chunk of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// The process's stdout (and everything, with a tty).
    Stdout,
    /// The process's stderr.
    Stderr,
}
