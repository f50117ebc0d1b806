//! Solve: build the plan's stages, independent ones at the same time, each step looked up in the
//! cache before anything is prepared.
//!
//! One thread per stage; a stage waits for the stages it reads (its base, `COPY --from`,
//! `RUN --mount from=`) and each stage is built once however many read it. Every ready RUN runs
//! at once, as in BuildKit (whose solver has no limit unless `max-parallelism` is configured):
//! RUNs often wait on the network or sleep, and the kernel shares the CPUs among those that
//! don't. `CAIRN_MAX_PARALLELISM=N` caps them, like BuildKit's setting.
//!
//! A layer-producing step (RUN, COPY/ADD, WORKDIR other than `/`) is looked up by its
//! [`CacheKey`]; a hit reuses the recorded layer and prepares nothing. A miss prepares a root
//! filesystem over the stage's layers' snapshots, changes it, and writes the diff as a layer. An
//! empty diff makes no layer: the history entry is then marked `empty_layer`, as BuildKit's
//! exporter does (it drops the empty gzip layer and flags the entry).
//!
//! # Times and reproducibility
//!
//! The build time is `SOURCE_DATE_EPOCH` when given, else the `created` time of the stage's base
//! image (the Unix epoch for `FROM scratch`); never the wall clock. It is the config's `created`,
//! every new history entry's `created`, and the upper bound of every file mtime in new layers.
//! So the same Dockerfile, context, arguments and base images give the same image ID anywhere.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cairn_dockerfile::{
    Base, Command, Mount, NetworkMode, Plan, PlanOptions, Source, Stage, Step, StepKind,
};
use cairn_layer::{LayerDescriptor, WriteOptions};
use cairn_sandbox::{Network, SnapshotterKind};
use cairn_store::Store;

use crate::base::{BaseImage, BaseResolver};
use crate::context::BuildContext;
use crate::copy::{self, CopyRequest, SourceRoot};
use crate::error::{io_err, Error, Result};
use crate::image::{self, History, ImageConfig, RootFs, StageMeta, HISTORY_COMMENT};
use crate::key::{digest_parts, CacheKey};
use crate::progress::{Reporter, Vertex};

// Child modules: they extend `Solver` and use its private fields and helpers.
mod layer;
mod mounts;
mod paths;
mod sched;
mod steps;

use layer::{is_stand_in, stand_in, BlobWhen, Committed};
use paths::join_inside;
pub use paths::mkdir_in_root;
use sched::{lock, max_parallel_runs, Semaphore, Slots};
use steps::RunExtras;

/// Everything a build needs besides the store.
#[derive(Debug, Clone, Default)]
pub struct BuildRequest<'a> {
    /// The Dockerfile's name, for messages (`Dockerfile`, `-` for stdin).
    pub dockerfile_name: String,
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// The build context; `None` when the Dockerfile came on stdin without one.
    pub context: Option<&'a BuildContext>,
    /// `--target`.
    pub target: Option<String>,
    /// `--build-arg`s, values resolved.
    pub build_args: BTreeMap<String, String>,
    /// `--platform` (`os/arch`); None = the host's.
    pub platform: Option<String>,
    /// `--no-cache`: run every step (results are still recorded in the cache).
    pub no_cache: bool,
    /// `--network`: the default for RUN.
    pub network: Network,
    /// `SOURCE_DATE_EPOCH`.
    pub source_date_epoch: Option<i64>,
    /// `--label`s, applied to the final image.
    pub labels: BTreeMap<String, String>,
    /// `--secret`s by id, for `RUN --mount=type=secret`. Never part of a cache key, a layer or
    /// the history.
    pub secrets: BTreeMap<String, SecretValue>,
    /// `--ssh`: agent sockets by id, for `RUN --mount=type=ssh`.
    pub ssh: BTreeMap<String, PathBuf>,
    /// `--allow security.insecure`: `RUN --security=insecure` may run.
    pub allow_insecure: bool,
    /// Every stage's layers get a blob (`--cache-to mode=max` sends them all); otherwise only
    /// the target's and its bases' do, and the other stages' layers stay snapshots.
    pub blobs_for_all_stages: bool,
    /// The name of the vertex the caller's export opens first (`exporting to image`): started
    /// here as soon as the target's steps are done, so that the wait for its layers' blobs is
    /// seen and timed in it, as BuildKit's `exporting layers` is. Handed back in
    /// [`BuildOutput::export_vertex`].
    pub export_vertex_name: Option<String>,
}

/// The bytes of a build secret; `Debug` does not show them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretValue(pub Vec<u8>);

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretValue(<{} bytes>)", self.0.len())
    }
}

/// What a build made: the target stage's image, not yet stored or exported.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    /// The image config.
    pub config: ImageConfig,
    /// Its canonical bytes; their sha256 is the image ID.
    pub config_json: Vec<u8>,
    /// `sha256:…` of `config_json`.
    pub image_id: String,
    /// Layers, bottom first (base image layers included).
    pub layers: Vec<LayerDescriptor>,
    /// Cache keys of the layer steps of every stage built, hits included (what
    /// `--cache-to mode=max` exports).
    pub cache_keys: Vec<CacheKey>,
    /// The same for the target stage only (`mode=min`).
    pub target_cache_keys: Vec<CacheKey>,
    /// The vertex named by [`BuildRequest::export_vertex_name`], running since the target's
    /// steps ended; the export goes on in it.
    pub export_vertex: Option<Vertex>,
}

/// The image a stage produced, as later stages and the exporters see it.
#[derive(Debug, Clone)]
pub struct StageResult {
    /// The stage's image config (history and rootfs filled in).
    pub config: ImageConfig,
    /// Its layers, bottom first.
    pub layers: Vec<LayerDescriptor>,
    /// The cache key of its last step.
    pub key: CacheKey,
    /// A digest of its file system (of its layers' diffIDs): what `COPY --from` of it depends on.
    pub content: String,
}

/// Parses, plans and builds `req`, reporting progress to `reporter`.
pub fn build(
    store: &Store,
    resolver: &dyn BaseResolver,
    req: &BuildRequest<'_>,
    reporter: &Reporter<'_>,
) -> Result<BuildOutput> {
    let v = reporter.start(format!(
        "[internal] load build definition from {}",
        req.dockerfile_name
    ));
    let df = match cairn_dockerfile::parse(&req.dockerfile_name, &req.dockerfile) {
        Ok(df) => {
            reporter.done(v);
            df
        }
        Err(e) => {
            reporter.failed(v, e.to_string());
            return Err(e.into());
        }
    };

    // The planner asks for base images' ENV and ONBUILD; remember what it saw so each image is
    // looked up once, and so lookup errors are reported as errors rather than "not found".
    let seen: Mutex<HashMap<String, Option<BaseImage>>> = Mutex::new(HashMap::new());
    let lookup_error: Mutex<Option<Error>> = Mutex::new(None);
    let resolve = |reference: &str| -> Option<BaseImage> {
        if let Some(found) = lock(&seen).get(reference) {
            return found.clone();
        }
        let found = match resolver.resolve(reference, req.platform.as_deref()) {
            Ok(f) => f,
            Err(e) => {
                lock(&lookup_error).get_or_insert(e);
                None
            }
        };
        lock(&seen).insert(reference.to_string(), found.clone());
        found
    };
    let lookup = |reference: &str| {
        resolve(reference).map(|img| cairn_dockerfile::BaseImageInfo {
            env: img
                .config
                .config
                .env
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k.to_string(), v.to_string())
                })
                .collect(),
            onbuild: img.config.config.on_build.clone().unwrap_or_default(),
        })
    };
    let opts = PlanOptions {
        target: req.target.clone(),
        build_args: req.build_args.clone(),
        target_platform: req.platform.clone(),
        build_platform: None,
    };
    let plan = cairn_dockerfile::plan(&df, &opts, &lookup)?;
    if let Some(e) = lock(&lookup_error).take() {
        return Err(e);
    }
    for w in &plan.warnings {
        reporter.warning(format!(
            "{}:{}: {}",
            req.dockerfile_name, w.span.line, w.message
        ));
    }

    let mut bases = HashMap::new();
    for reference in image_references(&plan) {
        let v = reporter.start(format!(
            "[internal] load metadata for {}",
            crate::export::normalize_reference(&reference)
        ));
        match resolve(&reference) {
            Some(img) => {
                reporter.done(v);
                bases.insert(reference, Arc::new(img));
            }
            None => {
                let e = lock(&lookup_error)
                    .take()
                    .unwrap_or(Error::BaseImageNotFound { reference });
                reporter.failed(v, e.to_string());
                return Err(e);
            }
        }
    }
    if let Some(ctx) = req.context {
        if let Some(f) = ctx.ignore_file() {
            let v = reporter.start(format!(
                "[internal] load {}",
                f.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ));
            reporter.done(v);
        }
    }

    let scratch = store.root().join("tmp");
    fs::create_dir_all(&scratch).map_err(io_err(&scratch))?;
    // Without a context (`cairn build - < Dockerfile`), COPY still works for what needs none
    // (heredocs, URLs); for files it fails as "not found in build context", as in BuildKit.
    let empty_dir;
    let empty_context;
    let context = match req.context {
        Some(c) => Some(c),
        None => {
            empty_dir = tempfile::Builder::new()
                .prefix("empty-context-")
                .tempdir_in(&scratch)
                .map_err(io_err(&scratch))?;
            empty_context = BuildContext::open(empty_dir.path(), None)
                .map_err(|e| Error::Other(format!("empty build context: {e}")))?;
            Some(&empty_context)
        }
    };
    let solver = Solver {
        store,
        req,
        context,
        plan: &plan,
        bases,
        reporter,
        snapshotter: SnapshotterKind::detect_for(&scratch),
        scratch,
        run_slots: Semaphore::new(max_parallel_runs()),
        slots: Slots::new(plan.stages.len()),
        cancelled: Arc::new(AtomicBool::new(false)),
        errors: Mutex::new(Vec::new()),
        stage_count: plan.stages.len() + plan.skipped.len(),
        used_keys: Mutex::new(Vec::new()),
        written: Mutex::new(HashMap::new()),
        exported: exported_stages(&plan, req.blobs_for_all_stages),
    };
    let (target, export_vertex) = solver.solve_all()?;

    let mut config = target.config.clone();
    if !req.labels.is_empty() {
        let labels = config.config.labels.get_or_insert_with(BTreeMap::new);
        labels.extend(req.labels.clone());
    }
    // The store writes configs as canonical JSON (sorted keys); so do we, so that the ID computed
    // here is the one the store gives the image.
    let value = serde_json::to_value(&config).map_err(|e| Error::Other(e.to_string()))?;
    let config_json = cairn_store::canonical_json(&value);
    let image_id = cairn_layer::hash::sha256_digest(&config_json);
    let used = std::mem::take(&mut *lock(&solver.used_keys));
    let last = plan.stages.len().saturating_sub(1);
    Ok(BuildOutput {
        config,
        config_json,
        image_id,
        layers: target.layers.clone(),
        target_cache_keys: used
            .iter()
            .filter(|(pos, _)| *pos == last)
            .map(|(_, k)| k.clone())
            .collect(),
        cache_keys: used.into_iter().map(|(_, k)| k).collect(),
        export_vertex,
    })
}

/// Every image the plan reads: stage bases, `COPY --from=image`, `RUN --mount from=image`.
fn image_references(plan: &Plan) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |r: &str| {
        if !out.iter().any(|x| x == r) {
            out.push(r.to_string());
        }
    };
    for stage in &plan.stages {
        if let Base::Image(r) = &stage.base {
            add(r);
        }
        for step in &stage.steps {
            match &step.kind {
                StepKind::Copy(c) => {
                    if let Some(Source::Image(r)) = &c.from {
                        add(r);
                    }
                }
                StepKind::Run(run) => {
                    for m in &run.mounts {
                        if let Mount::Bind {
                            from: Some(Source::Image(r)),
                            ..
                        }
                        | Mount::Cache {
                            from: Some(Source::Image(r)),
                            ..
                        } = m
                        {
                            add(r);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    out
}

struct Solver<'a> {
    store: &'a Store,
    req: &'a BuildRequest<'a>,
    context: Option<&'a BuildContext>,
    plan: &'a Plan,
    bases: HashMap<String, Arc<BaseImage>>,
    reporter: &'a Reporter<'a>,
    snapshotter: SnapshotterKind,
    scratch: PathBuf,
    run_slots: Semaphore,
    slots: Slots,
    cancelled: Arc<AtomicBool>,
    errors: Mutex<Vec<Error>>,
    stage_count: usize,
    /// (stage position, key) of every layer step looked up or run, for cache export.
    used_keys: Mutex<Vec<(usize, CacheKey)>>,
    /// diffID → the blob a background compression wrote for it.
    written: Mutex<HashMap<String, LayerDescriptor>>,
    /// By stage position: whether the stage's layers can be in the built image (the target and
    /// the stages it is built `FROM`), so need a blob. The others' layers are only mounted
    /// (`COPY --from`, `FROM` of a later build), like BuildKit's uncompressed build cache.
    exported: Vec<bool>,
}

/// [`Solver::exported`] for `plan`: the target (the last stage) and its `FROM` chain; every
/// stage with `all`.
fn exported_stages(plan: &Plan, all: bool) -> Vec<bool> {
    let mut out = vec![all; plan.stages.len()];
    let mut at = plan.stages.len().checked_sub(1);
    while let Some(pos) = at {
        out[pos] = true;
        at = match plan.stages[pos].base {
            Base::Stage(index) => plan.stages.iter().position(|s| s.index == index),
            _ => None,
        };
    }
    out
}

/// A signal came, or (`cancelled`) another stage failed.
fn stop_requested(cancelled: &AtomicBool) -> bool {
    cancelled.load(Ordering::SeqCst) || cairn_sandbox::termination_signal().is_some()
}

/// A stage's state while its steps are applied.
struct StageState {
    cfg: ImageConfig,
    layers: Vec<LayerDescriptor>,
    key: CacheKey,
    meta: StageMeta,
}

impl<'a> Solver<'a> {
    /// How this build writes its layers: mtimes clamped to `build_time`; a layer being written
    /// stops when the build is cancelled or interrupted (a big one takes seconds).
    fn layer_options(&self, build_time: i64) -> WriteOptions {
        let cancelled = self.cancelled.clone();
        WriteOptions {
            clamp_mtime: Some(build_time),
            cancel: Some(Arc::new(move || stop_requested(&cancelled))),
            ..Default::default()
        }
    }

    /// A store error of a layer this build wrote, with a layer stopped by
    /// [`Solver::layer_options`]' cancel made the build's own reason to stop.
    fn layer_error(&self, e: cairn_store::Error) -> Error {
        match e {
            cairn_store::Error::Layer(cairn_layer::Error::Cancelled) => self.stopped(),
            e => e.into(),
        }
    }

    /// Whether the build should stop: a signal came, or another stage failed.
    fn should_stop(&self) -> bool {
        stop_requested(&self.cancelled)
    }

    /// Why work stopped when [`Solver::should_stop`] said so.
    fn stopped(&self) -> Error {
        match cairn_sandbox::termination_signal() {
            Some(signal) => Error::Interrupted { signal },
            None => Error::Cancelled,
        }
    }

    /// Builds every stage of the plan and returns the target's (the last) result.
    fn solve_all(&self) -> Result<(Arc<StageResult>, Option<Vertex>)> {
        let last = self
            .plan
            .stages
            .len()
            .checked_sub(1)
            .ok_or_else(|| Error::Other("the Dockerfile has no stage to build".into()))?;
        let export_vertex = std::thread::scope(|s| {
            for pos in 0..self.plan.stages.len() {
                s.spawn(move || {
                    // A panic must still fill the slot: stages waiting on this one would
                    // otherwise wait forever.
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        self.solve_stage(pos, s)
                    }))
                    .unwrap_or_else(|p| {
                        let what = p
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| p.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        Err(Error::Other(format!(
                            "internal error (a bug in cairn): {what}"
                        )))
                    });
                    match r {
                        Ok(res) => self.slots.set(pos, Some(Arc::new(res))),
                        Err(e) => {
                            self.cancelled.store(true, Ordering::SeqCst);
                            if !matches!(e, Error::Cancelled) {
                                lock(&self.errors).push(e);
                            }
                            self.slots.set(pos, None);
                        }
                    }
                });
            }
            // The target's steps are done; the scope still waits for the blobs of its layers.
            let name = self.req.export_vertex_name.as_ref()?;
            self.slots.wait(last).ok()?;
            Some(self.reporter.start(name.clone()))
        });
        if let Some(e) = lock(&self.errors).drain(..).next() {
            if let Some(v) = export_vertex {
                self.reporter.failed(v, e.to_string());
            }
            return Err(e);
        }
        let target = self.slots.wait(last)?;
        // Every compression has been joined with the scope: the stand-ins become descriptors.
        let written = lock(&self.written);
        let layers = target
            .layers
            .iter()
            .map(|l| match is_stand_in(l) {
                false => Ok(l.clone()),
                true => written.get(&l.diff_id).cloned().ok_or_else(|| {
                    Error::Other(format!(
                        "internal error: layer {} was not written",
                        l.diff_id
                    ))
                }),
            })
            .collect::<Result<Vec<_>>>()?;
        let result = Arc::new(StageResult {
            layers,
            ..(*target).clone()
        });
        Ok((result, export_vertex))
    }

    /// Position in `plan.stages` of the stage with Dockerfile index `index`.
    fn stage_pos(&self, index: usize) -> Result<usize> {
        self.plan
            .stages
            .iter()
            .position(|s| s.index == index)
            .ok_or_else(|| Error::Other(format!("stage {index} is not part of the plan")))
    }

    fn stage_result(&self, index: usize) -> Result<Arc<StageResult>> {
        self.slots.wait(self.stage_pos(index)?)
    }

    /// BuildKit's stage label: the name, `stage-N` for unnamed stages of multi-stage files, or
    /// nothing for a single-stage file.
    fn stage_label(&self, stage: &Stage) -> String {
        match &stage.name {
            Some(n) => format!("{n} "),
            None if self.stage_count > 1 => format!("stage-{} ", stage.index),
            None => String::new(),
        }
    }

    /// Builds the stage at `pos`. The blobs of its overlay steps are compressed by threads of
    /// `bg`, the whole build's scope: a stage that reads this one starts on its snapshots
    /// without waiting for them, and its result lists stand-ins (`media_type` empty) until
    /// [`Solver::solve_all`] swaps in what the threads wrote.
    fn solve_stage<'s>(
        &'s self,
        pos: usize,
        bg: &'s std::thread::Scope<'s, '_>,
    ) -> Result<StageResult> {
        let stage = &self.plan.stages[pos];
        let label = self.stage_label(stage);
        let layer_steps = stage
            .steps
            .iter()
            .filter(|s| {
                matches!(
                    s.kind,
                    StepKind::Run(_) | StepKind::Copy(_) | StepKind::Workdir(_)
                )
            })
            .count();
        let total = layer_steps + usize::from(matches!(stage.base, Base::Image(_)));
        let width = total.to_string().len();
        let mut n = 0usize;
        let mut vertex_name = |text: &str| {
            n += 1;
            format!("[{label}{n:>width$}/{total}] {text}")
        };

        let platform = stage.platform.clone().or_else(|| self.req.platform.clone());
        let mut st = match &stage.base {
            Base::Scratch => StageState {
                cfg: ImageConfig::scratch(platform.as_deref()),
                layers: Vec::new(),
                key: CacheKey::scratch(platform.as_deref().unwrap_or("")),
                meta: StageMeta::default(),
            },
            Base::Image(reference) => {
                let img = self.base(reference)?;
                let v = self.reporter.start(vertex_name(&format!(
                    "FROM {}",
                    crate::export::normalize_reference(reference)
                )));
                self.reporter.cached(v);
                StageState {
                    cfg: img.config.clone(),
                    layers: img.layers.clone(),
                    key: CacheKey::image(&img.id),
                    meta: StageMeta::default(),
                }
            }
            Base::Stage(index) => {
                let dep = self.stage_result(*index)?;
                StageState {
                    cfg: dep.config.clone(),
                    layers: dep.layers.clone(),
                    key: dep.key.clone(),
                    meta: StageMeta::default(),
                }
            }
        };
        // The base's ONBUILD triggers were inserted into this stage by the planner: they are
        // consumed, not inherited (docker clears them).
        st.cfg.config.on_build = None;
        let build_time = self
            .req
            .source_date_epoch
            .or_else(|| st.cfg.created.as_deref().and_then(parse_time))
            .unwrap_or(0);
        let created = format_time(build_time);

        // The target's steps after its last RUN write their blobs in line: a deferred blob would
        // overlap only them (file copies, on the same cores), and costs a second tar.
        let last_run = stage
            .steps
            .iter()
            .rposition(|s| matches!(s.kind, StepKind::Run(_)));
        let in_line_from = match last_run {
            Some(r) => r + 1,
            None => 0,
        };
        for (i, step) in stage.steps.iter().enumerate() {
            if self.should_stop() {
                return Err(self.stopped());
            }
            let applied = image::apply_step(&mut st.cfg, &mut st.meta, &step.kind, &step.original);
            let mut empty = true;
            if applied.makes_layer {
                // A step that reads another stage starts when that stage is done, so that its
                // time is its own and the live view shows it only once it runs.
                for index in stages_read(step) {
                    self.stage_result(index)?;
                }
                let name = vertex_name(&display(step));
                let v = self.reporter.start(name.clone());
                // Digesting the inputs is part of the step (BuildKit's "calculate checksum"): a
                // missing source fails this vertex.
                let inputs = self.step_inputs(step, &st.cfg).inspect_err(|e| {
                    self.reporter.failed(v, e.to_string());
                })?;
                st.key = st.key.child(&step.kind, &inputs);
                let blob = if !self.exported[pos] {
                    BlobWhen::Never
                } else if pos + 1 == self.plan.stages.len() && i >= in_line_from {
                    BlobWhen::InLine
                } else {
                    BlobWhen::Deferred
                };
                let committed = self.layer_step(&name, step, &st, build_time, v, blob)?;
                lock(&self.used_keys).push((pos, st.key.clone()));
                match committed {
                    Committed::Layer(Some(l)) => {
                        st.layers.push(l);
                        empty = false;
                    }
                    Committed::Layer(None) => {}
                    Committed::Deferred { diff_id } if blob == BlobWhen::Never => {
                        // Never in this build's image: the snapshot is the layer.
                        st.layers.push(stand_in(&diff_id));
                        empty = false;
                    }
                    Committed::Deferred { diff_id } => {
                        // Stands in until the blob is written: the next steps mount the
                        // snapshot, which is found by diffID.
                        st.layers.push(stand_in(&diff_id));
                        let key = st.key.clone();
                        bg.spawn(move || {
                            match self.compress_deferred(&name, &key, &diff_id, build_time) {
                                Ok(desc) => {
                                    lock(&self.written).insert(diff_id, desc);
                                }
                                Err(e) => {
                                    self.cancelled.store(true, Ordering::SeqCst);
                                    // Stopped for another failure: that one is the error.
                                    if !matches!(e, Error::Cancelled) {
                                        lock(&self.errors).push(e);
                                    }
                                }
                            }
                        });
                        empty = false;
                    }
                }
            } else {
                st.key = st.key.child(&step.kind, &self.step_inputs(step, &st.cfg)?);
            }
            if !applied.makes_layer && matches!(step.kind, StepKind::Workdir(_)) {
                // WORKDIR / still counts as a step of the stage in BuildKit's numbering.
                let v = self.reporter.start(vertex_name(&display(step)));
                self.reporter.done(v);
            }
            if applied.record {
                st.cfg.history.push(History {
                    created: Some(created.clone()),
                    created_by: Some(applied.created_by),
                    comment: Some(HISTORY_COMMENT.into()),
                    empty_layer: empty,
                });
            }
        }

        let diff_ids: Vec<String> = st.layers.iter().map(|l| l.diff_id.clone()).collect();
        st.cfg.rootfs = RootFs {
            diff_ids: diff_ids.clone(),
            ..RootFs::default()
        };
        st.cfg.created = Some(created);
        let parts: Vec<&str> = diff_ids.iter().map(String::as_str).collect();
        Ok(StageResult {
            config: st.cfg,
            layers: st.layers,
            key: st.key,
            content: digest_parts(&parts),
        })
    }

    fn base(&self, reference: &str) -> Result<Arc<BaseImage>> {
        self.bases
            .get(reference)
            .cloned()
            .ok_or_else(|| Error::BaseImageNotFound {
                reference: reference.to_string(),
            })
    }

    /// The digests a step reads besides its parent, for its cache key.
    fn step_inputs(&self, step: &Step, cfg: &ImageConfig) -> Result<Vec<String>> {
        let mut inputs = Vec::new();
        match &step.kind {
            StepKind::Copy(c) => {
                inputs.push(self.source_digest(step, c.from.as_ref(), |ctx| {
                    let workdir = cfg.workdir();
                    let req = CopyRequest {
                        copy: c,
                        workdir: &workdir,
                        owner: None,
                    };
                    copy::inputs_digest(&req, &SourceRoot::Context(ctx))
                        .map_err(|e| self.step_error(step, e.to_string()))
                })?);
            }
            StepKind::Run(run) => {
                inputs.push(format!("network={:?}", self.network(run.network.as_ref())));
                for m in &run.mounts {
                    if let Mount::Bind { source, from, .. } = m {
                        mounts::check_bind_source(self, step, m)?;
                        let src = source.clone().unwrap_or_else(|| ".".into());
                        inputs.push(self.source_digest(step, from.as_ref(), |ctx| {
                            let c = synthetic_copy(&src);
                            let req = CopyRequest {
                                copy: &c,
                                workdir: "/",
                                owner: None,
                            };
                            copy::inputs_digest(&req, &SourceRoot::Context(ctx))
                                .map_err(|e| self.step_error(step, e.to_string()))
                        })?);
                    }
                }
            }
            _ => {}
        }
        Ok(inputs)
    }

    /// The digest of a source (`--from`): the context as `ctx_digest` computes it, a stage's
    /// content, or an image's ID.
    fn source_digest(
        &self,
        step: &Step,
        from: Option<&Source>,
        ctx_digest: impl FnOnce(&BuildContext) -> Result<String>,
    ) -> Result<String> {
        match from {
            None | Some(Source::Context) => {
                let ctx = self.context.ok_or_else(|| {
                    self.step_error(
                        step,
                        "no build context (the Dockerfile came on stdin)".into(),
                    )
                })?;
                Ok(format!("context:{}", ctx_digest(ctx)?))
            }
            Some(Source::Stage(i)) => Ok(format!("stage:{}", self.stage_result(*i)?.content)),
            Some(Source::Image(r)) => Ok(format!("image:{}", self.base(r)?.id)),
        }
    }

    fn network(&self, per_run: Option<&NetworkMode>) -> Network {
        match per_run {
            Some(NetworkMode::None) => Network::None,
            Some(NetworkMode::Host) => Network::Host,
            Some(NetworkMode::Default) | None => self.req.network,
        }
    }

    fn step_error(&self, step: &Step, message: String) -> Error {
        Error::Step {
            file: self.req.dockerfile_name.clone(),
            line: step.span.line,
            instruction: display(step),
            message,
        }
    }
}

/// The stages (Dockerfile indices) a step reads: `COPY --from`, `RUN --mount from=`.
fn stages_read(step: &Step) -> Vec<usize> {
    match &step.kind {
        StepKind::Copy(c) => match c.from {
            Some(Source::Stage(i)) => vec![i],
            _ => vec![],
        },
        StepKind::Run(run) => run
            .mounts
            .iter()
            .filter_map(|m| match m {
                Mount::Bind {
                    from: Some(Source::Stage(i)),
                    ..
                }
                | Mount::Cache {
                    from: Some(Source::Stage(i)),
                    ..
                } => Some(*i),
                _ => None,
            })
            .collect(),
        _ => vec![],
    }
}

/// A COPY of `source` to `/`, used to digest a bind mount's source like a COPY's.
fn synthetic_copy(source: &str) -> cairn_dockerfile::Copy {
    cairn_dockerfile::Copy {
        add: false,
        from: None,
        sources: vec![source.to_string()],
        heredocs: vec![],
        dest: "/".into(),
        chown: None,
        chmod: None,
        link: false,
        parents: false,
        exclude: vec![],
        checksum: None,
        keep_git_dir: false,
        unpack: None,
    }
}

/// How a step is shown: its instruction as written, on one line.
pub fn display(step: &Step) -> String {
    let first = step.original.lines().next().unwrap_or("").trim();
    let mut s: String = first.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some((kw, rest)) = s.split_once(' ') {
        s = format!("{} {rest}", kw.to_uppercase());
    } else {
        s = s.to_uppercase();
    }
    // BuildKit names a `RUN <<EOF` by its first line: `RUN <<EOF (apt-get update...)`.
    if let StepKind::Run(run) = &step.kind {
        if let (Some(h), Command::Shell(cmd)) = (run.heredocs.first(), &run.command) {
            if cmd.trim_start().starts_with("<<") {
                let body = h.content.trim();
                let mut summary = body.lines().next().unwrap_or("").to_string();
                if body.lines().nth(1).is_some() {
                    summary.push_str("...");
                }
                s = format!("{s} ({summary})");
            }
        }
    }
    if s.chars().count() > 200 {
        s = s.chars().take(197).collect::<String>() + "...";
    }
    if s.is_empty() {
        s = match &step.kind {
            StepKind::Run(r) => match &r.command {
                Command::Shell(c) => format!("RUN {c}"),
                Command::Exec(v) => format!("RUN {v:?}"),
            },
            _ => "step".into(),
        };
    }
    s
}

/// Unix seconds of an RFC 3339 time.
pub fn parse_time(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// RFC 3339 (UTC, `Z`) of Unix seconds.
pub fn format_time(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_shown_like_buildkit() {
        let run = |cmd: &str, heredocs: Vec<cairn_dockerfile::Heredoc>| cairn_dockerfile::Run {
            command: Command::Shell(cmd.into()),
            heredocs,
            mounts: vec![],
            network: None,
            security: None,
            args_env: vec![],
            declared_args: vec![],
        };
        let step = |original: &str, kind| Step {
            span: Default::default(),
            original: original.into(),
            kind,
        };
        assert_eq!(
            display(&step(
                "run   apk add\tcurl",
                StepKind::Run(run("apk add curl", vec![]))
            )),
            "RUN apk add curl"
        );
        let h = cairn_dockerfile::Heredoc {
            name: "EOF".into(),
            content: "apt-get update\napt-get install -y x\n".into(),
            quoted: false,
            strip_tabs: false,
        };
        assert_eq!(
            display(&step(
                "RUN <<EOF\napt-get update\n",
                StepKind::Run(run("<<EOF", vec![h]))
            )),
            "RUN <<EOF (apt-get update...)"
        );
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(parse_time("2024-01-02T03:04:05Z"), Some(1704164645));
        assert_eq!(parse_time(&format_time(1704164645)), Some(1704164645));
        assert_eq!(
            parse_time("2024-01-02T03:04:05.123456789+01:00"),
            Some(1704161045)
        );
    }
}
