//! Dockerfile frontend: text → AST with spans → an expanded, validated build [`Plan`].
//!
//! Pure: no I/O, no clock. Every error carries the file name, line and column.
//!
//! ```text
//! let df = cairn_dockerfile::parse("Dockerfile", text)?;
//! let plan = cairn_dockerfile::plan(&df, &PlanOptions::default(), &|_image| None)?;
//! ```
//!
//! CONTRACT (shared with cairn-build, which is written in parallel): the items below are the public
//! surface other crates use. Add to them freely; change a signature only together with its callers.

use std::collections::BTreeMap;

/// A position in the Dockerfile: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Span {
    pub line: usize,
    pub column: usize,
    /// Last line of the instruction (continuations, heredocs).
    pub end_line: usize,
}

/// What a base image tells the planner: its config's `Env` and `OnBuild` triggers.
/// Supplied by the caller (the build engine reads the store; `--print=outline` may pass nothing).
#[derive(Debug, Clone, Default)]
pub struct BaseImageInfo {
    pub env: Vec<(String, String)>,
    pub onbuild: Vec<String>,
}

/// Looks up a base image by the (expanded) reference written in FROM / --from / mount from=.
pub type BaseLookup<'a> = &'a dyn Fn(&str) -> Option<BaseImageInfo>;

/// Options of a plan: what `cairn build` gets from its flags.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    pub target: Option<String>,
    pub build_args: BTreeMap<String, String>,
    /// e.g. "linux/amd64"; default: the host's.
    pub target_platform: Option<String>,
    pub build_platform: Option<String>,
}

/// The validated plan: only the stages the target needs, in dependency order.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    /// Stages to build, dependencies before dependents; the target is last.
    pub stages: Vec<Stage>,
    /// Stages of the file not needed by the target (by display name: name or index).
    pub skipped: Vec<String>,
    /// Non-fatal findings (unknown frontend in `# syntax=`, …), with their spans.
    pub warnings: Vec<Warning>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Warning {
    pub span: Span,
    pub message: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Stage {
    /// Position of the stage in the Dockerfile (0-based), as `--from=0` counts it.
    pub index: usize,
    /// `AS name`, lower-cased.
    pub name: Option<String>,
    pub base: Base,
    /// Expanded `FROM --platform=` value.
    pub platform: Option<String>,
    pub span: Span,
    pub steps: Vec<Step>,
    /// Indices of stages this stage needs (base, COPY --from, RUN --mount from=).
    pub deps: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Base {
    Scratch,
    /// An image reference as written (expanded), not normalised.
    Image(String),
    /// An earlier stage, by index.
    Stage(usize),
}

/// Where a `--from=` (COPY) or `from=` (mount) points.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Source {
    Context,
    Stage(usize),
    Image(String),
}

/// One instruction of a stage, with every word expanded where BuildKit expands.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    pub span: Span,
    /// The instruction as written (continuations joined), for progress and errors.
    pub original: String,
    pub kind: StepKind,
}

#[derive(Debug, Clone, serde::Serialize)]
pub enum StepKind {
    Run(Run),
    /// COPY and ADD.
    Copy(Copy),
    Env(Vec<(String, String)>),
    /// The ARGs declared here with their resolved values (build-arg, else default, else unset).
    Arg(Vec<(String, Option<String>)>),
    Workdir(String),
    User(String),
    Label(Vec<(String, String)>),
    Expose(Vec<String>),
    Volume(Vec<String>),
    StopSignal(String),
    Healthcheck(Option<Healthcheck>),
    Shell(Vec<String>),
    Cmd(Command),
    Entrypoint(Command),
    /// Trigger text stored in the image, not run here.
    Onbuild(String),
    Maintainer(String),
}

/// Shell form or JSON exec form.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Command {
    Shell(String),
    Exec(Vec<String>),
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Run {
    pub command: Command,
    /// Heredocs attached to this RUN (`RUN <<EOF`), in order.
    pub heredocs: Vec<Heredoc>,
    pub mounts: Vec<Mount>,
    pub network: Option<NetworkMode>,
    pub security: Option<String>,
    /// ARG values in scope, passed in the step's environment (not stored in the image).
    pub args_env: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum NetworkMode {
    Default,
    None,
    Host,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Heredoc {
    pub name: String,
    pub content: String,
    /// Quoted delimiter: no expansion was done.
    pub quoted: bool,
    pub strip_tabs: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Copy {
    /// ADD (true) or COPY (false).
    pub add: bool,
    pub from: Option<Source>,
    /// Sources as written (expanded); for heredoc sources see `heredocs`.
    pub sources: Vec<String>,
    pub heredocs: Vec<Heredoc>,
    pub dest: String,
    pub chown: Option<String>,
    pub chmod: Option<Chmod>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
    pub checksum: Option<String>,
    pub keep_git_dir: bool,
    pub unpack: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Chmod {
    Octal(u32),
    /// e.g. "u+x,g-w": applied per file.
    Symbolic(String),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Mount {
    Bind {
        target: String,
        source: Option<String>,
        from: Option<Source>,
        rw: bool,
    },
    Cache {
        id: Option<String>,
        target: String,
        ro: bool,
        sharing: CacheSharing,
        from: Option<Source>,
        source: Option<String>,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    },
    Tmpfs {
        target: String,
        size: Option<u64>,
    },
    Secret {
        id: String,
        target: Option<String>,
        env: Option<String>,
        required: bool,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    },
    Ssh {
        id: String,
        target: Option<String>,
        required: bool,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum CacheSharing {
    Shared,
    Private,
    Locked,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Healthcheck {
    /// `CMD` form: shell (`CMD-SHELL`) or exec (`CMD`).
    pub test: Command,
    pub interval_ns: Option<u64>,
    pub timeout_ns: Option<u64>,
    pub start_period_ns: Option<u64>,
    pub start_interval_ns: Option<u64>,
    pub retries: Option<u32>,
}

/// The parsed file before expansion (the frontend helper defines its fields).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Dockerfile {
    pub name: String,
}

/// A frontend error: `file:line:col: message`, then the quoted line with a caret.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct Error {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Parses a Dockerfile. `name` is used in error messages.
pub fn parse(name: &str, _text: &str) -> Result<Dockerfile, Error> {
    Err(Error {
        file: name.into(),
        line: 1,
        column: 1,
        message: "parser not written yet".into(),
    })
}

/// Expands and validates a parsed file into the stages the target needs.
pub fn plan(df: &Dockerfile, _opts: &PlanOptions, _base: BaseLookup) -> Result<Plan, Error> {
    Err(Error {
        file: df.name.clone(),
        line: 1,
        column: 1,
        message: "planner not written yet".into(),
    })
}
