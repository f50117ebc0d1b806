//! `.dockerignore` rules: reading the file (moby/patternmatcher/ignorefile) and deciding whether
//! a context path is excluded (`PatternMatcher.MatchesOrParentMatches`).

use super::pattern::{go_clean, Pattern, PatternError, Syntax};

/// One rule: a pattern, excluding or (with `!`) re-including.
#[derive(Debug, Clone)]
struct Rule {
    exception: bool,
    pattern: Pattern,
}

/// An ordered list of exclusion rules; the last rule that matches a path decides.
#[derive(Debug, Clone, Default)]
pub struct IgnoreRules {
    rules: Vec<Rule>,
}

/// Splits a `.dockerignore` text into patterns exactly as docker's `ignorefile.ReadAll` does:
/// a UTF-8 BOM is dropped, lines starting with `#` are comments (before trimming, so ` #x` is a
/// pattern), whitespace is trimmed, paths are cleaned and a leading `/` is removed.
pub fn read_dockerignore(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut cleaned = String::new();
        if !pattern.is_empty() {
            cleaned = go_clean(pattern);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
        }
        out.push(if invert {
            format!("!{cleaned}")
        } else {
            cleaned
        });
    }
    out
}

impl IgnoreRules {
    /// Compiles patterns (as returned by [`read_dockerignore`], or `COPY --exclude` values).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<IgnoreRules, PatternError> {
        let mut rules = Vec::new();
        for p in patterns {
            let p = p.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            let p = go_clean(p);
            let (exception, body) = match p.strip_prefix('!') {
                Some("") => {
                    return Err(PatternError {
                        pattern: p.clone(),
                        reason: "illegal exclusion pattern \"!\"",
                    })
                }
                Some(rest) => (true, rest.to_string()),
                None => (false, p),
            };
            // filepath.Match rejects what patternmatcher would otherwise accept silently
            // (an unclosed `[`); docker reports it, so do we.
            Pattern::new(&body, Syntax::GoMatch)?;
            rules.push(Rule {
                exception,
                pattern: Pattern::new(&body, Syntax::Docker)?,
            });
        }
        Ok(IgnoreRules { rules })
    }

    /// True when there are no rules at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// True when some rule is an exception (`!pattern`): excluded directories must then still be
    /// walked, since a path under them may be re-included.
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|r| r.exception)
    }

    /// Whether an exception rule could re-include something below the directory `dir` (so an
    /// excluded directory must still be walked).
    pub fn may_reinclude_under(&self, dir: &str) -> bool {
        self.rules
            .iter()
            .any(|r| r.exception && r.pattern.could_match_under(dir))
    }

    /// Whether `rel` (a clean, `/`-separated path relative to the context root) is excluded: a
    /// rule matches when it matches the path or one of its parent directories, and the last
    /// matching rule wins.
    pub fn is_excluded(&self, rel: &str) -> bool {
        if self.rules.is_empty() {
            return false;
        }
        let rel = go_clean(rel);
        let parents: Vec<&str> = match rel.rfind('/') {
            Some(i) => rel[..i].split('/').collect(),
            None => Vec::new(),
        };
        let mut matched = false;
        for rule in &self.rules {
            // Same short cut as patternmatcher: an exception only matters once something
            // matched, an exclusion only while nothing has.
            if rule.exception != matched {
                continue;
            }
            let mut hit = rule.pattern.matches(&rel);
            if !hit {
                for i in 1..=parents.len() {
                    if rule.pattern.matches(&parents[..i].join("/")) {
                        hit = true;
                        break;
                    }
                }
            }
            if hit {
                matched = !rule.exception;
            }
        }
        matched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(lines: &[&str]) -> IgnoreRules {
        IgnoreRules::new(lines).unwrap()
    }

    #[test]
    fn reads_like_docker() {
        let text =
            "\u{feff}# comment\n  \n/foo/bar/\n  !  /keep//me/. \n #notacomment\n../x\n*.md\n/\n";
        assert_eq!(
            read_dockerignore(text),
            vec!["foo/bar", "!keep/me", "#notacomment", "../x", "*.md", "/"]
        );
    }

    // Table from moby/patternmatcher TestMatchesOrParentMatches and TestWildcardMatches/
    // TestExclusionPatternMatchesPatternBeforeAFileInAnotherDirectory.
    #[test]
    fn matches_or_parent_matches() {
        let cases: &[(&[&str], &str, bool)] = &[
            (&["*"], "fileutils.go", true),
            (&["*.go"], "fileutils.go", true),
            (&["*.go"], "dir/fileutils.go", false),
            (&["**/*.go"], "dir/fileutils.go", true),
            (&["docs", "!docs/README.md"], "docs/README.md", false),
            (&["docs", "!docs/README.md"], "docs/other.md", true),
            (&["docs/*", "!docs/README.md"], "docs/README.md", false),
            (&["docs", "!docs/README.md"], "docs", true),
            (&["**", "!keep"], "keep", false),
            (&["**", "!keep"], "keep/sub/file", false),
            (&["**", "!keep"], "other", true),
            (&["dir"], "dir/sub/deep/file", true),
            (&["dir/sub"], "dir/sub/file", true),
            (&["dir/sub"], "dir/other", false),
            (
                &["*.txt", "!important.txt", "important.txt"],
                "important.txt",
                true,
            ),
            (&["docs/**/*.md"], "docs/a/b/c.md", true),
            (&["docs/**/*.md"], "docs/c.md", true),
            (&["!foo"], "foo", false),
            (&["foo/", "!foo/bar"], "foo/bar/baz", false),
            (&["a/b/c/d", "!a/b"], "a/b/c/d/e", false),
            (&["pkg/**", "!pkg/keep/**"], "pkg/keep/x", false),
            (&["pkg/**", "!pkg/keep/**"], "pkg/drop/x", true),
            (&[".git"], ".git/objects/ab", true),
            (&["Dockerfile", ".dockerignore"], "Dockerfile", true),
        ];
        for (pats, path, want) in cases {
            let lines: Vec<String> = read_dockerignore(&pats.join("\n"));
            assert_eq!(
                IgnoreRules::new(&lines).unwrap().is_excluded(path),
                *want,
                "{pats:?} on {path}"
            );
        }
    }

    #[test]
    fn bad_patterns_are_errors() {
        assert!(IgnoreRules::new(&["!"]).is_err());
        assert!(IgnoreRules::new(&["[a-"]).is_err());
        assert!(rules(&["a", "!b"]).has_exceptions());
        assert!(!rules(&["a"]).has_exceptions());
    }
}
