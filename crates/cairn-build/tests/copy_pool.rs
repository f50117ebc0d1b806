//! The store's file pool in real builds: a `COPY . .` that reruns links its big files from the
//! pool into the new layer, and the image is the one a store without the pool builds.
//!
//! Needs root: the steps' roots are overlay mounts (CI runs as root); skipped otherwise.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use cairn_build::context::BuildContext;
use cairn_build::{build, BuildOutput, BuildRequest, Reporter, StoreResolver};
use cairn_store::Store;

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

const DOCKERFILE: &str = "FROM scratch
WORKDIR /ctx
COPY . .
COPY --chmod=600 big.bin /other/
";

fn build_in(store: &Store, ctx_dir: &Path) -> BuildOutput {
    let ctx = BuildContext::open(ctx_dir, None).unwrap();
    let req = BuildRequest {
        dockerfile_name: "Dockerfile".into(),
        dockerfile: DOCKERFILE.into(),
        context: Some(&ctx),
        // Later than the context's mtimes (set below): the layers keep them, unclamped, so a
        // wrong file or directory time shows in the image ID. What the build creates now
        // (WORKDIR, /other) is clamped to it, so two builds make the same layers.
        source_date_epoch: Some(1_700_000_000),
        ..Default::default()
    };
    let sink = |_e: cairn_build::Event| {};
    let reporter = Reporter::new(&sink);
    build(store, &StoreResolver::new(store), &req, &reporter).unwrap()
}

fn set_mtime(p: &Path, sec: i64, nsec: i64) {
    let t = rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    };
    let ts = rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &ts,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// Bytes no compressor makes small (a simple xorshift stream).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The entries of the layer `l` of `store`: (path, tar entry type, size, mode).
fn entries(store: &Store, l: &cairn_store::LayerDescriptor) -> Vec<(String, u8, u64, u32)> {
    let f = fs::File::open(store.blob_path(&l.digest)).unwrap();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    tar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let mut sink = Vec::new();
            e.read_to_end(&mut sink).unwrap();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                h.entry_type().as_byte(),
                h.size().unwrap(),
                h.mode().unwrap(),
            )
        })
        .collect()
}

/// Pool objects of `store` linked from at least `n` places besides the pool.
fn objects_linked(store: &Store, n: u64) -> usize {
    fs::read_dir(store.file_pool().dir())
        .map(|d| {
            d.flatten()
                .filter(|e| e.metadata().is_ok_and(|m| m.nlink() > n))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn rebuilds_link_big_files_and_build_the_same_image() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(ctx.join("sub")).unwrap();
    fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    fs::write(ctx.join("small.txt"), "small\n").unwrap();
    let big = noise(1 << 20, 1);
    fs::write(ctx.join("big.bin"), &big).unwrap();
    // Two more files with the same content: they must stay two regular files in the layer.
    fs::write(ctx.join("sub/big.bin"), &big).unwrap();
    fs::write(ctx.join("sub/twin.bin"), &big).unwrap();
    fs::write(ctx.join("sub/tool"), noise(600 << 10, 2)).unwrap();
    fs::set_permissions(ctx.join("sub/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    // Hashed files are remembered (and so pooled) only when older than two seconds.
    for (f, nsec) in [
        ("big.bin", 111),
        ("sub/big.bin", 222),
        ("sub/twin.bin", 222),
        ("sub/tool", 333_333_333),
        ("small.txt", 0),
    ] {
        set_mtime(&ctx.join(f), 1_600_000_000, nsec);
    }
    set_mtime(&ctx.join("sub"), 1_600_000_100, 7);
    set_mtime(&ctx, 1_600_000_200, 9);

    let a = Store::open(&tmp.path().join("a")).unwrap();
    let cold = build_in(&a, &ctx);
    // Published by the cold build: 4 files of `COPY . .`, 1 of the second COPY.
    assert_eq!(objects_linked(&a, 1), 5, "published");

    fs::write(ctx.join("small.txt"), "small, changed\n").unwrap();
    let warm = build_in(&a, &ctx);
    assert_ne!(cold.image_id, warm.image_id);
    // Linked into the rebuilt COPY . . layer: the pool, the cold snapshot and the warm one. The
    // second COPY reran (its parent changed) and linked its file too, but its layer is the cold
    // build's: that snapshot exists, its new upper dir was dropped.
    assert_eq!(objects_linked(&a, 2), 4, "linked");

    // The image a fresh store builds from the same context, without any pool object.
    let b = Store::open(&tmp.path().join("b")).unwrap();
    let fresh = build_in(&b, &ctx);
    assert_eq!(warm.layers, fresh.layers);
    assert_eq!(warm.image_id, fresh.image_id);

    // The rebuilt layer: every big file a regular file with its content, mode and size.
    let copy_layer = &warm.layers[1];
    let es = entries(&a, copy_layer);
    for (path, mode, size) in [
        ("ctx/big.bin", 0o644, 1 << 20),
        ("ctx/sub/big.bin", 0o644, 1 << 20),
        ("ctx/sub/twin.bin", 0o644, 1 << 20),
        ("ctx/sub/tool", 0o755, 600 << 10),
    ] {
        let e = es
            .iter()
            .find(|e| e.0 == path)
            .unwrap_or_else(|| panic!("{path} missing: {es:?}"));
        assert_eq!(e.1, b'0', "{path} is not a regular file: {e:?}");
        assert_eq!((e.2, e.3), (size, mode), "{path}");
    }
    let snap = a.snapshot_path(&copy_layer.diff_id);
    assert_eq!(fs::read(snap.join("ctx/sub/twin.bin")).unwrap(), big);
    assert_ne!(
        fs::metadata(snap.join("ctx/sub/twin.bin")).unwrap().ino(),
        fs::metadata(snap.join("ctx/sub/big.bin")).unwrap().ino()
    );

    // Without the pool, in a third store: the same image again.
    std::env::set_var("CAIRN_FILE_POOL", "off");
    let c = Store::open(&tmp.path().join("c")).unwrap();
    let off = build_in(&c, &ctx);
    std::env::remove_var("CAIRN_FILE_POOL");
    assert_eq!(off.image_id, warm.image_id);
    assert_eq!(objects_linked(&c, 0), 0);

    // Prune keeps what snapshots use.
    let rep = a.prune(&Default::default()).unwrap();
    assert_eq!(rep.pool_files, 0);
}
