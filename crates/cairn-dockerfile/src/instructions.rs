//! Per-instruction argument parsing and parse-time validation: the flags each instruction takes
//! (BuildKit's `BFlags`), argument counts, JSON exec form, ENV/LABEL/ARG pairs, HEALTHCHECK.
//! Values that may hold variables (`--from=$X`, `--chmod=$M`, mount options) are checked after
//! expansion, in [`crate::plan`].

use crate::ast::{ArgDecl, Args, Flag, Instruction, KeyValue, Keyword};
use crate::parser::{parse_line, split_words, Ctx, PosMap};
use crate::{Command, Error};

/// What kind of value a flag takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagKind {
    /// `--link` or `--link=true|false`.
    Bool,
    /// `--from=x`, at most once.
    Str,
    /// `--mount=…`, repeatable.
    Multi,
}

/// The flags of each instruction, as in BuildKit's `instructions/parse.go`.
pub(crate) fn flag_spec(k: Keyword) -> &'static [(&'static str, FlagKind)] {
    use FlagKind::*;
    match k {
        Keyword::From => &[("platform", Str)],
        Keyword::Run => &[("mount", Multi), ("network", Str), ("security", Str)],
        Keyword::Copy => &[
            ("from", Str),
            ("chown", Str),
            ("chmod", Str),
            ("link", Bool),
            ("parents", Bool),
            ("exclude", Multi),
        ],
        Keyword::Add => &[
            ("chown", Str),
            ("chmod", Str),
            ("link", Bool),
            ("parents", Bool),
            ("exclude", Multi),
            ("keep-git-dir", Bool),
            ("checksum", Str),
            ("unpack", Bool),
        ],
        Keyword::Healthcheck => &[
            ("interval", Str),
            ("timeout", Str),
            ("start-period", Str),
            ("start-interval", Str),
            ("retries", Str),
        ],
        _ => &[],
    }
}

fn flag_err(ctx: &Ctx, f: &Flag, msg: String) -> Error {
    ctx.err(f.line, f.column, f.width(), msg)
}

/// Unknown, duplicate and malformed flags.
pub(crate) fn check_flags(ctx: &Ctx, ins: &Instruction) -> Result<(), Error> {
    let spec = flag_spec(ins.keyword);
    let kw = ins.keyword.as_str();
    for (i, f) in ins.flags.iter().enumerate() {
        let Some(&(_, kind)) = spec.iter().find(|(n, _)| *n == f.name) else {
            let msg = if spec.is_empty() {
                format!("unknown flag: --{} ({kw} takes no flags)", f.name)
            } else {
                crate::suggest::with_suggestion(
                    format!("unknown flag: --{} for {kw}", f.name),
                    &f.name,
                    spec.iter().map(|(n, _)| *n),
                )
                .replace("(did you mean ", "(did you mean --")
            };
            return Err(flag_err(ctx, f, msg));
        };
        if kind != FlagKind::Multi && ins.flags[..i].iter().any(|g| g.name == f.name) {
            return Err(flag_err(
                ctx,
                f,
                format!("duplicate flag specified: --{}", f.name),
            ));
        }
        match (kind, f.value.as_deref()) {
            (FlagKind::Bool, Some("")) | (FlagKind::Str | FlagKind::Multi, None) => {
                return Err(flag_err(
                    ctx,
                    f,
                    format!("missing a value on flag: --{}", f.name),
                ))
            }
            (FlagKind::Bool, Some(v))
                if !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false") =>
            {
                return Err(flag_err(
                    ctx,
                    f,
                    format!("expecting boolean value for flag --{}, not: {v}", f.name),
                ))
            }
            _ => {}
        }
        // Values that BuildKit never expands are checked here, where the parse command sees them.
        let v = f.value.as_deref().unwrap_or_default();
        let bad = |m: String| Err(flag_err(ctx, f, m));
        match (ins.keyword, f.name.as_str()) {
            (Keyword::Run, "network") if !matches!(v, "default" | "none" | "host") => {
                return bad(format!(
                    "unsupported network mode: {v} (expected default, none or host)"
                ))
            }
            (Keyword::Run, "security") if !matches!(v, "sandbox" | "insecure") => {
                return bad(format!(
                    "unsupported security mode: {v} (expected sandbox or insecure)"
                ))
            }
            (Keyword::Healthcheck, "retries") => match v.parse::<i64>() {
                Ok(n) if n < 0 => return bad(format!("--retries cannot be negative ({n})")),
                Ok(n) if n > u32::MAX as i64 => {
                    return bad(format!("--retries is too large ({n})"))
                }
                Ok(_) => {}
                Err(_) => {
                    return bad(format!(
                        "invalid value for --retries: {v:?} is not an integer"
                    ))
                }
            },
            (Keyword::Healthcheck, name) => {
                if let Err(m) = parse_interval(v) {
                    return bad(format!("invalid value for --{name}: {m}"));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The value of a healthcheck interval flag in nanoseconds: a Go duration, `0` meaning unset,
/// and at least 1ms otherwise.
pub(crate) fn parse_interval(v: &str) -> Result<Option<u64>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    let d = parse_go_duration(v)?;
    if d == 0 {
        return Ok(None);
    }
    if d < 1_000_000 {
        return Err(format!("{v:?} cannot be less than 1ms"));
    }
    u64::try_from(d)
        .map(Some)
        .map_err(|_| format!("{v:?} is out of range"))
}

/// Go's `time.ParseDuration`, in nanoseconds.
pub(crate) fn parse_go_duration(s: &str) -> Result<i128, String> {
    let err = || format!("invalid duration {s:?} (examples: 30s, 1m30s, 500ms)");
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(err());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        let num = &rest[..num_len];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(err());
        }
        let value: f64 = num.parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale: f64 = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(err()),
        };
        rest = &rest[unit_len..];
        total += value * scale;
        if total > 9.2e18 {
            return Err(err());
        }
    }
    let n = total.round() as i128;
    Ok(if neg { -n } else { n })
}

/// `[...]` as a JSON array of strings: `Ok(Some)`, not JSON: `Ok(None)` (shell form), JSON with
/// a non-string: an error, as BuildKit.
pub(crate) fn maybe_json(rest: &str) -> Result<Option<Vec<String>>, String> {
    let t = rest.trim_start();
    if !t.starts_with('[') {
        return Ok(None);
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(t) else {
        return Ok(None);
    };
    values
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(
                "when using JSON array syntax, arrays must be comprised of strings only"
                    .to_string(),
            ),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn whitespace_split(s: &str) -> Vec<String> {
    s.split([' ', '\t', '\u{b}', '\u{c}', '\r'])
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses the arguments of `ins` (its keyword and flags are set) from `args`.
pub(crate) fn parse_args(
    ctx: &Ctx,
    ins: &Instruction,
    args: &str,
    pos: &PosMap,
    in_onbuild: bool,
) -> Result<Args, Error> {
    let kw = ins.keyword.as_str();
    let here = |msg: String| {
        ctx.err(
            ins.args_line,
            ins.args_column,
            args.chars().count().max(1),
            msg,
        )
    };
    let at_kw = |msg: String| ctx.err(ins.span.line, ins.span.column, kw.len(), msg);
    Ok(match ins.keyword {
        Keyword::From => {
            let w = whitespace_split(args);
            match w.len() {
                1 => Args::From {
                    image: w[0].clone(),
                    stage_name: None,
                },
                3 if w[1].eq_ignore_ascii_case("as") => Args::From {
                    image: w[0].clone(),
                    stage_name: Some(w[2].clone()),
                },
                3 => {
                    return Err(here(format!(
                        "FROM expects `FROM image AS name`, found {:?} instead of AS",
                        w[1]
                    )))
                }
                _ => {
                    return Err(here(
                        "FROM requires either one or three arguments (`FROM image [AS name]`)"
                            .into(),
                    ))
                }
            }
        }
        Keyword::Run | Keyword::Cmd | Keyword::Entrypoint => {
            if args.is_empty() && ins.keyword == Keyword::Run {
                return Err(at_kw("RUN requires at least one argument".into()));
            }
            match maybe_json(args).map_err(here)? {
                Some(v) => Args::Command(Command::Exec(v)),
                None => Args::Command(Command::Shell(args.to_string())),
            }
        }
        Keyword::Copy | Keyword::Add => {
            let (mut all, json) = match maybe_json(args).map_err(here)? {
                Some(v) => (v, true),
                None => (whitespace_split(args), false),
            };
            if all.len() < 2 {
                return Err(if all.is_empty() {
                    at_kw(format!(
                        "{kw} requires at least two arguments (sources and a destination)"
                    ))
                } else {
                    here(format!(
                        "{kw} requires at least two arguments, but only one was provided. Destination could not be determined."
                    ))
                });
            }
            let dest = all.pop().unwrap_or_default();
            Args::Copy {
                sources: all,
                dest,
                json,
            }
        }
        Keyword::Env | Keyword::Label => {
            let pairs = name_values(ctx, ins, args, pos)?;
            if ins.keyword == Keyword::Env {
                Args::Env(pairs)
            } else {
                Args::Label(pairs)
            }
        }
        Keyword::Arg => {
            let words = split_words(args, ctx.escape);
            if words.is_empty() {
                return Err(at_kw("ARG requires at least one argument".into()));
            }
            let mut decls = Vec::new();
            for (off, w) in words {
                let (name, default) = match w.split_once('=') {
                    Some((n, v)) => (n.to_string(), Some(v.to_string())),
                    None => (w.clone(), None),
                };
                if name.is_empty() {
                    let (l, c) = pos.at(args, off);
                    return Err(ctx.err(l, c, w.chars().count(), "ARG names can not be blank"));
                }
                let (line, column) = pos.at(args, off);
                decls.push(ArgDecl {
                    name,
                    default,
                    line,
                    column,
                });
            }
            Args::Arg(decls)
        }
        Keyword::Expose => {
            let w = whitespace_split(args);
            if w.is_empty() {
                return Err(at_kw("EXPOSE requires at least one argument".into()));
            }
            Args::Expose(w)
        }
        Keyword::Volume => {
            let w = match maybe_json(args).map_err(here)? {
                Some(v) => v,
                None => whitespace_split(args),
            };
            if w.is_empty() {
                return Err(at_kw("VOLUME requires at least one argument".into()));
            }
            Args::Volume(w)
        }
        Keyword::User | Keyword::Workdir | Keyword::Stopsignal | Keyword::Maintainer => {
            if args.is_empty() {
                return Err(at_kw(format!("{kw} requires exactly one argument")));
            }
            Args::Single(args.to_string())
        }
        Keyword::Shell => match maybe_json(args).map_err(here)? {
            Some(v) if v.is_empty() => {
                return Err(here("SHELL requires at least one argument".into()))
            }
            Some(v) => Args::Shell(v),
            None if args.is_empty() => {
                return Err(at_kw("SHELL requires at least one argument".into()))
            }
            None => return Err(here(
                "SHELL requires the arguments to be in JSON form, e.g. SHELL [\"/bin/sh\", \"-c\"]"
                    .into(),
            )),
        },
        Keyword::Healthcheck => {
            let t = args.trim_start();
            let end = t.find(char::is_whitespace).unwrap_or(t.len());
            let (typ, rest) = (&t[..end], t[end..].trim());
            if typ.eq_ignore_ascii_case("none") {
                if !rest.is_empty() {
                    return Err(here("HEALTHCHECK NONE takes no arguments".into()));
                }
                Args::Healthcheck(None)
            } else if typ.eq_ignore_ascii_case("cmd") {
                if rest.is_empty() {
                    return Err(here("Missing command after HEALTHCHECK CMD".into()));
                }
                match maybe_json(rest).map_err(here)? {
                    Some(v) => Args::Healthcheck(Some(Command::Exec(v))),
                    None => Args::Healthcheck(Some(Command::Shell(rest.to_string()))),
                }
            } else if typ.is_empty() {
                return Err(at_kw(
                    "HEALTHCHECK requires an argument: CMD … or NONE".into(),
                ));
            } else {
                return Err(here(format!(
                    "unknown type {typ:?} in HEALTHCHECK (try CMD)"
                )));
            }
        }
        Keyword::Onbuild => {
            if in_onbuild {
                return Err(at_kw(
                    "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into(),
                ));
            }
            if args.is_empty() {
                return Err(at_kw("ONBUILD requires at least one argument".into()));
            }
            let sub = parse_line(ctx, args, pos, true)?;
            if matches!(sub.keyword, Keyword::From | Keyword::Maintainer) {
                return Err(here(format!(
                    "{} isn't allowed as an ONBUILD trigger",
                    sub.keyword.as_str()
                )));
            }
            Args::Onbuild(Box::new(sub))
        }
    })
}

/// BuildKit's `parseNameVal`: `KEY value` (legacy, one pair) or `K1=v1 K2="v 2"`.
fn name_values(
    ctx: &Ctx,
    ins: &Instruction,
    rest: &str,
    pos: &PosMap,
) -> Result<Vec<KeyValue>, Error> {
    let kw = ins.keyword.as_str();
    let words = split_words(rest, ctx.escape);
    let Some((_, first)) = words.first() else {
        return Err(ctx.err(
            ins.span.line,
            ins.span.column,
            kw.len(),
            format!("{kw} requires at least one argument"),
        ));
    };
    if !first.contains('=') {
        let end = rest.find(|c: char| " \t\u{b}\u{c}\r".contains(c));
        let Some(end) = end else {
            return Err(ctx.err(
                ins.args_line,
                ins.args_column,
                rest.chars().count(),
                format!("{kw} must have two arguments (`{kw} name=value`)"),
            ));
        };
        let value = rest[end..].trim_start_matches([' ', '\t', '\u{b}', '\u{c}', '\r']);
        let (line, column) = pos.at(rest, 0);
        return Ok(vec![KeyValue {
            key: rest[..end].to_string(),
            value: value.to_string(),
            line,
            column,
        }]);
    }
    let mut out = Vec::new();
    for (off, w) in words {
        let Some((k, v)) = w.split_once('=') else {
            let (l, c) = pos.at(rest, off);
            return Err(ctx.err(
                l,
                c,
                w.chars().count(),
                format!("Syntax error - can't find = in {w:?}. Must be of the form: name=value"),
            ));
        };
        if k.is_empty() {
            let (l, c) = pos.at(rest, off);
            return Err(ctx.err(
                l,
                c,
                w.chars().count(),
                format!("{kw} names can not be blank"),
            ));
        }
        let (line, column) = pos.at(rest, off);
        out.push(KeyValue {
            key: k.to_string(),
            value: v.to_string(),
            line,
            column,
        });
    }
    Ok(out)
}

/// Heredoc consistency once the bodies are read.
pub(crate) fn check_heredocs(ctx: &Ctx, ins: &mut Instruction) -> Result<(), Error> {
    let kw = ins.keyword.as_str();
    match &ins.args {
        Args::Copy { dest, .. } => {
            if let Ok(Some(_)) = crate::heredoc::parse_marker(dest) {
                return Err(ctx.err(
                    ins.args_line,
                    ins.args_column,
                    1,
                    format!("{kw} cannot accept a heredoc as a destination"),
                ));
            }
        }
        Args::Command(Command::Exec(_)) if !ins.heredocs.is_empty() => {
            return Err(ctx.err(
                ins.args_line,
                ins.args_column,
                1,
                "heredocs can only be used with the shell form of RUN, not the JSON form",
            ));
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_go_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_go_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("300ms"), Ok(300_000_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert!(parse_go_duration("10").is_err());
        assert!(parse_go_duration("1x").is_err());
        assert!(parse_interval("10us").is_err());
    }

    #[test]
    fn json_forms() {
        assert_eq!(
            maybe_json(r#"["a", "b c"]"#),
            Ok(Some(vec!["a".into(), "b c".into()]))
        );
        assert_eq!(maybe_json(r#"["a", b]"#), Ok(None));
        assert!(maybe_json(r#"["a", 1]"#).is_err());
        assert_eq!(maybe_json("echo [x]"), Ok(None));
    }
}
