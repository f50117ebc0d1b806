//! `cairn build` end to end: the real binary, a fresh store per test (`--root`), small Dockerfiles
//! on a busybox base image imported with `cairn import`.
//!
//! These tests need root (overlay mounts and namespaces for RUN); CI runs as root. They are skipped
//! with a message when not run as root, or when /bin/busybox (Debian's busybox-static) is missing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::time::Instant;

use common::{cairn_cmd, output_with_stdin, stderr, stdout, tar_dir, Cairn};
use serde_json::Value;

fn can_run() -> bool {
    common::can_run("cairn build tests need root")
}

/// The plain progress: vertex number → name, and which ended CACHED / DONE.
struct Vertices {
    names: BTreeMap<usize, String>,
    cached: BTreeSet<usize>,
    done: BTreeSet<usize>,
}

fn vertices(out: &Output) -> Vertices {
    let mut v = Vertices {
        names: BTreeMap::new(),
        cached: BTreeSet::new(),
        done: BTreeSet::new(),
    };
    for line in stderr(out).lines() {
        let Some(rest) = line.strip_prefix('#') else {
            continue;
        };
        let Some((num, text)) = rest.split_once(' ') else {
            continue;
        };
        let Ok(id) = num.parse::<usize>() else {
            continue;
        };
        if text == "CACHED" {
            v.cached.insert(id);
        } else if text.starts_with("DONE ") {
            v.done.insert(id);
        } else {
            v.names.entry(id).or_insert_with(|| text.to_string());
        }
    }
    v
}

impl Vertices {
    fn id_of(&self, name_part: &str) -> usize {
        *self
            .names
            .iter()
            .find(|(_, n)| n.contains(name_part))
            .unwrap_or_else(|| panic!("no vertex {name_part:?} in {:?}", self.names))
            .0
    }
    fn is_cached(&self, name_part: &str) -> bool {
        self.cached.contains(&self.id_of(name_part))
    }
}

#[test]
fn multi_stage_copy_from_target_and_outputs() {
    // Needs root (see the file's doc).
    if !can_run() {
        return;
    }
    let env = Cairn::with_busybox();
    env.write("hello.txt", "hello\n");
    env.write(
        "Dockerfile",
        r#"FROM busybox AS base
RUN echo base > /base.txt

FROM base AS builder
WORKDIR /src
COPY hello.txt .
RUN cat hello.txt > out.txt && echo built >> out.txt && cat /base.txt >> out.txt

FROM busybox AS unused
RUN echo never-built

FROM busybox AS runtime
COPY --from=builder /src/out.txt /app/out.txt
CMD ["cat", "/app/out.txt"]
"#,
    );
    let dest = env.ctx.parent().unwrap().join("out");
    let out = env.ok_build(&[
        "-t",
        "test:multi",
        "-o",
        &format!("type=local,dest={}", dest.display()),
    ]);
    let err = stderr(&out);
    assert!(!err.contains("never-built"), "the unused stage ran:\n{err}");
    assert_eq!(
        fs::read_to_string(dest.join("app/out.txt")).unwrap(),
        "hello\nbuilt\nbase\n"
    );
    assert!(
        !dest.join("base.txt").exists(),
        "runtime must not contain the builder's files"
    );
    assert!(
        err.contains("naming to docker.io/library/test:multi done"),
        "{err}"
    );
    assert!(err.contains("writing image sha256:"), "{err}");

    // --target builder: only base and builder are built; the result has the builder's files.
    let dest2 = env.ctx.parent().unwrap().join("out2");
    let out = env.ok_build(&[
        "--target",
        "builder",
        "-o",
        &format!("type=local,dest={}", dest2.display()),
    ]);
    let err = stderr(&out);
    assert!(!err.contains("[runtime"), "runtime must be skipped:\n{err}");
    assert!(!err.contains("[unused"), "unused must be skipped:\n{err}");
    assert!(dest2.join("src/out.txt").is_file());
    assert!(dest2.join("base.txt").is_file());

    // The other exporters write archives an OCI tool can read.
    for kind in ["oci", "docker", "tar"] {
        let f = env.ctx.parent().unwrap().join(format!("img-{kind}.tar"));
        env.ok_build(&[
            "-t",
            "test:multi",
            "-o",
            &format!("type={kind},dest={}", f.display()),
        ]);
        let list = Command::new("tar").arg("-tf").arg(&f).output().unwrap();
        let names = String::from_utf8_lossy(&list.stdout).into_owned();
        match kind {
            "oci" => assert!(names.contains("index.json") && names.contains("blobs/sha256/")),
            "docker" => assert!(names.contains("manifest.json")),
            _ => assert!(names.contains("app/out.txt"), "{names}"),
        }
        // Readable as any file the user makes (docker's outputs are), not a temp file's 0600.
        let made = env.ctx.parent().unwrap().join("made-here");
        fs::File::create(&made).unwrap();
        let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&f), mode(&made), "{kind}");
    }
    // As docker's: an archive's directory must exist, and that is said before any step runs.
    let missing = env.ctx.parent().unwrap().join("no-such-dir/img.tar");
    let out = env.build(&[
        "--no-cache",
        "-o",
        &format!("type=tar,dest={}", missing.display()),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "failed to open {m}: open {m}: no such file or directory",
            m = missing.display()
        )),
        "{}",
        stderr(&out)
    );
    assert!(!stdout(&out).contains("RUN"), "{}", stdout(&out));
    assert!(!missing.parent().unwrap().exists());
}

#[test]
fn the_wait_for_the_last_layers_blob_is_shown_in_the_export() {
    // Needs root (see the file's doc).
    if !can_run() {
        return;
    }
    let env = Cairn::with_busybox();
    // Random bytes take a while to compress; the blob is written while the next step runs
    // (the last step's own blob is written in that step).
    env.write(
        "Dockerfile",
        "FROM busybox\nRUN head -c 24000000 /dev/urandom > /noise\nRUN true\n",
    );
    let out = env.ok_build(&["-t", "test:noise"]);
    let err = stderr(&out);
    let v = vertices(&out);
    let export = v.id_of("exporting to image");
    let status = err
        .lines()
        .find_map(|l| l.strip_prefix(&format!("#{export} exporting layers ")))
        .unwrap_or_else(|| panic!("no timed exporting layers status:\n{err}"));
    let secs: f64 = status
        .strip_suffix("s done")
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{status:?}"));
    assert!(secs > 0.0, "{err}");
    let done = err
        .lines()
        .find_map(|l| l.strip_prefix(&format!("#{export} DONE ")))
        .and_then(|t| t.strip_suffix('s'))
        .and_then(|t| t.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{err}"));
    assert!(done >= secs, "the vertex's time includes the wait:\n{err}");
}

#[test]
fn the_last_steps_blob_written_in_its_step_is_the_one_written_later() {
    // Needs root (see the file's doc).
    if !can_run() {
        return;
    }
    let env = Cairn::with_busybox();
    let run = "RUN seq 1 300000 > /nums && mkdir -p /d/e && ln -s ../nums /d/e/l && ln /nums /hard";
    // The RUN is the last step: its blob is written in the step.
    env.write("Dockerfile.last", &format!("FROM busybox\n{run}\n"));
    let last = env.ctx.join("Dockerfile.last");
    let last = last.to_str().unwrap();
    env.ok_build(&["-f", last, "-t", "test:last"]);
    let after_last = layer_blobs(&env);
    // The same RUN followed by another: its blob is written by a thread while that one runs.
    env.write(
        "Dockerfile.more",
        &format!("FROM busybox\n{run}\nRUN true\n"),
    );
    let more = env.ctx.join("Dockerfile.more");
    env.ok_build(&[
        "--no-cache",
        "-f",
        more.to_str().unwrap(),
        "-t",
        "test:more",
    ]);
    assert_eq!(
        layer_blobs(&env),
        after_last,
        "a second blob for the same layer"
    );
    let layers = |tag: &str| {
        let v: Value = serde_json::from_str(&common::ok(&env.root, &["inspect", tag])).unwrap();
        v[0]["RootFS"]["Layers"].clone()
    };
    assert_eq!(layers("test:last"), layers("test:more"));
    // The step written in line was recorded in the cache with its blob.
    let out = env.ok_build(&["-f", last, "-t", "test:last"]);
    assert!(vertices(&out).is_cached("RUN seq"), "{}", stderr(&out));
}

#[test]
fn independent_stages_run_at_the_same_time() {
    // Needs root (see the file's doc).
    if !can_run() {
        return;
    }
    let env = Cairn::with_busybox();
    env.write(
        "Dockerfile",
        "FROM busybox AS common\nRUN echo common > /common\n\n\
         FROM common AS a\nRUN sleep 1 && echo a > /a\n\n\
         FROM common AS b\nRUN sleep 1 && echo b > /b\n\n\
         FROM busybox\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n",
    );
    let out = env.cairn(&["build", "--progress=json", env.ctx.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Start and end times of the two RUN vertices, from the JSON events.
    let mut names = BTreeMap::new();
    let mut start = BTreeMap::new();
    let mut end = BTreeMap::new();
    for line in stderr(&out).lines() {
        let Ok(e) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let id = e["id"].as_u64().unwrap_or(0);
        match e["event"].as_str() {
            Some("started") => {
                names.insert(id, e["name"].as_str().unwrap_or("").to_string());
                start.insert(id, e["at_ms"].as_u64().unwrap());
            }
            Some("done") => {
                end.insert(id, e["at_ms"].as_u64().unwrap());
            }
            _ => {}
        }
    }
    let run_of = |stage: &str| {
        *names
            .iter()
            .find(|(_, n)| n.starts_with(&format!("[{stage} ")) && n.contains("RUN sleep"))
            .unwrap_or_else(|| panic!("no RUN of {stage} in {names:?}"))
            .0
    };
    let (a, b) = (run_of("a"), run_of("b"));
    let common_runs = names
        .values()
        .filter(|n| n.contains("RUN echo common"))
        .count();
    assert_eq!(
        common_runs, 1,
        "a stage used by two others is built once: {names:?}"
    );
    let (sa, ea, sb, eb) = (start[&a], end[&a], start[&b], end[&b]);
    eprintln!("a: {sa}..{ea} ms, b: {sb}..{eb} ms");
    assert!(
        sa < eb && sb < ea,
        "the RUNs of a and b did not overlap: a {sa}..{ea}, b {sb}..{eb}"
    );
}

#[test]
fn rebuilds_hit_the_cache_and_a_changed_file_reruns_from_its_copy() {
    // Needs root (see the file's doc).
    if !can_run() {
        return;
    }
    let env = Cairn::with_busybox();
    env.write("a.txt", "a\n");
    env.write("b.txt", "b1\n");
    env.write(
        "Dockerfile",
        "FROM busybox\nCOPY a.txt /a.txt\nRUN cat /a.txt > /a.copy\nCOPY b.txt /b.txt\nRUN cat /b.txt > /b.copy\n",
    );
    let first = env.ok_build(&["-t", "cache:test"]);
    let v = vertices(&first);
    assert!(
        !v.is_cached("RUN cat /a.txt"),
        "nothing is cached on a first build"
    );

    let t = Instant::now();
    let second = env.ok_build(&["-t", "cache:test"]);
    let elapsed = t.elapsed();
    let v = vertices(&second);
    for step in [
        "COPY a.txt",
        "RUN cat /a.txt",
        "COPY b.txt",
        "RUN cat /b.txt",
    ] {
        assert!(v.is_cached(step), "{step} not CACHED:\n{}", stderr(&second));
    }
    eprintln!("no-op rebuild: {elapsed:?}");
    assert!(
        elapsed.as_millis() < 2000,
        "a no-op rebuild took {elapsed:?}"
    );

    env.write("b.txt", "b2\n");
    let third = env.ok_build(&["-t", "cache:test"]);
    let v = vertices(&third);
    assert!(v.is_cached("COPY a.txt") && v.is_cached("RUN cat /a.txt"));
    assert!(!v.is_cached("COPY b.txt") && !v.is_cached("RUN cat /b.txt"));
    assert!(v.done.contains(&v.id_of("RUN cat /b.txt")));

    // --no-cache runs everything.
    let fourth = env.ok_build(&["--no-cache", "-t", "cache:test"]);
    let v = vertices(&fourth);
    assert!(v
        .cached
        .iter()
        .all(|id| !v.names[id].contains("COPY") && !v.names[id].contains("RUN")));
}

#[test]
fn the_same_inputs_give_the_same_image_id_in_two_stores() {
    // Needs root (see the file's doc).
    if !can_run() {
        return;
    }
    // Files created by the RUN get the wall clock's mtimes, a second apart between the two
    // builds; the layers clamp them to the build time, so the IDs still match.
    let mut ids2 = Vec::new();
    for _ in 0..2 {
        let env = Cairn::with_busybox();
        env.write("app.txt", "app\n");
        env.write(
            "Dockerfile",
            "FROM busybox\nWORKDIR /app\nCOPY app.txt .\nRUN mkdir -p /var/x && touch /var/x/y && echo hi > /var/x/z\nCMD [\"cat\", \"/app/app.txt\"]\n",
        );
        let iid = env.ctx.parent().unwrap().join("iid");
        env.ok_build(&["--iidfile", iid.to_str().unwrap()]);
        ids2.push(fs::read_to_string(&iid).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert!(ids2[0].starts_with("sha256:"));
    assert_eq!(ids2[0], ids2[1], "same inputs, different image IDs");
}

#[test]
fn a_failing_run_names_its_line_and_exit_code() {
    // Needs root (see the file's doc).
    if !can_run() {
        return;
    }
    let env = Cairn::with_busybox();
    env.write(
        "Dockerfile",
        "FROM busybox\nRUN echo fine\nRUN echo oops-output && exit 3\nRUN echo never\n",
    );
    let out = env.build(&[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("Dockerfile:3"), "{err}");
    assert!(err.contains(">>> RUN echo oops-output && exit 3"), "{err}");
    assert!(err.contains("oops-output"), "{err}");
    assert!(
        err.contains("did not complete successfully: exit code: 3"),
        "{err}"
    );
    assert!(
        !err.contains("#5 [4/4]"),
        "the build went on after the failure:\n{err}"
    );
}

#[test]
fn config_fields_and_history_match_docker() {
    // Needs root (see the file's doc).
    if !can_run() {
        return;
    }
    let env = Cairn::with_busybox();
    env.write("app.sh", "echo app\n");
    env.write(
        "Dockerfile",
        r#"FROM busybox
ARG VERSION=1.0
ENV APP_HOME=/app PATH=/app/bin:/usr/bin:/bin
WORKDIR /app
COPY app.sh .
RUN echo "$VERSION" > version && test "$APP_HOME" = /app
RUN true
USER node
EXPOSE 8080 53/udp
VOLUME ["/data"]
LABEL org.example.team=build
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --retries=3 CMD wget -q --spider http://localhost:8080 || exit 1
SHELL ["/bin/sh", "-ec"]
ONBUILD RUN echo child
ENTRYPOINT ["/bin/sh"]
CMD ["app.sh"]
"#,
    );
    let iid = env.ctx.parent().unwrap().join("iid");
    env.ok_build(&[
        "--iidfile",
        iid.to_str().unwrap(),
        "--label",
        "extra=yes",
        "-t",
        "cfg:test",
    ]);
    let cfg = env.config_of(&iid);
    let c = &cfg["config"];
    assert_eq!(c["User"], "node");
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(
        c["ExposedPorts"],
        serde_json::json!({"8080/tcp": {}, "53/udp": {}})
    );
    assert_eq!(c["Volumes"], serde_json::json!({"/data": {}}));
    assert_eq!(c["Labels"]["org.example.team"], "build");
    assert_eq!(c["Labels"]["extra"], "yes");
    assert_eq!(c["StopSignal"], "SIGTERM");
    assert_eq!(
        c["Healthcheck"],
        serde_json::json!({"Test": ["CMD-SHELL", "wget -q --spider http://localhost:8080 || exit 1"],
                           "Interval": 30_000_000_000u64, "Retries": 3})
    );
    assert_eq!(c["Shell"], serde_json::json!(["/bin/sh", "-ec"]));
    assert_eq!(c["OnBuild"], serde_json::json!(["RUN echo child"]));
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh"]));
    assert_eq!(c["Cmd"], serde_json::json!(["app.sh"]));
    let env_list: Vec<String> = serde_json::from_value(c["Env"].clone()).unwrap();
    assert!(
        env_list.contains(&"APP_HOME=/app".to_string()),
        "{env_list:?}"
    );
    assert!(
        !env_list.iter().any(|e| e.starts_with("VERSION=")),
        "ARGs stay out of the image"
    );
    assert_eq!(
        cfg["created"], "2023-11-14T22:13:20Z",
        "SOURCE_DATE_EPOCH is the build time"
    );

    let history: Vec<&Value> = cfg["history"].as_array().unwrap().iter().collect();
    let ours: Vec<(String, bool)> = history
        .iter()
        .filter(|h| h["comment"] == "buildkit.dockerfile.v0")
        .map(|h| {
            (
                h["created_by"].as_str().unwrap().to_string(),
                h["empty_layer"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    let expected: Vec<(&str, bool)> = vec![
        ("ARG VERSION=1.0", true),
        ("ENV APP_HOME=/app PATH=/app/bin:/usr/bin:/bin", true),
        ("WORKDIR /app", false),
        ("COPY app.sh . # buildkit", false),
        (
            "RUN |1 VERSION=1.0 /bin/sh -c echo \"$VERSION\" > version && test \"$APP_HOME\" = /app # buildkit",
            false,
        ),
        // A RUN that changes nothing makes no layer (BuildKit drops the empty layer).
        ("RUN |1 VERSION=1.0 /bin/sh -c true # buildkit", true),
        ("USER node", true),
        ("EXPOSE map[53/udp:{} 8080/tcp:{}]", true),
        ("VOLUME [/data]", true),
        ("LABEL org.example.team=build", true),
        ("STOPSIGNAL SIGTERM", true),
        (
            r#"HEALTHCHECK &{["CMD-SHELL" "wget -q --spider http://localhost:8080 || exit 1"] "30s" "0s" "0s" "0s" '\x03'}"#,
            true,
        ),
        ("SHELL [/bin/sh -ec]", true),
        (r#"ENTRYPOINT ["/bin/sh"]"#, true),
        (r#"CMD ["app.sh"]"#, true),
    ];
    let got: Vec<(&str, bool)> = ours.iter().map(|(s, e)| (s.as_str(), *e)).collect();
    assert_eq!(got, expected);
    // One layer per non-empty history entry, base image included.
    let layers = cfg["rootfs"]["diff_ids"].as_array().unwrap().len();
    let non_empty = history
        .iter()
        .filter(|h| !h["empty_layer"].as_bool().unwrap_or(false))
        .count();
    assert_eq!(layers, non_empty);
}

#[test]
fn heredocs_build_args_and_a_dockerfile_on_stdin() {
    // Needs root (see the file's doc).
    if !can_run() {
        return;
    }
    let env = Cairn::with_busybox();
    env.write(
        "Dockerfile",
        "FROM busybox\nARG GREETING=hello\nARG FROM_ENV\nRUN <<EOF\necho \"$GREETING\" > /greeting\necho \"$FROM_ENV\" > /from-env\nEOF\n\
         RUN <<EOF\n#!/bin/sh\necho \"run as $0\" > /shebang\nEOF\n",
    );
    let dest = env.ctx.parent().unwrap().join("out");
    let out = cairn_cmd(&env.root)
        .args([
            "build",
            "--progress=plain",
            "--build-arg",
            "GREETING=bonjour",
            "--build-arg",
            "FROM_ENV",
        ])
        .arg("-o")
        .arg(format!("type=local,dest={}", dest.display()))
        .arg(&env.ctx)
        .env("FROM_ENV", "from-the-environment")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(dest.join("greeting")).unwrap(),
        "bonjour\n"
    );
    assert_eq!(
        fs::read_to_string(dest.join("from-env")).unwrap(),
        "from-the-environment\n"
    );
    // A heredoc starting with #! is run as a file, not given to the shell.
    assert_eq!(
        fs::read_to_string(dest.join("shebang")).unwrap(),
        "run as /dev/pipes/EOF\n"
    );
    assert!(!dest.join("dev/pipes").exists());

    // `cairn build - < Dockerfile`: no context (a heredoc COPY needs none), and -q prints only the
    // image ID.
    let out = output_with_stdin(
        cairn_cmd(&env.root).args(["build", "-q", "-"]),
        b"FROM busybox\nCOPY <<EOF /x\nfrom-stdin\nEOF\nRUN grep -q from-stdin /x\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.trim().starts_with("sha256:") && stdout.lines().count() == 1,
        "{stdout}"
    );
}

#[test]
fn a_missing_base_image_is_named() {
    // Needs root (see the file's doc).
    if !can_run() {
        return;
    }
    let env = Cairn::with_busybox();
    env.write("Dockerfile", "FROM golang:1.21 AS builder\nRUN true\n");
    let out = env.build(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("\"golang:1.21\" not found"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn onbuild_user_workdir_and_cache_mounts() {
    // Needs root (see the file's doc).
    if !can_run() {
        return;
    }
    let env = Cairn::with_busybox();
    env.write(
        "Dockerfile",
        "FROM busybox\nONBUILD RUN echo triggered > /onbuild\n",
    );
    env.ok_build(&["-t", "parent:1"]);

    env.write(
        "Dockerfile",
        "FROM parent:1\nUSER node\nWORKDIR /home/node/work\n\
         RUN id -u > uid && pwd > pwd && touch mine\n\
         RUN --mount=type=cache,target=/cache,uid=1000 echo x >> /cache/log && wc -l < /cache/log > count\n",
    );
    let iid = env.ctx.parent().unwrap().join("iid");
    for (i, expected) in ["1", "2"].iter().enumerate() {
        let dest = env.ctx.parent().unwrap().join(format!("out{i}"));
        env.ok_build(&[
            "--no-cache",
            "--iidfile",
            iid.to_str().unwrap(),
            "-t",
            "child:1",
            "-o",
            &format!("type=local,dest={}", dest.display()),
        ]);
        let work = dest.join("home/node/work");
        assert_eq!(
            fs::read_to_string(dest.join("onbuild")).unwrap(),
            "triggered\n"
        );
        assert_eq!(fs::read_to_string(work.join("uid")).unwrap(), "1000\n");
        assert_eq!(
            fs::read_to_string(work.join("pwd")).unwrap(),
            "/home/node/work\n"
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(work.join("mine")).unwrap().uid(), 1000);
        assert_eq!(
            fs::metadata(&work).unwrap().uid(),
            1000,
            "WORKDIR is made as USER"
        );
        // The cache mount outlives the build and never reaches a layer.
        assert_eq!(
            fs::read_to_string(work.join("count")).unwrap().trim(),
            *expected
        );
        assert!(!dest.join("cache/log").exists());
    }
    let cfg = env.config_of(&iid);
    assert!(
        cfg["config"]["OnBuild"].is_null(),
        "triggers are consumed, not inherited"
    );
}

#[test]
fn an_image_may_hold_the_same_layer_twice() {
    // Needs root (see the file's doc).
    if !can_run() {
        return;
    }
    let env = Cairn::with_busybox();
    env.write("a.txt", "a\n");
    // The two COPY layers are byte for byte the same: one snapshot, twice in the stack.
    env.write(
        "Dockerfile",
        "FROM busybox\nCOPY a.txt /a.txt\nRUN rm /a.txt\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt\n",
    );
    let dest = env.ctx.parent().unwrap().join("out");
    env.ok_build(&["-o", &format!("type=local,dest={}", dest.display())]);
    assert_eq!(fs::read_to_string(dest.join("b.txt")).unwrap(), "a\n");
}

#[test]
fn a_context_tar_on_stdin_and_network_none() {
    // Needs root (see the file's doc).
    if !can_run() {
        return;
    }
    let env = Cairn::with_busybox();
    env.write("data.txt", "from-the-tar\n");
    env.write(
        "Dockerfile",
        "FROM busybox\nCOPY data.txt /data.txt\nRUN ip -o link | wc -l > /links\n",
    );
    let tar = env.ctx.parent().unwrap().join("ctx.tar");
    tar_dir(&env.ctx, &tar);
    let dest = env.ctx.parent().unwrap().join("out");
    let out = cairn_cmd(&env.root)
        .args(["build", "--progress=plain", "--network", "none", "-o"])
        .arg(format!("type=local,dest={}", dest.display()))
        .arg("-")
        .stdin(fs::File::open(&tar).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(dest.join("data.txt")).unwrap(),
        "from-the-tar\n"
    );
    // --network none: a namespace with loopback only.
    assert_eq!(fs::read_to_string(dest.join("links")).unwrap().trim(), "1");
}

#[test]
fn ctrl_c_stops_the_build_and_its_run() {
    // Needs root (see the file's doc).
    if !can_run() {
        return;
    }
    let env = Cairn::with_busybox();
    env.write(
        "Dockerfile",
        "FROM busybox\nRUN echo started && sleep 60\nRUN echo never\n",
    );
    let (status, seen, rest) = interrupt_when(&env, &[], "started");
    assert_eq!(status.code(), Some(130), "{seen}{rest}");
    assert!(rest.contains("interrupted by signal 2"), "{rest}");
    assert!(!rest.contains("echo never"), "{rest}");
}

#[test]
fn ctrl_c_while_the_last_layer_is_compressed_stops_the_build() {
    // Needs root (see the file's doc).
    if !can_run() {
        return;
    }
    let env = Cairn::with_busybox();
    // Random bytes compress slowly: the build is still writing the blob when the signal comes.
    env.write(
        "Dockerfile",
        "FROM busybox\nRUN head -c 300000000 /dev/urandom > /noise\nRUN true\n",
    );
    let (status, seen, rest) = interrupt_when(&env, &["-t", "test:noise"], "exporting to image");
    assert_eq!(status.code(), Some(130), "{seen}{rest}");
    assert!(rest.contains("interrupted by signal 2"), "{rest}");
    let images = common::ok(&env.root, &["images"]);
    assert!(!images.contains("noise"), "{images}");
}

/// Starts `cairn build --progress=plain EXTRA CTX`, sends SIGINT (as a terminal's Ctrl-C) once
/// its progress shows `marker`, and returns how it ended, the progress up to the marker, and
/// the rest.
fn interrupt_when(
    env: &Cairn,
    extra: &[&str],
    marker: &str,
) -> (std::process::ExitStatus, String, String) {
    use std::io::Read;
    let mut child = cairn_cmd(&env.root)
        .args(["build", "--progress=plain"])
        .args(extra)
        .arg(&env.ctx)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let mut seen = String::new();
    let t = Instant::now();
    while !seen.contains(marker) && t.elapsed().as_secs() < 60 {
        let mut buf = [0u8; 4096];
        let n = err.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains(marker), "{seen}");
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    (status, seen, rest)
}

#[test]
fn secrets_reach_the_run_but_not_the_image_nor_the_cache_key() {
    // Needs root (see the file's doc).
    if !can_run() {
        return;
    }
    let env = Cairn::with_busybox();
    let secret = env.ctx.parent().unwrap().join("token.txt");
    fs::write(&secret, "s3cret-value").unwrap();
    // The Dockerfile names the secret's hash, never the secret.
    let hash = cairn_layer::hash::sha256_digest(b"s3cret-value");
    let hex = hash.trim_start_matches("sha256:");
    env.write(
        "Dockerfile",
        &format!(
            "FROM busybox\n\
             RUN --mount=type=secret,id=token test \"$(sha256sum < /run/secrets/token | cut -d' ' -f1)\" = {hex} && echo ok > /file-ok\n\
             RUN --mount=type=secret,id=token,env=TOKEN test \"$(printf %s \"$TOKEN\" | sha256sum | cut -d' ' -f1)\" = {hex} && echo ok > /env-ok\n\
             RUN --mount=type=secret,id=absent ls /run/secrets > /listing 2>&1 || true\n"
        ),
    );
    let dest = env.ctx.parent().unwrap().join("out");
    let iid = env.ctx.parent().unwrap().join("iid");
    let spec = format!("id=token,src={}", secret.display());
    env.ok_build(&[
        "--secret",
        &spec,
        "--iidfile",
        iid.to_str().unwrap(),
        "-o",
        &format!("type=local,dest={}", dest.display()),
        "-t",
        "secret:1",
    ]);
    assert!(dest.join("file-ok").is_file() && dest.join("env-ok").is_file());
    assert!(
        !dest.join("run/secrets/token").exists(),
        "the secret reached a layer"
    );
    let config = env.config_text(&fs::read_to_string(&iid).unwrap());
    assert!(
        !config.contains("s3cret-value"),
        "the secret is in the config"
    );

    // A changed secret does not bust the cache (BuildKit's rule); a missing required one fails.
    fs::write(&secret, "other-value").unwrap();
    let out = env.ok_build(&["--secret", &spec, "-t", "secret:1"]);
    assert!(vertices(&out).is_cached("RUN --mount=type=secret,id=token,env=TOKEN"));
    env.write(
        "Dockerfile",
        "FROM busybox\nRUN --mount=type=secret,id=needed,required cat /run/secrets/needed\n",
    );
    let out = env.build(&[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("secret \"needed\" is required"),
        "{}",
        stderr(&out)
    );
}

/// Regression tests for the differential findings (tests/differential/FINDINGS.md): owners of
/// file ops, WORKDIR as written.
#[test]
fn file_op_owners_and_workdir_match_buildkit() {
    // Needs root (see the file's doc).
    if !can_run() {
        return;
    }
    let env = Cairn::with_busybox();
    env.write("f.txt", "f\n");
    env.write(
        "Dockerfile",
        "FROM busybox\n\
         COPY --chown=123 f.txt /uidonly/\n\
         COPY --chown=node f.txt /nameonly/\n\
         USER 2000\nWORKDIR /other\nUSER root\n\
         WORKDIR /x/./y/../z/\nRUN pwd > /pwd\n",
    );
    let iid = env.ctx.parent().unwrap().join("iid");
    let dest = env.ctx.parent().unwrap().join("out");
    env.ok_build(&[
        "--iidfile",
        iid.to_str().unwrap(),
        "-t",
        "findings:1",
        "-o",
        &format!("type=local,dest={}", dest.display()),
    ]);
    use std::os::unix::fs::MetadataExt;
    let owner = |p: &str| {
        let m = fs::symlink_metadata(dest.join(p)).unwrap();
        (m.uid(), m.gid())
    };
    // Finding 1: a bare UID is also the GID; a bare name takes its primary group.
    assert_eq!(owner("uidonly/f.txt"), (123, 123));
    assert_eq!(owner("nameonly/f.txt"), (1000, 1000));
    // Finding 2: WORKDIR is made as USER with the same rule.
    assert_eq!(owner("other"), (2000, 2000));
    // Finding 7: an absolute WORKDIR is kept as written; the cleaned path is made and used.
    assert_eq!(fs::read_to_string(dest.join("pwd")).unwrap(), "/x/z\n");
    // The RUN's cwd is made as runc does (MkdirAll of the path as written).
    assert!(dest.join("x/y").is_dir());
    let cfg = env.config_of(&iid);
    assert_eq!(cfg["config"]["WorkingDir"], "/x/./y/../z/");
    let history: Vec<String> = cfg["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["created_by"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        history.iter().any(|h| h == "WORKDIR /x/./y/../z/"),
        "{history:?}"
    );
}

/// Regression tests for the differential findings (tests/differential/FINDINGS.md): ARGs in the
/// RUN history and environment, `history` output.
#[test]
fn arg_history_and_history_output_match_buildkit() {
    // Needs root (see the file's doc).
    if !can_run() {
        return;
    }
    let env = Cairn::with_busybox();
    env.write("a.txt", "a\n");
    env.write(
        "Dockerfile",
        "FROM busybox\nENV TAB=\"x\ty\"\n\
         RUN --mount=type=bind,target=/rw,rw ls /rw > /ls && touch /rw/new\n\
         ARG UNSET\nARG SET=value\nENV LOCAL=from-env\nARG LOCAL=from-arg\n\
         RUN echo \"$LOCAL ${UNSET-none}\" > /args\n",
    );
    let dest = env.ctx.parent().unwrap().join("out");
    env.ok_build(&[
        "-t",
        "findings:2",
        "-o",
        &format!("type=local,dest={}", dest.display()),
    ]);
    // Finding 5: a rw bind of the context shows the context only (no sandbox mount points);
    // its writes reach neither the context nor the image.
    assert_eq!(
        fs::read_to_string(dest.join("ls")).unwrap(),
        "Dockerfile\na.txt\n"
    );
    assert!(!env.ctx.join("new").exists());
    assert!(!dest.join("rw/new").exists());
    // Finding 4: an ARG after an ENV of its name wins in the RUN environment (BuildKit), while
    // Config.Env keeps the ENV; finding 3: an unset ARG is not in the environment...
    assert_eq!(
        fs::read_to_string(dest.join("args")).unwrap(),
        "from-arg none\n"
    );
    // ... but the RUN history lists it, empty.
    let out = env.cairn(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.CreatedBy}}",
        "findings:2",
    ]);
    let text = common::stdout(&out);
    assert!(
        text.lines().any(|l| l.starts_with(
            "RUN |3 UNSET= SET=value LOCAL=from-arg /bin/sh -c echo \"$LOCAL ${UNSET-none}\""
        )),
        "{text}"
    );
    let inspect = env.cairn(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Env}}",
        "findings:2",
    ]);
    assert!(
        common::stdout(&inspect).contains("\"LOCAL=from-env\""),
        "{}",
        common::stdout(&inspect)
    );
    // Finding 9: docker's CLI shows a tab of CreatedBy as a space.
    let out = env.cairn(&["history", "--format", "{{.CreatedBy}}", "findings:2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = common::stdout(&out);
    assert!(text.lines().any(|l| l == "ENV TAB=x y"), "{text}");
}

/// A stage read by `COPY --from` or `RUN --mount=from=` shows its own files only, not the
/// sandbox's mount points (`/dev`, `/proc`, `/sys`, `/etc/hosts`, ...), as in BuildKit.
#[test]
fn a_stage_read_from_shows_no_mount_points() {
    // Needs root (see the file's doc).
    if !can_run() {
        return;
    }
    let env = Cairn::with_busybox();
    env.write("f", "f\n");
    env.write(
        "Dockerfile",
        "FROM scratch AS s\nCOPY f /\n\
         FROM busybox\nCOPY --from=s / /x/\n\
         RUN --mount=from=s,target=/m ls /m > /ro\n\
         RUN --mount=from=s,target=/m,rw ls /m > /rw\n",
    );
    let dest = env.ctx.parent().unwrap().join("out");
    env.ok_build(&["-o", &format!("type=local,dest={}", dest.display())]);
    let names: Vec<String> = fs::read_dir(dest.join("x"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["f"]);
    assert_eq!(fs::read_to_string(dest.join("ro")).unwrap(), "f\n");
    assert_eq!(fs::read_to_string(dest.join("rw")).unwrap(), "f\n");
}

/// The upper dir a step's layer was written from becomes that layer's snapshot (no unpack of
/// the blob just written): it must hold what unpacking the layer gives, whiteouts and opaque
/// directories included, and the next steps must see the change exactly.
#[test]
fn a_steps_upper_dir_becomes_its_snapshot() {
    // Needs root (see the file's doc).
    if !can_run() {
        return;
    }
    let env = Cairn::with_busybox();
    env.write("f", "hello\n");
    env.write(
        "Dockerfile",
        "FROM busybox\n\
         RUN mkdir -p /a/b && echo 1 > /a/b/f && echo 2 > /a/b/g && rm /etc/passwd && ln -s /a/b/f /lnk\n\
         RUN cat /a/b/f && test ! -e /etc/passwd && rm -rf /a/b && mkdir /a/b && echo 3 > /a/b/h\n\
         RUN test ! -e /a/b/f && test ! -e /a/b/g && cat /a/b/h > /seen && readlink /lnk >> /seen\n\
         COPY f /f\n\
         RUN cat /f /seen > /all\n",
    );
    let before: BTreeSet<_> = snapshot_names(&env);
    env.ok_build(&["-t", "promo"]);
    let made: Vec<String> = snapshot_names(&env).difference(&before).cloned().collect();
    assert_eq!(
        made.len(),
        5,
        "one snapshot per layer the build wrote: {made:?}"
    );
    let listing = |name: &str| {
        let dir = env.root.join("snapshots").join(name);
        let out = Command::new("find")
            .args([".", "-printf", "%p %y %m %U %G %s %l\\n"])
            .current_dir(&dir)
            .output()
            .unwrap();
        let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort();
        let mut text = lines.join("\n");
        for l in &lines {
            let mut parts = l.split(' ');
            let (p, kind) = (parts.next().unwrap(), parts.next().unwrap());
            if kind == "f" {
                text.push_str(&format!("\n{p}: {:?}", fs::read(dir.join(p)).unwrap()));
            }
        }
        text
    };
    let kept: Vec<String> = made.iter().map(|n| listing(n)).collect();
    for n in &made {
        fs::remove_dir_all(env.root.join("snapshots").join(n)).unwrap();
    }
    // Running the image unpacks them again from the blobs.
    let out = env.cairn(&["run", "--rm", "promo", "cat", "/all"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(common::stdout(&out), "hello\n3\n/a/b/f\n");
    for (n, k) in made.iter().zip(&kept) {
        assert_eq!(
            &listing(n),
            k,
            "snapshot {n} differs from its unpacked layer"
        );
    }
}

fn snapshot_names(env: &Cairn) -> BTreeSet<String> {
    fs::read_dir(env.root.join("snapshots"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The gzip blobs of the store (layers; configs and manifests are JSON).
fn layer_blobs(env: &Cairn) -> BTreeSet<String> {
    fs::read_dir(env.root.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| fs::read(p).is_ok_and(|b| b.starts_with(&[0x1f, 0x8b])))
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_builder_stages_layers_stay_snapshots_until_an_image_needs_them() {
    // Needs root (see the file's doc).
    if !can_run() {
        return;
    }
    let df = "FROM busybox AS builder\n\
              RUN echo built > /out.txt && mkdir /junk && echo x > /junk/y\n\
              FROM busybox\n\
              COPY --from=builder /out.txt /app/out.txt\n";
    let env = Cairn::with_busybox();
    env.write("Dockerfile", df);
    let (blobs0, snaps0) = (layer_blobs(&env), snapshot_names(&env));
    env.ok_build(&["-t", "t:final"]);
    let new_blobs: Vec<_> = layer_blobs(&env).difference(&blobs0).cloned().collect();
    let new_snaps: Vec<_> = snapshot_names(&env).difference(&snaps0).cloned().collect();
    assert_eq!(new_snaps.len(), 2, "the RUN and the COPY: {new_snaps:?}");
    assert_eq!(
        new_blobs.len(),
        1,
        "only the final image's layer: {new_blobs:?}"
    );

    // The builder's step is a cache hit on its snapshot, in this build and after a prune.
    let v = vertices(&env.ok_build(&["-t", "t:final"]));
    assert!(v.is_cached("RUN echo built"));
    let out = env.cairn(&["image", "prune", "-f"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = vertices(&env.ok_build(&["-t", "t:final"]));
    assert!(v.is_cached("RUN echo built"), "prune dropped a live entry");

    // Built as the target, the cached layer gets its blob: the image runs, and has the ID a
    // fresh store gives it.
    let iid = env.ctx.parent().unwrap().join("iid");
    let v = vertices(&env.ok_build(&[
        "--target",
        "builder",
        "-t",
        "t:builder",
        "--iidfile",
        iid.to_str().unwrap(),
    ]));
    assert!(v.is_cached("RUN echo built"));
    assert_eq!(layer_blobs(&env).difference(&blobs0).count(), 2);
    let out = env.cairn(&["run", "--rm", "t:builder", "cat", "/out.txt"]);
    assert_eq!(common::stdout(&out), "built\n", "{}", stderr(&out));
    let fresh = Cairn::with_busybox();
    fresh.write("Dockerfile", df);
    let fresh_iid = fresh.ctx.parent().unwrap().join("iid");
    fresh.ok_build(&[
        "--target",
        "builder",
        "--iidfile",
        fresh_iid.to_str().unwrap(),
    ]);
    assert_eq!(
        fs::read_to_string(&iid).unwrap(),
        fs::read_to_string(&fresh_iid).unwrap()
    );

    // A cache entry whose snapshot is gone is a miss (the step runs again), and prune drops it.
    env.write("Dockerfile", &df.replace("echo built", "echo again"));
    env.ok_build(&["-t", "t:final"]);
    let only = snapshot_names(&env)
        .into_iter()
        .find(|n| {
            fs::read_to_string(env.root.join("snapshots").join(n).join("out.txt"))
                .is_ok_and(|t| t == "again\n")
        })
        .expect("the new RUN's snapshot");
    fs::remove_dir_all(env.root.join("snapshots").join(&only)).unwrap();
    let out = env.cairn(&["image", "prune", "-f"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = vertices(&env.ok_build(&["-t", "t:final"]));
    assert!(
        !v.is_cached("RUN echo again"),
        "a missing snapshot must not be a hit"
    );
    let out = env.cairn(&["run", "--rm", "t:final", "cat", "/app/out.txt"]);
    assert_eq!(common::stdout(&out), "again\n", "{}", stderr(&out));
}
