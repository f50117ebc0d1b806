//! Image rules on images made in a temporary store with the layer and store APIs (no build
//! engine): each rule fires on the image that has the problem and stays quiet on the fixed one.

use cairn_check::{scan, BuiltStage, Finding, Severity};
use cairn_layer::{Compression, DiffSource, WriteOptions};
use cairn_store::{LayerDescriptor, Store};
use serde_json::json;
use std::fs;

const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----\n";

struct Img {
    store: Store,
    _root: tempfile::TempDir,
    work: tempfile::TempDir,
    n: usize,
}

impl Img {
    fn new() -> Img {
        let root = tempfile::tempdir().unwrap();
        Img {
            store: Store::open(root.path()).unwrap(),
            _root: root,
            work: tempfile::tempdir().unwrap(),
            n: 0,
        }
    }

    /// A layer adding `files` (path, content).
    fn add(&mut self, files: &[(&str, &[u8])]) -> LayerDescriptor {
        self.n += 1;
        let dir = self.work.path().join(format!("t{}", self.n));
        fs::create_dir_all(&dir).unwrap();
        for (p, c) in files {
            let f = dir.join(p.trim_start_matches('/'));
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(f, c).unwrap();
        }
        self.store
            .write_layer(
                DiffSource::Tree(&dir),
                Compression::Gzip,
                &WriteOptions::default(),
            )
            .unwrap()
    }

    /// A layer deleting `paths` (whiteouts), made by comparing two trees.
    fn delete(&mut self, paths: &[&str]) -> LayerDescriptor {
        self.n += 1;
        let lower = self.work.path().join(format!("l{}", self.n));
        let upper = self.work.path().join(format!("u{}", self.n));
        for p in paths {
            let f = lower.join(p.trim_start_matches('/'));
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(&f, b"x").unwrap();
            fs::create_dir_all(upper.join(p.trim_start_matches('/')).parent().unwrap()).unwrap();
        }
        self.store
            .write_layer(
                DiffSource::Compare {
                    lower: &lower,
                    upper: &upper,
                },
                Compression::Gzip,
                &WriteOptions::default(),
            )
            .unwrap()
    }
}

fn stage(
    name: &str,
    layers: Vec<LayerDescriptor>,
    history: &[&str],
    base_layers: usize,
    is_final: bool,
) -> BuiltStage {
    let h: Vec<serde_json::Value> = history.iter().map(|c| json!({"created_by": c})).collect();
    BuiltStage {
        name: name.into(),
        index: 0,
        base: "busybox:1".into(),
        config: json!({"architecture": "amd64", "os": "linux", "config": {}, "history": h}),
        layers,
        base_layers,
        is_final,
        layer_lines: Vec::new(),
    }
}

fn by_rule<'a>(f: &'a [Finding], rule: &str) -> Vec<&'a Finding> {
    f.iter().filter(|x| x.rule == rule).collect()
}

#[test]
fn an_id_rsa_copied_into_a_builder_and_deleted_later_is_found_with_stage_layer_and_path() {
    let mut img = Img::new();
    let base = img.add(&[("/bin/sh", b"#!busybox")]);
    let key = img.add(&[("/root/.ssh/id_rsa", KEY.as_bytes())]);
    let build = img.add(&[("/app/server", b"\x7fELF server")]);
    let rm = img.delete(&["/root/.ssh/id_rsa"]);
    let builder = stage(
        "builder",
        vec![base.clone(), key.clone(), build, rm],
        &[
            "ADD rootfs.tar /",
            "COPY id_rsa /root/.ssh/id_rsa # buildkit",
            "RUN /bin/sh -c make # buildkit",
            "RUN /bin/sh -c rm /root/.ssh/id_rsa # buildkit",
        ],
        1,
        false,
    );
    let server = img.add(&[("/server", b"\x7fELF server")]);
    let runtime = stage(
        "runtime",
        vec![base, server],
        &["ADD rootfs.tar /", "COPY /app/server /server # buildkit"],
        1,
        true,
    );
    let mut builder = builder;
    builder.layer_lines = vec![0, 2, 3, 4];
    let f = scan::scan(&img.store, &[builder, runtime], None).unwrap();
    let secrets = by_rule(&f, "SecretInLayer");
    // The Dockerfile line of the COPY that made the layer.
    assert!(secrets.iter().all(|s| s.line == 2), "{secrets:#?}");
    // The file name and its PEM content are two findings on the same file.
    assert_eq!(secrets.len(), 2, "{f:#?}");
    for s in &secrets {
        assert_eq!(s.severity, Severity::Error);
        assert_eq!(s.stage.as_deref(), Some("builder"));
        assert_eq!(s.path.as_deref(), Some("/root/.ssh/id_rsa"));
        let l = s.layer.as_ref().unwrap();
        assert_eq!(l.index, 1);
        assert_eq!(l.digest, key.digest);
        assert_eq!(l.created_by, "COPY id_rsa /root/.ssh/id_rsa # buildkit");
        assert!(
            s.message
                .contains("deleted by layer 3 (RUN /bin/sh -c rm /root/.ssh/id_rsa # buildkit)"),
            "{}",
            s.message
        );
    }
    assert!(secrets.iter().any(|s| s
        .message
        .starts_with("OPENSSH PRIVATE KEY (PEM) in /root/.ssh/id_rsa:1")));
    // Nothing else: the runtime is only the binary.
    assert_eq!(f.len(), 2, "{f:#?}");
}

#[test]
fn a_secret_in_the_base_image_layers_is_not_this_dockerfiles() {
    let mut img = Img::new();
    let base = img.add(&[("/etc/ssl/private/snakeoil.key", KEY.as_bytes())]);
    let app = img.add(&[("/app/server", b"bin")]);
    let s = stage(
        "0",
        vec![base, app],
        &["ADD rootfs.tar /", "COPY server /app/ # buildkit"],
        1,
        true,
    );
    assert!(scan::scan(&img.store, &[s], None).unwrap().is_empty());
}

#[test]
fn sources_and_compiler_in_a_single_stage_image_are_errors_and_the_multi_stage_image_passes() {
    let ctx = tempfile::tempdir().unwrap();
    let main_go = b"package main\n\nfunc main() { println(\"hi\") }\n";
    fs::write(ctx.path().join("main.go"), main_go).unwrap();
    fs::write(ctx.path().join("go.mod"), b"module app\n\ngo 1.21\n").unwrap();
    let mut img = Img::new();
    let golang = img.add(&[
        ("/usr/local/go/bin/go", b"go toolchain"),
        ("/usr/bin/gcc-12", b"gcc"),
    ]);
    // COPY . . put the sources under another name: found by content, not by name.
    let copy = img.add(&[
        ("/app/main.go", main_go),
        ("/app/go.mod", b"module app\n\ngo 1.21\n"),
        ("/app/renamed.txt", main_go),
    ]);
    let build = img.add(&[("/app/server", b"\x7fELF")]);
    let single = stage(
        "0",
        vec![golang, copy, build],
        &["ADD go /", "COPY . . # buildkit", "RUN go build # buildkit"],
        1,
        true,
    );
    let f = scan::scan(&img.store, &[single], Some(ctx.path())).unwrap();
    let src = by_rule(&f, "SourceInFinalImage");
    assert_eq!(src.len(), 1, "{f:#?}");
    assert_eq!(src[0].severity, Severity::Error);
    assert_eq!(src[0].layer.as_ref().unwrap().index, 1);
    assert!(
        src[0]
            .message
            .starts_with("3 source files in the final image"),
        "{}",
        src[0].message
    );
    assert!(
        src[0].message.contains("/app/renamed.txt (= main.go)"),
        "{}",
        src[0].message
    );
    let tools = by_rule(&f, "BuildToolInFinalImage");
    assert_eq!(tools.len(), 1);
    assert!(
        tools[0].message.contains("go (/usr/local/go/bin/go)")
            && tools[0].message.contains("gcc (/usr/bin/gcc-12)"),
        "{}",
        tools[0].message
    );

    let mut img = Img::new();
    let alpine = img.add(&[("/bin/busybox", b"busybox"), ("/etc/os-release", b"alpine")]);
    let server = img.add(&[("/root/server", b"\x7fELF")]);
    let multi = stage(
        "runtime",
        vec![alpine, server],
        &[
            "ADD alpine /",
            "COPY --from=builder /app/server . # buildkit",
        ],
        1,
        true,
    );
    let f = scan::scan(&img.store, &[multi], Some(ctx.path())).unwrap();
    assert!(f.is_empty(), "{f:#?}");
}

#[test]
fn deleted_and_overwritten_files_are_wasted_bytes() {
    let mut img = Img::new();
    let big = vec![7u8; 1_500_000];
    let base = img.add(&[("/bin/sh", b"sh")]);
    let dl = img.add(&[
        ("/tmp/archive.tar", &big),
        ("/etc/conf", b"v1 of the config"),
    ]);
    let rm = img.delete(&["/tmp/archive.tar"]);
    let over = img.add(&[("/etc/conf", b"v2")]);
    let s = stage(
        "0",
        vec![base, dl, rm, over],
        &[
            "ADD / /",
            "RUN wget # buildkit",
            "RUN rm # buildkit",
            "COPY conf /etc/ # buildkit",
        ],
        1,
        true,
    );
    let f = scan::scan(&img.store, std::slice::from_ref(&s), None).unwrap();
    let w = by_rule(&f, "WastedBytes");
    assert_eq!(w.len(), 1, "{f:#?}");
    assert_eq!(w[0].severity, Severity::Warning);
    assert_eq!(w[0].path.as_deref(), Some("/tmp/archive.tar"));
    assert!(w[0].message.starts_with("1.5MB wasted"), "{}", w[0].message);
    assert!(
        w[0].message
            .contains("/etc/conf (16B, layer 1 overwritten by layer 3)"),
        "{}",
        w[0].message
    );

    // The same in the layer report of the committed image.
    let config = json!({"architecture": "amd64", "os": "linux", "config": {}, "history": [
        {"created_by": "ADD / /"}, {"created_by": "RUN wget # buildkit"},
        {"created_by": "ENV A=1", "empty_layer": true},
        {"created_by": "RUN rm # buildkit"}, {"created_by": "COPY conf /etc/ # buildkit"}]});
    let rec = img
        .store
        .commit_image_json(&config, &s.layers, &["waste:1".into()])
        .unwrap();
    let r = cairn_check::layers::layer_report(&img.store, &rec).unwrap();
    assert_eq!(r.rows.len(), 5);
    assert_eq!(r.size, rec.size);
    assert_eq!(r.rows[1].largest[0].path, "/tmp/archive.tar");
    assert_eq!(r.rows[1].largest[0].size, 1_500_000);
    assert_eq!(r.rows[2].layer, None);
    assert_eq!((r.rows[3].hides, r.rows[3].hidden_bytes), (1, 1_500_000));
    assert_eq!(r.wasted, 1_500_016);
    let mut out = Vec::new();
    r.render(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with(
            "LAYER   SIZE      CREATED BY\n3       2B        COPY conf /etc/ # buildkit\n"
        ),
        "{text}"
    );
    assert!(text.contains("1.5MB   /tmp/archive.tar"), "{text}");
    assert!(
        text.contains("deletes or overwrites 1 file of lower layers (1.5MB wasted)"),
        "{text}"
    );

    // Without the deletion there is nothing to report.
    let mut img = Img::new();
    let base = img.add(&[("/bin/sh", b"sh")]);
    let dl = img.add(&[("/tmp/archive.tar", &big)]);
    let s = stage(
        "0",
        vec![base, dl],
        &["ADD / /", "RUN wget # buildkit"],
        1,
        true,
    );
    assert!(scan::scan(&img.store, &[s], None).unwrap().is_empty());
}

#[test]
fn caches_git_and_dev_dependencies_in_the_final_image() {
    let mut img = Img::new();
    let base = img.add(&[("/usr/bin/node", b"node")]);
    let pkg = br#"{"name": "app", "dependencies": {"express": "4"}, "devDependencies": {"jest": "29", "eslint": "8"}}"#;
    let app = img.add(&[
        ("/app/package.json", pkg),
        ("/app/node_modules/express/package.json", b"{}"),
        ("/app/node_modules/jest/package.json", b"{}"),
        ("/app/.git/HEAD", b"ref: refs/heads/main\n"),
        ("/root/.npm/_cacache/index-v5/aa", b"cache entry"),
    ]);
    let s = stage(
        "0",
        vec![base.clone(), app],
        &["ADD / /", "RUN npm install # buildkit"],
        1,
        true,
    );
    let f = scan::scan(&img.store, &[s], None).unwrap();
    let dev = by_rule(&f, "DevDependenciesInFinalImage");
    assert_eq!(dev.len(), 1, "{f:#?}");
    assert!(dev[0].message.ends_with(": jest"), "{}", dev[0].message);
    assert_eq!(
        by_rule(&f, "GitDirInFinalImage")[0].path.as_deref(),
        Some("/app/.git")
    );
    let cache = by_rule(&f, "BuildCacheInFinalImage");
    assert_eq!(cache[0].message, "npm cache in the final image (11B)");
    assert_eq!(cache[0].path.as_deref(), Some("/root/.npm/_cacache"));

    let app = img.add(&[
        ("/app/package.json", pkg),
        ("/app/node_modules/express/package.json", b"{}"),
    ]);
    let s = stage(
        "0",
        vec![base, app],
        &["ADD / /", "RUN npm ci --omit=dev # buildkit"],
        1,
        true,
    );
    assert!(scan::scan(&img.store, &[s], None).unwrap().is_empty());
}

#[test]
fn check_build_combines_dockerfile_and_image_rules() {
    let mut img = Img::new();
    let base = img.add(&[("/bin/sh", b"sh")]);
    let key = img.add(&[("/app/id_rsa", KEY.as_bytes())]);
    let s = stage(
        "0",
        vec![base, key],
        &["ADD / /", "COPY id_rsa /app/ # buildkit"],
        1,
        true,
    );
    let input = cairn_check::CheckInput {
        dockerfile_name: "Dockerfile".into(),
        dockerfile: "# check=skip=UnpinnedBaseImage\nFROM busybox as b\nCOPY id_rsa /app/\n".into(),
        ..Default::default()
    };
    let r = cairn_check::check_build(&img.store, &input, None, &[s]).unwrap();
    let rules: Vec<&str> = r.findings.iter().map(|f| f.rule.as_str()).collect();
    assert_eq!(
        rules,
        vec![
            "FromAsCasing",
            "FinalStageRunsAsRoot",
            "SecretInLayer",
            "SecretInLayer"
        ]
    );
    assert_eq!(r.exit_code(), 1);
    let mut out = Vec::new();
    r.render_json(&mut out).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["findings"][2]["layer"]["index"], 1);
    assert_eq!(v["findings"][2]["path"], "/app/id_rsa");
}

#[test]
fn keys_shipped_by_packages_warn_in_the_final_image_and_are_ignored_in_builders() {
    let mut img = Img::new();
    let base = img.add(&[("/bin/sh", b"sh")]);
    let deps = img.add(&[(
        "/app/node_modules/ssh2/test/fixtures/id_rsa",
        KEY.as_bytes(),
    )]);
    let builder = stage(
        "builder",
        vec![base.clone(), deps.clone()],
        &["ADD / /", "RUN npm ci # buildkit"],
        1,
        false,
    );
    assert!(scan::scan(&img.store, &[builder], None).unwrap().is_empty());
    let fin = stage(
        "0",
        vec![base, deps],
        &["ADD / /", "RUN npm ci # buildkit"],
        1,
        true,
    );
    let f = scan::scan(&img.store, &[fin], None).unwrap();
    assert_eq!(f.len(), 2, "{f:#?}");
    assert!(
        f.iter().all(|x| x.severity == Severity::Warning
            && x.message.ends_with("(shipped by an installed package)")),
        "{f:#?}"
    );
}
