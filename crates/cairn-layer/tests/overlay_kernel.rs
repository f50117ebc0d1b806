//! The overlay path against the real kernel: changes made through an overlayfs mount (the kernel
//! writes the whiteouts and opaque markers), the upper dir written as a layer, that layer applied
//! to the lower tree: the result is what the mount showed. Needs root and overlayfs (CI has both).

mod common;

use cairn_layer::{unpack_layer, write_layer, Compression, DiffSource, UnpackMode, WriteOptions};
use common::*;
use std::fs;
use std::path::Path;
use std::process::Command;

fn mount_overlay(lower: &Path, upper: &Path, work: &Path, merged: &Path) {
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let st = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(merged)
        .status()
        .unwrap();
    assert!(st.success(), "mounting overlayfs (needs root)");
}

fn contents(root: &Path) -> Vec<(String, String)> {
    snapshot(root)
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Obj::File { content, mode, .. } => format!("file {mode:o} {content:?}"),
                Obj::Dir { mode, .. } => format!("dir {mode:o}"),
                Obj::Symlink { target } => format!("link {target}"),
                other => format!("{other:?}"),
            };
            (k, v)
        })
        .collect()
}

#[test]
fn overlay_upper_dir_as_a_layer_reproduces_the_merged_view() {
    let t = tempfile::tempdir().unwrap();
    let (lower, upper, work, merged) = (
        t.path().join("lower"),
        t.path().join("upper"),
        t.path().join("work"),
        t.path().join("merged"),
    );
    for d in [&upper, &work, &merged] {
        fs::create_dir_all(d).unwrap();
    }
    write(&lower.join("etc/keep"), b"keep", 0o644);
    write(&lower.join("etc/edit"), b"old", 0o644);
    write(&lower.join("etc/remove"), b"bye", 0o644);
    write(&lower.join("var/cache/a"), b"a", 0o644);
    write(&lower.join("var/cache/b"), b"b", 0o644);
    write(&lower.join("opt/tree/deep/x"), b"x", 0o644);

    mount_overlay(&lower, &upper, &work, &merged);
    let changes = (|| -> std::io::Result<()> {
        fs::write(merged.join("etc/edit"), b"new")?;
        fs::remove_file(merged.join("etc/remove"))?;
        // Removing a lower directory and making it again: the kernel marks it opaque.
        fs::remove_dir_all(merged.join("var/cache"))?;
        fs::create_dir(merged.join("var/cache"))?;
        fs::write(merged.join("var/cache/fresh"), b"f")?;
        fs::remove_dir_all(merged.join("opt/tree"))?;
        fs::write(merged.join("added"), b"+")?;
        std::os::unix::fs::symlink("etc/keep", merged.join("link"))?;
        Ok(())
    })();
    let expected = contents(&merged);
    let st = Command::new("umount").arg(&merged).status().unwrap();
    changes.unwrap();
    assert!(st.success());

    let mut blob = Vec::new();
    write_layer(
        DiffSource::OverlayUpper(&upper),
        Compression::Gzip,
        &WriteOptions::default(),
        &mut blob,
    )
    .unwrap();
    let names: Vec<String> = {
        let plain = cairn_layer::decompress(&blob[..]).unwrap();
        tar::Archive::new(plain)
            .entries()
            .unwrap()
            .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
            .collect()
    };
    for n in [
        "etc/.wh.remove",
        "opt/.wh.tree",
        "var/cache/.wh..wh..opq",
        "etc/edit",
        "added",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
    assert!(
        !names.iter().any(|x| x.contains("keep")),
        "unchanged files stay out: {names:?}"
    );

    // lower + layer (Apply) == what the mount showed.
    let applied = t.path().join("applied");
    fs::create_dir(&applied).unwrap();
    let mut base = Vec::new();
    write_layer(
        DiffSource::Tree(&lower),
        Compression::None,
        &WriteOptions::default(),
        &mut base,
    )
    .unwrap();
    unpack_layer(&base[..], &applied, UnpackMode::Apply).unwrap();
    unpack_layer(&blob[..], &applied, UnpackMode::Apply).unwrap();
    assert_eq!(contents(&applied), expected);

    // And as snapshots stacked in a new overlay mount (OverlayLower mode), the same view.
    let (s1, s2, w2, m2) = (
        t.path().join("s1"),
        t.path().join("s2"),
        t.path().join("w2"),
        t.path().join("m2"),
    );
    for d in [&s1, &s2, &w2, &m2] {
        fs::create_dir_all(d).unwrap();
    }
    unpack_layer(&base[..], &s1, UnpackMode::OverlayLower).unwrap();
    unpack_layer(&blob[..], &s2, UnpackMode::OverlayLower).unwrap();
    let up2 = t.path().join("up2");
    fs::create_dir(&up2).unwrap();
    let opts = format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        s2.display(),
        s1.display(),
        up2.display(),
        w2.display()
    );
    let st = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&m2)
        .status()
        .unwrap();
    assert!(st.success());
    let seen = contents(&m2);
    Command::new("umount").arg(&m2).status().unwrap();
    assert_eq!(seen, expected);
}
