//! Parser directives (`# syntax=`, `# escape=`, `# check=`): only in the leading comment lines,
//! each at most once. `# syntax=docker/dockerfile:1` (any 1.x) is served by our own frontend; any
//! other frontend image is named in a warning and never downloaded.

use crate::ast::Directives;
use crate::parser::Ctx;
use crate::{Error, Span, Warning};

/// Parses the directives; returns them and how many leading lines they took.
pub(crate) fn parse(
    ctx: &Ctx,
    phys: &[(&str, &str)],
    warnings: &mut Vec<Warning>,
) -> Result<(Directives, usize), Error> {
    let mut d = Directives::default();
    let mut seen: Vec<&str> = Vec::new();
    let mut n = 0;
    for (i, (line, _)) in phys.iter().enumerate() {
        let Some((name, value, col)) = directive(line) else {
            break;
        };
        let key = name.to_ascii_lowercase();
        let key: &'static str = match key.as_str() {
            "syntax" => "syntax",
            "escape" => "escape",
            "check" => "check",
            _ => break,
        };
        let ln = i + 1;
        if seen.contains(&key) {
            return Err(ctx.err(
                ln,
                1,
                line.chars().count(),
                format!("only one {key} parser directive can be used"),
            ));
        }
        seen.push(key);
        match key {
            "escape" => {
                d.escape = match value {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(ctx.err(
                            ln,
                            col,
                            value.chars().count(),
                            format!("invalid escape token '{value}' does not match ` or \\"),
                        ))
                    }
                }
            }
            "syntax" => {
                if !is_builtin_frontend(value) {
                    warnings.push(Warning {
                        span: Span { line: ln, column: col, end_line: ln },
                        message: format!(
                            "the syntax directive asks for the frontend image {value}; cairn has its own \
                             Dockerfile frontend (docker/dockerfile:1) and does not download frontends"
                        ),
                    });
                }
                d.syntax = Some(value.to_string());
            }
            _ => d.check = Some(value.to_string()),
        }
        n = ln;
    }
    Ok((d, n))
}

/// `#\s*name\s*=\s*value\s*` → (name, value, column of the value).
fn directive(line: &str) -> Option<(&str, &str, usize)> {
    let t = line.trim_start();
    let body = t.strip_prefix('#')?.trim_start();
    let name_len = body
        .char_indices()
        .take_while(|&(i, c)| {
            if i == 0 {
                c.is_ascii_alphabetic()
            } else {
                c.is_ascii_alphanumeric()
            }
        })
        .count();
    if name_len == 0 {
        return None;
    }
    let name = &body[..name_len];
    let value_part = body[name_len..].trim_start().strip_prefix('=')?;
    let value = value_part.trim();
    if value.is_empty() {
        return None;
    }
    let offset = line.len() - value_part.trim_start().len();
    Some((name, value, line[..offset].chars().count() + 1))
}

/// `docker/dockerfile:1`, `docker/dockerfile:1.7`, `docker.io/docker/dockerfile:1-labs`, with an
/// optional digest; also the upstream image without a tag.
fn is_builtin_frontend(v: &str) -> bool {
    let v = v.split('@').next().unwrap_or(v);
    let v = v
        .strip_prefix("docker.io/")
        .or_else(|| v.strip_prefix("index.docker.io/"))
        .unwrap_or(v);
    let Some(rest) = v.strip_prefix("docker/dockerfile") else {
        return false;
    };
    match rest.strip_prefix(':') {
        None => rest.is_empty(),
        Some(tag) => {
            let tag = tag.strip_suffix("-labs").unwrap_or(tag);
            tag == "1"
                || tag.strip_prefix("1.").is_some_and(|r| {
                    r.split('.')
                        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frontends() {
        for ok in [
            "docker/dockerfile:1",
            "docker/dockerfile:1.7",
            "docker.io/docker/dockerfile:1.4.3",
            "docker/dockerfile:1-labs",
            "docker/dockerfile:1@sha256:ab",
        ] {
            assert!(is_builtin_frontend(ok), "{ok}");
        }
        for bad in [
            "docker/dockerfile:2",
            "tonistiigi/dockerfile:x",
            "docker/dockerfile:1.x",
            "example.com/f",
        ] {
            assert!(!is_builtin_frontend(bad), "{bad}");
        }
        assert_eq!(
            directive("# syntax = docker/dockerfile:1 "),
            Some(("syntax", "docker/dockerfile:1", 12))
        );
        assert_eq!(directive("#escape=`"), Some(("escape", "`", 9)));
        assert_eq!(directive("# just a comment"), None);
    }
}
