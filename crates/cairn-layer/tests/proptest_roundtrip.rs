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
