//! Real-kernel tests of the sandbox. They need root (namespaces, overlayfs, mounts) — CI runs as
//! root — and the `busybox-static` Debian package (/bin/busybox) for the image.
//!
//! `harness = false`: the container init is this binary re-exec'd, so `main` must call
//! `maybe_run_init()` before anything else, which libtest's generated main cannot.

use cairn_layer::DiffSource;
use cairn_sandbox::{
    Error, MountKind, MountSpec, Network, OutputStream, ProcessSpec, Rootfs, SnapshotterKind,
};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A busybox image as one snapshot dir: /bin/busybox and its applets, users root, app, nobody.
fn busybox_image(dir: &Path) -> PathBuf {
    let root = dir.join("busybox-layer");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("/bin/busybox (apt-get install busybox-static)");
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
    }
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:App:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    fs::write(
        root.join("etc/group"),
        "root:x:0:\nwheel:x:10:app\napp:x:1000:\nnogroup:x:65534:\n",
    )
    .unwrap();
    fs::write(root.join("etc/motd"), "welcome\n").unwrap();
    fs::create_dir_all(root.join("data")).unwrap();
    fs::write(root.join("data/a"), "old\n").unwrap();
    fs::create_dir_all(root.join("home/app")).unwrap();
    fs::create_dir_all(root.join("tmp")).unwrap();
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::chown(root.join("home/app"), Some(1000), Some(1000)).unwrap();
    root
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(rootfs: &Path, spec: &ProcessSpec) -> Result<Out, Error> {
    let (mut o, mut e) = (Vec::new(), Vec::new());
    let code = cairn_sandbox::run(rootfs, spec, &mut |s, b| match s {
        OutputStream::Stdout => o.extend_from_slice(b),
        OutputStream::Stderr => e.extend_from_slice(b),
    })?;
    Ok(Out {
        code,
        stdout: String::from_utf8_lossy(&o).into(),
        stderr: String::from_utf8_lossy(&e).into(),
    })
}

fn sh(cmd: &str) -> ProcessSpec {
    ProcessSpec {
        args: vec!["/bin/sh".into(), "-c".into(), cmd.into()],
        ..Default::default()
    }
}

/// Every path under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

struct Env {
    _tmp: tempfile::TempDir,
    image: PathBuf,
    scratch: PathBuf,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let image = busybox_image(tmp.path());
    let scratch = tmp.path().join("scratch");
    fs::create_dir(&scratch).unwrap();
    Env {
        _tmp: tmp,
        image,
        scratch,
    }
}

fn upper(r: &Rootfs) -> PathBuf {
    match r.diff_source() {
        DiffSource::OverlayUpper(u) => u.to_path_buf(),
        other => panic!("expected an overlay upper, got {other:?}"),
    }
}

fn write_exit_code_and_streams() {
    let e = env();
    let r = Rootfs::prepare(
        std::slice::from_ref(&e.image),
        &e.scratch,
        SnapshotterKind::Overlay,
    )
    .unwrap();
    let out = run(
        r.path(),
        &sh("echo hi > /x; echo out; echo err >&2; exit 3"),
    )
    .unwrap();
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (3, "out\n", "err\n")
    );
    let up = upper(&r);
    assert_eq!(fs::read_to_string(up.join("x")).unwrap(), "hi\n");
    assert_eq!(
        tree(&up),
        vec!["x"],
        "only the process's change is in the upper dir"
    );
    assert!(!e.image.join("x").exists(), "the snapshot is never written");
    let merged = r.path().to_path_buf();
    drop(r);
    assert!(!merged.exists(), "drop removes the rootfs dirs");
    assert_eq!(fs::read_dir(&e.scratch).unwrap().count(), 0);
}

fn deletes_become_whiteouts_and_replacements_land_in_upper() {
    let e = env();
    let r = Rootfs::prepare(
        std::slice::from_ref(&e.image),
        &e.scratch,
        SnapshotterKind::Overlay,
    )
    .unwrap();
    let out = run(
        r.path(),
        &sh("rm /etc/motd && echo new > /data/a && mkdir /data/d"),
    )
    .unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let up = upper(&r);
    let wh = fs::symlink_metadata(up.join("etc/motd")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "overlay whiteout for the deleted file"
    );
    assert_eq!(fs::read_to_string(up.join("data/a")).unwrap(), "new\n");
    assert!(up.join("data/d").is_dir());
    assert_eq!(
        fs::read_to_string(e.image.join("etc/motd")).unwrap(),
        "welcome\n"
    );
}

fn no_trace_of_mount_points() {
    let e = env();
    let host_dir = e.scratch.parent().unwrap().join("hostdir");
    fs::create_dir(&host_dir).unwrap();
    fs::write(host_dir.join("f"), "from host").unwrap();
    let host_file = e.scratch.parent().unwrap().join("hostfile");
    fs::write(&host_file, "file from host").unwrap();
    let r = Rootfs::prepare(
        std::slice::from_ref(&e.image),
        &e.scratch,
        SnapshotterKind::Overlay,
    )
    .unwrap();
    let mut spec = sh("cat /mnt/deep/in/f /etc/app.conf /etc/resolv.conf /etc/hosts /etc/hostname >/dev/null && ls /proc/self /sys/kernel /dev/null >/dev/null && echo ok");
    spec.mounts = vec![
        MountSpec {
            kind: MountKind::Bind {
                source: host_dir.clone(),
                readonly: true,
            },
            target: "/mnt/deep/in".into(),
        },
        MountSpec {
            kind: MountKind::Bind {
                source: host_file,
                readonly: false,
            },
            target: "/etc/app.conf".into(),
        },
        MountSpec {
            kind: MountKind::Tmpfs {
                size: Some(1 << 20),
            },
            target: "/data/t".into(),
        },
        // Two levels of the image's directories (/home, /home/app) copied up.
        MountSpec {
            kind: MountKind::Tmpfs { size: None },
            target: "/home/app/cache".into(),
        },
    ];
    let out = run(r.path(), &spec).unwrap();
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "ok\n"),
        "{}",
        out.stderr
    );
    // /etc and /data were copied up by the mount points of the run (BuildKit leaves them in its
    // layers); the diff source removes them as they are pure copies of the image's.
    let left = tree(&upper(&r));
    assert!(left.is_empty(), "upper dir after the run: {left:?}");
    drop(r);
    // A copied-up directory the process changed stays.
    let r = Rootfs::prepare(
        std::slice::from_ref(&e.image),
        &e.scratch,
        SnapshotterKind::Overlay,
    )
    .unwrap();
    let mut spec2 = sh("chmod 700 /data");
    spec2.mounts = vec![spec.mounts[2].clone()];
    assert_eq!(run(r.path(), &spec2).unwrap().code, 0);
    assert_eq!(tree(&upper(&r)), vec!["data"]);
    assert_eq!(
        fs::metadata(upper(&r).join("data")).unwrap().mode() & 0o777,
        0o700
    );
    drop(r);
    // Told the mounts up front, the overlay keeps their mount points out of the upper dir.
    let r3 = Rootfs::prepare_with_mounts(
        std::slice::from_ref(&e.image),
        &e.scratch,
        SnapshotterKind::Overlay,
        &spec.mounts,
    )
    .unwrap();
    let out = run(r3.path(), &spec).unwrap();
    assert_eq!(out.stdout, "ok\n", "{}", out.stderr);
    assert!(tree(&upper(&r3)).is_empty(), "{:?}", tree(&upper(&r3)));
    drop(r3);
    // The default mounts alone leave nothing at all.
    let r2 = Rootfs::prepare(
        std::slice::from_ref(&e.image),
        &e.scratch,
        SnapshotterKind::Overlay,
    )
    .unwrap();
    let out = run(
        r2.path(),
        &sh("echo x > /tmp/../etc/resolv.conf; cat /etc/resolv.conf >/dev/null"),
    )
    .unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        tree(&upper(&r2)).is_empty(),
        "resolv.conf is not captured: {:?}",
        tree(&upper(&r2))
    );
    assert_eq!(fs::read_to_string(host_dir.join("f")).unwrap(), "from host");
    // A read-only bind refuses writes.
    let mut spec = sh("echo x > /m/f");
    spec.mounts = vec![MountSpec {
        kind: MountKind::Bind {
            source: host_dir.clone(),
            readonly: true,
        },
        target: "/m".into(),
    }];
    let out = run(r2.path(), &spec).unwrap();
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("Read-only"), "{}", out.stderr);
}

/// cairn-build binds heredoc scripts at /dev/pipes: inside the container's own /dev tmpfs.
fn binds_into_dev_work_and_leave_nothing() {
    let e = env();
    let scripts = e.scratch.parent().unwrap().join("scripts");
    fs::create_dir(&scripts).unwrap();
    fs::write(scripts.join("run.sh"), "echo from script\n").unwrap();
    let r = Rootfs::prepare(
        std::slice::from_ref(&e.image),
        &e.scratch,
        SnapshotterKind::Overlay,
    )
    .unwrap();
    let mut spec = sh("sh /dev/pipes/run.sh; ls /dev/null /dev/zero >/dev/null");
    spec.mounts = vec![MountSpec {
        kind: MountKind::Bind {
            source: scripts,
            readonly: true,
        },
        target: "/dev/pipes".into(),
    }];
    let out = run(r.path(), &spec).unwrap();
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "from script\n"),
        "{}",
        out.stderr
    );
    assert!(tree(&upper(&r)).is_empty(), "{:?}", tree(&upper(&r)));
}

fn users_groups_home_env_and_workdir() {
    let e = env();
    let r = Rootfs::prepare(
        std::slice::from_ref(&e.image),
        &e.scratch,
        SnapshotterKind::Overlay,
    )
    .unwrap();
    let mut spec = sh("id; echo $HOME; echo $PATH; echo $GREETING; pwd; touch mine; ls -ln mine");
    spec.user = "app".into();
    spec.env = vec!["GREETING=hello world".into()];
    spec.cwd = "/home/app/work".into();
    let out = run(r.path(), &spec).unwrap();
    assert_eq!(
        out.code, 1,
        "the WORKDIR is created as root, so app cannot write there: {}",
        out.stderr
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "uid=1000(app) gid=1000(app) groups=10(wheel),1000(app)"
    );
    assert_eq!(lines[1], "/home/app");
    assert_eq!(lines[2], cairn_sandbox::DEFAULT_PATH);
    assert_eq!(lines[3], "hello world");
    assert_eq!(lines[4], "/home/app/work");

    let mut spec = sh("id -u; id -g; echo $HOME");
    spec.user = "4242:nogroup".into();
    let out = run(r.path(), &spec).unwrap();
    assert_eq!(out.stdout, "4242\n65534\n/\n");

    let mut spec = sh("true");
    spec.user = "ghost".into();
    match run(r.path(), &spec) {
        Err(Error::UnknownUser(u)) => assert_eq!(u, "ghost"),
        other => panic!("expected UnknownUser, got {:?}", other.map(|o| o.code)),
    }
}

fn an_init_binary_that_is_not_one_is_an_error() {
    let e = env();
    let r = Rootfs::prepare(
        std::slice::from_ref(&e.image),
        &e.scratch,
        SnapshotterKind::Overlay,
    )
    .unwrap();
    // /bin/true ignores `__cairn-init` and exits 0: that must not pass for a successful run.
    std::env::set_var("CAIRN_INIT_EXE", "/bin/true");
    let res = run(r.path(), &sh("exit 0"));
    std::env::remove_var("CAIRN_INIT_EXE");
    match res {
        Err(Error::Setup(m)) => assert!(m.contains("maybe_run_init"), "{m}"),
        other => panic!("expected a set-up error, got {:?}", other.map(|o| o.code)),
    }
}

fn exit_codes_and_exec_errors() {
    let e = env();
    let r = Rootfs::prepare(
        std::slice::from_ref(&e.image),
        &e.scratch,
        SnapshotterKind::Overlay,
    )
    .unwrap();
    assert_eq!(run(r.path(), &sh("exit 42")).unwrap().code, 42);
    assert_eq!(run(r.path(), &sh("kill -9 $$")).unwrap().code, 137);
    let spec = ProcessSpec {
        args: vec!["echo".into(), "exec form, no shell: $HOME".into()],
        ..Default::default()
    };
    assert_eq!(
        run(r.path(), &spec).unwrap().stdout,
        "exec form, no shell: $HOME\n"
    );
    let spec = ProcessSpec {
        args: vec!["no-such-cmd".into()],
        ..Default::default()
    };
    match run(r.path(), &spec) {
        Err(Error::Exec { code, message }) => {
            assert_eq!(code, 127);
            assert!(message.contains("executable file not found"), "{message}");
        }
        other => panic!("expected Exec error, got {:?}", other.map(|o| o.code)),
    }
}

fn pid1_reaps_zombies_and_namespaces_are_fresh() {
    let e = env();
    let r = Rootfs::prepare(
        std::slice::from_ref(&e.image),
        &e.scratch,
        SnapshotterKind::Overlay,
    )
    .unwrap();
    // The orphaned `sleep` is reparented to PID 1, which must reap it.
    let mut spec = sh(
        "(sleep 0.1 &); sleep 0.6; cat /proc/[0-9]*/stat | cut -d' ' -f3; echo pid=$$; hostname",
    );
    spec.hostname = "box".into();
    let out = run(r.path(), &spec).unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        !out.stdout.lines().any(|l| l == "Z"),
        "a zombie is left: {}",
        out.stdout
    );
    assert!(
        out.stdout.contains("pid=2\n"),
        "the command is PID 2 under our init: {}",
        out.stdout
    );
    assert!(out.stdout.ends_with("box\n"));
    // Network none: only loopback, and it is up.
    let mut spec = sh("cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '; ping -c1 -W1 127.0.0.1 >/dev/null && echo lo-up");
    spec.network = Network::None;
    let out = run(r.path(), &spec).unwrap();
    assert_eq!(out.stdout, "lo\nlo-up\n", "{}", out.stderr);
}

fn symlink_escapes_are_refused() {
    let e = env();
    let host = e.scratch.parent().unwrap().join("host-target");
    fs::create_dir(&host).unwrap();
    let evil_layer = e.scratch.parent().unwrap().join("evil-layer");
    fs::create_dir(&evil_layer).unwrap();
    std::os::unix::fs::symlink(&host, evil_layer.join("escape")).unwrap();
    let r = Rootfs::prepare(
        &[e.image.clone(), evil_layer],
        &e.scratch,
        SnapshotterKind::Overlay,
    )
    .unwrap();
    // WORKDIR through the symlink.
    let mut spec = sh("touch via-workdir");
    spec.cwd = "/escape".into();
    assert_eq!(run(r.path(), &spec).unwrap().code, 0);
    // A bind target through the symlink.
    let mut spec = sh("ls /escape/m");
    spec.mounts = vec![MountSpec {
        kind: MountKind::Tmpfs { size: None },
        target: "/escape/m".into(),
    }];
    assert_eq!(run(r.path(), &spec).unwrap().code, 0);
    assert_eq!(
        fs::read_dir(&host).unwrap().count(),
        0,
        "nothing landed on the host"
    );
    // `..` in a target.
    let mut spec = sh("true");
    spec.mounts = vec![MountSpec {
        kind: MountKind::Tmpfs { size: None },
        target: "/data/../../etc".into(),
    }];
    assert!(matches!(run(r.path(), &spec), Err(Error::InvalidSpec(_))));
}

/// Copies this (dynamically linked) test binary and its libraries into the image, setuid root.
fn add_setuid_self(image: &Path) -> String {
    let exe = fs::read_link("/proc/self/exe").unwrap();
    let ldd = Command::new("ldd").arg(&exe).output().unwrap();
    for word in String::from_utf8_lossy(&ldd.stdout).split_whitespace() {
        if word.starts_with('/') && Path::new(word).exists() {
            let dst = image.join(word.trim_start_matches('/'));
            fs::create_dir_all(dst.parent().unwrap()).unwrap();
            fs::copy(word, &dst).unwrap();
        }
    }
    fs::copy(&exe, image.join("bin/suid-status")).unwrap();
    fs::set_permissions(
        image.join("bin/suid-status"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    "/bin/suid-status".into()
}

fn capabilities_are_dockers_and_setuid_gains_nothing() {
    let e = env();
    let suid = add_setuid_self(&e.image);
    let r = Rootfs::prepare(
        std::slice::from_ref(&e.image),
        &e.scratch,
        SnapshotterKind::Overlay,
    )
    .unwrap();
    let out = run(
        r.path(),
        &sh("grep -E '^Cap(Bnd|Eff|Inh)|^NoNewPrivs' /proc/self/status"),
    )
    .unwrap();
    assert_eq!(
        out.stdout,
        "CapInh:\t0000000000000000\nCapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\nNoNewPrivs:\t1\n"
    );
    // A setuid-root binary run by nobody: without no_new_privs it would run with euid 0 and the
    // bounding set as permitted capabilities.
    let mut spec = ProcessSpec {
        args: vec![suid, "__status".into()],
        ..Default::default()
    };
    spec.user = "nobody".into();
    let out = run(r.path(), &spec).unwrap();
    assert_eq!(
        out.stdout,
        "Uid:\t65534\t65534\t65534\t65534\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n",
        "{}",
        out.stderr
    );
}

fn native_snapshotter_copies_and_compares() {
    let e = env();
    std::os::unix::fs::chown(e.image.join("data/a"), Some(1000), Some(10)).unwrap();
    fs::hard_link(e.image.join("etc/motd"), e.image.join("etc/motd2")).unwrap();
    // A second layer deleting /data/a (overlay whiteout) and replacing /etc opaquely.
    let l2 = e.scratch.parent().unwrap().join("l2");
    fs::create_dir_all(l2.join("data")).unwrap();
    nix::sys::stat::mknod(
        &l2.join("data/a"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
    fs::write(l2.join("data/b"), "b\n").unwrap();
    let r = Rootfs::prepare(
        std::slice::from_ref(&e.image),
        &e.scratch,
        SnapshotterKind::Native,
    )
    .unwrap();
    let m = fs::metadata(r.path().join("data/a")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1000, 10), "owners kept");
    assert_eq!(
        fs::metadata(r.path().join("etc/motd")).unwrap().ino(),
        fs::metadata(r.path().join("etc/motd2")).unwrap().ino(),
        "hard links kept"
    );
    let out = run(r.path(), &sh("echo hi > /tmp/x; rm /etc/motd")).unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let DiffSource::Compare { lower, upper } = r.diff_source() else {
        panic!("native diffs by compare")
    };
    assert!(upper.join("tmp/x").exists() && !lower.join("tmp/x").exists());
    assert!(!upper.join("etc/motd").exists() && lower.join("etc/motd").exists());
    for p in [
        "proc",
        "dev",
        "sys",
        "etc/resolv.conf",
        "etc/hosts",
        "etc/hostname",
    ] {
        assert!(
            !upper.join(p).exists(),
            "mount point {p} left in the native rootfs"
        );
    }
    // /proc, /dev and /sys were created in / for the run and removed: / looks untouched.
    let (a, b) = (fs::metadata(upper).unwrap(), fs::metadata(lower).unwrap());
    assert_eq!((a.mtime(), a.mtime_nsec()), (b.mtime(), b.mtime_nsec()));
    drop(r);
    let r = Rootfs::prepare(&[e.image.clone(), l2], &e.scratch, SnapshotterKind::Native).unwrap();
    assert!(!r.path().join("data/a").exists(), "whiteout applied");
    assert_eq!(fs::read_to_string(r.path().join("data/b")).unwrap(), "b\n");
    drop(r);
    assert_eq!(fs::read_dir(&e.scratch).unwrap().count(), 0);
}

fn long_layer_chains_mount() {
    let e = env();
    let mut lowers = vec![e.image.clone()];
    // 120 layers with 150-character paths: far beyond one page of mount options.
    for i in 0..120 {
        let p = e
            .scratch
            .parent()
            .unwrap()
            .join(format!("{i:03}-{}", "l".repeat(150)));
        fs::create_dir_all(p.join("layers")).unwrap();
        fs::write(p.join(format!("layers/{i}")), "").unwrap();
        lowers.push(p);
    }
    let r = Rootfs::prepare(&lowers, &e.scratch, SnapshotterKind::Overlay).unwrap();
    let out = run(r.path(), &sh("ls /layers | wc -l")).unwrap();
    assert_eq!(out.stdout.trim(), "120");
    drop(r);
    // 600 layers: past overlayfs's 500, the bottom ones are merged; a whiteout in a merged
    // layer still deletes, and the top layers still win.
    for i in 120..600 {
        let p = e.scratch.parent().unwrap().join(format!("{i:03}"));
        fs::create_dir_all(p.join("layers")).unwrap();
        fs::write(p.join(format!("layers/{i}")), "").unwrap();
        if i == 130 {
            nix::sys::stat::mknod(
                &p.join("layers/5"),
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                0,
            )
            .unwrap();
        }
        if i == 599 {
            fs::write(p.join("layers/0"), "top").unwrap();
        }
        lowers.push(p);
    }
    let r = Rootfs::prepare(&lowers, &e.scratch, SnapshotterKind::Overlay).unwrap();
    let out = run(
        r.path(),
        &sh("ls /layers | wc -l; cat /layers/0; ls /layers/5 2>&1 >/dev/null | wc -l"),
    )
    .unwrap();
    assert_eq!(out.stdout, "599\ntop1\n", "{}", out.stderr);
}

fn tty_output() {
    let e = env();
    let r = Rootfs::prepare(
        std::slice::from_ref(&e.image),
        &e.scratch,
        SnapshotterKind::Overlay,
    )
    .unwrap();
    let mut spec =
        sh("[ -t 0 ] && [ -t 1 ] && echo on-a-tty; tty; echo $TERM; stat -c '%a %u %g' $(tty)");
    spec.tty = true;
    spec.user = "app".into();
    let out = run(r.path(), &spec).unwrap();
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(
        out.stdout.replace('\r', ""),
        "on-a-tty\n/dev/pts/0\nxterm\n620 1000 5\n",
        "the terminal is the container's own, owned by the user"
    );
    // -it: keystrokes go to the container's terminal.
    let (rd, wr) = rustix::pipe::pipe().unwrap();
    fs::File::from(wr)
        .write_all(b"echo typed-$((40+2)); exit 5\n")
        .unwrap();
    let spec = ProcessSpec {
        args: vec!["/bin/sh".into()],
        tty: true,
        stdin: true,
        ..Default::default()
    };
    let mut outb = Vec::new();
    let mut hooks = cairn_sandbox::RunHooks {
        on_start: None,
        stdin: Some(rd),
    };
    let code = cairn_sandbox::run_with(
        r.path(),
        &spec,
        &mut |_, b| outb.extend_from_slice(b),
        &mut hooks,
    )
    .unwrap();
    let text = String::from_utf8_lossy(&outb);
    assert_eq!(code, 5, "{text}");
    assert!(text.contains("typed-42"), "{text}");
}

fn exec_joins_a_running_container() {
    let e = env();
    let r = Rootfs::prepare(
        std::slice::from_ref(&e.image),
        &e.scratch,
        SnapshotterKind::Overlay,
    )
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let root = r.path().to_path_buf();
    let main = std::thread::spawn(move || {
        let mut spec = sh("echo started > /tmp/mark; sleep 2");
        spec.hostname = "joined".into();
        let mut hooks = cairn_sandbox::RunHooks {
            on_start: Some(Box::new(move |pid| tx.send(pid).unwrap())),
            stdin: None,
        };
        cairn_sandbox::run_with(&root, &spec, &mut |_, _| {}, &mut hooks).unwrap()
    });
    let pid = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut spec = sh("hostname; cat /tmp/mark; id -u; tr '\\0' ' ' < /proc/2/cmdline");
    spec.user = "app".into();
    let mut out = Vec::new();
    let code = cairn_sandbox::exec_in(
        pid,
        &spec,
        &mut |_, b| out.extend_from_slice(b),
        &mut Default::default(),
    )
    .unwrap();
    assert_eq!(code, 0);
    assert_eq!(
        String::from_utf8_lossy(&out),
        "joined\nstarted\n1000\nsleep 2 ",
        "PID 2 is the container's command (sh exec'd sleep)"
    );
    assert_eq!(main.join().unwrap(), 0);
}

/// Child mode of this binary for the kill tests: prepare, run `sleep <marker>`, print what to
/// check, clean up on SIGTERM.
fn kill_child(image: &str, scratch: &str, marker: &str, threadless: bool) -> ! {
    if threadless {
        // `cairn run`'s way: no signal thread, so the init is forked, not re-exec'd.
        cairn_sandbox::kill_containers_on_termination_without_thread().unwrap();
    } else {
        cairn_sandbox::kill_containers_on_termination().unwrap();
    }
    let r = Rootfs::prepare(
        &[PathBuf::from(image)],
        Path::new(scratch),
        SnapshotterKind::Overlay,
    )
    .unwrap();
    let spec = ProcessSpec {
        args: vec!["sleep".into(), marker.into()],
        ..Default::default()
    };
    let mut hooks = cairn_sandbox::RunHooks {
        on_start: Some(Box::new(|pid| println!("started {pid}"))),
        stdin: None,
    };
    let code = cairn_sandbox::run_with(r.path(), &spec, &mut |_, _| {}, &mut hooks).unwrap();
    drop(r);
    std::process::exit(code)
}

fn pids_with_arg(arg: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmd) = fs::read(format!("/proc/{pid}/cmdline")) {
            // The container's `sleep`, not the test child whose arguments also hold the marker.
            let argv: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            if argv.first() == Some(&b"sleep".as_slice()) && argv.contains(&arg.as_bytes()) {
                out.push(pid);
            }
        }
    }
    out
}

fn mnt_ns(pid: i32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()
}

fn killing_cairn_leaves_nothing(signal: i32, threadless: bool) {
    use std::io::BufRead;
    let e = env();
    let marker = format!(
        "{}.{signal}{}",
        900 + std::process::id() % 99,
        u8::from(threadless)
    );
    let mut child = Command::new("/proc/self/exe")
        .args([
            "__kill-child",
            e.image.to_str().unwrap(),
            e.scratch.to_str().unwrap(),
            &marker,
            if threadless { "threadless" } else { "thread" },
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("started "), "{line}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids_with_arg(&marker).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the container's sleep never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let container_ns = mnt_ns(pids_with_arg(&marker)[0]).unwrap();
    let cairn_ns = mnt_ns(child.id() as i32).unwrap();
    assert_ne!(
        cairn_ns,
        mnt_ns(std::process::id() as i32).unwrap(),
        "cairn works in its own mount namespace"
    );
    unsafe { libc::kill(child.id() as i32, signal) };
    let status = child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pids_with_arg(&marker).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the container's process survived cairn"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // No process holds either mount namespace: the kernel has torn down every mount in them.
    for p in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let ns = mnt_ns(pid);
        assert!(
            ns.as_ref() != Some(&container_ns) && ns.as_ref() != Some(&cairn_ns),
            "pid {pid} holds a mount namespace"
        );
    }
    let findmnt = Command::new("findmnt").arg("-rn").output().unwrap();
    assert!(!String::from_utf8_lossy(&findmnt.stdout).contains(e.scratch.to_str().unwrap()));
    if signal == libc::SIGTERM {
        assert_eq!(
            status.code(),
            Some(137),
            "the run ended by the kill, and cairn exited normally"
        );
        assert_eq!(
            fs::read_dir(&e.scratch).unwrap().count(),
            0,
            "temp dirs removed"
        );
    }
}

fn main() {
    cairn_sandbox::maybe_run_init();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__status") {
        let status = fs::read_to_string("/proc/self/status").unwrap();
        for l in status.lines().filter(|l| {
            l.starts_with("Uid:") || l.starts_with("CapPrm:") || l.starts_with("CapEff:")
        }) {
            println!("{l}");
        }
        std::process::exit(0);
    }
    if args.get(1).map(String::as_str) == Some("__kill-child") {
        cairn_sandbox::enter_private_mount_namespace().unwrap();
        kill_child(&args[2], &args[3], &args[4], args[5] == "threadless");
    }
    cairn_sandbox::enter_private_mount_namespace().expect("these tests need root");
    let filter: Vec<&String> = args[1..].iter().filter(|a| !a.starts_with('-')).collect();
    let tests: &[(&str, fn())] = &[
        ("write_exit_code_and_streams", write_exit_code_and_streams),
        (
            "deletes_become_whiteouts_and_replacements_land_in_upper",
            deletes_become_whiteouts_and_replacements_land_in_upper,
        ),
        ("no_trace_of_mount_points", no_trace_of_mount_points),
        (
            "binds_into_dev_work_and_leave_nothing",
            binds_into_dev_work_and_leave_nothing,
        ),
        (
            "users_groups_home_env_and_workdir",
            users_groups_home_env_and_workdir,
        ),
        ("exit_codes_and_exec_errors", exit_codes_and_exec_errors),
        (
            "an_init_binary_that_is_not_one_is_an_error",
            an_init_binary_that_is_not_one_is_an_error,
        ),
        (
            "pid1_reaps_zombies_and_namespaces_are_fresh",
            pid1_reaps_zombies_and_namespaces_are_fresh,
        ),
        ("symlink_escapes_are_refused", symlink_escapes_are_refused),
        (
            "capabilities_are_dockers_and_setuid_gains_nothing",
            capabilities_are_dockers_and_setuid_gains_nothing,
        ),
        (
            "native_snapshotter_copies_and_compares",
            native_snapshotter_copies_and_compares,
        ),
        ("long_layer_chains_mount", long_layer_chains_mount),
        ("tty_output", tty_output),
        (
            "exec_joins_a_running_container",
            exec_joins_a_running_container,
        ),
        ("kill_9_leaves_no_process_or_mount", || {
            killing_cairn_leaves_nothing(libc::SIGKILL, false)
        }),
        ("sigterm_kills_container_and_cleans_up", || {
            killing_cairn_leaves_nothing(libc::SIGTERM, false)
        }),
        ("kill_9_of_a_threadless_cairn_leaves_nothing", || {
            killing_cairn_leaves_nothing(libc::SIGKILL, true)
        }),
        ("sigterm_without_signal_thread_kills_and_cleans_up", || {
            killing_cairn_leaves_nothing(libc::SIGTERM, true)
        }),
    ];
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, f) in tests {
        if !filter.is_empty() && !filter.iter().any(|p| name.contains(p.as_str())) {
            continue;
        }
        ran += 1;
        let t = Instant::now();
        let ok = std::panic::catch_unwind(f).is_ok();
        println!(
            "test {name} ... {} ({:.2}s)",
            if ok { "ok" } else { "FAILED" },
            t.elapsed().as_secs_f64()
        );
        if !ok {
            failed.push(*name);
        }
    }
    println!("\n{} passed; {} failed", ran - failed.len(), failed.len());
    if !failed.is_empty() {
        println!("failures: {failed:?}");
        std::process::exit(1);
    }
}
