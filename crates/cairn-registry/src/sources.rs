//! Where blobs came from (`registry`, `repository`), so that a push to another repository of the
//! same registry can mount them instead of uploading. A hint only: losing it costs an upload.
//!
//! One small file per blob under `<store root>/registry-sources/`, replaced atomically; the
//! store's GC does not know these files, and a stale hint just makes the registry answer the
//! mount with an upload session.

use std::io::Write;
use std::path::PathBuf;

use cairn_store::Store;

/// How many sources are remembered per blob.
const KEEP: usize = 8;

fn path(store: &Store, digest: &str) -> Option<PathBuf> {
    let hex = digest.strip_prefix("sha256:")?;
    Some(store.root().join("registry-sources").join(hex))
}

/// The `(registry, repository)` pairs `digest` was pulled from or pushed to, newest first.
pub(crate) fn lookup(store: &Store, digest: &str) -> Vec<(String, String)> {
    let Some(p) = path(store, digest) else {
        return Vec::new();
    };
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(r, p)| (r.to_string(), p.to_string()))
        .collect()
}

/// Remembers that `registry/repository` has `digest`. Failures are ignored: it is a hint.
pub(crate) fn record(store: &Store, digest: &str, registry: &str, repository: &str) {
    let Some(p) = path(store, digest) else { return };
    let mut entries = lookup(store, digest);
    entries.retain(|(r, p)| !(r == registry && p == repository));
    entries.insert(0, (registry.to_string(), repository.to_string()));
    entries.truncate(KEEP);
    let body: String = entries.iter().map(|(r, p)| format!("{r} {p}\n")).collect();
    let Some(dir) = p.parent() else { return };
    let _ = std::fs::create_dir_all(dir).and_then(|_| {
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(body.as_bytes())?;
        tmp.persist(&p).map_err(|e| e.error)?;
        Ok(())
    });
}
