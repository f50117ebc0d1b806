//! COPY flags and forms: `--parents` (with the `/./` pivot and globs), `--exclude`, heredocs.
//! Needs root (COPY chowns to root).

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use cairn_build::context::BuildContext;
use cairn_build::copy::{inputs_digest, CopyError, SourceRoot};
use cairn_dockerfile::{Chmod, Copy, Heredoc};
use common::{apply_in, copy, files, request, write, Dirs};

fn fx() -> Dirs {
    let f = Dirs::new();
    for p in [
        "a/b/c.txt",
        "a/d.txt",
        "a/b/e.go",
        "x/y/z.txt",
        "x/y/skip/s.go",
        "top.txt",
        "top.go",
    ] {
        write(&f.ctx.join(p), p);
    }
    f
}

fn run(f: &Dirs, c: &Copy) -> Result<(), CopyError> {
    apply_in(&f.ctx, c, "/", &f.rootfs).map(|_| ())
}

#[test]
fn parents_keeps_paths_from_the_root_or_pivot() {
    let f = fx();
    let mut c = copy(&["a/b/c.txt", "x/y"], "/p/");
    c.parents = true;
    run(&f, &c).unwrap();
    assert_eq!(
        files(&f.rootfs.join("p")),
        vec!["a/b/c.txt", "x/y/skip/s.go", "x/y/z.txt"]
    );
    let mut c = copy(&["./a/./b/c.txt"], "/q/");
    c.parents = true;
    run(&f, &c).unwrap();
    assert_eq!(files(&f.rootfs.join("q")), vec!["b/c.txt"]);
    let mut c = copy(&["*/b/*.txt", "*/y/*.txt"], "/r/");
    c.parents = true;
    run(&f, &c).unwrap();
    assert_eq!(files(&f.rootfs.join("r")), vec!["a/b/c.txt", "x/y/z.txt"]);
    // Without --parents the same glob flattens.
    run(&f, &copy(&["*/b/*.txt", "*/y/*.txt"], "/s/")).unwrap();
    assert_eq!(files(&f.rootfs.join("s")), vec!["c.txt", "z.txt"]);
    let mut c = copy(&["nope/x.txt"], "/t/");
    c.parents = true;
    assert!(matches!(run(&f, &c), Err(CopyError::NotInContext { .. })));
}

#[test]
fn exclude_drops_matching_entries() {
    let f = fx();
    let mut c = copy(&["."], "/e/");
    c.exclude = vec!["**/*.go".into(), "x/y/skip".into()];
    run(&f, &c).unwrap();
    assert_eq!(
        files(&f.rootfs.join("e")),
        vec!["a/b/c.txt", "a/d.txt", "top.txt", "x/y/z.txt"]
    );
    // Relative to the source directory, and to glob matches.
    let mut c = copy(&["a", "top*"], "/f/");
    c.exclude = vec!["*.txt".into()];
    run(&f, &c).unwrap();
    assert_eq!(
        files(&f.rootfs.join("f")),
        vec!["b/c.txt", "b/e.go", "top.go"]
    );
    // Exceptions re-include.
    let mut c = copy(&["."], "/g/");
    c.exclude = vec![
        "**/*.txt".into(),
        "!a/d.txt".into(),
        "x".into(),
        "top.go".into(),
        "a/b".into(),
    ];
    run(&f, &c).unwrap();
    assert_eq!(files(&f.rootfs.join("g")), vec!["a/d.txt"]);
    // The excluded file does not count in the digest.
    let ctx = BuildContext::open(&f.ctx, None).unwrap();
    let mut c = copy(&["."], "/h/");
    c.exclude = vec!["top.txt".into()];
    let req = request(&c, "/");
    let d1 = inputs_digest(&req, &SourceRoot::Context(&ctx)).unwrap();
    fs::write(f.ctx.join("top.txt"), "changed").unwrap();
    assert_eq!(inputs_digest(&req, &SourceRoot::Context(&ctx)).unwrap(), d1);
}

fn doc(name: &str, content: &str) -> Heredoc {
    Heredoc {
        name: name.into(),
        content: content.into(),
        quoted: false,
        strip_tabs: false,
    }
}

#[test]
fn heredocs_become_files() {
    let f = fx();
    let mut c = copy(&[], "/etc/app/");
    c.heredocs = vec![doc("a.txt", "alpha\n"), doc("b.txt", "beta\n")];
    run(&f, &c).unwrap();
    assert_eq!(
        fs::read_to_string(f.rootfs.join("etc/app/a.txt")).unwrap(),
        "alpha\n"
    );
    assert_eq!(
        fs::read_to_string(f.rootfs.join("etc/app/b.txt")).unwrap(),
        "beta\n"
    );
    let m = fs::metadata(f.rootfs.join("etc/app/a.txt")).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o644);
    assert_eq!((m.uid(), m.gid()), (0, 0));
    // One heredoc to a file path, with --chmod.
    let mut c = copy(&[], "/usr/local/bin/hello");
    c.heredocs = vec![doc("EOF", "#!/bin/sh\necho hi\n")];
    c.chmod = Some(Chmod::Octal(0o755));
    run(&f, &c).unwrap();
    let p = f.rootfs.join("usr/local/bin/hello");
    assert_eq!(fs::read_to_string(&p).unwrap(), "#!/bin/sh\necho hi\n");
    assert_eq!(
        fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    // Several heredocs need a directory destination.
    let mut c = copy(&[], "/one");
    c.heredocs = vec![doc("a", "1"), doc("b", "2")];
    assert!(matches!(run(&f, &c), Err(CopyError::DestNotDir { .. })));
}
