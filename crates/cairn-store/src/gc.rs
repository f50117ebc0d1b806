//! `check` and `prune`.

use crate::blobs::check_digest;
use crate::db::{dbe, CACHE, CACHE_BLOBS, CACHE_SNAPSHOTS, IMAGES, LAYERS, TAGS};
use crate::images::LayerInfo;
use crate::{io_err, Digest, Error, Result, Store};
use redb::ReadableTable;
use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::io::BufReader;
use std::time::{Duration, SystemTime};

/// What `check` found.
#[derive(Debug, Default, Clone)]
pub struct CheckReport {
    /// Blobs whose content was hashed.
    pub blobs_checked: usize,
    /// Images whose references were followed.
    pub images_checked: usize,
    /// Inconsistencies: corrupt or missing blobs, dangling tags, a stale index. Empty = healthy.
    pub problems: Vec<String>,
    /// Leftovers that are not errors (temp files of interrupted writes, unreferenced blobs):
    /// `prune` removes them.
    pub garbage: Vec<String>,
}

/// What `prune` removes.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Remove images without any tag (docker's "dangling" images).
    pub dangling_images: bool,
    /// Remove build cache entries (all of them, not only those whose blobs are gone).
    pub build_cache: bool,
}

/// What `prune` removed.
#[derive(Debug, Default, Clone)]
pub struct PruneReport {
    /// IDs of the images removed.
    pub images: Vec<Digest>,
    /// Blobs removed.
    pub blobs: Vec<Digest>,
    /// Snapshots removed.
    pub snapshots: usize,
    /// Build cache entries removed.
    pub cache_entries: usize,
    /// Bytes freed (blobs, temp files, pool files; snapshots not counted).
    pub reclaimed: u64,
    /// Whether recent unreferenced files were spared because another process used the store.
    pub spared_recent: bool,
    /// Objects of the file pool removed (nothing linked them any more); their bytes are in
    /// `reclaimed`.
    pub pool_files: usize,
}

const GRACE: Duration = Duration::from_secs(3600);

impl Store {
    /// Hashes every blob, follows every tag and image to its blobs, and compares `index.json`
    /// with the database.
    pub fn check(&self) -> Result<CheckReport> {
        let mut rep = CheckReport::default();
        let dir = self.root.join("blobs/sha256");
        let mut present = BTreeSet::new();
        for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let e = e.map_err(io_err(&dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let d = format!("sha256:{name}");
            if check_digest(&d).is_err() {
                rep.garbage.push(format!("stray file blobs/sha256/{name}"));
                continue;
            }
            let f = fs::File::open(e.path()).map_err(io_err(e.path()))?;
            let mut w = cairn_layer::hash::HashingWriter::new(std::io::sink());
            std::io::copy(&mut BufReader::with_capacity(1 << 20, f), &mut w)
                .map_err(io_err(e.path()))?;
            let (_, actual, _) = w.finish();
            rep.blobs_checked += 1;
            if actual != d {
                rep.problems.push(format!(
                    "blob {d} is corrupt: its content hashes to {actual}"
                ));
            }
            present.insert(d);
        }
        let (metas, tags) = self.read_all()?;
        for (t, id) in &tags {
            if !metas.contains_key(id) {
                rep.problems
                    .push(format!("tag {t} points to missing image {id}"));
            }
        }
        for (id, meta) in &metas {
            rep.images_checked += 1;
            let mut need = |d: &Digest, what: &str| {
                if !present.contains(d) {
                    rep.problems
                        .push(format!("image {id}: {what} blob {d} is missing"));
                    false
                } else {
                    true
                }
            };
            let has_manifest = need(&meta.manifest_digest, "manifest");
            let has_config = need(id, "config");
            for l in &meta.layers {
                need(&l.digest, "layer");
            }
            if has_manifest {
                match self
                    .read_blob(&meta.manifest_digest)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                {
                    Some(m) => {
                        if m["config"]["digest"].as_str() != Some(id) {
                            rep.problems
                                .push(format!("image {id}: its manifest names another config"));
                        }
                        let ls: Vec<&str> = m["layers"]
                            .as_array()
                            .map(|a| a.iter().filter_map(|l| l["digest"].as_str()).collect())
                            .unwrap_or_default();
                        if ls
                            != meta
                                .layers
                                .iter()
                                .map(|l| l.digest.as_str())
                                .collect::<Vec<_>>()
                        {
                            rep.problems.push(format!(
                                "image {id}: manifest layers differ from the record"
                            ));
                        }
                    }
                    None => rep
                        .problems
                        .push(format!("image {id}: manifest does not parse")),
                }
            }
            if has_config {
                let diff_ids: Option<Vec<String>> = self
                    .read_blob(id)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .and_then(|c| serde_json::from_value(c["rootfs"]["diff_ids"].clone()).ok());
                match diff_ids {
                    Some(d)
                        if d == meta
                            .layers
                            .iter()
                            .map(|l| l.diff_id.clone())
                            .collect::<Vec<_>>() => {}
                    _ => rep.problems.push(format!(
                        "image {id}: config rootfs does not match its layers"
                    )),
                }
            }
        }
        if !self.index_is_current()? {
            rep.problems
                .push("index.json does not match the database (any write repairs it)".into());
        }
        let tmp = self.tmp_dir();
        for e in fs::read_dir(&tmp).map_err(io_err(&tmp))?.flatten() {
            rep.garbage
                .push(format!("temp file tmp/{}", e.file_name().to_string_lossy()));
        }
        let live = self.live_blobs()?;
        for d in present.difference(&live) {
            rep.garbage.push(format!("unreferenced blob {d}"));
        }
        for (k, blobs) in self.cache_blob_lists()? {
            if let Some(b) = blobs.iter().find(|b| !present.contains(*b)) {
                rep.garbage
                    .push(format!("build cache entry {k} needs missing blob {b}"));
            }
        }
        let live_diffs: HashSet<String> = self
            .read_all()?
            .0
            .into_values()
            .flat_map(|m| m.layers.into_iter().map(|l| l.diff_id))
            .collect();
        let held: HashSet<String> = self
            .cache_snapshot_lists()?
            .into_iter()
            .map(|(_, d)| d)
            .collect();
        let sdir = self.root.join("snapshots");
        for e in fs::read_dir(&sdir).map_err(io_err(&sdir))?.flatten() {
            let d = format!("sha256:{}", e.file_name().to_string_lossy());
            if !live_diffs.contains(&d) && !held.contains(&d) {
                rep.garbage
                    .push(format!("snapshot of {d}: no image uses it"));
            }
        }
        rep.garbage.extend(self.file_pool().garbage());
        Ok(rep)
    }

    /// Blobs that images and cache entries reference.
    fn live_blobs(&self) -> Result<BTreeSet<Digest>> {
        let (metas, _) = self.read_all()?;
        let mut live = BTreeSet::new();
        for (id, m) in metas {
            live.insert(id);
            live.insert(m.manifest_digest);
            live.extend(m.layers.into_iter().map(|l| l.digest));
        }
        for (_, blobs) in self.cache_blob_lists()? {
            live.extend(blobs);
        }
        Ok(live)
    }

    /// Each build cache entry's key and the blobs it needs (none where the list does not parse).
    fn cache_blob_lists(&self) -> Result<Vec<(String, Vec<Digest>)>> {
        let r = self.db.begin_read()?;
        let mut out = Vec::new();
        for row in r
            .open_table(CACHE_BLOBS)
            .map_err(dbe)?
            .iter()
            .map_err(dbe)?
        {
            let (k, v) = row.map_err(dbe)?;
            let blobs: Vec<Digest> = serde_json::from_slice(v.value()).unwrap_or_default();
            out.push((k.value().to_string(), blobs));
        }
        Ok(out)
    }

    /// Removes what nothing references: untagged images (if asked), cache entries whose blobs
    /// are gone (all entries with `build_cache`), unreferenced blobs and snapshots, temp files.
    /// Files younger than an hour are spared while another process has the store in use.
    pub fn prune(&self, opts: &PruneOptions) -> Result<PruneReport> {
        let mut rep = PruneReport::default();
        // Our own shared lock would conflict with the exclusive one below.
        if let Ok(mut g) = self.in_use.lock() {
            *g = None;
        }
        let lock_path = self.root.join("lock");
        let lock = crate::open_lock_file(&lock_path)?;
        let exclusive =
            rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok();
        rep.spared_recent = !exclusive;
        let old_enough = |p: &std::path::Path| -> bool {
            if exclusive {
                return true;
            }
            fs::symlink_metadata(p)
                .and_then(|m| m.modified())
                .map(|t| SystemTime::now().duration_since(t).unwrap_or_default() > GRACE)
                .unwrap_or(false)
        };

        let w = self.db.begin_write()?;
        {
            let mut images = w.open_table(IMAGES).map_err(dbe)?;
            let tags = w.open_table(TAGS).map_err(dbe)?;
            if opts.dangling_images {
                let tagged: HashSet<String> = tags
                    .iter()
                    .map_err(dbe)?
                    .filter_map(|r| r.ok())
                    .map(|(_, v)| v.value().to_string())
                    .collect();
                for id in keys(&images)? {
                    if !tagged.contains(&id) {
                        images.remove(id.as_str()).map_err(dbe)?;
                        rep.images.push(id);
                    }
                }
            }
            let mut cache = w.open_table(CACHE).map_err(dbe)?;
            let mut cache_blobs = w.open_table(CACHE_BLOBS).map_err(dbe)?;
            let entries: Vec<(String, Vec<Digest>)> = cache_blobs
                .iter()
                .map_err(dbe)?
                .filter_map(|r| r.ok())
                .map(|(k, v)| {
                    (
                        k.value().to_string(),
                        serde_json::from_slice(v.value()).unwrap_or_default(),
                    )
                })
                .collect();
            for (k, blobs) in entries {
                if opts.build_cache || blobs.iter().any(|b| !self.has_blob(b)) {
                    cache.remove(k.as_str()).map_err(dbe)?;
                    cache_blobs.remove(k.as_str()).map_err(dbe)?;
                    rep.cache_entries += 1;
                }
            }
            // An entry held only by a snapshot goes with it, or with the whole cache.
            let mut snapshots = w.open_table(CACHE_SNAPSHOTS).map_err(dbe)?;
            let held: Vec<(String, String)> = snapshots
                .iter()
                .map_err(dbe)?
                .filter_map(|r| r.ok())
                .map(|(k, v)| (k.value().to_string(), v.value().to_string()))
                .collect();
            for (k, diff_id) in held {
                if opts.build_cache || !self.snapshot_path(&diff_id).is_dir() {
                    if cache.remove(k.as_str()).map_err(dbe)?.is_some() {
                        rep.cache_entries += 1;
                    }
                    cache_blobs.remove(k.as_str()).map_err(dbe)?;
                    snapshots.remove(k.as_str()).map_err(dbe)?;
                }
            }
            if opts.build_cache {
                for k in keys(&cache)? {
                    cache.remove(k.as_str()).map_err(dbe)?;
                    rep.cache_entries += 1;
                }
            }
        }
        self.write_index(&w)?;
        w.commit().map_err(dbe)?;

        let live = self.live_blobs()?;
        let dir = self.root.join("blobs/sha256");
        let mut dead = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_err(&dir))?.flatten() {
            let d = format!("sha256:{}", e.file_name().to_string_lossy());
            if check_digest(&d).is_ok() && !live.contains(&d) && old_enough(&e.path()) {
                rep.reclaimed += e.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(e.path()).map_err(io_err(e.path()))?;
                crate::chunks::ChunkIndex::remove_file_of(
                    &self.root,
                    &e.file_name().to_string_lossy(),
                );
                dead.push(d);
            }
        }
        // Snapshots stay while some live layer blob has their diffID.
        let mut live_diffs = HashSet::new();
        {
            let r = self.db.begin_read()?;
            let layers = r.open_table(LAYERS).map_err(dbe)?;
            for d in &live {
                if let Some(v) = layers.get(d.as_str()).map_err(dbe)? {
                    if let Ok(i) = serde_json::from_slice::<LayerInfo>(v.value()) {
                        live_diffs.insert(i.diff_id);
                    }
                }
            }
        }
        for (_, m) in self.read_all()?.0 {
            live_diffs.extend(m.layers.into_iter().map(|l| l.diff_id));
        }
        live_diffs.extend(self.cache_snapshot_lists()?.into_iter().map(|(_, d)| d));
        let sdir = self.root.join("snapshots");
        for e in fs::read_dir(&sdir).map_err(io_err(&sdir))?.flatten() {
            let d = format!("sha256:{}", e.file_name().to_string_lossy());
            if !live_diffs.contains(&d) && old_enough(&e.path()) {
                fs::remove_dir_all(e.path()).map_err(io_err(e.path()))?;
                rep.snapshots += 1;
            }
        }
        // A sync marker outlives its snapshot only if a crash or a prune came between them.
        let pdir = self.root.join("snapshots-pending");
        for e in fs::read_dir(&pdir).into_iter().flatten().flatten() {
            if !sdir.join(e.file_name()).exists() && old_enough(&e.path()) {
                let _ = fs::remove_file(e.path());
            }
        }
        if !dead.is_empty() {
            let w = self.db.begin_write()?;
            {
                let mut layers = w.open_table(LAYERS).map_err(dbe)?;
                for d in &dead {
                    layers.remove(d.as_str()).map_err(dbe)?;
                }
            }
            w.commit().map_err(dbe)?;
        }
        // After the snapshots: an object that only they linked is unused now. Its age is its
        // ctime (last linked or unlinked), not its mtime, which is the copied file's.
        let pooled = self.file_pool().prune((!exclusive).then_some(GRACE));
        rep.pool_files = pooled.files;
        rep.reclaimed += pooled.bytes;
        if opts.build_cache {
            // The contexts' hash memos are build cache too (BuildKit's prune drops its context
            // records): without them a build hashes its context afresh, as a cold one does.
            for e in fs::read_dir(self.context_hash_dir())
                .into_iter()
                .flatten()
                .flatten()
            {
                if old_enough(&e.path()) {
                    rep.reclaimed += e.metadata().map(|m| m.len()).unwrap_or(0);
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        let tmp = self.tmp_dir();
        for e in fs::read_dir(&tmp).map_err(io_err(&tmp))?.flatten() {
            if old_enough(&e.path()) {
                rep.reclaimed += e.metadata().map(|m| m.len()).unwrap_or(0);
                let _ = if e.path().is_dir() {
                    fs::remove_dir_all(e.path())
                } else {
                    fs::remove_file(e.path())
                };
            }
        }
        rep.blobs = dead;
        drop(lock);
        Ok(rep)
    }
}

impl From<redb::Error> for Error {
    fn from(e: redb::Error) -> Self {
        Error::Db(e.to_string())
    }
}

/// Every key of `table`, in order (rows that cannot be read are passed over).
fn keys<V: redb::Value + 'static>(
    table: &impl ReadableTable<&'static str, V>,
) -> Result<Vec<String>> {
    Ok(table
        .iter()
        .map_err(dbe)?
        .filter_map(|r| r.ok())
        .map(|(k, _)| k.value().to_string())
        .collect())
}
