//! Base images: where `FROM image`, `COPY --from=image` and `RUN --mount=from=image` come from.
//!
//! The engine asks a [`BaseResolver`]: [`StoreResolver`] reads the local store only;
//! [`crate::pull::RegistryResolver`] pulls what the store lacks.

use cairn_layer::LayerDescriptor;
use cairn_store::Store;

use crate::error::{io_err, Error, Result};
use crate::image::ImageConfig;

/// A resolved base image.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseImage {
    /// The reference as written in the Dockerfile.
    pub reference: String,
    /// The config digest (the image ID); the cache key chain starts from it.
    pub id: String,
    /// Its config, extension fields included.
    pub config: ImageConfig,
    /// Its layers, bottom first.
    pub layers: Vec<LayerDescriptor>,
}

/// Finds base images by reference.
pub trait BaseResolver: Sync {
    /// Resolves `reference` (as written, e.g. `busybox`, `alpine:3.20`, `docker.io/x/y@sha256:…`)
    /// for `platform` (`os/arch`, None = the host's). `Ok(None)` when it does not exist.
    fn resolve(&self, reference: &str, platform: Option<&str>) -> Result<Option<BaseImage>>;
}

/// Resolves base images from the local store only.
pub struct StoreResolver<'a> {
    store: &'a Store,
}

impl<'a> StoreResolver<'a> {
    /// A resolver over `store`.
    pub fn new(store: &'a Store) -> Self {
        StoreResolver { store }
    }
}

impl BaseResolver for StoreResolver<'_> {
    fn resolve(&self, reference: &str, _platform: Option<&str>) -> Result<Option<BaseImage>> {
        let Some(record) = self.store.resolve(reference)? else {
            return Ok(None);
        };
        base_from_record(self.store, reference, &record).map(Some)
    }
}

/// The base image of a store record, found (or pulled) under `reference`.
pub fn base_from_record(
    store: &Store,
    reference: &str,
    record: &cairn_store::ImageRecord,
) -> Result<BaseImage> {
    // The record's parsed config drops docker's extension fields (OnBuild, Healthcheck, …):
    // read the blob itself.
    let path = store.blob_path(&record.id);
    let bytes = std::fs::read(&path).map_err(io_err(&path))?;
    let config = ImageConfig::from_json(&bytes).map_err(|e| {
        Error::Other(format!(
            "image {reference}: unreadable config {}: {e}",
            record.id
        ))
    })?;
    Ok(BaseImage {
        reference: reference.to_string(),
        id: record.id.clone(),
        config,
        layers: record.layers.clone(),
    })
}
