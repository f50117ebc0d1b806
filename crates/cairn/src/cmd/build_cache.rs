//! `cairn build --cache-to` / `--cache-from`: the build cache through a registry, as BuildKit's
//! `type=registry` and `type=inline` caches.

use anyhow::{bail, Context as _};
use cairn_build::key::CacheRecord;
use cairn_build::{BuildOutput, CacheKey, Reporter};
use cairn_registry::{CacheEntry, PullOptions, PushOptions};
use cairn_store::Store;

/// The key of the config field that carries an inline cache (BuildKit's is
/// `moby.buildkit.cache.v0`; ours holds cairn's entries, which BuildKit could not read).
pub use cairn_registry::INLINE_CACHE_KEY;

/// Where `--cache-to` sends the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheTo {
    /// A cache artifact pushed to `reference`; `max` exports every stage's steps, else only the
    /// target stage's.
    Registry { reference: String, max: bool },
    /// Into the built image's config (target stage's steps), for `--cache-from` of the image.
    Inline,
}

/// `type=registry,ref=R[,mode=min|max]` or `type=inline`.
pub fn parse_cache_to(spec: &str) -> anyhow::Result<CacheTo> {
    let kv = pairs(spec)?;
    let get = |k: &str| kv.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    match get("type") {
        Some("inline") => Ok(CacheTo::Inline),
        Some("registry") => {
            let reference = get("ref")
                .ok_or_else(|| anyhow::anyhow!("--cache-to {spec}: ref= is missing"))?
                .to_string();
            let max = match get("mode").unwrap_or("min") {
                "min" => false,
                "max" => true,
                m => bail!("--cache-to {spec}: mode={m}: min or max"),
            };
            Ok(CacheTo::Registry { reference, max })
        }
        t => bail!(
            "--cache-to {spec}: type={}: registry or inline",
            t.unwrap_or("")
        ),
    }
}

/// `type=registry,ref=R`, or a bare reference as docker also accepts.
pub fn parse_cache_from(spec: &str) -> anyhow::Result<String> {
    if !spec.contains('=') {
        return Ok(spec.to_string());
    }
    let kv = pairs(spec)?;
    let get = |k: &str| kv.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    match (get("type"), get("ref")) {
        (Some("registry") | None, Some(r)) => Ok(r.to_string()),
        (Some("registry") | None, None) => bail!("--cache-from {spec}: ref= is missing"),
        (Some(t), _) => bail!("--cache-from {spec}: type={t}: registry"),
    }
}

fn pairs(spec: &str) -> anyhow::Result<Vec<(String, String)>> {
    spec.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| anyhow::anyhow!("{spec:?}: {p:?} is not KEY=VALUE"))
        })
        .collect()
}

/// Pulls each cache into the store's cache index, one build vertex each. A cache that cannot
/// be read is a warning, as in BuildKit: the build then runs without it.
pub fn import(store: &Store, refs: &[String], opts: &PullOptions, reporter: &Reporter<'_>) {
    // The vertex says what happened; per-blob lines would interleave with the build's display.
    let mut opts = opts.clone();
    opts.registry.progress = None;
    for r in refs {
        let v = reporter.start(format!("importing cache manifest from {r}"));
        match cairn_registry::pull_cache(store, r, &opts) {
            Ok(entries) => {
                reporter.status(v, format!("{} entries", entries.len()));
                reporter.done(v);
            }
            Err(e) => {
                reporter.done(v);
                reporter.warning(format!("--cache-from {r}: {e}"));
            }
        }
    }
}

/// The cache entries of `keys` as the store holds them (keys whose entry is gone are skipped).
pub fn entries(store: &Store, keys: &[CacheKey]) -> anyhow::Result<Vec<CacheEntry>> {
    let mut out: Vec<CacheEntry> = Vec::new();
    for k in keys {
        if out.iter().any(|e| e.key == k.as_str()) {
            continue;
        }
        let Some(value) = store.cache_get(k.as_str())? else {
            continue;
        };
        // The record says which blob the entry needs: it must travel with it.
        let blobs = CacheRecord::decode(&value)
            .and_then(|r| r.layer)
            .map(|l| vec![l.digest])
            .unwrap_or_default();
        out.push(CacheEntry {
            key: k.as_str().to_string(),
            value,
            blobs,
        });
    }
    Ok(out)
}

/// Puts the target stage's cache entries into the image config (changing the image ID, as
/// BuildKit's inline cache does).
pub fn add_inline(store: &Store, out: &mut BuildOutput) -> anyhow::Result<()> {
    let entries = entries(store, &out.target_cache_keys)?;
    let mut config: serde_json::Value =
        serde_json::from_slice(&out.config_json).context("reading the built config")?;
    let obj = config
        .as_object_mut()
        .ok_or_else(|| anyhow::anyhow!("the built config is not a JSON object"))?;
    obj.insert(
        INLINE_CACHE_KEY.to_string(),
        serde_json::to_value(&entries).context("encoding the inline cache")?,
    );
    out.config_json = cairn_store::canonical_json(&config);
    out.image_id = cairn_layer::hash::sha256_digest(&out.config_json);
    Ok(())
}

/// Pushes the registry caches of `specs` (inline ones are already in the image).
pub fn export(
    store: &Store,
    out: &BuildOutput,
    specs: &[CacheTo],
    opts: &PushOptions,
    quiet: bool,
) -> anyhow::Result<()> {
    for spec in specs {
        if let CacheTo::Registry { reference, max } = spec {
            let keys = if *max {
                &out.cache_keys
            } else {
                &out.target_cache_keys
            };
            let entries = entries(store, keys)?;
            let digest = cairn_registry::push_cache(store, &entries, reference, opts)
                .with_context(|| format!("--cache-to {reference}"))?;
            if !quiet {
                eprintln!(
                    "#cache exported {} entries to {reference}@{digest}",
                    entries.len()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_specs() {
        assert_eq!(
            parse_cache_to("type=registry,ref=h:5000/c:x,mode=max").unwrap(),
            CacheTo::Registry {
                reference: "h:5000/c:x".into(),
                max: true
            }
        );
        assert_eq!(
            parse_cache_to("type=registry,ref=r").unwrap(),
            CacheTo::Registry {
                reference: "r".into(),
                max: false
            }
        );
        assert_eq!(parse_cache_to("type=inline").unwrap(), CacheTo::Inline);
        assert!(parse_cache_to("type=local,dest=x").is_err());
        assert!(parse_cache_to("type=registry").is_err());
        assert!(parse_cache_to("type=registry,ref=r,mode=all").is_err());
        assert_eq!(parse_cache_from("type=registry,ref=r:1").unwrap(), "r:1");
        assert_eq!(parse_cache_from("h/img:2").unwrap(), "h/img:2");
        assert!(parse_cache_from("type=local,src=x").is_err());
    }
}
