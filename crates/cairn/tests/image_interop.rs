//! Interop with real OCI tools: skopeo and umoci read the store root itself and the OCI layouts
//! `cairn save` writes; cairn loads what skopeo writes (OCI layouts, and docker-archives in the
//! pre-25 `docker save` shape). Needs the skopeo and umoci Debian packages; umoci unpack runs as
//! root here (CI runs as root).

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (scripts/deps installs it)"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn skopeo_digest(transport_ref: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&run("skopeo", &["inspect", transport_ref])).unwrap();
    v["Digest"].as_str().unwrap().to_string()
}

fn umoci_unpack(image: &str, bundle: &Path) {
    run(
        "umoci",
        &["unpack", "--image", image, bundle.to_str().unwrap()],
    );
    let bb = std::fs::read(bundle.join("rootfs/bin/busybox")).unwrap();
    assert_eq!(
        bb,
        std::fs::read(BUSYBOX).unwrap(),
        "umoci unpacked the busybox binary"
    );
    assert_eq!(
        std::fs::read_link(bundle.join("rootfs/bin/sh")).unwrap(),
        Path::new("busybox")
    );
}

#[test]
fn skopeo_and_umoci_read_the_store_and_saved_layouts() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    let tar = busybox_tar(t.path());
    ok(
        &root,
        &[
            "import",
            "--change",
            "CMD [\"sh\"]",
            tar.to_str().unwrap(),
            "busybox:1.35",
        ],
    );
    let digest = ok(&root, &["images", "--format", "{{.Digest}}"])
        .trim()
        .to_string();
    let r = root.to_str().unwrap();

    // The store root is an OCI layout; tags are findable by short and by full name.
    assert_eq!(skopeo_digest(&format!("oci:{r}:busybox:1.35")), digest);
    assert_eq!(
        skopeo_digest(&format!("oci:{r}:docker.io/library/busybox:1.35")),
        digest
    );
    umoci_unpack(&format!("{r}:busybox:1.35"), &t.path().join("bundle1"));

    // `save --format oci`: a directory and a tar.
    let dir = t.path().join("oci");
    ok(
        &root,
        &[
            "save",
            "--format",
            "oci",
            "-o",
            dir.to_str().unwrap(),
            "busybox:1.35",
        ],
    );
    assert_eq!(
        skopeo_digest(&format!("oci:{}:1.35", dir.display())),
        digest
    );
    umoci_unpack(
        &format!("{}:1.35", dir.display()),
        &t.path().join("bundle2"),
    );
    let otar = t.path().join("oci.tar");
    ok(
        &root,
        &[
            "save",
            "--format",
            "oci",
            "-o",
            otar.to_str().unwrap(),
            "busybox:1.35",
        ],
    );
    assert_eq!(
        skopeo_digest(&format!("oci-archive:{}:1.35", otar.display())),
        digest
    );
    // zstd layers on request, with the OCI media type that says so.
    ok(
        &root,
        &[
            "import",
            "--compression",
            "zstd",
            tar.to_str().unwrap(),
            "busybox:zstd",
        ],
    );
    let raw: serde_json::Value = serde_json::from_str(&run(
        "skopeo",
        &["inspect", "--raw", &format!("oci:{r}:busybox:zstd")],
    ))
    .unwrap();
    assert_eq!(
        raw["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert!(ok(&root, &["system", "check"]).ends_with("ok\n"));
    // The docker-archive is readable by skopeo's docker-archive transport too.
    let dtar = t.path().join("docker.tar");
    ok(
        &root,
        &["save", "-o", dtar.to_str().unwrap(), "busybox:1.35"],
    );
    let v: serde_json::Value = serde_json::from_str(&run(
        "skopeo",
        &["inspect", &format!("docker-archive:{}", dtar.display())],
    ))
    .unwrap();
    assert_eq!(v["Os"], "linux");
}

#[test]
fn cairn_loads_what_skopeo_writes() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    let tar = busybox_tar(t.path());
    let id = ok(
        &root,
        &[
            "import",
            "--change",
            "CMD [\"sh\"]",
            tar.to_str().unwrap(),
            "busybox",
        ],
    )
    .trim()
    .to_string();
    let r = root.to_str().unwrap();

    // An OCI layout written by skopeo, with a bare tag as its name: loaded untagged, same ID.
    let lay = t.path().join("skopeo-oci");
    run(
        "skopeo",
        &[
            "copy",
            &format!("oci:{r}:busybox:latest"),
            &format!("oci:{}:v1", lay.display()),
        ],
    );
    let root2 = t.path().join("store2");
    let out = ok(&root2, &["load", "-i", lay.to_str().unwrap()]);
    assert_eq!(out.trim(), format!("Loaded image ID: {id}"));

    // A docker-archive as `docker save` wrote it before docker 25 (config `<hex>.json`,
    // uncompressed `<hex>.tar` layers, no OCI index): what skopeo's docker-archive writes.
    let darch = t.path().join("legacy.tar");
    run(
        "skopeo",
        &[
            "copy",
            &format!("oci:{r}:busybox:latest"),
            &format!("docker-archive:{}:example/bb:legacy", darch.display()),
        ],
    );
    let root3 = t.path().join("store3");
    let out = ok(&root3, &["load", "-i", darch.to_str().unwrap()]);
    assert_eq!(out.trim(), "Loaded image: example/bb:legacy");
    assert_eq!(
        ok(
            &root3,
            &["inspect", "-f", "{{.Config.Cmd}}", "example/bb:legacy"]
        )
        .trim(),
        "[sh]"
    );
    assert!(ok(&root3, &["system", "check"]).ends_with("ok\n"));
    // And the loaded image unpacks.
    umoci_unpack(
        &format!("{}:example/bb:legacy", root3.display()),
        &t.path().join("bundle3"),
    );
}
