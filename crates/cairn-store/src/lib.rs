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
