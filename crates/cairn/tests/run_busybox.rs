//! `cairn run`, `ps`, `logs`, `stop`, `rm` end to end with a busybox image committed to a fresh
//! store. Needs root (namespaces, overlayfs) — CI runs as root — and the `busybox-static` Debian
//! package.

mod common;

use common::{busybox_rootfs_with, cairn_cmd};
use serde_json::json;
use std::fs;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Fixture {
    tmp: tempfile::TempDir,
}

impl Fixture {
    /// A store with `busybox-test:latest`: busybox, users root/app/nobody, /app with two files,
    /// and the config given.
    fn new(config: serde_json::Value) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let tree = busybox_rootfs_with(
            &tmp.path().join("tree"),
            &["etc", "app", "www", "tmp"],
            &[
                (
                    "etc/passwd",
                    b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/false\n",
                    0o644,
                ),
                (
                    "etc/group",
                    b"root:x:0:\napp:x:1000:\nnogroup:x:65534:\n",
                    0o644,
                ),
                ("app/main.go", b"package main\n", 0o644),
                ("app/go.mod", b"module app\n", 0o644),
                ("www/index.html", b"hello from cairn\n", 0o644),
            ],
        );
        let store = cairn_store::Store::open(&tmp.path().join("store")).unwrap();
        let layer = store
            .write_layer(
                cairn_layer::DiffSource::Tree(&tree),
                cairn_layer::Compression::Gzip,
                &Default::default(),
            )
            .unwrap();
        let mut cfg = json!({"architecture": "amd64", "os": "linux"});
        cfg["config"] = config;
        store
            .commit_image_json(&cfg, &[layer], &["busybox-test:latest".into()])
            .unwrap();
        Fixture { tmp }
    }

    fn root(&self) -> PathBuf {
        self.tmp.path().join("store")
    }

    /// `cairn --root ROOT args...` with nothing on stdin, not run yet.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = cairn_cmd(&self.root());
        c.args(args).stdin(Stdio::null());
        c
    }

    fn cairn(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Container dirs, not counting the spares that `--rm` runs recycle.
    fn containers(&self) -> usize {
        fs::read_dir(self.root().join("containers"))
            .map(|d| d.flatten().filter(|e| e.file_name() != ".spares").count())
            .unwrap_or(0)
    }

    fn spares(&self) -> Vec<std::path::PathBuf> {
        fs::read_dir(self.root().join("containers/.spares"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

fn text(o: &Output) -> (i32, String, String) {
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn run_rm_lists_files_and_returns_exit_codes() {
    let f = Fixture::new(json!({"Cmd": ["sh"]}));
    let (code, out, err) = text(&f.cairn(&["run", "--rm", "busybox-test", "ls", "-la", "/app"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("main.go") && out.contains("go.mod"), "{out}");
    let (code, _, _) = text(&f.cairn(&["run", "--rm", "busybox-test", "sh", "-c", "exit 7"]));
    assert_eq!(code, 7);
    let (code, _, err) = text(&f.cairn(&["run", "--rm", "busybox-test", "no-such-binary"]));
    assert_eq!(code, 127);
    assert!(err.contains("executable file not found"), "{err}");
    assert_eq!(f.containers(), 0, "--rm leaves no container behind");
    let (code, out, err) = text(&f.cairn(&[
        "run",
        "--rm",
        "--snapshotter",
        "native",
        "busybox-test",
        "sh",
        "-c",
        "echo x > /app/new && cat /app/go.mod",
    ]));
    assert_eq!((code, out.as_str()), (0, "module app\n"), "{err}");
    let (code, _, _) = text(&f.cairn(&[
        "run",
        "--name",
        "kept",
        "busybox-test",
        "echo",
        "kept-output",
    ]));
    assert_eq!(code, 0);
    let (_, ps, _) = text(&f.cairn(&["ps", "-a"]));
    assert!(ps.contains("Exited (0)"), "{ps}");
    let (_, logs, _) = text(&f.cairn(&["logs", "kept"]));
    assert_eq!(logs, "kept-output\n");
}

#[test]
fn rm_runs_keep_their_change_in_memory_and_recycle_their_dirs() {
    let f = Fixture::new(json!({"Cmd": ["sh"]}));
    let run = |script: &str| text(&f.cairn(&["run", "--rm", "busybox-test", "sh", "-c", script]));
    // The overlay's upper and work dirs are in the container's init tmpfs, not on disk.
    let (code, out, err) = run("grep ' / ' /proc/mounts; echo data > /app/written");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("/init/upper,") && out.contains("/init/work"),
        "{out}"
    );
    let spares = f.spares();
    assert_eq!(spares.len(), 1, "the dir of a --rm run is kept as a spare");
    let left: Vec<String> = fs::read_dir(&spares[0])
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["init"], "only the tmpfs mount point is on disk");
    assert_eq!(fs::read_dir(spares[0].join("init")).unwrap().count(), 0);
    // The next run takes the spare and puts it back; what a run wrote is seen by no later
    // container.
    assert_eq!(run("true").0, 0);
    assert_eq!(f.spares().len(), 1);
    assert_eq!(run("echo secret > /app/left-behind").0, 0);
    let (code, out, err) = run("ls /app; cat /app/left-behind 2>&1; exit 3");
    assert_eq!(code, 3, "{err}");
    assert!(
        !out.contains("left-behind") || out.contains("No such file"),
        "{out}"
    );
    assert!(!out.contains("secret") && !out.contains("written"), "{out}");
    assert_eq!(f.containers(), 0);
    // A spare is as good as a new dir for every run that follows, and a spare left by an
    // older cairn (empty upper and work dirs on disk) too.
    let spare = &f.spares()[0];
    fs::create_dir(spare.join("upper")).unwrap();
    fs::create_dir_all(spare.join("work/work")).unwrap();
    for _ in 0..3 {
        let (code, out, _) = run("cat /app/go.mod");
        assert_eq!((code, out.as_str()), (0, "module app\n"));
    }
    assert!(f.spares().len() <= 4);
    // A container that is kept keeps its change on disk.
    let (code, out, err) = text(&f.cairn(&[
        "run",
        "--name",
        "kept",
        "busybox-test",
        "sh",
        "-c",
        "grep ' / ' /proc/mounts",
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("/upper,") && !out.contains("/init/upper"),
        "{out}"
    );
}

#[test]
fn image_config_and_flags_combine_like_docker() {
    let f = Fixture::new(json!({
        "Env": ["PATH=/bin", "GREETING=image"],
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["echo default"],
        "WorkingDir": "/app",
        "User": "app",
    }));
    let (code, out, err) = text(&f.cairn(&["run", "--rm", "busybox-test"]));
    assert_eq!((code, out.as_str()), (0, "default\n"), "{err}");
    let (_, out, _) = text(&f.cairn(&[
        "run",
        "--rm",
        "-e",
        "GREETING=flag",
        "busybox-test",
        "echo $GREETING $(id -u) $(pwd) $HOME",
    ]));
    assert_eq!(out, "flag 1000 /app /home/app\n");
    let (_, out, _) = text(&f.cairn(&[
        "run",
        "--rm",
        "-u",
        "nobody",
        "-w",
        "/tmp/new",
        "--entrypoint",
        "id",
        "busybox-test",
        "-un",
    ]));
    assert_eq!(out, "nobody\n");
    let (code, _, err) = text(&f.cairn(&["run", "--rm", "-u", "ghost", "busybox-test", "true"]));
    assert_ne!(code, 0);
    assert!(err.contains("unable to find user ghost"), "{err}");
}

#[test]
fn volumes_network_and_escapes() {
    let f = Fixture::new(json!({}));
    let host = f.tmp.path().join("shared");
    fs::create_dir(&host).unwrap();
    fs::write(host.join("in"), "from host\n").unwrap();
    let vol = format!("{}:/mnt/shared:ro", host.display());
    let (code, out, err) = text(&f.cairn(&[
        "run",
        "--rm",
        "-v",
        &vol,
        "--network",
        "none",
        "busybox-test",
        "sh",
        "-c",
        "cat /mnt/shared/in; ls /sys/class/net; touch /mnt/shared/x 2>/dev/null || echo read-only",
    ]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "from host\nlo\nread-only\n");
    let bad = format!("{}:/mnt/../etc", host.display());
    let (code, _, err) = text(&f.cairn(&["run", "--rm", "-v", &bad, "busybox-test", "true"]));
    assert_ne!(code, 0);
    assert!(err.contains(".."), "{err}");
}

#[test]
fn detached_server_answers_on_the_host_network_and_health_is_tracked() {
    let f = Fixture::new(json!({
        "Cmd": ["httpd", "-f", "-p", "127.0.0.1:18093", "-h", "/www"],
        "Healthcheck": {"Test": ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:18093/ || exit 1"], "Interval": 200_000_000u64, "Retries": 2},
    }));
    let (code, out, err) = text(&f.cairn(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "8080:80",
        "busybox-test",
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("-p 8080:80 has no effect"), "{err}");
    let id = out.trim().to_string();
    assert_eq!(id.len(), 64);
    let mut body = String::new();
    wait_for("the server", 10, || {
        let Ok(mut s) = std::net::TcpStream::connect("127.0.0.1:18093") else {
            return false;
        };
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        body.clear();
        s.read_to_string(&mut body).is_ok() && body.contains("hello from cairn")
    });
    wait_for("healthy", 10, || {
        text(&f.cairn(&["ps"])).1.contains("(healthy)")
    });
    let (_, ps, _) = text(&f.cairn(&["ps"]));
    assert!(
        ps.contains(&id[..12]) && ps.contains("web") && ps.contains("Up "),
        "{ps}"
    );
    let (code, _, err) = text(&f.cairn(&["rm", "web"]));
    assert_ne!(code, 0, "a running container is not removed without -f");
    assert!(err.contains("running"), "{err}");
    let (code, out, _) = text(&f.cairn(&["stop", "-t", "5", "web"]));
    assert_eq!((code, out.as_str()), (0, "web\n"));
    let (_, ps, _) = text(&f.cairn(&["ps", "-a"]));
    assert!(ps.contains("Exited ("), "{ps}");
    assert!(
        std::net::TcpStream::connect("127.0.0.1:18093").is_err(),
        "server gone after stop"
    );
    let (code, _, _) = text(&f.cairn(&["rm", &id[..8]]));
    assert_eq!(code, 0);
    assert_eq!(f.containers(), 0);
}

#[test]
fn logs_follow_a_detached_container() {
    let f = Fixture::new(json!({}));
    let (code, out, err) = text(&f.cairn(&[
        "run",
        "-d",
        "busybox-test",
        "sh",
        "-c",
        "echo one; echo two >&2; sleep 0.5; echo three",
    ]));
    assert_eq!(code, 0, "{err}");
    let id = out.trim().to_string();
    let (code, out, err) = text(&f.cairn(&["logs", "-f", &id]));
    assert_eq!(code, 0);
    assert_eq!((out.as_str(), err.as_str()), ("one\nthree\n", "two\n"));
    let (_, ps, _) = text(&f.cairn(&["ps", "-a"]));
    assert!(ps.contains("Exited (0)"), "{ps}");
    let (code, _, _) = text(&f.cairn(&["rm", "-f", &id]));
    assert_eq!(code, 0);
}

/// PIDs of `sleep <arg>` processes (not the cairn whose arguments also contain it).
fn pids_with_arg(arg: &str) -> Vec<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    let argv: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                    argv.first() == Some(&b"sleep".as_slice()) && argv.contains(&arg.as_bytes())
                })
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn ctrl_c_kills_the_container_and_cleans_up() {
    let f = Fixture::new(json!({}));
    let marker = "4242.5";
    let child = f
        .command(&["run", "--rm", "busybox-test", "sleep", marker])
        .spawn()
        .unwrap();
    wait_for("the container", 10, || !pids_with_arg(marker).is_empty());
    unsafe_kill(child.id() as i32, 2);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("no process left", 5, || pids_with_arg(marker).is_empty());
    assert_eq!(f.containers(), 0, "container dir removed");
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(f.root().to_str().unwrap()));
}

#[test]
fn kill_9_of_cairn_leaves_no_process_and_the_container_is_collected() {
    let f = Fixture::new(json!({}));
    let marker = "4243.5";
    let mut child = f
        .command(&["run", "--rm", "busybox-test", "sleep", marker])
        .spawn()
        .unwrap();
    wait_for("the container", 10, || !pids_with_arg(marker).is_empty());
    unsafe_kill(child.id() as i32, 9);
    child.wait().unwrap();
    // The init dies with cairn, PID 1 with the init, the whole PID namespace with PID 1.
    wait_for("no process left", 5, || pids_with_arg(marker).is_empty());
    assert_eq!(f.containers(), 1, "kill -9 leaves the container dir...");
    let (_, ps, _) = text(&f.cairn(&["ps", "-a"]));
    assert_eq!(
        ps.lines().count(),
        1,
        "...which the next command collects: {ps}"
    );
    assert_eq!(f.containers(), 0);
}

#[test]
fn stop_of_a_foreground_container_is_graceful() {
    let f = Fixture::new(json!({}));
    let child = f
        .command(&[
            "run",
            "--rm",
            "--name",
            "fg",
            "busybox-test",
            "sh",
            "-c",
            "trap 'echo got-term; exit 3' TERM; echo ready; while true; do sleep 0.1; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the container", 10, || {
        text(&f.cairn(&["ps"])).1.contains(" fg")
    });
    std::thread::sleep(Duration::from_millis(300));
    let (code, out, err) = text(&f.cairn(&["stop", "fg"]));
    assert_eq!((code, out.as_str()), (0, "fg\n"), "{err}");
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "the main process got SIGTERM and exited its way"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ready\ngot-term\n");
    assert_eq!(f.containers(), 0);
}

fn unsafe_kill(pid: i32, sig: i32) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// `COPY a /x`, `RUN rm /x`, `COPY a /x` makes one layer twice; overlayfs refuses repeated lower
/// dirs, so the rootfs must keep the top one only — and the file must be there.
#[test]
fn an_image_holding_the_same_layer_twice_runs() {
    let f = Fixture::new(json!({"Cmd": ["sh"]}));
    let ctx = f.tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("a"), "twice\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox-test\nCOPY a /x\nRUN rm /x\nCOPY a /x\n",
    )
    .unwrap();
    let (code, _, err) = text(&f.cairn(&["build", "-q", "-t", "dup:1", ctx.to_str().unwrap()]));
    assert_eq!(code, 0, "{err}");
    let (_, config, _) = text(&f.cairn(&["inspect", "-f", "{{json .RootFS.Layers}}", "dup:1"]));
    let layers: Vec<String> = serde_json::from_str(config.trim()).unwrap();
    assert_eq!(layers.len(), 4, "{config}");
    assert_eq!(
        layers[1], layers[3],
        "the two COPY layers are the same layer"
    );
    let (code, out, err) = text(&f.cairn(&["run", "--rm", "dup:1", "cat", "/x"]));
    assert_eq!((code, out.as_str()), (0, "twice\n"), "{err}");
}

/// Mounting needs CAP_SYS_ADMIN: outside docker's default set, granted by `--privileged`.
#[test]
fn privileged_keeps_every_capability() {
    let f = Fixture::new(json!({"Cmd": ["sh"]}));
    let mount = ["sh", "-c", "mkdir -p /m && mount -t tmpfs none /m"];
    let (code, _, _) = text(&f.cairn(&[&["run", "--rm", "busybox-test"][..], &mount].concat()));
    assert_ne!(code, 0, "the default capability set cannot mount");
    let (code, _, err) =
        text(&f.cairn(&[&["run", "--rm", "--privileged", "busybox-test"][..], &mount].concat()));
    assert_eq!(code, 0, "{err}");
}
