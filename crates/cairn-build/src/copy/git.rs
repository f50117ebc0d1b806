//! `ADD <git url>#<ref>:<subdir>`: a shallow checkout with the `git` command, copied like a
//! directory (without `.git` unless `--keep-git-dir`). The cache input is the commit the ref
//! resolves to (`git ls-remote`), as BuildKit's git source does.
//!
//! Only network transports are allowed (`GIT_ALLOW_PROTOCOL`): a Dockerfile must not be able to
//! read the builder's own files through `file://` or run commands through `ext::`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::error::{CopyError, Result};

/// Transports a git source may use.
const ALLOWED_PROTOCOLS: &str = "http:https:ssh:git";

/// A parsed git source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    /// The repository URL (fragment removed).
    pub url: String,
    /// Branch, tag or commit; `None` is the remote HEAD.
    pub reference: Option<String>,
    /// Directory inside the repository to copy (`""`: all of it).
    pub subdir: String,
}

impl GitSource {
    /// Splits `url#ref:subdir`.
    pub fn parse(s: &str) -> GitSource {
        let (url, frag) = match s.split_once('#') {
            Some((u, f)) => (u, f),
            None => (s, ""),
        };
        let (reference, subdir) = match frag.split_once(':') {
            Some((r, d)) => (r, d),
            None => (frag, ""),
        };
        GitSource {
            url: url.to_string(),
            reference: (!reference.is_empty()).then(|| reference.to_string()),
            subdir: subdir.trim_matches('/').to_string(),
        }
    }

    fn is_commit(&self) -> bool {
        self.reference
            .as_deref()
            .is_some_and(|r| r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit()))
    }
}

fn git(args: &[&str], dir: Option<&Path>) -> std::result::Result<String, String> {
    let mut cmd = Command::new("git");
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let out = cmd
        .args(args)
        .env("GIT_ALLOW_PROTOCOL", ALLOWED_PROTOCOLS)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running git: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "git {}: {}",
            args.first().unwrap_or(&""),
            err.trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn fail(src: &GitSource, message: String) -> CopyError {
    CopyError::Fetch {
        url: src.url.clone(),
        message,
    }
}

/// The commit `src` designates, without fetching the repository.
pub fn resolve_commit(src: &GitSource) -> Result<String> {
    if src.is_commit() {
        return Ok(src
            .reference
            .clone()
            .unwrap_or_default()
            .to_ascii_lowercase());
    }
    let r = src.reference.as_deref().unwrap_or("HEAD");
    let out = git(&["ls-remote", "--", &src.url, r], None).map_err(|e| fail(src, e))?;
    // A tag may be listed twice (the tag and `^{}`, the commit it points to): prefer the latter.
    let mut first = None;
    for line in out.lines() {
        let mut it = line.split_whitespace();
        let (Some(sha), Some(name)) = (it.next(), it.next()) else {
            continue;
        };
        if name.ends_with("^{}") {
            return Ok(sha.to_string());
        }
        first.get_or_insert_with(|| sha.to_string());
    }
    first.ok_or_else(|| fail(src, format!("reference {r} not found")))
}

/// Checks `src` out into a new temporary directory; `.git` is removed unless `keep_git_dir`.
/// `commit` (`--checksum`) must be the checked-out commit or a prefix of it (7+ digits).
pub fn checkout(
    src: &GitSource,
    keep_git_dir: bool,
    commit: Option<&str>,
) -> Result<(tempfile::TempDir, PathBuf)> {
    let tmp = tempfile::Builder::new()
        .prefix("cairn-git-")
        .tempdir()
        .map_err(|e| fail(src, format!("temporary directory: {e}")))?;
    let dir = tmp.path().join("repo");
    let d = dir.to_string_lossy().into_owned();
    git(&["init", "-q", &d], None).map_err(|e| fail(src, e))?;
    let r = src.reference.as_deref().unwrap_or("HEAD");
    // Shallow first; a dumb-http server cannot do shallow fetches, so retry in full.
    if git(
        &["fetch", "-q", "--depth", "1", "--", &src.url, r],
        Some(&dir),
    )
    .is_err()
    {
        git(&["fetch", "-q", "--", &src.url, r], Some(&dir)).map_err(|e| fail(src, e))?;
    }
    git(&["checkout", "-q", "FETCH_HEAD"], Some(&dir)).map_err(|e| fail(src, e))?;
    if let Some(want) = commit {
        let head = git(&["rev-parse", "HEAD"], Some(&dir)).map_err(|e| fail(src, e))?;
        let head = head.trim();
        let want_l = want.to_ascii_lowercase();
        if want_l.len() < 7 || !head.starts_with(&want_l) {
            return Err(CopyError::Checksum {
                url: src.url.clone(),
                expected: want.to_string(),
                actual: head.to_string(),
            });
        }
    }
    if !keep_git_dir {
        std::fs::remove_dir_all(dir.join(".git"))
            .map_err(|e| fail(src, format!("removing .git: {e}")))?;
    }
    Ok((tmp, dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fragments() {
        let g = GitSource::parse("https://github.com/moby/buildkit.git#v0.12.0:docs/");
        assert_eq!(g.url, "https://github.com/moby/buildkit.git");
        assert_eq!(g.reference.as_deref(), Some("v0.12.0"));
        assert_eq!(g.subdir, "docs");
        let g = GitSource::parse("git@github.com:a/b.git");
        assert_eq!((g.reference, g.subdir.as_str()), (None, ""));
        let g = GitSource::parse(&format!("https://h/r.git#{}", "a".repeat(40)));
        assert!(g.is_commit());
    }
}
