//! Heredoc markers (`<<EOF`, `<<-EOF`, `<<"EOF"`, `3<<EOF`) as BuildKit finds them: the logical
//! line is split into words with quotes and escapes kept, and each word that is a marker opens a
//! heredoc whose body follows the line.

use crate::ast::HeredocBody;
use crate::shell::{Lexer, NoVars};

/// The heredocs opened by a logical line, in order (bodies empty, to be read by the parser).
/// BuildKit splits the line with `\` as the escape whatever the escape directive says.
pub(crate) fn from_line(line: &str) -> Result<Vec<HeredocBody>, String> {
    let mut lx = Lexer::new('\\');
    lx.raw_quotes = true;
    lx.raw_escapes = true;
    let words = lx.process_words(line, &NoVars).unwrap_or_default();
    let mut docs = Vec::new();
    for w in words {
        if let Some(d) = parse_marker(&w)? {
            docs.push(d);
        }
    }
    Ok(docs)
}

/// `^(\d*)<<(-?)([^<]*)$` with a single-word delimiter; `Ok(None)` when `word` is no marker.
pub(crate) fn parse_marker(word: &str) -> Result<Option<HeredocBody>, String> {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let Some(rest) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let fd = word[..digits].parse().unwrap_or(0);
    let mut lx = Lexer::new('\\');
    lx.skip_unset = true;
    let words = lx.process_words(rest, &NoVars)?;
    if words.len() != 1 {
        return Ok(None);
    }
    lx.raw_quotes = true;
    let raw = lx.process_words(rest, &NoVars)?;
    if raw.len() != 1 {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    }
    let quotes = |s: &str| s.matches(['\'', '"']).count();
    let expand = quotes(&words[0]) == quotes(&raw[0]);
    Ok(Some(HeredocBody {
        name: words[0].clone(),
        content: String::new(),
        expand,
        chomp,
        fd,
    }))
}

/// `<<-` bodies: leading tabs of every line removed.
pub(crate) fn chomp(content: &str) -> String {
    content
        .split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers() {
        let d = from_line("RUN <<A cat - <<-'B' 3<<\"C\" x<<y \"<<no\"").unwrap();
        let got: Vec<_> = d
            .iter()
            .map(|h| (h.name.as_str(), h.expand, h.chomp, h.fd))
            .collect();
        assert_eq!(
            got,
            [
                ("A", true, false, 0),
                ("B", false, true, 0),
                ("C", false, false, 3)
            ]
        );
        assert_eq!(chomp("\ta\n\t\tb\n c\n"), "a\nb\n c\n");
    }
}
