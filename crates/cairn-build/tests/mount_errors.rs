//! `RUN --mount` and `RUN --security` refusals through the library: each build below must stop
//! with a message that names the problem, before any process runs (FROM scratch has no shell,
//! so a step that got as far as running would fail differently).
//!
//! Needs root: the RUN's root file system is an overlay mount (CI runs as root); skipped
//! otherwise.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cairn_build::context::BuildContext;
use cairn_build::{build, BuildRequest, Reporter, SecretValue, StoreResolver};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Builds `dockerfile` (context: a dir with `file.txt` and a link out of it) and returns the
/// error's text; panics if the build succeeds.
fn error_of(dockerfile: &str, tweak: impl FnOnce(&mut BuildRequest<'_>)) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let store = cairn_store::Store::open(&tmp.path().join("store")).unwrap();
    let dir = tmp.path().join("ctx");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("file.txt"), "x").unwrap();
    std::os::unix::fs::symlink("/etc", dir.join("etc-link")).unwrap();
    let ctx = BuildContext::open(&dir, None).unwrap();
    let mut req = BuildRequest {
        dockerfile_name: "Dockerfile".into(),
        dockerfile: dockerfile.into(),
        context: Some(&ctx),
        ..Default::default()
    };
    tweak(&mut req);
    let sink = |_e: cairn_build::Event| {};
    let reporter = Reporter::new(&sink);
    match build(&store, &StoreResolver::new(&store), &req, &reporter) {
        Ok(_) => panic!("the build of {dockerfile:?} succeeded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn insecure_needs_the_entitlement() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let e = error_of("FROM scratch\nRUN --security=insecure true\n", |_| {});
    assert!(e.contains("--allow security.insecure"), "{e}");
}

#[test]
fn bind_sources_out_of_the_context_are_refused() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let e = error_of(
        "FROM scratch\nRUN --mount=source=../x,target=/x true\n",
        |_| {},
    );
    assert!(e.contains("outside the context"), "{e}");
    let e = error_of(
        "FROM scratch\nRUN --mount=source=etc-link/passwd,target=/x true\n",
        |_| {},
    );
    assert!(e.contains("points out of it"), "{e}");
}

#[test]
fn required_secrets_and_agents_must_be_given() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let e = error_of(
        "FROM scratch\nRUN --mount=type=secret,id=tok,required true\n",
        |_| {},
    );
    assert!(e.contains("secret \"tok\" is required"), "{e}");
    let e = error_of("FROM scratch\nRUN --mount=type=ssh,required true\n", |r| {
        // Another id does not satisfy `default`.
        r.ssh = BTreeMap::from([("other".to_string(), PathBuf::from("/nonexistent"))]);
        r.secrets = BTreeMap::from([("tok".to_string(), SecretValue(b"v".to_vec()))]);
    });
    assert!(e.contains("ssh agent \"default\" is required"), "{e}");
}
