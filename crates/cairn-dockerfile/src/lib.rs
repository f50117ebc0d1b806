//! Dockerfile frontend: text → AST with spans → an expanded, validated build [`Plan`].
//!
//! Pure: no I/O, no clock. Every error carries the file name, line and column.
//!
//! ```
//! use cairn_dockerfile::{parse, plan, PlanOptions, StepKind};
//! let text = "FROM alpine AS build\nARG V=1\nRUN echo $V\nFROM scratch\nCOPY --from=build /x /x\n";
//! let df = parse("Dockerfile", text).unwrap();
//! let plan = plan(&df, &PlanOptions::default(), &|_image| None).unwrap();
//! assert_eq!(plan.stages.len(), 2);
//! assert_eq!(plan.stages[1].deps, vec![0]);
//! let StepKind::Run(run) = &plan.stages[0].steps[1].kind else { panic!() };
//! assert_eq!(run.args_env, vec![("V".to_string(), "1".to_string())]);
//! ```
//!
//! The pipeline, one module each: `directives` (`# syntax=` …), `parser` (lines, continuations,
//! flags), `heredoc`, `instructions` (per-instruction arguments and flags), `shell` (BuildKit's
//! word expansion), `values` (chmod, mounts, …), `vars` (ARG/ENV scoping, platform ARGs), `plan`
//! (dispatch and the stage graph), `render` (outline and targets), `error` and `suggest`.
//!
//! CONTRACT (shared with cairn-build, which is written in parallel): the items below are the public
//! surface other crates use. Add to them freely; change a signature only together with its callers.

use std::collections::BTreeMap;

mod ast;
mod directives;
mod error;
mod heredoc;
mod instructions;
mod parser;
mod plan;
mod render;
pub mod shell;
mod suggest;
mod values;
mod vars;

pub use ast::{
    ArgDecl, Args, Directives, Dockerfile, Flag, HeredocBody, Instruction, KeyValue, Keyword,
};
pub use error::Error;
pub use plan::DEFAULT_PATH;
pub use render::{outline, targets, targets_table, TargetInfo};
pub use vars::{host_platform, PROXY_ARGS};

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
    /// The target stage's display name (name, or index when unnamed).
    pub target: String,
    /// The platform built for (TARGETPLATFORM), e.g. `linux/amd64`.
    pub target_platform: String,
    /// The platform of the builder (BUILDPLATFORM).
    pub build_platform: String,
    /// The ARGs before the first FROM with their values (build-arg, else default, else unset).
    pub global_args: Vec<(String, Option<String>)>,
}

/// A non-fatal finding with its position (line 0: not tied to a line).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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
    /// The comment lines right above its FROM, joined (`--print=targets` shows them).
    pub description: Option<String>,
}

impl Stage {
    /// The name, or the index when the stage has none (as `--from=` and outlines show it).
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.index.to_string())
    }
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
    /// Expanded path; a relative one is relative to the working directory before it (the
    /// engine joins it with the image config's `WorkingDir`, as BuildKit does).
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
    /// Trigger text stored in the image, not run here. The base image's own triggers were
    /// already inserted as this stage's first steps (their `span` is the FROM's): the engine
    /// starts the stage's config with an empty `OnBuild` and appends these.
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
    /// Set them over the config `Env` (they win: an ARG that an ENV overrode is not listed).
    /// Proxy build-args ([`PROXY_ARGS`]) are included even when undeclared; keep them out of
    /// the image history.
    pub args_env: Vec<(String, String)>,
}

/// How a shell-form RUN with heredocs is run, as BuildKit does it ([`Run::shell_run`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellRun<'a> {
    /// Give this text to the stage's SHELL (`/bin/sh -c TEXT` by default).
    Command(String),
    /// `RUN <<EOF` whose body starts with `#!`: write the body to a file (mode 0755) and
    /// execute that file directly, without the shell.
    Shebang(&'a Heredoc),
}

impl Run {
    /// What to run for the shell form (`None` for the JSON exec form). Without heredocs it is
    /// the command; `RUN <<EOF` alone runs the body itself (or a `#!` file); otherwise the
    /// heredoc bodies are appended to the command line so that the shell reads them.
    pub fn shell_run(&self) -> Option<ShellRun<'_>> {
        let Command::Shell(cmd) = &self.command else {
            return None;
        };
        if self.heredocs.is_empty() {
            return Some(ShellRun::Command(cmd.clone()));
        }
        let single = matches!(heredoc::parse_marker(cmd.trim()), Ok(Some(_)));
        if single {
            let h = &self.heredocs[0];
            if h.content.starts_with("#!") {
                return Some(ShellRun::Shebang(h));
            }
            return Some(ShellRun::Command(h.content.clone()));
        }
        let mut text = cmd.clone();
        for h in &self.heredocs {
            text.push('\n');
            text.push_str(&h.content);
            if !h.content.is_empty() && !h.content.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&h.name);
        }
        Some(ShellRun::Command(text))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum NetworkMode {
    Default,
    None,
    Host,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Heredoc {
    /// The delimiter word (for COPY/ADD: the file name written into the destination).
    pub name: String,
    /// The body, ready to use: leading tabs stripped when `strip_tabs`; for COPY/ADD expanded
    /// (`$` substitutions and `\\` escapes; quotes kept) unless `quoted`; for RUN never expanded (the
    /// shell does it). CRLF files give LF bodies.
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

/// Parses a Dockerfile. `name` is used in error messages (give the path as the user wrote it).
///
/// Checks everything that does not depend on variable values: instructions, flags (unknown,
/// duplicate, malformed), argument counts, JSON forms, heredocs, parser directives.
pub fn parse(name: &str, text: &str) -> Result<Dockerfile, Error> {
    parser::parse(name, text)
}

/// Expands and validates a parsed file into the stages the target needs.
///
/// `base` is asked for the config of each image named by a FROM (the expanded reference); its
/// `Env` seeds the stage's variables and its `OnBuild` triggers become the stage's first steps.
/// Return `None` when the image is unknown (its ENV then expands as unset).
pub fn plan(df: &Dockerfile, opts: &PlanOptions, base: BaseLookup) -> Result<Plan, Error> {
    plan::plan(df, opts, base)
}
