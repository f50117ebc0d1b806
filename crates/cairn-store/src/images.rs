//! Images: commit, resolve, tag, list, delete; and layer bookkeeping.

use crate::blobs::{check_digest, unbuffer, WritebackFile};
use crate::db::{dbe, CACHE, CACHE_BLOBS, CACHE_SNAPSHOTS, IMAGES, LAYERS, REPO_DIGESTS, TAGS};
use crate::layout::MANIFEST_MEDIA_TYPE;
use crate::reference::{self, Reference};
use crate::{canonical_json, Digest, Error, LayerDescriptor, Result, Store};
use cairn_layer::{Compression, DiffSource, WriteOptions};
use oci_spec::image::ImageConfiguration;
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::io;

/// Media type of the image configs cairn writes.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// What the database keeps per image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ImageMeta {
    pub manifest_digest: Digest,
    pub manifest_size: u64,
    /// None for records written before the field existed: the OCI manifest type.
    #[serde(default)]
    pub manifest_media_type: Option<String>,
    pub layers: Vec<LayerDescriptor>,
    pub size: u64,
    pub created: Option<String>,
}

/// What the database keeps per layer blob.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LayerInfo {
    pub diff_id: Digest,
    /// docker's size of the layer, which depends on where the layer came from as it does in
    /// docker: regular file bytes only for a layer a build wrote (BuildKit's layers, see
    /// `cairn_layer::WriteStats::content_size`), regular file bytes + symlink target lengths for
    /// one imported, loaded or pulled (`cairn_layer::UnpackStats::bytes`). Hardlinks count once.
    pub content_size: u64,
    pub tar_size: u64,
}

/// One entry of the build cache index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// The cache key.
    pub key: String,
    /// The value, opaque to the store.
    pub value: Vec<u8>,
    /// The blobs the value keeps alive.
    pub blobs: Vec<Digest>,
}

/// An image in the store.
#[derive(Debug, Clone)]
pub struct ImageRecord {
    /// The image ID: digest of the config blob.
    pub id: Digest,
    /// Digest of the OCI manifest.
    pub manifest_digest: Digest,
    /// The parsed config (docker-only keys such as Healthcheck are in [`Store::config_json`]).
    pub config: ImageConfiguration,
    /// Layer blobs, bottom first.
    pub layers: Vec<LayerDescriptor>,
    /// Normalised references (`docker.io/library/alpine:latest`), sorted; use
    /// [`reference::familiar`] to show them as docker does.
    pub repo_tags: Vec<String>,
    /// Digests registries served it under (`docker.io/library/alpine@sha256:…`), sorted; see
    /// [`Store::add_repo_digest`].
    pub repo_digests: Vec<String>,
    /// Sum of the layers' unpacked sizes, as `docker images` reports.
    pub size: u64,
    /// The config's `created` (RFC 3339), if any.
    pub created: Option<String>,
}

/// The typed view of a config. oci-spec requires keys that some foreign configs lack (old
/// docker-archives without `architecture`): such an image must still list, inspect and run, so
/// the missing parts default (the raw JSON stays available through [`Store::config_json`]).
fn parse_config(v: Value) -> ImageConfiguration {
    if let Ok(c) = serde_json::from_value::<ImageConfiguration>(v.clone()) {
        return c;
    }
    let mut base = serde_json::to_value(ImageConfiguration::default()).unwrap_or_default();
    if let (Some(b), Some(o)) = (base.as_object_mut(), v.as_object()) {
        for (k, x) in o {
            let mut trial = b.clone();
            trial.insert(k.clone(), x.clone());
            // Keep each key only if the typed config still accepts it.
            if serde_json::from_value::<ImageConfiguration>(Value::Object(trial.clone())).is_ok() {
                *b = trial;
            }
        }
    }
    serde_json::from_value(base).unwrap_or_default()
}

impl Store {
    /// Writes a layer from `source` into the store and records its sizes. The blob is committed
    /// (fsynced, renamed into place) when this returns. A gzip layer reuses the compressed
    /// chunks of the layers written before it where their input is the same (same bytes as
    /// compressing them again; see `cairn_layer::ChunkCache`), unless `opts` brings its own
    /// cache.
    pub fn write_layer(
        &self,
        source: DiffSource<'_>,
        compression: Compression,
        opts: &WriteOptions,
    ) -> Result<LayerDescriptor> {
        let mut opts = opts.clone();
        let index = (compression == Compression::Gzip && opts.chunk_cache.is_none()).then(|| {
            let index = self
                .chunks
                .get_or_init(|| std::sync::Arc::new(crate::chunks::ChunkIndex::load(&self.root)))
                .clone();
            opts.chunk_cache = Some(index.clone());
            index
        });
        let mut records = Vec::new();
        let desc = self.layer_blob("layer", |w| {
            let (desc, stats) = cairn_layer::write_layer_with_stats(source, compression, &opts, w)?;
            records = stats.gzip_chunks;
            Ok((desc, stats.content_size, stats.tar_size))
        })?;
        if let Some(index) = index {
            // Only a cache: a failure to record costs a later layer time, nothing else.
            let _ = index.add(&desc.digest, &records);
        }
        Ok(desc)
    }

    /// Writes a layer blob with `write` (which gives back the descriptor, the content size and
    /// the tar size), commits it (fsynced, renamed into place) and records its sizes.
    fn layer_blob(
        &self,
        what: &str,
        write: impl FnOnce(&mut io::BufWriter<WritebackFile>) -> Result<(LayerDescriptor, u64, u64)>,
    ) -> Result<LayerDescriptor> {
        self.mark_in_use()?;
        let (tmp, mut w) = self.blob_writer(what)?;
        let (desc, content_size, tar_size) = write(&mut w)?;
        let file = unbuffer(w, &tmp)?;
        self.persist_blob(tmp, file, &desc.digest)?;
        self.record_layer(
            &desc.digest,
            &LayerInfo {
                diff_id: desc.diff_id.clone(),
                content_size,
                tar_size,
            },
        )?;
        Ok(desc)
    }

    pub(crate) fn record_layer(&self, digest: &Digest, info: &LayerInfo) -> Result<()> {
        let w = self.db.begin_write()?;
        {
            let mut t = w.open_table(LAYERS).map_err(dbe)?;
            let v = serde_json::to_vec(info).map_err(|e| Error::Other(e.to_string()))?;
            t.insert(digest.as_str(), &v[..]).map_err(dbe)?;
        }
        w.commit().map_err(dbe)
    }

    pub(crate) fn layer_info(&self, digest: &Digest) -> Result<Option<LayerInfo>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(LAYERS).map_err(dbe)?;
        let v = t.get(digest.as_str()).map_err(dbe)?;
        Ok(v.and_then(|v| serde_json::from_slice(v.value()).ok()))
    }

    /// Sizes and diffID of a layer blob, measured (by reading it once) if not yet known; the
    /// measured diffID must match `desc.diff_id`.
    pub fn layer_size(&self, desc: &LayerDescriptor) -> Result<u64> {
        Ok(self.layer_info_or_measure(desc)?.content_size)
    }

    pub(crate) fn layer_info_or_measure(&self, desc: &LayerDescriptor) -> Result<LayerInfo> {
        if let Some(i) = self.layer_info(&desc.digest)? {
            if i.diff_id != desc.diff_id {
                return Err(Error::DigestMismatch {
                    expected: desc.diff_id.clone(),
                    actual: i.diff_id,
                });
            }
            return Ok(i);
        }
        check_digest(&desc.digest)?;
        let p = self.blob_path(&desc.digest);
        let f = std::fs::File::open(&p).map_err(crate::io_err(&p))?;
        let stats = cairn_layer::measure_layer(io::BufReader::with_capacity(256 * 1024, f))?;
        if stats.diff_id != desc.diff_id {
            return Err(Error::DigestMismatch {
                expected: desc.diff_id.clone(),
                actual: stats.diff_id,
            });
        }
        let info = LayerInfo {
            diff_id: stats.diff_id,
            content_size: stats.bytes,
            tar_size: stats.tar_size,
        };
        self.record_layer(&desc.digest, &info)?;
        Ok(info)
    }

    /// Commits an image whose config is an oci-spec value (see [`Store::commit_image_json`]).
    pub fn commit_image(
        &self,
        config: &ImageConfiguration,
        layers: &[LayerDescriptor],
        tags: &[String],
    ) -> Result<ImageRecord> {
        let v = serde_json::to_value(config).map_err(|e| Error::Other(e.to_string()))?;
        self.commit_image_json(&v, layers, tags)
    }

    /// Commits an image: writes the config (canonical JSON, `rootfs.diff_ids` filled in from
    /// `layers` if empty, checked against them otherwise) and an OCI manifest, records the image
    /// and points `tags` at it, all in one transaction. The layer blobs must be in the store.
    /// Takes a JSON config so that docker-only keys (Healthcheck, OnBuild, Shell) survive.
    pub fn commit_image_json(
        &self,
        config: &Value,
        layers: &[LayerDescriptor],
        tags: &[String],
    ) -> Result<ImageRecord> {
        self.mark_in_use()?;
        let mut config = config.clone();
        let obj = config
            .as_object_mut()
            .ok_or_else(|| Error::Other("image config must be a JSON object".into()))?;
        let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
        let given: Vec<String> = obj
            .get("rootfs")
            .and_then(|r| r.get("diff_ids"))
            .and_then(|d| serde_json::from_value(d.clone()).ok())
            .unwrap_or_default();
        if given.is_empty() {
            obj.insert(
                "rootfs".into(),
                json!({ "type": "layers", "diff_ids": diff_ids }),
            );
        } else if given != diff_ids {
            return Err(Error::Other(format!(
                "config rootfs.diff_ids {given:?} do not match the layers {diff_ids:?}"
            )));
        }
        let config_bytes = canonical_json(&config);
        self.commit_image_raw(&config_bytes, layers, tags)
    }

    /// Commits an image whose config is given as bytes, stored exactly as they are (so a loaded
    /// image keeps its ID). `rootfs.diff_ids` in the config must match `layers`. An OCI manifest
    /// is generated (canonical JSON).
    pub fn commit_image_raw(
        &self,
        config_bytes: &[u8],
        layers: &[LayerDescriptor],
        tags: &[String],
    ) -> Result<ImageRecord> {
        self.mark_in_use()?;
        let config: Value = serde_json::from_slice(config_bytes).map_err(|e| Error::Corrupt {
            what: "image config".into(),
            why: e.to_string(),
        })?;
        let given: Vec<String> =
            serde_json::from_value(config["rootfs"]["diff_ids"].clone()).unwrap_or_default();
        let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
        if given != diff_ids {
            return Err(Error::Other(format!(
                "config rootfs.diff_ids {given:?} do not match the layers {diff_ids:?}"
            )));
        }
        let id = self.put_blob(config_bytes)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": { "mediaType": CONFIG_MEDIA_TYPE, "digest": id, "size": config_bytes.len() },
            "layers": layers.iter().map(|l| json!({
                "mediaType": l.media_type, "digest": l.digest, "size": l.size,
            })).collect::<Vec<_>>(),
        });
        let manifest_bytes = canonical_json(&manifest);
        self.commit_record(
            &id,
            &config,
            &manifest_bytes,
            MANIFEST_MEDIA_TYPE,
            layers,
            tags,
        )
    }

    /// Commits an image from a manifest (OCI or docker schema 2) whose config and layer blobs
    /// are already in the store; the manifest and config keep their bytes, hence their digests.
    pub fn commit_manifest(&self, manifest_bytes: &[u8], tags: &[String]) -> Result<ImageRecord> {
        self.mark_in_use()?;
        let corrupt = |why: String| Error::Corrupt {
            what: "manifest".into(),
            why,
        };
        let m: Value =
            serde_json::from_slice(manifest_bytes).map_err(|e| corrupt(e.to_string()))?;
        let id = m["config"]["digest"]
            .as_str()
            .ok_or_else(|| corrupt("no config digest".into()))?
            .to_string();
        check_digest(&id)?;
        let config: Value =
            serde_json::from_slice(&self.read_blob(&id)?).map_err(|e| Error::Corrupt {
                what: format!("config {id}"),
                why: e.to_string(),
            })?;
        let diff_ids: Vec<String> = serde_json::from_value(config["rootfs"]["diff_ids"].clone())
            .map_err(|_| Error::Corrupt {
                what: format!("config {id}"),
                why: "no rootfs.diff_ids".into(),
            })?;
        let ls = m["layers"].as_array().cloned().unwrap_or_default();
        if ls.len() != diff_ids.len() {
            return Err(corrupt(
                "the manifest and the config disagree on the number of layers".into(),
            ));
        }
        let mut layers = Vec::new();
        for (l, diff_id) in ls.iter().zip(diff_ids) {
            layers.push(LayerDescriptor {
                digest: l["digest"]
                    .as_str()
                    .ok_or_else(|| corrupt("layer without digest".into()))?
                    .to_string(),
                diff_id,
                size: l["size"].as_u64().unwrap_or(0),
                media_type: l["mediaType"]
                    .as_str()
                    .unwrap_or(cairn_layer::media_type(Compression::Gzip))
                    .to_string(),
            });
        }
        let mt = m["mediaType"]
            .as_str()
            .unwrap_or(MANIFEST_MEDIA_TYPE)
            .to_string();
        self.commit_record(&id, &config, manifest_bytes, &mt, &layers, tags)
    }

    fn commit_record(
        &self,
        id: &Digest,
        config: &Value,
        manifest_bytes: &[u8],
        manifest_media_type: &str,
        layers: &[LayerDescriptor],
        tags: &[String],
    ) -> Result<ImageRecord> {
        let normalized: Vec<String> = tags
            .iter()
            .map(|t| reference::normalize(t))
            .collect::<Result<_>>()?;
        let mut size = 0;
        for l in layers {
            if !self.has_blob(&l.digest) {
                return Err(Error::Other(format!(
                    "layer blob {} is not in the store",
                    l.digest
                )));
            }
            size += self.layer_info_or_measure(l)?.content_size;
        }
        let created = config["created"].as_str().map(str::to_string);
        let manifest_digest = self.put_blob(manifest_bytes)?;
        let meta = ImageMeta {
            manifest_digest: manifest_digest.clone(),
            manifest_size: manifest_bytes.len() as u64,
            manifest_media_type: Some(manifest_media_type.to_string()),
            layers: layers.to_vec(),
            size,
            created: created.clone(),
        };
        let w = self.db.begin_write()?;
        {
            let mut images = w.open_table(IMAGES).map_err(dbe)?;
            let v = serde_json::to_vec(&meta).map_err(|e| Error::Other(e.to_string()))?;
            images.insert(id.as_str(), &v[..]).map_err(dbe)?;
            let mut t = w.open_table(TAGS).map_err(dbe)?;
            for n in &normalized {
                t.insert(n.as_str(), id.as_str()).map_err(dbe)?;
            }
        }
        self.write_index(&w)?;
        w.commit().map_err(dbe)?;
        let config = parse_config(config.clone());
        let mut repo_tags = self.tags_of(id)?;
        repo_tags.sort();
        Ok(ImageRecord {
            id: id.clone(),
            manifest_digest,
            config,
            layers: meta.layers,
            repo_tags,
            repo_digests: self.repo_digests_of(id)?,
            size,
            created,
        })
    }

    /// Turns a tar (plain/gzip/zstd/xz; e.g. a rootfs tarball) into a layer blob, keeping its
    /// entries as they are (so the same tarball gives the same diffID), refusing entries that
    /// escape the root. Records the layer's sizes.
    ///
    /// As root, the layer's snapshot is unpacked from the same bytes on a second thread while the
    /// blob is written (docker unpacks on load too): a first build from the image finds it ready,
    /// and the import still reads its input once. If that unpack fails, the snapshot is simply
    /// made later, from the blob, when first used.
    pub fn import_layer(
        &self,
        reader: impl io::Read,
        compression: Compression,
    ) -> Result<LayerDescriptor> {
        let transcode = |r: &mut dyn io::Read, w: &mut io::BufWriter<WritebackFile>| {
            let (desc, stats) = cairn_layer::transcode_layer(r, compression, w)?;
            Ok((desc, stats.bytes, stats.tar_size))
        };
        let mut reader = reader;
        if !rustix::process::geteuid().is_root() {
            return self.layer_blob("import", |w| transcode(&mut reader, w));
        }
        let tmp = self.snapshot_tmp()?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(32);
        let (desc, unpacked) = std::thread::scope(|s| {
            let unpacker = s.spawn(|| {
                let mut r = crate::tee::ChannelReader::new(rx);
                let res = cairn_layer::unpack_layer(
                    io::BufReader::with_capacity(256 * 1024, &mut r),
                    &tmp,
                    cairn_layer::UnpackMode::OverlayLower,
                );
                r.drain();
                res
            });
            let mut tee = crate::tee::TeeReader::new(&mut reader, tx);
            let desc = self.layer_blob("import", |w| {
                let out = transcode(&mut tee, w)?;
                tee.finish()
                    .map_err(|e| Error::Other(format!("reading the import: {e}")))?;
                Ok(out)
            });
            (desc, unpacker.join())
        });
        match (&desc, unpacked) {
            (Ok(d), Ok(Ok(stats))) => {
                // A snapshot that cannot be adopted is made later from the blob.
                let _ = self.adopt_snapshot(&tmp, &d.diff_id, &stats.diff_id);
            }
            _ => {
                let _ = std::fs::remove_dir_all(&tmp);
            }
        }
        desc
    }

    /// The repository digests of image `id`, sorted.
    fn repo_digests_of(&self, id: &str) -> Result<Vec<String>> {
        self.keys_naming(REPO_DIGESTS, id)
    }

    /// Records that a registry served image `id` as `repo_digest` (`host/repo@sha256:…`, the
    /// digest of the manifest or of the index the tag named), so that `resolve` of that
    /// reference finds it and inspect lists it in RepoDigests.
    pub fn add_repo_digest(&self, id: &str, repo_digest: &str) -> Result<()> {
        self.mark_in_use()?;
        let r = Reference::parse(repo_digest)?;
        let Some(digest) = &r.digest else {
            return Err(Error::InvalidReference {
                reference: repo_digest.to_string(),
                reason: "a repository digest needs @sha256:…".into(),
            });
        };
        // Without the tag: `name:tag@digest` and `name@digest` are the same repository digest.
        let key = format!("{}@{digest}", r.repository());
        let w = self.db.begin_write()?;
        {
            if w.open_table(IMAGES)
                .map_err(dbe)?
                .get(id)
                .map_err(dbe)?
                .is_none()
            {
                return Err(Error::NotFound(id.to_string()));
            }
            w.open_table(REPO_DIGESTS)
                .map_err(dbe)?
                .insert(key.as_str(), id)
                .map_err(dbe)?;
        }
        w.commit().map_err(dbe)
    }

    /// Every entry of the build cache index, sorted by key: what exporting the whole cache
    /// sends.
    pub fn cache_entries(&self) -> Result<Vec<CacheEntry>> {
        let snapshot_only: HashSet<String> = self
            .cache_snapshot_lists()?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let r = self.db.begin_read()?;
        let values = r.open_table(CACHE).map_err(dbe)?;
        let blobs = r.open_table(CACHE_BLOBS).map_err(dbe)?;
        let mut out = Vec::new();
        for row in values.iter().map_err(dbe)? {
            let (k, v) = row.map_err(dbe)?;
            let key = k.value().to_string();
            // Its layer has no blob to send.
            if snapshot_only.contains(&key) {
                continue;
            }
            let b = match blobs.get(key.as_str()).map_err(dbe)? {
                Some(b) => serde_json::from_slice(b.value()).map_err(|e| Error::Corrupt {
                    what: format!("cache entry {key}"),
                    why: e.to_string(),
                })?,
                None => Vec::new(),
            };
            out.push(CacheEntry {
                key,
                value: v.value().to_vec(),
                blobs: b,
            });
        }
        Ok(out)
    }

    fn tags_of(&self, id: &str) -> Result<Vec<String>> {
        self.keys_naming(TAGS, id)
    }

    /// The keys of `table` (name → image ID) whose value is `id`, in key order.
    fn keys_naming(&self, table: TableDefinition<&str, &str>, id: &str) -> Result<Vec<String>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(table).map_err(dbe)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(dbe)? {
            let (k, v) = row.map_err(dbe)?;
            if v.value() == id {
                out.push(k.value().to_string());
            }
        }
        Ok(out)
    }

    fn record(&self, id: &str, meta: ImageMeta, repo_tags: Vec<String>) -> Result<ImageRecord> {
        let bytes = self.read_blob(&id.to_string())?;
        let config: Value = serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
            what: format!("config {id}"),
            why: e.to_string(),
        })?;
        let config = parse_config(config);
        Ok(ImageRecord {
            id: id.to_string(),
            manifest_digest: meta.manifest_digest,
            config,
            layers: meta.layers,
            repo_tags,
            repo_digests: self.repo_digests_of(id)?,
            size: meta.size,
            created: meta.created,
        })
    }

    /// The config blob of an image as stored, with docker's keys as written.
    pub fn config_json(&self, image: &ImageRecord) -> Result<Value> {
        let bytes = self.read_blob(&image.id)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
            what: format!("config {}", image.id),
            why: e.to_string(),
        })
    }

    /// The manifest blob of an image as stored.
    pub fn manifest_json(&self, image: &ImageRecord) -> Result<Value> {
        let bytes = self.read_blob(&image.manifest_digest)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
            what: format!("manifest {}", image.manifest_digest),
            why: e.to_string(),
        })
    }

    /// Every image, with its tags, sorted by ID.
    pub fn list_images(&self) -> Result<Vec<ImageRecord>> {
        let (metas, tags) = self.read_all()?;
        let mut by_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (t, id) in tags {
            by_id.entry(id).or_default().push(t);
        }
        let mut out = Vec::new();
        for (id, meta) in metas {
            let mut t = by_id.remove(&id).unwrap_or_default();
            t.sort();
            out.push(self.record(&id, meta, t)?);
        }
        Ok(out)
    }

    pub(crate) fn read_all(
        &self,
    ) -> Result<(BTreeMap<String, ImageMeta>, BTreeMap<String, String>)> {
        let r = self.db.begin_read()?;
        let images = r.open_table(IMAGES).map_err(dbe)?;
        let mut metas = BTreeMap::new();
        for row in images.iter().map_err(dbe)? {
            let (k, v) = row.map_err(dbe)?;
            let meta: ImageMeta =
                serde_json::from_slice(v.value()).map_err(|e| Error::Corrupt {
                    what: format!("image record {}", k.value()),
                    why: e.to_string(),
                })?;
            metas.insert(k.value().to_string(), meta);
        }
        let t = r.open_table(TAGS).map_err(dbe)?;
        let mut tags = BTreeMap::new();
        for row in t.iter().map_err(dbe)? {
            let (k, v) = row.map_err(dbe)?;
            tags.insert(k.value().to_string(), v.value().to_string());
        }
        Ok((metas, tags))
    }

    /// Finds an image by reference (`alpine`, `alpine:3`, `x@sha256:…` by manifest digest), by
    /// full ID (`sha256:…`) or by a unique ID prefix (`3fa1c`, `sha256:3fa1c`), as docker does.
    pub fn resolve(&self, s: &str) -> Result<Option<ImageRecord>> {
        let (metas, tags) = self.read_all()?;
        let found = |id: &str| -> Result<Option<ImageRecord>> {
            let Some(meta) = metas.get(id) else {
                return Ok(None);
            };
            let mut t: Vec<String> = tags
                .iter()
                .filter(|(_, v)| *v == id)
                .map(|(k, _)| k.clone())
                .collect();
            t.sort();
            self.record(id, meta.clone(), t).map(Some)
        };
        if check_digest(s).is_ok() && metas.contains_key(s) {
            return found(s);
        }
        if let Ok(r) = Reference::parse(s) {
            if let Some(d) = &r.digest {
                if let Some((id, _)) = metas
                    .iter()
                    .find(|(id, m)| m.manifest_digest == *d || *id == d)
                {
                    return found(id);
                }
                let key = format!("{}@{d}", r.repository());
                let rd = self.db.begin_read()?;
                let t = rd.open_table(REPO_DIGESTS).map_err(dbe)?;
                if let Some(id) = t.get(key.as_str()).map_err(dbe)? {
                    return found(id.value());
                }
            } else if let Some(id) = tags.get(&r.to_string()) {
                return found(id);
            }
        }
        let prefix = s.strip_prefix("sha256:").unwrap_or(s);
        if !prefix.is_empty() && prefix.len() <= 64 && prefix.bytes().all(|b| b.is_ascii_hexdigit())
        {
            let want = format!("sha256:{}", prefix.to_ascii_lowercase());
            let hits: Vec<&String> = metas.keys().filter(|k| k.starts_with(&want)).collect();
            match hits.len() {
                0 => {}
                1 => return found(hits[0]),
                _ => return Err(Error::Ambiguous(s.to_string())),
            }
        }
        Ok(None)
    }

    /// Like [`Store::resolve`], with "No such image" as the error when nothing matches.
    pub fn get(&self, s: &str) -> Result<ImageRecord> {
        self.resolve(s)?
            .ok_or_else(|| Error::NotFound(s.to_string()))
    }

    /// Points `reference` at `image` (anything [`Store::resolve`] accepts, e.g. an ID).
    pub fn tag(&self, image: &str, reference: &str) -> Result<()> {
        self.mark_in_use()?;
        let rec = self.get(image)?;
        let r = Reference::parse(reference)?;
        if r.digest.is_some() {
            return Err(Error::InvalidReference {
                reference: reference.to_string(),
                reason: "a tag cannot contain a digest".into(),
            });
        }
        let w = self.db.begin_write()?;
        {
            let mut t = w.open_table(TAGS).map_err(dbe)?;
            t.insert(r.to_string().as_str(), rec.id.as_str())
                .map_err(dbe)?;
        }
        self.write_index(&w)?;
        w.commit().map_err(dbe)
    }

    /// Removes a tag; returns the ID it pointed to, or None if there was no such tag.
    pub fn untag(&self, reference: &str) -> Result<Option<Digest>> {
        let name = reference::normalize(reference)?;
        let w = self.db.begin_write()?;
        let old = {
            let mut t = w.open_table(TAGS).map_err(dbe)?;
            let old = t
                .remove(name.as_str())
                .map_err(dbe)?
                .map(|v| v.value().to_string());
            old
        };
        if old.is_some() {
            self.write_index(&w)?;
        }
        w.commit().map_err(dbe)?;
        Ok(old)
    }

    /// Removes an image record and every tag pointing at it. Its blobs stay until `prune`.
    pub fn delete_image(&self, id: &str) -> Result<()> {
        let w = self.db.begin_write()?;
        {
            let mut images = w.open_table(IMAGES).map_err(dbe)?;
            images.remove(id).map_err(dbe)?;
            // Tags and repository digests naming the image go with it.
            for table in [TAGS, REPO_DIGESTS] {
                let mut t = w.open_table(table).map_err(dbe)?;
                let names: Vec<String> = t
                    .iter()
                    .map_err(dbe)?
                    .filter_map(|r| r.ok())
                    .filter(|(_, v)| v.value() == id)
                    .map(|(k, _)| k.value().to_string())
                    .collect();
                for n in names {
                    t.remove(n.as_str()).map_err(dbe)?;
                }
            }
        }
        self.write_index(&w)?;
        w.commit().map_err(dbe)
    }

    /// The build cache value stored under `key`, if any.
    pub fn cache_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(CACHE).map_err(dbe)?;
        let v = t.get(key).map_err(dbe)?.map(|v| v.value().to_vec());
        Ok(v)
    }

    /// Stores a build cache value; `blobs` are kept alive by `prune` as long as the entry lives,
    /// and the entry is dropped by `prune` if any of them disappears.
    pub fn cache_put(&self, key: &str, value: &[u8], blobs: &[Digest]) -> Result<()> {
        self.cache_insert(key, value, blobs, None)
    }

    /// Stores a build cache value whose layer exists only as the snapshot of `diff_id` (no
    /// blob): `prune` keeps the snapshot as long as the entry, and drops the entry with it. A
    /// later [`Store::cache_put`] of the key (the blob written) replaces it.
    pub fn cache_put_snapshot(&self, key: &str, value: &[u8], diff_id: &str) -> Result<()> {
        check_digest(diff_id)?;
        self.cache_insert(key, value, &[], Some(diff_id))
    }

    fn cache_insert(
        &self,
        key: &str,
        value: &[u8],
        blobs: &[Digest],
        snapshot: Option<&str>,
    ) -> Result<()> {
        self.mark_in_use()?;
        let b = serde_json::to_vec(blobs).map_err(|e| Error::Other(e.to_string()))?;
        let w = self.db.begin_write()?;
        {
            w.open_table(CACHE)
                .map_err(dbe)?
                .insert(key, value)
                .map_err(dbe)?;
            w.open_table(CACHE_BLOBS)
                .map_err(dbe)?
                .insert(key, &b[..])
                .map_err(dbe)?;
            let mut snapshots = w.open_table(CACHE_SNAPSHOTS).map_err(dbe)?;
            match snapshot {
                Some(d) => snapshots.insert(key, d).map(drop),
                None => snapshots.remove(key).map(drop),
            }
            .map_err(dbe)?;
        }
        w.commit().map_err(dbe)
    }

    /// Each build cache entry held only by a snapshot: its key and the snapshot's diffID.
    pub(crate) fn cache_snapshot_lists(&self) -> Result<Vec<(String, String)>> {
        let r = self.db.begin_read()?;
        // A store opened read-only before the table existed has none of these entries.
        let Ok(t) = r.open_table(CACHE_SNAPSHOTS) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in t.iter().map_err(dbe)? {
            let (k, v) = row.map_err(dbe)?;
            out.push((k.value().to_string(), v.value().to_string()));
        }
        Ok(out)
    }
}
