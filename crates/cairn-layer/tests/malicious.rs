//! Crafted archives that try to write outside the target: each must fail with an error that
//! names the entry, and nothing may appear outside the target.

mod common;

use cairn_layer::{unpack_layer, Error, UnpackMode};
use common::*;
use std::fs;
use std::path::Path;
use tar::EntryType as T;

/// Runs `tar` against a fresh target inside a fresh parent; returns the error and asserts the
/// parent holds nothing but the target afterwards.
fn refuse(tar: &[u8], mode: UnpackMode) -> Error {
    let t = tempfile::tempdir().unwrap();
    let target = t.path().join("root");
    fs::create_dir(&target).unwrap();
    let err = unpack_layer(tar, &target, mode).expect_err("the archive must be refused");
    let outside: Vec<_> = fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        outside,
        ["root"],
        "something was written outside the target"
    );
    assert!(!Path::new("/tmp/cairn-pwned").exists());
    err
}

fn escape_names(err: &Error, entry: &str) {
    match err {
        Error::Escape { entry: e } => assert!(e.contains(entry), "{e} should name {entry}"),
        other => panic!("expected an escape error naming {entry}, got {other}"),
    }
    assert!(err.to_string().contains(entry));
}

#[test]
fn dot_dot_is_refused() {
    for mode in [UnpackMode::Apply, UnpackMode::OverlayLower] {
        let mut t = Vec::new();
        raw_entry(&mut t, b"ok", T::Regular, b"", b"fine");
        raw_entry(&mut t, b"../evil", T::Regular, b"", b"pwned");
        raw_end(&mut t);
        escape_names(&refuse(&t, mode), "../evil");

        let mut t = Vec::new();
        raw_entry(&mut t, b"a/../../evil", T::Regular, b"", b"pwned");
        raw_end(&mut t);
        escape_names(&refuse(&t, mode), "a/../../evil");
    }
}

#[test]
fn absolute_paths_are_refused() {
    let mut t = Vec::new();
    raw_entry(&mut t, b"/tmp/cairn-pwned", T::Regular, b"", b"pwned");
    raw_end(&mut t);
    escape_names(&refuse(&t, UnpackMode::Apply), "/tmp/cairn-pwned");
}

#[test]
fn writing_through_an_escaping_symlink_is_refused() {
    // Absolute and relative symlinks to the parent of the target, then a file through them.
    for (link, target) in [
        (&b"up"[..], &b".."[..]),
        (b"abs", b"/tmp"),
        (b"deep", b"./../.."),
    ] {
        let mut t = Vec::new();
        raw_entry(&mut t, link, T::Symlink, target, b"");
        let mut through = link.to_vec();
        through.extend_from_slice(b"/cairn-pwned");
        raw_entry(&mut t, &through, T::Regular, b"", b"pwned");
        raw_end(&mut t);
        escape_names(
            &refuse(&t, UnpackMode::Apply),
            &String::from_utf8_lossy(&through),
        );
    }
}

#[test]
fn whiteout_through_a_symlink_is_refused() {
    let mut t = Vec::new();
    raw_entry(&mut t, b"up", T::Symlink, b"..", b"");
    raw_entry(&mut t, b"up/.wh.root", T::Regular, b"", b"");
    raw_end(&mut t);
    escape_names(&refuse(&t, UnpackMode::Apply), "up/.wh.root");
}

#[test]
fn hardlinks_to_outside_are_refused() {
    for target in [&b"../outside"[..], b"/etc/passwd"] {
        let mut t = Vec::new();
        raw_entry(&mut t, b"h", T::Link, target, b"");
        raw_end(&mut t);
        escape_names(&refuse(&t, UnpackMode::Apply), "h");
    }
    // A hardlink through a symlink that points outside.
    let mut t = Vec::new();
    raw_entry(&mut t, b"etc", T::Symlink, b"/etc", b"");
    raw_entry(&mut t, b"h", T::Link, b"etc/passwd", b"");
    raw_end(&mut t);
    escape_names(&refuse(&t, UnpackMode::Apply), "h");
}

#[test]
fn a_symlink_as_last_component_is_replaced_not_followed() {
    let t = tempfile::tempdir().unwrap();
    let target = t.path().join("root");
    fs::create_dir(&target).unwrap();
    let victim = t.path().join("victim");
    fs::write(&victim, b"precious").unwrap();
    let mut ar = Vec::new();
    raw_entry(
        &mut ar,
        b"f",
        T::Symlink,
        victim.as_os_str().as_encoded_bytes(),
        b"",
    );
    raw_entry(&mut ar, b"f", T::Regular, b"", b"overwritten?");
    raw_end(&mut ar);
    unpack_layer(&ar[..], &target, UnpackMode::Apply).unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    assert_eq!(fs::read(target.join("f")).unwrap(), b"overwritten?");
}

#[test]
fn whiteouts_of_dot_and_dot_dot_are_refused() {
    // `.wh..` and `.wh...` would name the directory itself or its parent.
    for name in [&b"dir/.wh.."[..], b"dir/.wh..."] {
        for mode in [UnpackMode::Apply, UnpackMode::OverlayLower] {
            let mut t = Vec::new();
            raw_entry(&mut t, b"dir/", T::Directory, b"", b"");
            raw_entry(&mut t, name, T::Regular, b"", b"");
            raw_end(&mut t);
            escape_names(&refuse(&t, mode), &String::from_utf8_lossy(name));
        }
    }
}
