//! `RUN --mount` (cache, bind, secret, ssh, tmpfs), `RUN --network` and `--security` end to end:
//! the real binary, a fresh store per test, a busybox base image imported with `cairn import`.
//!
//! These tests need root (overlay mounts and namespaces for RUN); CI runs as root. They are skipped
//! with a message when not run as root, or when /bin/busybox (Debian's busybox-static) is missing.

mod common;

use std::fs;
use std::io::Write;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::Cairn;

fn can_run() -> bool {
    common::can_run("RUN --mount tests need root")
}

/// The shared harness (a store with busybox imported, a context directory) with what these
/// tests look at: exported file systems, layer contents, cache-mount directories.
struct Env(Cairn);

impl Deref for Env {
    type Target = Cairn;
    fn deref(&self) -> &Cairn {
        &self.0
    }
}

impl Env {
    fn new() -> Env {
        Env(Cairn::with_busybox())
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir().join(rel)
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.cairn(args);
        assert!(
            out.status.success(),
            "cairn {args:?} failed:\n{}\n{}",
            text(&out.stderr),
            text(&out.stdout)
        );
        out
    }

    /// Builds and exports the result's file system to a fresh directory, returned.
    fn build_to_dir(&self, name: &str, extra: &[&str]) -> (PathBuf, Output) {
        let dest = self.path(name);
        let _ = fs::remove_dir_all(&dest);
        let o = format!("type=local,dest={}", dest.display());
        let mut args = vec!["-o", o.as_str()];
        args.extend_from_slice(extra);
        let out = self.ok_build(&args);
        (dest, out)
    }

    /// Every layer blob of the store, decompressed.
    fn layers(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.root.join("blobs/sha256")).unwrap() {
            let path = e.unwrap().path();
            let bytes = fs::read(&path).unwrap();
            if bytes.starts_with(&[0x1f, 0x8b]) {
                let d = std::process::Command::new("gzip")
                    .arg("-dc")
                    .arg(&path)
                    .output()
                    .unwrap();
                assert!(d.status.success(), "gzip -dc {}", path.display());
                out.push(d.stdout);
            }
        }
        assert!(!out.is_empty(), "no layer in the store");
        out
    }

    /// The paths of every layer's entries.
    fn layer_entries(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.root.join("blobs/sha256")).unwrap() {
            let path = e.unwrap().path();
            let head = fs::read(&path).unwrap();
            if head.starts_with(&[0x1f, 0x8b]) {
                let l = std::process::Command::new("tar")
                    .arg("-tzf")
                    .arg(&path)
                    .output()
                    .unwrap();
                assert!(l.status.success(), "tar -tzf {}", path.display());
                out.extend(text(&l.stdout).lines().map(String::from));
            }
        }
        out
    }

    fn in_any_layer(&self, needle: &[u8]) -> bool {
        self.layers().iter().any(|l| contains(l, needle))
    }

    /// The directories of the store's cache mounts.
    fn cache_mount_dirs(&self) -> Vec<PathBuf> {
        match fs::read_dir(self.root.join("cache-mounts")) {
            Ok(rd) => rd
                .map(|e| e.unwrap().path())
                .filter(|p| p.is_dir())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn a_cache_mount_persists_across_builds_is_in_no_layer_and_is_pruned() {
    // Needs root (see the file's doc).
    if !can_run() {
        return;
    }
    let env = Env::new();
    env.write(
        "Dockerfile",
        "FROM busybox\n\
         RUN --mount=type=cache,target=/cache sh -c 'n=$(cat /cache/count 2>/dev/null || echo 0); n=$((n+1)); echo $n > /cache/count; echo CACHEMARKER-$n > /cache/marker; echo $n > /seen'\n\
         RUN --mount=type=cache,id=owned,target=/o,mode=0750,uid=1000,gid=1000 stat -c %a:%u:%g /o > /owner\n",
    );
    let (d1, _) = env.build_to_dir("out1", &[]);
    assert_eq!(read(&d1.join("seen")).trim(), "1");
    assert_eq!(read(&d1.join("owner")).trim(), "750:1000:1000");
    // A second build runs the step again (--no-cache) in a new process: the cache is still there.
    let (d2, _) = env.build_to_dir("out2", &["--no-cache"]);
    assert_eq!(read(&d2.join("seen")).trim(), "2");
    assert!(!d2.join("cache").join("count").exists());
    assert!(
        !env.in_any_layer(b"CACHEMARKER"),
        "a cache mount's file reached a layer"
    );
    assert!(
        !env.in_any_layer(b"cache/count"),
        "a cache mount's file reached a layer"
    );

    // The cache's contents are not part of the step's key: changing them is still a hit.
    let dirs = env.cache_mount_dirs();
    assert_eq!(dirs.len(), 2, "{dirs:?}");
    for d in &dirs {
        fs::write(d.join("extra"), "x").unwrap();
    }
    let out = env.ok_build(&[]);
    assert!(
        text(&out.stderr).matches("CACHED").count() >= 2,
        "{}",
        text(&out.stderr)
    );

    let df = text(&env.ok(&["system", "df", "-v"]).stdout);
    let row = df.lines().find(|l| l.starts_with("Cache Mounts")).unwrap();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[2], "2", "{df}");
    assert_ne!(cols[4], "0B", "{df}");
    assert!(df.lines().next().unwrap().starts_with("TYPE"), "{df}");
    assert!(df.contains("Images") && df.contains("Build Cache") && df.contains("/cache"));

    let pruned = text(&env.ok(&["builder", "prune", "-f"]).stdout);
    assert!(pruned.contains("Deleted cache mounts: 2"), "{pruned}");
    let df = text(&env.ok(&["system", "df"]).stdout);
    assert!(
        df.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
            == ["Cache", "Mounts", "0", "0", "0B", "0B"]),
        "{df}"
    );
    let (d3, _) = env.build_to_dir("out3", &["--no-cache"]);
    assert_eq!(
        read(&d3.join("seen")).trim(),
        "1",
        "the pruned cache was not empty"
    );
    // And `system prune --cache-mounts` empties it as well.
    let pruned = text(&env.ok(&["system", "prune", "-f", "--cache-mounts"]).stdout);
    assert!(pruned.contains("Deleted cache mounts: 2"), "{pruned}");
}

/// Two builds of `dockerfile` started together on the same store; returns the cache mount's log.
fn two_concurrent_builds(sharing: &str) -> Vec<(String, f64)> {
    let env = Env::new();
    let mut children = Vec::new();
    for who in ["A", "B"] {
        let ctx = env.path(&format!("ctx-{who}"));
        fs::create_dir_all(&ctx).unwrap();
        fs::write(
            ctx.join("Dockerfile"),
            format!(
                "FROM busybox\n\
                 RUN --mount=type=cache,id=shared,target=/c,sharing={sharing} sh -c 'echo start-{who} $(cut -d\" \" -f1 /proc/uptime) >> /c/log; sleep 2; echo end-{who} $(cut -d\" \" -f1 /proc/uptime) >> /c/log'\n"
            ),
        )
        .unwrap();
        let child = env
            .command(&["build", "--progress=plain", "--no-cache"])
            .arg(&ctx)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        children.push(child);
    }
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let dirs = env.cache_mount_dirs();
    assert_eq!(dirs.len(), 1);
    read(&dirs[0].join("log"))
        .lines()
        .map(|l| {
            let (what, t) = l.split_once(' ').unwrap();
            (what.to_string(), t.parse::<f64>().unwrap())
        })
        .collect()
}

#[test]
fn a_locked_cache_mount_serialises_two_concurrent_builds() {
    // Needs root (see the file's doc).
    if !can_run() {
        return;
    }
    let log = two_concurrent_builds("locked");
    eprintln!("sharing=locked: {log:?}");
    assert_eq!(log.len(), 4);
    // start X, end X, start Y, end Y: the second writer waited for the first.
    assert!(
        log[0].0.starts_with("start-") && log[1].0.starts_with("end-"),
        "{log:?}"
    );
    assert_eq!(log[0].0[6..], log[1].0[4..], "{log:?}");
    assert!(
        log[2].1 >= log[1].1,
        "the second step started before the first ended: {log:?}"
    );

    // The control: `shared` lets them overlap, so the test above can fail.
    let log = two_concurrent_builds("shared");
    eprintln!("sharing=shared: {log:?}");
    assert!(
        log[0].0.starts_with("start-") && log[1].0.starts_with("start-"),
        "{log:?}"
    );
}

#[test]
fn bind_mounts_are_read_without_a_copy_and_rw_writes_are_discarded() {
    // Needs root (see the file's doc).
    if !can_run() {
        return;
    }
    let env = Env::new();
    env.write("package.json", "{\"name\":\"PKG-ONE\"}\n");
    env.write("src/a.txt", "A\n");
    // What .dockerignore excludes is not in the context, so not in a bind mount of it either.
    env.write("src/skip.txt", "S\n");
    env.write(".dockerignore", "src/skip.txt\n");
    env.write(
        "Dockerfile",
        "FROM busybox\n\
         WORKDIR /app\n\
         RUN --mount=type=bind,source=package.json,target=package.json cat package.json > /copied\n\
         RUN --mount=type=bind,target=/ctx,rw sh -c 'echo junk > /ctx/new && rm /ctx/package.json && ls /ctx > /listing'\n\
         RUN --mount=type=bind,source=src,target=/deep/er/src sh -c 'ls /deep/er/src > /src-listing; cat /deep/er/src/a.txt > /a; touch /deep/er/src/x 2> /dev/null && echo rw > /ro || echo ro > /ro'\n",
    );
    let (d, _) = env.build_to_dir("out1", &[]);
    assert_eq!(read(&d.join("copied")), "{\"name\":\"PKG-ONE\"}\n");
    assert_eq!(read(&d.join("a")), "A\n");
    assert_eq!(read(&d.join("src-listing")), "a.txt\n");
    assert_eq!(
        read(&d.join("ro")).trim(),
        "ro",
        "a bind mount is read-only by default"
    );
    let listing = read(&d.join("listing"));
    assert!(
        listing.contains("new") && !listing.contains("package.json"),
        "{listing}"
    );
    // The rw writes did not reach the context, nor the image.
    assert!(env.ctx.join("package.json").exists() && !env.ctx.join("new").exists());
    assert!(
        !d.join("ctx").exists(),
        "the rw mount point is in the image"
    );
    // Neither the files nor the mount points created for them are in the image.
    assert!(d.join("app").is_dir());
    assert!(
        !d.join("app/package.json").exists(),
        "the bound file is in the image"
    );
    assert!(
        !d.join("deep").exists(),
        "the mount point's parents are in the image"
    );
    // Not even as whiteouts or directory entries in a layer.
    let entries = env.layer_entries();
    for bad in ["app/package.json", "deep", "ctx"] {
        assert!(
            !entries
                .iter()
                .any(|e| e.trim_start_matches("./").starts_with(bad)),
            "{bad} is in a layer: {entries:?}"
        );
    }

    // The bound file's contents are part of the step's key.
    let out = env.ok_build(&[]);
    assert!(
        text(&out.stderr).contains("CACHED"),
        "{}",
        text(&out.stderr)
    );
    env.write("package.json", "{\"name\":\"PKG-TWO\"}\n");
    let (d, _) = env.build_to_dir("out2", &[]);
    assert_eq!(read(&d.join("copied")), "{\"name\":\"PKG-TWO\"}\n");
}

#[test]
fn mount_sources_and_targets_cannot_escape() {
    // Needs root (see the file's doc).
    if !can_run() {
        return;
    }
    let env = Env::new();
    std::os::unix::fs::symlink("/etc", env.ctx.join("evil")).unwrap();
    std::os::unix::fs::symlink("../..", env.ctx.join("up")).unwrap();
    for (mount, why) in [
        (
            "type=bind,source=../outside,target=/x",
            "outside the context",
        ),
        ("type=bind,source=evil/passwd,target=/x", "points out of it"),
        ("type=bind,source=up/etc,target=/x", "leads out of the root"),
        ("type=cache,target=../../../x", "climbs out"),
    ] {
        env.write(
            "Dockerfile",
            &format!("FROM busybox\nWORKDIR /app\nRUN --mount={mount} true\n"),
        );
        let out = env.build(&[]);
        assert!(!out.status.success(), "{mount} was accepted");
        assert!(
            text(&out.stderr).contains(why),
            "{mount}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn a_secret_is_readable_in_its_step_and_nowhere_else() {
    // Needs root (see the file's doc).
    if !can_run() {
        return;
    }
    let env = Env::new();
    let secret = "cairn-s3cr3t-XYZZY-4242";
    let file = env.path("token");
    fs::write(&file, secret).unwrap();
    let hex = cairn_layer::hash::sha256_digest(secret.as_bytes());
    let hex = hex.trim_start_matches("sha256:");
    env.write(
        "Dockerfile",
        &format!(
            "FROM busybox\n\
             RUN --mount=type=secret,id=tok test \"$(sha256sum < /run/secrets/tok | cut -d' ' -f1)\" = {hex} && stat -c %a:%u /run/secrets/tok > /default\n\
             RUN --mount=type=secret,id=tok,target=/etc/tok,mode=0440,uid=1000 sh -c 'stat -c %a:%u /etc/tok > /custom; cp /etc/tok /tmp/gone; rm /tmp/gone'\n\
             RUN --mount=type=secret,id=tok,env=TOK sh -c 'test \"$(printf %s \"$TOK\" | sha256sum | cut -d\" \" -f1)\" = {hex} && echo ok > /env'\n\
             RUN --mount=type=secret,id=absent ls /run > /absent 2>&1 || true\n"
        ),
    );
    let spec = format!("id=tok,src={}", file.display());
    let (d, out) = env.build_to_dir("out", &["--secret", &spec, "-t", "sec:1"]);
    assert_eq!(read(&d.join("default")).trim(), "400:0");
    assert_eq!(read(&d.join("custom")).trim(), "440:1000");
    assert_eq!(read(&d.join("env")).trim(), "ok");
    assert!(!d.join("run/secrets").exists() && !d.join("etc/tok").exists());
    let logs = format!("{}{}", text(&out.stderr), text(&out.stdout));
    assert!(
        !logs.contains(secret),
        "the secret is in the progress output"
    );
    let history = env.ok(&["history", "--no-trunc", "sec:1"]);
    assert!(!text(&history.stdout).contains(secret));
    assert!(
        !env.in_any_layer(secret.as_bytes()),
        "the secret is in a layer"
    );
    // Every file of the store (blobs, cache index, cache mounts, temp files).
    let mut stack = vec![env.root.clone()];
    let mut files = 0;
    while let Some(p) = stack.pop() {
        let md = fs::symlink_metadata(&p).unwrap();
        if md.is_dir() {
            stack.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if md.is_file() {
            files += 1;
            assert!(
                !contains(&fs::read(&p).unwrap(), secret.as_bytes()),
                "the secret is in {}",
                p.display()
            );
        }
    }
    assert!(files > 5);

    // Another value of the secret does not invalidate the cache; env= works too.
    std::env::set_var("CAIRN_MOUNTS_TEST_TOKEN", "another-value");
    let out = env.ok_build(&["--secret", "id=tok,env=CAIRN_MOUNTS_TEST_TOKEN"]);
    assert!(
        text(&out.stderr).matches("CACHED").count() >= 4,
        "{}",
        text(&out.stderr)
    );
    // A missing required secret fails the build with a clear message.
    env.write(
        "Dockerfile",
        "FROM busybox\nRUN --mount=type=secret,id=needed,required true\n",
    );
    let out = env.build(&[]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("secret \"needed\" is required"));
}

#[test]
fn network_none_cannot_reach_a_server_on_loopback() {
    // Needs root (see the file's doc).
    if !can_run() {
        return;
    }
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    server.set_nonblocking(true).unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let t = std::thread::spawn(move || {
        while !stopped.load(std::sync::atomic::Ordering::SeqCst) {
            match server.accept() {
                Ok((mut c, _)) => {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let _ = c.write_all(b"hello\n");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    let env = Env::new();
    env.write(
        "Dockerfile",
        &format!(
            "FROM busybox\n\
             RUN --network=none sh -c 'if nc -w 2 127.0.0.1 {port} < /dev/null > /dev/null; then echo reached; else echo unreachable; fi > /none; cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d \" \" > /ifaces'\n\
             RUN sh -c 'if nc -w 2 127.0.0.1 {port} < /dev/null > /dev/null; then echo reached; else echo unreachable; fi > /default'\n"
        ),
    );
    let (d, _) = env.build_to_dir("out", &[]);
    assert_eq!(read(&d.join("none")).trim(), "unreachable");
    assert_eq!(
        read(&d.join("ifaces")).trim(),
        "lo",
        "--network=none has more than loopback"
    );
    assert_eq!(read(&d.join("default")).trim(), "reached");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    // `cairn build --network=none` is the default of every RUN.
    let (d, _) = env.build_to_dir("out2", &["--network", "none"]);
    assert_eq!(read(&d.join("default")).trim(), "unreachable");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    t.join().unwrap();
}

#[test]
fn an_ssh_agent_socket_is_forwarded_and_insecure_needs_allow() {
    // Needs root (see the file's doc).
    if !can_run() {
        return;
    }
    let env = Env::new();
    let sock = env.path("agent.sock");
    let _agent = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    env.write(
        "Dockerfile",
        "FROM busybox\n\
         RUN --mount=type=ssh,mode=0660,uid=1000 sh -c 'test -S \"$SSH_AUTH_SOCK\" && echo $SSH_AUTH_SOCK $(stat -c %a:%u \"$SSH_AUTH_SOCK\") > /ssh'\n\
         RUN --mount=type=ssh,id=other,target=/tmp/agent,required sh -c 'test -S /tmp/agent && echo yes > /other'\n",
    );
    let default = format!("default={}", sock.display());
    let other = format!("other={}", sock.display());
    let (d, _) = env.build_to_dir("out", &["--ssh", &default, "--ssh", &other]);
    assert_eq!(
        read(&d.join("ssh")).trim(),
        "/run/buildkit/ssh_agent.1 660:1000"
    );
    assert_eq!(read(&d.join("other")).trim(), "yes");
    assert!(!d.join("run/buildkit").exists() && !d.join("tmp/agent").exists());
    // The host's socket was not touched (mode and owner applied to our proxy's).
    let md = fs::metadata(&sock).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&md), 0);
    // A required agent that was not given fails the build; a key file is refused.
    let out = env.build(&["--ssh", &default, "--no-cache"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("ssh agent \"other\" is required"));
    let key = env.path("id_ed25519");
    fs::write(&key, "not a socket").unwrap();
    let out = env.build(&["--ssh", &format!("default={}", key.display())]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("not an agent socket"));

    // Mounting a filesystem needs CAP_SYS_ADMIN, outside docker's default set: it works only in
    // an insecure step, and only when the build allows it.
    env.write(
        "Dockerfile",
        "FROM busybox\nRUN --security=insecure mkdir -p /m && mount -t tmpfs none /m && umount /m\n",
    );
    let out = env.build(&[]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--allow security.insecure"));
    env.ok_build(&["--allow", "security.insecure"]);
    env.write(
        "Dockerfile",
        "FROM busybox\nRUN mkdir -p /m && mount -t tmpfs none /m\n",
    );
    let out = env.build(&["--allow", "security.insecure"]);
    assert!(!out.status.success(), "a plain RUN has no CAP_SYS_ADMIN");
}

#[test]
fn tmpfs_mounts_hold_nothing_afterwards() {
    // Needs root (see the file's doc).
    if !can_run() {
        return;
    }
    let env = Env::new();
    env.write(
        "Dockerfile",
        "FROM busybox\n\
         RUN --mount=type=tmpfs,target=/scratch,size=1048576 sh -c 'echo TMPFSMARK > /scratch/f; grep \" /scratch tmpfs\" /proc/mounts | grep -o size=[0-9a-z]* > /size'\n",
    );
    let (d, _) = env.build_to_dir("out", &[]);
    assert_eq!(read(&d.join("size")).trim(), "size=1024k");
    assert!(!d.join("scratch").exists());
    assert!(!env.in_any_layer(b"TMPFSMARK"));
}

/// The tutorial's exercise 5.1 with busybox standing in for node: `npm install` downloads into
/// its cache (a slow step), and a second build after a change to the sources finds the cache.
#[test]
fn exercise_5_1_the_second_build_reuses_the_cache_mount() {
    // Needs root (see the file's doc).
    if !can_run() {
        return;
    }
    let env = Env::new();
    env.write("package.json", "{\"name\":\"app\",\"version\":\"1.0.0\"}\n");
    env.write("src/index.js", "console.log(1)\n");
    // The Dockerfile names the cache's file: it must not be copied into a layer itself.
    env.write(".dockerignore", "Dockerfile\n");
    // The "registry" is a 3 s wait and 8 MB of data per package missing from ~/.npm.
    env.write(
        "Dockerfile",
        "FROM busybox AS builder\n\
         WORKDIR /app\n\
         COPY package*.json ./\n\
         RUN --mount=type=cache,target=/root/.npm sh -c 'if [ -f /root/.npm/pkg.tgz ]; then echo npm: from cache; else echo npm: downloading; sleep 3; head -c 8000000 /dev/zero > /root/.npm/pkg.tgz; fi; mkdir -p node_modules && cat package.json > node_modules/.installed'\n\
         COPY . .\n\
         RUN mkdir -p dist && cat src/index.js > dist/main.js\n",
    );
    let t = Instant::now();
    let out = env.ok_build(&[]);
    let first = t.elapsed();
    assert!(text(&out.stderr).contains("npm: downloading"));
    // A change to the dependencies reruns the install step: it now finds the cache.
    env.write("package.json", "{\"name\":\"app\",\"version\":\"1.0.1\"}\n");
    env.write("src/index.js", "console.log(2)\n");
    let t = Instant::now();
    let out = env.ok_build(&[]);
    let second = t.elapsed();
    assert!(
        text(&out.stderr).contains("npm: from cache"),
        "{}",
        text(&out.stderr)
    );
    eprintln!(
        "exercise 5.1 (busybox stand-in): first build {first:.2?}, second build {second:.2?}"
    );
    assert!(
        second + Duration::from_millis(2500) < first,
        "{first:?} vs {second:?}"
    );
    assert!(
        !env.in_any_layer(b"pkg.tgz"),
        "the npm cache reached a layer"
    );
}

#[test]
fn mounts_from_a_stage_seed_caches_and_discard_rw_writes() {
    // Needs root (see the file's doc).
    if !can_run() {
        return;
    }
    let env = Env::new();
    env.write(
        "Dockerfile",
        "FROM busybox AS data\n\
         RUN mkdir -p /data && echo seed > /data/f && echo orig > /data/g\n\
         FROM busybox\n\
         RUN --mount=type=cache,id=seeded,target=/s,from=data,source=/data cat /s/f > /seeded\n\
         RUN --mount=type=bind,from=data,source=/data,target=/d,rw sh -c 'echo changed > /d/g; cat /d/g > /rw'\n\
         RUN --mount=type=bind,from=data,source=/data,target=/d cat /d/g > /after\n\
         RUN --mount=type=cache,id=twice,target=/t1,sharing=locked --mount=type=cache,id=twice,target=/t2,sharing=locked sh -c 'echo x > /t1/x && cat /t2/x > /twice'\n",
    );
    let (d, _) = env.build_to_dir("out", &[]);
    assert_eq!(read(&d.join("seeded")).trim(), "seed");
    assert_eq!(read(&d.join("rw")).trim(), "changed");
    assert_eq!(
        read(&d.join("after")).trim(),
        "orig",
        "rw writes reached the stage"
    );
    assert_eq!(read(&d.join("twice")).trim(), "x");
    assert!(!d.join("data").exists() && !d.join("s").exists() && !d.join("d").exists());
}
