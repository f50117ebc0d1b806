//! COPY onto a real rootfs directory: sources from the context and from another rootfs, globs,
//! destinations, owners and modes, symlinks, hardlinks, and the cache digest.
//!
//! Tests that chown (every `apply` does: context files become root-owned) need root; the
//! project's tests run as root (CI too).

mod common;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use cairn_build::context::BuildContext;
use cairn_build::copy::{apply, inputs_digest, CopyError, CopyRequest, SourceRoot};
use cairn_dockerfile::{Chmod, Copy};
use common::{apply_in, copy, request, write, Dirs};

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A context with main.go (mode 0640), go.mod, src/a.txt and src/sub/b.txt; an empty rootfs.
fn fixture() -> Dirs {
    let f = Dirs::new();
    write(&f.ctx.join("main.go"), "package main\n");
    write(&f.ctx.join("go.mod"), "module x\n");
    write(&f.ctx.join("src/a.txt"), "a");
    write(&f.ctx.join("src/sub/b.txt"), "b");
    fs::set_permissions(f.ctx.join("main.go"), fs::Permissions::from_mode(0o640)).unwrap();
    f
}

fn run(f: &Dirs, c: &Copy, workdir: &str) -> Result<cairn_build::copy::CopyStats, CopyError> {
    apply_in(&f.ctx, c, workdir, &f.rootfs)
}

#[test]
fn file_into_directory_and_relative_to_workdir() {
    let f = fixture();
    run(&f, &copy(&["main.go"], "/app/"), "/").unwrap();
    assert_eq!(
        fs::read_to_string(f.rootfs.join("app/main.go")).unwrap(),
        "package main\n"
    );
    assert_eq!(
        mode(&f.rootfs.join("app/main.go")),
        0o640,
        "context mode bits kept"
    );
    assert_eq!(
        mode(&f.rootfs.join("app")),
        0o755,
        "created parents are 0755"
    );
    let m = fs::metadata(f.rootfs.join("app/main.go")).unwrap();
    assert_eq!((m.uid(), m.gid()), (0, 0));

    // Relative destination: from WORKDIR; "." is a directory.
    run(&f, &copy(&["go.mod"], "."), "/work/dir").unwrap();
    assert!(f.rootfs.join("work/dir/go.mod").is_file());
    // No trailing slash, missing: the file is renamed.
    run(&f, &copy(&["go.mod"], "renamed.mod"), "/work").unwrap();
    assert!(f.rootfs.join("work/renamed.mod").is_file());
    // A dangling symlink as the destination: written where it points, inside the rootfs.
    symlink("/opt/tool/real.mod", f.rootfs.join("work/dangling")).unwrap();
    run(&f, &copy(&["go.mod"], "/work/dangling"), "/").unwrap();
    assert!(f.rootfs.join("opt/tool/real.mod").is_file());
    // No trailing slash, existing directory: goes inside.
    run(&f, &copy(&["go.mod"], "/app"), "/").unwrap();
    assert!(f.rootfs.join("app/go.mod").is_file());
}

#[test]
fn directory_contents_not_the_directory() {
    let f = fixture();
    let stats = run(&f, &copy(&["src"], "/dst"), "/").unwrap();
    assert_eq!(fs::read_to_string(f.rootfs.join("dst/a.txt")).unwrap(), "a");
    assert_eq!(
        fs::read_to_string(f.rootfs.join("dst/sub/b.txt")).unwrap(),
        "b"
    );
    assert!(!f.rootfs.join("dst/src").exists());
    assert_eq!(stats.files, 2);
    // `COPY . .` copies the whole context, the Dockerfile-less root included.
    run(&f, &copy(&["."], "."), "/all").unwrap();
    assert!(f.rootfs.join("all/src/sub/b.txt").is_file());
    assert!(f.rootfs.join("all/main.go").is_file());
}

#[test]
fn globs_and_multiple_sources() {
    let f = fixture();
    run(&f, &copy(&["*.go", "go.*", "nomatch*"], "/g/"), "/").unwrap();
    assert!(f.rootfs.join("g/main.go").is_file());
    assert!(f.rootfs.join("g/go.mod").is_file());
    // A glob in a subdirectory; a match that is a directory has its contents copied.
    run(&f, &copy(&["s?c/*"], "/h/"), "/").unwrap();
    assert!(f.rootfs.join("h/a.txt").is_file());
    assert!(
        f.rootfs.join("h/b.txt").is_file(),
        "contents of the matched dir src/sub"
    );

    // Globs that all match nothing copy nothing and make no destination (BuildKit's
    // AllowEmptyWildcard; differential finding 6).
    let stats = run(&f, &copy(&["nomatch*", "none?"], "/x/"), "/").unwrap();
    assert_eq!(stats.files, 0);
    assert!(!f.rootfs.join("x").exists());
    let e = run(&f, &copy(&["main.go", "go.mod"], "/x"), "/").unwrap_err();
    assert!(matches!(e, CopyError::DestNotDir { .. }), "{e}");
    let e = run(&f, &copy(&["*.go", "go.*"], "/y"), "/").unwrap_err();
    assert!(matches!(e, CopyError::DestNotDir { .. }), "{e}");
    // An existing directory is fine without the slash.
    fs::create_dir(f.rootfs.join("y")).unwrap();
    run(&f, &copy(&["*.go", "go.*"], "/y"), "/").unwrap();
    assert!(f.rootfs.join("y/main.go").is_file() && f.rootfs.join("y/go.mod").is_file());
}

#[test]
fn missing_source_names_the_file() {
    let f = fixture();
    let e = run(&f, &copy(&["nothere.go"], "/app/"), "/").unwrap_err();
    assert_eq!(
        e.to_string(),
        "COPY failed: file not found in build context or excluded by .dockerignore: stat nothere.go: file does not exist"
    );
    let e = run(&f, &copy(&["main.go/x"], "/app/"), "/").unwrap_err();
    assert!(matches!(e, CopyError::NotInContext { .. }), "{e}");
    // `..` cannot leave the context: it is taken from the context root.
    write(&f.ctx.join("../outside.txt"), "secret");
    let e = run(&f, &copy(&["../outside.txt"], "/app/"), "/").unwrap_err();
    assert!(matches!(e, CopyError::NotInContext { .. }));
}

#[test]
fn chmod_octal_and_symbolic_apply_to_files_and_dirs() {
    let f = fixture();
    let mut c = copy(&["src"], "/m");
    c.chmod = Some(Chmod::Octal(0o700));
    run(&f, &c, "/").unwrap();
    assert_eq!(mode(&f.rootfs.join("m/a.txt")), 0o700);
    assert_eq!(mode(&f.rootfs.join("m/sub")), 0o700);
    let mut c = copy(&["src"], "/s");
    c.chmod = Some(Chmod::Symbolic("u+x,go-r".into()));
    fs::set_permissions(f.ctx.join("src/a.txt"), fs::Permissions::from_mode(0o644)).unwrap();
    run(&f, &c, "/").unwrap();
    assert_eq!(mode(&f.rootfs.join("s/a.txt")), 0o700);
    let mut c = copy(&["main.go"], "/bad");
    c.chmod = Some(Chmod::Symbolic("q+z".into()));
    assert!(run(&f, &c, "/")
        .unwrap_err()
        .to_string()
        .contains("--chmod"));
}

// Needs root: chown.
#[test]
fn chown_applies_to_entries_and_created_parents() {
    let f = fixture();
    let ctx = BuildContext::open(&f.ctx, None).unwrap();
    let c = copy(&["src"], "/deep/er/");
    let req = CopyRequest {
        copy: &c,
        workdir: "/",
        owner: Some((1000, 1001)),
    };
    apply(&req, &SourceRoot::Context(&ctx), &f.rootfs).unwrap();
    for p in [
        "deep",
        "deep/er",
        "deep/er/a.txt",
        "deep/er/sub",
        "deep/er/sub/b.txt",
    ] {
        let m = fs::symlink_metadata(f.rootfs.join(p)).unwrap();
        assert_eq!((m.uid(), m.gid()), (1000, 1001), "{p}");
    }
}

// Needs root: the source rootfs has files owned by other users.
#[test]
fn from_dir_keeps_owner_and_mode() {
    let f = fixture();
    let stage = f.rootfs.parent().unwrap().join("stage");
    write(&stage.join("usr/bin/tool"), "#!/bin/sh\n");
    // chown first: it clears setuid.
    std::os::unix::fs::lchown(stage.join("usr/bin/tool"), Some(7), Some(8)).unwrap();
    fs::set_permissions(
        stage.join("usr/bin/tool"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    symlink("tool", stage.join("usr/bin/alias")).unwrap();
    fs::hard_link(stage.join("usr/bin/tool"), stage.join("usr/bin/tool2")).unwrap();
    let c = copy(&["/usr/bin"], "/opt/bin");
    let req = request(&c, "/");
    let stats = apply(&req, &SourceRoot::Dir(&stage), &f.rootfs).unwrap();
    let t = f.rootfs.join("opt/bin/tool");
    let m = fs::metadata(&t).unwrap();
    assert_eq!((m.uid(), m.gid(), mode(&t)), (7, 8, 0o4755));
    assert_eq!(
        fs::read_link(f.rootfs.join("opt/bin/alias")).unwrap(),
        Path::new("tool")
    );
    let m2 = fs::metadata(f.rootfs.join("opt/bin/tool2")).unwrap();
    assert_eq!(m.ino(), m2.ino(), "hardlink kept");
    assert_eq!(stats.hardlinks, 1);
    // A missing --from source has its own message.
    let c = copy(&["/nope"], "/x/");
    let req = request(&c, "/");
    let e = apply(&req, &SourceRoot::Dir(&stage), &f.rootfs).unwrap_err();
    assert!(matches!(e, CopyError::NotInSource { .. }));
}

#[test]
fn top_level_symlink_followed_inner_symlinks_copied() {
    let f = fixture();
    symlink("main.go", f.ctx.join("link.go")).unwrap();
    symlink("a.txt", f.ctx.join("src/inner")).unwrap();
    symlink("/etc/passwd", f.ctx.join("abs")).unwrap();
    run(&f, &copy(&["link.go"], "/l/"), "/").unwrap();
    let t = f.rootfs.join("l/link.go");
    assert!(
        fs::symlink_metadata(&t).unwrap().is_file(),
        "target content under the link's name"
    );
    assert_eq!(fs::read_to_string(&t).unwrap(), "package main\n");
    run(&f, &copy(&["src"], "/s"), "/").unwrap();
    assert_eq!(
        fs::read_link(f.rootfs.join("s/inner")).unwrap(),
        Path::new("a.txt")
    );
    // An absolute top-level symlink resolves inside the context, never to the host's /etc.
    let e = run(&f, &copy(&["abs"], "/x/"), "/").unwrap_err();
    assert!(matches!(e, CopyError::NotInContext { .. }), "{e}");
}

#[test]
fn destination_symlinks_never_leave_the_rootfs() {
    let f = fixture();
    // /link -> /etc and /etc2 -> ../../../../etc: both must mean the rootfs's /etc.
    symlink("/etc", f.rootfs.join("link")).unwrap();
    symlink("../../../../../etc", f.rootfs.join("etc2")).unwrap();
    let host_before = fs::read_dir("/etc").unwrap().count();
    run(&f, &copy(&["main.go"], "/link/"), "/").unwrap();
    run(&f, &copy(&["go.mod"], "/etc2/"), "/").unwrap();
    run(&f, &copy(&["src"], "/link/sub/"), "/").unwrap();
    assert!(f.rootfs.join("etc/main.go").is_file());
    assert!(f.rootfs.join("etc/go.mod").is_file());
    assert!(f.rootfs.join("etc/sub/a.txt").is_file());
    assert!(!Path::new("/etc/main.go").exists());
    assert!(!Path::new("/etc/sub/a.txt").exists());
    assert_eq!(fs::read_dir("/etc").unwrap().count(), host_before);
    // A symlink at a file's final position is replaced, not written through.
    let host_file = f.rootfs.parent().unwrap().join("host-file");
    fs::write(&host_file, "host").unwrap();
    fs::remove_file(f.rootfs.join("etc/sub/a.txt")).unwrap();
    symlink(&host_file, f.rootfs.join("etc/sub/a.txt")).unwrap();
    run(&f, &copy(&["src"], "/etc/sub/"), "/").unwrap();
    assert!(fs::symlink_metadata(f.rootfs.join("etc/sub/a.txt"))
        .unwrap()
        .is_file());
    assert_eq!(fs::read_to_string(&host_file).unwrap(), "host");
}

#[test]
fn digest_covers_content_not_mtime() {
    let f = fixture();
    let ctx = BuildContext::open(&f.ctx, None).unwrap();
    let c = copy(&["src", "*.go"], "/app/");
    let req = request(&c, "/");
    let d1 = inputs_digest(&req, &SourceRoot::Context(&ctx)).unwrap();
    assert!(d1.starts_with("sha256:") && d1.len() == 71);
    // Touching (same content) does not change it.
    let later = fs::File::options()
        .write(true)
        .open(f.ctx.join("src/a.txt"))
        .unwrap();
    later
        .set_modified(std::time::SystemTime::UNIX_EPOCH)
        .unwrap();
    assert_eq!(inputs_digest(&req, &SourceRoot::Context(&ctx)).unwrap(), d1);
    // A file the step does not select does not change it.
    write(&f.ctx.join("README.md"), "docs");
    assert_eq!(inputs_digest(&req, &SourceRoot::Context(&ctx)).unwrap(), d1);
    // Content, mode and flags do.
    write(&f.ctx.join("src/sub/b.txt"), "B");
    let d2 = inputs_digest(&req, &SourceRoot::Context(&ctx)).unwrap();
    assert_ne!(d2, d1);
    fs::set_permissions(f.ctx.join("main.go"), fs::Permissions::from_mode(0o755)).unwrap();
    let d3 = inputs_digest(&req, &SourceRoot::Context(&ctx)).unwrap();
    assert_ne!(d3, d2);
    let req2 = CopyRequest {
        owner: Some((1, 1)),
        ..req
    };
    assert_ne!(
        inputs_digest(&req2, &SourceRoot::Context(&ctx)).unwrap(),
        d3
    );
}

#[test]
fn directory_copy_destination_is_created_like_a_parent() {
    let f = fixture();
    fs::set_permissions(f.ctx.join("src"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(f.ctx.join("src/sub"), fs::Permissions::from_mode(0o750)).unwrap();
    run(&f, &copy(&["src"], "/newdir"), "/").unwrap();
    // As BuildKit: the destination is made like any missing parent, nested dirs keep their mode.
    assert_eq!(mode(&f.rootfs.join("newdir")), 0o755);
    assert_eq!(mode(&f.rootfs.join("newdir/sub")), 0o750);
    // An existing nested directory takes the source's mode; the existing top one keeps its own.
    fs::create_dir_all(f.rootfs.join("old/sub")).unwrap();
    fs::set_permissions(f.rootfs.join("old"), fs::Permissions::from_mode(0o711)).unwrap();
    fs::set_permissions(f.rootfs.join("old/sub"), fs::Permissions::from_mode(0o777)).unwrap();
    run(&f, &copy(&["src"], "/old"), "/").unwrap();
    assert_eq!(mode(&f.rootfs.join("old")), 0o711);
    assert_eq!(mode(&f.rootfs.join("old/sub")), 0o750);
    // A file where the directory should go is an error naming it.
    fs::write(f.rootfs.join("afile"), "x").unwrap();
    let e = run(&f, &copy(&["src"], "/afile"), "/").unwrap_err();
    assert!(e.to_string().contains("/afile"), "{e}");
}

#[test]
fn xattrs_are_kept_when_the_filesystem_allows() {
    let f = fixture();
    let src = f.ctx.join("main.go");
    if rustix::fs::lsetxattr(&src, "user.cairn", b"v1", rustix::fs::XattrFlags::empty()).is_err() {
        eprintln!("user xattrs unsupported here; nothing to check");
        return;
    }
    run(&f, &copy(&["main.go"], "/x/"), "/").unwrap();
    let mut buf = [0u8; 16];
    let n = rustix::fs::lgetxattr(f.rootfs.join("x/main.go"), "user.cairn", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"v1");
}

#[test]
fn merged_usr_symlinks_in_the_destination_are_followed_inside_the_root() {
    let f = fixture();
    // Debian's merged /usr: /lib -> usr/lib. A source tree with lib/ lands in /usr/lib.
    fs::create_dir_all(f.rootfs.join("usr/lib")).unwrap();
    symlink("usr/lib", f.rootfs.join("lib")).unwrap();
    write(&f.ctx.join("tree/lib/libx.so"), "elf");
    run(&f, &copy(&["tree"], "/"), "/").unwrap();
    assert!(fs::symlink_metadata(f.rootfs.join("lib"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::read_to_string(f.rootfs.join("usr/lib/libx.so")).unwrap(),
        "elf"
    );
    // The same with an absolute link to the host's /usr/lib: still the rootfs's.
    fs::remove_file(f.rootfs.join("lib")).unwrap();
    symlink("/usr/lib", f.rootfs.join("lib")).unwrap();
    write(&f.ctx.join("tree/lib/liby.so"), "elf2");
    run(&f, &copy(&["tree"], "/"), "/").unwrap();
    assert_eq!(
        fs::read_to_string(f.rootfs.join("usr/lib/liby.so")).unwrap(),
        "elf2"
    );
    assert!(!Path::new("/usr/lib/liby.so").exists());
}

/// Two source paths that land on one target through a destination symlink (`lib/x` and
/// `usr/lib/x` with `/lib -> usr/lib`): the later one wins, however many files the copy has.
#[test]
fn the_later_of_two_entries_with_one_target_wins_in_a_big_copy() {
    let f = Dirs::new();
    fs::create_dir_all(f.rootfs.join("usr/lib")).unwrap();
    symlink("usr/lib", f.rootfs.join("lib")).unwrap();
    for i in 0..400 {
        write(&f.ctx.join(format!("tree/lib/f{i:03}")), "from lib/");
        write(
            &f.ctx.join(format!("tree/usr/lib/f{i:03}")),
            "from usr/lib/",
        );
    }
    run(&f, &copy(&["tree"], "/"), "/").unwrap();
    for i in 0..400 {
        assert_eq!(
            fs::read_to_string(f.rootfs.join(format!("usr/lib/f{i:03}"))).unwrap(),
            "from usr/lib/",
            "f{i:03}"
        );
    }
}

// Needs root: mknod of a character device.
#[test]
fn from_dir_copies_devices_and_fifos() {
    use std::os::unix::fs::FileTypeExt;
    let f = fixture();
    let stage = f.rootfs.parent().unwrap().join("stage-dev");
    fs::create_dir_all(stage.join("dev")).unwrap();
    let null = rustix::fs::makedev(1, 3);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        stage.join("dev/null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        null,
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        stage.join("dev/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let c = copy(&["/dev"], "/dev");
    let req = request(&c, "/");
    let stats = apply(&req, &SourceRoot::Dir(&stage), &f.rootfs).unwrap();
    assert_eq!(stats.other, 2);
    let m = fs::symlink_metadata(f.rootfs.join("dev/null")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), null);
    assert!(fs::symlink_metadata(f.rootfs.join("dev/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
}

/// A `--from` file's digest counts a hard link only when the selection holds the inode twice:
/// a link from outside it (a pooled file, a snapshot's link to the store's file pool) changes
/// nothing, while two names of one inode differ from two equal files.
#[test]
fn digest_counts_hard_links_within_the_selection_only() {
    let f = fixture();
    let stage = f.rootfs.parent().unwrap().join("stage");
    write(&stage.join("app/a"), "same");
    write(&stage.join("app/b"), "same");
    let digest = |srcs: &[&str]| {
        let c = copy(srcs, "/x/");
        inputs_digest(&request(&c, "/"), &SourceRoot::Dir(&stage)).unwrap()
    };
    let plain = digest(&["/app"]);
    fs::hard_link(stage.join("app/a"), stage.join("outside")).unwrap();
    assert_eq!(digest(&["/app"]), plain, "a link outside the selection");
    fs::remove_file(stage.join("app/b")).unwrap();
    fs::hard_link(stage.join("app/a"), stage.join("app/b")).unwrap();
    assert_ne!(digest(&["/app"]), plain, "two names of one inode");
}

/// A directory copy big enough to be written on several threads: every entry lands as one
/// thread writes it (content, mode, owner, times, xattrs, symlinks, hard links), and the
/// counts add up.
#[test]
fn a_copy_of_many_files_is_whole_when_written_on_all_cores() {
    let f = Dirs::new();
    let xattrs =
        rustix::fs::lsetxattr(&f.ctx, "user.probe", b"1", rustix::fs::XattrFlags::empty()).is_ok();
    for i in 0..900 {
        let p = f.ctx.join(format!("tree/d{}/f{i:04}.txt", i % 9));
        write(&p, &format!("file {i}\n").repeat(1 + i % 7));
        fs::set_permissions(&p, fs::Permissions::from_mode([0o644, 0o600, 0o755][i % 3])).unwrap();
        if xattrs && i % 100 == 0 {
            let flags = rustix::fs::XattrFlags::empty();
            rustix::fs::lsetxattr(&p, "user.n", i.to_string().as_bytes(), flags).unwrap();
        }
    }
    symlink("d0/f0000.txt", f.ctx.join("tree/link")).unwrap();
    fs::hard_link(f.ctx.join("tree/d1/f0001.txt"), f.ctx.join("tree/d2/hard")).unwrap();

    let stats = run(&f, &copy(&["tree"], "/dst"), "/").unwrap();
    assert_eq!(
        (stats.files, stats.symlinks, stats.hardlinks),
        (900, 1, 1),
        "{stats:?}"
    );
    let mut rels: Vec<String> = (0..900)
        .map(|i| format!("d{}/f{i:04}.txt", i % 9))
        .collect();
    rels.extend(["link".into(), "d2/hard".into()]);
    rels.extend((0..9).map(|d| format!("d{d}")));
    for rel in &rels {
        let (s, d) = (
            &f.ctx.join("tree").join(rel),
            f.rootfs.join("dst").join(rel),
        );
        let (sm, dm) = (
            fs::symlink_metadata(s).unwrap(),
            fs::symlink_metadata(&d).unwrap(),
        );
        assert_eq!(sm.file_type(), dm.file_type(), "{rel:?}");
        assert_eq!((dm.uid(), dm.gid()), (0, 0), "{rel:?}");
        assert_eq!(
            (sm.mtime(), sm.mtime_nsec()),
            (dm.mtime(), dm.mtime_nsec()),
            "{rel:?}"
        );
        if sm.is_file() {
            assert_eq!(mode(s), mode(&d), "{rel:?}");
            assert_eq!(fs::read(s).unwrap(), fs::read(&d).unwrap(), "{rel:?}");
            let mut v = [0u8; 8];
            let want = rustix::fs::lgetxattr(s, "user.n", &mut v).map(|n| v[..n].to_vec());
            let mut w = [0u8; 8];
            let got = rustix::fs::lgetxattr(&d, "user.n", &mut w).map(|n| w[..n].to_vec());
            assert_eq!(want.ok(), got.ok(), "xattr of {rel:?}");
        } else if sm.file_type().is_symlink() {
            assert_eq!(fs::read_link(s).unwrap(), fs::read_link(&d).unwrap());
        }
    }
    let (a, b) = (
        fs::metadata(f.rootfs.join("dst/d1/f0001.txt")).unwrap(),
        fs::metadata(f.rootfs.join("dst/d2/hard")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "the hard link stays one");

    // A failure on one of the threads is the copy's error, naming the path.
    let g = Dirs::new();
    for i in 0..900 {
        write(&g.ctx.join(format!("tree/d{}/f{i:04}", i % 9)), "x");
    }
    fs::create_dir_all(g.rootfs.join("dst/d8/f0899/inner")).unwrap();
    let e = run(&g, &copy(&["tree"], "/dst"), "/").unwrap_err();
    assert!(e.to_string().contains("/dst/d8/f0899"), "{e}");
}

// Needs root: chown.
#[test]
fn a_cancelled_copy_stops_between_files() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let f = Dirs::new();
    // Enough files for the parallel writers too.
    for i in 0..600 {
        write(&f.ctx.join(format!("many/f{i:04}")), "x");
    }
    let ctx = BuildContext::open(&f.ctx, None).unwrap();
    let c = copy(&["many"], "/many/");
    let req = CopyRequest {
        copy: &c,
        workdir: "/",
        owner: None,
    };
    let asked = AtomicUsize::new(0);
    let cancel = || asked.fetch_add(1, Ordering::SeqCst) >= 100;
    let err = cairn_build::copy::apply_pooled(
        &req,
        &SourceRoot::Context(&ctx),
        &f.rootfs,
        None,
        Some(&cancel),
    )
    .unwrap_err();
    assert!(matches!(err, CopyError::Cancelled { cmd: "COPY" }), "{err}");
    let written = fs::read_dir(f.rootfs.join("many")).unwrap().count();
    assert!(written < 600, "{written} files: the copy went on");
}
