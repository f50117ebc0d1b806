//! Tree → tar → tree, determinism, overlay upper dirs and tree comparison.
//! Several tests make device nodes, chown and set trusted.* xattrs: they need root (CI runs as root).

mod common;

use cairn_layer::{unpack_layer, write_layer, Compression, DiffSource, UnpackMode, WriteOptions};
use common::*;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

fn layer(src: DiffSource<'_>, c: Compression) -> (Vec<u8>, cairn_layer::LayerDescriptor) {
    let mut out = Vec::new();
    let d = write_layer(src, c, &WriteOptions::default(), &mut out).unwrap();
    (out, d)
}

fn sample_tree(root: &Path) {
    write(&root.join("etc/hostname"), b"cairn\n", 0o644);
    write(&root.join("bin/tool"), b"#!/bin/sh\necho hi\n", 0o4755);
    fs::hard_link(root.join("bin/tool"), root.join("bin/tool-link")).unwrap();
    symlink("tool", root.join("bin/alias")).unwrap();
    symlink("/etc/hostname", root.join("abs-link")).unwrap();
    let long = "d".repeat(120);
    write(
        &root.join(format!("{long}/{}", "f".repeat(150))),
        b"long",
        0o600,
    );
    symlink("x".repeat(200), root.join("long-target")).unwrap();
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        root.join("fifo"),
        rustix::fs::Mode::from_raw_mode(0o640),
    )
    .unwrap();
    // Needs root: a device node and an owner other than ours.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    std::os::unix::fs::lchown(root.join("etc/hostname"), Some(1234), Some(5678)).unwrap();
    rustix::fs::setxattr(
        root.join("etc/hostname").as_path(),
        "user.cairn",
        b"v1",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    fs::create_dir_all(root.join("empty/dir")).unwrap();
    for e in ["etc/hostname", "bin/tool", "fifo"] {
        set_mtime(&root.join(e), 1_600_000_000);
    }
}

#[test]
fn tree_round_trips_through_every_compression() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    sample_tree(&src);
    for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let (blob, d) = layer(DiffSource::Tree(&src), c);
        assert_eq!(d.size, blob.len() as u64);
        assert_eq!(d.digest, cairn_layer::hash::sha256_digest(&blob));
        let dst = t.path().join(format!("dst-{c:?}"));
        fs::create_dir(&dst).unwrap();
        let stats = unpack_layer(&blob[..], &dst, UnpackMode::Apply).unwrap();
        assert_eq!(stats.diff_id, d.diff_id, "unpack recomputes the diffID");
        assert_eq!(snapshot(&src), snapshot(&dst));
        let mut v = [0u8; 8];
        let n = rustix::fs::getxattr(dst.join("etc/hostname").as_path(), "user.cairn", &mut v[..])
            .unwrap();
        assert_eq!(&v[..n], b"v1");
        if c == Compression::None {
            assert_eq!(d.digest, d.diff_id);
        }
    }
}

#[test]
fn same_tree_gives_same_bytes_and_no_user_names() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    fs::create_dir(&a).unwrap();
    sample_tree(&a);
    let (b1, d1) = layer(DiffSource::Tree(&a), Compression::Gzip);
    let (b2, d2) = layer(DiffSource::Tree(&a), Compression::Gzip);
    assert_eq!(b1, b2);
    assert_eq!(d1, d2);
    // Entries are sorted and carry numeric owners only.
    let (plain, _) = layer(DiffSource::Tree(&a), Compression::None);
    let mut ar = tar::Archive::new(&plain[..]);
    let mut names = Vec::new();
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        assert_eq!(e.header().username_bytes().unwrap_or_default(), b"");
        assert_eq!(e.header().groupname_bytes().unwrap_or_default(), b"");
        names.push(e.path_bytes().into_owned());
    }
    assert!(
        names.iter().any(|n| n.len() > 200),
        "long names go through PAX"
    );
    assert!(names.contains(&b"bin/tool-link".to_vec()));
    let mut ar = tar::Archive::new(&plain[..]);
    let link = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path_bytes().as_ref() == b"bin/tool-link")
        .unwrap();
    assert_eq!(link.header().entry_type(), tar::EntryType::Link);
    assert_eq!(link.link_name_bytes().unwrap().as_ref(), b"bin/tool");
}

#[test]
fn clamp_mtime_caps_every_entry() {
    let t = tempfile::tempdir().unwrap();
    write(&t.path().join("a/f"), b"x", 0o644);
    let mut out = Vec::new();
    write_layer(
        DiffSource::Tree(&t.path().join("a")),
        Compression::None,
        &WriteOptions {
            clamp_mtime: Some(100),
            ..Default::default()
        },
        &mut out,
    )
    .unwrap();
    let mut ar = tar::Archive::new(&out[..]);
    for e in ar.entries().unwrap() {
        assert!(e.unwrap().header().mtime().unwrap() <= 100);
    }
}

/// Needs root: makes 0/0 char devices and sets trusted.overlay.opaque.
#[test]
fn overlay_upper_whiteouts_and_lower_mode() {
    let t = tempfile::tempdir().unwrap();
    let up = t.path().join("upper");
    fs::create_dir_all(up.join("opaque")).unwrap();
    write(&up.join("opaque/new"), b"n", 0o644);
    write(&up.join("kept"), b"k", 0o644);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        up.join("gone"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .unwrap();
    rustix::fs::setxattr(
        up.join("opaque").as_path(),
        "trusted.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let (blob, _) = layer(DiffSource::OverlayUpper(&up), Compression::None);
    let names: Vec<String> = tar::Archive::new(&blob[..])
        .entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "gone",
            "kept",
            "opaque/",
            "opaque/.wh..wh..opq",
            "opaque/new"
        ]
        .map(|n| if n == "gone" {
            ".wh.gone".to_string()
        } else {
            n.to_string()
        })
    );

    // Apply: the whiteout deletes, the opaque marker empties the directory but keeps new entries.
    let root = t.path().join("root");
    write(&root.join("gone/deep"), b"x", 0o644);
    write(&root.join("opaque/old"), b"o", 0o644);
    unpack_layer(&blob[..], &root, UnpackMode::Apply).unwrap();
    assert!(!root.join("gone").exists());
    assert!(!root.join("opaque/old").exists());
    assert!(root.join("opaque/new").exists());
    assert!(root.join("kept").exists());

    // OverlayLower: whiteouts become overlay whiteouts.
    let low = t.path().join("lower");
    fs::create_dir(&low).unwrap();
    unpack_layer(&blob[..], &low, UnpackMode::OverlayLower).unwrap();
    let snap = snapshot(&low);
    assert_eq!(snap["gone"], Obj::CharDev { rdev: 0 });
    let mut v = [0u8; 4];
    let n = rustix::fs::getxattr(
        low.join("opaque").as_path(),
        "trusted.overlay.opaque",
        &mut v[..],
    )
    .unwrap();
    assert_eq!(&v[..n], b"y");
    // And writing the lower dir back as an upper dir gives the same layer.
    let (again, _) = layer(DiffSource::OverlayUpper(&low), Compression::None);
    let names2: Vec<String> = tar::Archive::new(&again[..])
        .entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect();
    assert_eq!(names2, names);
}

#[test]
fn compare_emits_changes_and_deletions() {
    let t = tempfile::tempdir().unwrap();
    let (lo, up) = (t.path().join("lo"), t.path().join("up"));
    for r in [&lo, &up] {
        write(&r.join("same/a"), b"a", 0o644);
        write(&r.join("etc/conf"), b"old", 0o644);
        write(&r.join("del/x"), b"x", 0o644);
        write(&r.join("rm-me"), b"x", 0o644);
        for p in ["same/a", "etc/conf", "del/x", "rm-me", "same", "etc", "del"] {
            set_mtime(&r.join(p), 1000);
        }
    }
    write(&up.join("etc/conf"), b"new!", 0o644);
    fs::remove_dir_all(up.join("del")).unwrap();
    fs::remove_file(up.join("rm-me")).unwrap();
    write(&up.join("added/file"), b"+", 0o644);
    set_mtime(&up.join("etc"), 1000);
    let (blob, _) = layer(
        DiffSource::Compare {
            lower: &lo,
            upper: &up,
        },
        Compression::None,
    );
    let names: Vec<String> = tar::Archive::new(&blob[..])
        .entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "added/",
            "added/file",
            ".wh.del",
            "etc/",
            "etc/conf",
            ".wh.rm-me"
        ]
    );
    // Applying the diff to the lower tree gives the upper tree.
    let root = t.path().join("applied");
    fs::create_dir(&root).unwrap();
    let (base, _) = layer(DiffSource::Tree(&lo), Compression::None);
    unpack_layer(&base[..], &root, UnpackMode::Apply).unwrap();
    unpack_layer(&blob[..], &root, UnpackMode::Apply).unwrap();
    let strip = |m: std::collections::BTreeMap<String, Obj>| {
        m.into_iter()
            .map(|(k, v)| match v {
                Obj::File { content, mode, .. } => (k, format!("{mode:o} {content:?}")),
                other => (k, format!("{:?}", std::mem::discriminant(&other))),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(snapshot(&root)), strip(snapshot(&up)));
}
