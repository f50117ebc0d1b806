//! Path patterns as Docker reads them: `.dockerignore` / `--exclude` lines (moby/patternmatcher)
//! and COPY source globs (Go's `filepath.Match`).
//!
//! Written by hand rather than with `globset` because parity matters more than features here:
//! patternmatcher translates a pattern into a regular expression with its own rules (`**/` is
//! `(.*/)?`, a trailing `**` is `.*`, `\` escapes the next character, `[...]` passes through),
//! and `filepath.Match` has no `**` at all. globset differs on each of these corners (escapes,
//! `**` next to other characters, `[!...]`), and a context file that is ignored by docker but
//! not by us (or the other way round) changes the image.

use std::fmt;

/// Which dialect a pattern is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// moby/patternmatcher (`.dockerignore`, `COPY --exclude`, `COPY --parents` selections):
    /// `**` spans any number of directories.
    Docker,
    /// Go `filepath.Match` (COPY/ADD source globs): `*` never crosses a `/`, `**` is just `*`.
    GoMatch,
}

/// A malformed pattern (an unclosed `[`, a trailing `\` in a class, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    /// The pattern as given.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "syntax error in pattern {:?}: {}",
            self.pattern, self.reason
        )
    }
}

impl std::error::Error for PatternError {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `*`: any run of non-`/` characters.
    Star,
    /// `?`: one non-`/` character.
    One,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// `**` followed by more pattern: `(.*/)?`.
    AnyDirs,
    /// `**` at the end: `.*`.
    AnyRest,
}

/// A compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    toks: Vec<Tok>,
}

/// True when `s` contains a character that makes it a pattern rather than a plain path
/// (what BuildKit's `containsWildcards` checks: `*`, `?`, `[`, and a `\` escape).
pub fn has_wildcards(s: &str) -> bool {
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' | '?' | '[' => return true,
            '\\' => {
                chars.next();
            }
            _ => {}
        }
    }
    false
}

impl Pattern {
    /// Compiles `text` in the given dialect.
    pub fn new(text: &str, syntax: Syntax) -> Result<Pattern, PatternError> {
        let err = |reason| PatternError {
            pattern: text.to_string(),
            reason,
        };
        let chars: Vec<char> = text.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' if syntax == Syntax::Docker && chars.get(i) == Some(&'*') => {
                    i += 1;
                    // patternmatcher treats `**/` as `**`: the slash is eaten.
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                    }
                    if i == chars.len() {
                        toks.push(Tok::AnyRest);
                    } else {
                        toks.push(Tok::AnyDirs);
                    }
                }
                '*' => {
                    // Consecutive stars are one star for filepath.Match.
                    if toks.last() != Some(&Tok::Star) {
                        toks.push(Tok::Star);
                    }
                }
                '?' => toks.push(Tok::One),
                '\\' => match chars.get(i) {
                    Some(&n) => {
                        toks.push(Tok::Lit(n));
                        i += 1;
                    }
                    None if syntax == Syntax::GoMatch => return Err(err("trailing backslash")),
                    None => toks.push(Tok::Lit('\\')),
                },
                '[' => {
                    let mut negated = false;
                    if chars.get(i) == Some(&'^') {
                        negated = true;
                        i += 1;
                    }
                    let mut ranges = Vec::new();
                    let mut first = true;
                    loop {
                        let Some(&c) = chars.get(i) else {
                            return Err(err("unclosed character class"));
                        };
                        if c == ']' && !first {
                            i += 1;
                            break;
                        }
                        first = false;
                        let lo = read_class_char(&chars, &mut i)
                            .ok_or_else(|| err("bad escape in class"))?;
                        let mut hi = lo;
                        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|c| *c != ']')
                        {
                            i += 1;
                            hi = read_class_char(&chars, &mut i)
                                .ok_or_else(|| err("bad escape in class"))?;
                            if hi < lo {
                                return Err(err("bad range in character class"));
                            }
                        }
                        ranges.push((lo, hi));
                    }
                    toks.push(Tok::Class { negated, ranges });
                }
                c => toks.push(Tok::Lit(c)),
            }
        }
        Ok(Pattern {
            text: text.to_string(),
            toks,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether some path strictly below the directory `dir` could match: the pattern's leading
    /// components are compared with the directory's, and a `**` could match anything. Used to
    /// skip walking excluded directories that no exception can reach.
    pub fn could_match_under(&self, dir: &str) -> bool {
        let pcomps: Vec<&str> = self.text.split('/').collect();
        let dcomps: Vec<&str> = dir.split('/').collect();
        if pcomps.len() <= dcomps.len() && !self.text.contains("**") {
            return false;
        }
        for (i, c) in dcomps.iter().enumerate() {
            let Some(pc) = pcomps.get(i) else {
                return false;
            };
            if pc.contains("**") {
                return true;
            }
            let ok = if has_wildcards(pc) {
                Pattern::new(pc, Syntax::GoMatch)
                    .map(|x| x.matches(c))
                    .unwrap_or(true)
            } else {
                pc == c
            };
            if !ok {
                return false;
            }
        }
        true
    }

    /// Whether the whole of `path` (`/`-separated, relative) matches.
    pub fn matches(&self, path: &str) -> bool {
        let s: Vec<char> = path.chars().collect();
        match_at(&self.toks, &s)
    }
}

fn read_class_char(chars: &[char], i: &mut usize) -> Option<char> {
    let c = *chars.get(*i)?;
    *i += 1;
    if c == '\\' {
        let n = *chars.get(*i)?;
        *i += 1;
        return Some(n);
    }
    Some(c)
}

fn match_at(toks: &[Tok], s: &[char]) -> bool {
    let Some((tok, rest)) = toks.split_first() else {
        return s.is_empty();
    };
    match tok {
        Tok::Lit(c) => s.first() == Some(c) && match_at(rest, &s[1..]),
        Tok::One => s.first().is_some_and(|c| *c != '/') && match_at(rest, &s[1..]),
        Tok::Class { negated, ranges } => match s.first() {
            Some(c) => {
                let inside = ranges.iter().any(|(lo, hi)| lo <= c && c <= hi);
                inside != *negated && match_at(rest, &s[1..])
            }
            None => false,
        },
        Tok::Star => {
            let mut n = 0;
            loop {
                if match_at(rest, &s[n..]) {
                    return true;
                }
                if n == s.len() || s[n] == '/' {
                    return false;
                }
                n += 1;
            }
        }
        Tok::AnyDirs => {
            if match_at(rest, s) {
                return true;
            }
            (0..s.len()).any(|n| s[n] == '/' && match_at(rest, &s[n + 1..]))
        }
        Tok::AnyRest => true,
    }
}

/// Go's `filepath.Clean` for `/`-separated paths: the form patternmatcher compares against.
pub fn go_clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|p| *p != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            p => out.push(p),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dm(p: &str, s: &str) -> bool {
        Pattern::new(p, Syntax::Docker).unwrap().matches(s)
    }
    fn gm(p: &str, s: &str) -> bool {
        Pattern::new(p, Syntax::GoMatch).unwrap().matches(s)
    }

    #[test]
    fn go_match_table() {
        // From Go's path/filepath match_test.go.
        let cases: &[(&str, &str, bool)] = &[
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*", "abc", true),
            ("a*", "ab/c", false),
            ("a*/b", "abc/b", true),
            ("a*/b", "a/c/b", false),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false),
            ("a*b?c*x", "abxbbxdbxebxczzx", true),
            ("a*b?c*x", "abxbbxdbxebxczzy", false),
            ("ab[c]", "abc", true),
            ("ab[b-d]", "abc", true),
            ("ab[e-g]", "abc", false),
            ("ab[^c]", "abc", false),
            ("ab[^b-d]", "abc", false),
            ("ab[^e-g]", "abc", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "ab", false),
            ("a?b", "a☺b", true),
            ("a[^a]b", "a☺b", true),
            ("a???b", "a☺b", false),
            ("[a-ζ]*", "α", true),
            ("*[a-ζ]", "A", false),
            ("a?b", "a/b", false),
            ("a*b", "a/b", false),
            ("[\\]a]", "]", true),
            ("[\\-]", "-", true),
            ("[x\\-]", "x", true),
            ("[x\\-]", "-", true),
            ("[x\\-]", "z", false),
            ("[\\-x]", "x", true),
            ("*x", "xxx", true),
        ];
        for (p, s, want) in cases {
            assert_eq!(gm(p, s), *want, "pattern {p:?} on {s:?}");
        }
        assert!(Pattern::new("[", Syntax::GoMatch).is_err());
        assert!(Pattern::new("[^", Syntax::GoMatch).is_err());
        assert!(Pattern::new("a[", Syntax::GoMatch).is_err());
        assert!(Pattern::new("[a-", Syntax::GoMatch).is_err());
        assert!(Pattern::new("\\", Syntax::GoMatch).is_err());
    }

    #[test]
    fn docker_double_star() {
        // From moby/patternmatcher's TestMatches.
        let cases: &[(&str, &str, bool)] = &[
            ("**", "file", true),
            ("**", "file/", true),
            ("**/", "file", true),
            ("**/", "file/", true),
            ("**", "/", true),
            ("**/", "/", true),
            ("**", "dir/file", true),
            ("**/", "dir/file", true),
            ("**", "dir/file/", true),
            ("**/", "dir/file/", true),
            ("**/**", "dir/file", true),
            ("**/**", "dir/file/", true),
            ("dir/**", "dir/file", true),
            ("dir/**", "dir/file/", true),
            ("dir/**", "dir/dir2/file", true),
            ("dir/**", "dir/dir2/file/", true),
            ("**/dir", "dir", true),
            ("**/dir", "dir/file", false),
            ("**/dir2/*", "dir/dir2/file", true),
            ("**/dir2/*", "dir/dir2/file/", false),
            ("**/dir2/**", "dir/dir2/dir3/file", true),
            ("**/dir2/**", "dir/dir2/dir3/file/", true),
            ("**file", "file", true),
            ("**file", "dir/file", true),
            ("**/file", "dir/file", true),
            ("**file", "dir/dir/file", true),
            ("**/file", "dir/dir/file", true),
            ("**/file*", "dir/dir/file", true),
            ("**/file*", "dir/dir/file.txt", true),
            ("**/file*txt", "dir/dir/file.txt", true),
            ("**/file*.txt", "dir/dir/file.txt", true),
            ("**/file*.txt*", "dir/dir/file.txt", true),
            ("**/**/*.txt", "dir/dir/file.txt", true),
            ("**/**/*.txt2", "dir/dir/file.txt", false),
            ("**/*.txt", "file.txt", true),
            ("**/**/*.txt", "file.txt", true),
            ("a**/*.txt", "a/file.txt", true),
            ("a**/*.txt", "a/dir/file.txt", true),
            ("a**/*.txt", "a/dir/dir/file.txt", true),
            ("a/*.txt", "a/dir/file.txt", false),
            ("a/*.txt", "a/file.txt", true),
            ("a/*.txt**", "a/file.txt", true),
            ("a[b-d]e", "ae", false),
            ("a[b-d]e", "ace", true),
            ("a[b-d]e", "aae", false),
            ("a[^b-d]e", "aze", true),
            (".*", ".foo", true),
            (".*", "foo", false),
            ("abc.def", "abcdef", false),
            ("abc.def", "abc.def", true),
            ("abc.def", "abcZdef", false),
            ("abc?def", "abcZdef", true),
            ("abc?def", "abcdef", false),
            ("a\\\\", "a\\", true),
            ("**/foo/bar", "foo/bar", true),
            ("**/foo/bar", "dir/foo/bar", true),
            ("**/foo/bar", "dir/dir2/foo/bar", true),
            ("abc/**", "abc", false),
            ("abc/**", "abc/def", true),
            ("abc/**", "abc/def/ghi", true),
            ("**/.foo", ".foo", true),
            ("**/.foo", "bar.foo", false),
            ("a(b)c/def", "a(b)c/def", true),
            ("a(b)c/def", "a(b)c/xyz", false),
            ("a.|)$(}+{bc", "a.|)$(}+{bc", true),
        ];
        for (p, s, want) in cases {
            assert_eq!(dm(p, s), *want, "pattern {p:?} on {s:?}");
        }
    }

    #[test]
    fn clean_like_go() {
        for (i, o) in [
            ("", "."),
            ("a/b/", "a/b"),
            ("/a//b/./c/..", "/a/b"),
            ("../x", "../x"),
            ("/..", "/"),
            ("a/../..", ".."),
            ("./", "."),
        ] {
            assert_eq!(go_clean(i), o, "{i}");
        }
    }

    #[test]
    fn could_match_under_dirs() {
        let p = |s| Pattern::new(s, Syntax::Docker).unwrap();
        assert!(p("vendor/keep").could_match_under("vendor"));
        assert!(!p("vendor/keep").could_match_under("other"));
        assert!(!p("vendor/keep").could_match_under("vendor/keep"));
        assert!(p("*/keep/x").could_match_under("a/keep"));
        assert!(p("**/*.go").could_match_under("deep/er"));
        assert!(p("a/**").could_match_under("a/b/c"));
        assert!(!p("b/**").could_match_under("a"));
        assert!(!p("x").could_match_under("x"));
    }

    #[test]
    fn wildcard_detection() {
        assert!(has_wildcards("*.go"));
        assert!(has_wildcards("a/b?"));
        assert!(has_wildcards("[ab]"));
        assert!(!has_wildcards("src/main.go"));
    }
}
