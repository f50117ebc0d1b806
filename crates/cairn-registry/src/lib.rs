//! OCI distribution client: pull images into the cairn store and push them out, with docker's
//! name normalisation, credentials (`~/.docker/config.json`, credential helpers), bearer-token
//! and basic auth, manifest lists / OCI indexes with platform selection, and every blob verified
//! against its digest while it streams.
//!
//! ```no_run
//! # fn main() -> Result<(), cairn_registry::Error> {
//! let store = cairn_store::Store::open(std::path::Path::new("/var/lib/cairn")).unwrap();
//! let opts = cairn_registry::PullOptions::default();
//! let image = cairn_registry::pull(&store, "127.0.0.1:5000/busybox", &opts)?;
//! let digest = cairn_registry::push(&store, "127.0.0.1:5000/busybox", "127.0.0.1:5000/copy:v1",
//!                                   &cairn_registry::PushOptions::default())?;
//! # Ok(()) }
//! ```
//!
//! Everything here is blocking and runs its network I/O on threads of its own, so it may be
//! called from any thread, including one that drives an async runtime (it then blocks it).

#![deny(missing_docs)]

pub mod auth;
mod cache;
mod client;
pub mod manifest;
mod pull;
mod push;
pub mod reference;
mod sources;

use std::path::PathBuf;
use std::sync::Arc;

pub use auth::Credential;
pub use cache::{
    pull_cache, push_cache, CacheEntry, CACHE_ARTIFACT_TYPE, CACHE_CONFIG_MEDIA_TYPE,
    INLINE_CACHE_KEY,
};
pub use manifest::Platform;
pub use pull::{pull, pull_if_missing};
pub use push::push;
pub use reference::Reference;

/// Errors of registry operations. Messages are meant for the user as they are.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The reference does not parse.
    #[error("invalid reference {reference:?}: {reason}")]
    InvalidReference {
        /// What was given.
        reference: String,
        /// Why it is wrong.
        reason: String,
    },
    /// The registry could not be reached or the connection broke (after retries).
    #[error("{0}")]
    Transport(String),
    /// Authentication failed or is required.
    #[error("{registry}: unauthorized: {message}")]
    Unauthorized {
        /// Registry name.
        registry: String,
        /// What the registry or cairn says.
        message: String,
    },
    /// The registry has no such manifest, blob or repository.
    #[error("{what}: not found: {message}")]
    NotFound {
        /// What was asked for.
        what: String,
        /// What the registry said.
        message: String,
    },
    /// Content did not hash to the digest that named it; nothing was stored.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The blob or manifest.
        what: String,
        /// The digest that named it.
        expected: String,
        /// What the bytes hash to (or a size note).
        actual: String,
    },
    /// Any other answer of the registry.
    #[error("{registry}: {what}: HTTP {status}: {message}")]
    Registry {
        /// Registry name.
        registry: String,
        /// HTTP status code.
        status: u16,
        /// What was asked for.
        what: String,
        /// What the registry said.
        message: String,
    },
    /// No index entry for the requested platform.
    #[error("no image for platform {platform} (available: {available})")]
    NoPlatform {
        /// The requested platform.
        platform: String,
        /// What the index offers.
        available: String,
    },
    /// A format cairn does not handle.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Malformed data from the registry or the store.
    #[error("{0}")]
    Invalid(String),
    /// Reading or writing credentials.
    #[error("credentials: {0}")]
    Credentials(String),
    /// The image store failed.
    #[error(transparent)]
    Store(#[from] cairn_store::Error),
    /// A local file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Something happening during a pull or push, for the CLI to render (the library never prints).
/// Blob digests are full `sha256:…`; docker shows the first 12 hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The manifest was found: `TAG: Pulling from REPO`.
    PullingFrom {
        /// Tag or digest asked for.
        tag: String,
        /// Repository path.
        repository: String,
    },
    /// A blob is already in the store (pull) or the registry (push).
    AlreadyExists {
        /// Blob digest.
        digest: String,
    },
    /// A layer will be fetched.
    Waiting {
        /// Blob digest.
        digest: String,
    },
    /// Bytes of a blob arrived or left.
    Progress {
        /// Blob digest.
        digest: String,
        /// Bytes so far.
        current: u64,
        /// Total bytes.
        total: u64,
    },
    /// A transfer failed transiently and starts again.
    Retrying {
        /// Blob digest.
        digest: String,
        /// Attempt number (1 for the first retry).
        attempt: u32,
        /// What went wrong.
        error: String,
    },
    /// A pulled blob was verified and is in the store.
    PullComplete {
        /// Blob digest.
        digest: String,
    },
    /// The pulled image's manifest digest (of the index when the tag names one).
    Digest {
        /// `sha256:…`.
        digest: String,
    },
    /// The pull is over; `downloaded` is false when the store already had everything
    /// (`Status: Image is up to date`).
    PullFinished {
        /// Whether any blob was fetched.
        downloaded: bool,
    },
    /// A pushed blob was linked from another repository of the registry.
    Mounted {
        /// Blob digest.
        digest: String,
        /// Source repository.
        from: String,
    },
    /// A blob was uploaded.
    Pushed {
        /// Blob digest.
        digest: String,
    },
    /// The manifest was pushed: `TAG: digest: DIGEST size: N`.
    ManifestPushed {
        /// Tag (or digest) pushed.
        tag: String,
        /// Manifest digest.
        digest: String,
        /// Manifest size.
        size: u64,
    },
}

/// Receives progress events, from several threads at once.
pub type ProgressFn = Arc<dyn Fn(&Event) + Send + Sync>;

/// Settings shared by every registry operation.
#[derive(Clone)]
pub struct RegistryOptions {
    /// Registries (`host[:port]`) where TLS is not verified and plain http is allowed.
    /// Loopback hosts always allow http. `*` allows it everywhere.
    pub insecure_registries: Vec<String>,
    /// Extra PEM files of trusted certificate authorities.
    pub ca_files: Vec<PathBuf>,
    /// Directories laid out like docker's `/etc/docker/certs.d`: the `*.crt` files in
    /// `DIR/<host[:port]>/` are trusted for that registry only.
    pub certs_dirs: Vec<PathBuf>,
    /// The docker configuration file with credentials.
    pub docker_config: PathBuf,
    /// Credentials to use instead of looking them up.
    pub credential: Option<Credential>,
    /// How many times a failed request is tried again (with exponential backoff).
    pub retries: u32,
    /// Blobs transferred at the same time.
    pub max_concurrent: usize,
    /// Where events go; `None` drops them.
    pub progress: Option<ProgressFn>,
}

impl std::fmt::Debug for RegistryOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryOptions")
            .field("insecure_registries", &self.insecure_registries)
            .field("ca_files", &self.ca_files)
            .field("certs_dirs", &self.certs_dirs)
            .field("docker_config", &self.docker_config)
            .field("credential", &self.credential)
            .field("retries", &self.retries)
            .field("max_concurrent", &self.max_concurrent)
            .finish_non_exhaustive()
    }
}

impl Default for RegistryOptions {
    /// Defaults plus the environment: `CAIRN_INSECURE_REGISTRIES` (comma or space separated
    /// hosts) and `CAIRN_REGISTRY_CA` (colon-separated PEM files).
    fn default() -> Self {
        let insecure = std::env::var("CAIRN_INSECURE_REGISTRIES").unwrap_or_default();
        let ca = std::env::var_os("CAIRN_REGISTRY_CA").unwrap_or_default();
        RegistryOptions {
            insecure_registries: insecure
                .split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(reference::normalize_server)
                .collect(),
            ca_files: std::env::split_paths(&ca)
                .filter(|p| !p.as_os_str().is_empty())
                .collect(),
            certs_dirs: vec![
                PathBuf::from("/etc/docker/certs.d"),
                PathBuf::from("/etc/containers/certs.d"),
            ],
            docker_config: auth::docker_config_path(),
            credential: None,
            retries: 3,
            max_concurrent: 3,
            progress: None,
        }
    }
}

impl RegistryOptions {
    /// Whether the user allowed plain http / unverified TLS for `registry`.
    pub fn is_insecure(&self, registry: &str) -> bool {
        let r = reference::normalize_server(registry);
        self.insecure_registries
            .iter()
            .any(|h| h == "*" || *h == r || r.split(':').next() == Some(h.as_str()))
    }

    pub(crate) fn emit(&self, e: Event) {
        if let Some(p) = &self.progress {
            p(&e);
        }
    }

    /// The credentials for `registry`: the explicit ones, else docker's configuration.
    pub fn credential_for(&self, registry: &str) -> Result<Option<Credential>> {
        match &self.credential {
            Some(c) => Ok(Some(c.clone())),
            None => auth::lookup(&self.docker_config, registry),
        }
    }
}

/// Options of [`pull`].
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Connection, credentials, progress.
    pub registry: RegistryOptions,
    /// Platform to select from an index; the host's when `None`.
    pub platform: Option<Platform>,
}

/// Options of [`push`].
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Connection, credentials, progress.
    pub registry: RegistryOptions,
    /// Upload blobs in PATCH chunks of this many bytes instead of one PUT.
    pub chunk_size: Option<u64>,
}

/// Checks `username`/`password` against `server` and saves them in the docker configuration
/// (through its credential helper if one is configured).
pub fn login(server: &str, username: &str, password: &str, opts: &RegistryOptions) -> Result<()> {
    let registry = reference::normalize_server(server);
    let cred = Credential::UserPassword {
        username: username.to_string(),
        password: password.to_string(),
    };
    off_runtime(|| client::Client::new(&registry, Vec::new(), Some(cred), opts)?.check())?;
    auth::store(&opts.docker_config, &registry, username, password)
}

/// Removes the saved credentials of `server`; false if there were none.
pub fn logout(server: &str, opts: &RegistryOptions) -> Result<bool> {
    auth::erase(&opts.docker_config, &reference::normalize_server(server))
}

/// Runs `f` on a thread of its own: reqwest's blocking client panics when it is created or
/// dropped on a thread that drives an async runtime, and callers (the build engine) may be one.
pub(crate) fn off_runtime<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| s.spawn(f).join())
        .unwrap_or_else(|_| Err(Error::Transport("a registry thread panicked".into())))
}

/// Runs `f` on every item with `workers` threads; the first error stops the others from taking
/// new items and is returned.
pub(crate) fn for_each_parallel<T: Send>(
    items: Vec<T>,
    workers: usize,
    f: impl Fn(T) -> Result<()> + Sync,
) -> Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    let mut items = items;
    items.reverse();
    let queue = Mutex::new(items);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers.max(1) {
            s.spawn(|| {
                while !failed.load(Ordering::SeqCst) {
                    let Some(item) = queue.lock().ok().and_then(|mut q| q.pop()) else {
                        return;
                    };
                    if let Err(e) = f(item) {
                        failed.store(true, Ordering::SeqCst);
                        if let Ok(mut fe) = first_error.lock() {
                            fe.get_or_insert(e);
                        }
                        return;
                    }
                }
            });
        }
    });
    match first_error.into_inner().ok().flatten() {
        Some(e) => Err(e),
        None if failed.load(Ordering::SeqCst) => {
            Err(Error::Transport("a transfer thread failed".into()))
        }
        None => Ok(()),
    }
}

/// `sha256:<hex>` of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}
