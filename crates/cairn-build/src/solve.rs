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
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use cairn_dockerfile::{
    Base, Command, Mount, NetworkMode, Plan, PlanOptions, Source, Stage, Step, StepKind,
};
use cairn_layer::{Compression, DiffSource, LayerDescriptor, WriteOptions};
use cairn_sandbox::{
    MountKind, MountSpec, Network, OutputStream, ProcessSpec, Rootfs, SnapshotterKind,
};
use cairn_store::Store;

use crate::base::{BaseImage, BaseResolver};
use crate::context::BuildContext;
use crate::copy::{self, CopyRequest, SourceRoot};
use crate::error::{io_err, Error, Result, RunFailure};
use crate::image::{self, History, ImageConfig, RootFs, StageMeta, HISTORY_COMMENT};
use crate::key::{digest_parts, CacheKey, CacheRecord};
use crate::progress::{Reporter, Stream, Vertex};

// `RUN --mount` lives in its own file; a child module, it uses the solver's private helpers.
#[path = "mounts.rs"]
mod mounts;

/// How many lines of a failing RUN's output the error keeps.
const TAIL_LINES: usize = 10;

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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic in another stage thread must not hide this one's result.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How many RUN processes may run at once: `CAIRN_MAX_PARALLELISM` when set to a positive number,
/// else no limit.
fn max_parallel_runs() -> usize {
    std::env::var("CAIRN_MAX_PARALLELISM")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(usize::MAX)
}

/// A counting semaphore: limits concurrent RUN processes to [`max_parallel_runs`].
struct Semaphore {
    free: Mutex<usize>,
    cv: Condvar,
}

struct Permit<'a>(&'a Semaphore);

impl Semaphore {
    fn new(n: usize) -> Self {
        Semaphore {
            free: Mutex::new(n.max(1)),
            cv: Condvar::new(),
        }
    }

    fn acquire(&self) -> Permit<'_> {
        let mut free = lock(&self.free);
        while *free == 0 {
            free = self.cv.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *lock(&self.0.free) += 1;
        self.0.cv.notify_one();
    }
}

/// Results of stages, filled in as they finish; readers block until theirs is there.
struct Slots {
    results: Mutex<Vec<Option<Option<Arc<StageResult>>>>>,
    cv: Condvar,
}

impl Slots {
    fn new(n: usize) -> Self {
        Slots {
            results: Mutex::new(vec![None; n]),
            cv: Condvar::new(),
        }
    }

    /// Records stage `pos`'s result (`None` if it failed) and wakes the waiters.
    fn set(&self, pos: usize, result: Option<Arc<StageResult>>) {
        lock(&self.results)[pos] = Some(result);
        self.cv.notify_all();
    }

    fn wait(&self, pos: usize) -> Result<Arc<StageResult>> {
        let mut results = lock(&self.results);
        loop {
            match &results[pos] {
                Some(Some(r)) => return Ok(r.clone()),
                Some(None) => return Err(Error::Cancelled),
                None => results = self.cv.wait(results).unwrap_or_else(|p| p.into_inner()),
            }
        }
    }
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

/// What a RUN's mounts add to its process, and what must live as long as it runs (temp dirs and
/// roots bound into the container).
#[derive(Default)]
struct RunExtras {
    env: Vec<String>,
    mounts: Vec<MountSpec>,
    keep_dirs: Vec<tempfile::TempDir>,
    keep_roots: Vec<Rootfs>,
    /// Cache-mount locks and ssh agent proxies (see `mounts`).
    held: mounts::Held,
}

/// What a step left: its layer (`None`: no change), or a layer whose snapshot is in the store
/// and whose blob is still to be compressed ([`Solver::compress_deferred`]).
enum Committed {
    Layer(Option<LayerDescriptor>),
    Deferred { diff_id: String },
}

/// Whether `l` was made by [`stand_in`].
fn is_stand_in(l: &LayerDescriptor) -> bool {
    l.media_type.is_empty()
}

/// The descriptor of a layer that has no blob (yet): found by its diffID, `media_type` empty.
fn stand_in(diff_id: &str) -> LayerDescriptor {
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
enum BlobWhen {
    /// Not in this build: the layer's stage is not in the image, its snapshot is the layer.
    Never,
    /// By a thread of the stage, from the snapshot, while the next steps run.
    Deferred,
    /// In the step, in the pass that gives its diffID: the target's steps after its last RUN,
    /// which nothing but other file copies would overlap (deferred, its tar is written twice).
    InLine,
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

    /// Looks a layer step up in the cache, runs it on a miss; reports the vertex's end.
    fn layer_step(
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
    fn compress_deferred(
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

    fn prepare(&self, layers: &[LayerDescriptor]) -> Result<Rootfs> {
        let lowers = layers
            .iter()
            .map(|l| self.store.snapshot(l))
            .collect::<Result<Vec<PathBuf>, _>>()?;
        Ok(Rootfs::prepare(&lowers, &self.scratch, self.snapshotter)?)
    }

    fn run_step(
        &self,
        name: &str,
        step: &Step,
        run: &cairn_dockerfile::Run,
        cfg: &ImageConfig,
        rootfs: &Rootfs,
        v: Vertex,
    ) -> Result<()> {
        let argv = image::run_argv(cfg, run);
        let mut env: Vec<String> = cfg.config.env.clone().unwrap_or_default();
        for (k, val) in &run.args_env {
            // The frontend lists an ARG only if no ENV of the name came after it; then it wins
            // over an earlier ENV, as in BuildKit 20.10 and current (`dispatchArg` does
            // `d.state.AddEnv`), though the reference says "ENV always overrides ARG".
            env.retain(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) != k);
            env.push(format!("{k}={val}"));
        }
        let mut x = RunExtras {
            env,
            ..Default::default()
        };
        if let Some((name, data)) = &argv.script {
            let dir = self.tempdir()?;
            let file = dir.path().join(name);
            fs::write(&file, data).map_err(io_err(&file))?;
            fs::set_permissions(&file, fs::Permissions::from_mode(0o755)).map_err(io_err(&file))?;
            x.mounts.push(MountSpec {
                kind: MountKind::Bind {
                    source: dir.path().to_path_buf(),
                    readonly: true,
                },
                target: "/dev/pipes".into(),
            });
            x.keep_dirs.push(dir);
        }
        let workdir = cfg.workdir();
        mounts::check_security(self, step, run)?;
        for m in &run.mounts {
            self.run_mount(step, m, &workdir, &mut x)?;
        }
        // The cwd is the WORKDIR as written, like BuildKit's (`llb.Dir` keeps an absolute path);
        // runc makes it with MkdirAll, which also creates the `y` of `/x/./y/../z`.
        let cwd = cfg.config.working_dir.clone().unwrap_or_default();
        if !cwd.is_empty() && cwd != workdir {
            mkdir_in_root(rootfs.path(), &cwd, None)
                .map_err(|e| self.step_error(step, format!("working directory {cwd}: {e}")))?;
        }
        let RunExtras {
            env,
            mounts,
            keep_dirs,
            keep_roots,
            held,
        } = x;
        let spec = ProcessSpec {
            args: argv.args.clone(),
            env,
            user: cfg.config.user.clone().unwrap_or_default(),
            cwd: if cwd.is_empty() { workdir } else { cwd },
            hostname: "buildkitsandbox".into(),
            network: self.network(run.network.as_ref()),
            mounts,
            tty: false,
            stdin: false,
            privileged: mounts::insecure(run),
        };
        let mut tail = Tail::default();
        let code = {
            let _permit = self.run_slots.acquire();
            cairn_sandbox::run(rootfs.path(), &spec, &mut |stream, bytes| {
                tail.push(bytes);
                let stream = match stream {
                    OutputStream::Stdout => Stream::Stdout,
                    OutputStream::Stderr => Stream::Stderr,
                };
                self.reporter.output(v, stream, bytes);
            })?
        };
        drop(keep_roots);
        drop(keep_dirs);
        drop(held);
        if let Some(signal) = cairn_sandbox::termination_signal() {
            // The signal handler killed the process: that is not the RUN's failure.
            return Err(Error::Interrupted { signal });
        }
        if code != 0 {
            return Err(Error::RunFailed(Box::new(RunFailure {
                file: self.req.dockerfile_name.clone(),
                line: step.span.line,
                end_line: step.span.end_line.max(step.span.line),
                instruction: step.original.clone(),
                vertex: name.to_string(),
                argv: argv.args,
                exit_code: code,
                tail: tail.lines(),
            })));
        }
        Ok(())
    }

    fn tempdir(&self) -> Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix("build-")
            .tempdir_in(&self.scratch)
            .map_err(io_err(&self.scratch))
    }

    /// Turns one `RUN --mount` into sandbox mounts (see the `mounts` module).
    fn run_mount(&self, step: &Step, m: &Mount, workdir: &str, x: &mut RunExtras) -> Result<()> {
        mounts::run_mount(self, step, m, workdir, x)
    }

    /// A directory showing `layers` (an empty one for no layers), kept alive by the caller.
    fn root_of(
        &self,
        layers: &[LayerDescriptor],
        keep_dirs: &mut Vec<tempfile::TempDir>,
        keep_roots: &mut Vec<Rootfs>,
    ) -> Result<PathBuf> {
        if layers.is_empty() {
            let d = self.tempdir()?;
            let p = d.path().to_path_buf();
            keep_dirs.push(d);
            return Ok(p);
        }
        let lowers = layers
            .iter()
            .map(|l| self.store.snapshot(l))
            .collect::<Result<Vec<PathBuf>, _>>()?;
        let r = Rootfs::prepare(&lowers, &self.scratch, self.snapshotter)?;
        let p = r.path().to_path_buf();
        keep_roots.push(r);
        hide_mount_stubs(&p, &lowers).map_err(io_err(&p))?;
        Ok(p)
    }

    /// Runs a COPY/ADD onto `rootfs`; on an overlay root, what it left for the store's file pool
    /// to do in the upper dir (see `copy::pool`; `CAIRN_FILE_POOL=off` turns the pool off).
    fn copy_step(
        &self,
        step: &Step,
        c: &cairn_dockerfile::Copy,
        cfg: &ImageConfig,
        rootfs: &Rootfs,
    ) -> Result<copy::pool::PoolOps> {
        let owner = match &c.chown {
            // A file op's owner, as BuildKit's `readUser`: a bare UID is also the GID (not the
            // passwd entry's group, unlike a RUN's user), a bare name takes its primary group.
            Some(spec) => Some(
                copy::resolve_chown(rootfs.path(), spec)
                    .map_err(|e| self.step_error(step, format!("--chown={spec}: {e}")))?,
            ),
            None => None,
        };
        let workdir = cfg.workdir();
        let req = CopyRequest {
            copy: c,
            workdir: &workdir,
            owner,
        };
        let mut keep_dirs = Vec::new();
        let mut keep_roots = Vec::new();
        let dir;
        let source = match &c.from {
            None | Some(Source::Context) => SourceRoot::Context(self.context.ok_or_else(|| {
                self.step_error(
                    step,
                    "no build context (the Dockerfile came on stdin)".into(),
                )
            })?),
            Some(Source::Stage(i)) => {
                let res = self.stage_result(*i)?;
                dir = self.root_of(&res.layers, &mut keep_dirs, &mut keep_roots)?;
                SourceRoot::Dir(&dir)
            }
            Some(Source::Image(r)) => {
                let img = self.base(r)?;
                dir = self.root_of(&img.layers, &mut keep_dirs, &mut keep_roots)?;
                SourceRoot::Dir(&dir)
            }
        };
        let pool = (rootfs.kind() == SnapshotterKind::Overlay
            && std::env::var("CAIRN_FILE_POOL").as_deref() != Ok("off"))
        .then(|| self.store.file_pool());
        let cancel = || self.should_stop();
        let (_, ops) =
            copy::apply_pooled(&req, &source, rootfs.path(), pool.as_ref(), Some(&cancel))
                .map_err(|e| match e {
                    copy::error::CopyError::Cancelled { .. } => self.stopped(),
                    e => self.step_error(step, e.to_string()),
                })?;
        Ok(ops)
    }

    fn workdir_step(&self, step: &Step, cfg: &ImageConfig, rootfs: &Rootfs) -> Result<()> {
        let owner = match cfg.config.user.as_deref() {
            // BuildKit makes the directory `llb.WithUser(USER)`: the file-op rule of `--chown`
            // (a bare UID is also the GID), not the RUN rule (gid 0 for a UID without entry).
            Some(u) if !u.is_empty() => Some(
                copy::resolve_chown(rootfs.path(), u)
                    .map_err(|e| self.step_error(step, format!("USER {u}: {e}")))?,
            ),
            _ => None,
        };
        mkdir_in_root(rootfs.path(), &cfg.workdir(), owner)
            .map_err(|e| self.step_error(step, e.to_string()))
    }
}

/// Names the upper dirs handed to the store within this process.
static UPPER_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

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

/// The diffID of an empty tar (two zero blocks), what an empty diff writes.
fn empty_tar_diff_id() -> String {
    cairn_layer::hash::sha256_digest(&[0u8; 1024])
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

/// `root` joined with the relative `sub`, refusing `..` that would climb out.
fn join_inside(root: &Path, sub: &str) -> Option<PathBuf> {
    let mut out = root.to_path_buf();
    let mut depth = 0usize;
    for c in Path::new(sub).components() {
        match c {
            Component::Normal(p) => {
                out.push(p);
                depth += 1;
            }
            Component::ParentDir => {
                if depth == 0 {
                    return None;
                }
                out.pop();
                depth -= 1;
            }
            _ => {}
        }
    }
    Some(out)
}

/// The mount points a prepared root gets for running (`/proc`, `/dev`, `/sys`, files of `/etc`);
/// parents after children.
const MOUNT_STUBS: [&str; 7] = [
    "proc",
    "dev",
    "sys",
    "etc/resolv.conf",
    "etc/hosts",
    "etc/hostname",
    "etc",
];

/// Removes from the prepared root `root` the mount points that none of its layers `lowers` has:
/// a stage read by `COPY --from` or `RUN --mount=from=` shows its own files only, as in BuildKit
/// (a FROM scratch stage has no `/dev`). The root is thrown away after the step, so the removals
/// (whiteouts in its upper dir) reach no layer.
fn hide_mount_stubs(root: &Path, lowers: &[PathBuf]) -> std::io::Result<()> {
    for stub in MOUNT_STUBS {
        if lowers
            .iter()
            .any(|l| fs::symlink_metadata(l.join(stub)).is_ok())
        {
            continue;
        }
        let p = root.join(stub);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {
                // Only an empty stub: a directory with entries came from the layers.
                match fs::remove_dir(&p) {
                    Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {}
                    r => r?,
                }
            }
            Ok(m) if m.is_file() && m.len() == 0 => fs::remove_file(&p)?,
            _ => {}
        }
    }
    Ok(())
}

/// `mkdir -p path` inside `root`, following symlinks as if `root` were `/` (a link in the image
/// cannot make it create directories on the host). New directories get `owner`.
pub fn mkdir_in_root(root: &Path, path: &str, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    let mut pending: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_string)
        .rev()
        .collect();
    let mut cur: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        if c == ".." {
            cur.pop();
            continue;
        }
        let mut host = root.to_path_buf();
        host.extend(&cur);
        host.push(&c);
        match fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return Err(std::io::Error::other(format!(
                        "too many levels of symbolic links in {path}"
                    )));
                }
                let target = fs::read_link(&host)?;
                let target = target.to_string_lossy().into_owned();
                if target.starts_with('/') {
                    cur.clear();
                }
                for t in target
                    .split('/')
                    .filter(|t| !t.is_empty() && *t != ".")
                    .rev()
                {
                    pending.push(t.to_string());
                }
            }
            Ok(m) if m.is_dir() => cur.push(c),
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "{path}: /{} is not a directory",
                    cur.iter()
                        .chain([&c])
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("/")
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::DirBuilder::new().mode(0o755).create(&host)?;
                if let Some((uid, gid)) = owner {
                    std::os::unix::fs::lchown(&host, Some(uid), Some(gid))?;
                }
                cur.push(c);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The last lines of a process's output.
#[derive(Default)]
struct Tail {
    lines: std::collections::VecDeque<String>,
    partial: Vec<u8>,
}

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&self.partial).into_owned();
                self.partial.clear();
                self.lines.push_back(line);
                if self.lines.len() > TAIL_LINES {
                    self.lines.pop_front();
                }
            } else {
                self.partial.push(b);
            }
        }
    }

    fn lines(mut self) -> Vec<String> {
        if !self.partial.is_empty() {
            let line = String::from_utf8_lossy(&self.partial).into_owned();
            self.lines.push_back(line);
            if self.lines.len() > TAIL_LINES {
                self.lines.pop_front();
            }
        }
        self.lines.into()
    }
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
    fn tail_keeps_the_last_lines() {
        let mut t = Tail::default();
        for i in 0..15 {
            t.push(format!("line {i}\n").as_bytes());
        }
        t.push(b"partial");
        let lines = t.lines();
        assert_eq!(lines.len(), TAIL_LINES);
        assert_eq!(lines.last().unwrap(), "partial");
        assert_eq!(lines[0], "line 6");
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

    #[test]
    fn mkdir_stays_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        // An absolute link in the image points at the image's /, not the host's.
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
        mkdir_in_root(root.path(), "/escape/app/src", None).unwrap();
        let inside = root
            .path()
            .join(outside.path().strip_prefix("/").unwrap())
            .join("app/src");
        assert!(inside.is_dir());
        assert!(!outside.path().join("app").exists());
        std::os::unix::fs::symlink("../x", root.path().join("rel")).unwrap();
        mkdir_in_root(root.path(), "/rel/y", None).unwrap();
        assert!(root.path().join("x/y").is_dir());
        fs::write(root.path().join("file"), b"").unwrap();
        assert!(mkdir_in_root(root.path(), "/file/z", None).is_err());
    }

    #[test]
    fn join_inside_refuses_escapes() {
        let r = Path::new("/ctx");
        assert_eq!(join_inside(r, "a/../b"), Some(PathBuf::from("/ctx/b")));
        assert_eq!(join_inside(r, "/abs"), Some(PathBuf::from("/ctx/abs")));
        assert_eq!(join_inside(r, "../x"), None);
    }

    #[test]
    fn semaphore_limits_concurrency() {
        let s = Semaphore::new(2);
        let running = std::sync::atomic::AtomicUsize::new(0);
        let max = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|sc| {
            for _ in 0..6 {
                sc.spawn(|| {
                    let _p = s.acquire();
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        assert_eq!(max.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn slots_hand_results_to_waiters_and_propagate_failure() {
        let slots = Slots::new(2);
        std::thread::scope(|sc| {
            let h = sc.spawn(|| slots.wait(0).map(|r| r.content.clone()));
            std::thread::sleep(std::time::Duration::from_millis(10));
            slots.set(
                0,
                Some(Arc::new(StageResult {
                    config: ImageConfig::default(),
                    layers: vec![],
                    key: CacheKey::scratch(""),
                    content: "c".into(),
                })),
            );
            assert_eq!(h.join().unwrap().unwrap(), "c");
        });
        slots.set(1, None);
        assert!(matches!(slots.wait(1), Err(Error::Cancelled)));
    }
}
