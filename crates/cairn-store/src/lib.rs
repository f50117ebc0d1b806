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
//! // layers and snapshots
//! store.write_layer(DiffSource, Compression, &WriteOptions) -> Result<LayerDescriptor>  // blob committed
//! store.snapshot(&LayerDescriptor) -> Result<PathBuf>       // unpacked once (UnpackMode::OverlayLower), shared
//! store.snapshots_for(&ImageRecord) -> Result<Vec<PathBuf>> // bottom layer first
//! // images
//! store.commit_image(&oci_spec::image::ImageConfiguration, &[LayerDescriptor], tags: &[String]) -> Result<ImageRecord>
//! store.resolve(reference_or_id_prefix: &str) -> Result<Option<ImageRecord>>
//! store.tag(&ImageRecord or id, reference: &str) -> Result<()>
//! store.list_images() -> Result<Vec<ImageRecord>>
//! ImageRecord { id: Digest /* config digest */, manifest_digest: Digest, config: ImageConfiguration,
//!               layers: Vec<LayerDescriptor>, repo_tags: Vec<String>, size: u64 /* unpacked, as docker */ }
//! // build cache index: key → opaque value bytes, plus the blobs the value keeps alive (for GC)
//! store.cache_get(key: &str) -> Result<Option<Vec<u8>>>
//! store.cache_put(key: &str, value: &[u8], blobs: &[Digest]) -> Result<()>
//! // cache mounts (RUN --mount=type=cache)
//! store.cache_mount_dir(id: &str) -> Result<PathBuf>
//! reference::normalize("alpine") == "docker.io/library/alpine:latest"
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub use cairn_layer::{Digest, LayerDescriptor};

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

/// An open store rooted at a directory.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens the store at `root`, creating the OCI layout if it is missing.
    pub fn open(root: &Path) -> Result<Store> {
        for d in [root.to_path_buf(), root.join("blobs/sha256"), root.join("tmp")] {
            fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        let store = Store {
            root: root.to_path_buf(),
        };
        if !root.join("oci-layout").exists() {
            store.write_atomic(&root.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        if !root.join("index.json").exists() {
            store.write_atomic(
                &root.join("index.json"),
                br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
            )?;
        }
        Ok(store)
    }

    /// The root directory of the store.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes `bytes` to `path` atomically: temp file in the same dir, fsync, rename, fsync dir.
    pub(crate) fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
        ));
        let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, path).map_err(io_err(path))?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))
    }
}
