//! `cairn check --no-build` (the Dockerfile rules only; no root, no base image needed) and
//! `cairn check --image` on an imported image.

mod common;

use std::fs;

use common::{stdout, tar_dir, Cairn};

/// A context holding `dockerfile` as its Dockerfile.
fn ctx(dockerfile: &str) -> Cairn {
    let c = Cairn::new();
    c.write("Dockerfile", dockerfile);
    c
}

#[test]
fn warnings_print_as_buildkit_with_line_and_hint_and_exit_zero() {
    let c = ctx("FROM alpine:3.20 as build\nRUN echo hi\nFROM alpine:3.20\nCOPY --from=build /x /x\nUSER 1000\nCMD /x\n");
    let o = c.on_ctx(&["check", "--no-build"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.starts_with(
            "WARN: FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 1)\n  at Dockerfile:1\n  hint: write `FROM ... AS build`\n  see https://docs.docker.com/go/dockerfile/rule/from-as-casing/\n"
        ),
        "{out}"
    );
    assert!(out.contains("WARN: JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 6)"), "{out}");
    assert!(
        out.ends_with("Check complete: 0 errors, 2 warnings.\n"),
        "{out}"
    );
}

#[test]
fn check_directives_and_check_error_decide_the_exit_code() {
    let c = ctx("# check=error=true\nFROM alpine:3.20 as build\nUSER 1000\n");
    let o = c.on_ctx(&["check", "--no-build"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("(warnings are errors: check=error=true)"));

    let c = ctx("# check=skip=FromAsCasing;error=true\nFROM alpine:3.20 as build\nUSER 1000\n");
    let o = c.on_ctx(&["check", "--no-build"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert_eq!(stdout(&o), "Check complete, no issues found.\n");

    let c = ctx("FROM alpine:3.20 as build\nUSER 1000\n");
    let o = c.on_ctx(&["check", "--no-build", "--check-error", "--format", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["findings"][0]["rule"], "FromAsCasing");
    assert_eq!(v["findings"][0]["severity"], "warning");
    assert_eq!(v["findings"][0]["line"], 1);
    assert_eq!(v["error_on_warnings"], true);
}

#[test]
fn copy_of_a_dockerignored_file_is_reported() {
    let c = ctx("FROM alpine:3.20\nCOPY secrets/app.env /app/\nCOPY app.txt /app/\nUSER 1000\n");
    c.write(".dockerignore", "secrets\n");
    let o = c.on_ctx(&["check", "--no-build"]);
    let out = stdout(&o);
    assert!(out.contains("WARN: CopyIgnoredFile: Attempting to Copy file \"secrets/app.env\" that is excluded by .dockerignore (line 2)"), "{out}");
    assert!(!out.contains("app.txt"), "{out}");
    // With an exception BuildKit does not judge: neither do we.
    c.write(".dockerignore", "secrets\n!secrets/app.env\n");
    let o = c.on_ctx(&["check", "--no-build"]);
    assert!(!stdout(&o).contains("CopyIgnoredFile"), "{}", stdout(&o));
}

#[test]
fn check_image_reads_a_stored_image() {
    let c = ctx("FROM scratch\nCOPY id_rsa /\nUSER 1000\n");
    let rootfs = c.dir().join("rootfs");
    fs::create_dir_all(rootfs.join("root/.ssh")).unwrap();
    fs::write(
        rootfs.join("root/.ssh/id_rsa"),
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\n",
    )
    .unwrap();
    let tar = c.dir().join("img.tar");
    tar_dir(&rootfs, &tar);
    c.import(&tar, "leaky:1", &[]);
    // An imported image has no Dockerfile history: all of it is checked.
    let o = c.on_ctx(&["check", "--image", "leaky:1"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("ERROR: SecretInLayer: SSH private key file in /root/.ssh/id_rsa, present in the final image"), "{out}");
    assert!(
        out.contains("ERROR: SecretInLayer: RSA PRIVATE KEY (PEM) in /root/.ssh/id_rsa:1"),
        "{out}"
    );
    assert!(
        out.contains("  in stage leaky:1, layer 0 (sha256:"),
        "{out}"
    );
}

#[test]
fn a_failed_build_is_an_error_finding_and_the_dockerfile_rules_still_run() {
    // The build enters a mount namespace first: root only (CI runs as root).
    if !common::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let c = ctx("FROM nosuchimage:1 as b\nUSER 1000\n");
    let o = c.on_ctx(&["check", "--format", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rules: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, vec!["FromAsCasing", "BuildFailed"], "{v}");
    assert!(
        v["findings"][1]["message"]
            .as_str()
            .unwrap()
            .contains("nosuchimage"),
        "{v}"
    );
}

#[test]
fn list_rules_names_every_rule() {
    let c = ctx("FROM scratch\n");
    let o = c.on_ctx(&["check", "--list-rules"]);
    let out = stdout(&o);
    assert!(o.status.success());
    // 21 Dockerfile rules (18 of BuildKit's, 3 of the checklist), 8 image rules.
    assert_eq!(out.lines().count(), 29);
    assert!(
        out.lines()
            .any(|l| l.starts_with("SecretInLayer") && l.contains("error")),
        "{out}"
    );
}

#[test]
fn the_dockerfile_can_come_on_stdin() {
    let c = ctx("");
    let o = common::output_with_stdin(
        common::cairn_cmd(&c.root)
            .args(["check", "--no-build", "-f", "-"])
            .arg(&c.ctx),
        b"FROM alpine:3.20\nMAINTAINER me\nUSER 1\n",
    );
    assert!(stdout(&o).starts_with("WARN: MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label (line 2)\n  at Dockerfile:2\n"), "{}", stdout(&o));
}
