//! `cairn pull/push/login/logout` against a real registry (Debian's docker-registry, started by
//! `scripts/registry` on a free loopback port per test) and against skopeo.
//!
//! Needs docker-registry, skopeo, htpasswd, openssl and busybox-static (scripts/deps installs
//! them). Runs as any user; nothing outside temp dirs changes.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cairn_store::{ImageRecord, Store};
use common::{cairn_cmd, repo_root};

/// A registry of its own for one test; stopped on drop.
struct Registry {
    dir: tempfile::TempDir,
    port: u16,
    args: Vec<String>,
}

impl Registry {
    fn start(args: &[&str]) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Registry {
            dir,
            port: 0,
            args: args.iter().map(|s| s.to_string()).collect(),
        };
        r.run_start();
        r
    }

    fn run_start(&mut self) {
        let mut cmd = Command::new(repo_root().join("scripts/registry"));
        cmd.arg("start").arg(self.dir.path()).args(&self.args);
        if self.port != 0 {
            cmd.args(["--port", &self.port.to_string()]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "scripts/registry: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.port = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    }

    /// Kills the registry at once (SIGKILL), as a crash would.
    fn kill(&self) {
        let pid = std::fs::read_to_string(self.dir.path().join("pid")).unwrap();
        Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap();
    }

    /// Starts it again on the same port and storage; the log starts empty.
    fn restart(&mut self) {
        self.stop();
        self.run_start();
    }

    fn stop(&self) {
        let _ = Command::new(repo_root().join("scripts/registry"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// Where the registry keeps a blob's bytes (distribution's filesystem driver layout).
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A test's private world: docker config dir and store roots.
struct World {
    tmp: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        World {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn root(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn cmd(&self, root: &str, args: &[&str]) -> Command {
        let mut c = cairn_cmd(&self.root(root));
        c.args(args)
            .env("DOCKER_CONFIG", self.tmp.path().join("docker"))
            .env_remove("CAIRN_REGISTRY_CA")
            .env_remove("CAIRN_INSECURE_REGISTRIES");
        c
    }

    fn cairn(&self, root: &str, args: &[&str]) -> Output {
        self.cmd(root, args).output().unwrap()
    }

    fn ok(&self, root: &str, args: &[&str]) -> String {
        let out = self.cairn(root, args);
        assert!(
            out.status.success(),
            "cairn {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn fails(&self, root: &str, args: &[&str]) -> String {
        let out = self.cairn(root, args);
        assert!(
            !out.status.success(),
            "cairn {args:?} succeeded:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn store(&self, root: &str) -> Store {
        Store::open(&self.root(root)).unwrap()
    }
}

/// A busybox rootfs (from Debian's busybox-static) plus `extra` files, one layer each.
fn make_image(store: &Store, tag: &str, arch: &str, extra: &[(&str, Vec<u8>)]) -> ImageRecord {
    let scratch = tempfile::tempdir().unwrap();
    let base = scratch.path().join("base");
    std::fs::create_dir_all(base.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", base.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", base.join("bin/sh")).unwrap();
    let opts = cairn_layer::WriteOptions {
        clamp_mtime: Some(0),
        ..Default::default()
    };
    let mut layers = vec![store
        .write_layer(
            cairn_layer::DiffSource::Tree(&base),
            cairn_layer::Compression::Gzip,
            &opts,
        )
        .unwrap()];
    for (i, (name, bytes)) in extra.iter().enumerate() {
        let d = scratch.path().join(format!("extra{i}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), bytes).unwrap();
        layers.push(
            store
                .write_layer(
                    cairn_layer::DiffSource::Tree(&d),
                    cairn_layer::Compression::Gzip,
                    &opts,
                )
                .unwrap(),
        );
    }
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    store
        .commit_image_json(&config, &layers, &[tag.to_string()])
        .unwrap()
}

/// Deterministic incompressible bytes.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.extend_from_slice(&seed.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn assert_store_healthy(store: &Store) {
    let report = store.check().unwrap();
    assert!(
        report.problems.is_empty(),
        "store problems: {:?}",
        report.problems
    );
}

#[test]
fn push_then_pull_back_gives_same_digests_and_mounts_across_repositories() {
    let reg = Registry::start(&[]);
    let w = World::new();
    let tag = format!("{}/busybox:1", reg.host());
    let img = make_image(&w.store("a"), &tag, "amd64", &[("hello", b"hi\n".to_vec())]);

    let out = w.ok("a", &["push", &tag]);
    assert!(
        out.contains(&format!(
            "The push refers to repository [{}/busybox]",
            reg.host()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("1: digest: {} size: ", img.manifest_digest)),
        "{out}"
    );
    assert_eq!(
        out.matches(": Pushed").count(),
        3,
        "2 layers + config: {out}"
    );

    // Pushing again uploads nothing.
    let again = w.ok("a", &["push", &tag]);
    assert!(!again.contains("Pushed"), "{again}");
    assert_eq!(again.matches("Layer already exists").count(), 3, "{again}");

    // Another repository of the same registry: blobs are mounted, not uploaded.
    let other = format!("{}/other:2", reg.host());
    let out = w.ok("a", &["push", &tag, &other]);
    assert_eq!(out.matches("Mounted from busybox").count(), 3, "{out}");
    assert!(
        reg.log().contains("mount=sha256"),
        "the registry saw mount requests"
    );

    // Pull back into an empty store: same manifest digest, same image ID, same layers.
    let out = w.ok("b", &["pull", &tag]);
    assert!(out.contains("1: Pulling from busybox"), "{out}");
    assert_eq!(out.matches("Pull complete").count(), 2, "{out}");
    assert!(
        out.contains(&format!("Digest: {}", img.manifest_digest)),
        "{out}"
    );
    assert!(
        out.contains(&format!("Status: Downloaded newer image for {tag}")),
        "{out}"
    );
    let b = w.store("b");
    let pulled = b.resolve(&tag).unwrap().expect("pulled image is tagged");
    assert_eq!(pulled.manifest_digest, img.manifest_digest);
    assert_eq!(pulled.id, img.id);
    assert_eq!(pulled.layers, img.layers);
    assert_store_healthy(&b);
    drop(b);

    // A second pull is a no-op; a pull by digest works and checks the digest.
    let out = w.ok("b", &["pull", &tag]);
    assert!(out.contains("Status: Image is up to date"), "{out}");
    assert!(!out.contains("Pull complete"), "{out}");
    let by_digest = format!("{}/busybox@{}", reg.host(), img.manifest_digest);
    w.ok("c", &["pull", &by_digest]);

    // skopeo reads what cairn pushed, byte for byte.
    let oci = w.tmp.path().join("skopeo-oci");
    let st = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{tag}"))
        .arg(format!("oci:{}:x", oci.display()))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let index = std::fs::read_to_string(oci.join("index.json")).unwrap();
    assert!(index.contains(&img.manifest_digest), "{index}");
}

#[test]
fn chunked_upload_and_zstd_layers() {
    let reg = Registry::start(&[]);
    let w = World::new();
    let tag = format!("{}/chunky:1", reg.host());
    let store = w.store("a");
    let img = make_image(&store, &tag, "amd64", &[]);
    // A zstd layer on top.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("z"), noise(300_000, 7)).unwrap();
    let z = store
        .write_layer(
            cairn_layer::DiffSource::Tree(d.path()),
            cairn_layer::Compression::Zstd,
            &Default::default(),
        )
        .unwrap();
    let mut layers = img.layers.clone();
    layers.push(z.clone());
    let cfg = serde_json::json!({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}});
    let img = store
        .commit_image_json(&cfg, &layers, std::slice::from_ref(&tag))
        .unwrap();
    drop(store);
    assert!(z.media_type.ends_with("zstd"), "{}", z.media_type);

    w.ok("a", &["push", "--chunk-size", "65536", &tag]);
    // One PATCH per 64 KiB piece of each blob (layers and config), then one closing PUT each.
    let a = w.store("a");
    let sizes: Vec<u64> = img
        .layers
        .iter()
        .map(|l| l.size)
        .chain([std::fs::metadata(a.blob_path(&img.id)).unwrap().len()])
        .collect();
    drop(a);
    let want: usize = sizes.iter().map(|s| s.div_ceil(65536) as usize).sum();
    let log = reg.log();
    let patches = log.matches("\"PATCH /v2/chunky/blobs/uploads/").count();
    assert_eq!(patches, want, "PATCH requests for blobs of sizes {sizes:?}");
    let puts = log.matches("\"PUT /v2/chunky/blobs/uploads/").count();
    assert_eq!(puts, sizes.len());
    w.ok("b", &["pull", &tag]);
    let pulled = w.store("b").resolve(&tag).unwrap().unwrap();
    assert_eq!(pulled.manifest_digest, img.manifest_digest);
    assert_eq!(pulled.layers[1].media_type, z.media_type);
}

/// Writes an OCI layout with one image per architecture and an index over them.
fn multi_arch_layout(w: &World, dir: &Path) -> Vec<(String, String)> {
    let store = w.store("scratch");
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let mut entries = Vec::new();
    let mut out = Vec::new();
    for (arch, variant) in [("amd64", None), ("arm64", Some("v8"))] {
        let img = make_image(
            &store,
            &format!("scratch/{arch}"),
            arch,
            &[(arch, arch.as_bytes().to_vec())],
        );
        let manifest = store.read_blob(&img.manifest_digest).unwrap();
        let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        let mut digests = vec![img.manifest_digest.clone(), img.id.clone()];
        digests.extend(img.layers.iter().map(|l| l.digest.clone()));
        for d in digests {
            let dst = dir
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:"));
            std::fs::copy(store.blob_path(&d), dst).unwrap();
        }
        let mut platform = serde_json::json!({"os": "linux", "architecture": arch});
        if let Some(v) = variant {
            platform["variant"] = v.into();
        }
        entries.push(serde_json::json!({
            "mediaType": m["mediaType"], "digest": img.manifest_digest,
            "size": manifest.len(), "platform": platform,
        }));
        out.push((arch.to_string(), img.manifest_digest.clone()));
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    }))
    .unwrap();
    let index_digest = cairn_layer::hash::sha256_digest(&index);
    std::fs::write(
        dir.join("blobs/sha256")
            .join(index_digest.trim_start_matches("sha256:")),
        &index,
    )
    .unwrap();
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": index_digest,
        "size": index.len(), "annotations": {"org.opencontainers.image.ref.name": "multi"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    out.push(("index".into(), index_digest));
    out
}

fn skopeo(args: &[&str]) {
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pulls_what_skopeo_pushed_multi_arch_and_docker_schema2() {
    let reg = Registry::start(&[]);
    let w = World::new();
    let layout = w.tmp.path().join("layout");
    let digests = multi_arch_layout(&w, &layout);
    let multi = format!("{}/multi:1", reg.host());
    skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi", layout.display()),
        &format!("docker://{multi}"),
    ]);

    // Explicit platform; the digest printed is the index's, the image the arm64 one.
    let out = w.ok("arm", &["pull", "--platform", "linux/arm64", &multi]);
    assert!(out.contains(&format!("Digest: {}", digests[2].1)), "{out}");
    let img = w.store("arm").resolve(&multi).unwrap().unwrap();
    assert_eq!(img.config.architecture().to_string(), "arm64");
    assert_eq!(img.manifest_digest, digests[1].1);
    // `name@<index digest>` finds the pulled image, and shows in RepoDigests and --digests.
    let by_index = format!("{}/multi@{}", reg.host(), digests[2].1);
    let found = w.store("arm").resolve(&by_index).unwrap().unwrap();
    assert_eq!(
        (found.id, found.repo_digests.clone()),
        (img.id.clone(), vec![by_index.clone()])
    );
    let inspect = w.ok(
        "arm",
        &["inspect", "--format", "{{json .RepoDigests}}", &by_index],
    );
    assert_eq!(inspect.trim(), format!("[\"{by_index}\"]"));
    let listed = w.ok("arm", &["images", "--digests"]);
    assert!(listed.contains(&digests[2].1), "{listed}");

    // Default: the host's platform.
    w.ok("host", &["pull", &multi]);
    let img = w.store("host").resolve(&multi).unwrap().unwrap();
    let host_arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    assert_eq!(img.config.architecture().to_string(), host_arch);

    let err = w.fails("none", &["pull", "--platform", "linux/s390x", &multi]);
    assert!(err.contains("no image for platform linux/s390x"), "{err}");
    assert!(
        err.contains("linux/amd64") && err.contains("linux/arm64/v8"),
        "{err}"
    );

    // Docker schema2 (skopeo converts the amd64 image).
    let v2 = format!("{}/v2s2:1", reg.host());
    skopeo(&[
        "copy",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi", layout.display()),
        &format!("docker://{v2}"),
    ]);
    let err = w.fails("v2", &["pull", "--platform", "linux/arm64", &v2]);
    assert!(
        err.contains("linux/amd64 only") && err.contains("single-platform"),
        "{err}"
    );
    let out = w.ok("v2", &["pull", &v2]);
    assert!(out.contains("Pull complete"), "{out}");
    let img = w.store("v2").resolve(&v2).unwrap().unwrap();
    let inspect = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
        .arg(format!("docker://{v2}"))
        .output()
        .unwrap();
    let registry_digest = String::from_utf8_lossy(&inspect.stdout).trim().to_string();
    assert_eq!(
        img.manifest_digest, registry_digest,
        "the pulled manifest keeps its digest"
    );
    assert!(
        img.layers
            .iter()
            .all(|l| l.media_type == "application/vnd.docker.image.rootfs.diff.tar.gzip"),
        "{:?}",
        img.layers
    );
    assert_store_healthy(&w.store("v2"));
}

#[test]
fn tls_and_htpasswd_login_logout() {
    let reg = Registry::start(&["--tls", "--auth", "alice:s3cret"]);
    let w = World::new();
    let host = reg.host();
    let tag = format!("{host}/private:1");
    make_image(&w.store("a"), &tag, "amd64", &[]);
    let ca = reg.ca().display().to_string();

    let err = w.fails("a", &["push", &tag]);
    assert!(
        err.contains("certificate") && err.contains("--tls-ca"),
        "{err}"
    );

    let err = w.fails("a", &["push", "--tls-ca", &ca, &tag]);
    assert!(err.contains("authentication required"), "{err}");

    let config = w.tmp.path().join("docker/config.json");
    let err = w.fails(
        "a",
        &[
            "login", "--tls-ca", &ca, "-u", "alice", "-p", "wrong", &host,
        ],
    );
    assert!(err.contains("invalid username or password"), "{err}");
    assert!(!config.exists(), "a failed login saves nothing");

    let mut c = w.cmd("a", &["login", "-u", "alice", "--password-stdin", &host]);
    c.env("CAIRN_REGISTRY_CA", &ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Login Succeeded"));
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    // base64("alice:s3cret")
    assert_eq!(saved["auths"][&host]["auth"], "YWxpY2U6czNjcmV0");

    w.ok("a", &["push", "--tls-ca", &ca, &tag]);
    w.ok("b", &["pull", "--tls-ca", &ca, &tag]);
    // docker's certs.d layout trusts a CA for its own registry only.
    let certs = w.tmp.path().join("certs.d");
    std::fs::create_dir_all(certs.join(&host)).unwrap();
    std::fs::copy(reg.ca(), certs.join(&host).join("ca.crt")).unwrap();
    let opts = cairn_registry::PullOptions {
        registry: cairn_registry::RegistryOptions {
            certs_dirs: vec![certs.clone()],
            ca_files: Vec::new(),
            insecure_registries: Vec::new(),
            credential: Some(cairn_registry::Credential::UserPassword {
                username: "alice".into(),
                password: "s3cret".into(),
            }),
            ..Default::default()
        },
        platform: None,
    };
    cairn_registry::pull(&w.store("f"), &tag, &opts).unwrap();
    std::fs::rename(certs.join(&host), certs.join("127.0.0.1:1")).unwrap();
    let err = cairn_registry::pull(&w.store("g"), &tag, &opts).unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    // Without the CA, only an explicit insecure-registry (flag or environment) gets through.
    w.ok("c", &["pull", "--insecure-registry", &host, &tag]);
    let out = w
        .cmd("d", &["pull", &tag])
        .env("CAIRN_INSECURE_REGISTRIES", format!("other:1,{host}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert!(w
        .ok("a", &["logout", &host])
        .contains("Removing login credentials"));
    let err = w.fails("e", &["pull", "--tls-ca", &ca, &tag]);
    assert!(err.contains("authentication required"), "{err}");
}

#[test]
fn unknown_image_and_corrupted_blob_fail_cleanly() {
    let reg = Registry::start(&[]);
    let w = World::new();
    let err = w.fails("b", &["pull", &format!("{}/nothing:here", reg.host())]);
    assert!(err.contains("not found"), "{err}");

    let tag = format!("{}/bad:1", reg.host());
    let img = make_image(&w.store("a"), &tag, "amd64", &[]);
    w.ok("a", &["push", &tag]);
    let layer = &img.layers[0].digest;
    let f = reg.blob_file(layer);
    let mut bytes = std::fs::read(&f).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&f, &bytes).unwrap();

    let err = w.fails("b", &["pull", &tag]);
    assert!(
        err.contains("digest mismatch") && err.contains(layer.as_str()),
        "{err}"
    );
    let b = w.store("b");
    assert!(!b.has_blob(layer), "a corrupt blob must not be stored");
    assert!(b.resolve(&tag).unwrap().is_none());
    assert_store_healthy(&b);
    drop(b);
    w.ok("b", &["system", "check"]);
}

/// Forwards connections to `upstream`, sending responses at about 4 MB/s so that a pull of a
/// big layer is still running when the test kills the registry.
fn slow_proxy(upstream: u16) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(client) = c else { continue };
            let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let (mut c_r, mut u_w) = (client.try_clone().unwrap(), up.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_r, &mut u_w);
                let _ = u_w.shutdown(std::net::Shutdown::Write);
            });
            let (mut u_r, mut c_w) = (up, client);
            std::thread::spawn(move || {
                let mut buf = [0u8; 32 << 10];
                loop {
                    match u_r.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if c_w.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(8));
                }
                let _ = c_w.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    port
}

#[test]
fn registry_killed_mid_pull_then_resumed_pull_fetches_only_what_is_missing() {
    let mut reg = Registry::start(&[]);
    let w = World::new();
    let name = format!("{}/big:1", reg.host());
    let img = make_image(
        &w.store("a"),
        &name,
        "amd64",
        &[("noise", noise(24 << 20, 42))],
    );
    w.ok("a", &["push", &name]);
    let (small, big) = (&img.layers[0].digest, &img.layers[1].digest);

    let proxy = slow_proxy(reg.port);
    let via_proxy = format!("127.0.0.1:{proxy}/big:1");
    let child = w
        .cmd("b", &["pull", &via_proxy])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let small_path = w.store("b").blob_path(small);
    let t0 = Instant::now();
    while !small_path.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "small layer never arrived"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    reg.kill();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "pull survived a dead registry");
    assert!(
        err.contains("ERROR: pulling") && err.contains("127.0.0.1"),
        "{err}"
    );

    let b = w.store("b");
    assert!(b.has_blob(small), "completed blobs stay");
    assert!(!b.has_blob(big), "the interrupted blob is not stored");
    assert!(b.resolve(&via_proxy).unwrap().is_none());
    assert_store_healthy(&b);
    drop(b);

    reg.restart();
    let direct = format!("{}/big:1", reg.host());
    let out = w.ok("b", &["pull", &direct]);
    assert!(out.contains("Already exists"), "{out}");
    let log = reg.log();
    let blob_gets: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"GET /v2/big/blobs/"))
        .collect();
    assert_eq!(
        blob_gets.len(),
        1,
        "only the missing layer is fetched: {blob_gets:#?}"
    );
    assert!(blob_gets[0].contains(big.as_str()));
    let pulled = w.store("b").resolve(&direct).unwrap().unwrap();
    assert_eq!(pulled.manifest_digest, img.manifest_digest);
}

#[test]
fn credentials_go_through_the_configured_credential_helper() {
    let reg = Registry::start(&["--tls", "--auth", "bob:hunter2"]);
    let w = World::new();
    let host = reg.host();
    let ca = reg.ca().display().to_string();
    // A helper that keeps one credential in a file next to itself, speaking docker's protocol.
    let bin = w.tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-fake");
    std::fs::write(
        &helper,
        "#!/bin/sh\nd=\"$(dirname \"$0\")\"\ncase \"$1\" in\n\
         store) cat >\"$d/creds.json\" ;;\n\
         get) cat >/dev/null; [ -f \"$d/creds.json\" ] && cat \"$d/creds.json\" && exit 0\n\
              echo 'credentials not found in native keychain'; exit 1 ;;\n\
         erase) cat >/dev/null; rm \"$d/creds.json\" ;;\nesac\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = w.tmp.path().join("docker/config.json");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, r#"{"credsStore":"fake"}"#).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |root: &str, args: &[&str]| {
        w.cmd(root, args)
            .env("PATH", &path)
            .env("CAIRN_REGISTRY_CA", &ca)
            .output()
            .unwrap()
    };

    let out = run("a", &["login", "-u", "bob", "-p", "hunter2", &host]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let creds: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bin.join("creds.json")).unwrap()).unwrap();
    assert_eq!(creds["Username"], "bob");
    assert_eq!(creds["Secret"], "hunter2");
    assert_eq!(creds["ServerURL"], host.as_str());
    let saved = std::fs::read_to_string(&config).unwrap();
    assert!(
        !saved.contains("hunter2") && !saved.contains("\"auth\""),
        "{saved}"
    );

    let tag = format!("{host}/helped:1");
    make_image(&w.store("a"), &tag, "amd64", &[]);
    let out = run("a", &["push", &tag]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = run("a", &["logout", &host]);
    assert!(out.status.success());
    assert!(
        !bin.join("creds.json").exists(),
        "logout erased through the helper"
    );
    let out = run("b", &["pull", &tag]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("authentication required"));
}

#[test]
fn build_cache_travels_through_a_registry() {
    let reg = Registry::start(&[]);
    let w = World::new();
    let a = w.store("a");
    let img = make_image(&a, "local/cached:1", "amd64", &[("f", b"x".to_vec())]);
    let entries = vec![
        cairn_registry::CacheEntry {
            key: "step:RUN make".into(),
            value: b"\x00binary value\xff".to_vec(),
            blobs: vec![img.layers[1].digest.clone()],
        },
        cairn_registry::CacheEntry {
            key: "step:FROM".into(),
            value: b"base".to_vec(),
            blobs: img.layers.iter().map(|l| l.digest.clone()).collect(),
        },
    ];
    let target = format!("{}/cache:main", reg.host());
    let digest = cairn_registry::push_cache(&a, &entries, &target, &Default::default()).unwrap();
    drop(a);
    // skopeo sees an OCI manifest with our artifact type.
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{target}"))
        .output()
        .unwrap();
    let raw = String::from_utf8_lossy(&out.stdout);
    assert!(raw.contains(cairn_registry::CACHE_ARTIFACT_TYPE), "{raw}");

    let b = w.store("b");
    let by_digest = format!("{}/cache@{digest}", reg.host());
    let got = cairn_registry::pull_cache(&b, &by_digest, &Default::default()).unwrap();
    assert_eq!(got, entries);
    assert_eq!(
        b.cache_get("step:RUN make").unwrap().unwrap(),
        entries[0].value
    );
    for l in &img.layers {
        assert!(b.has_blob(&l.digest));
    }
    assert_store_healthy(&b);

    // An image without an inline cache is not a cache.
    let image_ref = format!("{}/img:1", reg.host());
    w.ok("a", &["push", "local/cached:1", &image_ref]);
    let err = cairn_registry::pull_cache(&b, &image_ref, &Default::default()).unwrap_err();
    assert!(err.to_string().contains("carries no inline cache"), "{err}");
}

/// Imports a busybox rootfs (Debian's busybox-static) into store `root` as `tag`; returns the
/// image ID.
fn import_busybox(w: &World, root: &str, tag: &str) -> String {
    let tarball = common::busybox_tar(&w.tmp.path().join("busybox"));
    w.ok(root, &["import", tarball.to_str().unwrap(), tag])
}

#[test]
fn imported_busybox_goes_through_the_registry_unchanged() {
    let reg = Registry::start(&[]);
    let w = World::new();
    let tag = format!("{}/imported/busybox:stable", reg.host());
    let id = import_busybox(&w, "a", &tag);
    w.ok("a", &["push", &tag]);
    w.ok("b", &["pull", &tag]);
    let images = w.ok("b", &["images"]);
    let short = &id.trim().trim_start_matches("sha256:")[..12];
    assert!(
        images.contains(&format!("{}/imported/busybox", reg.host())) && images.contains(short),
        "{images}"
    );
}

/// The plain progress of a build: (vertex name, whether it was CACHED) for every step vertex
/// (`[stage n/m] …`, not `[internal]` ones).
fn steps_of(progress: &str) -> Vec<(String, bool)> {
    let mut names: Vec<(String, String)> = Vec::new();
    for line in progress.lines() {
        let Some((num, rest)) = line.split_once(' ') else {
            continue;
        };
        if num.starts_with('#') && rest.starts_with('[') && !rest.starts_with("[internal]") {
            names.push((num.to_string(), rest.to_string()));
        }
    }
    names
        .into_iter()
        .map(|(num, name)| {
            let cached = progress.lines().any(|l| l == format!("{num} CACHED"));
            (name, cached)
        })
        .collect()
}

/// The `pushed REF@DIGEST` line `cairn build --push` prints.
fn pushed_digest(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("pushed "))
        .and_then(|l| l.split_once('@'))
        .map(|(_, d)| d.to_string())
        .unwrap_or_else(|| panic!("no pushed digest in {stdout:?}"))
}

// Root: RUN needs namespaces and mounts (CI runs as root).
#[test]
fn build_cache_shared_between_two_stores_through_a_registry() {
    let reg = Registry::start(&[]);
    let w = World::new();
    let base = format!("{}/base/busybox:1", reg.host());
    import_busybox(&w, "a", &base);
    w.ok("a", &["push", &base]);
    let ctx = w.tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {base} AS build\nRUN sleep 2 && echo built > /out\n\
             FROM {base}\nCOPY --from=build /out /out\nRUN cat /out /out > /twice\n"
        ),
    )
    .unwrap();
    let ctx = ctx.to_str().unwrap();
    let cache = format!("type=registry,ref={}/cache:x", reg.host());

    let t = Instant::now();
    let out = w.cairn(
        "a",
        &[
            "build",
            "--progress",
            "plain",
            "--push",
            "-t",
            &format!("{}/app:a", reg.host()),
            "--cache-to",
            &format!("{cache},mode=max"),
            ctx,
        ],
    );
    let time_a = t.elapsed();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let digest_a = pushed_digest(&stdout);
    assert!(
        steps_of(&stderr)
            .iter()
            .any(|(n, c)| n.contains("RUN sleep") && !c),
        "{stderr}"
    );
    // mode=max carries the layer steps of both stages (RUN; COPY, RUN), mode=min the target's.
    assert!(stderr.contains("#cache exported 3 entries"), "{stderr}");
    let min = w.cairn(
        "a",
        &[
            "build",
            "--progress",
            "plain",
            "--cache-to",
            &format!("type=registry,ref={}/cache:min", reg.host()),
            ctx,
        ],
    );
    let min_err = String::from_utf8_lossy(&min.stderr);
    assert!(
        min.status.success() && min_err.contains("#cache exported 2 entries"),
        "{min_err}"
    );

    // Store b has the base image and nothing else: every step comes from the shared cache.
    w.ok("b", &["pull", &base]);
    let t = Instant::now();
    let out = w.cairn(
        "b",
        &[
            "build",
            "--progress",
            "plain",
            "--push",
            "-t",
            &format!("{}/app:b", reg.host()),
            "--cache-from",
            &cache,
            ctx,
        ],
    );
    let time_b = t.elapsed();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let steps = steps_of(&stderr);
    assert_eq!(steps.len(), 5, "{stderr}");
    assert!(
        steps.iter().all(|(_, cached)| *cached),
        "not all CACHED:\n{stderr}"
    );
    assert_eq!(
        pushed_digest(&stdout),
        digest_a,
        "same image, same manifest digest"
    );
    eprintln!("shared cache: store a built in {time_a:.2?}, store b in {time_b:.2?}");
    assert!(time_b < time_a, "a {time_a:?}, b {time_b:?}");

    // Inline cache: the image itself carries the target stage's entries.
    let inl = format!("{}/app:inline", reg.host());
    w.ok(
        "a",
        &[
            "build",
            "--progress",
            "plain",
            "--push",
            "-t",
            &inl,
            "--cache-to",
            "type=inline",
            ctx,
        ],
    );
    w.ok("c", &["pull", &base]);
    let out = w.cairn(
        "c",
        &["build", "--progress", "plain", "--cache-from", &inl, ctx],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let cached: Vec<bool> = steps_of(&stderr)
        .into_iter()
        .filter(|(n, _)| n.starts_with("[stage-1"))
        .map(|(_, c)| c)
        .collect();
    assert_eq!(cached, [true, true, true], "{stderr}");
}

// Root: RUN needs namespaces and mounts (CI runs as root).
#[test]
fn build_pulls_base_images_the_store_lacks() {
    let reg = Registry::start(&[]);
    let w = World::new();
    let base = format!("{}/only/in-registry:1", reg.host());
    let id = import_busybox(&w, "a", &base);
    w.ok("a", &["push", &base]);
    let ctx = w.tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base}\nRUN echo hi > /hi\n"),
    )
    .unwrap();
    let ctx = ctx.to_str().unwrap();
    let out = w.cairn(
        "empty",
        &["build", "--progress", "plain", "-t", "out:1", ctx],
    );
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{progress}");
    // The pull is a vertex of the build, one line per layer.
    assert!(
        progress.contains(&format!("[internal] pull {base}")) && progress.contains(" done\n"),
        "{progress}"
    );
    let images = w.ok("empty", &["images", "--no-trunc"]);
    assert!(
        images.contains(id.trim()) && images.contains("out"),
        "{images}"
    );
    // --pull asks the registry again even though the store has the image now.
    w.ok(
        "empty",
        &["build", "--pull", "--progress", "plain", "-t", "out:1", ctx],
    );

    std::fs::write(
        w.tmp.path().join("ctx/Dockerfile"),
        format!("FROM {}/nope/nothing:1\n", reg.host()),
    )
    .unwrap();
    let err = w.fails("empty", &["build", "--progress", "plain", ctx]);
    assert!(
        err.contains("pull access denied") && err.contains("not found"),
        "{err}"
    );
}
