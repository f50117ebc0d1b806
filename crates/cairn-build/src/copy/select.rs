//! Source selection: what a COPY/ADD takes, decided once and used both for the cache digest and
//! for the copy itself (so that the digest covers exactly what lands in the image).
//!
//! BuildKit's rules: a source is cleaned and taken from the root (`../x` is `x`); a glob (Go
//! `filepath.Match`) is matched from its first wildcard component on, and a match is not walked
//! into; a top-level symlink is followed inside the root; a directory's contents are copied; files
//! hidden by `.dockerignore` do not exist; `--parents` keeps the path below the `/./` pivot (the
//! root without one); `--exclude` drops entries matching (relative to the source) at any depth.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::cores;
use super::dest::resolve_in_root;
use super::error::{io_err, CopyError, Result};
use super::SourceRoot;
use crate::context::pattern::{go_clean, has_wildcards, Pattern, Syntax};
use crate::context::IgnoreRules;

/// One file, directory, symlink or device below a directory source.
#[derive(Debug)]
pub(crate) struct Entry {
    /// Path relative to the directory source (never empty); the host path is the source's
    /// joined with it (not kept: a no-op build over 20,000 files spent more on the memory of
    /// entries than on anything but the kernel's `lstat`s).
    pub rel: PathBuf,
    /// `lstat` of the host path.
    pub meta: fs::Metadata,
}

/// One top-level source after glob expansion.
#[derive(Debug)]
pub(crate) enum Item {
    /// A non-directory (a top-level symlink is already followed).
    File {
        /// As written (or the glob match), for errors.
        display: String,
        /// Name used when copying into a directory: the source's own name, not its target's.
        name: OsString,
        path: PathBuf,
        meta: fs::Metadata,
    },
    /// A directory whose contents are copied.
    Dir {
        path: PathBuf,
        meta: fs::Metadata,
        entries: Vec<Entry>,
    },
    /// A heredoc (`COPY <<EOF /x`).
    Inline { name: String, content: Vec<u8> },
    /// An http(s) URL (ADD only).
    Url { url: String },
    /// A git repository (ADD only).
    Git { src: super::git::GitSource },
}

/// Selection rules shared by every source of one instruction.
pub(crate) struct Selector<'a> {
    pub cmd: &'static str,
    pub src: &'a SourceRoot<'a>,
    pub exclude: IgnoreRules,
    pub parents: bool,
}

fn is_url(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    l.starts_with("http://") || l.starts_with("https://")
}

/// Git sources as BuildKit recognises them in ADD.
pub(crate) fn is_git_url(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    let base = l.split('#').next().unwrap_or("");
    l.starts_with("git@") || l.starts_with("git://") || base.ends_with(".git")
}

impl<'a> Selector<'a> {
    fn root(&self) -> &Path {
        match self.src {
            SourceRoot::Context(c) => c.root(),
            SourceRoot::Dir(d) => d,
        }
    }

    fn ignored(&self, host: &Path) -> bool {
        match self.src {
            // Most contexts have no .dockerignore: no path work for each of their files.
            SourceRoot::Context(c) if c.rules().is_empty() => false,
            SourceRoot::Context(c) => match host.strip_prefix(c.root()) {
                Ok(rel) => c.is_ignored(rel),
                Err(_) => false,
            },
            SourceRoot::Dir(_) => false,
        }
    }

    /// Whether neither `.dockerignore` nor `--exclude` can hide anything.
    fn has_no_rules(&self) -> bool {
        let ignore_empty = match self.src {
            SourceRoot::Context(c) => c.rules().is_empty(),
            SourceRoot::Dir(_) => true,
        };
        ignore_empty && self.exclude.is_empty()
    }

    /// Whether the hidden directory `host` (`rel` below the source) must still be walked because
    /// an exception (`!pattern`) may re-include something in it.
    fn may_reinclude(&self, host: &Path, rel: &str) -> bool {
        if self.exclude.may_reinclude_under(rel) {
            return true;
        }
        match self.src {
            SourceRoot::Context(c) => match host.strip_prefix(c.root()) {
                Ok(r) => c.rules().may_reinclude_under(&r.to_string_lossy()),
                Err(_) => false,
            },
            SourceRoot::Dir(_) => false,
        }
    }

    fn not_found(&self, path: &str) -> CopyError {
        match self.src {
            SourceRoot::Context(_) => CopyError::NotInContext {
                cmd: self.cmd,
                path: path.to_string(),
            },
            SourceRoot::Dir(_) => CopyError::NotInSource {
                cmd: self.cmd,
                path: path.to_string(),
            },
        }
    }

    fn pattern_err(&self) -> impl Fn(crate::context::PatternError) -> CopyError + '_ {
        move |source| CopyError::Pattern {
            cmd: self.cmd,
            source,
        }
    }

    /// Expands every source of the instruction, in order.
    pub fn select(&self, copy: &cairn_dockerfile::Copy) -> Result<Vec<Item>> {
        let mut items = Vec::new();
        let mut had_glob = false;
        for s in &copy.sources {
            if s.starts_with("<<") && !copy.heredocs.is_empty() {
                // The frontend may keep `<<EOF` among the sources; its content is in `heredocs`.
                continue;
            }
            let remote = is_url(s) || s.starts_with("git@") || s.starts_with("git://");
            if remote && copy.add && is_git_url(s) {
                items.push(Item::Git {
                    src: super::git::GitSource::parse(s),
                });
                continue;
            }
            if is_url(s) {
                if !copy.add {
                    return Err(CopyError::Invalid {
                        cmd: self.cmd,
                        message: format!("source can't be a URL for COPY: {s}"),
                    });
                }
                items.push(Item::Url { url: s.clone() });
                continue;
            }
            let found = if self.parents {
                had_glob |= has_wildcards(s);
                self.select_parents(s)?
            } else if has_wildcards(s) {
                had_glob = true;
                self.select_glob(s)?
            } else {
                let rel = go_clean(&format!("/{s}"));
                let rel = rel.trim_start_matches('/');
                match self.item_at(Path::new(rel), s)? {
                    Some(i) => vec![i],
                    None => return Err(self.not_found(s)),
                }
            };
            items.extend(found);
        }
        for h in &copy.heredocs {
            items.push(Item::Inline {
                name: h.name.clone(),
                content: h.content.clone().into_bytes(),
            });
        }
        if items.is_empty() {
            // Globs that match nothing copy nothing, as BuildKit (20.10 and current:
            // `dispatchCopy` sets `AllowEmptyWildcard`); the legacy builder failed here.
            if had_glob {
                return Ok(items);
            }
            if copy.sources.is_empty() {
                return Err(CopyError::NoSources { cmd: self.cmd });
            }
            if let Some(s) = copy.sources.first() {
                return Err(self.not_found(s));
            }
        }
        Ok(items)
    }

    /// The item for the root-relative `rel`, following a symlink there; `None` when it does not
    /// exist or is ignored.
    pub(crate) fn item_at(&self, rel: &Path, display: &str) -> Result<Option<Item>> {
        let root = self.root();
        let resolved = match resolve_in_root(root, rel, true) {
            Ok(p) => p,
            // `file/x`: docker calls that not found too.
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => return Ok(None),
            Err(e) => return Err(io_err(self.cmd, rel)(e)),
        };
        let meta = match fs::symlink_metadata(&resolved) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => return Ok(None),
            Err(e) => return Err(io_err(self.cmd, resolved)(e)),
        };
        if resolved != root && self.ignored(&resolved) {
            return Ok(None);
        }
        if meta.is_dir() {
            let mut entries = Vec::new();
            self.walk(&resolved, Path::new(""), None, &mut entries)
                .map_err(io_err(self.cmd, &resolved))?;
            return Ok(Some(Item::Dir {
                path: resolved,
                meta,
                entries,
            }));
        }
        let name = rel
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| resolved.file_name().unwrap_or_default().to_os_string());
        Ok(Some(Item::File {
            display: display.to_string(),
            name,
            path: resolved,
            meta,
        }))
    }

    /// Collects the entries below `dir` (sorted by name, parents before children). `include`
    /// (for `--parents`) keeps only paths it matches, their contents and their parent dirs.
    ///
    /// The subdirectories of a directory that has several are walked on all cores (each core
    /// takes the next one still to do), then spliced in order: the whole walk of a big context
    /// (`getdents`, `lstat`s, names) runs in parallel, not only the `lstat`s of one directory.
    fn walk(
        &self,
        dir: &Path,
        rel: &Path,
        include: Option<&Pattern>,
        out: &mut Vec<Entry>,
    ) -> io::Result<()> {
        let children = stat_children(dir)?;
        // Each child kept, and for a directory: its host path, whether it is kept only as the
        // parent of what is kept below it (hidden or unmatched), the include to descend with.
        let mut kept = Vec::with_capacity(children.len());
        let no_rules = self.has_no_rules();
        for (name, meta) in children {
            let rel = rel.join(&name);
            // The host path of a file is only needed to match it against .dockerignore.
            let path = if meta.is_dir() || !no_rules {
                dir.join(&name)
            } else {
                PathBuf::new()
            };
            let rel_str = rel.to_string_lossy();
            let hidden = !no_rules && (self.ignored(&path) || self.exclude.is_excluded(&rel_str));
            let (matched, descend_include) = match include {
                None => (true, None),
                Some(p) => {
                    if matches_or_parent(p, &rel_str) {
                        (true, None)
                    } else {
                        (false, Some(p))
                    }
                }
            };
            if meta.is_dir() {
                if hidden && !self.may_reinclude(&path, &rel_str) {
                    continue;
                }
                if !matched && !descend_include.is_some_and(|p| p.could_match_under(&rel_str)) {
                    continue;
                }
                let only_parent = hidden || !matched;
                kept.push((
                    Entry { rel, meta },
                    Some((path, only_parent, descend_include)),
                ));
            } else if !hidden && matched {
                kept.push((Entry { rel, meta }, None));
            }
        }
        let subdirs: Vec<usize> = (0..kept.len()).filter(|&i| kept[i].1.is_some()).collect();
        let mut below: Vec<Option<Vec<Entry>>> = Vec::new();
        let cpus = cores::available();
        if subdirs.len() >= 2 && cpus > 1 && !IN_WALKER.get() {
            below.resize_with(kept.len(), || None);
            let walked = cores::map(&subdirs, cpus, 1, |&i| {
                IN_WALKER.set(true);
                let (e, sub) = &kept[i];
                let mut v = Vec::new();
                if let Some((path, _, inc)) = sub {
                    self.walk(path, &e.rel, *inc, &mut v)?;
                }
                Ok::<_, io::Error>(v)
            });
            IN_WALKER.set(false);
            for (&i, v) in subdirs.iter().zip(walked?) {
                below[i] = Some(v);
            }
        }
        // Room for everything known to land here, so that the entries (big: they hold an
        // `lstat`) are not moved again as `out` grows.
        out.reserve(kept.len() + below.iter().flatten().map(Vec::len).sum::<usize>());
        for (i, (entry, sub)) in kept.into_iter().enumerate() {
            let Some((path, only_parent, inc)) = sub else {
                out.push(entry);
                continue;
            };
            let mark = out.len();
            let rel = entry.rel.clone();
            out.push(entry);
            match below.get_mut(i).and_then(Option::take) {
                Some(v) => out.extend(v),
                None => self.walk(&path, &rel, inc, out)?,
            }
            // A hidden or unmatched directory is only kept as the parent of what is.
            if only_parent && out.len() == mark + 1 {
                out.truncate(mark);
            }
        }
        Ok(())
    }

    fn select_glob(&self, s: &str) -> Result<Vec<Item>> {
        let cleaned = go_clean(&format!("/{s}"));
        let comps: Vec<&str> = cleaned.trim_start_matches('/').split('/').collect();
        let first = comps.iter().position(|c| has_wildcards(c)).unwrap_or(0);
        let base_rel: PathBuf = comps[..first].iter().collect();
        let glob = comps[first..].join("/");
        let pat = Pattern::new(&glob, Syntax::GoMatch).map_err(self.pattern_err())?;
        let root = self.root();
        let base = match resolve_in_root(root, &base_rel, true) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => return Ok(Vec::new()),
            Err(e) => return Err(io_err(self.cmd, &base_rel)(e)),
        };
        if !base.is_dir() {
            return Ok(Vec::new());
        }
        let mut matches = Vec::new();
        self.glob_walk(
            &base,
            Path::new(""),
            &pat,
            comps.len() - first,
            &mut matches,
        )
        .map_err(io_err(self.cmd, &base))?;
        let mut items = Vec::new();
        for m in matches {
            let rel_in_root = match base.join(&m).strip_prefix(root) {
                Ok(r) => r.to_path_buf(),
                Err(_) => continue,
            };
            if let Some(i) = self.item_at(&rel_in_root, &rel_in_root.to_string_lossy())? {
                items.push(i);
            }
        }
        Ok(items)
    }

    /// Finds paths below `dir` matching `pat` (which has `depth` components); a match is not
    /// walked into, and nothing deeper than `depth` can match since `*` never spans a `/`.
    fn glob_walk(
        &self,
        dir: &Path,
        rel: &Path,
        pat: &Pattern,
        depth: usize,
        out: &mut Vec<PathBuf>,
    ) -> io::Result<()> {
        let mut children: Vec<(OsString, fs::FileType)> = fs::read_dir(dir)?
            .map(|e| e.and_then(|e| Ok((e.file_name(), e.file_type()?))))
            .collect::<io::Result<_>>()?;
        children.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (name, file_type) in children {
            let path = dir.join(&name);
            let rel = rel.join(&name);
            let rel_str = rel.to_string_lossy();
            let hidden = self.ignored(&path) || self.exclude.is_excluded(&rel_str);
            if pat.matches(&rel_str) {
                if !hidden {
                    out.push(rel);
                }
                continue;
            }
            if (!hidden || self.may_reinclude(&path, &rel_str))
                && rel.components().count() < depth
                && file_type.is_dir()
            {
                self.glob_walk(&path, &rel, pat, depth, out)?;
            }
        }
        Ok(())
    }

    /// `--parents`: the source is `pivot/./pattern` (or just `pattern`, pivot = root); the pivot
    /// is copied as a directory, restricted to what the pattern selects.
    fn select_parents(&self, s: &str) -> Result<Vec<Item>> {
        let (pivot, pattern) = match s.split_once("/./") {
            Some((p, rest)) => (p.to_string(), rest.to_string()),
            None => ("/".to_string(), s.to_string()),
        };
        let pivot = go_clean(&format!("/{pivot}"));
        let pattern = go_clean(&format!("/{pattern}"));
        let pattern = pattern.trim_start_matches('/');
        let pivot_rel = Path::new(pivot.trim_start_matches('/'));
        let root = self.root();
        let dir = resolve_in_root(root, pivot_rel, true).map_err(io_err(self.cmd, pivot_rel))?;
        let meta = match fs::metadata(&dir) {
            Ok(m) if m.is_dir() => m,
            _ => return Err(self.not_found(s)),
        };
        let mut entries = Vec::new();
        if pattern.is_empty() {
            self.walk(&dir, Path::new(""), None, &mut entries)
        } else {
            let pat = Pattern::new(pattern, Syntax::Docker).map_err(self.pattern_err())?;
            self.walk(&dir, Path::new(""), Some(&pat), &mut entries)
        }
        .map_err(io_err(self.cmd, &dir))?;
        if entries.is_empty() {
            if has_wildcards(pattern) {
                return Ok(Vec::new());
            }
            return Err(self.not_found(s));
        }
        Ok(vec![Item::Dir {
            path: dir,
            meta,
            entries,
        }])
    }
}

/// Each thread that `lstat`s a directory's entries gets at least this many: below it, starting a
/// thread costs more than it saves. At 400, the 1,000-entry directories of the bench's `bigctx`
/// are split over two cores: its no-op rebuild went from 105 to 75 ms (interleaved medians on a
/// busy 2-core VM; at 512 they were stat'ed on one).
const PARALLEL_STAT_MIN: usize = 400;

/// The entries of `dir` with their `lstat`, sorted by name.
///
/// `DirEntry::metadata` is an `fstatat` relative to the open directory: unlike
/// `symlink_metadata(dir.join(name))` it does not resolve the whole path again for every file,
/// which was half the time of a no-op build over a large context. The other half is the kernel's
/// per-file work, which large directories spread over the cores.
///
/// They are sorted before the `lstat`s: moving the small directory entries costs less than moving
/// the big results.
fn stat_children(dir: &Path) -> io::Result<Vec<(OsString, fs::Metadata)>> {
    let mut entries: Vec<(OsString, fs::DirEntry)> = fs::read_dir(dir)?
        .map(|e| e.map(|e| (e.file_name(), e)))
        .collect::<io::Result<_>>()?;
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let threads = cores::available().min(entries.len() / PARALLEL_STAT_MIN);
    // Inside a parallel walk every core is busy already.
    let threads = if IN_WALKER.get() { 1 } else { threads };
    let metas = cores::map(
        &entries,
        threads,
        entries.len().div_ceil(threads.max(1)),
        |(_, e)| e.metadata(),
    )?;
    Ok(entries
        .into_iter()
        .zip(metas)
        .map(|((name, _), meta)| (name, meta))
        .collect())
}

thread_local! {
    /// Set on the threads of a parallel walk, whose own walks stay on their thread.
    static IN_WALKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn matches_or_parent(p: &Pattern, rel: &str) -> bool {
    if p.matches(rel) {
        return true;
    }
    let mut acc = String::new();
    for (i, c) in rel.split('/').enumerate() {
        if i > 0 {
            acc.push('/');
        }
        acc.push_str(c);
        if acc.len() < rel.len() && p.matches(&acc) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parallel walk gives exactly the serial walk's entries, in its order, with excluded
    /// subtrees and directories kept only as parents handled the same way.
    #[test]
    fn a_parallel_walk_equals_the_serial_one() {
        let t = tempfile::tempdir().unwrap();
        for d in ["a", "b/x", "b/y/z", "c", "skip/deep", "keep/inner", "e"] {
            fs::create_dir_all(t.path().join(d)).unwrap();
        }
        for f in [
            "top.txt",
            "a/1",
            "a/2",
            "b/x/3",
            "b/y/z/4",
            "b/y/5",
            "skip/deep/6",
            "keep/inner/7",
            "keep/8.log",
            "e/9",
        ] {
            fs::write(t.path().join(f), f).unwrap();
        }
        let src = SourceRoot::Dir(t.path());
        let sel = Selector {
            cmd: "COPY",
            src: &src,
            exclude: IgnoreRules::new(&["skip", "**/*.log", "e/9"]).unwrap(),
            parents: false,
        };
        let walk = |serial: bool| {
            IN_WALKER.set(serial);
            let mut out = Vec::new();
            sel.walk(t.path(), Path::new(""), None, &mut out).unwrap();
            IN_WALKER.set(false);
            out.into_iter()
                .map(|e| e.rel.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        };
        let serial = walk(true);
        assert_eq!(
            serial,
            [
                "a",
                "a/1",
                "a/2",
                "b",
                "b/x",
                "b/x/3",
                "b/y",
                "b/y/5",
                "b/y/z",
                "b/y/z/4",
                "c",
                "e",
                "keep",
                "keep/inner",
                "keep/inner/7",
                "top.txt"
            ]
        );
        if cores::available() > 1 {
            assert_eq!(walk(false), serial);
        }
    }

    #[test]
    fn large_directories_are_stat_ed_completely_on_several_threads() {
        let t = tempfile::tempdir().unwrap();
        let n = PARALLEL_STAT_MIN * 3 + 7;
        for i in 0..n {
            fs::write(t.path().join(format!("f{i:05}")), vec![b'x'; i % 13]).unwrap();
        }
        fs::create_dir(t.path().join("sub")).unwrap();
        let mut got = stat_children(t.path()).unwrap();
        got.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got.len(), n + 1);
        for (i, (name, meta)) in got.iter().take(n).enumerate() {
            assert_eq!(name.to_str(), Some(format!("f{i:05}").as_str()));
            assert_eq!(meta.len(), (i % 13) as u64);
        }
        assert!(got[n].1.is_dir());
    }
}
