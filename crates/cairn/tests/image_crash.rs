//! Crash safety: `kill -9` at random points during `import` and `save`, 50 times. After every
//! kill the store still opens, `cairn system check` finds no problem (temp files of the killed
//! write are garbage, not problems), and every image committed before is still listed.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A tiny xorshift generator: the seed is printed so that a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn spawn(root: &std::path::Path, args: &[String]) -> std::process::Child {
    cairn_cmd(root)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn kill_9_during_import_and_save_loses_nothing_committed() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    let rootfs = busybox_rootfs(&t.path().join("rootfs"));
    // Incompressible payload so that each import spends its time in hashing and compressing.
    let mut payload = vec![0u8; 6 << 20];
    let mut r = Rng(0x9e3779b97f4a7c15);
    for chunk in payload.chunks_mut(8) {
        let v = r.next().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    std::fs::write(rootfs.join("payload"), &payload).unwrap();
    let tar = t.path().join("big.tar");
    tar_dir(&rootfs, &tar);
    ok(&root, &["import", tar.to_str().unwrap(), "base:0"]);

    // How long one import takes: kills land uniformly within that window.
    let start = Instant::now();
    ok(
        &root,
        &[
            "import",
            "--change",
            "LABEL probe=1",
            tar.to_str().unwrap(),
            "base:1",
        ],
    );
    let window = start.elapsed().as_micros().max(1000) as u64;

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed:#x}, window {window} µs");
    let mut rng = Rng(seed);
    let mut committed: BTreeSet<String> = ["base:0", "base:1"].map(String::from).into();
    let mut kills = 0;
    for i in 0..50 {
        let args: Vec<String> = if i % 2 == 0 {
            // A distinct label per round: a new config, manifest and index entry every time.
            [
                "import",
                "--change",
                &format!("LABEL round={i}"),
                tar.to_str().unwrap(),
                &format!("crash:{i}"),
            ]
            .map(String::from)
            .to_vec()
        } else {
            let out = t.path().join(format!("save-{i}.tar"));
            ["save", "-o", out.to_str().unwrap(), "base:0"]
                .map(String::from)
                .to_vec()
        };
        let mut child = spawn(&root, &args);
        std::thread::sleep(Duration::from_micros(rng.next() % window));
        let finished = matches!(child.try_wait(), Ok(Some(s)) if s.success());
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        if finished || status.success() {
            if i % 2 == 0 {
                committed.insert(format!("crash:{i}"));
            }
        } else {
            kills += 1;
        }

        let check = cairn(&root).args(["system", "check"]).output().unwrap();
        let report = String::from_utf8_lossy(&check.stdout);
        assert!(
            check.status.success(),
            "round {i} ({args:?}): check failed after kill:\n{report}"
        );
        let listed: BTreeSet<String> =
            ok(&root, &["images", "--format", "{{.Repository}}:{{.Tag}}"])
                .lines()
                .map(String::from)
                .collect();
        for c in &committed {
            assert!(
                listed.contains(c),
                "round {i}: committed image {c} lost; listed {listed:?}"
            );
        }
    }
    eprintln!("{kills} of 50 runs were killed mid-way");
    assert!(
        kills >= 10,
        "the kills should mostly land mid-operation ({kills})"
    );
    // The garbage of the killed runs goes with prune; the store stays healthy.
    ok(&root, &["system", "prune", "-f"]);
    let after = ok(&root, &["system", "check"]);
    assert!(
        after.ends_with("ok\n") && !after.contains("temp file"),
        "{after}"
    );
}
