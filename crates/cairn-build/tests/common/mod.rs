//! Helpers shared by cairn-build's COPY/ADD and build-context tests: instructions as the frontend
//! hands them over, a temp dir with a context and a rootfs, and a listing of what a COPY wrote.
//!
//! Each test file that says `mod common;` compiles its own copy, and uses only part of it.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use cairn_build::context::BuildContext;
use cairn_build::copy::{apply, CopyError, CopyRequest, CopyStats, SourceRoot};
use cairn_dockerfile::Copy;

/// `COPY sources... dest` with no flags.
pub fn copy(sources: &[&str], dest: &str) -> Copy {
    Copy {
        add: false,
        from: None,
        sources: sources.iter().map(|s| s.to_string()).collect(),
        heredocs: Vec::new(),
        dest: dest.to_string(),
        chown: None,
        chmod: None,
        link: false,
        parents: false,
        exclude: Vec::new(),
        checksum: None,
        keep_git_dir: false,
        unpack: None,
    }
}

/// `ADD sources... dest` with no flags.
pub fn add(sources: &[&str], dest: &str) -> Copy {
    Copy {
        add: true,
        ..copy(sources, dest)
    }
}

/// A request for `copy` at `workdir`, owner kept as the source has it.
pub fn request<'a>(copy: &'a Copy, workdir: &'a str) -> CopyRequest<'a> {
    CopyRequest {
        copy,
        workdir,
        owner: None,
    }
}

/// Opens `ctx_dir` as the build context and applies `c` (at `workdir`) onto `rootfs`.
pub fn apply_in(
    ctx_dir: &Path,
    c: &Copy,
    workdir: &str,
    rootfs: &Path,
) -> Result<CopyStats, CopyError> {
    let ctx = BuildContext::open(ctx_dir, None).unwrap();
    apply(&request(c, workdir), &SourceRoot::Context(&ctx), rootfs)
}

/// Writes `content` to `p`, making its parent directories.
pub fn write(p: &Path, content: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

/// Every file (not directory) under `root`, relative, sorted; none when `root` is missing.
pub fn files(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    if root.exists() {
        walk(root, root, &mut out);
    }
    out.sort();
    out
}

/// A temp dir with an empty context directory (`ctx`) and an empty rootfs (`rootfs`).
pub struct Dirs {
    pub tmp: tempfile::TempDir,
    pub ctx: PathBuf,
    pub rootfs: PathBuf,
}

impl Dirs {
    pub fn new() -> Dirs {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path().join("ctx");
        let rootfs = tmp.path().join("rootfs");
        fs::create_dir_all(&ctx).unwrap();
        fs::create_dir_all(&rootfs).unwrap();
        Dirs { tmp, ctx, rootfs }
    }

    /// The temp dir holding `ctx` and `rootfs`.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }
}
