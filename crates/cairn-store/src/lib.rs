//! The image store: blobs in an OCI image layout, unpacked layer snapshots keyed by diffID,
//! tags and the build cache index in an embedded transactional database, garbage collection.
//!
//! CONTRACT (cairn-build and the CLI are written against it in parallel; add freely, change a
//! signature only together with its callers):
//!
//! ```text
//! Store::open(root: &Path) -> Result<Store>          // creates the layout if missing
//! store::default_root() -> PathBuf                     // /var/lib/cairn as root, else $XDG_DATA_HOME/cairn
//! store.root() -> &Path
//! // blobs
//! store.blob_path(&Digest) -> PathBuf
//! store.has_blob(&Digest) -> bool
//! store.put_blob(bytes: &[u8]) -> Result<Digest>            // atomic
//! store.ingest(reader, expected: Option<&Digest>) -> Result<(Digest, u64)>   // streaming, verified
//! store.read_blob(&Digest) -> Result<Vec<u8>>               // small blobs (configs, manifests)
//! // layers and snapshots
//! store.write_layer(DiffSource, Compression, &WriteOptions) -> Result<LayerDescriptor>  // blob committed
//! store.snapshot(&LayerDescriptor) -> Result<PathBuf>       // unpacked once (UnpackMode::OverlayLower), shared
//! store.snapshots_for(&ImageRecord) -> Result<Vec<PathBuf>> // bottom layer first
//! // images
//! store.commit_image(&oci_spec::image::ImageConfiguration, &[LayerDescriptor], tags: &[String]) -> Result<ImageRecord>
//! store.commit_image_json(&serde_json::Value, &[LayerDescriptor], tags) -> Result<ImageRecord> // keeps docker-only keys
//! store.resolve(reference_or_id_prefix: &str) -> Result<Option<ImageRecord>>
//! store.get(s) -> Result<ImageRecord>                      // resolve, "No such image" if none
//! store.tag(image: &str /* id, ref, prefix */, reference: &str) -> Result<()>
//! store.untag(reference) -> Result<Option<Digest>>, store.delete_image(id) -> Result<()>
//! store.list_images() -> Result<Vec<ImageRecord>>
//! store.config_json(&ImageRecord) -> Result<serde_json::Value>  // the config blob as stored
//! store.manifest_json(&ImageRecord) -> Result<serde_json::Value>
//! store.layer_size(&LayerDescriptor) -> Result<u64>          // docker's size of one layer
//! store.snapshot_path(diff_id) -> PathBuf, store.copy_blob(&Digest, impl Write) -> Result<u64>
//! canonical_json(&Value) -> Vec<u8>                          // sorted keys: configs, manifests
//! ImageRecord { id: Digest /* config digest */, manifest_digest: Digest, config: ImageConfiguration,
//!               layers: Vec<LayerDescriptor>, repo_tags: Vec<String> /* normalised names */,
//!               size: u64 /* unpacked, as docker */, created: Option<String> }
//! // build cache index: key → opaque value bytes, plus the blobs the value keeps alive (for GC)
//! store.cache_get(key: &str) -> Result<Option<Vec<u8>>>
//! store.cache_put(key: &str, value: &[u8], blobs: &[Digest]) -> Result<()>
//! store.cache_entries() -> Result<Vec<CacheEntry { key, value, blobs }>>  // the whole index
//! store.add_repo_digest(id, "host/repo@sha256:…") -> Result<()>  // resolve() finds it; ImageRecord.repo_digests
//! // cache mounts (RUN --mount=type=cache)
//! store.cache_mount_dir(id: &str) -> Result<PathBuf>
//! store.commit_image_raw(config_bytes, &[LayerDescriptor], tags)  // config kept byte for byte
//! store.commit_manifest(manifest_bytes, tags)                // blobs already in the store
//! store.import_layer(reader, Compression) -> Result<LayerDescriptor> // a rootfs tarball as one layer
//! // archives
//! store.save_tar(&[SaveItem], ArchiveFormat::{Docker,Oci}, out), store.save_dir(.., dir)
//! store.load(LoadSource::{Tar(reader), Dir(path)}) -> Result<Vec<Loaded>>
//! // maintenance
//! store.check() -> Result<CheckReport>, store.prune(&PruneOptions) -> Result<PruneReport>
//! reference::normalize("alpine") == Ok("docker.io/library/alpine:latest")
//! reference::familiar("docker.io/library/alpine:latest") == "alpine:latest"
//! reference::Reference::parse(s)? { domain, path, tag, digest }
//! ```
//!
//! Snapshots hold overlay whiteouts (0/0 char devices, `trusted.overlay.opaque`): making one needs
//! root. They are shared: mount them read-only as lowerdirs, never write into them.
//!
//! # On disk
//!
//! ```text
//! ROOT/oci-layout, ROOT/index.json, ROOT/blobs/sha256/<hex>   an OCI image layout
//! ROOT/meta.redb                                              tags, images, layer sizes, cache index
//! ROOT/snapshots/<diffID hex>/                                unpacked layers (overlay lowerdirs)
//! ROOT/snapshots-pending/<diffID hex>                         boot ID, clamp: a snapshot not known on disk
//! ROOT/cache-mounts/<hash of id>/                             RUN --mount=type=cache dirs
//! ROOT/files/<key>                                            big COPY'd files, linked into layers (file_pool)
//! ROOT/tmp/                                                   work in progress; renamed into place
//! ROOT/lock                                                   flock: held shared while a process writes
//! ```
//!
//! `index.json` lists every tagged manifest twice, with `org.opencontainers.image.ref.name` set to
//! the full name (`docker.io/library/alpine:latest`) and to the short one (`alpine:latest`), and
//! every untagged image once without a name. So `skopeo inspect oci:ROOT:alpine:latest` and
//! `umoci unpack --image ROOT:alpine:latest` (skopeo splits `oci:PATH:REF` at the first ':')
//! both find tagged images; the index is regenerated from the database after every change.
//!
//! # Concurrency and crashes
//!
//! Metadata lives in redb, opened in `ConcurrencyMode::MultiWriter`: any number of cairn
//! processes may hold it open, readers never wait, and write transactions are serialised across
//! processes by redb's own file locks. Blobs and snapshots are content-addressed and land by
//! `rename`, so two processes writing the same blob race harmlessly. A snapshot a build adopts from
//! its overlay upper dir is not synced: a marker in `snapshots-pending/` names the boot it was
//! made in, and its first user after a reboot hashes it again, keeping it only if it is whole. `index.json` is written
//! inside the write transaction that changes what it lists and re-derived on open if a crash
//! separated the two. A process that writes holds `ROOT/lock` shared; `prune` deletes recent
//! unreferenced files only if it can take that lock exclusively, otherwise only files older than
//! an hour (so that a concurrent build's not-yet-committed layers survive).

#![warn(missing_docs)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use cairn_layer::{Digest, LayerDescriptor};
pub use oci_spec;

pub mod archive;
mod blobs;
mod cache_mounts;
mod chunks;
mod db;
mod file_pool;
mod gc;
mod images;
mod layout;
pub mod reference;
mod snapshots;
mod tee;

pub use archive::{host_arch, ArchiveFormat, LoadSource, Loaded, SaveItem};
pub use cache_mounts::{BuildCacheUsage, CacheLock, CacheMount, CacheMountInfo, CacheMountsPruned};
pub use file_pool::FilePool;
pub use gc::{CheckReport, PruneOptions, PruneReport};
pub use images::{CacheEntry, ImageRecord};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed on `path`.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The metadata database failed.
    #[error("store database: {0}")]
    Db(String),
    /// The layer codec failed.
    #[error(transparent)]
    Layer(#[from] cairn_layer::Error),
    /// Content did not hash to the digest it was announced with.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The announced digest.
        expected: Digest,
        /// What the content hashes to.
        actual: Digest,
    },
    /// A reference that docker would not accept either.
    #[error("invalid reference format {reference:?}: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// Why it was refused.
        reason: String,
    },
    /// No image matches.
    #[error("No such image: {0}")]
    NotFound(String),
    /// A short ID prefix matches several images.
    #[error("ambiguous image ID prefix {0:?}: it matches several images")]
    Ambiguous(String),
    /// A blob or a stored document does not parse.
    #[error("corrupt {what}: {why}")]
    Corrupt {
        /// Which document.
        what: String,
        /// What is wrong with it.
        why: String,
    },
    /// Anything else, with a message meant for the user.
    #[error("{0}")]
    Other(String),
}

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}

/// The default root: `/var/lib/cairn` as root, `$XDG_DATA_HOME/cairn` (or `~/.local/share/cairn`)
/// otherwise.
pub fn default_root() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/lib/cairn");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("cairn");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".local/share/cairn")
}

/// An open store rooted at a directory. Cheap to open; share one per process.
pub struct Store {
    root: PathBuf,
    db: db::Db,
    /// The shared flock on `ROOT/lock`, taken on the first write: tells `prune` that this
    /// process may hold blobs that nothing references yet.
    in_use: Mutex<Option<fs::File>>,
    /// Where the chunks of the gzip layers written here are, loaded at the first layer write.
    chunks: std::sync::OnceLock<std::sync::Arc<chunks::ChunkIndex>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("root", &self.root).finish()
    }
}

impl Store {
    /// Opens the store at `root`, creating the OCI layout if it is missing.
    pub fn open(root: &Path) -> Result<Store> {
        for d in ["blobs/sha256", "tmp", "snapshots"] {
            let d = root.join(d);
            fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        let db_path = root.join("meta.redb");
        if !db_path.exists() {
            // An OCI layout that cairn did not make (skopeo's, umoci's): opening it as a store
            // would rewrite its index.json from an empty database and drop its names.
            let foreign = fs::read(root.join("index.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .is_some_and(|v| v["manifests"].as_array().is_some_and(|m| !m.is_empty()));
            if foreign {
                return Err(Error::Other(format!(
                    "{} is an OCI layout that is not a cairn store; read it with `cairn load -i {}`",
                    root.display(),
                    root.display()
                )));
            }
        }
        let db = db::Db::open(&db_path)?;
        let store = Store {
            root: root.to_path_buf(),
            db,
            in_use: Mutex::new(None),
            chunks: std::sync::OnceLock::new(),
        };
        if !root.join("oci-layout").exists() {
            write_atomic(
                &root.join("oci-layout"),
                br#"{"imageLayoutVersion":"1.0.0"}"#,
            )?;
        }
        store.ensure_index()?;
        Ok(store)
    }

    /// The root directory of the store.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where builds keep the content hashes of their contexts' files (a memo keyed by path and
    /// stat, so that a rebuild reads only the files that changed): build cache, which the whole
    /// cache's prune removes.
    pub fn context_hash_dir(&self) -> PathBuf {
        self.root.join("build-context")
    }

    /// The directory for temporary files, on the same filesystem as the blobs.
    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Takes the shared "in use" lock once per process (see the crate docs on prune).
    pub(crate) fn mark_in_use(&self) -> Result<()> {
        let mut g = self
            .in_use
            .lock()
            .map_err(|_| Error::Other("store lock poisoned".into()))?;
        if g.is_none() {
            let f = locked_file(
                &self.root.join("lock"),
                rustix::fs::FlockOperation::LockShared,
            )?;
            *g = Some(f);
        }
        Ok(())
    }

    /// A directory for `RUN --mount=type=cache,id=ID`, created on first use and kept across
    /// builds (prune leaves it alone).
    pub fn cache_mount_dir(&self, id: &str) -> Result<PathBuf> {
        let h = cairn_layer::hash::sha256_digest(id.as_bytes());
        let d = self
            .root
            .join("cache-mounts")
            .join(&h["sha256:".len()..][..32]);
        fs::create_dir_all(&d).map_err(io_err(&d))?;
        Ok(d)
    }
}

/// Opens the lock file `p`, creating it if needed and never truncating it (its content does not
/// matter; the `flock` on it does).
pub(crate) fn open_lock_file(p: &Path) -> Result<fs::File> {
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(p)
        .map_err(io_err(p))
}

/// [`open_lock_file`], then `op` on it, waiting for it; the lock goes with the returned file.
pub(crate) fn locked_file(p: &Path, op: rustix::fs::FlockOperation) -> Result<fs::File> {
    let f = open_lock_file(p)?;
    rustix::fs::flock(&f, op).map_err(|e| Error::Io {
        path: p.to_path_buf(),
        source: e.into(),
    })?;
    Ok(f)
}

/// Writes `bytes` to `path` atomically: temp file in the same dir, fsync, rename, fsync dir.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".tmp-{}-{}-{}",
        std::process::id(),
        unique(),
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let res = (|| {
        let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, path).map_err(io_err(path))?;
        sync_dir(dir)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// A process-unique counter for temp names.
pub(crate) fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    (N.fetch_add(1, Ordering::Relaxed) << 32) ^ t
}

/// Canonical JSON: keys sorted at every level, no whitespace. Configs and manifests are
/// serialised this way so that equal content always gives equal digests (oci-spec keeps some
/// maps in `HashMap`s, whose order varies from run to run).
pub fn canonical_json(v: &serde_json::Value) -> Vec<u8> {
    fn sort(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = serde_json::Map::new();
                for k in keys {
                    out.insert(k.clone(), sort(&m[k]));
                }
                serde_json::Value::Object(out)
            }
            serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    // Serialising a Value cannot fail: every key is a string.
    serde_json::to_vec(&sort(v)).unwrap_or_default()
}
