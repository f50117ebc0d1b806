//! The image commands as a user runs them: import a busybox rootfs, list, inspect, history,
//! tag, save in both formats, load back, rmi, prune. Runs the real binary.

mod common;

use common::*;
use serde_json::Value;

fn import_busybox(root: &std::path::Path, tar: &std::path::Path, name: &str) -> String {
    let id = ok(
        root,
        &[
            "import",
            "--change",
            "CMD [\"sh\"]",
            "-c",
            "ENV PATH=/bin",
            tar.to_str().unwrap(),
            name,
        ],
    );
    let id = id.trim().to_string();
    assert!(
        id.starts_with("sha256:") && id.len() == 71,
        "import prints the ID: {id}"
    );
    id
}

#[test]
fn import_list_inspect_history() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    let tar = busybox_tar(t.path());
    let id = import_busybox(&root, &tar, "busybox:1");

    let images = ok(&root, &["images"]);
    let lines: Vec<&str> = images.lines().collect();
    assert_eq!(lines.len(), 2, "{images}");
    assert!(
        lines[0].starts_with("REPOSITORY   TAG       IMAGE ID       CREATED"),
        "{images}"
    );
    let cols: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&cols[..3], ["busybox", "1", &id[7..19]]);
    assert!(
        lines[1].contains("years ago"),
        "created at the epoch: {images}"
    );
    // Size: busybox binary + symlink lengths, printed as docker does (e.g. 1.98MB).
    let size = cols.last().unwrap();
    assert!(size.ends_with("MB") && size.len() <= 6, "{size}");

    assert_eq!(ok(&root, &["images", "-q"]).trim(), &id[7..19]);
    assert_eq!(
        ok(
            &root,
            &[
                "images",
                "--format",
                "{{.Repository}}:{{.Tag}} {{.ID}}",
                "--no-trunc"
            ]
        )
        .trim(),
        format!("busybox:1 {id}")
    );
    let table = ok(
        &root,
        &["images", "--format", "table {{.Repository}}\\t{{.Size}}"],
    );
    assert!(
        table.starts_with("REPOSITORY   SIZE\nbusybox      "),
        "{table:?}"
    );
    assert_eq!(
        ok(&root, &["images", "other"]).lines().count(),
        1,
        "filter by repository"
    );
    assert_eq!(
        ok(&root, &["images", "-q", "-f", "reference=busy*"]).trim(),
        &id[7..19]
    );
    assert_eq!(
        ok(&root, &["images", "-q", "-f", "reference=*:2"]).trim(),
        ""
    );
    assert_eq!(
        ok(&root, &["images", "-q", "-f", "dangling=true"]).trim(),
        ""
    );

    let v: Value = serde_json::from_str(&ok(&root, &["inspect", "busybox:1"])).unwrap();
    let i = &v[0];
    assert_eq!(i["Id"], id.as_str());
    assert_eq!(i["RepoTags"], serde_json::json!(["busybox:1"]));
    assert_eq!(i["Config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(i["Config"]["Env"], serde_json::json!(["PATH=/bin"]));
    assert_eq!(i["Os"], "linux");
    assert_eq!(i["Comment"], "Imported from -");
    assert_eq!(i["RootFS"]["Type"], "layers");
    assert_eq!(i["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    let bb = std::fs::metadata(BUSYBOX).unwrap().len();
    assert!(i["Size"].as_u64().unwrap() > bb && i["Size"].as_u64().unwrap() < bb + 10_000);
    assert_eq!(
        ok(
            &root,
            &[
                "inspect",
                "-f",
                "{{.Config.Cmd}} {{json .Config.Env}}",
                &id[7..15]
            ]
        )
        .trim(),
        "[sh] [\"PATH=/bin\"]"
    );

    let h = ok(&root, &["history", "busybox:1"]);
    assert!(
        h.starts_with("IMAGE          CREATED        CREATED BY   SIZE      COMMENT"),
        "{h}"
    );
    assert!(h.contains("Imported from -"));
    assert_eq!(
        ok(&root, &["history", "-q", "busybox:1"])
            .lines()
            .collect::<Vec<_>>(),
        [&id[7..19]]
    );

    let missing = cairn(&root).args(["inspect", "nope"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("No such image: nope"));
}

#[test]
fn import_is_reproducible_and_reads_compressed_tars() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    let tar = busybox_tar(t.path());
    let a = ok(&root, &["import", tar.to_str().unwrap()]);
    let b = ok(&root, &["import", tar.to_str().unwrap()]);
    assert_eq!(a, b, "same tarball, same image ID");
    for (tool, ext) in [("gzip", "gz"), ("zstd", "zst"), ("xz", "xz")] {
        let out = t.path().join(format!("busybox.tar.{ext}"));
        let st = std::process::Command::new(tool)
            .arg("-c")
            .arg(&tar)
            .stdout(std::fs::File::create(&out).unwrap())
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(ok(&root, &["import", out.to_str().unwrap()]), a, "{tool}");
    }
    // From stdin.
    let c = cairn(&root)
        .args(["import", "-"])
        .pipe_stdin(&tar)
        .unwrap()
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&c.stdout), a);
    // SOURCE_DATE_EPOCH sets `created`, hence another ID.
    let d = cairn(&root)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["import", tar.to_str().unwrap()])
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&d.stdout), a);
    let created = ok(
        &root,
        &[
            "inspect",
            "-f",
            "{{.Created}}",
            String::from_utf8_lossy(&d.stdout).trim(),
        ],
    );
    assert_eq!(created.trim(), "2023-11-14T22:13:20Z");
    // A tarball that escapes is refused, naming the entry.
    let evil = t.path().join("evil.tar");
    std::fs::create_dir(t.path().join("sub")).unwrap();
    std::fs::write(t.path().join("escaped"), b"x").unwrap();
    let st = std::process::Command::new("tar")
        .current_dir(t.path().join("sub"))
        .args(["-cPf", "../evil.tar", "../escaped"])
        .status()
        .unwrap();
    assert!(st.success());
    let e = cairn(&root)
        .args(["import", evil.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!e.status.success());
    assert!(String::from_utf8_lossy(&e.stderr).contains("../escaped"));
}

#[test]
fn tag_save_load_rmi_prune() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    let tar = busybox_tar(t.path());
    let id = import_busybox(&root, &tar, "busybox");
    ok(&root, &["tag", "busybox", "localhost:5000/bb:v1"]);
    let tags = ok(&root, &["inspect", "-f", "{{json .RepoTags}}", "busybox"]);
    assert_eq!(tags.trim(), r#"["busybox:latest","localhost:5000/bb:v1"]"#);

    let docker_tar = t.path().join("out.tar");
    ok(
        &root,
        &[
            "save",
            "-o",
            docker_tar.to_str().unwrap(),
            "busybox",
            "localhost:5000/bb:v1",
        ],
    );
    let oci_dir = t.path().join("oci");
    ok(
        &root,
        &[
            "save",
            "--format",
            "oci",
            "-o",
            oci_dir.to_str().unwrap(),
            "busybox",
        ],
    );
    assert!(oci_dir.join("index.json").is_file() && oci_dir.join("oci-layout").is_file());

    // docker-archive: manifest.json names the tags as docker save does.
    let list = std::process::Command::new("tar")
        .arg("-xOf")
        .arg(&docker_tar)
        .arg("manifest.json")
        .output()
        .unwrap();
    let m: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(
        m[0]["RepoTags"],
        serde_json::json!(["busybox:latest", "localhost:5000/bb:v1"])
    );

    for (src, expect) in [(&docker_tar, 2), (&oci_dir, 1)] {
        let root2 = t.path().join(format!("store-{expect}"));
        let out = ok(&root2, &["load", "-i", src.to_str().unwrap()]);
        assert!(out.contains("Loaded image: busybox:latest"), "{out}");
        assert_eq!(out.lines().count(), expect, "{out}");
        assert_eq!(
            ok(&root2, &["inspect", "-f", "{{.Id}}", "busybox"]).trim(),
            id,
            "load keeps the ID"
        );
        assert!(ok(&root2, &["system", "check"]).ends_with("ok\n"));
    }
    // As docker: no archive into a directory that does not exist (nor one made for it).
    let missing = t.path().join("no-such-dir/out.tar");
    let out = cairn(&root)
        .args(["save", "-o", missing.to_str().unwrap(), "busybox"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("failed to save image: invalid output path: directory")
            && err.contains("no-such-dir\" does not exist"),
        "{err}"
    );
    assert!(!t.path().join("no-such-dir").exists());

    // Save to stdout (no -o) gives the same bytes as -o.
    let piped = cairn(&root)
        .args(["save", "busybox", "localhost:5000/bb:v1"])
        .output()
        .unwrap();
    assert!(piped.status.success());
    assert_eq!(
        piped.stdout,
        std::fs::read(&docker_tar).unwrap(),
        "save is deterministic"
    );
    // Load from stdin.
    let root3 = t.path().join("store-stdin");
    let out = cairn(&root3)
        .arg("load")
        .pipe_stdin(&docker_tar)
        .unwrap()
        .output()
        .unwrap();
    assert!(out.status.success());

    // rmi: untag one name, then the last one deletes.
    let conflict = cairn(&root).args(["rmi", &id[7..19]]).output().unwrap();
    assert!(!conflict.status.success());
    assert!(String::from_utf8_lossy(&conflict.stderr).contains("must be forced"));
    assert_eq!(
        ok(&root, &["rmi", "localhost:5000/bb:v1"]),
        "Untagged: localhost:5000/bb:v1\n"
    );
    assert_eq!(
        ok(&root, &["rmi", "busybox"]),
        format!("Untagged: busybox:latest\nDeleted: {id}\n")
    );
    assert_eq!(ok(&root, &["images", "-q"]), "");

    // Untagged (dangling) images and unreferenced blobs go with prune.
    let dangling = ok(&root, &["import", tar.to_str().unwrap()]);
    let blobs = |r: &std::path::Path| std::fs::read_dir(r.join("blobs/sha256")).unwrap().count();
    assert!(blobs(&root) > 0);
    let p = ok(&root, &["image", "prune", "-f"]);
    assert!(p.contains(&format!("deleted: {}", dangling.trim())), "{p}");
    assert!(p.contains("Total reclaimed space:"));
    ok(&root, &["system", "prune", "-f"]);
    assert_eq!(blobs(&root), 0, "nothing references any blob any more");
    assert!(ok(&root, &["system", "check"]).ends_with("ok\n"));
}

#[test]
fn check_reports_a_corrupt_blob() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    let tar = busybox_tar(t.path());
    import_busybox(&root, &tar, "busybox");
    let layer = ok(
        &root,
        &["inspect", "-f", "{{index .RootFS.Layers 0}}", "busybox"],
    );
    assert!(layer.starts_with("sha256:"));
    // Corrupt the biggest blob (the layer).
    let mut biggest = None;
    for e in std::fs::read_dir(root.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let len = e.metadata().unwrap().len();
        if biggest.as_ref().is_none_or(|(l, _)| len > *l) {
            biggest = Some((len, e.path()));
        }
    }
    let (_, path) = biggest.unwrap();
    std::fs::write(&path, b"rot").unwrap();
    let out = cairn(&root).args(["system", "check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("PROBLEM: blob") && s.contains("corrupt"), "{s}");
}

#[test]
fn two_processes_share_a_store() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    let tar = busybox_tar(t.path());
    // Several imports at once, each a separate process, each with its own tag.
    let children: Vec<_> = (0..4)
        .map(|i| {
            cairn_cmd(&root)
                .args([
                    "import",
                    "--change",
                    &format!("LABEL n={i}"),
                    tar.to_str().unwrap(),
                    &format!("bb:{i}"),
                ])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success());
    }
    let listed = ok(&root, &["images", "--format", "{{.Tag}}"]);
    let mut tags: Vec<&str> = listed.lines().collect();
    tags.sort();
    assert_eq!(tags, ["0", "1", "2", "3"]);
    assert!(ok(&root, &["system", "check"]).ends_with("ok\n"));
}

#[test]
fn a_long_write_blocks_neither_readers_nor_other_writers() {
    use std::io::Write;
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    let tar = busybox_tar(t.path());
    ok(&root, &["import", tar.to_str().unwrap(), "first"]);
    // An import that is stuck reading its input half-way.
    let mut slow = cairn_cmd(&root)
        .args(["import", "-", "second"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let bytes = std::fs::read(&tar).unwrap();
    let mut stdin = slow.stdin.take().unwrap();
    stdin.write_all(&bytes[..bytes.len() / 2]).unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let start = std::time::Instant::now();
    assert_eq!(
        ok(&root, &["images", "--format", "{{.Repository}}"]).trim(),
        "first"
    );
    ok(&root, &["tag", "first", "third"]);
    assert!(ok(&root, &["system", "check"]).ends_with("ok\n"));
    assert!(
        start.elapsed() < std::time::Duration::from_secs(10),
        "nothing waited for the import"
    );
    stdin.write_all(&bytes[bytes.len() / 2..]).unwrap();
    drop(stdin);
    assert!(slow.wait_with_output().unwrap().status.success());
    let names = ok(&root, &["images", "--format", "{{.Repository}}"]);
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    assert_eq!(names, ["first", "second", "third"]);
}
