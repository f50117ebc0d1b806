//! `index.json`: derived from the database, so that OCI tools read the store as it is.

use crate::db::{dbe, IMAGES, TAGS};
use crate::images::ImageMeta;
use crate::{canonical_json, reference, write_atomic, Result, Store};
use redb::ReadableTable;
use serde_json::json;

/// Media type of the manifests cairn writes.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of the image index.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The annotation that names a manifest in an OCI layout.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub(crate) fn index_bytes(
    images: &impl ReadableTable<&'static str, &'static [u8]>,
    tags: &impl ReadableTable<&'static str, &'static str>,
) -> Result<Vec<u8>> {
    let mut entries: Vec<(String, serde_json::Value)> = Vec::new();
    let mut tagged = std::collections::HashSet::new();
    let mut metas = std::collections::BTreeMap::new();
    for row in images.iter().map_err(dbe)? {
        let (k, v) = row.map_err(dbe)?;
        let meta: ImageMeta =
            serde_json::from_slice(v.value()).map_err(|e| crate::Error::Corrupt {
                what: format!("image record {}", k.value()),
                why: e.to_string(),
            })?;
        metas.insert(k.value().to_string(), meta);
    }
    for row in tags.iter().map_err(dbe)? {
        let (k, v) = row.map_err(dbe)?;
        let Some(meta) = metas.get(v.value()) else {
            continue;
        };
        tagged.insert(v.value().to_string());
        let full = k.value().to_string();
        let mut names = vec![full.clone()];
        let short = reference::familiar(&full);
        if short != full {
            names.push(short);
        }
        for n in names {
            entries.push((
                n.clone(),
                json!({
                    "mediaType": meta.manifest_media_type.as_deref().unwrap_or(MANIFEST_MEDIA_TYPE),
                    "digest": meta.manifest_digest,
                    "size": meta.manifest_size,
                    "annotations": { REF_NAME: n },
                }),
            ));
        }
    }
    for (id, meta) in &metas {
        if !tagged.contains(id) {
            // Untagged images stay listed so that OCI tools' GC keeps their blobs.
            entries.push((
                format!("~{id}"),
                json!({ "mediaType": meta.manifest_media_type.as_deref().unwrap_or(MANIFEST_MEDIA_TYPE), "digest": meta.manifest_digest, "size": meta.manifest_size }),
            ));
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let manifests: Vec<serde_json::Value> = entries.into_iter().map(|(_, v)| v).collect();
    Ok(canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": manifests,
    })))
}

impl Store {
    /// Rewrites `index.json` inside a write transaction (before its commit), so that the file and
    /// the database agree unless a crash falls between the two; `ensure_index` repairs that.
    pub(crate) fn write_index(&self, w: &redb::WriteTransaction) -> Result<()> {
        let images = w.open_table(IMAGES).map_err(dbe)?;
        let tags = w.open_table(TAGS).map_err(dbe)?;
        let bytes = index_bytes(&images, &tags)?;
        write_atomic(&self.root.join("index.json"), &bytes)
    }

    /// Whether `index.json` is what the database says it should be.
    pub(crate) fn index_is_current(&self) -> Result<bool> {
        let r = self.db.begin_read()?;
        let bytes = index_bytes(
            &r.open_table(IMAGES).map_err(dbe)?,
            &r.open_table(TAGS).map_err(dbe)?,
        )?;
        Ok(std::fs::read(self.root.join("index.json")).ok().as_deref() == Some(&bytes[..]))
    }

    /// Re-derives `index.json` if a crash left it out of date (or it is missing).
    pub(crate) fn ensure_index(&self) -> Result<bool> {
        if self.index_is_current()? {
            return Ok(false);
        }
        let w = self.db.begin_write()?;
        self.write_index(&w)?;
        w.commit().map_err(dbe)?;
        Ok(true)
    }
}
