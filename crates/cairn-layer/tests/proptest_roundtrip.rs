//! Property: for any generated tree, tree → tar → tree gives the same tree, and the tar is the
//! same bytes every time.

mod common;

use cairn_layer::{unpack_layer, write_layer, Compression, DiffSource, UnpackMode, WriteOptions};
use common::*;
use proptest::prelude::*;
use std::fs;

#[derive(Debug, Clone)]
enum Node {
    File(Vec<u8>, u32),
    Dir(u32),
    Symlink(String),
    HardlinkToFirstFile,
}

fn node() -> impl Strategy<Value = Node> {
    prop_oneof![
        (
            proptest::collection::vec(any::<u8>(), 0..3000),
            prop_oneof![Just(0o644u32), Just(0o755), Just(0o600), Just(0o4755)]
        )
            .prop_map(|(c, m)| Node::File(c, m)),
        prop_oneof![Just(0o755u32), Just(0o700), Just(0o1777)].prop_map(Node::Dir),
        "[a-z./]{1,30}".prop_map(Node::Symlink),
        Just(Node::HardlinkToFirstFile),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn tree_tar_tree(entries in proptest::collection::vec(("[a-c]{1,2}(/[a-c]{1,2}){0,2}", node()), 1..25), mtime in 0i64..2_000_000_000) {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::create_dir(&src).unwrap();
        let mut first_file: Option<std::path::PathBuf> = None;
        for (path, n) in &entries {
            let p = src.join(path);
            // Skip paths whose parent is already a non-directory.
            if p.ancestors().skip(1).take_while(|a| *a != src).any(|a| fs::symlink_metadata(a).is_ok_and(|m| !m.is_dir())) || fs::symlink_metadata(&p).is_ok() {
                continue;
            }
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            match n {
                Node::File(c, m) => {
                    write(&p, c, *m);
                    set_mtime(&p, mtime);
                    first_file.get_or_insert(p.clone());
                }
                Node::Dir(m) => {
                    fs::create_dir(&p).unwrap();
                    use std::os::unix::fs::PermissionsExt;
                    fs::set_permissions(&p, fs::Permissions::from_mode(*m)).unwrap();
                }
                Node::Symlink(target) => std::os::unix::fs::symlink(target, &p).unwrap(),
                Node::HardlinkToFirstFile => {
                    if let Some(f) = &first_file {
                        fs::hard_link(f, &p).unwrap();
                    }
                }
            }
        }
        let mut a = Vec::new();
        let d1 = write_layer(DiffSource::Tree(&src), Compression::Gzip, &WriteOptions::default(), &mut a).unwrap();
        let mut b = Vec::new();
        let d2 = write_layer(DiffSource::Tree(&src), Compression::Gzip, &WriteOptions::default(), &mut b).unwrap();
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(&d1, &d2);
        let dst = t.path().join("dst");
        fs::create_dir(&dst).unwrap();
        let stats = unpack_layer(&a[..], &dst, UnpackMode::Apply).unwrap();
        prop_assert_eq!(stats.diff_id, d1.diff_id);
        prop_assert_eq!(snapshot(&src), snapshot(&dst));
    }
}

/// A small tree description: path → file content (None = directory).
fn small_tree() -> impl Strategy<Value = Vec<(String, Option<Vec<u8>>)>> {
    proptest::collection::vec(
        (
            "[a-c]{1,2}(/[a-c]{1,2}){0,2}",
            proptest::option::weighted(0.7, proptest::collection::vec(any::<u8>(), 0..64)),
        ),
        0..12,
    )
}

/// Writes `entries` under `root`. A file whose content differs from the same path under `before`
/// gets a later mtime, as an edit would give it (the diff compares metadata, as docker's does).
fn build(
    root: &std::path::Path,
    entries: &[(String, Option<Vec<u8>>)],
    before: Option<&std::path::Path>,
) {
    fs::create_dir_all(root).unwrap();
    for (path, content) in entries {
        let p = root.join(path);
        let blocked = p
            .ancestors()
            .skip(1)
            .take_while(|a| *a != root)
            .any(|a| fs::symlink_metadata(a).is_ok_and(|m| !m.is_dir()));
        if blocked || fs::symlink_metadata(&p).is_ok() {
            continue;
        }
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        match content {
            Some(c) => {
                write(&p, c, 0o644);
                let same =
                    before.is_some_and(|b| fs::read(b.join(path)).ok().as_deref() == Some(&c[..]));
                set_mtime(&p, if before.is_none() || same { 1000 } else { 2000 });
            }
            None => fs::create_dir(&p).unwrap(),
        }
    }
}

/// Files only (directory metadata is not what a diff must carry for unchanged parents).
fn files(root: &std::path::Path) -> Vec<(String, Option<Vec<u8>>)> {
    snapshot(root)
        .into_iter()
        .map(|(k, v)| match v {
            Obj::File { content, .. } => (k, Some(content)),
            _ => (k, None),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Property: lower + diff(lower, upper) == upper, for any two trees.
    #[test]
    fn compare_diff_applied_to_lower_gives_upper(lower in small_tree(), upper in small_tree()) {
        let t = tempfile::tempdir().unwrap();
        let (lo, up, out) = (t.path().join("lo"), t.path().join("up"), t.path().join("out"));
        build(&lo, &lower, None);
        build(&up, &upper, Some(&lo));
        let mut base = Vec::new();
        write_layer(DiffSource::Tree(&lo), Compression::None, &WriteOptions::default(), &mut base).unwrap();
        let mut diff = Vec::new();
        write_layer(DiffSource::Compare { lower: &lo, upper: &up }, Compression::None, &WriteOptions::default(), &mut diff).unwrap();
        fs::create_dir(&out).unwrap();
        unpack_layer(&base[..], &out, UnpackMode::Apply).unwrap();
        unpack_layer(&diff[..], &out, UnpackMode::Apply).unwrap();
        prop_assert_eq!(files(&out), files(&up));
    }
}
