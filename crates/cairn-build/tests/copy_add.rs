//! ADD: local archives (each compression, detected by content), `--unpack=false`, URLs served by
//! a server on 127.0.0.1 started by the test (checksum ok and mismatch, names, mode, mtime), git
//! URLs refused. Needs root (chown).

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use cairn_build::context::BuildContext;
use cairn_build::copy::{apply, inputs_digest, CopyError, SourceRoot};
use cairn_dockerfile::Copy;
use common::{add, apply_in, request, Dirs};
use sha2::{Digest, Sha256};

fn run(ctx_dir: &Path, rootfs: &Path, c: &Copy) -> Result<(), CopyError> {
    apply_in(ctx_dir, c, "/", rootfs).map(|_| ())
}

/// A tar with `dir/`, `dir/hello.txt` (owned 1234:5678, mode 0600), a symlink and a hardlink.
fn sample_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o750);
    h.set_size(0);
    h.set_mtime(1_600_000_000);
    b.append_data(&mut h, "dir/", &[][..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o600);
    h.set_uid(1234);
    h.set_gid(5678);
    h.set_size(5);
    h.set_mtime(1_600_000_000);
    b.append_data(&mut h, "dir/hello.txt", &b"hello"[..])
        .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "dir/link", "hello.txt").unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    b.append_link(&mut h, "dir/hard", "dir/hello.txt").unwrap();
    b.into_inner().unwrap()
}

fn compress(kind: &str, raw: &[u8]) -> Vec<u8> {
    match kind {
        "plain" => raw.to_vec(),
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(raw).unwrap();
            e.finish().unwrap()
        }
        "bzip2" => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
            e.write_all(raw).unwrap();
            e.finish().unwrap()
        }
        "xz" => {
            let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(raw).unwrap();
            e.finish().unwrap()
        }
        "zstd" => zstd::encode_all(raw, 3).unwrap(),
        _ => unreachable!(),
    }
}

#[test]
fn add_unpacks_every_compression_detected_by_content() {
    for kind in ["plain", "gzip", "bzip2", "xz", "zstd"] {
        let t = Dirs::new();
        let (ctx, rootfs) = (t.ctx.clone(), t.rootfs.clone());
        // A misleading name: detection is by content.
        fs::write(ctx.join("archive.bin"), compress(kind, &sample_tar())).unwrap();
        run(&ctx, &rootfs, &add(&["archive.bin"], "/opt")).unwrap();
        let f = rootfs.join("opt/dir/hello.txt");
        assert_eq!(fs::read_to_string(&f).unwrap(), "hello", "{kind}");
        let m = fs::metadata(&f).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (1234, 5678, 0o600),
            "{kind}"
        );
        assert_eq!(m.mtime(), 1_600_000_000);
        assert_eq!(
            fs::metadata(rootfs.join("opt/dir")).unwrap().mode() & 0o7777,
            0o750
        );
        assert_eq!(
            fs::read_link(rootfs.join("opt/dir/link")).unwrap(),
            Path::new("hello.txt")
        );
        assert_eq!(
            fs::metadata(rootfs.join("opt/dir/hard")).unwrap().ino(),
            m.ino()
        );
        assert!(!rootfs.join("opt/archive.bin").exists());
    }
}

#[test]
fn unpack_false_and_non_tar_compressed_files_are_copied() {
    let t = Dirs::new();
    let (ctx, rootfs) = (t.ctx.clone(), t.rootfs.clone());
    let tgz = compress("gzip", &sample_tar());
    fs::write(ctx.join("a.tar.gz"), &tgz).unwrap();
    fs::write(ctx.join("notes.gz"), compress("gzip", b"just text")).unwrap();
    let mut c = add(&["a.tar.gz"], "/keep/");
    c.unpack = Some(false);
    run(&ctx, &rootfs, &c).unwrap();
    assert_eq!(fs::read(rootfs.join("keep/a.tar.gz")).unwrap(), tgz);
    run(&ctx, &rootfs, &add(&["notes.gz"], "/n/")).unwrap();
    assert!(rootfs.join("n/notes.gz").is_file());
    // COPY never unpacks.
    let mut c = add(&["a.tar.gz"], "/c/");
    c.add = false;
    run(&ctx, &rootfs, &c).unwrap();
    assert!(rootfs.join("c/a.tar.gz").is_file());
}

#[test]
fn archive_entries_cannot_escape_through_symlinks() {
    let t = Dirs::new();
    let (ctx, rootfs) = (t.ctx.clone(), t.rootfs.clone());
    let host = t.path().join("host");
    fs::create_dir_all(&host).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "esc", host.to_str().unwrap())
        .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(1);
    b.append_data(&mut h, "esc/owned", &b"x"[..]).unwrap();
    fs::write(ctx.join("evil.tar"), b.into_inner().unwrap()).unwrap();
    run(&ctx, &rootfs, &add(&["evil.tar"], "/x/")).unwrap();
    assert!(!host.join("owned").exists());
    assert!(rootfs
        .join(host.strip_prefix("/").unwrap())
        .join("owned")
        .is_file());
}

/// Serves `body` to every request (up to `n`) with a Last-Modified header; 404 for `/missing`.
fn serve(body: &'static [u8], n: usize) -> String {
    serve_counting(body, n, Arc::new(AtomicUsize::new(0)))
}

/// Like `serve`, counting the requests in `hits`.
fn serve_counting(body: &'static [u8], n: usize, hits: Arc<AtomicUsize>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for stream in l.incoming().take(n) {
            let mut s = stream.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let k = s.read(&mut buf).unwrap();
                if k == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..k]);
            }
            hits.fetch_add(1, Ordering::SeqCst);
            let line = String::from_utf8_lossy(&req)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            let resp = if line.contains("/missing") {
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
            } else {
                let mut r = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: Wed, 21 Oct 2015 07:28:00 GMT\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                r.extend_from_slice(body);
                r
            };
            let _ = s.write_all(&resp);
        }
    });
    format!("http://{addr}")
}

#[test]
fn add_url_with_checksum() {
    let body: &'static [u8] = b"#!/bin/sh\necho tool\n";
    let base = serve(body, 10);
    let t = Dirs::new();
    let (ctx, rootfs) = (t.ctx.clone(), t.rootfs.clone());
    let sum = format!("sha256:{}", hex::encode(Sha256::digest(body)));

    let mut c = add(&[&format!("{base}/dl/tool.sh")], "/usr/local/bin/");
    c.checksum = Some(sum.clone());
    run(&ctx, &rootfs, &c).unwrap();
    let f = rootfs.join("usr/local/bin/tool.sh");
    assert_eq!(fs::read(&f).unwrap(), body);
    let m = fs::metadata(&f).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o600);
    assert_eq!(m.mtime(), 1_445_412_480, "from Last-Modified");
    // With --checksum the digest needs no download and is the checksum's.
    let ctxo = BuildContext::open(&ctx, None).unwrap();
    let req = request(&c, "/");
    let d_sum = inputs_digest(&req, &SourceRoot::Context(&ctxo)).unwrap();
    assert!(d_sum.starts_with("sha256:"));

    // Without a trailing slash: the file is the destination.
    let c2 = add(&[&format!("{base}/x")], "/opt/renamed");
    run(&ctx, &rootfs, &c2).unwrap();
    assert_eq!(fs::read(rootfs.join("opt/renamed")).unwrap(), body);

    let mut bad = add(&[&format!("{base}/dl/tool.sh")], "/bad/");
    bad.checksum = Some(format!("sha256:{}", "0".repeat(64)));
    let e = run(&ctx, &rootfs, &bad).unwrap_err();
    assert!(matches!(e, CopyError::Checksum { .. }), "{e}");
    assert!(e.to_string().contains("checksum mismatch"), "{e}");
    assert!(e.to_string().contains(&sum), "{e}");
    assert!(!rootfs.join("bad/tool.sh").exists());

    let e = run(&ctx, &rootfs, &add(&[&format!("{base}/missing")], "/m/")).unwrap_err();
    assert!(e.to_string().contains("404"), "{e}");
}

#[test]
fn copy_urls_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let ctx = t.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    let mut c = add(&["http://127.0.0.1:1/x"], "/x");
    c.add = false;
    let e = run(&ctx, t.path(), &c).unwrap_err();
    assert!(
        e.to_string().contains("source can't be a URL for COPY"),
        "{e}"
    );
}

#[test]
fn url_digest_then_copy_fetches_once() {
    let body: &'static [u8] = b"payload";
    let hits = Arc::new(AtomicUsize::new(0));
    let base = serve_counting(body, 10, hits.clone());
    let t = Dirs::new();
    let (ctx, rootfs) = (t.ctx.clone(), t.rootfs.clone());
    let c = add(&[&format!("{base}/once.bin")], "/d/");
    let ctxo = BuildContext::open(&ctx, None).unwrap();
    let req = request(&c, "/");
    let d1 = inputs_digest(&req, &SourceRoot::Context(&ctxo)).unwrap();
    let d2 = inputs_digest(&req, &SourceRoot::Context(&ctxo)).unwrap();
    assert_eq!(d1, d2);
    apply(&req, &SourceRoot::Context(&ctxo), &rootfs).unwrap();
    assert_eq!(fs::read(rootfs.join("d/once.bin")).unwrap(), body);
    assert_eq!(
        fs::metadata(rootfs.join("d/once.bin")).unwrap().mtime(),
        1_445_412_480
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "one download for digest and copy"
    );
}
