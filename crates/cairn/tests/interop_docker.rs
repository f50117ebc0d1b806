//! Interop with a real docker daemon (Debian's docker.io 20.10, started by `scripts/dockerd` with
//! no bridge, no iptables, its own roots under /var/tmp/cairn-dockerd): `cairn save` → `docker
//! load` → `docker run`, `docker save` → `cairn load` → `cairn run`, and the history of a
//! two-stage `cairn build` as docker sees it.
//!
//! Needs root (dockerd, and `cairn run`'s sandbox); CI runs as root. Skipped, with the printed
//! reason, when not root or when `scripts/dockerd start` exits 3 (dockerd cannot be installed or
//! started here). The daemon is left running for the next tests (`scripts/dockerd stop` stops it).

mod common;

use common::*;
use std::process::Command;

/// Debian's client, the same version as the daemon (the one in /usr/local/bin may be newer).
const DOCKER: &str = "/usr/bin/docker";

/// Starts the private dockerd; `None` (after printing why) when the test must be skipped.
fn dockerd() -> Option<String> {
    // /proc/self belongs to the effective user of this process.
    let euid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
    if euid != 0 {
        eprintln!("skipped: interop_docker needs root (dockerd)");
        return None;
    }
    let out = Command::new(repo_root().join("scripts/dockerd"))
        .arg("start")
        .output()
        .expect("run scripts/dockerd");
    match out.status.code() {
        Some(0) => {}
        Some(3) => {
            eprintln!(
                "skipped: {}",
                String::from_utf8_lossy(&out.stderr).trim_end()
            );
            return None;
        }
        _ => panic!(
            "scripts/dockerd start failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
    let stdout = String::from_utf8(out.stdout).unwrap();
    let host = stdout
        .lines()
        .find_map(|l| l.strip_prefix("export DOCKER_HOST="))
        .unwrap_or_else(|| panic!("no DOCKER_HOST in {stdout:?}"))
        .to_string();
    Some(host)
}

/// `docker args...` against the private daemon; asserts success, returns stdout.
fn docker(host: &str, args: &[&str]) -> String {
    let out = Command::new(DOCKER)
        .env("DOCKER_HOST", host)
        .env("DOCKER_BUILDKIT", "1")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{DOCKER}: {e} (scripts/dockerd installs docker.io)"));
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Removes the test's images from docker even when an assertion fails.
struct DockerImages<'a> {
    host: &'a str,
    names: Vec<String>,
}

impl Drop for DockerImages<'_> {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new(DOCKER)
                .env("DOCKER_HOST", self.host)
                .args(["rmi", "-f", n])
                .output();
        }
    }
}

#[test]
fn cairn_and_docker_exchange_images_both_ways() {
    let Some(host) = dockerd() else { return };
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    let id = std::process::id();
    let bb = format!("cairn-interop-{id}/busybox:1");
    let from_docker = format!("cairn-interop-{id}/from-docker:1");
    let built = format!("cairn-interop-{id}/two-stage:1");
    let _cleanup = DockerImages {
        host: &host,
        names: vec![bb.clone(), from_docker.clone(), built.clone()],
    };

    // cairn → docker: the docker-archive of `cairn save` loads with the same image ID and runs.
    let tar = busybox_tar(t.path());
    ok(
        &root,
        &[
            "import",
            "--change",
            "CMD [\"sh\"]",
            tar.to_str().unwrap(),
            &bb,
        ],
    );
    let saved = t.path().join("bb.tar");
    ok(&root, &["save", "-o", saved.to_str().unwrap(), &bb]);
    let loaded = docker(&host, &["load", "-i", saved.to_str().unwrap()]);
    assert!(loaded.contains(&bb), "docker load said: {loaded}");
    let cairn_id = ok(&root, &["inspect", "--format", "{{.Id}}", &bb]);
    let docker_id = docker(&host, &["image", "inspect", "--format", "{{.Id}}", &bb]);
    assert_eq!(
        cairn_id.trim(),
        docker_id.trim(),
        "image ID after docker load"
    );
    let said = docker(
        &host,
        &[
            "run",
            "--rm",
            "--network=host",
            &bb,
            "/bin/sh",
            "-c",
            "echo ok",
        ],
    );
    assert_eq!(said, "ok\n");

    // docker → cairn: an image docker built on top of it, `docker save` → `cairn load` → run.
    let ctx = t.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {bb}\nRUN echo from-docker > /marker\nCMD [\"cat\", \"/marker\"]\n"),
    )
    .unwrap();
    docker(
        &host,
        &[
            "build",
            "--network=host",
            "-q",
            "-t",
            &from_docker,
            ctx.to_str().unwrap(),
        ],
    );
    let dsaved = t.path().join("from-docker.tar");
    docker(
        &host,
        &["save", "-o", dsaved.to_str().unwrap(), &from_docker],
    );
    ok(&root, &["load", "-i", dsaved.to_str().unwrap()]);
    let ran = ok(&root, &["run", "--rm", &from_docker]);
    assert_eq!(ran, "from-docker\n", "cairn run of the image docker built");
    let docker_id = docker(
        &host,
        &["image", "inspect", "--format", "{{.Id}}", &from_docker],
    );
    let cairn_id = ok(&root, &["inspect", "--format", "{{.Id}}", &from_docker]);
    assert_eq!(
        cairn_id.trim(),
        docker_id.trim(),
        "image ID after cairn load"
    );

    // A two-stage cairn build: docker sees as many history rows as cairn.
    let ctx2 = t.path().join("ctx2");
    std::fs::create_dir_all(&ctx2).unwrap();
    std::fs::write(ctx2.join("greeting"), "hello from the build stage\n").unwrap();
    std::fs::write(
        ctx2.join("Dockerfile"),
        format!(
            "FROM {bb} AS build\nCOPY greeting /src/\nRUN tr a-z A-Z < /src/greeting > /out\n\
             FROM {bb}\nENV STAGE=final\nCOPY --from=build /out /greeting\nCMD [\"cat\", \"/greeting\"]\n"
        ),
    )
    .unwrap();
    ok(
        &root,
        &[
            "build",
            "--progress=plain",
            "-t",
            &built,
            ctx2.to_str().unwrap(),
        ],
    );
    let bsaved = t.path().join("built.tar");
    ok(&root, &["save", "-o", bsaved.to_str().unwrap(), &built]);
    docker(&host, &["load", "-i", bsaved.to_str().unwrap()]);
    let cairn_rows = ok(&root, &["history", "-q", &built]).lines().count();
    let docker_rows = docker(&host, &["history", "-q", &built]).lines().count();
    assert_eq!(docker_rows, cairn_rows, "history rows, docker vs cairn");
    assert!(
        cairn_rows >= 4,
        "base row + ENV + COPY + CMD, got {cairn_rows}"
    );
    let said = docker(&host, &["run", "--rm", "--network=host", &built]);
    assert_eq!(said, "HELLO FROM THE BUILD STAGE\n");

    // `cairn build -o type=docker` writes an archive that docker loads under the build's tag.
    let exported = format!("cairn-interop-{id}/exported:1");
    let _cleanup2 = DockerImages {
        host: &host,
        names: vec![exported.clone()],
    };
    let out = t.path().join("exported.tar");
    ok(
        &root,
        &[
            "build",
            "--progress=plain",
            "-t",
            &exported,
            "-o",
            &format!("type=docker,dest={}", out.display()),
            ctx2.to_str().unwrap(),
        ],
    );
    let loaded = docker(&host, &["load", "-i", out.to_str().unwrap()]);
    assert!(loaded.contains(&exported), "docker load said: {loaded}");
    let said = docker(&host, &["run", "--rm", "--network=host", &exported]);
    assert_eq!(said, "HELLO FROM THE BUILD STAGE\n");
}
