//! `ADD <git url>#ref:subdir`: a repository served over (dumb) HTTP by the test on 127.0.0.1.
//! Needs the `git` command, and root (chown).

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;

use cairn_build::context::BuildContext;
use cairn_build::copy::{apply, inputs_digest, SourceRoot};
use cairn_dockerfile::Copy;
use common::{add, request, Dirs};

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .status()
        .unwrap()
        .success();
    assert!(ok, "git {args:?}");
}

/// Serves the files under `dir` over HTTP (what git's dumb protocol needs).
fn serve_dir(dir: PathBuf) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for stream in l.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => req.extend_from_slice(&buf[..k]),
                }
            }
            let line = String::from_utf8_lossy(&req)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            let path = line.split_whitespace().nth(1).unwrap_or("/");
            let path = path
                .split('?')
                .next()
                .unwrap_or("/")
                .trim_start_matches('/');
            let resp = match (path.contains(".."), fs::read(dir.join(path))) {
                (false, Ok(body)) => {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(&body);
                    r
                }
                _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
            };
            let _ = s.write_all(&resp);
        }
    });
    format!("http://{addr}")
}

#[test]
fn add_git_checkout_at_ref_and_subdir() {
    let t = tempfile::tempdir().unwrap();
    let work = t.path().join("work");
    fs::create_dir_all(work.join("sub")).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    fs::write(work.join("README"), "v1\n").unwrap();
    fs::write(work.join("sub/a.txt"), "a\n").unwrap();
    fs::write(work.join("run.sh"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(work.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("README", work.join("link")).unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-qm", "one"]);
    git(&work, &["tag", "v1"]);
    fs::write(work.join("README"), "v2\n").unwrap();
    git(&work, &["commit", "-qam", "two"]);
    let srv = t.path().join("srv");
    fs::create_dir_all(&srv).unwrap();
    git(t.path(), &["clone", "-q", "--bare", "work", "srv/repo.git"]);
    git(&srv.join("repo.git"), &["update-server-info"]);
    let base = serve_dir(srv);

    let d = Dirs::new();
    let (ctx_dir, rootfs) = (d.ctx.clone(), d.rootfs.clone());
    let ctx = BuildContext::open(&ctx_dir, None).unwrap();
    let run = |c: &Copy| {
        let req = request(c, "/");
        apply(&req, &SourceRoot::Context(&ctx), &rootfs).unwrap();
        inputs_digest(&req, &SourceRoot::Context(&ctx)).unwrap()
    };

    let d_v1 = run(&add(&[&format!("{base}/repo.git#v1")], "/app"));
    assert_eq!(
        fs::read_to_string(rootfs.join("app/README")).unwrap(),
        "v1\n"
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("app/sub/a.txt")).unwrap(),
        "a\n"
    );
    let m = fs::metadata(rootfs.join("app/run.sh")).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o755);
    assert_eq!(
        fs::read_link(rootfs.join("app/link")).unwrap(),
        Path::new("README")
    );
    assert!(!rootfs.join("app/.git").exists());

    let d_head = run(&add(&[&format!("{base}/repo.git")], "/head/"));
    assert_eq!(
        fs::read_to_string(rootfs.join("head/README")).unwrap(),
        "v2\n"
    );
    assert_ne!(d_v1, d_head, "the digest follows the commit");

    run(&add(&[&format!("{base}/repo.git#v1:sub")], "/only-sub"));
    assert_eq!(
        fs::read_to_string(rootfs.join("only-sub/a.txt")).unwrap(),
        "a\n"
    );
    assert!(!rootfs.join("only-sub/README").exists());

    // --checksum is the commit for git sources.
    let head = String::from_utf8(
        Command::new("git")
            .current_dir(&work)
            .args(["rev-parse", "v1"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let mut c = add(&[&format!("{base}/repo.git#v1")], "/sum");
    c.checksum = Some(head.trim()[..12].to_string());
    run(&c);
    assert!(rootfs.join("sum/README").is_file());
    c.checksum = Some("0123456789ab".into());
    let req = request(&c, "/");
    let e = apply(&req, &SourceRoot::Context(&ctx), &rootfs).unwrap_err();
    assert!(e.to_string().contains("checksum mismatch"), "{e}");

    let mut c = add(&[&format!("{base}/repo.git#main")], "/kg");
    c.keep_git_dir = true;
    run(&c);
    assert!(rootfs.join("kg/.git").is_dir());
}
