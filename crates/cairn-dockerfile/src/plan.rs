//! [`Dockerfile`] → [`Plan`]: ARG scoping, word expansion where BuildKit expands, base-image
//! ENV and ONBUILD triggers, the stage graph (`FROM <stage>`, `COPY --from`, `RUN --mount from=`)
//! and the pruning to the stages that the target needs.
//!
//! Stages are dispatched in file order: a stage can only use earlier stages (a later one is a
//! forward reference, itself a cycle), so every stage it needs is done before it. A broken
//! stage graph is an error whatever the target; any other error of a stage that the target
//! does not need is not reported, as BuildKit only dispatches what it builds. The base-image
//! lookup is only made for needed stages (see `Planner::dispatch_all`).

use crate::ast::{Args, Dockerfile, Flag, Instruction, Keyword};
use crate::heredoc;
use crate::instructions::parse_interval;
use crate::parser::{parse_line, Ctx, PosMap};
use crate::shell::{Lexer, Lookup};
use crate::values;
use crate::vars::{platform_args, Vars, PROXY_ARGS};
use crate::{
    Base, BaseImageInfo, BaseLookup, Command, Copy, Error, Healthcheck, Heredoc, Mount,
    NetworkMode, Plan, PlanOptions, Run, Source, Span, Stage, Step, StepKind, Warning,
};
use std::collections::BTreeSet;

/// The PATH of an image whose config has none (BuildKit's `system.DefaultPathEnv` on Linux).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A stage as found in the file, before dispatch.
struct Header<'a> {
    from: &'a Instruction,
    body: &'a [Instruction],
    name: Option<String>,
}

/// Dispatch results by stage index (`None`: not dispatched).
type Results = Vec<Option<Result<Done, Error>>>;

/// What a dispatched stage hands to the stages built on it.
struct Done {
    stage: Stage,
    vars: Vars,
    /// The image config's `Env` at the end of the stage (base image ENV, then ENV steps).
    config_env: Vars,
    onbuild: Vec<String>,
    consumed: BTreeSet<String>,
    warnings: Vec<Warning>,
}

struct Planner<'a> {
    ctx: Ctx<'a>,
    opts: &'a PlanOptions,
    lookup: BaseLookup<'a>,
    lexer: Lexer,
    meta: Vars,
    headers: Vec<Header<'a>>,
    /// The first error in the stage graph itself, reported even for stages the target skips.
    graph_error: std::cell::RefCell<Option<Error>>,
}

/// Per-stage state while its instructions are dispatched.
struct State {
    index: usize,
    /// Everything expansion sees: ENV and ARG values, the last writer winning.
    vars: Vars,
    /// The image config's `Env`: what a stage built FROM this one starts with.
    config_env: Vars,
    deps: Vec<usize>,
    onbuild: Vec<String>,
    consumed: BTreeSet<String>,
    warnings: Vec<Warning>,
}

impl State {
    fn dep(&mut self, s: &Option<Source>) {
        if let Some(Source::Stage(i)) = s {
            if !self.deps.contains(i) {
                self.deps.push(*i);
            }
        }
    }
}

pub(crate) fn plan(df: &Dockerfile, opts: &PlanOptions, lookup: BaseLookup) -> Result<Plan, Error> {
    let ctx = Ctx {
        name: &df.name,
        lines: &df.lines,
        escape: df.directives.escape,
    };
    let target_platform = opts
        .target_platform
        .clone()
        .unwrap_or_else(crate::vars::host_platform);
    let build_platform = opts
        .build_platform
        .clone()
        .unwrap_or_else(crate::vars::host_platform);
    let mut meta = Vars::default();
    for (k, v) in
        platform_args(&target_platform, &build_platform).map_err(|m| Error::plain(&df.name, m))?
    {
        meta.set(&k, v, true);
    }
    let lexer = Lexer::new(df.directives.escape);

    // Global ARGs (before the first FROM) and the stage headers.
    let first_from = df
        .instructions
        .iter()
        .position(|i| i.keyword == Keyword::From);
    let globals = &df.instructions[..first_from.unwrap_or(df.instructions.len())];
    let mut global_args = Vec::new();
    let mut consumed_global = BTreeSet::new();
    for ins in globals {
        let Args::Arg(decls) = &ins.args else {
            return Err(ctx.err(
                ins.span.line,
                ins.span.column,
                ins.keyword.as_str().len(),
                format!(
                    "{} cannot come before the first FROM: only ARG can",
                    ins.keyword.as_str()
                ),
            ));
        };
        for d in decls {
            let value = match (opts.build_args.get(&d.name), &d.default) {
                (Some(v), _) => {
                    consumed_global.insert(d.name.clone());
                    Some(v.clone())
                }
                (None, Some(def)) => Some(lexer.process_word(def, &meta).map_err(|m| {
                    let width = d.name.chars().count() + 1 + def.chars().count();
                    ctx.err(d.line, d.column, width, m)
                })?),
                // A bare global ARG of a predefined name keeps the predefined value.
                (None, None) => meta.get(&d.name).map(str::to_string),
            };
            if let Some(v) = &value {
                meta.set(&d.name, v.clone(), true);
            }
            global_args.push((d.name.clone(), value));
        }
    }
    let Some(first_from) = first_from else {
        return Err(Error::plain(
            &df.name,
            "the Dockerfile has no FROM instruction: there is no stage to build",
        ));
    };

    let headers = stage_headers(&ctx, df, first_from, &lexer, &meta)?;
    let target = find_target(&df.name, &headers, opts.target.as_deref())?;

    let planner = Planner {
        ctx,
        opts,
        lookup,
        lexer,
        meta,
        headers,
        graph_error: Default::default(),
    };
    let (needed, done) = planner.dispatch_all(target)?;
    let mut warnings = df.warnings.clone();
    let mut stages = Vec::new();
    let mut skipped = Vec::new();
    let mut consumed = consumed_global;
    for (i, r) in done.into_iter().enumerate() {
        if needed.contains(&i) {
            if let Some(Ok(d)) = r {
                warnings.extend(d.warnings);
                consumed.extend(d.consumed);
                stages.push(d.stage);
            }
        } else {
            skipped.push(
                planner.headers[i]
                    .name
                    .clone()
                    .unwrap_or_else(|| i.to_string()),
            );
        }
    }
    for k in planner.opts.build_args.keys() {
        if !consumed.contains(k) && !PROXY_ARGS.contains(&k.as_str()) && !k.starts_with("BUILDKIT_")
        {
            warnings.push(Warning {
                span: Span::default(),
                message: format!("build-arg {k} is not declared by an ARG of the stages that are built, so it is unused"),
            });
        }
    }
    let target_name = planner.headers[target]
        .name
        .clone()
        .unwrap_or_else(|| target.to_string());
    Ok(Plan {
        stages,
        skipped,
        warnings,
        target: target_name,
        target_platform,
        build_platform,
        global_args,
    })
}

/// The stages `target` needs (itself included), by the deps of the pass-2 result of a stage
/// when there is one, else of its pass-1 result. A pass-2 error of a needed stage is returned.
fn closure(
    target: usize,
    done: &[Option<Result<Done, Error>>],
    first: &[Option<Result<Done, Error>>],
    parents: &[Option<usize>],
) -> Result<BTreeSet<usize>, Error> {
    let mut needed = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if !needed.insert(i) {
            continue;
        }
        todo.extend(parents[i]);
        match (&done[i], &first[i]) {
            (Some(Ok(d)), _) => todo.extend(d.stage.deps.iter().copied()),
            (Some(Err(e)), _) => return Err(e.clone()),
            // Not dispatched with base images yet: pass 1 tells its deps. If pass 1 failed
            // (e.g. `${X:?}` where X comes from the base image), pass 2 will tell.
            (None, Some(Ok(d))) => todo.extend(d.stage.deps.iter().copied()),
            (None, _) => {}
        }
    }
    Ok(needed)
}

/// The stages of the file, from the first FROM on: names expanded with the global ARGs,
/// checked (valid, not reserved, not twice) and lower-cased.
fn stage_headers<'a>(
    ctx: &Ctx,
    df: &'a Dockerfile,
    first_from: usize,
    lexer: &Lexer,
    meta: &Vars,
) -> Result<Vec<Header<'a>>, Error> {
    let mut headers: Vec<Header> = Vec::new();
    let mut start = first_from;
    while start < df.instructions.len() {
        let end = df.instructions[start + 1..]
            .iter()
            .position(|i| i.keyword == Keyword::From)
            .map_or(df.instructions.len(), |p| start + 1 + p);
        let from = &df.instructions[start];
        let name = match &from.args {
            Args::From {
                stage_name: Some(n),
                ..
            } => {
                let expanded = lexer
                    .process_word(n, meta)
                    .map_err(|m| ctx.err(from.args_line, from.args_column, 1, m))?
                    .to_lowercase();
                let col_of_name = from
                    .original
                    .rfind(n.as_str())
                    .map(|o| from.original[..o].chars().count());
                let (line, col) = (from.span.line, from.span.column + col_of_name.unwrap_or(0));
                check_stage_name(ctx, &expanded, line, col, n.chars().count())?;
                if let Some(prev) = headers
                    .iter()
                    .find(|h| h.name.as_deref() == Some(expanded.as_str()))
                {
                    return Err(ctx.err(
                        line,
                        col,
                        n.chars().count(),
                        format!(
                            "duplicate stage name {expanded:?}: already defined at line {}",
                            prev.from.span.line
                        ),
                    ));
                }
                Some(expanded)
            }
            _ => None,
        };
        headers.push(Header {
            from,
            body: &df.instructions[start + 1..end],
            name,
        });
        start = end;
    }

    Ok(headers)
}

/// The index of the `--target` stage (by name, case-insensitive), the last stage by default.
fn find_target(file: &str, headers: &[Header], target: Option<&str>) -> Result<usize, Error> {
    Ok(match target {
        None => headers.len() - 1,
        Some(t) => {
            let lt = t.to_lowercase();
            match headers
                .iter()
                .position(|h| h.name.as_deref() == Some(lt.as_str()))
            {
                Some(i) => i,
                None => {
                    let names: Vec<&str> =
                        headers.iter().filter_map(|h| h.name.as_deref()).collect();
                    let msg = crate::suggest::with_suggestion(
                        format!("target stage {t:?} could not be found"),
                        &lt,
                        names.iter().copied(),
                    );
                    let msg = if names.is_empty() || msg.contains("did you mean") {
                        msg
                    } else {
                        format!("{msg} (stages: {})", names.join(", "))
                    };
                    return Err(Error::plain(file, msg));
                }
            }
        }
    })
}

fn check_stage_name(
    ctx: &Ctx,
    name: &str,
    line: usize,
    col: usize,
    width: usize,
) -> Result<(), Error> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return Err(ctx.err(
            line,
            col,
            width,
            format!("invalid name for build stage: {name:?}, name can't start with a number or contain symbols"),
        ));
    }
    if name == "scratch" || name == "context" {
        return Err(ctx.err(
            line,
            col,
            width,
            format!("{name:?} is a reserved name and cannot name a build stage"),
        ));
    }
    Ok(())
}

fn flag<'f>(ins: &'f Instruction, name: &str) -> Option<&'f Flag> {
    ins.flags.iter().find(|f| f.name == name)
}

fn bool_flag(ins: &Instruction, name: &str) -> Option<bool> {
    flag(ins, name).map(|f| {
        f.value
            .as_deref()
            .is_none_or(|v| v.eq_ignore_ascii_case("true"))
    })
}

impl Planner<'_> {
    /// Records `e` as a stage-graph error (the first one wins) and returns it.
    fn graph(&self, e: Error) -> Error {
        self.graph_error
            .borrow_mut()
            .get_or_insert_with(|| e.clone());
        e
    }

    fn flag_err(&self, f: &Flag, msg: String) -> Error {
        self.ctx.err(f.line, f.column, f.width(), msg)
    }

    fn args_err(&self, ins: &Instruction, msg: String) -> Error {
        let width = ins
            .original
            .chars()
            .count()
            .saturating_sub(ins.args_column.saturating_sub(ins.span.column));
        self.ctx
            .err(ins.args_line, ins.args_column, width.max(1), msg)
    }

    fn expand(&self, ins: &Instruction, word: &str, vars: &dyn Lookup) -> Result<String, Error> {
        self.lexer
            .process_word(word, vars)
            .map_err(|m| self.args_err(ins, m))
    }

    /// Expands a word whose error should point at (line, column), `width` characters wide.
    fn expand_at(
        &self,
        line: usize,
        column: usize,
        width: usize,
        word: &str,
        vars: &dyn Lookup,
    ) -> Result<String, Error> {
        self.lexer
            .process_word(word, vars)
            .map_err(|m| self.ctx.err(line, column, width, m))
    }

    fn expand_flag(&self, f: &Flag, vars: &dyn Lookup) -> Result<String, Error> {
        self.lexer
            .process_word(f.value.as_deref().unwrap_or_default(), vars)
            .map_err(|m| self.flag_err(f, m))
    }

    /// Where `--from=name` / `from=name` points, seen from stage `current`.
    fn resolve(&self, name: &str, current: usize, what: &str) -> Result<Source, String> {
        let n = self.headers.len();
        let later = |j: usize| {
            let h = &self.headers[j];
            let shown = h.name.clone().unwrap_or_else(|| j.to_string());
            if j == current {
                format!("circular dependency: stage {shown} uses itself through {what}={name}")
            } else {
                format!(
                    "{what}={name} refers to stage {shown}, which is defined later (line {}): a stage can only use earlier stages",
                    h.from.span.line
                )
            }
        };
        if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
            return match name.parse::<usize>() {
                Ok(j) if j < current => Ok(Source::Stage(j)),
                Ok(j) if j < n => Err(later(j)),
                _ => Err(format!(
                    "invalid stage index {name}: the Dockerfile has {n} stage(s), numbered from 0"
                )),
            };
        }
        let lower = name.to_lowercase();
        match self
            .headers
            .iter()
            .position(|h| h.name.as_deref() == Some(lower.as_str()))
        {
            Some(j) if j < current => Ok(Source::Stage(j)),
            Some(j) => Err(later(j)),
            // `context` (a reserved stage name) is the build context, as in BuildKit.
            None if name == "context" => Ok(Source::Context),
            None => Ok(Source::Image(name.to_string())),
        }
    }

    /// A warning when an image reference looks like a misspelt stage name.
    fn image_warning(&self, st: &mut State, src: &Option<Source>, f: &Flag, what: &str) {
        let Some(Source::Image(name)) = src else {
            return;
        };
        if name.contains(['/', ':', '@', '.']) {
            return;
        }
        let names = self.headers.iter().filter_map(|h| h.name.as_deref());
        if let Some(s) = crate::suggest::closest(name, names) {
            st.warnings.push(Warning {
                span: Span { line: f.line, column: f.column, end_line: f.line },
                message: format!("{what}={name} is not a stage of this Dockerfile, so it is used as an image (did you mean {s}?)"),
            });
        }
    }

    fn dispatch_stage(
        &self,
        i: usize,
        done: &[Option<Result<Done, Error>>],
        lookup: BaseLookup,
    ) -> Result<Done, Error> {
        let h = &self.headers[i];
        let from = h.from;
        let Args::From { image, .. } = &from.args else {
            return Err(self.args_err(from, "FROM without an image".into()));
        };
        let platform = match flag(from, "platform") {
            Some(f) => {
                let p = self.expand_flag(f, &self.meta)?;
                crate::vars::split_platform(&p).map_err(|m| self.flag_err(f, m))?;
                Some(p)
            }
            None => None,
        };
        let base_name = self.expand(from, image, &self.meta)?;
        if base_name.is_empty() {
            return Err(self.args_err(from, format!("base name ({image}) should not be blank")));
        }
        let lower = base_name.to_lowercase();
        let mut st = State {
            index: i,
            vars: Vars::default(),
            config_env: Vars::default(),
            deps: Vec::new(),
            onbuild: Vec::new(),
            consumed: BTreeSet::new(),
            warnings: Vec::new(),
        };
        let (base, triggers) = if lower == "scratch" {
            (Base::Scratch, Vec::new())
        } else if let Some(j) = self.headers[..i]
            .iter()
            .position(|h| h.name.as_deref() == Some(lower.as_str()))
        {
            let parent = match done.get(j) {
                Some(Some(r)) => r.as_ref().map_err(Clone::clone)?,
                _ => return Err(self.args_err(from, format!("stage {lower} is not planned yet"))),
            };
            // The parent's ARGs carry over, but its image config's Env is applied again on
            // top, so an ENV beats an ARG of the same name at the stage boundary (as BuildKit).
            st.vars = parent.vars.clone();
            st.config_env = parent.config_env.clone();
            for (k, v) in parent.config_env.iter() {
                st.vars.set(k, v.to_string(), false);
            }
            st.deps.push(j);
            (Base::Stage(j), parent.onbuild.clone())
        } else if let Some(j) = self.headers[i..]
            .iter()
            .position(|h| h.name.as_deref() == Some(lower.as_str()))
        {
            let j = i + j;
            let msg = if j == i {
                format!("FROM {base_name} AS {lower}: a stage cannot be its own base")
            } else {
                format!(
                    "FROM {base_name} refers to stage {lower}, which is defined later (line {}): a stage can only build on an earlier one",
                    self.headers[j].from.span.line
                )
            };
            return Err(self.graph(self.args_err(from, msg)));
        } else {
            let info = lookup(&base_name).unwrap_or_default();
            for (k, v) in info.env {
                st.vars.set(&k, v.clone(), false);
                st.config_env.set(&k, v, false);
            }
            (Base::Image(base_name.clone()), info.onbuild)
        };

        if !matches!(base, Base::Stage(_)) && st.vars.get("PATH").is_none() {
            // As BuildKit: an image without PATH (and scratch) gets the default one.
            st.vars.set("PATH", DEFAULT_PATH.to_string(), false);
            st.config_env.set("PATH", DEFAULT_PATH.to_string(), false);
        }
        let mut steps = Vec::new();
        for t in &triggers {
            let ins = self.trigger(from, t, &base_name)?;
            let kind = self.dispatch(&ins, &mut st).map_err(|mut e| {
                e.message = format!("ONBUILD trigger `{t}` of base {base_name}: {}", e.message);
                e
            })?;
            steps.push(Step {
                span: from.span,
                original: t.clone(),
                kind,
            });
        }
        // Triggers run once: the new stage does not pass its base's triggers on.
        st.onbuild.clear();
        for ins in h.body {
            let kind = self.dispatch(ins, &mut st)?;
            steps.push(Step {
                span: ins.span,
                original: ins.original.clone(),
                kind,
            });
        }
        Ok(Done {
            stage: Stage {
                index: i,
                name: h.name.clone(),
                base,
                platform,
                span: from.span,
                steps,
                deps: st.deps,
                description: (!from.comments.is_empty()).then(|| from.comments.join(" ")),
            },
            vars: st.vars,
            config_env: st.config_env,
            onbuild: st.onbuild,
            consumed: st.consumed,
            warnings: st.warnings,
        })
    }

    /// Dispatches the stages: returns the ones `target` needs and the results by index.
    ///
    /// Pass 1 dispatches every stage without asking for base images: it gives the stage graph
    /// of the whole file (a broken graph is an error whatever the target), so that the lookup,
    /// which may pull an image, is only made for the stages the target needs. Pass 2 gives
    /// those stages their base images' ENV and ONBUILD triggers; since a trigger or an ENV can
    /// add a `--from`, it repeats until no needed stage is missing. A FROM-parent is needed
    /// and earlier, so it is always done before its children.
    fn dispatch_all(&self, target: usize) -> Result<(BTreeSet<usize>, Results), Error> {
        let n = self.headers.len();
        let mut first: Results = Vec::new();
        for i in 0..n {
            let r = self.dispatch_stage(i, &first, &|_| None);
            first.push(Some(r));
        }
        if let Some(e) = self.graph_error.borrow_mut().take() {
            return Err(e);
        }
        let parents: Vec<Option<usize>> = (0..n).map(|i| self.parent(i)).collect();
        let mut done: Results = (0..n).map(|_| None).collect();
        // Stages whose pass-1 result stands: nothing of theirs comes from a base image.
        let mut reused = vec![false; n];
        loop {
            let needed = closure(target, &done, &first, &parents)?;
            let missing: Vec<usize> = needed
                .iter()
                .copied()
                .filter(|i| done[*i].is_none())
                .collect();
            if missing.is_empty() {
                return Ok((needed, done));
            }
            for i in missing {
                let image = match parents[i] {
                    Some(j) if reused[j] => None,
                    // Built on a stage that has base-image data: dispatch again.
                    Some(_) => Some(BaseImageInfo::default()),
                    None => self.base_image(i).and_then(|name| (self.lookup)(&name)),
                };
                match image {
                    None => {
                        reused[i] = true;
                        done[i] = first[i].take();
                    }
                    Some(info) => {
                        // The lookup was just made: answer it again without a second call.
                        let answer = move |_: &str| Some(info.clone());
                        done[i] = Some(self.dispatch_stage(i, &done, &answer));
                    }
                }
            }
        }
    }

    /// The image that stage `i` is built FROM (expanded), unless it is scratch or a stage.
    fn base_image(&self, i: usize) -> Option<String> {
        let Args::From { image, .. } = &self.headers[i].from.args else {
            return None;
        };
        let name = self.lexer.process_word(image, &self.meta).ok()?;
        let lower = name.to_lowercase();
        let is_stage = self
            .headers
            .iter()
            .any(|h| h.name.as_deref() == Some(lower.as_str()));
        (!name.is_empty() && lower != "scratch" && !is_stage).then_some(name)
    }

    /// The earlier stage that stage `i` is built FROM, if any (known without dispatching).
    fn parent(&self, i: usize) -> Option<usize> {
        let Args::From { image, .. } = &self.headers[i].from.args else {
            return None;
        };
        let name = self
            .lexer
            .process_word(image, &self.meta)
            .ok()?
            .to_lowercase();
        self.headers[..i]
            .iter()
            .position(|h| h.name.as_deref() == Some(name.as_str()))
    }

    /// Parses an ONBUILD trigger of a base; its positions become the FROM's.
    fn trigger(&self, from: &Instruction, text: &str, base: &str) -> Result<Instruction, Error> {
        let lines = [text.to_string()];
        let tctx = Ctx {
            name: self.ctx.name,
            lines: &lines,
            escape: '\\',
        };
        let relocate = |mut e: Error| {
            e.message = format!("ONBUILD trigger `{text}` of base {base}: {}", e.message);
            e.line = from.span.line;
            e.column = from.span.column;
            e.source_line = self
                .ctx
                .lines
                .get(from.span.line.wrapping_sub(1))
                .cloned()
                .unwrap_or_default();
            e.width = 4;
            e
        };
        let mut ins = parse_line(&tctx, text, &PosMap::single(1, 1), true).map_err(relocate)?;
        if matches!(
            ins.keyword,
            Keyword::From | Keyword::Maintainer | Keyword::Onbuild
        ) {
            return Err(relocate(tctx.err(
                1,
                1,
                1,
                format!(
                    "{} isn't allowed as an ONBUILD trigger",
                    ins.keyword.as_str()
                ),
            )));
        }
        ins.span = from.span;
        ins.args_line = from.span.line;
        ins.args_column = from.span.column;
        for f in &mut ins.flags {
            f.line = from.span.line;
            f.column = from.span.column;
        }
        Ok(ins)
    }

    fn dispatch(&self, ins: &Instruction, st: &mut State) -> Result<StepKind, Error> {
        Ok(match (&ins.keyword, &ins.args) {
            (Keyword::Env | Keyword::Label, Args::Env(kvs) | Args::Label(kvs)) => {
                // Every pair is expanded with the values from before this line.
                let mut out = Vec::new();
                for kv in kvs {
                    let width = kv.key.chars().count() + 1 + kv.value.chars().count();
                    let at = |w: &str| self.expand_at(kv.line, kv.column, width, w, &st.vars);
                    out.push((at(&kv.key)?, at(&kv.value)?));
                }
                if ins.keyword == Keyword::Label {
                    return Ok(StepKind::Label(out));
                }
                for (k, v) in &out {
                    st.vars.set(k, v.clone(), false);
                    st.config_env.set(k, v.clone(), false);
                }
                StepKind::Env(out)
            }
            (Keyword::Arg, Args::Arg(decls)) => {
                let mut out = Vec::new();
                for d in decls {
                    let given = self.opts.build_args.get(&d.name);
                    let value = if let Some(v) = given {
                        st.consumed.insert(d.name.clone());
                        Some(v.clone())
                    } else if let Some(def) = &d.default {
                        let width = d.name.chars().count() + 1 + def.chars().count();
                        Some(self.expand_at(d.line, d.column, width, def, &st.vars)?)
                    } else {
                        // A bare `ARG NAME` picks up the global ARG (or the predefined one).
                        self.meta.get(&d.name).map(str::to_string)
                    };
                    st.vars.declare(&d.name);
                    if let Some(v) = &value {
                        st.vars.set(&d.name, v.clone(), true);
                    }
                    out.push((d.name.clone(), value));
                }
                StepKind::Arg(out)
            }
            (Keyword::Workdir, Args::Single(w)) => {
                StepKind::Workdir(self.expand(ins, w, &st.vars)?)
            }
            (Keyword::User, Args::Single(w)) => StepKind::User(self.expand(ins, w, &st.vars)?),
            (Keyword::Stopsignal, Args::Single(w)) => {
                let s = self.expand(ins, w, &st.vars)?;
                values::check_signal(&s).map_err(|m| self.args_err(ins, m))?;
                StepKind::StopSignal(s)
            }
            (Keyword::Maintainer, Args::Single(w)) => StepKind::Maintainer(w.clone()),
            (Keyword::Expose, Args::Expose(ports)) => {
                let mut out = Vec::new();
                for p in ports {
                    for w in self.expand(ins, p, &st.vars)?.split_whitespace() {
                        values::check_port(w).map_err(|m| self.args_err(ins, m))?;
                        out.push(w.to_string());
                    }
                }
                StepKind::Expose(out)
            }
            (Keyword::Volume, Args::Volume(vols)) => {
                let mut out = Vec::new();
                for v in vols {
                    let e = self.expand(ins, v, &st.vars)?;
                    if e.is_empty() {
                        return Err(self
                            .args_err(ins, "VOLUME specified can not be an empty string".into()));
                    }
                    out.push(e);
                }
                StepKind::Volume(out)
            }
            (Keyword::Shell, Args::Shell(v)) => StepKind::Shell(v.clone()),
            (Keyword::Cmd, Args::Command(c)) => StepKind::Cmd(c.clone()),
            (Keyword::Entrypoint, Args::Command(c)) => StepKind::Entrypoint(c.clone()),
            (Keyword::Onbuild, Args::Onbuild(sub)) => {
                st.onbuild.push(sub.original.clone());
                StepKind::Onbuild(sub.original.clone())
            }
            (Keyword::Healthcheck, Args::Healthcheck(None)) => StepKind::Healthcheck(None),
            (Keyword::Healthcheck, Args::Healthcheck(Some(test))) => {
                let dur = |name: &str| -> Result<Option<u64>, Error> {
                    match flag(ins, name) {
                        Some(f) => {
                            parse_interval(f.value.as_deref().unwrap_or_default()).map_err(|m| {
                                self.flag_err(f, format!("invalid value for --{name}: {m}"))
                            })
                        }
                        None => Ok(None),
                    }
                };
                let retries = match flag(ins, "retries") {
                    Some(f) => f
                        .value
                        .as_deref()
                        .unwrap_or_default()
                        .parse::<u32>()
                        .ok()
                        .filter(|n| *n > 0),
                    None => None,
                };
                StepKind::Healthcheck(Some(Healthcheck {
                    test: test.clone(),
                    interval_ns: dur("interval")?,
                    timeout_ns: dur("timeout")?,
                    start_period_ns: dur("start-period")?,
                    start_interval_ns: dur("start-interval")?,
                    retries,
                }))
            }
            (Keyword::Run, Args::Command(command)) => self.dispatch_run(ins, command, st)?,
            (Keyword::Copy | Keyword::Add, Args::Copy { sources, dest, .. }) => {
                self.dispatch_copy(ins, sources, dest, st)?
            }
            _ => {
                return Err(
                    self.args_err(ins, format!("{} is not allowed here", ins.keyword.as_str()))
                )
            }
        })
    }

    fn dispatch_run(
        &self,
        ins: &Instruction,
        command: &Command,
        st: &mut State,
    ) -> Result<StepKind, Error> {
        let mut mounts = Vec::new();
        for f in ins.flags.iter().filter(|f| f.name == "mount") {
            let vars = &st.vars;
            let expand = |v: &str| self.lexer.process_word(v, vars);
            let resolve = |name: &str| self.resolve(name, st.index, "--mount from");
            let mut graph = false;
            let mut resolve = |name: &str| {
                let r = resolve(name);
                graph |= r.is_err();
                r
            };
            let m = values::parse_mount(
                f.value.as_deref().unwrap_or_default(),
                &expand,
                &mut resolve,
            )
            .map_err(|m| {
                if graph {
                    self.graph(self.flag_err(f, m))
                } else {
                    self.flag_err(f, m)
                }
            })?;
            if let Mount::Bind { from, .. } | Mount::Cache { from, .. } = &m {
                let from = from.clone();
                st.dep(&from);
                self.image_warning(st, &from, f, "--mount from");
            }
            mounts.push(m);
        }
        let network = flag(ins, "network").map(|f| match f.value.as_deref() {
            Some("none") => NetworkMode::None,
            Some("host") => NetworkMode::Host,
            _ => NetworkMode::Default,
        });
        let heredocs = ins
            .heredocs
            .iter()
            .map(|h| Heredoc {
                name: h.name.clone(),
                content: if h.chomp {
                    heredoc::chomp(&h.content)
                } else {
                    h.content.clone()
                },
                quoted: !h.expand,
                strip_tabs: h.chomp,
            })
            .collect();
        let mut args_env = st.vars.args_env();
        for p in PROXY_ARGS {
            if let Some(v) = self.opts.build_args.get(p) {
                if !args_env.iter().any(|(k, _)| k == p) {
                    args_env.push((p.to_string(), v.clone()));
                }
            }
        }
        Ok(StepKind::Run(Run {
            command: command.clone(),
            heredocs,
            mounts,
            network,
            security: flag(ins, "security").and_then(|f| f.value.clone()),
            args_env,
            declared_args: st.vars.declared().to_vec(),
        }))
    }

    fn dispatch_copy(
        &self,
        ins: &Instruction,
        sources: &[String],
        dest: &str,
        st: &mut State,
    ) -> Result<StepKind, Error> {
        let add = ins.keyword == Keyword::Add;
        let from = match flag(ins, "from") {
            Some(f) => {
                let name = self.expand_flag(f, &st.vars)?;
                if name.is_empty() {
                    return Err(self.flag_err(
                        f,
                        "--from needs a stage name, a stage index or an image".into(),
                    ));
                }
                let src = Some(
                    self.resolve(&name, st.index, "--from")
                        .map_err(|m| self.graph(self.flag_err(f, m)))?,
                );
                st.dep(&src);
                self.image_warning(st, &src, f, "--from");
                src
            }
            None => None,
        };
        let chown = match flag(ins, "chown") {
            Some(f) => Some(self.expand_flag(f, &st.vars)?),
            None => None,
        };
        let chmod = match flag(ins, "chmod") {
            Some(f) => {
                let v = self.expand_flag(f, &st.vars)?;
                Some(values::parse_chmod(&v).map_err(|m| self.flag_err(f, m))?)
            }
            None => None,
        };
        let checksum = match flag(ins, "checksum") {
            Some(f) => {
                let v = self.expand_flag(f, &st.vars)?;
                values::check_checksum(&v).map_err(|m| self.flag_err(f, m))?;
                if sources.len() > 1 {
                    return Err(self.flag_err(
                        f,
                        "--checksum can't be specified for multiple sources".into(),
                    ));
                }
                Some(v)
            }
            None => None,
        };
        let mut exclude = Vec::new();
        for f in ins.flags.iter().filter(|f| f.name == "exclude") {
            exclude.push(self.expand_flag(f, &st.vars)?);
        }
        let mut out_sources = Vec::new();
        let mut heredocs = Vec::new();
        let mut bodies = ins.heredocs.iter();
        for s in sources {
            if let Ok(Some(_)) = heredoc::parse_marker(s) {
                let Some(h) = bodies.next() else {
                    return Err(self.args_err(ins, format!("heredoc {s} has no body")));
                };
                let mut content = if h.chomp {
                    heredoc::chomp(&h.content)
                } else {
                    h.content.clone()
                };
                if h.expand {
                    // As BuildKit's ExpandRaw: quotes are left alone, `\` (whatever the escape
                    // directive says) still escapes the next character.
                    let mut lx = Lexer::new('\\');
                    lx.skip_quotes = true;
                    content = lx
                        .process_word(&content, &st.vars)
                        .map_err(|m| self.args_err(ins, m))?;
                }
                heredocs.push(Heredoc {
                    name: h.name.clone(),
                    content,
                    quoted: !h.expand,
                    strip_tabs: h.chomp,
                });
            } else {
                let src = self.expand(ins, s, &st.vars)?;
                if !add && values::is_url(&src) {
                    return Err(self.args_err(
                        ins,
                        format!("source can't be a URL for COPY: {src} (use ADD)"),
                    ));
                }
                if !add && values::is_git_ref(&src) {
                    return Err(self.args_err(
                        ins,
                        format!("source can't be a git ref for COPY: {src} (use ADD)"),
                    ));
                }
                out_sources.push(src);
            }
        }
        if let (Some(f), Some(src)) = (flag(ins, "checksum"), out_sources.first()) {
            if !values::is_url(src) && !values::is_git_ref(src) {
                return Err(self.flag_err(
                    f,
                    format!("--checksum needs an HTTP(S) or git source, not {src}"),
                ));
            }
        }
        Ok(StepKind::Copy(Copy {
            add,
            from,
            sources: out_sources,
            heredocs,
            dest: self.expand(ins, dest, &st.vars)?,
            chown,
            chmod,
            link: bool_flag(ins, "link").unwrap_or(false),
            parents: bool_flag(ins, "parents").unwrap_or(false),
            exclude,
            checksum,
            keep_git_dir: bool_flag(ins, "keep-git-dir").unwrap_or(false),
            unpack: bool_flag(ins, "unpack"),
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::{parse, plan, PlanOptions, ShellRun, StepKind};

    fn run_of(text: &str) -> crate::Run {
        let df = parse("Dockerfile", text).unwrap();
        let p = plan(&df, &PlanOptions::default(), &|_| None).unwrap();
        match &p.stages[0].steps.last().unwrap().kind {
            StepKind::Run(r) => r.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn runs_list_declared_args_even_unset_ones() {
        let r = run_of(
            "FROM scratch\nARG UNSET\nARG SET=value\nENV LOCAL=e\nARG LOCAL=a\nARG SET\nRUN x\n",
        );
        assert_eq!(r.declared_args, ["UNSET", "SET", "LOCAL"]);
        // An unset ARG is not in the environment; an ARG after an ENV of its name is.
        assert_eq!(
            r.args_env,
            [
                ("SET".to_string(), "value".to_string()),
                ("LOCAL".to_string(), "a".to_string())
            ]
        );
    }

    #[test]
    fn heredoc_runs_follow_buildkit() {
        let r = run_of("FROM a\nRUN <<EOF\necho hi\nEOF\n");
        assert_eq!(r.shell_run(), Some(ShellRun::Command("echo hi\n".into())));
        let r = run_of("FROM a\nRUN <<EOF\n#!/bin/python3\nprint(1)\nEOF\n");
        assert!(matches!(r.shell_run(), Some(ShellRun::Shebang(h)) if h.content.starts_with("#!")));
        let r = run_of("FROM a\nRUN cat <<A > /a && cat <<-B > /b\nx\nA\n\ty\n\tB\n");
        assert_eq!(
            r.shell_run(),
            Some(ShellRun::Command(
                "cat <<A > /a && cat <<-B > /b\nx\nA\ny\nB".into()
            ))
        );
        let r = run_of("FROM a\nRUN [\"echo\"]\n");
        assert_eq!(r.shell_run(), None);
    }

    #[test]
    fn base_env_seeds_expansion_and_path_defaults() {
        let df = parse(
            "Dockerfile",
            "FROM img\nWORKDIR $HOME/x\nENV P=$PATH\nFROM scratch\nENV P=$PATH\n",
        )
        .unwrap();
        let lookup = |r: &str| {
            (r == "img").then(|| crate::BaseImageInfo {
                env: vec![("HOME".into(), "/root".into())],
                onbuild: vec![],
            })
        };
        let opts = PlanOptions {
            target: None,
            ..PlanOptions::default()
        };
        let p = plan(&df, &opts, &lookup).unwrap();
        // Only the last stage is needed.
        assert_eq!(p.stages.len(), 1);
        let StepKind::Env(e) = &p.stages[0].steps[0].kind else {
            panic!()
        };
        assert_eq!(e[0].1, crate::DEFAULT_PATH);
        let df2 = parse("Dockerfile", "FROM img AS a\nWORKDIR $HOME/x\n").unwrap();
        let p = plan(&df2, &opts, &lookup).unwrap();
        assert!(matches!(&p.stages[0].steps[0].kind, StepKind::Workdir(w) if w == "/root/x"));
    }
}

#[cfg(test)]
mod lookup_tests {
    use crate::{parse, plan, BaseImageInfo, PlanOptions, StepKind};
    use std::cell::RefCell;

    #[test]
    fn only_needed_stages_ask_for_their_base_image() {
        let text = "FROM skipped-image AS a\nFROM needed-image AS b\nWORKDIR ${HOME:?}\nFROM b\n";
        let df = parse("Dockerfile", text).unwrap();
        let asked = RefCell::new(Vec::new());
        let lookup = |r: &str| {
            asked.borrow_mut().push(r.to_string());
            Some(BaseImageInfo {
                env: vec![("HOME".into(), "/home/x".into())],
                onbuild: vec![],
            })
        };
        let p = plan(&df, &PlanOptions::default(), &lookup).unwrap();
        assert_eq!(*asked.borrow(), ["needed-image"]);
        assert_eq!(p.skipped, ["a"]);
        assert!(matches!(&p.stages[0].steps[0].kind, StepKind::Workdir(w) if w == "/home/x"));
    }

    #[test]
    fn a_base_trigger_can_add_a_dependency() {
        let text = "FROM alpine AS assets\nFROM alpine AS unused\nFROM onbuild-image\n";
        let df = parse("Dockerfile", text).unwrap();
        let lookup = |r: &str| {
            (r == "onbuild-image").then(|| BaseImageInfo {
                env: vec![],
                onbuild: vec!["COPY --from=assets /a /a".into()],
            })
        };
        let p = plan(&df, &PlanOptions::default(), &lookup).unwrap();
        assert_eq!(p.stages.iter().map(|s| s.index).collect::<Vec<_>>(), [0, 2]);
        assert_eq!(p.skipped, ["unused"]);
    }
}
