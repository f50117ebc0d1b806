//! A layer step: its cache lookup, its run, and how its change becomes a layer (a blob in line,
//! a blob compressed while the next steps run, or only a snapshot).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use cairn_dockerfile::{Step, StepKind};
use cairn_layer::{Compression, DiffSource, LayerDescriptor};
use cairn_sandbox::Rootfs;

use super::{Solver, StageState};
use crate::copy;
use crate::error::{io_err, Error, Result};
use crate::key::{CacheKey, CacheRecord};
use crate::progress::Vertex;

/// What a step left: its layer (`None`: no change), or a layer whose snapshot is in the store
/// and whose blob is still to be compressed ([`Solver::compress_deferred`]).
pub(super) enum Committed {
    Layer(Option<LayerDescriptor>),
    Deferred { diff_id: String },
}

/// Whether `l` was made by [`stand_in`].
pub(super) fn is_stand_in(l: &LayerDescriptor) -> bool {
    l.media_type.is_empty()
}

/// The descriptor of a layer that has no blob (yet): found by its diffID, `media_type` empty.
pub(super) fn stand_in(diff_id: &str) -> LayerDescriptor {
    LayerDescriptor {
        digest: diff_id.to_string(),
        diff_id: diff_id.to_string(),
        size: 0,
        media_type: String::new(),
    }
}

fn is_empty_dir(dir: &Path) -> Result<bool> {
    Ok(fs::read_dir(dir).map_err(io_err(dir))?.next().is_none())
}

/// When a layer step's blob is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BlobWhen {
    /// Not in this build: the layer's stage is not in the image, its snapshot is the layer.
    Never,
    /// By a thread of the stage, from the snapshot, while the next steps run.
    Deferred,
    /// In the step, in the pass that gives its diffID: the target's steps after its last RUN,
    /// which nothing but other file copies would overlap (deferred, its tar is written twice).
    InLine,
}

/// Names the upper dirs handed to the store within this process.
static UPPER_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The diffID of an empty tar (two zero blocks), what an empty diff writes.
fn empty_tar_diff_id() -> String {
    cairn_layer::hash::sha256_digest(&[0u8; 1024])
}

impl Solver<'_> {
    /// Looks a layer step up in the cache, runs it on a miss; reports the vertex's end.
    pub(super) fn layer_step(
        &self,
        name: &str,
        step: &Step,
        st: &StageState,
        build_time: i64,
        v: Vertex,
        blob: BlobWhen,
    ) -> Result<Committed> {
        let hit = if self.req.no_cache {
            None
        } else {
            self.cache_hit(&st.key)
                .inspect_err(|e| self.reporter.failed(v, e.to_string()))?
        };
        if let Some(rec) = hit {
            self.reporter.cached(v);
            return Ok(match rec.layer {
                Some(l) if is_stand_in(&l) => Committed::Deferred { diff_id: l.diff_id },
                layer => Committed::Layer(layer),
            });
        }
        let result = self
            .execute(name, step, st, build_time, v, blob == BlobWhen::InLine)
            .and_then(|committed| {
                match &committed {
                    Committed::Layer(layer) => {
                        let rec = CacheRecord {
                            layer: layer.clone(),
                        };
                        let blobs: Vec<String> = layer.iter().map(|l| l.digest.clone()).collect();
                        self.store
                            .cache_put(st.key.as_str(), &rec.encode(), &blobs)?;
                    }
                    // Recorded now, as its snapshot; an exported layer is recorded once its
                    // blob is written (`compress_deferred`).
                    Committed::Deferred { diff_id } if blob == BlobWhen::Never => {
                        let rec = CacheRecord {
                            layer: Some(stand_in(diff_id)),
                        };
                        self.store
                            .cache_put_snapshot(st.key.as_str(), &rec.encode(), diff_id)?;
                    }
                    Committed::Deferred { .. } => {}
                }
                Ok(committed)
            });
        match &result {
            Ok(_) => self.reporter.done(v),
            Err(e) => self.reporter.failed(v, e.to_string()),
        }
        result
    }

    /// The cached result of `key`, if there is one whose layer is still in the store (a record
    /// that outlived its blob is a miss, not an error later).
    fn cache_hit(&self, key: &CacheKey) -> Result<Option<CacheRecord>> {
        let Some(bytes) = self.store.cache_get(key.as_str())? else {
            return Ok(None);
        };
        let Some(rec) = CacheRecord::decode(&bytes) else {
            return Ok(None);
        };
        let present = match &rec.layer {
            None => true,
            // Only a snapshot holds it (see `Solver::exported`).
            Some(l) if is_stand_in(l) => self.store.has_snapshot(&l.diff_id)?,
            Some(l) => self.store.has_blob(&l.digest),
        };
        Ok(present.then_some(rec))
    }

    /// Prepares a root over the stage's layers, applies the step, and writes the change.
    ///
    /// An overlay step's change is only hashed here (its diffID) and its upper dir becomes the
    /// snapshot at once; the blob is compressed from that snapshot by [`Committed::Deferred`]'s
    /// job, which runs while the build's next steps do (BuildKit does not compress in line
    /// either: its build cache holds uncompressed snapshots). With `blob_in_line` (see
    /// [`BlobWhen::InLine`]) the blob is written here instead, in the same pass as the diffID.
    fn execute(
        &self,
        name: &str,
        step: &Step,
        st: &StageState,
        build_time: i64,
        v: Vertex,
        blob_in_line: bool,
    ) -> Result<Committed> {
        let rootfs = self.prepare(&st.layers)?;
        let mut pool_ops = copy::pool::PoolOps::default();
        match &step.kind {
            StepKind::Run(run) => self.run_step(name, step, run, &st.cfg, &rootfs, v)?,
            StepKind::Copy(c) => pool_ops = self.copy_step(step, c, &st.cfg, &rootfs)?,
            StepKind::Workdir(_) => self.workdir_step(step, &st.cfg, &rootfs)?,
            _ => return Ok(Committed::Layer(None)),
        }
        let source = rootfs.diff_source();
        let DiffSource::OverlayUpper(upper) = source else {
            // A native root: compared with its pristine copy and written in line.
            let desc = self
                .store
                .write_layer(source, Compression::Gzip, &self.layer_options(build_time))
                .map_err(|e| self.layer_error(e))?;
            rootfs.cleanup()?;
            return Ok(Committed::Layer(
                (desc.diff_id != empty_tar_diff_id()).then_some(desc),
            ));
        };
        if !pool_ops.is_empty() {
            // Big files from the store's file pool: linked over their placeholders, or copied
            // ones linked into the pool (see `copy::pool`).
            pool_ops
                .apply(rootfs.path(), upper, &self.store.file_pool())
                .map_err(|e| self.step_error(step, e.to_string()))?;
        }
        let written = if blob_in_line {
            self.blob_of(upper, build_time)?
                .map(|desc| (desc.diff_id.clone(), Some(desc)))
        } else {
            self.diff_id_of(upper, build_time)?.map(|d| (d, None))
        };
        let Some((diff_id, blob)) = written else {
            rootfs.cleanup()?;
            return Ok(Committed::Layer(None));
        };
        let tree = self.upper_tree_path();
        if !rootfs.into_upper(&tree)? {
            return Err(Error::Other(format!(
                "{name}: the overlay root has no upper dir to keep"
            )));
        }
        // Finds an existing snapshot (and drops the tree) under the snapshot's lock.
        self.store
            .adopt_upper_as_snapshot(&tree, &diff_id, &self.layer_options(build_time))?;
        Ok(match blob {
            Some(desc) => Committed::Layer(Some(desc)),
            None => Committed::Deferred { diff_id },
        })
    }

    /// The change in the overlay upper dir `upper` written as a gzip blob into the store, with
    /// its diffID; `None` when it changed nothing.
    fn blob_of(&self, upper: &Path, build_time: i64) -> Result<Option<LayerDescriptor>> {
        if is_empty_dir(upper)? {
            return Ok(None);
        }
        let desc = self
            .store
            .write_layer(
                DiffSource::OverlayUpper(upper),
                Compression::Gzip,
                &self.layer_options(build_time),
            )
            .map_err(|e| self.layer_error(e))?;
        Ok((desc.diff_id != empty_tar_diff_id()).then_some(desc))
    }

    /// The diffID of the change in the overlay upper dir `upper` (the tar is hashed, not kept);
    /// `None` when it changed nothing.
    fn diff_id_of(&self, upper: &Path, build_time: i64) -> Result<Option<String>> {
        if is_empty_dir(upper)? {
            return Ok(None);
        }
        let desc = cairn_layer::write_layer(
            DiffSource::OverlayUpper(upper),
            Compression::None,
            &self.layer_options(build_time),
            std::io::sink(),
        )
        .map_err(|e| self.layer_error(e.into()))?;
        Ok((desc.diff_id != empty_tar_diff_id()).then_some(desc.diff_id))
    }

    /// Compresses the layer `diff_id` from its snapshot into the store and records `key`'s
    /// cache entry: the deferred half of [`Solver::execute`]. The tar is written again from the
    /// snapshot, which the store made from the same upper dir minus what no tar carries; a
    /// different diffID would mean they differ, and fails the build rather than record it.
    pub(super) fn compress_deferred(
        &self,
        name: &str,
        key: &CacheKey,
        diff_id: &str,
        build_time: i64,
    ) -> Result<LayerDescriptor> {
        let desc = self
            .store
            .write_layer(
                DiffSource::OverlayUpper(&self.store.snapshot_path(diff_id)),
                Compression::Gzip,
                &self.layer_options(build_time),
            )
            .map_err(|e| self.layer_error(e))?;
        if desc.diff_id != diff_id {
            return Err(Error::Other(format!(
                "{name}: the layer written from the snapshot ({}) differs from the step's change ({diff_id})",
                desc.diff_id
            )));
        }
        let rec = CacheRecord {
            layer: Some(desc.clone()),
        };
        self.store.cache_put(
            key.as_str(),
            &rec.encode(),
            std::slice::from_ref(&desc.digest),
        )?;
        Ok(desc)
    }

    /// A fresh path in the scratch dir for an upper dir on its way to the store.
    fn upper_tree_path(&self) -> PathBuf {
        self.scratch.join(format!(
            "upper-{}-{}",
            std::process::id(),
            UPPER_SEQ.fetch_add(1, Ordering::Relaxed)
        ))
    }

    pub(super) fn prepare(&self, layers: &[LayerDescriptor]) -> Result<Rootfs> {
        let lowers = layers
            .iter()
            .map(|l| self.store.snapshot(l))
            .collect::<Result<Vec<PathBuf>, _>>()?;
        Ok(Rootfs::prepare(&lowers, &self.scratch, self.snapshotter)?)
    }
}
