//! Text forms for people: an expanded instruction ([`Step`]'s `Display`), the outline of a plan
//! (`cairn build --print=outline`) and the list of stages (`--print=targets`).

use crate::ast::{Args, Dockerfile, Keyword};
use crate::{CacheSharing, Chmod, Command, Mount, Plan, Source, Step, StepKind};
use std::fmt::{self, Write};

/// Quotes a word for display when it has blanks, quotes or is empty.
fn q(s: &str) -> String {
    if !s.is_empty() && !s.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
        s.to_string()
    } else {
        format!("{s:?}")
    }
}

fn json(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn command(c: &Command) -> String {
    match c {
        Command::Shell(s) => s.clone(),
        Command::Exec(v) => json(v),
    }
}

fn pairs(v: &[(String, String)]) -> String {
    v.iter()
        .map(|(k, v)| format!("{}={}", k, q(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn source(s: &Source, names: &dyn Fn(usize) -> String) -> String {
    match s {
        Source::Context => "context".into(),
        Source::Stage(i) => names(*i),
        Source::Image(r) => r.clone(),
    }
}

fn mount(m: &Mount, names: &dyn Fn(usize) -> String) -> String {
    let mut o = Vec::new();
    let opt = |o: &mut Vec<String>, k: &str, v: &Option<String>| {
        if let Some(v) = v {
            o.push(format!("{k}={v}"));
        }
    };
    let ids = |o: &mut Vec<String>, mode: &Option<u32>, uid: &Option<u32>, gid: &Option<u32>| {
        if let Some(m) = mode {
            o.push(format!("mode={m:04o}"));
        }
        if let Some(u) = uid {
            o.push(format!("uid={u}"));
        }
        if let Some(g) = gid {
            o.push(format!("gid={g}"));
        }
    };
    match m {
        Mount::Bind {
            target,
            source: src,
            from,
            rw,
        } => {
            o.push("type=bind".into());
            o.push(format!("target={target}"));
            opt(&mut o, "source", src);
            opt(&mut o, "from", &from.as_ref().map(|f| source(f, names)));
            if *rw {
                o.push("rw".into());
            }
        }
        Mount::Cache {
            id,
            target,
            ro,
            sharing,
            from,
            source: src,
            mode,
            uid,
            gid,
        } => {
            o.push("type=cache".into());
            opt(&mut o, "id", id);
            o.push(format!("target={target}"));
            if *sharing != CacheSharing::Shared {
                o.push(format!("sharing={}", format!("{sharing:?}").to_lowercase()));
            }
            opt(&mut o, "from", &from.as_ref().map(|f| source(f, names)));
            opt(&mut o, "source", src);
            if *ro {
                o.push("ro".into());
            }
            ids(&mut o, mode, uid, gid);
        }
        Mount::Tmpfs { target, size } => {
            o.push("type=tmpfs".into());
            o.push(format!("target={target}"));
            opt(&mut o, "size", &size.map(|s| s.to_string()));
        }
        Mount::Secret {
            id,
            target,
            env,
            required,
            mode,
            uid,
            gid,
        } => {
            o.push("type=secret".into());
            o.push(format!("id={id}"));
            opt(&mut o, "target", target);
            opt(&mut o, "env", env);
            if *required {
                o.push("required".into());
            }
            ids(&mut o, mode, uid, gid);
        }
        Mount::Ssh {
            id,
            target,
            required,
            mode,
            uid,
            gid,
        } => {
            o.push("type=ssh".into());
            o.push(format!("id={id}"));
            opt(&mut o, "target", target);
            if *required {
                o.push("required".into());
            }
            ids(&mut o, mode, uid, gid);
        }
    }
    format!("--mount={}", o.join(","))
}

impl Step {
    /// The expanded instruction, one line, with stage references shown through `names`.
    pub fn render(&self, names: &dyn Fn(usize) -> String) -> String {
        match &self.kind {
            StepKind::Run(r) => {
                let mut s = String::from("RUN");
                for m in &r.mounts {
                    let _ = write!(s, " {}", mount(m, names));
                }
                if let Some(n) = &r.network {
                    let _ = write!(s, " --network={}", format!("{n:?}").to_lowercase());
                }
                if let Some(sec) = &r.security {
                    let _ = write!(s, " --security={sec}");
                }
                let _ = write!(s, " {}", command(&r.command));
                s
            }
            StepKind::Copy(c) => {
                let mut s = String::from(if c.add { "ADD" } else { "COPY" });
                if let Some(f) = &c.from {
                    let _ = write!(s, " --from={}", source(f, names));
                }
                if let Some(v) = &c.chown {
                    let _ = write!(s, " --chown={v}");
                }
                match &c.chmod {
                    Some(Chmod::Octal(m)) => {
                        let _ = write!(s, " --chmod={m:04o}");
                    }
                    Some(Chmod::Symbolic(m)) => {
                        let _ = write!(s, " --chmod={m}");
                    }
                    None => {}
                }
                for (on, name) in [
                    (c.link, "link"),
                    (c.parents, "parents"),
                    (c.keep_git_dir, "keep-git-dir"),
                ] {
                    if on {
                        let _ = write!(s, " --{name}");
                    }
                }
                if let Some(u) = c.unpack {
                    let _ = write!(s, " --unpack={u}");
                }
                if let Some(v) = &c.checksum {
                    let _ = write!(s, " --checksum={v}");
                }
                for e in &c.exclude {
                    let _ = write!(s, " --exclude={}", q(e));
                }
                for src in &c.sources {
                    let _ = write!(s, " {}", q(src));
                }
                for h in &c.heredocs {
                    let _ = write!(s, " <<{}", h.name);
                }
                let _ = write!(s, " {}", q(&c.dest));
                s
            }
            StepKind::Env(v) => format!("ENV {}", pairs(v)),
            StepKind::Label(v) => format!("LABEL {}", pairs(v)),
            StepKind::Arg(v) => {
                let parts: Vec<String> = v
                    .iter()
                    .map(|(k, v)| match v {
                        Some(v) => format!("{k}={}", q(v)),
                        None => format!("{k} (unset)"),
                    })
                    .collect();
                format!("ARG {}", parts.join(" "))
            }
            StepKind::Workdir(w) => format!("WORKDIR {w}"),
            StepKind::User(u) => format!("USER {u}"),
            StepKind::Expose(p) => format!("EXPOSE {}", p.join(" ")),
            StepKind::Volume(v) => format!("VOLUME {}", json(v)),
            StepKind::StopSignal(s) => format!("STOPSIGNAL {s}"),
            StepKind::Healthcheck(None) => "HEALTHCHECK NONE".into(),
            StepKind::Healthcheck(Some(h)) => {
                let mut s = String::from("HEALTHCHECK");
                let d = |ns: u64| {
                    if ns % 1_000_000_000 == 0 {
                        format!("{}s", ns / 1_000_000_000)
                    } else {
                        format!("{}ms", ns / 1_000_000)
                    }
                };
                for (name, v) in [
                    ("interval", h.interval_ns),
                    ("timeout", h.timeout_ns),
                    ("start-period", h.start_period_ns),
                    ("start-interval", h.start_interval_ns),
                ] {
                    if let Some(v) = v {
                        let _ = write!(s, " --{name}={}", d(v));
                    }
                }
                if let Some(r) = h.retries {
                    let _ = write!(s, " --retries={r}");
                }
                let _ = write!(s, " CMD {}", command(&h.test));
                s
            }
            StepKind::Shell(v) => format!("SHELL {}", json(v)),
            StepKind::Cmd(c) => format!("CMD {}", command(c)),
            StepKind::Entrypoint(c) => format!("ENTRYPOINT {}", command(c)),
            StepKind::Onbuild(t) => format!("ONBUILD {t}"),
            StepKind::Maintainer(m) => format!("MAINTAINER {m}"),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(&|i| i.to_string()))
    }
}

/// The outline of a plan, as `cairn build --print=outline` prints it: the stages to build in
/// order with their expanded instructions, the build-arg values RUN steps see, and the stages
/// that are skipped.
pub fn outline(plan: &Plan) -> String {
    let names = |i: usize| {
        plan.stages
            .iter()
            .find(|s| s.index == i)
            .and_then(|s| s.name.clone())
            .unwrap_or_else(|| i.to_string())
    };
    let mut o = String::new();
    let _ = writeln!(o, "TARGET: {}", plan.target);
    let _ = writeln!(
        o,
        "PLATFORM: {} (build platform {})",
        plan.target_platform, plan.build_platform
    );
    if !plan.global_args.is_empty() {
        let _ = writeln!(o, "GLOBAL ARGS:");
        for (k, v) in &plan.global_args {
            match v {
                Some(v) => writeln!(o, "  {k}={}", q(v)),
                None => writeln!(o, "  {k} (unset)"),
            }
            .ok();
        }
    }
    // What the build will ask the caller for, as `docker build --call=outline` lists it.
    let mut secrets: Vec<String> = Vec::new();
    let mut ssh: Vec<String> = Vec::new();
    for step in plan.stages.iter().flat_map(|s| &s.steps) {
        let StepKind::Run(r) = &step.kind else {
            continue;
        };
        for m in &r.mounts {
            let (list, id, required) = match m {
                Mount::Secret { id, required, .. } => (&mut secrets, id, *required),
                Mount::Ssh { id, required, .. } => (&mut ssh, id, *required),
                _ => continue,
            };
            let entry = if required {
                format!("{id} (required)")
            } else {
                id.clone()
            };
            if !list.contains(&entry) {
                list.push(entry);
            }
        }
    }
    if !secrets.is_empty() {
        let _ = writeln!(o, "SECRETS: {}", secrets.join(", "));
    }
    if !ssh.is_empty() {
        let _ = writeln!(o, "SSH: {}", ssh.join(", "));
    }
    for s in &plan.stages {
        let _ = writeln!(o);
        let base = match &s.base {
            crate::Base::Scratch => "scratch".to_string(),
            crate::Base::Image(r) => r.clone(),
            crate::Base::Stage(i) => format!("{} (stage)", names(*i)),
        };
        let name = s
            .name
            .as_deref()
            .map(|n| format!(" {n}"))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "STAGE {}{name} (line {}): FROM {base}",
            s.index, s.span.line
        );
        if let Some(p) = &s.platform {
            let _ = writeln!(o, "  platform: {p}");
        }
        if !s.deps.is_empty() {
            let deps: Vec<String> = s.deps.iter().map(|d| names(*d)).collect();
            let _ = writeln!(o, "  needs: {}", deps.join(", "));
        }
        for st in &s.steps {
            let _ = writeln!(o, "  {:>4}  {}", st.span.line, st.render(&names));
            if let StepKind::Run(r) = &st.kind {
                if !r.args_env.is_empty() {
                    let _ = writeln!(o, "        (build args: {})", pairs(&r.args_env));
                }
                for h in &r.heredocs {
                    let _ = writeln!(o, "        <<{} = {}", h.name, q(&h.content));
                }
            }
            if let StepKind::Copy(c) = &st.kind {
                for h in &c.heredocs {
                    let _ = writeln!(o, "        <<{} = {}", h.name, q(&h.content));
                }
            }
        }
    }
    if !plan.skipped.is_empty() {
        let _ = writeln!(o, "\nSKIPPED: {}", plan.skipped.join(", "));
    }
    for w in &plan.warnings {
        if w.span.line > 0 {
            let _ = writeln!(o, "WARNING: line {}: {}", w.span.line, w.message);
        } else {
            let _ = writeln!(o, "WARNING: {}", w.message);
        }
    }
    o
}

/// One stage of a file, for `--print=targets`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetInfo {
    /// Position in the file (0-based).
    pub index: usize,
    /// `AS name`, lower-cased.
    pub name: Option<String>,
    /// Line of the FROM.
    pub line: usize,
    /// The base as written (not expanded).
    pub base: String,
    /// The comment lines right above the FROM.
    pub description: Option<String>,
}

/// The stages of a parsed file, in order (the last one is the default target).
pub fn targets(df: &Dockerfile) -> Vec<TargetInfo> {
    df.instructions
        .iter()
        .filter(|i| i.keyword == Keyword::From)
        .enumerate()
        .map(|(index, i)| {
            let (base, name) = match &i.args {
                Args::From { image, stage_name } => {
                    (image.clone(), stage_name.as_ref().map(|n| n.to_lowercase()))
                }
                _ => (String::new(), None),
            };
            TargetInfo {
                index,
                name,
                line: i.span.line,
                base,
                description: (!i.comments.is_empty()).then(|| i.comments.join(" ")),
            }
        })
        .collect()
}

/// The `--print=targets` table.
pub fn targets_table(df: &Dockerfile) -> String {
    let t = targets(df);
    let rows: Vec<[String; 4]> = t
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let mut name = s.name.clone().unwrap_or_else(|| s.index.to_string());
            if k + 1 == t.len() {
                name.push_str(" (default)");
            }
            [
                name,
                s.line.to_string(),
                s.base.clone(),
                s.description.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let head = ["TARGET", "LINE", "BASE", "DESCRIPTION"].map(String::from);
    let mut w = [0usize; 3];
    for r in std::iter::once(&head).chain(rows.iter()) {
        for (i, c) in r.iter().take(3).enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut o = String::new();
    for r in std::iter::once(&head).chain(rows.iter()) {
        let line = format!(
            "{:w0$}  {:w1$}  {:w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2]
        );
        let _ = writeln!(o, "{}", line.trim_end());
    }
    o
}
