//! Manifests and indexes in both dialects (docker schema2 and OCI), and platform selection.

use serde::Deserialize;

use crate::Error;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest v2 schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// A content descriptor, the fields cairn uses.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the target.
    #[serde(default)]
    pub media_type: String,
    /// `sha256:<hex>` of the target.
    pub digest: String,
    /// Size in bytes of the target.
    pub size: u64,
    /// Platform, in index entries.
    #[serde(default)]
    pub platform: Option<Platform>,
    /// External URLs (non-distributable layers).
    #[serde(default)]
    pub urls: Vec<String>,
}

/// An image manifest (OCI or docker schema2).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// 2 for every supported format.
    pub schema_version: u32,
    /// May be absent in OCI manifests; the HTTP Content-Type then tells.
    #[serde(default)]
    pub media_type: Option<String>,
    /// The image configuration blob.
    pub config: Descriptor,
    /// Layer blobs, bottom first.
    pub layers: Vec<Descriptor>,
}

/// An index or manifest list.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Entries, one per platform (plus attestations).
    pub manifests: Vec<Descriptor>,
}

/// An OS/architecture pair with optional variant (`linux/arm64/v8`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Platform {
    /// `linux`, `windows`, …
    pub os: String,
    /// GOARCH spelling: `amd64`, `arm64`, `arm`, `386`, …
    pub architecture: String,
    /// `v7`, `v8`, …
    #[serde(default)]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of this machine, spelled as in image configs.
    pub fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform {
            os: "linux".into(),
            architecture: arch.into(),
            variant: variant.map(str::to_string),
        }
    }

    /// Parses `os/arch[/variant]` (as `--platform` takes it).
    pub fn parse(s: &str) -> Result<Platform, Error> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || {
            Error::Invalid(format!(
                "invalid platform {s:?}: expected os/arch[/variant]"
            ))
        };
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        let mut arch = parts[1].to_ascii_lowercase();
        if arch == "x86_64" {
            arch = "amd64".into();
        } else if arch == "aarch64" {
            arch = "arm64".into();
        }
        Ok(Platform {
            os: parts[0].to_ascii_lowercase(),
            architecture: arch,
            variant: parts.get(2).map(|v| v.to_ascii_lowercase()),
        })
    }

    /// Whether an index entry for `other` can run as `self` asks. A missing variant on either
    /// side matches (arm64 images rarely say v8).
    pub fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && match (&self.variant, &other.variant) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// What a manifest GET returned.
#[derive(Debug)]
pub enum Fetched {
    /// A single image.
    Image(ImageManifest),
    /// An index or manifest list.
    Index(Index),
}

/// Parses manifest bytes; `content_type` is the HTTP header (the body's `mediaType` wins).
pub fn parse(bytes: &[u8], content_type: &str) -> Result<(Fetched, String), Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        schema_version: Option<u32>,
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        config: Option<serde_json::Value>,
    }
    let p: Probe = serde_json::from_slice(bytes)
        .map_err(|e| Error::Invalid(format!("manifest is not JSON: {e}")))?;
    if p.schema_version == Some(1) {
        return Err(Error::Unsupported(
            "docker schema1 manifests are deprecated and not supported; push the image again with a current tool".into(),
        ));
    }
    let mt = p
        .media_type
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| match (&p.manifests, &p.config) {
            (Some(_), _) => OCI_INDEX.into(),
            (_, Some(_)) if !content_type.is_empty() => content_type.to_string(),
            _ => OCI_MANIFEST.into(),
        });
    let bad = |e: serde_json::Error| Error::Invalid(format!("{mt}: {e}"));
    match mt.as_str() {
        OCI_INDEX | DOCKER_LIST => Ok((
            Fetched::Index(serde_json::from_slice(bytes).map_err(bad)?),
            mt,
        )),
        OCI_MANIFEST | DOCKER_MANIFEST => Ok((
            Fetched::Image(serde_json::from_slice(bytes).map_err(bad)?),
            mt,
        )),
        other => Err(Error::Unsupported(format!("manifest media type {other:?}"))),
    }
}

/// Picks the index entry for `want`; the error lists what the index offers.
pub fn select<'a>(index: &'a Index, want: &Platform) -> Result<&'a Descriptor, Error> {
    let candidates = index.manifests.iter().filter(|d| {
        matches!(d.media_type.as_str(), OCI_MANIFEST | DOCKER_MANIFEST | "")
            && d.platform.as_ref().is_some_and(|p| want.matches(p))
    });
    // An exact variant beats an entry that only matches because it has none.
    candidates
        .max_by_key(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.variant == want.variant)
        })
        .ok_or_else(|| {
            let available: Vec<String> = index
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .filter(|p| p.os != "unknown")
                .map(|p| p.to_string())
                .collect();
            Error::NoPlatform {
                platform: want.to_string(),
                available: if available.is_empty() {
                    "none".into()
                } else {
                    available.join(", ")
                },
            }
        })
}

/// The layer media types cairn can unpack.
pub fn check_layer_media_type(mt: &str) -> Result<(), Error> {
    const OK: &[&str] = &[
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.diff.tar.zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    ];
    if OK.contains(&mt) {
        Ok(())
    } else {
        Err(Error::Unsupported(format!("layer media type {mt:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> Index {
        let j = r#"{"schemaVersion":2,"manifests":[
          {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:a","size":1,"platform":{"os":"linux","architecture":"amd64"}},
          {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:b","size":1,"platform":{"os":"linux","architecture":"arm","variant":"v6"}},
          {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:c","size":1,"platform":{"os":"linux","architecture":"arm","variant":"v7"}},
          {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:d","size":1,"platform":{"os":"linux","architecture":"arm64"}},
          {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:e","size":1,"platform":{"os":"unknown","architecture":"unknown"}}]}"#;
        match parse(j.as_bytes(), "").unwrap().0 {
            Fetched::Index(i) => i,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn selects_platforms() {
        let i = index();
        let pick = |s: &str| select(&i, &Platform::parse(s).unwrap()).map(|d| d.digest.clone());
        assert_eq!(pick("linux/amd64").unwrap(), "sha256:a");
        assert_eq!(pick("linux/x86_64").unwrap(), "sha256:a");
        assert_eq!(pick("linux/arm/v7").unwrap(), "sha256:c");
        assert_eq!(pick("linux/arm/v6").unwrap(), "sha256:b");
        assert_eq!(pick("linux/arm64/v8").unwrap(), "sha256:d");
        let e = pick("linux/s390x").unwrap_err().to_string();
        assert!(
            e.contains("linux/s390x") && e.contains("linux/arm/v7"),
            "{e}"
        );
        assert!(!e.contains("unknown"), "{e}");
        assert!(Platform::parse("linux").is_err());
    }

    #[test]
    fn rejects_schema1_and_unknown() {
        let e = parse(br#"{"schemaVersion":1,"name":"x"}"#, "").unwrap_err();
        assert!(e.to_string().contains("schema1"));
        assert!(parse(br#"{"schemaVersion":2,"mediaType":"x/y","config":{}}"#, "").is_err());
        assert!(check_layer_media_type("application/vnd.oci.image.layer.v1.tar+zstd").is_ok());
        assert!(check_layer_media_type("text/plain").is_err());
    }
}
