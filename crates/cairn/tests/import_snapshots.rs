//! An image that enters the store (`import`, `load`) is unpacked into its snapshots right away,
//! as docker does on load, so a first build or run from it does not pay for it. Needs root
//! (snapshots hold whiteout devices and trusted.* xattrs) — CI runs as root.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_cairn");

fn cairn(root: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cairn {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn snapshots(root: &Path) -> usize {
    std::fs::read_dir(root.join("snapshots"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn import_and_load_make_the_snapshots() {
    if !nix_is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/os-release"), "ID=test\n").unwrap();
    let tar = t.path().join("rootfs.tar");
    let st = Command::new("tar")
        .args(["--numeric-owner", "-C"])
        .arg(&tree)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let a = t.path().join("a");
    cairn(&a, &["import", tar.to_str().unwrap(), "test:1"]);
    assert_eq!(snapshots(&a), 1, "import unpacked the layer");
    let saved = t.path().join("saved.tar");
    cairn(&a, &["save", "-o", saved.to_str().unwrap(), "test:1"]);
    let b = t.path().join("b");
    cairn(&b, &["load", "-i", saved.to_str().unwrap()]);
    assert_eq!(snapshots(&b), 1, "load unpacked the layer");
    assert!(cairn(&b, &["system", "check"]).contains("ok"));
}

fn nix_is_root() -> bool {
    // /proc/self is owned by the effective uid of the process reading it.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}
