//! Text → [`Dockerfile`]: physical lines, parser directives, line continuations, comments, heredoc
//! bodies, then one [`Instruction`] per logical line. Follows BuildKit's
//! `frontend/dockerfile/parser/parser.go` line by line where behaviour is observable.
//!
//! Why not taiki-e's `parse-dockerfile` (0.1.9)? It was evaluated against our corpus: it fails on
//! several heredocs on one line (`RUN <<A cat - <<B`), keeps continuation escapes and comment
//! lines inside the argument text instead of joining them as BuildKit does, accepts unknown flags
//! (`COPY --frm=x`) and `ONBUILD FROM`, and its errors carry no suggestion. Flag validation,
//! joining and heredoc detection are most of the work, so the parser is ours.

use crate::ast::{Dockerfile, Flag, HeredocBody, Instruction, Keyword};
use crate::directives;
use crate::heredoc;
use crate::instructions;
use crate::{Error, Span, Warning};

/// Maps byte offsets of a logical line back to (line, column) in the file.
#[derive(Debug, Clone, Default)]
pub(crate) struct PosMap {
    /// (offset in the logical line, file line, column of that offset)
    segs: Vec<(usize, usize, usize)>,
}

impl PosMap {
    pub(crate) fn single(line: usize, column: usize) -> PosMap {
        PosMap {
            segs: vec![(0, line, column)],
        }
    }

    /// Position of byte `offset` of `text` (the logical line this map was built for).
    pub(crate) fn at(&self, text: &str, offset: usize) -> (usize, usize) {
        let seg = self
            .segs
            .iter()
            .rev()
            .find(|s| s.0 <= offset)
            .or(self.segs.first());
        match seg {
            Some(&(start, line, col)) => {
                let end = offset.min(text.len());
                let chars = text
                    .get(start.min(end)..end)
                    .map_or(0, |s| s.chars().count());
                (line, col + chars)
            }
            None => (1, 1),
        }
    }

    /// The same map for a suffix of the line that starts at byte `by`.
    pub(crate) fn shifted(&self, text: &str, by: usize) -> PosMap {
        let (line, col) = self.at(text, by);
        let mut segs = vec![(0, line, col)];
        segs.extend(
            self.segs
                .iter()
                .filter(|s| s.0 > by)
                .map(|&(o, l, c)| (o - by, l, c)),
        );
        PosMap { segs }
    }
}

/// Shared state of one parse: the file name and its lines, for error messages.
pub(crate) struct Ctx<'a> {
    pub name: &'a str,
    pub lines: &'a [String],
    pub escape: char,
}

impl Ctx<'_> {
    pub(crate) fn err(
        &self,
        line: usize,
        column: usize,
        width: usize,
        message: impl Into<String>,
    ) -> Error {
        Error {
            file: self.name.to_string(),
            line,
            column,
            message: message.into(),
            source_line: self
                .lines
                .get(line.wrapping_sub(1))
                .cloned()
                .unwrap_or_default(),
            width,
        }
    }
}

/// Parses a whole Dockerfile.
pub fn parse(name: &str, text: &str) -> Result<Dockerfile, Error> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Physical lines: (content without line ending, content with it).
    let mut phys: Vec<(&str, &str)> = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (full, tail) = match rest.find('\n') {
            Some(i) => (&rest[..=i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let content = full.strip_suffix('\n').unwrap_or(full);
        let content = content.strip_suffix('\r').unwrap_or(content);
        phys.push((content, full));
        rest = tail;
    }
    let lines: Vec<String> = phys.iter().map(|(c, _)| c.to_string()).collect();
    let mut ctx = Ctx {
        name,
        lines: &lines,
        escape: '\\',
    };

    let mut warnings = Vec::new();
    let (dirs, n_directive_lines) = directives::parse(&ctx, &phys, &mut warnings)?;
    ctx.escape = dirs.escape;

    let mut instructions = Vec::new();
    let mut comments: Vec<String> = Vec::new();
    let mut i = 0;
    while i < phys.len() {
        let line_no = i + 1;
        let raw = phys[i].0;
        let trimmed = raw.trim_start();
        i += 1;
        if let Some(comment) = trimmed.strip_prefix('#') {
            if line_no > n_directive_lines {
                let c = comment.trim();
                if c.is_empty() {
                    comments.clear();
                } else {
                    comments.push(c.to_string());
                }
            }
            continue;
        }
        let lead = raw.len() - trimmed.len();
        let (content, mut cont) = trim_continuation(trimmed, ctx.escape);
        if !cont && content.trim().is_empty() {
            continue;
        }
        let mut logical = content.to_string();
        let mut pos = PosMap::single(line_no, raw[..lead].chars().count() + 1);
        let mut empty_continuation = false;
        while cont && i < phys.len() {
            let raw = phys[i].0;
            let ln = i + 1;
            i += 1;
            if raw.trim_start().starts_with('#') {
                continue;
            }
            if raw.trim_start().is_empty() {
                empty_continuation = true;
                continue;
            }
            let (c, more) = trim_continuation(raw, ctx.escape);
            pos.segs.push((logical.len(), ln, 1));
            logical.push_str(c);
            cont = more;
        }
        if empty_continuation {
            warnings.push(Warning {
                span: Span {
                    line: line_no,
                    column: 1,
                    end_line: i,
                },
                message:
                    "empty continuation line (an empty line inside a continued instruction is \
                          deprecated; remove it or make it a comment)"
                        .into(),
            });
        }
        let mut ins = parse_line(&ctx, &logical, &pos, false)?;
        ins.span.end_line = i.max(line_no);
        if matches!(ins.keyword, Keyword::Run | Keyword::Copy | Keyword::Add)
            && logical.contains("<<")
        {
            let docs = heredoc::from_line(&logical)
                .map_err(|m| ctx.err(line_no, ins.span.column, 1, m))?;
            for doc in docs {
                let mut content = String::new();
                let mut terminated = false;
                while i < phys.len() {
                    let (c, full) = phys[i];
                    i += 1;
                    let candidate = if doc.chomp {
                        c.trim_start_matches('\t')
                    } else {
                        c
                    };
                    if candidate == doc.name {
                        terminated = true;
                        break;
                    }
                    // Line endings are normalised: a CRLF file gives LF bodies, as a script needs.
                    content.push_str(c);
                    if full.ends_with('\n') {
                        content.push('\n');
                    }
                }
                if !terminated {
                    return Err(ctx.err(
                        line_no,
                        ins.span.column,
                        ins.original.chars().count().max(1),
                        format!("unterminated heredoc: no line `{}` closes it", doc.name),
                    ));
                }
                ins.heredocs.push(HeredocBody { content, ..doc });
            }
            ins.span.end_line = i;
            instructions::check_heredocs(&ctx, &mut ins)?;
        }
        ins.comments = std::mem::take(&mut comments);
        instructions.push(ins);
    }
    Ok(Dockerfile {
        name: name.to_string(),
        directives: dirs,
        instructions,
        warnings,
        lines,
    })
}

/// Removes a trailing escape character (and blanks after it): `(rest, true)` if the line continues.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    match t.strip_suffix(escape) {
        Some(rest) => (rest, true),
        None => (line, false),
    }
}

/// Parses one logical line (also used for ONBUILD triggers and base-image triggers).
pub(crate) fn parse_line(
    ctx: &Ctx,
    logical: &str,
    pos: &PosMap,
    in_onbuild: bool,
) -> Result<Instruction, Error> {
    let start = logical.len() - logical.trim_start().len();
    let trimmed = logical.trim();
    let kw_end = trimmed
        .find([' ', '\t', '\u{b}', '\u{c}', '\r'])
        .unwrap_or(trimmed.len());
    let word = &trimmed[..kw_end];
    let (line, column) = pos.at(logical, start);
    let after = &trimmed[kw_end..];
    let rest_off = start + kw_end + (after.len() - after.trim_start().len());
    let rest = after.trim_start();

    let Some(keyword) = Keyword::parse(word) else {
        let msg = crate::suggest::with_suggestion(
            format!("unknown instruction: {word}"),
            word,
            Keyword::ALL.iter().map(|k| k.as_str()),
        );
        return Err(ctx.err(line, column, word.chars().count(), msg));
    };
    let (flag_words, args_rel) = extract_flags(rest);
    let args_off = rest_off + args_rel;
    let args = rest[args_rel..].trim();
    let flags: Vec<Flag> = flag_words
        .into_iter()
        .map(|(off, w)| {
            let (l, c) = pos.at(logical, rest_off + off);
            let w = w.strip_prefix("--").unwrap_or(&w).to_string();
            let (name, value) = match w.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (w, None),
            };
            Flag {
                name,
                value,
                line: l,
                column: c,
            }
        })
        .collect();
    let (args_line, args_column) = pos.at(logical, args_off);
    let mut ins = Instruction {
        keyword,
        span: Span {
            line,
            column,
            end_line: line,
        },
        original: trimmed.to_string(),
        flags,
        args: crate::ast::Args::Single(String::new()),
        heredocs: Vec::new(),
        comments: Vec::new(),
        args_line,
        args_column,
    };
    instructions::check_flags(ctx, &ins)?;
    ins.args =
        instructions::parse_args(ctx, &ins, args, &pos.shifted(logical, args_off), in_onbuild)?;
    Ok(ins)
}

/// BuildKit's `extractBuilderFlags`: leading `--flag[=value]` words (quotes removed) and the byte
/// offset where the arguments start. `--` alone ends the flags.
fn extract_flags(line: &str) -> (Vec<(usize, String)>, usize) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let bytes: Vec<(usize, char)> = line.char_indices().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut word_start = 0;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut k = 0;
    loop {
        let at_end = k >= bytes.len();
        let (off, ch) = if at_end { (line.len(), '\0') } else { bytes[k] };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                k += 1;
                continue;
            }
            let next_dash = bytes.get(k + 1).map(|b| b.1) == Some('-');
            if ch != '-' || !next_dash {
                return (words, off);
            }
            phase = Phase::Word;
            word_start = off;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push((word_start, word));
            }
            return (words, line.len());
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if word == "--" {
                    return (words, off);
                }
                if blank_ok || !word.is_empty() {
                    words.push((word_start, std::mem::take(&mut word)));
                }
                word.clear();
                blank_ok = false;
                k += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                k += 1;
                continue;
            }
            let mut c = ch;
            if ch == '\\' {
                if k + 1 >= bytes.len() {
                    k += 1;
                    continue;
                }
                k += 1;
                c = bytes[k].1;
            }
            word.push(c);
            k += 1;
            continue;
        }
        // In quotes.
        if ch == quote {
            phase = Phase::Word;
            k += 1;
            continue;
        }
        let mut c = ch;
        if ch == '\\' {
            if k + 1 >= bytes.len() {
                phase = Phase::Word;
                k += 1;
                continue;
            }
            k += 1;
            c = bytes[k].1;
        }
        word.push(c);
        k += 1;
    }
    (words, line.len())
}

/// BuildKit's `parseWords`: split on blanks, honouring quotes and the escape character, which are
/// kept in the words (expansion removes them later). Returns (byte offset, word).
pub(crate) fn split_words(rest: &str, escape: char) -> Vec<(usize, String)> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<(usize, char)> = rest.char_indices().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut start = 0;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut k = 0;
    loop {
        let at_end = k >= chars.len();
        let (off, ch) = if at_end { (rest.len(), '\0') } else { chars[k] };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                k += 1;
                continue;
            }
            phase = Phase::Word;
            start = off;
        }
        if at_end {
            if blank_ok || !word.is_empty() {
                words.push((start, word));
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push((start, std::mem::take(&mut word)));
                }
                blank_ok = false;
                k += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            let mut c = ch;
            if ch == escape {
                if k + 1 >= chars.len() {
                    k += 1;
                    continue;
                }
                word.push(ch);
                k += 1;
                c = chars[k].1;
            }
            word.push(c);
            k += 1;
            continue;
        }
        if ch == quote {
            phase = Phase::Word;
        }
        let mut c = ch;
        if ch == escape && quote != '\'' {
            if k + 1 >= chars.len() {
                phase = Phase::Word;
                k += 1;
                continue;
            }
            word.push(ch);
            k += 1;
            c = chars[k].1;
        }
        word.push(c);
        k += 1;
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_extracted_with_quotes_removed() {
        let (w, off) = extract_flags(r#"--from=b --chmod="7 55" --link a b"#);
        assert_eq!(
            w.iter().map(|x| x.1.as_str()).collect::<Vec<_>>(),
            ["--from=b", "--chmod=7 55", "--link"]
        );
        assert_eq!(off, 31);
        let (w, off) = extract_flags("-- --x a");
        assert!(w.is_empty());
        assert_eq!(&"-- --x a"[off..], " --x a");
    }

    #[test]
    fn words_keep_quotes() {
        let w: Vec<String> = split_words(r#"a="b c" d=e\ f"#, '\\')
            .into_iter()
            .map(|x| x.1)
            .collect();
        assert_eq!(w, [r#"a="b c""#, r"d=e\ f"]);
    }
}
