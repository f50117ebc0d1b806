//! The store as its users see it: layers in, images committed, resolved, tagged, pruned.
//! Snapshot tests make overlay whiteouts (char devices): they need root (CI runs as root).

use cairn_layer::{Compression, DiffSource, WriteOptions};
use cairn_store::{PruneOptions, Store};
use oci_spec::image::{ConfigBuilder, ImageConfiguration, ImageConfigurationBuilder};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn tree(dir: &Path, files: &[(&str, &str)]) {
    for (p, c) in files {
        let p = dir.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, c).unwrap();
    }
}

fn config(cmd: &str) -> ImageConfiguration {
    ImageConfigurationBuilder::default()
        .architecture(oci_spec::image::Arch::Amd64)
        .os(oci_spec::image::Os::Linux)
        .created("2024-01-01T00:00:00Z".to_string())
        .config(
            ConfigBuilder::default()
                .cmd(vec![cmd.to_string()])
                .labels(
                    [
                        ("b".to_string(), "2".to_string()),
                        ("a".to_string(), "1".to_string()),
                    ]
                    .into_iter()
                    .collect::<std::collections::HashMap<_, _>>(),
                )
                .exposed_ports(vec![
                    "80/tcp".to_string(),
                    "443/tcp".to_string(),
                    "8080/tcp".to_string(),
                ])
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

fn setup() -> (tempfile::TempDir, Store, cairn_layer::LayerDescriptor) {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    tree(
        &src,
        &[("etc/os-release", "ID=test\n"), ("bin/app", "binary")],
    );
    let store = Store::open(&t.path().join("root")).unwrap();
    let l = tree_layer(&store, &src);
    (t, store, l)
}

/// The layer of the directory `src`, as a build writes it (gzip, mtimes clamped to 0).
fn tree_layer(store: &Store, src: &Path) -> cairn_layer::LayerDescriptor {
    store
        .write_layer(
            DiffSource::Tree(src),
            Compression::Gzip,
            &WriteOptions {
                clamp_mtime: Some(0),
                ..Default::default()
            },
        )
        .unwrap()
}

#[test]
fn commit_resolve_tag_untag() {
    let (_t, store, l) = setup();
    assert!(store.has_blob(&l.digest));
    let img = store
        .commit_image(&config("sh"), std::slice::from_ref(&l), &["app:1".into()])
        .unwrap();
    assert_eq!(img.repo_tags, ["docker.io/library/app:1"]);
    assert_eq!(img.size, "ID=test\n".len() as u64 + "binary".len() as u64);
    assert_eq!(img.config.rootfs().diff_ids(), &vec![l.diff_id.clone()]);
    // Resolution as docker does it.
    for q in [
        "app:1",
        "docker.io/library/app:1",
        &img.id,
        &img.id[7..19],
        &img.id[..14],
    ] {
        assert_eq!(
            store.resolve(q).unwrap().map(|i| i.id),
            Some(img.id.clone()),
            "{q}"
        );
    }
    assert!(
        store.resolve("app").unwrap().is_none(),
        "app means app:latest"
    );
    let by_digest = format!("app@{}", img.manifest_digest);
    assert_eq!(store.resolve(&by_digest).unwrap().unwrap().id, img.id);
    store.tag("app:1", "localhost:5000/app").unwrap();
    assert_eq!(store.get(&img.id).unwrap().repo_tags.len(), 2);
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(store.root().join("index.json")).unwrap()).unwrap();
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(
        names,
        [
            "app:1",
            "docker.io/library/app:1",
            "localhost:5000/app:latest"
        ]
    );
    assert_eq!(store.untag("app:1").unwrap(), Some(img.id.clone()));
    assert_eq!(store.untag("app:1").unwrap(), None);
    assert_eq!(
        store.list_images().unwrap()[0].repo_tags,
        ["localhost:5000/app:latest"]
    );
    store.delete_image(&img.id).unwrap();
    assert!(store.list_images().unwrap().is_empty());
    assert!(store.check().unwrap().problems.is_empty());
}

#[test]
fn commits_are_deterministic_despite_hash_maps() {
    let (_t, store, l) = setup();
    let a = store
        .commit_image(&config("x"), std::slice::from_ref(&l), &[])
        .unwrap();
    for _ in 0..5 {
        let b = store
            .commit_image(&config("x"), std::slice::from_ref(&l), &[])
            .unwrap();
        assert_eq!(a.id, b.id);
        assert_eq!(a.manifest_digest, b.manifest_digest);
    }
    let c = store.commit_image(&config("y"), &[l], &[]).unwrap();
    assert_ne!(a.id, c.id);
    assert_eq!(store.list_images().unwrap().len(), 2);
}

#[test]
fn wrong_diff_ids_and_missing_layers_are_refused() {
    let (_t, store, mut l) = setup();
    let mut bad = l.clone();
    bad.digest = format!("sha256:{}", "0".repeat(64));
    assert!(store.commit_image(&config("x"), &[bad], &[]).is_err());
    l.diff_id = format!("sha256:{}", "1".repeat(64));
    assert!(
        store.commit_image(&config("x"), &[l], &[]).is_err(),
        "measured diffID must match"
    );
    assert!(store
        .commit_image(&config("x"), &[], &["Bad:Name".into()])
        .is_err());
}

#[test]
fn ingest_verifies() {
    let (_t, store, _) = setup();
    let (d, n) = store.ingest(&b"hello"[..], None).unwrap();
    assert_eq!(n, 5);
    assert_eq!(store.read_blob(&d).unwrap(), b"hello");
    let wrong = format!("sha256:{}", "2".repeat(64));
    assert!(matches!(
        store.ingest(&b"hello"[..], Some(&wrong)),
        Err(cairn_store::Error::DigestMismatch { .. })
    ));
    assert!(!store.has_blob(&wrong));
    assert!(
        fs::read_dir(store.root().join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "no temp file left"
    );
}

#[test]
fn snapshots_are_made_once_and_shared() {
    let (_t, store, l) = setup();
    let img = store
        .commit_image(&config("sh"), &[l], &["a".into()])
        .unwrap();
    let s1 = store.snapshots_for(&img).unwrap();
    assert_eq!(
        fs::read_to_string(s1[0].join("etc/os-release")).unwrap(),
        "ID=test\n"
    );
    let marker = s1[0].join(".probe");
    fs::write(&marker, "").unwrap();
    let s2 = store.snapshots_for(&img).unwrap();
    assert_eq!(s1, s2);
    assert!(marker.exists(), "the second call reuses the first snapshot");
}

/// An adopted upper dir is a snapshot at once and never synced: a marker names the boot it was
/// made in. Within that boot it is used as it is; after a reboot its first user hashes it
/// again: kept (marker gone) if whole, remade from the blob if torn.
#[test]
fn adopted_snapshots_are_checked_after_a_reboot_instead_of_synced() {
    let (t, store, l) = setup();
    let marker = store
        .root()
        .join("snapshots-pending")
        .join(l.diff_id.strip_prefix("sha256:").unwrap());
    let clamped = WriteOptions {
        clamp_mtime: Some(0),
        ..Default::default()
    };
    let adopt = |files: &[(&str, &str)]| {
        let upper = store.root().join("tmp/upper-test");
        tree(&upper, files);
        store
            .adopt_upper_as_snapshot(&upper, &l.diff_id, &clamped)
            .unwrap();
        assert!(!upper.exists());
    };
    adopt(&[("etc/os-release", "ID=test\n"), ("bin/app", "binary")]);
    let snap = store.snapshot_path(&l.diff_id);
    assert!(snap.join("bin/app").is_file());
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let text = fs::read_to_string(&marker).unwrap();
    assert!(text.starts_with(&boot.trim().replace('-', "")), "{text:?}");
    // This boot: used as it is, marker kept (nothing says it reached the disk).
    let probe = snap.join("etc/os-release");
    let other = Store::open(store.root()).unwrap();
    assert_eq!(other.snapshot(&l).unwrap(), snap);
    assert!(marker.exists());

    // After a reboot, whole: hashed, kept, unmarked.
    fs::write(&marker, "another boot\n0\n").unwrap();
    assert_eq!(other.snapshot(&l).unwrap(), snap);
    assert!(!marker.exists());
    let ino = fs::metadata(&probe).unwrap().ino();

    // After a reboot, torn (a file lost its data): remade from the blob.
    fs::write(&marker, "another boot\n0\n").unwrap();
    fs::write(snap.join("bin/app"), "").unwrap();
    assert_eq!(other.snapshot(&l).unwrap(), snap);
    assert_eq!(fs::read_to_string(snap.join("bin/app")).unwrap(), "binary");
    assert_ne!(fs::metadata(&probe).unwrap().ino(), ino, "remade");
    assert!(!marker.exists());

    // Another snapshot there already: the tree is dropped, no marker is made.
    adopt(&[("x", "y")]);
    assert!(!marker.exists());
    drop(t);
}

/// Stages that start from one image ask for its snapshots at the same time: one unpack is made,
/// the others wait for it (no temp copy is thrown away), and `check` sees no stray entry.
#[test]
fn concurrent_snapshot_requests_share_one_unpack() {
    let (_t, store, l) = setup();
    let paths: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| store.snapshot(&l).unwrap()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(paths.windows(2).all(|w| w[0] == w[1]), "{paths:?}");
    assert_eq!(
        fs::read_dir(store.root().join("snapshots"))
            .unwrap()
            .count(),
        1
    );
    assert!(fs::read_dir(store.root().join("tmp"))
        .unwrap()
        .next()
        .is_none());
    store
        .commit_image(&config("sh"), &[l], &["a".into()])
        .unwrap();
    let report = store.check().unwrap();
    assert!(
        report.problems.is_empty() && report.garbage.is_empty(),
        "{report:?}"
    );
}

/// A text-like file of `len` bytes that compresses like source code, seeded.
fn text(len: usize, seed: u64) -> String {
    let mut x = seed | 1;
    let mut s = String::with_capacity(len + 64);
    while s.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(&format!("line {} of {:x}\n", x % 1000, x));
    }
    s.truncate(len);
    s
}

#[test]
fn a_rebuilt_layer_reuses_earlier_chunks_and_comes_out_the_same() {
    struct NoCache;
    impl cairn_layer::ChunkCache for NoCache {
        fn get(&self, _: &cairn_layer::ChunkKey) -> Option<cairn_layer::CachedChunk> {
            None
        }
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let big = text(5 << 20, 9);
    tree(&src, &[("a/big.txt", &big), ("z/small.txt", "v1\n")]);
    let store = Store::open(&t.path().join("root")).unwrap();
    let first = tree_layer(&store, &src);
    // gzip-chunks-v2/<blob>: a 16-byte magic, then 60-byte records (key, offset, len, check,
    // seal).
    let index = t
        .path()
        .join("root/gzip-chunks-v2")
        .join(&first.digest[7..]);
    let records = |index: &Path| {
        let bytes = fs::read(index).unwrap();
        assert_eq!((bytes.len() - 16) % 60, 0);
        bytes[16..]
            .chunks_exact(60)
            .map(|r| {
                let at = |i: usize| u64::from_le_bytes(r[i..i + 8].try_into().unwrap());
                (at(32), at(40))
            })
            .collect::<Vec<_>>()
    };
    assert!(records(&index).len() >= 5);
    let fresh = || {
        let mut blob = Vec::new();
        let desc = cairn_layer::write_layer(
            DiffSource::Tree(&src),
            Compression::Gzip,
            &WriteOptions {
                clamp_mtime: Some(0),
                chunk_cache: Some(std::sync::Arc::new(NoCache)),
                ..Default::default()
            },
            &mut blob,
        )
        .unwrap();
        (desc, blob)
    };
    // The small file becomes `content`, and `store` writes the layer (descriptor and blob, byte
    // for byte) that compressing from scratch gives.
    let rebuilt_as_fresh = |store: &Store, content: &str| {
        fs::write(src.join("z/small.txt"), content).unwrap();
        let (want, want_blob) = fresh();
        let got = tree_layer(store, &src);
        assert_eq!(got, want);
        assert_eq!(fs::read(store.blob_path(&got.digest)).unwrap(), want_blob);
    };
    // The small file changes: the big file's chunks come from the first blob.
    rebuilt_as_fresh(&store, "v2, longer\n");
    // An index that lies (every record pointing at the wrong bytes) costs time, not the blob.
    let good = fs::read(&index).unwrap();
    let mut lies = good.clone();
    for r in lies[16..].chunks_exact_mut(60) {
        r[32..40].copy_from_slice(&11u64.to_le_bytes());
    }
    fs::write(&index, &lies).unwrap();
    rebuilt_as_fresh(&Store::open(&t.path().join("root")).unwrap(), "v3\n");
    // Sound records, but one byte of every recorded chunk of every blob altered since (bit
    // rot): the same.
    fs::write(&index, &good).unwrap();
    for e in fs::read_dir(t.path().join("root/gzip-chunks-v2")).unwrap() {
        let e = e.unwrap();
        let blob = t.path().join("root/blobs/sha256").join(e.file_name());
        let mut bytes = fs::read(&blob).unwrap();
        for (offset, len) in records(&e.path()) {
            bytes[(offset + len / 2) as usize] ^= 0x20;
        }
        fs::write(&blob, &bytes).unwrap();
    }
    rebuilt_as_fresh(
        &Store::open(&t.path().join("root")).unwrap(),
        "v4, longer again\n",
    );
}

#[test]
fn cache_entries_and_prune() {
    let (t, store, l) = setup();
    let img = store
        .commit_image(&config("sh"), std::slice::from_ref(&l), &[])
        .unwrap();
    store.snapshots_for(&img).unwrap();
    // A second layer kept alive only by a cache entry.
    let src2 = t.path().join("src2");
    tree(&src2, &[("x", "y")]);
    let l2 = store
        .write_layer(
            DiffSource::Tree(&src2),
            Compression::Zstd,
            &WriteOptions::default(),
        )
        .unwrap();
    store
        .cache_put("k", b"v", std::slice::from_ref(&l2.digest))
        .unwrap();
    assert_eq!(store.cache_get("k").unwrap().as_deref(), Some(&b"v"[..]));
    // Nothing else uses the store: prune may remove recent files.
    let rep = store
        .prune(&PruneOptions {
            dangling_images: false,
            build_cache: false,
        })
        .unwrap();
    assert!(rep.images.is_empty() && rep.blobs.is_empty(), "{rep:?}");
    assert!(store.has_blob(&l2.digest));
    // The untagged image is dangling.
    let rep = store
        .prune(&PruneOptions {
            dangling_images: true,
            build_cache: false,
        })
        .unwrap();
    assert_eq!(rep.images, std::slice::from_ref(&img.id));
    assert!(rep.blobs.contains(&l.digest) && rep.blobs.contains(&img.id));
    assert_eq!(rep.snapshots, 1);
    assert!(!store.has_blob(&l.digest));
    assert!(
        !t.path()
            .join("root/gzip-chunks-v2")
            .join(&l.digest[7..])
            .exists(),
        "a pruned blob's chunk index goes with it"
    );
    assert!(store.has_blob(&l2.digest), "kept by the cache entry");
    // A cache entry whose blob is gone is dropped.
    fs::remove_file(store.blob_path(&l2.digest)).unwrap();
    let rep = store.prune(&PruneOptions::default()).unwrap();
    assert_eq!(rep.cache_entries, 1);
    assert_eq!(store.cache_get("k").unwrap(), None);
    let c = store.check().unwrap();
    assert!(c.problems.is_empty() && c.garbage.is_empty(), "{c:?}");
}

#[test]
fn a_cache_entry_held_by_a_snapshot_lives_and_dies_with_it() {
    let (t, store, _l) = setup();
    let src = t.path().join("src3");
    tree(&src, &[("a", "b")]);
    let l = store_layer(&store, &src);
    let snap = store.snapshot(&l).unwrap();
    store.cache_put_snapshot("s", b"v", &l.diff_id).unwrap();
    assert!(store.has_snapshot(&l.diff_id).unwrap());
    // Nothing references the blob: prune removes it, and keeps the snapshot and the entry.
    let rep = store.prune(&PruneOptions::default()).unwrap();
    assert!(rep.blobs.contains(&l.digest), "{rep:?}");
    assert_eq!((rep.cache_entries, rep.snapshots), (0, 0), "{rep:?}");
    assert!(snap.is_dir());
    assert_eq!(store.cache_get("s").unwrap().as_deref(), Some(&b"v"[..]));
    assert!(store.check().unwrap().garbage.is_empty());
    // `system df` counts the snapshot (one file of one byte) as the entry's size.
    let usage = store.build_cache_usage().unwrap();
    assert_eq!((usage.entries, usage.size, usage.reclaimable), (1, 1, 1));
    // It has no blob to send with an exported cache.
    assert!(store.cache_entries().unwrap().iter().all(|e| e.key != "s"));
    // Its snapshot gone, the entry is dropped.
    fs::remove_dir_all(&snap).unwrap();
    assert!(!store.has_snapshot(&l.diff_id).unwrap());
    let rep = store.prune(&PruneOptions::default()).unwrap();
    assert_eq!(rep.cache_entries, 1);
    assert_eq!(store.cache_get("s").unwrap(), None);
    // Written again with a blob list, the key no longer holds the snapshot, which prune removes.
    store.snapshot(&store_layer(&store, &src)).unwrap();
    store.cache_put_snapshot("s", b"v", &l.diff_id).unwrap();
    store.cache_put("s", b"w", &[]).unwrap();
    let rep = store.prune(&PruneOptions::default()).unwrap();
    assert_eq!(rep.snapshots, 1, "{rep:?}");
    // The whole cache goes with --build-cache (`system prune`).
    store.snapshot(&store_layer(&store, &src)).unwrap();
    store.cache_put_snapshot("s", b"v", &l.diff_id).unwrap();
    let rep = store
        .prune(&PruneOptions {
            dangling_images: false,
            build_cache: true,
        })
        .unwrap();
    assert!(rep.cache_entries >= 1);
    assert_eq!(store.cache_get("s").unwrap(), None);
    assert!(store.check().unwrap().garbage.is_empty());
}

#[test]
fn the_contexts_hash_memos_go_with_the_whole_build_cache() {
    let (_t, store, _) = setup();
    let memo = store.context_hash_dir().join("context-hashes-v2-0123.bin");
    fs::create_dir_all(memo.parent().unwrap()).unwrap();
    fs::write(&memo, b"memo").unwrap();
    store.prune(&PruneOptions::default()).unwrap();
    assert!(memo.exists(), "an ordinary prune keeps the memo");
    store
        .prune(&PruneOptions {
            dangling_images: false,
            build_cache: true,
        })
        .unwrap();
    assert!(!memo.exists());
}

/// Writes `src` as a gzip layer of `store`.
fn store_layer(store: &Store, src: &Path) -> cairn_layer::LayerDescriptor {
    store
        .write_layer(
            DiffSource::Tree(src),
            Compression::Gzip,
            &WriteOptions::default(),
        )
        .unwrap()
}

#[test]
fn check_finds_corruption_and_stale_index() {
    let (_t, store, l) = setup();
    store
        .commit_image(&config("sh"), std::slice::from_ref(&l), &["a".into()])
        .unwrap();
    assert!(store.check().unwrap().problems.is_empty());
    fs::write(store.blob_path(&l.digest), b"garbage").unwrap();
    let c = store.check().unwrap();
    assert!(
        c.problems
            .iter()
            .any(|p| p.contains(&l.digest) && p.contains("corrupt")),
        "{c:?}"
    );
    fs::write(store.root().join("index.json"), b"{}").unwrap();
    assert!(store
        .check()
        .unwrap()
        .problems
        .iter()
        .any(|p| p.contains("index.json")));
    // Reopening repairs the index.
    let root = store.root().to_path_buf();
    drop(store);
    let store = Store::open(&root).unwrap();
    assert!(!store
        .check()
        .unwrap()
        .problems
        .iter()
        .any(|p| p.contains("index.json")));
}

#[test]
fn two_handles_share_one_store() {
    let (t, store, l) = setup();
    // Both open the database read-only (it exists) and become writers on their first write;
    // `reader` never writes.
    let other = Store::open(store.root()).unwrap();
    let reader = Store::open(store.root()).unwrap();
    store
        .commit_image(&config("a"), std::slice::from_ref(&l), &["one".into()])
        .unwrap();
    assert!(reader.resolve("one").unwrap().is_some());
    other
        .commit_image(&config("b"), std::slice::from_ref(&l), &["two".into()])
        .unwrap();
    assert_eq!(store.list_images().unwrap().len(), 2);
    assert!(other.resolve("one").unwrap().is_some());
    assert!(reader.resolve("two").unwrap().is_some());
    drop(store);
    drop(other);
    assert_eq!(reader.list_images().unwrap().len(), 2);
    drop(t);
}

#[test]
fn cache_mount_dirs_are_stable() {
    let (_t, store, _) = setup();
    let a = store.cache_mount_dir("go-build").unwrap();
    assert!(a.is_dir());
    assert_eq!(a, store.cache_mount_dir("go-build").unwrap());
    assert_ne!(a, store.cache_mount_dir("apt").unwrap());
}

#[test]
fn a_foreign_oci_layout_is_not_taken_over() {
    let (t, store, l) = setup();
    store
        .commit_image(&config("a"), &[l], &["one".into()])
        .unwrap();
    // Another tool's layout: blobs and an index, no database.
    let foreign = t.path().join("foreign");
    fs::create_dir_all(&foreign).unwrap();
    let index = fs::read(store.root().join("index.json")).unwrap();
    fs::write(foreign.join("index.json"), &index).unwrap();
    let err = Store::open(&foreign).unwrap_err().to_string();
    assert!(err.contains("not a cairn store"), "{err}");
    assert_eq!(
        fs::read(foreign.join("index.json")).unwrap(),
        index,
        "left as it was"
    );
    // An empty directory is fine.
    assert!(Store::open(&t.path().join("new")).is_ok());
}

#[test]
fn a_config_oci_spec_rejects_still_lists() {
    let (_t, store, l) = setup();
    // No architecture/os, and a docker-only key: accepted, typed view defaulted, raw kept.
    let cfg = serde_json::json!({
        "config": { "Cmd": ["sh"], "Healthcheck": { "Test": ["NONE"] } },
        "rootfs": { "type": "layers", "diff_ids": [l.diff_id] },
    });
    let img = store
        .commit_image_json(&cfg, &[l], &["odd".into()])
        .unwrap();
    assert_eq!(
        img.config
            .config()
            .as_ref()
            .unwrap()
            .cmd()
            .as_ref()
            .unwrap(),
        &vec!["sh".to_string()]
    );
    assert_eq!(store.list_images().unwrap().len(), 1);
    let raw = store.config_json(&img).unwrap();
    assert_eq!(raw["config"]["Healthcheck"]["Test"][0], "NONE");
}

/// The size of a layer is docker's, which depends on where the layer came from (tutorial 7.1:
/// `COPY --from=builder /usr/share/zoneinfo ...` was 4,216 bytes larger than BuildKit's image,
/// the target lengths of the 365 symlinks in zoneinfo). A layer a build writes counts its
/// regular files only, hardlinks once: moby sums the tar entries' sizes of a BuildKit layer. The
/// same layer imported (docker load/pull/import) also counts symlink target lengths: overlay2
/// measures an applied layer by an lstat walk.
#[test]
fn layer_sizes_follow_docker_per_origin() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let zi = src.join("usr/share/zoneinfo");
    tree(&zi, &[("Africa/Nairobi", "0123456789")]);
    std::os::unix::fs::symlink("Nairobi", zi.join("Africa/Asmera")).unwrap();
    std::os::unix::fs::symlink("../Africa/Nairobi", zi.join("Africa/Asmara")).unwrap();
    fs::create_dir_all(zi.join("posix/Africa")).unwrap();
    fs::hard_link(zi.join("Africa/Nairobi"), zi.join("posix/Africa/Nairobi")).unwrap();
    fs::write(zi.join("empty"), "").unwrap();

    let built = Store::open(&t.path().join("built")).unwrap();
    let l = tree_layer(&built, &src);
    assert_eq!(
        built.layer_size(&l).unwrap(),
        10,
        "a built layer: regular files only"
    );
    let img = built
        .commit_image(
            &config("sh"),
            std::slice::from_ref(&l),
            &["zi:built".into()],
        )
        .unwrap();
    assert_eq!(img.size, 10);

    // The same blob imported into another store: as `docker load` measures it.
    let mut blob = Vec::new();
    built.copy_blob(&l.digest, &mut blob).unwrap();
    let imported = Store::open(&t.path().join("imported")).unwrap();
    let li = imported.import_layer(&blob[..], Compression::Gzip).unwrap();
    assert_eq!(li.diff_id, l.diff_id);
    let symlinks = ("Nairobi".len() + "../Africa/Nairobi".len()) as u64;
    assert_eq!(imported.layer_size(&li).unwrap(), 10 + symlinks);
    let img = imported
        .commit_image(
            &config("sh"),
            std::slice::from_ref(&li),
            &["zi:loaded".into()],
        )
        .unwrap();
    assert_eq!(img.size, 10 + symlinks);
}
