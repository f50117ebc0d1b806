//! Rules on the Dockerfile text: BuildKit's build checks (same names, same messages) and the
//! tutorial's checklist items that the text alone can decide.
//!
//! Pure: the only outside knowledge is what [`LintOptions::base`] says about base images (their
//! `Env`, for UndefinedVar, and `User`, for FinalStageRunsAsRoot) and what
//! [`LintOptions::ignored`] says about `.dockerignore`.

use crate::Finding;
use cairn_dockerfile::shell::{Lexer, Lookup};
use cairn_dockerfile::{Args, Command, Dockerfile, Instruction, Keyword};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What the linter may know about a base image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseInfo {
    /// The config's `Env`.
    pub env: Vec<(String, String)>,
    /// The config's `User` (empty: root).
    pub user: String,
    /// The config sets `Shell`.
    pub shell: bool,
}

/// Answers what is known about a base image, by expanded reference.
pub type BaseLookup<'a> = &'a dyn Fn(&str) -> Option<BaseInfo>;

/// Options of [`lint`].
#[derive(Default)]
pub struct LintOptions<'a> {
    /// `--target`: the stage checked as the final image (default: the last).
    pub target: Option<String>,
    /// `--build-arg`s.
    pub build_args: BTreeMap<String, String>,
    /// Base image lookup by the expanded FROM reference; `None` (or a `None` answer) means
    /// unknown, and UndefinedVar is then not reported for that stage (its `Env` could define
    /// anything).
    pub base: Option<BaseLookup<'a>>,
    /// Whether a context path (cleaned, relative) is excluded by `.dockerignore`; `None` when
    /// there is no `.dockerignore` or it has `!` exceptions (BuildKit skips CopyIgnoredFile then).
    pub ignored: Option<&'a dyn Fn(&str) -> bool>,
}

/// Reads a base image's `Env` and `User` from the store.
pub fn base_info_from_store(store: &cairn_store::Store, reference: &str) -> Option<BaseInfo> {
    let rec = store.resolve(reference).ok()??;
    let cfg = store.config_json(&rec).ok()?;
    let c = &cfg["config"];
    let env = c["Env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_str()?.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let user = c["User"].as_str().unwrap_or("").to_string();
    let shell = c["Shell"].as_array().is_some_and(|a| !a.is_empty());
    Some(BaseInfo { env, user, shell })
}

/// The documentation of a BuildKit rule; `None` for cairn's own rules.
pub fn buildkit_url(rule: &str) -> Option<String> {
    const BUILDKIT: [&str; 18] = [
        "StageNameCasing",
        "FromAsCasing",
        "NoEmptyContinuation",
        "ConsistentInstructionCasing",
        "DuplicateStageName",
        "ReservedStageName",
        "JSONArgsRecommended",
        "MaintainerDeprecated",
        "UndefinedArgInFrom",
        "WorkdirRelativePath",
        "UndefinedVar",
        "MultipleInstructionsDisallowed",
        "LegacyKeyValueFormat",
        "SecretsUsedInArgOrEnv",
        "InvalidDefaultArgInFrom",
        "CopyIgnoredFile",
        "ExposeProtoCasing",
        "ExposeInvalidFormat",
    ];
    if !BUILDKIT.contains(&rule) {
        return None;
    }
    // The URL slug is the rule name in kebab case, with JSON kept as one word.
    let mut slug = String::new();
    let name = rule.replace("JSON", "Json");
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            slug.push('-');
        }
        slug.push(c.to_ascii_lowercase());
    }
    Some(format!(
        "https://docs.docker.com/go/dockerfile/rule/{slug}/"
    ))
}

/// A stage as written.
struct StageText<'d> {
    index: usize,
    from: &'d Instruction,
    image_raw: String,
    name_raw: Option<String>,
    body: Vec<&'d Instruction>,
}

/// Runs every Dockerfile rule. Never fails: a rule that cannot decide stays silent.
pub fn lint(df: &Dockerfile, opts: &LintOptions<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    let lexer = Lexer::new(df.directives.escape);

    // Split into global ARGs and stages.
    let mut globals: Vec<&Instruction> = Vec::new();
    let mut stages: Vec<StageText> = Vec::new();
    for ins in &df.instructions {
        if ins.keyword == Keyword::From {
            let (image_raw, name_raw) = match &ins.args {
                Args::From { image, stage_name } => (image.clone(), stage_name.clone()),
                _ => continue,
            };
            stages.push(StageText {
                index: stages.len(),
                from: ins,
                image_raw,
                name_raw,
                body: Vec::new(),
            });
        } else if let Some(s) = stages.last_mut() {
            s.body.push(ins);
        } else {
            globals.push(ins);
        }
    }

    casing_rules(df, &stages, &mut out);
    for w in &df.warnings {
        if w.message.contains("empty continuation") {
            out.push(Finding::warn(
                "NoEmptyContinuation",
                w.span.line,
                "Empty continuation line".into(),
                "remove the empty line inside the continued instruction, or make it a comment",
            ));
        }
    }

    // Global ARG values: build-arg, else the default expanded with the ARGs above it.
    let mut gvals: HashMap<String, String> = HashMap::new();
    for p in PLATFORM_ARGS {
        gvals.insert(p.to_string(), platform_arg(p));
    }
    let mut gdefaults = gvals.clone();
    for ins in &globals {
        if let Args::Arg(decls) = &ins.args {
            for d in decls {
                secret_key_rule("ARG", &d.name, ins.span.line, &mut out);
                let def = d
                    .default
                    .as_ref()
                    .and_then(|v| lexer.process_word(v, &gdefaults).ok());
                let val = opts
                    .build_args
                    .get(&d.name)
                    .cloned()
                    .or_else(|| def.clone())
                    .unwrap_or_default();
                gdefaults.insert(d.name.clone(), def.unwrap_or_default());
                gvals.insert(d.name.clone(), val);
            }
        }
    }

    // FROM rules, names, and the expanded base of each stage.
    let mut names: BTreeSet<String> = BTreeSet::new();
    let mut bases: Vec<Base> = Vec::new();
    for s in &stages {
        let line = s.from.span.line;
        if let Some(n) = &s.name_raw {
            let lower = n.to_ascii_lowercase();
            if lower == "scratch" || lower == "context" {
                out.push(Finding::warn(
                    "ReservedStageName",
                    line,
                    format!("Stage name should not use the same name as reserved stage \"{lower}\""),
                    format!("rename the stage: '{lower}' already means something in FROM and COPY --from"),
                ));
            }
            if !names.insert(lower.clone()) {
                out.push(Finding::warn(
                    "DuplicateStageName",
                    line,
                    format!("Duplicate stage name \"{lower}\", stage names should be unique"),
                    "give each stage its own name",
                ));
            }
        }
        // UndefinedArgInFrom: the FROM line only sees global ARGs.
        let rec = Recorder::new(&gvals);
        let expanded = lexer.process_word(&s.image_raw, &rec).unwrap_or_default();
        let declared: Vec<&String> = gvals.keys().collect();
        for missing in rec.missing(&s.image_raw) {
            let hint = suggest(&missing, declared.iter().map(|s| s.as_str()));
            let mut msg = format!("FROM argument '{missing}' is not declared");
            if let Some(h) = &hint {
                msg.push_str(&format!(" (did you mean {h}?)"));
            }
            out.push(Finding::warn(
                "UndefinedArgInFrom",
                line,
                msg,
                format!("declare `ARG {missing}=<default>` before the first FROM"),
            ));
        }
        // InvalidDefaultArgInFrom: with defaults only (no --build-arg), the name must be valid.
        if s.image_raw.contains('$') {
            let with_defaults = lexer
                .process_word(&s.image_raw, &gdefaults)
                .unwrap_or_default();
            if with_defaults.is_empty()
                || cairn_store::reference::Reference::parse(&with_defaults).is_err()
            {
                out.push(Finding::warn(
                    "InvalidDefaultArgInFrom",
                    line,
                    format!(
                        "Default value for ARG {} results in empty or invalid base image name",
                        s.image_raw
                    ),
                    "give the ARG used in FROM a default that makes a valid image name",
                ));
            }
        }
        let lower = expanded.to_ascii_lowercase();
        let base = if lower == "scratch" {
            Base::Scratch
        } else if let Some(i) = stages[..s.index]
            .iter()
            .position(|p| p.name_raw.as_deref().map(str::to_ascii_lowercase) == Some(lower.clone()))
        {
            Base::Stage(i)
        } else {
            Base::Image(expanded)
        };
        if let Base::Image(r) = &base {
            unpinned_rule(r, line, &mut out);
        }
        bases.push(base);
    }

    // Per-stage rules, in stage order so that a stage sees its parent's final state.
    let mut ends: Vec<StageEnd> = Vec::new();
    for (s, base) in stages.iter().zip(&bases) {
        let end = stage_rules(s, base, &ends, &gvals, opts, &lexer, &mut out);
        ends.push(end);
    }

    // The checklist rules on the final stage.
    if let Some(fi) = final_stage(&stages, opts.target.as_deref()) {
        root_rule(fi, &stages, &bases, &ends, opts, &mut out);
        if stages.len() == 1 {
            toolchain_rule(&stages[0], &bases[0], &mut out);
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Base {
    Scratch,
    Image(String),
    Stage(usize),
}

/// What a stage leaves for stages built on it.
#[derive(Debug, Clone, Default)]
struct StageEnd {
    /// Defined variable names, or None when unknown (base image not known).
    env: Option<BTreeSet<String>>,
    workdir_set: bool,
    /// The last USER of the stage or of its ancestors.
    user: Option<(String, usize)>,
    /// A SHELL was set (here, in an ancestor stage, or in the base image's config): BuildKit
    /// then takes shell-form CMD/ENTRYPOINT as intended.
    shell: bool,
}

const PLATFORM_ARGS: [&str; 8] = [
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
];

fn platform_arg(name: &str) -> String {
    let p = cairn_dockerfile::host_platform();
    let mut parts = p.splitn(3, '/');
    let (os, arch, variant) = (
        parts.next().unwrap_or("linux").to_string(),
        parts.next().unwrap_or("amd64").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    match &name[name.len().saturating_sub(8)..] {
        "PLATFORM" => p.clone(),
        _ if name.ends_with("OS") => os,
        _ if name.ends_with("ARCH") => arch,
        _ => variant,
    }
}

/// A variable lookup that remembers which names were asked for and not found.
struct Recorder<'a> {
    vars: &'a HashMap<String, String>,
    missing: RefCell<BTreeSet<String>>,
}

impl<'a> Recorder<'a> {
    fn new(vars: &'a HashMap<String, String>) -> Self {
        Recorder {
            vars,
            missing: RefCell::new(BTreeSet::new()),
        }
    }

    /// The missing names, less those only used with a default or alternative
    /// (`${X:-d}`, `${X-d}`, `${X:+a}`, `${X+a}`): the author planned for them being unset.
    fn missing(&self, text: &str) -> Vec<String> {
        self.missing
            .borrow()
            .iter()
            .filter(|n| {
                let guarded = ["${N:-", "${N-", "${N:+", "${N+", "${N:?", "${N?"]
                    .iter()
                    .any(|p| text.contains(&p.replace('N', n)));
                !guarded
            })
            .cloned()
            .collect()
    }
}

impl Lookup for Recorder<'_> {
    fn lookup(&self, name: &str) -> Option<&str> {
        match self.vars.get(name) {
            Some(v) => Some(v),
            None => {
                self.missing.borrow_mut().insert(name.to_string());
                None
            }
        }
    }
}

/// The keyword as written (first word of the instruction).
fn keyword_text(ins: &Instruction) -> &str {
    ins.original.split_whitespace().next().unwrap_or("")
}

fn casing_rules(df: &Dockerfile, stages: &[StageText], out: &mut Vec<Finding>) {
    for s in stages {
        let line = s.from.span.line;
        if let Some(n) = &s.name_raw {
            if n.to_ascii_lowercase() != *n {
                out.push(Finding::warn(
                    "StageNameCasing",
                    line,
                    format!("Stage name '{n}' should be lowercase"),
                    format!("write `AS {}`", n.to_ascii_lowercase()),
                ));
            }
            let from = keyword_text(s.from);
            let words: Vec<&str> = s.from.original.split_whitespace().collect();
            // The AS keyword is the word just before the name, at the end of the line.
            if let Some(as_kw) = words.len().checked_sub(2).map(|i| words[i]) {
                let from_upper = from == from.to_ascii_uppercase();
                let as_upper = as_kw == as_kw.to_ascii_uppercase();
                let from_lower = from == from.to_ascii_lowercase();
                let as_lower = as_kw == as_kw.to_ascii_lowercase();
                if (from_upper && !as_upper) || (from_lower && !as_lower) {
                    out.push(Finding::warn(
                        "FromAsCasing",
                        line,
                        format!("'{as_kw}' and '{from}' keywords' casing do not match"),
                        format!(
                            "write `{} ... {} {}`",
                            from,
                            if from_upper { "AS" } else { "as" },
                            n
                        ),
                    ));
                }
            }
        }
    }
    let self_consistent = |w: &str| w == w.to_ascii_lowercase() || w == w.to_ascii_uppercase();
    let (mut lower, mut upper) = (0, 0);
    for ins in &df.instructions {
        let w = keyword_text(ins);
        if self_consistent(w) {
            if w == w.to_ascii_lowercase() {
                lower += 1;
            } else {
                upper += 1;
            }
        }
    }
    let majority_lower = lower > upper;
    for ins in &df.instructions {
        let w = keyword_text(ins);
        let wrong = if majority_lower {
            w != w.to_ascii_lowercase()
        } else {
            w != w.to_ascii_uppercase()
        };
        if wrong {
            let casing = if majority_lower {
                "lowercase"
            } else {
                "uppercase"
            };
            out.push(Finding::warn(
                "ConsistentInstructionCasing",
                ins.span.line,
                format!("Command '{w}' should match the case of the command majority ({casing})"),
                format!(
                    "write `{}`",
                    if majority_lower {
                        w.to_ascii_lowercase()
                    } else {
                        w.to_ascii_uppercase()
                    }
                ),
            ));
        }
    }
}

/// BuildKit's secret-looking key: a token of `_`-separated words, allow-listed words excepted.
fn secret_key_rule(instruction: &str, key: &str, line: usize, out: &mut Vec<Finding>) {
    const DENY: [&str; 10] = [
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    const ALLOW: [&str; 3] = ["public", "file", "version"];
    let words: Vec<String> = key.split('_').map(str::to_ascii_lowercase).collect();
    // The pattern anchors each token at `_` or at an end, so a whole-key match or a first/last
    // word match; inner words match too since they are bounded by `_` on both sides.
    let has = |list: &[&str]| words.iter().any(|w| list.contains(&w.as_str()));
    if has(&DENY) && !has(&ALLOW) {
        out.push(Finding::warn(
            "SecretsUsedInArgOrEnv",
            line,
            format!("Do not use ARG or ENV instructions for sensitive data ({instruction} \"{key}\")"),
            "pass it with RUN --mount=type=secret,id=... (cairn build --secret): it then never reaches the image or its history",
        ));
    }
}

fn unpinned_rule(reference: &str, line: usize, out: &mut Vec<Finding>) {
    if reference.is_empty() || reference.contains('@') {
        return;
    }
    let last = reference.rsplit('/').next().unwrap_or(reference);
    let tag = last.split_once(':').map(|(_, t)| t);
    let msg = match tag {
        None => format!("Base image '{reference}' has no tag: it means 'latest', which moves"),
        Some("latest") => format!("Base image '{reference}' is not pinned: 'latest' moves"),
        Some(_) => return,
    };
    let repo = reference.split(':').next().unwrap_or(reference);
    out.push(Finding::warn(
        "UnpinnedBaseImage",
        line,
        msg,
        format!("pin a version ({repo}:<version>) or a digest ({repo}@sha256:...) so that rebuilds are reproducible"),
    ));
}

fn final_stage(stages: &[StageText], target: Option<&str>) -> Option<usize> {
    match target {
        Some(t) => stages.iter().position(|s| {
            s.name_raw
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(t))
                || s.index.to_string() == t
        }),
        None => stages.len().checked_sub(1),
    }
}

#[allow(clippy::too_many_arguments)]
fn stage_rules(
    s: &StageText,
    base: &Base,
    ends: &[StageEnd],
    gvals: &HashMap<String, String>,
    opts: &LintOptions<'_>,
    lexer: &Lexer,
    out: &mut Vec<Finding>,
) -> StageEnd {
    let mut end = match base {
        Base::Scratch => StageEnd {
            env: Some(BTreeSet::new()),
            ..StageEnd::default()
        },
        Base::Stage(i) => ends.get(*i).cloned().unwrap_or_default(),
        Base::Image(r) => {
            let info = opts.base.and_then(|b| b(r));
            StageEnd {
                shell: info.as_ref().is_some_and(|i| i.shell),
                env: info.map(|i| i.env.into_iter().map(|(k, _)| k).collect()),
                ..StageEnd::default()
            }
        }
    };
    let mut vals: HashMap<String, String> = HashMap::new();
    if let Some(env) = &end.env {
        for k in env {
            vals.insert(k.clone(), String::new());
        }
    }
    // Variables BuildKit never reports.
    vals.insert("SOURCE_DATE_EPOCH".into(), String::new());
    let mut seen_once: HashMap<&str, usize> = HashMap::new();
    for ins in &s.body {
        let line = ins.span.line;
        // UndefinedVar, before the instruction's own definitions take effect.
        if end.env.is_some() {
            let rec = Recorder::new(&vals);
            let words = expanded_words(ins);
            for w in &words {
                let _ = lexer.process_word(w, &rec);
            }
            let all = words.join(" ");
            for m in rec.missing(&all) {
                let h = suggest(&m, vals.keys().map(String::as_str));
                let mut msg = format!("Usage of undefined variable '${m}'");
                if let Some(h) = &h {
                    msg.push_str(&format!(" (did you mean ${h}?)"));
                }
                let hint = if gvals.contains_key(&m) {
                    format!(
                        "'{m}' is a global ARG: declare `ARG {m}` inside the stage to use it here"
                    )
                } else {
                    format!("declare it first (`ARG {m}` or `ENV {m}=...`), or fix the name")
                };
                out.push(Finding::warn("UndefinedVar", line, msg, hint));
            }
        }
        match (&ins.keyword, &ins.args) {
            (Keyword::Arg, Args::Arg(decls)) => {
                for d in decls {
                    secret_key_rule("ARG", &d.name, line, out);
                    vals.insert(d.name.clone(), String::new());
                    if let Some(e) = &mut end.env {
                        e.insert(d.name.clone());
                    }
                }
            }
            (Keyword::Env, Args::Env(kvs)) | (Keyword::Label, Args::Label(kvs)) => {
                let kw = ins.keyword.as_str();
                if ins.keyword == Keyword::Env {
                    for kv in kvs {
                        secret_key_rule("ENV", &kv.key, line, out);
                        vals.insert(kv.key.clone(), String::new());
                        if let Some(e) = &mut end.env {
                            e.insert(kv.key.clone());
                        }
                    }
                }
                if is_legacy_key_value(ins) {
                    out.push(Finding::warn(
                        "LegacyKeyValueFormat",
                        line,
                        format!("\"{kw} key=value\" should be used instead of legacy \"{kw} key value\" format"),
                        format!("write `{kw} {}`", legacy_fixed(kvs)),
                    ));
                }
            }
            (Keyword::Cmd | Keyword::Entrypoint | Keyword::Healthcheck, args) => {
                if let Some(prev) = seen_once.insert(ins.keyword.as_str(), line) {
                    let kw = ins.keyword.as_str();
                    out.push(Finding::warn(
                        "MultipleInstructionsDisallowed",
                        prev,
                        format!("Multiple {kw} instructions should not be used in the same stage because only the last one will be used"),
                        format!("keep only the last {kw} of the stage"),
                    ));
                }
                if let Args::Command(Command::Shell(_)) = args {
                    if !end.shell {
                        let kw = ins.keyword.as_str();
                        out.push(Finding::warn(
                            "JSONArgsRecommended",
                            line,
                            format!("JSON arguments recommended for {kw} to prevent unintended behavior related to OS signals"),
                            format!("write the exec form, e.g. {kw} [\"executable\", \"arg\"], so that the process is PID 1 and receives SIGTERM"),
                        ));
                    }
                }
            }
            (Keyword::Shell, _) => end.shell = true,
            (Keyword::Workdir, Args::Single(p)) => {
                if p.starts_with('/') || p.starts_with('$') {
                    end.workdir_set = true;
                } else if !end.workdir_set {
                    out.push(Finding::warn(
                        "WorkdirRelativePath",
                        line,
                        format!("Relative workdir \"{p}\" can have unexpected results if the base image changes"),
                        format!("use an absolute path: WORKDIR /{p}"),
                    ));
                }
            }
            (Keyword::User, Args::Single(u)) => end.user = Some((u.clone(), line)),
            (Keyword::Maintainer, _) => out.push(Finding::warn(
                "MaintainerDeprecated",
                line,
                "Maintainer instruction is deprecated in favor of using label".into(),
                "write LABEL org.opencontainers.image.authors=\"...\"",
            )),
            (Keyword::Expose, Args::Expose(ports)) => {
                for p in ports {
                    if p.contains(':') {
                        out.push(Finding::warn(
                            "ExposeInvalidFormat",
                            line,
                            format!("EXPOSE instruction should not define an IP address or host-port mapping, found '{p}'"),
                            "EXPOSE only the container port (EXPOSE 80); publish it at run time (-p 8080:80)",
                        ));
                    } else if let Some((_, proto)) = p.split_once('/') {
                        if proto != proto.to_ascii_lowercase() {
                            out.push(Finding::warn(
                                "ExposeProtoCasing",
                                line,
                                format!("Defined protocol '{p}' in EXPOSE instruction should be lowercase"),
                                format!("write {}", p.to_ascii_lowercase()),
                            ));
                        }
                    }
                }
            }
            (Keyword::Copy | Keyword::Add, Args::Copy { sources, .. }) => {
                let from = ins.flags.iter().any(|f| f.name == "from");
                if let (Some(ignored), false) = (opts.ignored, from) {
                    for src in sources {
                        if src.starts_with("<<")
                            || src.contains("://")
                            || src.contains(['*', '?', '[', '$'])
                        {
                            continue;
                        }
                        let clean = clean_path(src);
                        if !clean.is_empty() && ignored(&clean) {
                            let cmd = if ins.keyword == Keyword::Add {
                                "Add"
                            } else {
                                "Copy"
                            };
                            out.push(Finding::warn(
                                "CopyIgnoredFile",
                                line,
                                format!("Attempting to {cmd} file \"{clean}\" that is excluded by .dockerignore"),
                                "remove the file from .dockerignore, or stop copying it",
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    end
}

/// The words of an instruction that BuildKit expands (RUN is left to the shell).
fn expanded_words(ins: &Instruction) -> Vec<String> {
    let mut w: Vec<String> = Vec::new();
    match &ins.args {
        Args::Env(kvs) => w.extend(kvs.iter().map(|kv| kv.value.clone())),
        Args::Label(kvs) => {
            for kv in kvs {
                w.push(kv.key.clone());
                w.push(kv.value.clone());
            }
        }
        Args::Arg(decls) => w.extend(decls.iter().filter_map(|d| d.default.clone())),
        Args::Copy { sources, dest, .. } => {
            w.extend(sources.iter().filter(|s| !s.starts_with("<<")).cloned());
            w.push(dest.clone());
            for f in &ins.flags {
                if matches!(f.name.as_str(), "chown" | "chmod" | "from") {
                    w.extend(f.value.clone());
                }
            }
        }
        Args::Single(s) if ins.keyword != Keyword::Maintainer => w.push(s.clone()),
        Args::Expose(v) | Args::Volume(v) => w.extend(v.iter().cloned()),
        _ => {}
    }
    w
}

/// `ENV key value` (no `=` in the first word after the keyword): the legacy form.
fn is_legacy_key_value(ins: &Instruction) -> bool {
    let mut words = ins.original.split_whitespace();
    words.next();
    match words.next() {
        Some(first) => !first.contains('='),
        None => false,
    }
}

fn legacy_fixed(kvs: &[cairn_dockerfile::KeyValue]) -> String {
    kvs.iter()
        .map(|kv| {
            let v = kv.value.trim();
            if v.contains(char::is_whitespace) && !v.starts_with('"') {
                format!("{}=\"{}\"", kv.key, v)
            } else {
                format!("{}={}", kv.key, v)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `./a//b/` → `a/b`, as Go's `filepath.Clean` then relative.
fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

fn is_root_user(u: &str) -> bool {
    let name = u.split(':').next().unwrap_or("");
    name.is_empty() || name == "root" || name == "0"
}

fn root_rule(
    fi: usize,
    stages: &[StageText],
    bases: &[Base],
    ends: &[StageEnd],
    opts: &LintOptions<'_>,
    out: &mut Vec<Finding>,
) {
    let end = &ends[fi];
    let line = stages[fi].from.span.line;
    match &end.user {
        Some((u, _)) if u.contains('$') || !is_root_user(u) => {}
        Some((u, l)) => out.push(Finding::warn(
            "FinalStageRunsAsRoot",
            *l,
            format!("The final stage runs as root (USER {u})"),
            "create an unprivileged user and switch to it: RUN adduser -D -u 10001 app, then USER app (or USER 65532 on distroless/scratch)",
        )),
        None => {
            // No USER anywhere in the chain: the root base image's User decides.
            let mut i = fi;
            let root_base = loop {
                match &bases[i] {
                    Base::Stage(p) if *p < i => i = *p,
                    b => break b.clone(),
                }
            };
            if let Base::Image(r) = root_base {
                if let Some(info) = opts.base.and_then(|b| b(&r)) {
                    if !is_root_user(&info.user) {
                        return;
                    }
                }
            }
            out.push(Finding::warn(
                "FinalStageRunsAsRoot",
                line,
                "The final stage runs as root (no USER instruction)".into(),
                "add a non-root user and `USER app` at the end of the final stage (USER 65532 on distroless/scratch)",
            ));
        }
    }
}

/// Base images whose point is to compile: shipping them is shipping the toolchain.
const TOOLCHAIN_IMAGES: [&str; 10] = [
    "golang",
    "rust",
    "gcc",
    "clang",
    "maven",
    "gradle",
    "openjdk",
    "buildpack-deps",
    "sdk",
    "haskell",
];
const TOOLCHAIN_PACKAGES: [&str; 8] = [
    "build-essential",
    "gcc",
    "g++",
    "clang",
    "make",
    "cmake",
    "golang",
    "build-base",
];

fn toolchain_rule(s: &StageText, base: &Base, out: &mut Vec<Finding>) {
    let line = s.from.span.line;
    let hint = "build in a stage `FROM <toolchain> AS builder`, then start the final stage from a minimal image (scratch, distroless, alpine) and COPY --from=builder only the artifacts";
    if let Base::Image(r) = base {
        let repo = r.split(['@']).next().unwrap_or(r);
        let repo = repo.rsplit('/').next().unwrap_or(repo);
        let name = repo.split(':').next().unwrap_or(repo);
        if TOOLCHAIN_IMAGES.contains(&name) {
            out.push(Finding::warn(
                "SingleStageToolchain",
                line,
                format!("Single-stage build: the toolchain image '{r}' is also the final image"),
                hint,
            ));
            return;
        }
    }
    for ins in &s.body {
        if let Args::Command(Command::Shell(cmd)) = &ins.args {
            if ins.keyword != Keyword::Run {
                continue;
            }
            let installs = [
                "apt-get install",
                "apt install",
                "apk add",
                "yum install",
                "dnf install",
            ]
            .iter()
            .any(|i| cmd.contains(i));
            let pkg = cmd
                .split_whitespace()
                .find(|w| TOOLCHAIN_PACKAGES.contains(w));
            if let (true, Some(p)) = (installs, pkg) {
                out.push(Finding::warn(
                    "SingleStageToolchain",
                    ins.span.line,
                    format!("Single-stage build: the compiler toolchain ('{p}') installed here stays in the final image"),
                    hint,
                ));
                return;
            }
        }
    }
}

/// The closest name, as BuildKit's `suggest.Search`: case-insensitive equality first, then
/// the smallest edit distance within a third of the length.
fn suggest<'a>(name: &str, options: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut best: Option<(usize, &str)> = None;
    for o in options {
        if o == name {
            continue;
        }
        if o.eq_ignore_ascii_case(name) {
            return Some(o.to_string());
        }
        let d = levenshtein(name, o);
        if d <= (name.len() / 3).max(1) && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, o));
        }
    }
    best.map(|(_, o)| o.to_string())
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests;
