//! `cairn build --check` / `--check-error` and `cairn history --layers` on a real build.
//!
//! Root: builds run RUN steps in namespaces (CI runs as root). Needs busybox-static.

use std::path::Path;
use std::process::{Command, Output};

fn cairn(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap()
}

/// A store with busybox imported as `busybox:test`, and a context dir.
fn setup(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    let tar = dir.join("busybox.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let root = dir.join("store");
    let out = cairn(&root, &["import", tar.to_str().unwrap(), "busybox:test"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    (root, ctx)
}

#[test]
fn build_check_passes_warns_and_fails_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (root, ctx) = setup(dir.path());
    let c = ctx.to_str().unwrap();

    // Clean apart from a warning: exit 0, the warning shown; --check-error turns it into 1.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:test\nRUN echo hi > /hi\nUSER 1000\nCMD echo\n",
    )
    .unwrap();
    let out = cairn(
        &root,
        &["build", "--progress", "quiet", "--check", "-t", "ok:1", c],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("JSONArgsRecommended") && err.contains("Check complete: 0 errors, 1 warning"),
        "{err}"
    );
    let out = cairn(&root, &["build", "--progress", "quiet", "--check-error", c]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A private key left in a layer is an error: exit 1 even though the build succeeded.
    std::fs::write(ctx.join("id_rsa"), "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:test\nCOPY id_rsa /root/.ssh/id_rsa\nRUN rm /root/.ssh/id_rsa\nUSER 1000\n",
    )
    .unwrap();
    let out = cairn(
        &root,
        &["build", "--progress", "quiet", "--check", "-t", "leak:1", c],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("SecretInLayer"), "{err}");
    // Without --check the same build succeeds.
    let out = cairn(&root, &["build", "--progress", "quiet", c]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn history_layers_lists_each_layer_with_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let (root, ctx) = setup(dir.path());
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:test\nRUN head -c 50000 /dev/zero > /big && echo x > /small\nRUN rm /big\n",
    )
    .unwrap();
    let out = cairn(
        &root,
        &[
            "build",
            "--progress",
            "quiet",
            "-t",
            "layers:1",
            ctx.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cairn(&root, &["history", "--layers", "layers:1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("LAYER"), "{text}");
    assert!(text.contains("RUN /bin/sh -c head -c 50000"), "{text}");
    assert!(
        text.contains("/big") && text.contains("/bin/busybox"),
        "{text}"
    );
    assert!(text.contains("in 3 layers"), "{text}");
    // The 50 kB written then deleted count as wasted.
    assert!(!text.contains("; 0B wasted"), "{text}");
}
