//! Helpers shared by the `cairn` binary's integration tests: busybox rootfs trees and tarballs
//! made from Debian's `busybox-static`, a `cairn --root` command, and `Cairn`, a test harness
//! with a private store and context directory in a temp dir.
//!
//! Each test file that says `mod common;` compiles its own copy, and uses only part of it.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// Where `busybox-static` installs the binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// An /etc/passwd with root only.
pub const PASSWD_ROOT: &str = "root:x:0:0:root:/root:/bin/sh\n";

/// GNU tar flags that make the same bytes from the same tree every time.
pub const REPRODUCIBLE_TAR: &[&str] = &[
    "--sort=name",
    "--mtime=@0",
    "--owner=0",
    "--group=0",
    "--numeric-owner",
];

/// The `SOURCE_DATE_EPOCH` `Cairn` runs with (2023-11-14T22:13:20Z).
pub const SOURCE_DATE_EPOCH: &str = "1700000000";

/// The cairn binary under test.
pub fn cairn_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cairn")
}

/// The workspace root (examples/, scripts/).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// True when this process runs as root (`USER=root`, or uid 0 in /proc/self/status).
pub fn is_root() -> bool {
    std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || fs::read_to_string("/proc/self/status")
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(false)
}

/// False (with a note) when a test that builds on busybox cannot run here: not root (the note
/// says `skipped: {needs_root}`), or no /bin/busybox.
pub fn can_run(needs_root: &str) -> bool {
    if !is_root() {
        eprintln!("skipped: {needs_root}");
        return false;
    }
    if !Path::new(BUSYBOX).exists() {
        eprintln!("skipped: /bin/busybox (busybox-static) is missing");
        return false;
    }
    true
}

/// A command's stdout, lossily decoded.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A command's stderr, lossily decoded.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `cmd` with `input` on its stdin, stdout and stderr captured.
pub fn output_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Writes each `(path, contents)` below `dir`, making parent directories as needed.
pub fn write_files<C: AsRef<[u8]>>(dir: &Path, files: &[(&str, C)]) {
    for (rel, contents) in files {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, contents).unwrap();
    }
}

/// Makes a busybox rootfs in `rootfs`: the directories `dirs`, /bin/busybox, a symlink per
/// applet (`busybox --list`), and `files` (path, contents, mode). Returns `rootfs`.
pub fn busybox_rootfs_with(rootfs: &Path, dirs: &[&str], files: &[(&str, &[u8], u32)]) -> PathBuf {
    assert!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} is missing: install busybox-static (scripts/deps)"
    );
    for d in dirs.iter().chain(&["bin"]) {
        fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    fs::copy(BUSYBOX, rootfs.join("bin/busybox")).unwrap();
    let list = Command::new(BUSYBOX).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = rootfs.join("bin").join(applet);
        if applet != "busybox" && !link.exists() {
            std::os::unix::fs::symlink("busybox", link).unwrap();
        }
    }
    for (rel, contents, mode) in files {
        let f = rootfs.join(rel);
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        fs::write(&f, contents).unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(*mode)).unwrap();
    }
    rootfs.to_path_buf()
}

/// Makes a minimal busybox rootfs in `dir`: `/bin/busybox`, one symlink per applet,
/// `/etc/passwd` (root), `/tmp`. Returns `dir`.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    busybox_rootfs_with(
        dir,
        &["etc", "tmp"],
        &[("etc/passwd", PASSWD_ROOT.as_bytes(), 0o644)],
    )
}

/// `tar FLAGS -C dir -cf out .`
pub fn tar_dir_with(dir: &Path, out: &Path, flags: &[&str]) {
    let st = Command::new("tar")
        .args(flags)
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(out)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success(), "tar failed");
}

/// `tar -C dir -cf out .` (GNU tar, as a user would make one).
pub fn tar_dir(dir: &Path, out: &Path) {
    tar_dir_with(dir, out, &[]);
}

/// A minimal busybox rootfs tarball in `dir` (rootfs under `dir/rootfs`), made as a user would.
pub fn busybox_tar(dir: &Path) -> PathBuf {
    let rootfs = busybox_rootfs(&dir.join("rootfs"));
    let tar = dir.join("busybox.tar");
    tar_dir(&rootfs, &tar);
    tar
}

/// The directories of the build tests' busybox rootfs (see [`base_busybox_tar`]).
const BASE_DIRS: &[&str] = &["etc", "root", "tmp", "home/node", "proc", "dev", "sys"];

/// Its files: path, contents, mode.
const BASE_FILES: &[(&str, &[u8], u32)] = &[
    (
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000:node:/home/node:/bin/sh\n",
        0o644,
    ),
    ("etc/group", b"root:x:0:\nnode:x:1000:\n", 0o644),
];

/// The build tests' busybox rootfs tar: /bin/busybox and a link per applet, /etc/passwd with
/// root and node (1000), /etc/group. Fixed mtimes, owners and order, so the same bytes every
/// time.
pub fn base_busybox_tar() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        // Shared by every test process while busybox and the layout above stay the same (the
        // bytes are fixed): one per process left a 4 MB copy in /tmp per test binary and run.
        // Made aside, then renamed into place; a process that loses the race uses the winner's.
        use std::hash::{Hash, Hasher};
        let bin = fs::metadata(BUSYBOX)
            .unwrap_or_else(|e| panic!("{BUSYBOX}: {e}: install busybox-static (scripts/deps)"));
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (bin.len(), bin.mtime(), BASE_DIRS, BASE_FILES).hash(&mut h);
        let dir = std::env::temp_dir().join(format!("cairn-test-busybox-{:016x}", h.finish()));
        let tar = dir.join("busybox.tar");
        if tar.is_file() {
            return tar;
        }
        let work =
            std::env::temp_dir().join(format!("cairn-test-busybox-making-{}", std::process::id()));
        let _ = fs::remove_dir_all(&work);
        let rootfs = busybox_rootfs_with(&work.join("rootfs"), BASE_DIRS, BASE_FILES);
        tar_dir_with(&rootfs, &work.join("busybox.tar"), REPRODUCIBLE_TAR);
        fs::remove_dir_all(&rootfs).unwrap();
        if let Err(e) = fs::rename(&work, &dir) {
            let _ = fs::remove_dir_all(&work);
            assert!(tar.is_file(), "{}: {e}", dir.display());
        }
        tar
    })
}

/// `cairn --root ROOT`, with the environment as it is.
pub fn cairn_cmd(root: &Path) -> Command {
    let mut c = Command::new(cairn_bin());
    c.arg("--root").arg(root);
    c
}

/// `cairn --root ROOT` without `SOURCE_DATE_EPOCH` (images made now), for `.pipe_stdin`.
pub fn cairn(root: &Path) -> assert_cmd::Command {
    let mut c = cairn_cmd(root);
    c.env_remove("SOURCE_DATE_EPOCH");
    assert_cmd::Command::from_std(c)
}

/// Runs `cairn --root ROOT args...`, asserts success, returns stdout.
pub fn ok(root: &Path, args: &[&str]) -> String {
    let out = cairn(root).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "cairn {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A private temp dir with a store (`root`, not made until cairn makes it) and an empty context
/// directory (`ctx`). Commands run with `SOURCE_DATE_EPOCH` = [`SOURCE_DATE_EPOCH`].
pub struct Cairn {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub ctx: PathBuf,
}

impl Cairn {
    /// An empty store and context.
    pub fn new() -> Cairn {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        let ctx = tmp.path().join("ctx");
        fs::create_dir_all(&ctx).unwrap();
        Cairn { tmp, root, ctx }
    }

    /// A store holding [`base_busybox_tar`] as `busybox:latest`.
    pub fn with_busybox() -> Cairn {
        let c = Cairn::new();
        c.import(base_busybox_tar(), "busybox:latest", &[]);
        c
    }

    /// The temp dir that holds the store and the context.
    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// `cairn --root ROOT args...`, not run yet.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = cairn_cmd(&self.root);
        c.args(args).env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH);
        c
    }

    /// Runs `cairn --root ROOT args...`.
    pub fn cairn(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs `cairn --root ROOT args... CTX`.
    pub fn on_ctx(&self, args: &[&str]) -> Output {
        self.command(args).arg(&self.ctx).output().unwrap()
    }

    /// `cairn import FLAGS TAR NAME`; asserts success and returns the image ID.
    pub fn import(&self, tar: &Path, name: &str, flags: &[&str]) -> String {
        let mut args = vec!["import"];
        args.extend_from_slice(flags);
        args.extend([tar.to_str().unwrap(), name]);
        let out = self.cairn(&args);
        assert!(
            out.status.success(),
            "import {name} failed: {}",
            stderr(&out)
        );
        stdout(&out).trim().to_string()
    }

    /// Writes `content` to `rel` in the context.
    pub fn write(&self, rel: &str, content: &str) {
        write_files(&self.ctx, &[(rel, content)]);
    }

    /// `cairn build --progress=plain EXTRA... CTX`.
    pub fn build(&self, extra: &[&str]) -> Output {
        let mut args = vec!["build", "--progress=plain"];
        args.extend_from_slice(extra);
        self.on_ctx(&args)
    }

    /// [`Cairn::build`], asserting success.
    pub fn ok_build(&self, extra: &[&str]) -> Output {
        let out = self.build(extra);
        assert!(
            out.status.success(),
            "build failed: {}\n{}",
            stderr(&out),
            stdout(&out)
        );
        out
    }

    /// The config blob of image `id` (`sha256:…`), as stored.
    pub fn config_text(&self, id: &str) -> String {
        let hex = id.trim().strip_prefix("sha256:").unwrap();
        fs::read_to_string(self.root.join("blobs/sha256").join(hex)).unwrap()
    }

    /// The config JSON of the image whose ID is in `iidfile`, read from the store's blobs.
    pub fn config_of(&self, iidfile: &Path) -> serde_json::Value {
        let id = fs::read_to_string(iidfile).unwrap();
        serde_json::from_str(&self.config_text(&id)).unwrap()
    }
}
