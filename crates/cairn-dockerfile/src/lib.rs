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

#![warn(missing_docs)]

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
    /// 1-based line of the instruction's first character.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// Last line of the instruction (continuations, heredocs).
    pub end_line: usize,
}

/// What a base image tells the planner: its config's `Env` and `OnBuild` triggers.
/// Supplied by the caller (the build engine reads the store; `--print=outline` may pass nothing).
#[derive(Debug, Clone, Default)]
pub struct BaseImageInfo {
    /// The config's `Env`, as (name, value).
    pub env: Vec<(String, String)>,
    /// The config's `OnBuild` triggers, as written by the ONBUILD that stored them.
    pub onbuild: Vec<String>,
}

/// Looks up a base image by the (expanded) reference written in FROM / --from / mount from=.
pub type BaseLookup<'a> = &'a dyn Fn(&str) -> Option<BaseImageInfo>;

/// Options of a plan: what `cairn build` gets from its flags.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// `--target`: the stage to build (case-insensitive); default: the last one.
    pub target: Option<String>,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// e.g. "linux/amd64"; default: the host's.
    pub target_platform: Option<String>,
    /// The builder's platform, e.g. "linux/amd64"; default: the host's.
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
    /// Where (line 0: the whole build, e.g. an unused `--build-arg`).
    pub span: Span,
    /// What, for a person.
    pub message: String,
}

#[derive(Debug, Clone, serde::Serialize)]
/// A stage to build: its base, its expanded steps and the stages it needs.
pub struct Stage {
    /// Position of the stage in the Dockerfile (0-based), as `--from=0` counts it.
    pub index: usize,
    /// `AS name`, lower-cased.
    pub name: Option<String>,
    /// What the stage starts from.
    pub base: Base,
    /// Expanded `FROM --platform=` value.
    pub platform: Option<String>,
    /// The FROM instruction.
    pub span: Span,
    /// The instructions after FROM, expanded; a base image's ONBUILD triggers come first.
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
/// What a stage starts from.
pub enum Base {
    /// `FROM scratch`: an empty filesystem.
    Scratch,
    /// An image reference as written (expanded), not normalised.
    Image(String),
    /// An earlier stage, by index.
    Stage(usize),
}

/// Where a `--from=` (COPY) or `from=` (mount) points.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Source {
    /// `--from=context`: the build context (what no `--from` means for COPY).
    Context,
    /// An earlier stage, by index.
    Stage(usize),
    /// An image reference as written (expanded), e.g. `nginx:alpine`.
    Image(String),
}

/// One instruction of a stage, with every word expanded where BuildKit expands.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    /// The instruction (for triggers of a base image: its FROM).
    pub span: Span,
    /// The instruction as written (continuations joined), for progress and errors.
    pub original: String,
    /// What to do, expanded.
    pub kind: StepKind,
}

#[derive(Debug, Clone, serde::Serialize)]
/// What a step does.
pub enum StepKind {
    /// RUN.
    Run(Run),
    /// COPY and ADD.
    Copy(Copy),
    /// ENV pairs, expanded with the values from before the instruction.
    Env(Vec<(String, String)>),
    /// The ARGs declared here with their resolved values (build-arg, else default, else unset).
    Arg(Vec<(String, Option<String>)>),
    /// Expanded path; a relative one is relative to the working directory before it (the
    /// engine joins it with the image config's `WorkingDir`, as BuildKit does).
    Workdir(String),
    /// USER, expanded.
    User(String),
    /// LABEL pairs, expanded.
    Label(Vec<(String, String)>),
    /// EXPOSE ports as written (`80`, `80/tcp`, `8000-8010/udp`), expanded.
    Expose(Vec<String>),
    /// VOLUME paths, expanded.
    Volume(Vec<String>),
    /// STOPSIGNAL, expanded and checked (a number or a signal name).
    StopSignal(String),
    /// HEALTHCHECK; `None` for `HEALTHCHECK NONE`.
    Healthcheck(Option<Healthcheck>),
    /// SHELL (JSON form).
    Shell(Vec<String>),
    /// CMD (not expanded: the shell or the program sees it as written).
    Cmd(Command),
    /// ENTRYPOINT (not expanded).
    Entrypoint(Command),
    /// Trigger text stored in the image, not run here. The base image's own triggers were
    /// already inserted as this stage's first steps (their `span` is the FROM's): the engine
    /// starts the stage's config with an empty `OnBuild` and appends these.
    Onbuild(String),
    /// MAINTAINER (stored as the image author).
    Maintainer(String),
}

/// Shell form or JSON exec form.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Command {
    /// Shell form: run with the stage's SHELL (`/bin/sh -c` by default).
    Shell(String),
    /// JSON exec form: argv as given.
    Exec(Vec<String>),
}

#[derive(Debug, Clone, serde::Serialize)]
/// A RUN step.
pub struct Run {
    /// The command as written (not expanded: the shell expands it at run time). See [`Run::shell_run`].
    pub command: Command,
    /// Heredocs attached to this RUN (`RUN <<EOF`), in order.
    pub heredocs: Vec<Heredoc>,
    /// `--mount` options, expanded and checked.
    pub mounts: Vec<Mount>,
    /// `--network`; `None`: the build's default.
    pub network: Option<NetworkMode>,
    /// `--security` (`sandbox` or `insecure`).
    pub security: Option<String>,
    /// ARG values in scope, passed in the step's environment (not stored in the image).
    /// Set them over the config `Env` (they win: an ARG that an ENV overrode is not listed).
    /// Proxy build-args ([`PROXY_ARGS`]) are included even when undeclared; keep them out of
    /// the image history.
    pub args_env: Vec<(String, String)>,
    /// The names of the ARGs declared in the stage (and the stages it is built FROM), in
    /// first-declaration order, including those without a value (not in [`Run::args_env`], nor
    /// in the environment). BuildKit's history text lists each of them (`|2 UNSET= SET=v`),
    /// with the value the step sees: an `args_env` value, else the config `Env`'s, else empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub declared_args: Vec<String>,
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
/// `RUN --network=`.
pub enum NetworkMode {
    /// `default`: the build's network.
    Default,
    /// `none`: no network.
    None,
    /// `host`: the host's network.
    Host,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
/// A heredoc attached to RUN, COPY or ADD.
pub struct Heredoc {
    /// The delimiter word (for COPY/ADD: the file name written into the destination).
    pub name: String,
    /// The body, ready to use: leading tabs stripped when `strip_tabs`; for COPY/ADD expanded
    /// (`$` substitutions and `\\` escapes; quotes kept) unless `quoted`; for RUN never expanded (the
    /// shell does it). CRLF files give LF bodies.
    pub content: String,
    /// Quoted delimiter: no expansion was done.
    pub quoted: bool,
    /// `<<-`: leading tabs were stripped from the body.
    pub strip_tabs: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
/// A COPY or ADD step, expanded.
pub struct Copy {
    /// ADD (true) or COPY (false).
    pub add: bool,
    /// `--from`: a stage, an image or the context; `None` is the build context.
    pub from: Option<Source>,
    /// Sources as written (expanded); for heredoc sources see `heredocs`.
    pub sources: Vec<String>,
    /// Heredoc sources (`COPY <<EOF /dest`): files named after their delimiter.
    pub heredocs: Vec<Heredoc>,
    /// The destination as written (expanded); relative to the working directory.
    pub dest: String,
    /// `--chown=user[:group]`, expanded (names are resolved in the image by the engine).
    pub chown: Option<String>,
    /// `--chmod`, checked.
    pub chmod: Option<Chmod>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns, expanded.
    pub exclude: Vec<String>,
    /// ADD `--checksum` (`sha256:…`, or a git commit).
    pub checksum: Option<String>,
    /// ADD `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// ADD `--unpack`: `None` when not given (archives from the context are unpacked, URLs are not).
    pub unpack: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
/// `--chmod`: numeric or symbolic.
pub enum Chmod {
    /// e.g. 0o755.
    Octal(u32),
    /// e.g. "u+x,g-w": applied per file.
    Symbolic(String),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
/// A `RUN --mount`, defaults applied as BuildKit applies them.
pub enum Mount {
    /// `type=bind` (the default type): read-only unless `rw`.
    Bind {
        /// Mount point in the container.
        target: String,
        /// Path in the source (default: its root).
        source: Option<String>,
        /// Stage, image or context (default: the build context).
        from: Option<Source>,
        /// `rw`/`readwrite`: writes are allowed (and discarded).
        rw: bool,
    },
    /// `type=cache`: a persistent cache directory.
    Cache {
        /// Cache id; `None`: the target.
        id: Option<String>,
        /// Mount point in the container.
        target: String,
        /// `ro`: read-only.
        ro: bool,
        /// `sharing=` (default shared).
        sharing: CacheSharing,
        /// Seed the cache from this stage or image.
        from: Option<Source>,
        /// Path in `from`.
        source: Option<String>,
        /// Mode of a new cache directory (default 0755).
        mode: Option<u32>,
        /// Owner of a new cache directory.
        uid: Option<u32>,
        /// Group of a new cache directory.
        gid: Option<u32>,
    },
    /// `type=tmpfs`.
    Tmpfs {
        /// Mount point in the container.
        target: String,
        /// Size limit in bytes.
        size: Option<u64>,
    },
    /// `type=secret`.
    Secret {
        /// Secret id (default: the target's file name).
        id: String,
        /// File to mount it at (default /run/secrets/<id>; `None` when only `env` is given).
        target: Option<String>,
        /// Environment variable to expose it as.
        env: Option<String>,
        /// Fail when the secret is not provided.
        required: bool,
        /// File mode (default 0400).
        mode: Option<u32>,
        /// File owner.
        uid: Option<u32>,
        /// File group.
        gid: Option<u32>,
    },
    /// `type=ssh`: an SSH agent socket.
    Ssh {
        /// Agent id (default `default`).
        id: String,
        /// Socket path (default /run/buildkit/ssh_agent.N).
        target: Option<String>,
        /// Fail when no agent is provided.
        required: bool,
        /// Socket mode (default 0600).
        mode: Option<u32>,
        /// Socket owner.
        uid: Option<u32>,
        /// Socket group.
        gid: Option<u32>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
/// `sharing=` of a cache mount.
pub enum CacheSharing {
    /// Concurrent builds share the cache (default).
    Shared,
    /// Each concurrent build gets its own copy.
    Private,
    /// Concurrent builds wait for each other.
    Locked,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
/// A HEALTHCHECK CMD with its options (durations in nanoseconds; `None`: the default).
pub struct Healthcheck {
    /// `CMD` form: shell (`CMD-SHELL`) or exec (`CMD`).
    pub test: Command,
    /// `--interval`.
    pub interval_ns: Option<u64>,
    /// `--timeout`.
    pub timeout_ns: Option<u64>,
    /// `--start-period`.
    pub start_period_ns: Option<u64>,
    /// `--start-interval`.
    pub start_interval_ns: Option<u64>,
    /// `--retries` (0 given is `None`).
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
