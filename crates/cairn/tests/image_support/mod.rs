//! Shared helpers of the image command tests: a busybox rootfs made from the `busybox-static`
//! Debian package, and a `cairn` command bound to a private store.

#![allow(dead_code)]

use assert_cmd::Command;
use std::path::{Path, PathBuf};

/// Where `busybox-static` installs the binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// Makes a minimal busybox rootfs in `dir`: `/bin/busybox`, one symlink per applet
/// (`busybox --list`), `/etc/passwd`, `/tmp`. Returns `dir`.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    assert!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} is missing: install busybox-static (scripts/deps)"
    );
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(BUSYBOX, bin.join("busybox")).unwrap();
    let list = std::process::Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
    }
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    dir.to_path_buf()
}

/// `tar -C rootfs -cf out .` (GNU tar, as a user would make one).
pub fn tar_dir(rootfs: &Path, out: &Path) {
    let st = std::process::Command::new("tar")
        .arg("-C")
        .arg(rootfs)
        .arg("-cf")
        .arg(out)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
}

/// A busybox rootfs tarball in `dir` (rootfs under `dir/rootfs`).
pub fn busybox_tar(dir: &Path) -> PathBuf {
    let rootfs = busybox_rootfs(&dir.join("rootfs"));
    let tar = dir.join("busybox.tar");
    tar_dir(&rootfs, &tar);
    tar
}

/// `cairn --root ROOT ...`.
pub fn cairn(root: &Path) -> Command {
    let mut c = Command::cargo_bin("cairn").unwrap();
    c.arg("--root").arg(root).env_remove("SOURCE_DATE_EPOCH");
    c
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
