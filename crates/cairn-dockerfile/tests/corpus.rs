//! The table-driven corpus: each directory under `tests/corpus/` is a case with a `Dockerfile`
//! (or a `source` file naming one by its path from the repository root, e.g.
//! `examples/4.1-named-stages/Dockerfile`, so that the tutorial's files are tested as they are),
//! an optional `args` file (`--target T`, `--build-arg K=V`, `--platform P`, `--build-platform P`,
//! one per line), an optional `images` file (`REF env K=V` / `REF onbuild TRIGGER` lines: what
//! the base-image lookup answers), and the expected `outline.txt` or `error.txt`.
//! `UPDATE_EXPECT=1 cargo test -p cairn-dockerfile --test corpus` rewrites the expectations.

use cairn_dockerfile::{outline, parse, plan, BaseImageInfo, PlanOptions};
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// The case's Dockerfile: its own, or the one its `source` file names.
fn dockerfile_of(dir: &Path) -> String {
    let own = dir.join("Dockerfile");
    let Ok(source) = fs::read_to_string(dir.join("source")) else {
        return fs::read_to_string(&own).expect("Dockerfile");
    };
    assert!(
        !own.exists(),
        "{}: a Dockerfile and a source file: one or the other",
        dir.display()
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(source.trim());
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: source {}: {e}", dir.display(), path.display()))
}

fn run_case(dir: &Path) -> String {
    let text = dockerfile_of(dir);
    let mut opts = PlanOptions {
        target_platform: Some("linux/amd64".into()),
        build_platform: Some("linux/amd64".into()),
        ..PlanOptions::default()
    };
    if let Ok(args) = fs::read_to_string(dir.join("args")) {
        for line in args.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (flag, value) = line.split_once(' ').unwrap_or((line, ""));
            match flag {
                "--target" => opts.target = Some(value.to_string()),
                "--platform" => opts.target_platform = Some(value.to_string()),
                "--build-platform" => opts.build_platform = Some(value.to_string()),
                "--build-arg" => {
                    let (k, v) = value.split_once('=').expect("--build-arg K=V");
                    opts.build_args.insert(k.to_string(), v.to_string());
                }
                other => panic!("{}: unknown line in args: {other}", dir.display()),
            }
        }
    }
    let mut images: BTreeMap<String, BaseImageInfo> = BTreeMap::new();
    if let Ok(spec) = fs::read_to_string(dir.join("images")) {
        for line in spec.lines().filter(|l| !l.trim().is_empty()) {
            let mut parts = line.splitn(3, ' ');
            let (r, what, rest) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap_or(""),
            );
            let info = images.entry(r.to_string()).or_default();
            match what {
                "env" => {
                    let (k, v) = rest.split_once('=').unwrap();
                    info.env.push((k.to_string(), v.to_string()));
                }
                "onbuild" => info.onbuild.push(rest.to_string()),
                other => panic!("{}: unknown line in images: {other}", dir.display()),
            }
        }
    }
    let lookup = |r: &str| images.get(r).cloned();
    let result = parse("Dockerfile", &text).and_then(|df| plan(&df, &opts, &lookup));
    match result {
        Ok(p) => format!("outline.txt\n{}", outline(&p)),
        Err(e) => format!("error.txt\n{e}\n"),
    }
}

#[test]
fn corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut dirs: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut failures = Vec::new();
    for dir in &dirs {
        let got = run_case(dir);
        let (file, body) = got.split_once('\n').unwrap();
        let other = if file == "outline.txt" {
            "error.txt"
        } else {
            "outline.txt"
        };
        if update {
            fs::write(dir.join(file), body).unwrap();
            let _ = fs::remove_file(dir.join(other));
            continue;
        }
        match fs::read_to_string(dir.join(file)) {
            Ok(want) if want == body => {}
            Ok(want) => failures.push(format!(
                "{}: {file} differs\n--- want\n{want}--- got\n{body}",
                dir.display()
            )),
            Err(_) => failures.push(format!(
                "{}: got {file} (no such expectation)\n{body}",
                dir.display()
            )),
        }
    }
    assert!(dirs.len() >= 60, "the corpus has only {} cases", dirs.len());
    assert!(
        failures.is_empty(),
        "{} of {} corpus cases failed:\n\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n")
    );
}
