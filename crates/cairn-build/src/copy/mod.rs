//! COPY and ADD: select sources (context, a stage's or image's rootfs), compute the digest of
//! exactly what was selected (the step's cache input), and apply them onto a stage's rootfs.
//!
//! CONTRACT (the engine calls these; add freely, change only with the callers):
//! ```text
//! enum SourceRoot<'a> { Context(&'a BuildContext), Dir(&'a Path) /* rootfs of a stage or image */ }
//! struct CopyRequest<'a> { copy: &'a cairn_dockerfile::Copy, workdir: &'a str,
//!                          owner: Option<(u32, u32)> /* --chown resolved by the caller */ }
//! inputs_digest(&CopyRequest, &SourceRoot) -> Result<String>   // sha256 over the selected files'
//!     // paths, types, modes, owners (for Dir sources), link targets and contents; never mtimes
//! apply(&CopyRequest, &SourceRoot, dest_root: &Path /* the stage's merged rootfs */) -> Result<CopyStats>
//! ```
//! Added:
//! ```text
//! resolve_chown(rootfs: &Path, spec: &str) -> Result<(u32, u32)>  // --chown via the stage's /etc/passwd
//! resolve_in_root(root, path, follow_final) / mkdir_all_in_root(root, path, owner)
//! archive::{sniff, decompress, is_archive, unpack}  // also used for a context tar
//! apply_pooled(&CopyRequest, &SourceRoot, dest_root, Option<&FilePool>) -> Result<(CopyStats, PoolOps)>
//!     // apply, big context files planned against the store's file pool; the caller runs the
//!     // ops on the overlay upper dir: PoolOps::apply(merged, upper, &FilePool)
//! ```
//!
//! Files: `select` (what a step takes), `digest` (its cache input), `write` (the copier),
//! `pool` (big files linked from the store's file pool), `dest` (paths confined to a root),
//! `chmod`, `chown`, `archive`, `url`, `git`, `error`.
//!
//! Semantics follow BuildKit (dockerfile2llb + fsutil copy), with these notes:
//! - Context files are owned by root in the image and keep their permission bits; `--from`
//!   sources keep owner and bits; `--chown` sets both on every copied entry and on the
//!   destination directories the copy creates; `--chmod` (octal or symbolic) applies to every
//!   copied file and directory.
//! - Several sources (or a glob matching several) need a destination ending in `/` (as docker)
//!   unless it already is a directory (where BuildKit and docker agree on the result).
//! - A directory copy's destination is created like a missing parent (0755, `--chown` owner);
//!   it does not take the source directory's mode (BuildKit). Directories below it do.
//! - A symlink already in the destination where the copy needs a directory (merged /usr:
//!   `lib -> usr/lib`) is followed inside the root; BuildKit refuses that case.
//! - Heredoc files get mode 0644 (before `--chmod`) and mtime 0, so they are reproducible.
//! - `--link` builds the same filesystem result; it only changes how BuildKit stacks layers, so
//!   it is accepted and ignored here.
//! - Nothing is ever written outside `dest_root`: paths are resolved inside it
//!   ([`resolve_in_root`]), so `/link -> /etc` in the image means the image's `/etc`.
//! - ADD unpacks local tar archives (plain, gzip, bzip2, xz, zstd; detected by content) unless
//!   `--unpack=false`; URLs are fetched (mode 0600, mtime from `Last-Modified`), never unpacked,
//!   checked against `--checksum`. Git URLs (`ADD https://host/repo.git#ref:subdir /dst`) are
//!   checked out with the `git` command (network transports only) and copied without `.git`
//!   unless `--keep-git-dir`.

#![deny(missing_docs)]

pub mod archive;
pub mod chmod;
pub mod chown;
mod cores;
pub mod dest;
mod digest;
pub mod error;
pub mod git;
pub mod pool;
mod select;
pub mod url;
mod write;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use cairn_dockerfile::Copy;
use cairn_store::FilePool;

use crate::context::pattern::go_clean;
use crate::context::{BuildContext, IgnoreRules};
pub use chmod::ModeChange;
pub use chown::resolve_chown;
pub use dest::{mkdir_all_in_root, resolve_in_root};
use error::io_err;
pub use error::{CopyError, Result};
use pool::{Planner, PoolOps};
use select::{Item, Selector};
use write::{Owners, Writer};

/// Where the sources of a COPY/ADD are read from.
#[derive(Debug, Clone, Copy)]
pub enum SourceRoot<'a> {
    /// The build context (`.dockerignore` applies; files land owned by root).
    Context(&'a BuildContext),
    /// The rootfs of a stage or image (`--from`): owners and modes are kept.
    Dir(&'a Path),
}

/// One COPY/ADD to run.
#[derive(Debug, Clone, Copy)]
pub struct CopyRequest<'a> {
    /// The instruction, already expanded by the frontend.
    pub copy: &'a Copy,
    /// The stage's WORKDIR at this step (a relative destination is taken from it).
    pub workdir: &'a str,
    /// `--chown` resolved by the caller (see [`resolve_chown`]).
    pub owner: Option<(u32, u32)>,
}

/// What an [`apply`] wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CopyStats {
    /// Regular files written (hardlinks excluded).
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hardlinks created to files copied earlier in the same step.
    pub hardlinks: u64,
    /// Devices, fifos and sockets.
    pub other: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

impl CopyStats {
    /// Adds `o`'s counts to these.
    pub fn add(&mut self, o: &CopyStats) {
        self.files += o.files;
        self.dirs += o.dirs;
        self.symlinks += o.symlinks;
        self.hardlinks += o.hardlinks;
        self.other += o.other;
        self.bytes += o.bytes;
    }
}

pub(crate) fn cmd_name(c: &Copy) -> &'static str {
    if c.add {
        "ADD"
    } else {
        "COPY"
    }
}

/// The destination of an instruction, as the image sees it.
struct Dest {
    /// Absolute, cleaned.
    path: PathBuf,
    /// Written as a directory (`/x/`, `.`, empty).
    is_dir: bool,
}

fn dest_of(req: &CopyRequest) -> Dest {
    let d = req.copy.dest.as_str();
    let is_dir = d.is_empty() || d == "." || d.ends_with('/') || d.ends_with("/.");
    let joined = if d.starts_with('/') {
        d.to_string()
    } else {
        format!("/{}/{}", req.workdir, d)
    };
    Dest {
        path: PathBuf::from(go_clean(&joined)),
        is_dir,
    }
}

fn select<'a>(req: &CopyRequest, src: &'a SourceRoot<'a>) -> Result<Vec<Item>> {
    let cmd = cmd_name(req.copy);
    let exclude =
        IgnoreRules::new(&req.copy.exclude).map_err(|source| CopyError::Pattern { cmd, source })?;
    let sel = Selector {
        cmd,
        src,
        exclude,
        parents: req.copy.parents,
    };
    sel.select(req.copy)
}

/// The cache input of the step: `sha256:<hex>` over what it selects (see the module docs of
/// `digest`): paths, types, modes, owners (for `--from` sources), link targets and contents,
/// never mtimes, plus the flags that change the result. ADD of a URL without `--checksum`
/// downloads it to hash it.
pub fn inputs_digest(req: &CopyRequest, src: &SourceRoot) -> Result<String> {
    let items = select(req, src)?;
    digest::digest(req, src, &items)
}

/// Runs the COPY/ADD onto `dest_root` (the stage's rootfs).
pub fn apply(req: &CopyRequest, src: &SourceRoot, dest_root: &Path) -> Result<CopyStats> {
    apply_pooled(req, src, dest_root, None, None).map(|(stats, _)| stats)
}

/// Asked before each file a copy writes: `true` stops it with [`CopyError::Cancelled`] (a
/// build interrupted during a big COPY does not wait for the rest).
pub type Cancel<'a> = &'a (dyn Fn() -> bool + Sync);

/// [`apply`], with the big files of a COPY from the context planned against `pool` (see
/// [`pool`]): the ops returned must be run on the upper dir of the overlay mounted at
/// `dest_root` before the change is read, or the layer holds empty placeholders. ADD never uses
/// the pool (what it unpacks is written outside the copier, which tracks what it replaces).
/// `cancel` may stop the copy between files.
pub fn apply_pooled(
    req: &CopyRequest,
    src: &SourceRoot,
    dest_root: &Path,
    pool: Option<&FilePool>,
    cancel: Option<Cancel<'_>>,
) -> Result<(CopyStats, PoolOps)> {
    let c = req.copy;
    let cmd = cmd_name(c);
    let mode = match &c.chmod {
        Some(m) => Some(ModeChange::parse(m).map_err(|message| CopyError::Invalid {
            cmd,
            message: format!("--chmod: {message}"),
        })?),
        None => None,
    };
    let items = select(req, src)?;
    // `--checksum` is a content digest for URLs and a commit for git sources.
    let checksum = match &c.checksum {
        Some(s) if !items.iter().any(|i| matches!(i, Item::Git { .. })) => {
            Some(url::Checksum::parse(s)?)
        }
        _ => None,
    };
    let dest = dest_of(req);
    // Docker requires a trailing `/` here; BuildKit copies into the path as it is. Both agree
    // when the destination already is a directory, so only the other case is refused (BuildKit
    // would leave the last source as a file there, which is never what was meant).
    if items.len() > 1
        && !dest.is_dir
        && !c.parents
        && !resolve_in_root(dest_root, &dest.path, true).is_ok_and(|p| p.is_dir())
    {
        return Err(CopyError::DestNotDir {
            cmd,
            dest: c.dest.clone(),
        });
    }
    let owners = match (req.owner, src) {
        (Some((u, g)), _) => Owners::Fixed(u, g),
        (None, SourceRoot::Context(_)) => Owners::Fixed(0, 0),
        (None, SourceRoot::Dir(_)) => Owners::Keep,
    };
    let created_owner = req.owner.unwrap_or((0, 0));
    let unpack_owner = match req.owner {
        Some((u, g)) => archive::Owner::Fixed(u, g),
        None => archive::Owner::Archive,
    };
    let root = dest_root;
    let unpack = c.add && c.unpack != Some(false);
    let mut w = Writer::new(cmd, root, owners, mode.as_ref()).with_cancel(cancel);
    if let (Some(pool), SourceRoot::Context(ctx), false) = (pool, src, c.add) {
        w.pool = Some(Planner::new(pool, ctx.memo()));
    }
    let dir_at = |p: &Path| mkdir_all_in_root(root, p, created_owner).map_err(io_err(cmd, p));
    // Where a single non-directory lands: inside a directory destination, else at the path
    // (inside it if it already is a directory).
    let file_target = |name: &str| -> Result<PathBuf> {
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return Err(CopyError::Invalid {
                cmd,
                message: format!("invalid file name {name:?}"),
            });
        }
        if dest.is_dir {
            return Ok(dir_at(&dest.path)?.join(name));
        }
        if let Some(parent) = dest.path.parent() {
            dir_at(parent)?;
        }
        let t = resolve_in_root(root, &dest.path, true).map_err(io_err(cmd, &dest.path))?;
        if fs::symlink_metadata(&t).is_ok_and(|m| m.is_dir()) {
            return Ok(t.join(name));
        }
        // A dangling symlink at the destination leads to a path whose parents may be missing
        // (BuildKit creates them too).
        if let Some(rel) = t.parent().and_then(|p| p.strip_prefix(root).ok()) {
            dir_at(rel)?;
        }
        Ok(t)
    };
    for item in &items {
        match item {
            Item::File {
                display,
                name,
                path,
                meta,
            } => {
                if unpack
                    && meta.is_file()
                    && archive::is_archive(path).map_err(io_err(cmd, path))?
                {
                    let d = dir_at(&dest.path)?;
                    let f = fs::File::open(path).map_err(io_err(cmd, path))?;
                    let stream = archive::decompress(f).map_err(io_err(cmd, path))?;
                    archive::unpack(stream, root, &d, unpack_owner, &mut w.stats).map_err(
                        |message| CopyError::Archive {
                            archive: display.clone(),
                            message,
                        },
                    )?;
                    continue;
                }
                let target = file_target(&name.to_string_lossy())?;
                w.node(path, meta, &target)?;
            }
            Item::Inline { name, content } => {
                let target = file_target(name)?;
                // Fixed mtime: an inline file has no source to take one from, and the image
                // must not depend on when it was built.
                w.inline(&mut content.as_slice(), &target, 0o644, 0)?;
            }
            Item::Url { url: u } => {
                let target = file_target(&url::file_name(u))?;
                let fetch = url::open(u)?;
                let mut body = url::Hashing::new(fetch.body, checksum.as_ref());
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                w.inline(&mut body, &target, 0o600, fetch.mtime.unwrap_or(now))?;
                if let Some(want) = &checksum {
                    if let Err(e) = url::verify(u, want, &body.finish().1) {
                        let _ = fs::remove_file(&target);
                        return Err(e);
                    }
                }
            }
            Item::Git { src: g } => {
                let (_tmp, repo) = git::checkout(g, c.keep_git_dir, c.checksum.as_deref())?;
                let root_src = SourceRoot::Dir(&repo);
                let sel = Selector {
                    cmd,
                    src: &root_src,
                    exclude: IgnoreRules::new(&c.exclude)
                        .map_err(|source| CopyError::Pattern { cmd, source })?,
                    parents: false,
                };
                let shown = format!("{}#{}", g.url, g.subdir);
                match sel.item_at(Path::new(&g.subdir), &shown)? {
                    Some(Item::Dir {
                        path,
                        meta,
                        entries,
                    }) => {
                        let target = dir_at(&dest.path)?;
                        // A checkout's files belong to whoever ran git: root (or --chown) in
                        // the image, as for context files.
                        let mut gw = Writer::new(
                            cmd,
                            root,
                            Owners::Fixed(created_owner.0, created_owner.1),
                            mode.as_ref(),
                        )
                        .with_cancel(cancel);
                        gw.dir(&path, &meta, &entries, &target)?;
                        w.stats.add(&gw.done()?);
                    }
                    _ => {
                        return Err(CopyError::Fetch {
                            url: g.url.clone(),
                            message: format!("{:?} is not a directory of the repository", g.subdir),
                        })
                    }
                }
            }
            Item::Dir {
                path,
                meta,
                entries,
            } => {
                // BuildKit creates the destination of a directory copy like any missing parent
                // (0755, `--chown` owner), so it does not take the source directory's mode.
                let target = dir_at(&dest.path)?;
                w.dir(path, meta, entries, &target)?;
            }
        }
    }
    let ops = w.pool.take().map(|p| p.finish(cmd)).unwrap_or_default();
    Ok((w.done()?, ops))
}
