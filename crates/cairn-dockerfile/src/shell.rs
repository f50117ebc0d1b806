//! Shell-word processing exactly as BuildKit's `frontend/dockerfile/shell/lex.go`: quotes, the
//! escape character, `$v`, `${v}` and the modifiers `:-` `-` `:+` `+` `:?` `?` `#` `##` `%` `%%`
//! `/` `//`. No command substitution, no arithmetic: what BuildKit leaves alone, we leave alone.

use std::collections::HashMap;

/// Where variable values come from during expansion.
pub trait Lookup {
    /// The value of `name`, or `None` when unset.
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl Lookup for HashMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// No variables at all (heredoc detection, as BuildKit's `emptyEnvs`).
pub struct NoVars;

impl Lookup for NoVars {
    fn lookup(&self, _: &str) -> Option<&str> {
        None
    }
}

/// Options of one lexer, as BuildKit's `Lex` fields.
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    /// The escape character (`\\` or `` ` `` per the escape directive).
    pub escape: char,
    /// Keep quote characters in the result.
    pub raw_quotes: bool,
    /// Keep escape characters in the result.
    pub raw_escapes: bool,
    /// Treat quotes as ordinary characters (heredoc bodies).
    pub skip_quotes: bool,
    /// Leave references to unset variables as written.
    pub skip_unset: bool,
}

/// Nested `${a:-${b:-…}}` deeper than this is refused rather than overflowing the stack.
const MAX_DEPTH: usize = 64;

impl Lexer {
    /// A lexer with the given escape character and BuildKit's defaults.
    pub fn new(escape: char) -> Lexer {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_quotes: false,
            skip_unset: false,
        }
    }

    /// Expands `word` into one string (spaces kept), as `ProcessWord`.
    pub fn process_word(&self, word: &str, env: &dyn Lookup) -> Result<String, String> {
        // Most words have nothing to expand: skip the scanner for them.
        let special = |c: char| {
            c == '$' || c == self.escape || (!self.skip_quotes && (c == '\'' || c == '"'))
        };
        if !word.contains(special) {
            return Ok(word.to_string());
        }
        self.run(word, env).map(|(w, _)| w)
    }

    /// Expands `word` and splits the result into words, as `ProcessWords`.
    pub fn process_words(&self, word: &str, env: &dyn Lookup) -> Result<Vec<String>, String> {
        self.run(word, env).map(|(_, ws)| ws)
    }

    fn run(&self, word: &str, env: &dyn Lookup) -> Result<(String, Vec<String>), String> {
        let mut sw = ShellWord {
            lx: *self,
            chars: word.chars().collect(),
            pos: 0,
            env,
            raw_escapes: self.raw_escapes,
            depth: 0,
        };
        sw.process_stop_on(None, self.raw_escapes)
            .map_err(|e| format!("failed to process \"{word}\": {e}"))
    }
}

struct ShellWord<'a> {
    lx: Lexer,
    chars: Vec<char>,
    pos: usize,
    env: &'a dyn Lookup,
    raw_escapes: bool,
    depth: usize,
}

#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() && self.in_word {
            if !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else if !ch.is_whitespace() {
            self.add_raw_char(ch);
        }
    }
    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        for ch in s.chars() {
            self.add_char(ch);
        }
    }
    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(std::mem::take(&mut self.word));
        }
        self.words
    }
}

impl ShellWord<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("variable substitutions nested too deeply".into());
        }
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let r = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        self.depth -= 1;
        r
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), String> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if stop == Some(ch) {
                self.next();
                return Ok((result, words.finish()));
            }
            if ch == '$' {
                let tmp = self.process_dollar()?;
                result.push_str(&tmp);
                words.add_string(&tmp);
            } else if ch == '\'' && !self.lx.skip_quotes {
                let tmp = self.process_single_quote()?;
                result.push_str(&tmp);
                words.add_raw_string(&tmp);
            } else if ch == '"' && !self.lx.skip_quotes {
                let tmp = self.process_double_quote()?;
                result.push_str(&tmp);
                words.add_raw_string(&tmp);
            } else {
                let mut ch = self.next().unwrap_or_default();
                if ch == self.lx.escape {
                    if self.raw_escapes {
                        words.add_raw_char(ch);
                        result.push(ch);
                    }
                    // The escape character escapes the next one, except at the end.
                    match self.next() {
                        None => break,
                        Some(c) => ch = c,
                    }
                    words.add_raw_char(ch);
                } else {
                    words.add_char(ch);
                }
                result.push(ch);
            }
        }
        if let Some(s) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {s}"
            ));
        }
        Ok((result, words.finish()))
    }

    fn process_single_quote(&mut self) -> Result<String, String> {
        let mut result = String::new();
        let q = self.next().unwrap_or('\'');
        if self.lx.raw_quotes {
            result.push(q);
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    )
                }
                Some('\'') => {
                    if self.lx.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Result<String, String> {
        let mut result = String::new();
        let q = self.next().unwrap_or('"');
        if self.lx.raw_quotes {
            result.push(q);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    )
                }
                Some('"') => {
                    self.next();
                    if self.lx.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    result.push_str(&v);
                }
                Some(_) => {
                    let mut ch = self.next().unwrap_or_default();
                    if ch == self.lx.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.lx.escape => {
                                ch = c;
                                self.next();
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn get(&self, name: &str) -> Option<String> {
        self.env.lookup(name).map(str::to_string)
    }

    fn process_dollar(&mut self) -> Result<String, String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.get(&name) {
                Some(v) => v,
                None if self.lx.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.next();
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{') | Some('}') | Some(':') => {
                return Err("syntax error: bad substitution".into())
            }
            _ => {}
        }
        let name = self.process_name();
        let Some(mut ch) = self.next() else {
            return Err("syntax error: missing '}'".into());
        };
        let mut chs = ch.to_string();
        match ch {
            '}' => Ok(match self.get(&name) {
                Some(v) => v,
                None if self.lx.skip_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let mut null_is_unset = false;
                if ch == ':' {
                    null_is_unset = true;
                    ch = self.next().ok_or("syntax error: missing '}'")?;
                    chs.push(ch);
                }
                let raw = ch == '#' || ch == '%';
                let (mut word, _) = match self.process_stop_on(Some('}'), raw) {
                    Ok(w) => w,
                    Err(e) if self.peek().is_none() && !e.contains("nested") => {
                        return Err("syntax error: missing '}'".into())
                    }
                    Err(e) => return Err(e),
                };
                let value = self.get(&name);
                if self.lx.skip_unset && value.is_none() {
                    return Ok(format!("${{{name}{chs}{word}}}"));
                }
                let set = value.is_some();
                let value = value.unwrap_or_default();
                match ch {
                    '-' => Ok(if !set || (null_is_unset && value.is_empty()) {
                        word
                    } else {
                        value
                    }),
                    '+' => Ok(if !set || (null_is_unset && value.is_empty()) {
                        String::new()
                    } else {
                        word
                    }),
                    '?' => {
                        if !set {
                            let m = if word.is_empty() {
                                "is not allowed to be unset".into()
                            } else {
                                word
                            };
                            return Err(format!("{name}: {m}"));
                        }
                        if null_is_unset && value.is_empty() {
                            let m = if word.is_empty() {
                                "is not allowed to be empty".into()
                            } else {
                                word
                            };
                            return Err(format!("{name}: {m}"));
                        }
                        Ok(value)
                    }
                    '%' | '#' => {
                        let mut greedy = false;
                        if word.starts_with(ch) {
                            greedy = true;
                            word.remove(0);
                        }
                        let pat = Pattern::compile(&word).map_err(|e| {
                            format!("invalid pattern ({word}) in substitution: {e}")
                        })?;
                        Ok(if ch == '%' {
                            pat.trim_suffix(&value, greedy)
                        } else {
                            pat.trim_prefix(&value, greedy)
                        })
                    }
                    _ => Err(format!("unsupported modifier ({chs}) in substitution")),
                }
            }
            '/' => {
                let all = self.peek() == Some('/');
                if all {
                    self.next();
                }
                let (pattern, _) = match self.process_stop_on(Some('/'), true) {
                    Ok(w) => w,
                    Err(_) if self.peek().is_none() => {
                        return Err("syntax error: missing '/' in ${}".into())
                    }
                    Err(e) => return Err(e),
                };
                let (replacement, _) = match self.process_stop_on(Some('}'), true) {
                    Ok(w) => w,
                    Err(_) if self.peek().is_none() => {
                        return Err("syntax error: missing '}'".into())
                    }
                    Err(e) => return Err(e),
                };
                let Some(value) = self.get(&name) else {
                    if self.lx.skip_unset {
                        return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                    }
                    return Ok(String::new());
                };
                let pat = Pattern::compile(&pattern)
                    .map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))?;
                Ok(pat.replace(&value, &replacement, all))
            }
            _ => Err(format!("unsupported modifier ({chs}) in substitution")),
        }
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    self.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return ch.to_string();
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }
}

/// A shell pattern of `${v#p}`, `${v%p}` and `${v/p/r}`: `*`, `?` and `\` escapes, no brackets.
#[derive(Debug)]
struct Pattern(Vec<Tok>);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok {
    Lit(char),
    Any,
    Star,
}

impl Pattern {
    fn compile(p: &str) -> Result<Pattern, String> {
        let chars: Vec<char> = p.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' => out.push(Tok::Star),
                '?' => out.push(Tok::Any),
                '\\' => {
                    // `\}` and `\/` only protect the character from ending the ${}.
                    match chars.get(i + 1) {
                        Some('}') | Some('/') => {}
                        Some(&c) if c == '*' || c == '?' || c == '\\' => {
                            out.push(Tok::Lit(c));
                            i += 1;
                        }
                        Some(c) => return Err(format!("invalid escape '\\{c}'")),
                        None => return Err("invalid escape '\\'".into()),
                    }
                }
                c => out.push(Tok::Lit(c)),
            }
            i += 1;
        }
        Ok(Pattern(out))
    }

    /// Does the whole of `s` match?
    fn matches(&self, s: &[char]) -> bool {
        let p = &self.0;
        let (mut pi, mut si) = (0, 0);
        let mut back: Option<(usize, usize)> = None;
        while si < s.len() {
            match p.get(pi) {
                Some(Tok::Star) => {
                    back = Some((pi, si));
                    pi += 1;
                }
                Some(Tok::Any) => {
                    pi += 1;
                    si += 1;
                }
                Some(Tok::Lit(c)) if *c == s[si] => {
                    pi += 1;
                    si += 1;
                }
                _ => match back {
                    Some((bp, bs)) => {
                        pi = bp + 1;
                        si = bs + 1;
                        back = Some((bp, bs + 1));
                    }
                    None => return false,
                },
            }
        }
        p[pi.min(p.len())..].iter().all(|t| *t == Tok::Star)
    }

    fn trim_prefix(&self, value: &str, greedy: bool) -> String {
        let v: Vec<char> = value.chars().collect();
        let ks: Box<dyn Iterator<Item = usize>> = if greedy {
            Box::new((0..=v.len()).rev())
        } else {
            Box::new(0..=v.len())
        };
        for k in ks {
            if self.matches(&v[..k]) {
                return v[k..].iter().collect();
            }
        }
        value.to_string()
    }

    fn trim_suffix(&self, value: &str, greedy: bool) -> String {
        let v: Vec<char> = value.chars().collect();
        let ks: Box<dyn Iterator<Item = usize>> = if greedy {
            Box::new(0..=v.len())
        } else {
            Box::new((0..=v.len()).rev())
        };
        for k in ks {
            if self.matches(&v[k..]) {
                return v[..k].iter().collect();
            }
        }
        value.to_string()
    }

    /// Leftmost match, longest at that position (BuildKit compiles the pattern greedily).
    fn find(&self, v: &[char], from: usize) -> Option<(usize, usize)> {
        (from..=v.len()).find_map(|i| {
            (i..=v.len())
                .rev()
                .find(|&j| self.matches(&v[i..j]))
                .map(|j| (i, j))
        })
    }

    fn replace(&self, value: &str, repl: &str, all: bool) -> String {
        let v: Vec<char> = value.chars().collect();
        let mut out = String::new();
        let mut pos = 0;
        while pos <= v.len() {
            let Some((i, j)) = self.find(&v, pos) else {
                break;
            };
            out.extend(&v[pos..i]);
            out.push_str(repl);
            if j == i {
                if let Some(c) = v.get(i) {
                    out.push(*c);
                }
                pos = i + 1;
            } else {
                pos = j;
            }
            if !all {
                break;
            }
        }
        if pos < v.len() {
            out.extend(&v[pos..]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HashMap<String, String> {
        [("v", "hello/world/x.tar.gz"), ("e", ""), ("n", "a b  c")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn x(w: &str) -> String {
        Lexer::new('\\').process_word(w, &env()).unwrap()
    }

    #[test]
    fn modifiers() {
        assert_eq!(x("$v"), "hello/world/x.tar.gz");
        assert_eq!(x("${u:-d}|${e:-d}|${e-d}|${u-d}"), "d|d||d");
        assert_eq!(x("${u:+a}|${e:+a}|${e+a}|${v+a}"), "||a|a");
        assert_eq!(
            x("${v#*/}|${v##*/}|${v%.*}|${v%%.*}"),
            "world/x.tar.gz|x.tar.gz|hello/world/x.tar|hello/world/x"
        );
        assert_eq!(
            x("${v/o/0}|${v//o/0}"),
            "hell0/world/x.tar.gz|hell0/w0rld/x.tar.gz"
        );
        assert_eq!(x(r"\$v '$v' "), "$v $v ");
        assert_eq!(x(r#""$v""#), "hello/world/x.tar.gz");
        assert!(Lexer::new('\\')
            .process_word("${u:?need u}", &env())
            .unwrap_err()
            .contains("u: need u"));
        assert!(Lexer::new('\\')
            .process_word("${e:?}", &env())
            .unwrap_err()
            .contains("not allowed to be empty"));
        assert_eq!(x("${e?}"), "");
    }

    #[test]
    fn words() {
        let l = Lexer::new('\\');
        assert_eq!(
            l.process_words("x $n 'q r'", &env()).unwrap(),
            vec!["x", "a", "b", "c", "q r"]
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let w = "${a:-".repeat(10_000);
        assert!(Lexer::new('\\').process_word(&w, &env()).is_err());
    }
}
