//! `cairn check` and `cairn compare` end to end: the real binary and build engine, a fresh store
//! per test, and the tutorial's Go example (examples/1.1-go) built on stand-ins made from
//! Debian's busybox-static: `alpine:latest` is busybox with an `apk` that accepts anything,
//! `golang:1.21` is busybox with a `go` that "compiles" by writing a small binary, and 30 MB of
//! toolchain files (so that sizes look like the tutorial's).
//!
//! These tests need root (overlay mounts and namespaces for RUN); CI runs as root. They are skipped
//! with a message when not run as root, or when /bin/busybox is missing.

mod common;

use std::fs;

use common::{busybox_rootfs_with, tar_dir_with, Cairn, PASSWD_ROOT, REPRODUCIBLE_TAR};

fn can_run() -> bool {
    common::can_run("cairn check tests build images and need root")
}

const FAKE_GO: &str = r#"#!/bin/sh
# Stand-in for `go build ... -o OUT .`: writes OUT (a 100 kB "static binary").
out=
while [ $# -gt 0 ]; do
  case "$1" in -o) out=$2; shift ;; esac
  shift
done
[ -n "$out" ] || { echo "go (stand-in): only 'go build -o OUT' is supported" >&2; exit 2; }
[ -f main.go ] || { echo "go (stand-in): no main.go" >&2; exit 1; }
head -c 100000 /bin/busybox > "$out"
chmod +x "$out"
"#;

const FAKE_APK: &str = "#!/bin/sh\necho \"apk (stand-in): $*\"\n";

/// A store with the `alpine:latest` and `golang:1.21` stand-ins.
fn env() -> Cairn {
    let env = Cairn::new();
    let path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    import(
        &env,
        "alpine:latest",
        &format!("ENV PATH={path}"),
        &[("sbin/apk", FAKE_APK.as_bytes(), 0o755)],
    );
    let toolchain = vec![0u8; 30_000_000];
    import(
        &env,
        "golang:1.21",
        &format!("ENV PATH=/usr/local/go/bin:{path}"),
        &[
            ("usr/local/go/bin/go", FAKE_GO.as_bytes(), 0o755),
            (
                "usr/local/go/pkg/tool/linux_amd64/compile",
                &toolchain,
                0o755,
            ),
        ],
    );
    env
}

/// Imports busybox plus `extra` files as `name`, with one `--change`.
fn import(env: &Cairn, name: &str, change: &str, extra: &[(&str, &[u8], u32)]) {
    let rootfs = env
        .dir()
        .join(format!("rootfs-{}", name.replace([':', '/'], "_")));
    let mut files = vec![("etc/passwd", PASSWD_ROOT.as_bytes(), 0o644)];
    files.extend_from_slice(extra);
    busybox_rootfs_with(
        &rootfs,
        &["etc", "root", "tmp", "proc", "dev", "sys"],
        &files,
    );
    let tar = rootfs.with_extension("tar");
    tar_dir_with(&rootfs, &tar, REPRODUCIBLE_TAR);
    env.import(&tar, name, &["-c", change]);
}

fn go_example() -> String {
    common::repo_root()
        .join("examples/1.1-go")
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn the_single_stage_go_image_fails_the_checklist_and_the_multi_stage_one_passes() {
    if !can_run() {
        return;
    }
    let env = env();
    let ctx = go_example();
    let single = format!("{ctx}/Dockerfile.single");
    let out = env.cairn(&["check", "-f", &single, &ctx]);
    let stdout = common::stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        common::stderr(&out)
    );
    assert!(stdout.contains("ERROR: SourceInFinalImage: "), "{stdout}");
    assert!(stdout.contains("/app/main.go (= main.go)"), "{stdout}");
    assert!(
        stdout.contains("ERROR: BuildToolInFinalImage: Build tools in the final image: go (/usr/local/go/bin/go)"),
        "{stdout}"
    );
    assert!(stdout.contains("WARN: SingleStageToolchain: "), "{stdout}");
    assert!(stdout.contains("WARN: JSONArgsRecommended") || !stdout.contains("CMD ./server"));

    let out = env.cairn(&["check", &ctx]);
    let stdout = common::stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        common::stderr(&out)
    );
    assert!(!stdout.contains("ERROR"), "{stdout}");
    // The checklist's warnings on the tutorial's file: alpine:latest, and no USER.
    let dockerfile = fs::read_to_string(format!("{ctx}/Dockerfile")).unwrap();
    let from_line = dockerfile
        .lines()
        .position(|l| l.starts_with("FROM alpine:latest"))
        .unwrap()
        + 1;
    assert!(
        stdout.contains(&format!(
            "WARN: UnpinnedBaseImage: Base image 'alpine:latest' is not pinned: 'latest' moves (line {from_line})"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("WARN: FinalStageRunsAsRoot"), "{stdout}");
    // --check-error turns those warnings into a failure; JSON says the same.
    let out = env.cairn(&["check", "--check-error", "--format", "json", &ctx]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["findings"][0]["rule"], "UnpinnedBaseImage");
    assert_eq!(v["findings"][0]["line"], from_line);
}

#[test]
fn an_id_rsa_copied_into_a_builder_and_deleted_later_is_caught_with_stage_layer_and_path() {
    if !can_run() {
        return;
    }
    let env = env();
    env.write(
        "id_rsa",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----\n",
    );
    env.write(
        "Dockerfile",
        "FROM alpine:latest AS builder\nCOPY id_rsa /root/.ssh/id_rsa\nRUN echo fetched > /app.bin\nRUN rm /root/.ssh/id_rsa\n\nFROM alpine:latest\nCOPY --from=builder /app.bin /app.bin\nUSER 1000\nCMD [\"/app.bin\"]\n",
    );
    let out = env.on_ctx(&["check"]);
    let stdout = common::stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        common::stderr(&out)
    );
    let block: Vec<&str> = stdout.split("ERROR: SecretInLayer: ").skip(1).collect();
    assert_eq!(block.len(), 2, "{stdout}");
    for b in block {
        assert!(b.contains("/root/.ssh/id_rsa"), "{b}");
        assert!(
            b.contains("deleted by layer 3 (RUN /bin/sh -c rm /root/.ssh/id_rsa"),
            "{b}"
        );
        assert!(b.contains("  in stage builder, layer 1 (sha256:"), "{b}");
        assert!(b.contains("made by `COPY id_rsa /root/.ssh/id_rsa"), "{b}");
        assert!(b.contains(", path /root/.ssh/id_rsa\n"), "{b}");
        // Traced back to the COPY of the Dockerfile.
        assert!(b.contains(" (line 2)\n  at Dockerfile:2\n"), "{b}");
    }
    // Passing the key as a secret mount instead leaves nothing behind.
    env.write(
        "Dockerfile",
        "FROM alpine:latest AS builder\nRUN echo fetched > /app.bin\n\nFROM alpine:latest\nCOPY --from=builder /app.bin /app.bin\nUSER 1000\nCMD [\"/app.bin\"]\n",
    );
    let out = env.on_ctx(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", common::stdout(&out));
    assert!(!common::stdout(&out).contains("SecretInLayer"));
}

/// `cairn images`'s SIZE of `reference`.
fn images_size(env: &Cairn, reference: &str) -> String {
    let out = env.cairn(&["images", reference, "--format", "{{.Size}}"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    common::stdout(&out).trim().to_string()
}

#[test]
fn compare_on_the_go_example_matches_cairn_images_and_shows_the_reduction() {
    if !can_run() {
        return;
    }
    let env = env();
    let ctx = go_example();
    let single = format!("{ctx}/Dockerfile.single");
    let out = env.cairn(&["compare", "-t", "goapp", "--baseline", &single, &ctx]);
    let stdout = common::stdout(&out);
    assert!(out.status.success(), "{stdout}\n{}", common::stderr(&out));
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("Reduction"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{stdout}");
    assert_eq!(rows[0][0], "builder");
    assert_eq!(rows[0][1], "golang:1.21");
    assert_eq!(rows[1][..2], ["1", "*"], "{stdout}");
    assert_eq!(rows[2][..2], ["baseline", "(Dockerfile.single)"]);
    // Sizes as `cairn images` prints them; layers as `cairn history -q | wc -l` counts them.
    for (row, tag) in [
        (&rows[0], "goapp:builder"),
        (&rows[1], "goapp:1"),
        (&rows[2], "goapp:baseline"),
    ] {
        let n = row.len();
        assert_eq!(row[n - 2], images_size(&env, tag), "{tag}: {stdout}");
        let h = env.cairn(&["history", "-q", tag]);
        assert_eq!(
            row[n - 1],
            common::stdout(&h).lines().count().to_string(),
            "{tag}"
        );
    }
    let red = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Reduction: "))
        .and_then(|r| r.split('%').next())
        .and_then(|p| p.parse::<f64>().ok())
        .expect("a Reduction line");
    assert!(red > 80.0, "{stdout}");
    assert!(stdout.contains("Reduction vs single-stage: "), "{stdout}");

    // --targets: only the listed ones, the last being the final image.
    let out = env.cairn(&["compare", "--targets", "builder", "--format", "json", &ctx]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rows"].as_array().unwrap().len(), 1);
    assert_eq!(v["rows"][0]["is_final"], true);
}

#[test]
fn compare_builds_every_stage_even_those_the_final_one_does_not_need() {
    if !can_run() {
        return;
    }
    let env = env();
    env.write(
        "Dockerfile",
        "FROM alpine:latest AS deps\nRUN head -c 3000000 /dev/zero > /deps.bin\n\nFROM deps AS test\nRUN echo ok > /tested\n\nFROM alpine:latest\nCOPY --from=deps /deps.bin /deps.bin\n",
    );
    let out = env.on_ctx(&["compare", "--format", "json"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["stage"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["deps", "test", "2"], "{v}");
    assert_eq!(rows[1]["base"], "stage deps");
    assert_eq!(rows[2]["is_final"], true);
    // test = deps + 3 bytes; the final image is alpine + the same 3 MB: no reduction to speak of.
    assert!(rows[1]["size"].as_u64() > rows[0]["size"].as_u64());
    let red = v["reduction_vs_largest"].as_f64().unwrap();
    assert!((0.0..1.0).contains(&red), "{v}");
}
