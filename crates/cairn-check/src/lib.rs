//! The multi-stage checklist, checked for the user: `cairn check`, `cairn build --check`,
//! `cairn compare` and `cairn history --layers`.
//!
//! Two kinds of rules:
//! - [`lint`]: rules on the Dockerfile text, named as BuildKit's build checks where one exists
//!   (`FromAsCasing`, `UndefinedVar`, …) plus the tutorial's checklist (`UnpinnedBaseImage`,
//!   `FinalStageRunsAsRoot`, `SingleStageToolchain`);
//! - [`scan`]: rules on the images a build actually made: source files and build tools in the
//!   final image, secrets in any layer of any stage (deleted ones included), wasted bytes.
//!
//! ```
//! use cairn_check::{lint, CheckConfig, LintOptions, Report};
//! let text = "FROM alpine:3.20 as build\nRUN true\n";
//! let df = cairn_dockerfile::parse("Dockerfile", text).unwrap();
//! let findings = lint::lint(&df, &LintOptions::default());
//! let report = Report::new("Dockerfile", findings, &CheckConfig::default());
//! assert!(report.findings.iter().any(|f| f.rule == "FromAsCasing"));
//! assert_eq!(report.exit_code(), 0); // warnings only
//! ```
//!
//! Entry points for other crates:
//! - [`check_request`]: everything for one build request (builds the stages through the engine,
//!   cache hits after a build, then all rules): what `cairn build --check` calls;
//! - [`check_built`] / [`check_build`]: the rules on stages already built;
//! - [`stages::build_stages`], [`stages::build_all_stages`]: every stage through the engine;
//! - [`layers::layer_report`]: `cairn history --layers`;
//! - [`compare`]: `cairn compare`'s table;
//! - [`RULES`]: every rule's name (for `# check=skip=`), severity and summary.
//!
//! Image findings name the stage, the layer (index, digest, history `created_by`), the path, and
//! the Dockerfile line of the instruction that made the layer when it can be traced.

#![warn(missing_docs)]

use serde::Serialize;
use std::collections::BTreeSet;
use std::io::{self, Write};

pub mod compare;
pub mod human;
pub mod layers;
pub mod lint;
pub mod scan;
pub mod secrets;
pub mod stages;
mod walk;

pub use stages::BuiltStage;

/// One rule: its name (what `# check=skip=` takes), how bad it is, and what it looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RuleInfo {
    /// The name, BuildKit's where BuildKit has the rule.
    pub name: &'static str,
    /// Warning or error.
    pub severity: Severity,
    /// `dockerfile` (the text) or `image` (what was built).
    pub on: &'static str,
    /// One line on what it reports.
    pub summary: &'static str,
}

const fn rule(
    name: &'static str,
    severity: Severity,
    on: &'static str,
    summary: &'static str,
) -> RuleInfo {
    RuleInfo {
        name,
        severity,
        on,
        summary,
    }
}

/// Every rule, Dockerfile rules first.
pub const RULES: [RuleInfo; 29] = [
    rule(
        "StageNameCasing",
        Severity::Warning,
        "dockerfile",
        "stage names should be lowercase",
    ),
    rule(
        "FromAsCasing",
        Severity::Warning,
        "dockerfile",
        "the AS keyword should match the casing of FROM",
    ),
    rule(
        "NoEmptyContinuation",
        Severity::Warning,
        "dockerfile",
        "empty lines inside a continued instruction",
    ),
    rule(
        "ConsistentInstructionCasing",
        Severity::Warning,
        "dockerfile",
        "instructions should all be upper or all lower case",
    ),
    rule(
        "DuplicateStageName",
        Severity::Warning,
        "dockerfile",
        "stage names should be unique",
    ),
    rule(
        "ReservedStageName",
        Severity::Warning,
        "dockerfile",
        "'scratch' and 'context' are not stage names",
    ),
    rule(
        "JSONArgsRecommended",
        Severity::Warning,
        "dockerfile",
        "CMD/ENTRYPOINT in shell form do not get signals",
    ),
    rule(
        "MaintainerDeprecated",
        Severity::Warning,
        "dockerfile",
        "MAINTAINER is deprecated, use a label",
    ),
    rule(
        "UndefinedArgInFrom",
        Severity::Warning,
        "dockerfile",
        "FROM uses an ARG not declared before the first FROM",
    ),
    rule(
        "WorkdirRelativePath",
        Severity::Warning,
        "dockerfile",
        "relative WORKDIR with no absolute one before it",
    ),
    rule(
        "UndefinedVar",
        Severity::Warning,
        "dockerfile",
        "a variable is used before any ARG/ENV defines it",
    ),
    rule(
        "MultipleInstructionsDisallowed",
        Severity::Warning,
        "dockerfile",
        "several CMD/ENTRYPOINT/HEALTHCHECK in one stage",
    ),
    rule(
        "LegacyKeyValueFormat",
        Severity::Warning,
        "dockerfile",
        "ENV/LABEL key value instead of key=value",
    ),
    rule(
        "SecretsUsedInArgOrEnv",
        Severity::Warning,
        "dockerfile",
        "ARG/ENV named like a secret (they stay in the image)",
    ),
    rule(
        "InvalidDefaultArgInFrom",
        Severity::Warning,
        "dockerfile",
        "the ARG defaults make an invalid FROM",
    ),
    rule(
        "CopyIgnoredFile",
        Severity::Warning,
        "dockerfile",
        "COPY/ADD of a path excluded by .dockerignore",
    ),
    rule(
        "ExposeProtoCasing",
        Severity::Warning,
        "dockerfile",
        "EXPOSE protocol should be lowercase",
    ),
    rule(
        "ExposeInvalidFormat",
        Severity::Warning,
        "dockerfile",
        "EXPOSE with an IP address or a host port",
    ),
    rule(
        "UnpinnedBaseImage",
        Severity::Warning,
        "dockerfile",
        "FROM an image with no tag or :latest",
    ),
    rule(
        "FinalStageRunsAsRoot",
        Severity::Warning,
        "dockerfile",
        "the final stage has no non-root USER",
    ),
    rule(
        "SingleStageToolchain",
        Severity::Warning,
        "dockerfile",
        "a single stage built on (or installing) a compiler toolchain",
    ),
    rule(
        "SourceInFinalImage",
        Severity::Error,
        "image",
        "source files (the context's, by content, or by extension) in the final image",
    ),
    rule(
        "BuildToolInFinalImage",
        Severity::Error,
        "image",
        "compilers and build drivers in the final image",
    ),
    rule(
        "SecretInLayer",
        Severity::Error,
        "image",
        "private keys, tokens, passwords in any layer of any stage, deleted or not",
    ),
    rule(
        "BuildCacheInFinalImage",
        Severity::Warning,
        "image",
        "package manager caches (npm, pip, apt, Go, cargo) in the final image",
    ),
    rule(
        "GitDirInFinalImage",
        Severity::Warning,
        "image",
        "a .git directory in the final image",
    ),
    rule(
        "DevDependenciesInFinalImage",
        Severity::Warning,
        "image",
        "node_modules holds devDependencies in the final image",
    ),
    rule(
        "WastedBytes",
        Severity::Warning,
        "image",
        "files added by a layer and deleted or overwritten by a later one",
    ),
    rule(
        "BuildFailed",
        Severity::Error,
        "image",
        "the build failed: the image rules could not run",
    ),
];

/// Errors of the image checks (the Dockerfile rules cannot fail).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] cairn_store::Error),
    /// The build engine failed.
    #[error(transparent)]
    Build(#[from] cairn_build::Error),
    /// The Dockerfile does not parse or plan.
    #[error(transparent)]
    Dockerfile(#[from] cairn_dockerfile::Error),
    /// A layer blob could not be read.
    #[error("layer {digest}: {source}")]
    Layer {
        /// The blob.
        digest: String,
        /// What failed.
        source: io::Error,
    },
    /// Anything else, with a message for the user.
    #[error("{0}")]
    Other(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How bad a finding is. Dockerfile rules warn (as BuildKit's); what the image proves (sources,
/// compilers, secrets) is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Reported; fails only with `# check=error=true` or `--check-error`.
    Warning,
    /// Fails the check.
    Error,
}

/// Where in a built image a finding was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerRef {
    /// Position of the layer in the image, 0 = bottom.
    pub index: usize,
    /// Digest of the layer blob.
    pub digest: String,
    /// The history `created_by` of the instruction that made it.
    pub created_by: String,
}

/// One finding of one rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The rule's name (BuildKit's where one exists).
    pub rule: String,
    /// Warning or error.
    pub severity: Severity,
    /// What is wrong, BuildKit's wording for its rules.
    pub message: String,
    /// How to fix it.
    pub hint: String,
    /// The rule's documentation, for BuildKit's rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// 1-based line of the Dockerfile (0: not tied to a line).
    pub line: usize,
    /// The stage concerned (name or index), for image findings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// The layer concerned, for image findings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<LayerRef>,
    /// The file concerned, for image findings (absolute path in the image).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl Finding {
    /// A warning of a Dockerfile rule at `line`.
    pub fn warn(rule: &str, line: usize, message: String, hint: impl Into<String>) -> Finding {
        let url = lint::buildkit_url(rule);
        Finding {
            rule: rule.to_string(),
            severity: Severity::Warning,
            message,
            hint: hint.into(),
            url,
            line,
            stage: None,
            layer: None,
            path: None,
        }
    }
}

/// What `# check=` and `--check-error` ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckConfig {
    /// Rules not to run (`skip=A,B`).
    pub skip: BTreeSet<String>,
    /// `skip=all`.
    pub skip_all: bool,
    /// `error=true`: warnings fail too.
    pub error: bool,
}

impl CheckConfig {
    /// Parses the value of a `# check=` directive: `skip=A,B;error=true` (BuildKit's syntax;
    /// unknown keys are ignored, as BuildKit does).
    pub fn from_directive(value: &str) -> CheckConfig {
        let mut c = CheckConfig::default();
        for part in value.split(';') {
            let Some((k, v)) = part.split_once('=') else {
                continue;
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "skip" => {
                    for r in v.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                        if r.eq_ignore_ascii_case("all") {
                            c.skip_all = true;
                        } else {
                            c.skip.insert(r.to_string());
                        }
                    }
                }
                "error" => c.error = v.trim().eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        c
    }

    /// Whether `rule` runs.
    pub fn enabled(&self, rule: &str) -> bool {
        !self.skip_all && !self.skip.contains(rule)
    }
}

/// All findings of one check, filtered by the configuration and sorted by line.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The Dockerfile's name as the user gave it.
    pub dockerfile: String,
    /// The findings, Dockerfile order first, then image findings.
    pub findings: Vec<Finding>,
    /// Warnings fail too (`error=true`).
    pub error_on_warnings: bool,
}

impl Report {
    /// Builds a report: drops skipped rules, sorts by line (image findings, line 0, last).
    pub fn new(dockerfile: &str, mut findings: Vec<Finding>, config: &CheckConfig) -> Report {
        findings.retain(|f| config.enabled(&f.rule));
        findings.sort_by_key(|f| (f.line == 0, f.line));
        Report {
            dockerfile: dockerfile.to_string(),
            findings,
            error_on_warnings: config.error,
        }
    }

    /// Number of findings of `severity`.
    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }

    /// 1 when an error was found, or a warning with `error=true`; else 0.
    pub fn exit_code(&self) -> i32 {
        let errors = self.count(Severity::Error);
        let warnings = self.count(Severity::Warning);
        if errors > 0 || (self.error_on_warnings && warnings > 0) {
            1
        } else {
            0
        }
    }

    /// Human-readable output: one block per finding, BuildKit's first line
    /// (`WARN: Rule: message (line N)`), then where, then the fix.
    pub fn render_human(&self, out: &mut dyn Write) -> io::Result<()> {
        for f in &self.findings {
            let tag = match f.severity {
                Severity::Warning => "WARN",
                Severity::Error => "ERROR",
            };
            if f.line > 0 {
                writeln!(out, "{tag}: {}: {} (line {})", f.rule, f.message, f.line)?;
                writeln!(out, "  at {}:{}", self.dockerfile, f.line)?;
            } else {
                writeln!(out, "{tag}: {}: {}", f.rule, f.message)?;
            }
            if let Some(stage) = &f.stage {
                let mut s = format!("  in stage {stage}");
                if let Some(l) = &f.layer {
                    s.push_str(&format!(", layer {} ({})", l.index, short(&l.digest)));
                    if !l.created_by.is_empty() {
                        s.push_str(&format!(" made by `{}`", l.created_by));
                    }
                }
                if let Some(p) = &f.path {
                    s.push_str(&format!(", path {p}"));
                }
                writeln!(out, "{s}")?;
            }
            if !f.hint.is_empty() {
                writeln!(out, "  hint: {}", f.hint)?;
            }
            if let Some(u) = &f.url {
                writeln!(out, "  see {u}")?;
            }
        }
        let (e, w) = (self.count(Severity::Error), self.count(Severity::Warning));
        if e + w == 0 {
            writeln!(out, "Check complete, no issues found.")?;
        } else {
            writeln!(
                out,
                "Check complete: {e} error{}, {w} warning{}{}.",
                plural(e),
                plural(w),
                if self.error_on_warnings && w > 0 {
                    " (warnings are errors: check=error=true)"
                } else {
                    ""
                }
            )?;
        }
        Ok(())
    }

    /// The report as one JSON document.
    pub fn render_json(&self, out: &mut dyn Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, self).map_err(io::Error::other)?;
        writeln!(out)
    }
}

/// The finding that stands for image rules that could not run because the build failed.
pub fn build_failed(error: &dyn std::fmt::Display) -> Finding {
    Finding {
        rule: "BuildFailed".into(),
        severity: Severity::Error,
        message: format!("the build failed, so the image rules did not run: {error}"),
        hint: "fix the build (`cairn build` shows its output), or check the Dockerfile alone with --no-build".into(),
        url: None,
        line: 0,
        stage: None,
        layer: None,
        path: None,
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `sha256:0123456789ab…` → `sha256:0123456789ab` (12 hex digits, as docker shows IDs).
pub(crate) fn short(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    format!("sha256:{}", &hex[..hex.len().min(12)])
}

/// Everything [`check_build`] needs: the Dockerfile, the context, the built stages.
#[derive(Debug, Clone, Default)]
pub struct CheckInput<'a> {
    /// The Dockerfile's name as the user gave it.
    pub dockerfile_name: String,
    /// Its text.
    pub dockerfile: String,
    /// `--target`.
    pub target: Option<String>,
    /// `--build-arg`s.
    pub build_args: std::collections::BTreeMap<String, String>,
    /// The build context directory, to recognise its source files in images (None: no context).
    pub context: Option<&'a std::path::Path>,
    /// `--check-error`.
    pub error: bool,
}

/// The whole check: Dockerfile rules, then (if `stages` is not empty) the image rules on what
/// was built. `stages` comes from [`stages::build_stages`], or, for `cairn build --check`, may
/// hold only the target (then secrets are looked for in its layers only).
///
/// `ignored` tells whether a context path is excluded by `.dockerignore` (CopyIgnoredFile);
/// `store` reads the layers and the base images' configs.
pub fn check_build(
    store: &cairn_store::Store,
    input: &CheckInput<'_>,
    ignored: Option<&dyn Fn(&str) -> bool>,
    stages: &[BuiltStage],
) -> Result<Report> {
    let df = cairn_dockerfile::parse(&input.dockerfile_name, &input.dockerfile)?;
    let mut config = df
        .directives
        .check
        .as_deref()
        .map(CheckConfig::from_directive)
        .unwrap_or_default();
    config.error |= input.error;
    let base = |r: &str| lint::base_info_from_store(store, r);
    let opts = LintOptions {
        target: input.target.clone(),
        build_args: input.build_args.clone(),
        base: Some(&base),
        ignored,
    };
    let mut findings = lint::lint(&df, &opts);
    if !stages.is_empty() {
        findings.extend(scan::scan(store, stages, input.context)?);
    }
    Ok(Report::new(&input.dockerfile_name, findings, &config))
}

pub use lint::LintOptions;

/// The checks of one build request, all in one call: what `cairn build --check` runs (after its
/// build, so that every stage is a cache hit) and what `cairn check` runs.
///
/// Builds every stage the target needs with the engine (see [`stages::build_stages`]), then runs
/// the Dockerfile rules (`.dockerignore` from `req.context`) and the image rules. `error`:
/// `--check-error`. A build failure is an error: the image rules cannot run without images.
pub fn check_request(
    store: &cairn_store::Store,
    resolver: &dyn cairn_build::BaseResolver,
    req: &cairn_build::BuildRequest<'_>,
    reporter: &cairn_build::Reporter<'_>,
    error: bool,
) -> Result<Report> {
    let stages = stages::build_stages(store, resolver, req, reporter)?;
    check_built(store, req, error, &stages)
}

/// [`check_build`] with the inputs taken from a build request: its Dockerfile, target,
/// build args, and its context's root and `.dockerignore`.
pub fn check_built(
    store: &cairn_store::Store,
    req: &cairn_build::BuildRequest<'_>,
    error: bool,
    stages: &[BuiltStage],
) -> Result<Report> {
    let ctx = req.context;
    let input = CheckInput {
        dockerfile_name: req.dockerfile_name.clone(),
        dockerfile: req.dockerfile.clone(),
        target: req.target.clone(),
        build_args: req.build_args.clone(),
        context: ctx.map(|c| c.root()),
        error,
    };
    // BuildKit does not judge COPY sources when .dockerignore has exceptions (`!x`): a file of
    // an excluded directory may be let back in.
    let ignored = |rel: &str| {
        let Some(c) = ctx else {
            return false;
        };
        let mut prefix = String::new();
        rel.split('/').any(|part| {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            c.is_ignored(std::path::Path::new(&prefix))
        })
    };
    let use_ignore = ctx.is_some_and(|c| c.ignore_file().is_some() && !c.rules().has_exceptions());
    let ign: Option<&dyn Fn(&str) -> bool> = if use_ignore { Some(&ignored) } else { None };
    check_build(store, &input, ign, stages)
}
