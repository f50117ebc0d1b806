//! The digest of `COPY . .` over a 20,000-file context must be cheap: files are read once per
//! build (in-memory memo) and, with a persisted memo, not at all while they are unchanged.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use cairn_build::context::BuildContext;
use cairn_build::copy::{inputs_digest, SourceRoot};
use common::{copy, request};

fn age(p: &Path) {
    // The memo ignores files modified in the last seconds (racy clean); the test's files are
    // made to look old.
    let f = fs::File::options().write(true).open(p).unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000))
        .unwrap();
}

#[test]
fn twenty_thousand_files() {
    let t = tempfile::tempdir().unwrap();
    let ctx_dir = t.path().join("ctx");
    for d in 0..200 {
        let dir = ctx_dir.join(format!("pkg{d:03}"));
        fs::create_dir_all(&dir).unwrap();
        for i in 0..100 {
            let p = dir.join(format!("f{i:03}.go"));
            fs::write(&p, format!("package p{d}\n// {i}\n")).unwrap();
            age(&p);
        }
    }
    fs::write(
        ctx_dir.join(".dockerignore"),
        "pkg19*\n!pkg190\n**/f09*.go\n",
    )
    .unwrap();
    // Aged too: a file that turns old enough between two builds is added to the memo then.
    age(&ctx_dir.join(".dockerignore"));
    let cache = t.path().join("cache");
    let c = copy(&["."], ".");
    let req = request(&c, "/app");

    let start = Instant::now();
    let ctx = BuildContext::open(&ctx_dir, None)
        .unwrap()
        .with_hash_cache(&cache);
    let d1 = inputs_digest(&req, &SourceRoot::Context(&ctx)).unwrap();
    let first = start.elapsed();
    ctx.save_hash_cache().unwrap();

    let start = Instant::now();
    let ctx2 = BuildContext::open(&ctx_dir, None)
        .unwrap()
        .with_hash_cache(&cache);
    let d2 = inputs_digest(&req, &SourceRoot::Context(&ctx2)).unwrap();
    let second = start.elapsed();
    assert_eq!(d1, d2);
    // Timing is bench/'s job; here: the no-op build wrote nothing (the memo was unchanged).
    eprintln!("20k files: first {first:?}, with persisted memo {second:?}");
    let memo_files = || -> Vec<(std::path::PathBuf, u64)> {
        use std::os::unix::fs::MetadataExt;
        let mut v: Vec<_> = fs::read_dir(&cache)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path(), e.metadata().unwrap().ino())
            })
            .collect();
        v.sort();
        v
    };
    let before = memo_files();
    assert_eq!(before.len(), 1, "one memo file per context: {before:?}");
    ctx2.save_hash_cache().unwrap();
    assert_eq!(memo_files(), before, "a no-op rewrote the memo");

    // One changed file changes the digest, even with the memo.
    let p = ctx_dir.join("pkg000/f000.go");
    fs::write(&p, "package changed\n").unwrap();
    let ctx3 = BuildContext::open(&ctx_dir, None)
        .unwrap()
        .with_hash_cache(&cache);
    assert_ne!(
        inputs_digest(&req, &SourceRoot::Context(&ctx3)).unwrap(),
        d1
    );
}
