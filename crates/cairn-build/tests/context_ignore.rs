//! The build context as COPY sees it: `.dockerignore` rules applied to real trees, and a context
//! sent as a tar. Needs root (COPY chowns to root).

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use cairn_build::context::{BuildContext, ContextError};
use cairn_build::copy::{apply, inputs_digest, CopyError, SourceRoot};
use common::{copy, files, request, write};

fn copy_all(ctx: &BuildContext, out: &Path) {
    let c = copy(&["."], "/");
    let req = request(&c, "/");
    apply(&req, &SourceRoot::Context(ctx), out).unwrap();
}

fn tree(dir: &Path) {
    for f in [
        "Dockerfile",
        "main.go",
        "README.md",
        "CHANGES.md",
        "docs/guide.md",
        "node_modules/x/index.js",
        "logs/a.log",
        "src/deep/debug.log",
        "src/deep/code.go",
        "vendor/drop.go",
        "vendor/keep/kept.go",
        ".git/HEAD",
    ] {
        write(&dir.join(f), f);
    }
}

#[test]
fn copy_dot_honours_dockerignore() {
    let t = tempfile::tempdir().unwrap();
    let ctx_dir = t.path().join("ctx");
    tree(&ctx_dir);
    write(
        &ctx_dir.join(".dockerignore"),
        "# build junk\n.git\nnode_modules/\n*.md\n!README.md\n**/*.log\nvendor\n!vendor/keep\n",
    );
    let ctx = BuildContext::open(&ctx_dir, None).unwrap();
    let out = t.path().join("out");
    fs::create_dir(&out).unwrap();
    copy_all(&ctx, &out);
    assert_eq!(
        files(&out),
        vec![
            ".dockerignore",
            "Dockerfile",
            "README.md",
            "docs/guide.md",
            "main.go",
            "src/deep/code.go",
            "vendor/keep/kept.go",
        ]
    );
    // The ignored file is not found by name either, and its error says why it may be missing.
    let c = copy(&["CHANGES.md"], "/x/");
    let req = request(&c, "/");
    let e = apply(&req, &SourceRoot::Context(&ctx), &out).unwrap_err();
    assert!(matches!(e, CopyError::NotInContext { .. }), "{e}");
    // Globs do not see ignored files.
    let c = copy(&["*.md"], "/md/");
    let req = request(&c, "/");
    apply(&req, &SourceRoot::Context(&ctx), &out).unwrap();
    assert_eq!(files(&out.join("md")), vec!["README.md"]);
}

#[test]
fn ignored_files_do_not_change_the_digest() {
    let t = tempfile::tempdir().unwrap();
    let ctx_dir = t.path().join("ctx");
    tree(&ctx_dir);
    write(&ctx_dir.join(".dockerignore"), "*.md\nlogs\n");
    let ctx = BuildContext::open(&ctx_dir, None).unwrap();
    let c = copy(&["."], "/app/");
    let req = request(&c, "/");
    let d1 = inputs_digest(&req, &SourceRoot::Context(&ctx)).unwrap();
    write(&ctx_dir.join("CHANGES.md"), "edited");
    write(&ctx_dir.join("logs/new.log"), "more");
    assert_eq!(inputs_digest(&req, &SourceRoot::Context(&ctx)).unwrap(), d1);
    write(&ctx_dir.join("main.go"), "edited");
    assert_ne!(inputs_digest(&req, &SourceRoot::Context(&ctx)).unwrap(), d1);
}

#[test]
fn dockerfile_ignored_is_not_copied() {
    let t = tempfile::tempdir().unwrap();
    let ctx_dir = t.path().join("ctx");
    tree(&ctx_dir);
    write(
        &ctx_dir.join(".dockerignore"),
        "Dockerfile\n.dockerignore\n*\n!main.go\n",
    );
    let ctx = BuildContext::open(&ctx_dir, Some(&ctx_dir.join("Dockerfile"))).unwrap();
    let out = t.path().join("out");
    fs::create_dir(&out).unwrap();
    copy_all(&ctx, &out);
    assert_eq!(files(&out), vec!["main.go"]);
}

fn tar_of(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        match kind {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                h.set_size(0);
                h.set_link_name(data).unwrap();
                b.append_data(&mut h, name, &[][..]).unwrap();
            }
            _ => {
                h.set_size(data.len() as u64);
                // `append_data` refuses `..`; write the name into the header by hand for the
                // escape tests.
                let bytes = name.as_bytes();
                h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
                h.set_cksum();
                b.append(&h, data.as_bytes()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

#[test]
fn context_from_tar_gz() {
    let t = tempfile::tempdir().unwrap();
    let raw = tar_of(&[
        ("Dockerfile", tar::EntryType::Regular, "FROM scratch\n"),
        ("app/main.go", tar::EntryType::Regular, "package main"),
        (".dockerignore", tar::EntryType::Regular, "secret\n"),
        ("secret", tar::EntryType::Regular, "pw"),
    ]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    let scratch = t.path().join("scratch");
    let ctx = BuildContext::from_tar(&gz.finish().unwrap()[..], &scratch).unwrap();
    assert_eq!(
        fs::read_to_string(ctx.root().join("app/main.go")).unwrap(),
        "package main"
    );
    assert!(ctx.is_ignored(Path::new("secret")));
    assert!(!ctx.is_ignored(Path::new("app/main.go")));
}

#[test]
fn context_tar_cannot_escape_the_scratch_dir() {
    let t = tempfile::tempdir().unwrap();
    // `..` names are refused.
    let raw = tar_of(&[("../evil", tar::EntryType::Regular, "x")]);
    let scratch = t.path().join("s1");
    let e = BuildContext::from_tar(&raw[..], &scratch).unwrap_err();
    assert!(matches!(e, ContextError::Tar(_)), "{e}");
    assert!(!t.path().join("evil").exists());
    // A symlink to an absolute host directory, then a file through it: lands inside scratch.
    let host_dir: PathBuf = t.path().join("host");
    fs::create_dir(&host_dir).unwrap();
    let raw = tar_of(&[
        ("link", tar::EntryType::Symlink, host_dir.to_str().unwrap()),
        ("link/pwned", tar::EntryType::Regular, "x"),
    ]);
    let scratch = t.path().join("s2");
    let ctx = BuildContext::from_tar(&raw[..], &scratch).unwrap();
    assert!(!host_dir.join("pwned").exists());
    let inside = ctx
        .root()
        .join(host_dir.strip_prefix("/").unwrap())
        .join("pwned");
    assert!(inside.is_file(), "{}", inside.display());
}

#[test]
fn exceptions_reach_into_excluded_directories() {
    let t = tempfile::tempdir().unwrap();
    let ctx_dir = t.path().join("ctx");
    for f in [
        "docs/a/b.md",
        "docs/a/c.txt",
        "docs/top.md",
        "big/x/y.bin",
        "keep.txt",
    ] {
        write(&ctx_dir.join(f), f);
    }
    write(
        &ctx_dir.join(".dockerignore"),
        ".dockerignore\ndocs\n!docs/**/*.md\nbig\n",
    );
    let ctx = BuildContext::open(&ctx_dir, None).unwrap();
    let out = t.path().join("out");
    fs::create_dir(&out).unwrap();
    copy_all(&ctx, &out);
    assert_eq!(files(&out), vec!["docs/a/b.md", "docs/top.md", "keep.txt"]);
}
