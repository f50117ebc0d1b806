//! Build cache that travels: entries of the store's cache index (key → value, plus the blobs the
//! value needs) pushed to a registry as one OCI artifact, and pulled back into another store.
//!
//! The artifact is an OCI image manifest whose config is the JSON list of entries
//! ([`CACHE_CONFIG_MEDIA_TYPE`]) and whose layers are the blobs the entries name, so any
//! registry that stores images stores it, and blobs shared with images are mounted or skipped
//! like image layers.

use serde::{Deserialize, Serialize};

use cairn_store::Store;

use crate::client::Client;
use crate::manifest::{self, Fetched, ImageManifest, OCI_MANIFEST};
use crate::reference::{validate_digest, Reference};
use crate::{push, sha256, Error, PullOptions, PushOptions, Result};

/// `artifactType` of a cairn build-cache manifest.
pub const CACHE_ARTIFACT_TYPE: &str = "application/vnd.cairn.build-cache.v1";
/// Media type of its config blob (the entries).
pub const CACHE_CONFIG_MEDIA_TYPE: &str = "application/vnd.cairn.build-cache.config.v1+json";
/// The image config field that carries an inline cache (`cairn build --cache-to type=inline`):
/// the JSON list of [`CacheEntry`], whose blobs are the image's own layers.
pub const INLINE_CACHE_KEY: &str = "cairn.cache.v0";
/// Media types of image configs, which may carry an inline cache.
const IMAGE_CONFIG_TYPES: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];
/// Media type given to the blobs it carries (their own type is not known to the cache index).
const BLOB_MEDIA_TYPE: &str = "application/octet-stream";

/// One entry of the build cache index, as `Store::cache_get`/`cache_put` see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The cache key.
    pub key: String,
    /// The opaque value.
    #[serde(with = "b64")]
    pub value: Vec<u8>,
    /// Blobs (`sha256:…`) the value needs; they travel with it.
    pub blobs: Vec<String>,
}

mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Serialize, Deserialize)]
struct CacheConfig {
    entries: Vec<CacheEntry>,
}

/// Pushes `entries` (whose blobs must be in `store`) to `target_ref` as one cache artifact;
/// returns the manifest digest. The config blob is written to the store first (so it uploads
/// like any blob); nothing references it there, and `prune` removes it.
pub fn push_cache(
    store: &Store,
    entries: &[CacheEntry],
    target_ref: &str,
    opts: &PushOptions,
) -> Result<String> {
    crate::off_runtime(|| push_cache_here(store, entries, target_ref, opts))
}

fn push_cache_here(
    store: &Store,
    entries: &[CacheEntry],
    target_ref: &str,
    opts: &PushOptions,
) -> Result<String> {
    let target = Reference::parse(target_ref)?;
    let mut layers: Vec<serde_json::Value> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for e in entries {
        for b in &e.blobs {
            validate_digest(b).map_err(Error::Invalid)?;
            if !seen.insert(b.clone()) {
                continue;
            }
            let path = store.blob_path(b);
            let size = std::fs::metadata(&path)
                .map_err(|source| Error::Io { path, source })?
                .len();
            layers
                .push(serde_json::json!({"mediaType": BLOB_MEDIA_TYPE, "digest": b, "size": size}));
        }
    }
    let config = serde_json::to_vec(&CacheConfig {
        entries: entries.to_vec(),
    })
    .map_err(|e| Error::Invalid(e.to_string()))?;
    let config_digest = store.put_blob(&config)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": CACHE_ARTIFACT_TYPE,
        "config": {"mediaType": CACHE_CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config.len()},
        "layers": layers,
    });
    let mbytes = serde_json::to_vec(&manifest).map_err(|e| Error::Invalid(e.to_string()))?;
    let image: ImageManifest =
        serde_json::from_slice(&mbytes).map_err(|e| Error::Invalid(e.to_string()))?;
    push::push_manifest(store, &target, &mbytes, OCI_MANIFEST, &image, opts)
}

/// Pulls the cache artifact `reference`, or the inline cache of the image `reference`: the
/// blobs its entries need into `store` (those missing), its entries into the store's cache
/// index. Returns the entries.
pub fn pull_cache(store: &Store, reference: &str, opts: &PullOptions) -> Result<Vec<CacheEntry>> {
    crate::off_runtime(|| pull_cache_here(store, reference, opts))
}

fn pull_cache_here(store: &Store, reference: &str, opts: &PullOptions) -> Result<Vec<CacheEntry>> {
    let r = Reference::parse(reference)?;
    let ro = &opts.registry;
    let client = Client::new(
        &r.registry,
        vec![format!("repository:{}:pull", r.repository)],
        ro.credential_for(&r.registry)?,
        ro,
    )?;
    let (bytes, ct) = client.get_manifest(&r.repository, r.manifest_ref())?;
    if let Some(want) = &r.digest {
        let got = sha256(&bytes);
        if *want != got {
            return Err(Error::DigestMismatch {
                what: format!("cache {r}"),
                expected: want.clone(),
                actual: got,
            });
        }
    }
    let Fetched::Image(m) = manifest::parse(&bytes, &ct)?.0 else {
        return Err(Error::Invalid(format!(
            "{r} is an index, not a cairn build cache"
        )));
    };
    let inline = m.config.media_type != CACHE_CONFIG_MEDIA_TYPE;
    if inline && !IMAGE_CONFIG_TYPES.contains(&m.config.media_type.as_str()) {
        return Err(Error::Invalid(format!(
            "{r} is not a cairn build cache (config type {:?})",
            m.config.media_type
        )));
    }
    validate_digest(&m.config.digest).map_err(Error::Invalid)?;
    if !store.has_blob(&m.config.digest) {
        crate::pull::fetch_blob(store, &client, &r.repository, &m.config, ro, false)?;
    }
    let raw = std::fs::read(store.blob_path(&m.config.digest)).map_err(|source| Error::Io {
        path: store.blob_path(&m.config.digest),
        source,
    })?;
    let cfg: CacheConfig = if inline {
        let mut config: serde_json::Value = serde_json::from_slice(&raw)
            .map_err(|e| Error::Invalid(format!("image {r}: config: {e}")))?;
        let Some(entries) = config
            .get_mut(INLINE_CACHE_KEY)
            .map(serde_json::Value::take)
        else {
            return Err(Error::Invalid(format!(
                "image {r} carries no inline cache (build it with --cache-to type=inline)"
            )));
        };
        CacheConfig {
            entries: serde_json::from_value(entries)
                .map_err(|e| Error::Invalid(format!("image {r}: inline cache: {e}")))?,
        }
    } else {
        serde_json::from_slice(&raw)
            .map_err(|e| Error::Invalid(format!("cache {r}: entries: {e}")))?
    };
    for e in &cfg.entries {
        for b in &e.blobs {
            if !m.layers.iter().any(|l| l.digest == *b) {
                return Err(Error::Invalid(format!(
                    "cache {r}: entry {:?} needs {b}, which the artifact does not carry",
                    e.key
                )));
            }
        }
    }
    // Only the blobs some entry needs: an image's other layers are not cache.
    for d in &m.layers {
        let needed = cfg.entries.iter().any(|e| e.blobs.contains(&d.digest));
        if needed && !store.has_blob(&d.digest) {
            validate_digest(&d.digest).map_err(Error::Invalid)?;
            crate::pull::fetch_blob(store, &client, &r.repository, d, ro, false)?;
        }
    }
    for e in &cfg.entries {
        store.cache_put(&e.key, &e.value, &e.blobs)?;
    }
    Ok(cfg.entries)
}
