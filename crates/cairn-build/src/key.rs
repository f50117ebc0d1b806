//! Cache keys: content addresses of build steps.
//!
//! The key of a step is `H(parent key, expanded instruction, digests of its inputs)`. The chain
//! starts at the base: an image's config digest (which names its layers and config), or `scratch`
//! and the platform. Metadata steps (ENV, USER, …) are part of the chain, so a RUN after a changed
//! ENV gets a new key, as it must: its environment changed.

use std::fmt;

use cairn_dockerfile::StepKind;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Bump when the meaning of a key or of a cached value changes, or when a fix changes what a step
/// produces (v2: WORKDIR kept as written, a bare UID is also the GID): old entries are then never
/// read, so an upgraded cairn never serves a result the old one got wrong.
const KEY_VERSION: &str = "cairn-cache-v2";

/// A step's cache key, `sha256:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CacheKey(String);

impl CacheKey {
    /// The key of a stage built on the image whose config digest is `config_digest`.
    pub fn image(config_digest: &str) -> CacheKey {
        Self::hash(&["image", config_digest])
    }

    /// The key of a stage built `FROM scratch` for `platform`.
    pub fn scratch(platform: &str) -> CacheKey {
        Self::hash(&["scratch", platform])
    }

    /// The key of `step` run on top of `self`. `inputs` are the digests of what the step reads
    /// besides its parent (files selected by COPY, a stage's result, …), in a fixed order.
    pub fn child(&self, step: &StepKind, inputs: &[String]) -> CacheKey {
        // The expanded instruction, every flag included. serde_json output of these types is
        // deterministic (no maps with random order).
        let instruction = serde_json::to_string(step).unwrap_or_default();
        let mut parts: Vec<&str> = vec!["step", &self.0, &instruction];
        parts.extend(inputs.iter().map(String::as_str));
        Self::hash(&parts)
    }

    /// The key as text (`sha256:<hex>`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Hashes length-prefixed parts, so that `("ab","c")` and `("a","bc")` differ.
    fn hash(parts: &[&str]) -> CacheKey {
        CacheKey(digest_parts(parts))
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `sha256:<hex>` of length-prefixed `parts`, under the key version.
pub fn digest_parts(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(KEY_VERSION.as_bytes());
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// What the cache keeps for a layer-producing step: the layer it made, or none when its diff was
/// empty. The config is not stored: it is recomputed from the steps, which costs nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// The layer, `None` for an empty diff.
    pub layer: Option<cairn_layer::LayerDescriptor>,
}

impl CacheRecord {
    /// The bytes stored in the cache index.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a stored record; an unreadable one is treated as a miss by the caller.
    pub fn decode(bytes: &[u8]) -> Option<CacheRecord> {
        serde_json::from_slice(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_chain_and_depend_on_every_input() {
        let base = CacheKey::image("sha256:aaa");
        let env = StepKind::Env(vec![("A".into(), "1".into())]);
        let k1 = base.child(&env, &[]);
        assert_eq!(k1, base.child(&env, &[]), "deterministic");
        assert_ne!(
            k1,
            CacheKey::image("sha256:bbb").child(&env, &[]),
            "parent matters"
        );
        let env2 = StepKind::Env(vec![("A".into(), "2".into())]);
        assert_ne!(k1, base.child(&env2, &[]), "instruction matters");
        let wd = StepKind::Workdir("/app".into());
        assert_ne!(
            k1.child(&wd, &["sha256:1".into()]),
            k1.child(&wd, &["sha256:2".into()]),
            "inputs matter"
        );
        assert_ne!(digest_parts(&["ab", "c"]), digest_parts(&["a", "bc"]));
        assert_ne!(
            CacheKey::scratch("linux/amd64"),
            CacheKey::scratch("linux/arm64")
        );
    }

    #[test]
    fn records_round_trip() {
        let r = CacheRecord {
            layer: Some(cairn_layer::LayerDescriptor {
                digest: "sha256:1".into(),
                diff_id: "sha256:2".into(),
                size: 3,
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            }),
        };
        assert_eq!(CacheRecord::decode(&r.encode()), Some(r));
        assert_eq!(CacheRecord::decode(b"garbage"), None);
    }
}
