//! The protocol paths Debian's registry does not exercise: bearer-token auth (docker hub's
//! flow), docker manifest lists, 503s and streams cut mid-blob, redirects of blob downloads to
//! another host (which must not receive our credentials). A small HTTP/1.1 server on loopback
//! plays the registry.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use cairn_registry::{Credential, Event, Platform, PullOptions, RegistryOptions};

#[derive(Default)]
struct State {
    /// path → (kind or content type, body)
    files: HashMap<String, (String, Vec<u8>)>,
    /// "METHOD path authorization" per request, in order.
    log: Vec<String>,
    /// Faults still to inject per path: "503" or "cut".
    faults: HashMap<String, Vec<&'static str>>,
    /// Layer downloads are redirected to this base URL.
    redirect_to: Option<String>,
    /// Advertised `OCI-Chunk-Min-Length`, if any.
    min_chunk: Option<usize>,
    /// Refuse a PUT that carries data (registries that only take chunks).
    no_monolithic: bool,
    /// Upload sessions: path → bytes so far.
    uploads: HashMap<String, Vec<u8>>,
    /// Sizes of the PATCH bodies received.
    patches: Vec<usize>,
    /// (path, Range header) of ranged requests.
    ranges: Vec<(String, String)>,
    /// Ignore Range headers (answer 200 with the whole blob), as some servers do.
    no_ranges: bool,
    /// Lose the upload session at the next data-carrying PUT and answer 500 (then 404).
    lose_next_upload: bool,
}

struct Request {
    method: String,
    path: String,
    query: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

fn read_request(s: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    s.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        s.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let len: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    std::io::Read::read_exact(s, &mut body).ok()?;
    Some(Request {
        method,
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body,
    })
}

fn respond(s: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut out = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let _ = s.write_all(out.as_bytes());
    let _ = s.write_all(body);
}

/// Answers 200 with `body`, or 206 with its tail when the request has `Range: bytes=N-`.
fn respond_ranged(c: &mut TcpStream, req: &Request, kind: String, body: &[u8], ranges: bool) {
    let start = req
        .headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    match start {
        Some(n) if ranges && n < body.len() => {
            let range = format!("bytes {n}-{}/{}", body.len() - 1, body.len());
            respond(
                c,
                "206 Partial Content",
                &[("Content-Range", range)],
                &body[n..],
            );
        }
        _ => respond(c, "200 OK", &[("Content-Type", kind)], body),
    }
}

/// Serves `state` on a fresh port of `ip`; the token endpoint wants alice/pw.
fn serve(ip: &'static str, state: Arc<Mutex<State>>) -> u16 {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let state = state.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(c.try_clone().unwrap());
                let Some(req) = read_request(&mut r) else {
                    return;
                };
                handle(&mut c, req, ip, port, &state);
            });
        }
    });
    port
}

const TOKEN: &str = "tok-123";

fn handle(c: &mut TcpStream, req: Request, ip: &str, port: u16, state: &Mutex<State>) {
    let auth = req
        .headers
        .get("authorization")
        .cloned()
        .unwrap_or_default();
    let mut st = state.lock().unwrap();
    let ranges = !st.no_ranges;
    st.log.push(format!("{} {} {}", req.method, req.path, auth));
    if let Some(r) = req.headers.get("range") {
        st.ranges.push((req.path.clone(), r.clone()));
    }
    if req.path == "/token" {
        // base64("alice:pw")
        let ok = auth == "Basic YWxpY2U6cHc="
            && req
                .query
                .contains("scope=repository%3Alibrary%2Fbusybox%3Apull")
            && req.query.contains("service=fake");
        drop(st);
        if ok {
            respond(
                c,
                "200 OK",
                &[],
                format!("{{\"token\":\"{TOKEN}\"}}").as_bytes(),
            );
        } else {
            respond(c, "401 Unauthorized", &[], b"{}");
        }
        return;
    }
    if let Some(rest) = req.path.strip_prefix("/blob-host/") {
        // The other host: it must never see our token.
        let body = st
            .files
            .get(&format!("/v2/library/busybox/blobs/{rest}"))
            .cloned();
        drop(st);
        match body {
            Some((kind, b)) if auth.is_empty() => respond_ranged(c, &req, kind, &b, ranges),
            _ => respond(
                c,
                "403 Forbidden",
                &[],
                b"credentials leaked or unknown blob",
            ),
        }
        return;
    }
    if auth != format!("Bearer {TOKEN}") {
        drop(st);
        let realm = format!("http://{ip}:{port}/token");
        let challenge = format!(
            "Bearer realm=\"{realm}\",service=\"fake\",scope=\"repository:library/busybox:pull\""
        );
        respond(
            c,
            "401 Unauthorized",
            &[("WWW-Authenticate", challenge)],
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        );
        return;
    }
    if req.path == "/v2/" {
        drop(st);
        respond(c, "200 OK", &[], b"{}");
        return;
    }
    if let Some(answer) = upload(&mut st, &req) {
        drop(st);
        let (status, headers) = answer;
        respond(c, status, &headers, b"");
        return;
    }
    let fault = st
        .faults
        .get_mut(&req.path)
        .and_then(|f| (!f.is_empty()).then(|| f.remove(0)));
    let file = st.files.get(&req.path).cloned();
    let redirect = st.redirect_to.clone();
    drop(st);
    let Some((kind, body)) = file else {
        respond(
            c,
            "404 Not Found",
            &[],
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        );
        return;
    };
    match fault {
        Some("503") => respond(c, "503 Service Unavailable", &[], b"busy"),
        Some(_) => {
            // Announce the whole blob, send half, hang up.
            let head = format!(
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = c.write_all(head.as_bytes());
            let _ = c.write_all(&body[..body.len() / 2]);
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        None => match (&redirect, req.path.split_once("/blobs/")) {
            (Some(host), Some((_, d))) if kind == "layer" => respond(
                c,
                "307 Temporary Redirect",
                &[("Location", format!("{host}/blob-host/{d}"))],
                b"",
            ),
            _ => respond_ranged(c, &req, kind, &body, ranges),
        },
    }
}

/// The push side: upload sessions (POST, PATCH, PUT), HEAD of blobs, PUT of manifests.
fn upload(st: &mut State, req: &Request) -> Option<(&'static str, Vec<(&'static str, String)>)> {
    let base = "/v2/library/busybox";
    let session = req.path.strip_prefix(&format!("{base}/blobs/uploads/"));
    match (req.method.as_str(), session) {
        ("POST", Some("")) => {
            let loc = format!("{base}/blobs/uploads/{}", st.uploads.len() + 1);
            st.uploads.insert(loc.clone(), Vec::new());
            let mut h = vec![("Location", loc)];
            if let Some(m) = st.min_chunk {
                h.push(("OCI-Chunk-Min-Length", m.to_string()));
            }
            Some(("202 Accepted", h))
        }
        ("PATCH", Some(_)) => {
            st.patches.push(req.body.len());
            st.uploads.get_mut(&req.path)?.extend_from_slice(&req.body);
            Some(("202 Accepted", vec![("Location", req.path.clone())]))
        }
        ("PUT", Some(_)) => {
            if st.no_monolithic && !req.body.is_empty() {
                return Some(("405 Method Not Allowed", Vec::new()));
            }
            if st.lose_next_upload && !req.body.is_empty() {
                st.lose_next_upload = false;
                st.uploads.remove(&req.path);
                return Some(("500 Internal Server Error", Vec::new()));
            }
            if !st.uploads.contains_key(&req.path) {
                return Some(("404 Not Found", Vec::new()));
            }
            let mut data = st.uploads.remove(&req.path)?;
            data.extend_from_slice(&req.body);
            let digest = req.query.strip_prefix("digest=")?.replace("%3A", ":");
            if sha(&data) != digest {
                return Some(("400 Bad Request", Vec::new()));
            }
            st.files
                .insert(format!("{base}/blobs/{digest}"), ("blob".into(), data));
            Some(("201 Created", vec![("Docker-Content-Digest", digest)]))
        }
        ("HEAD", _) if req.path.contains("/blobs/") => {
            let have = st.files.contains_key(&req.path);
            Some((if have { "200 OK" } else { "404 Not Found" }, Vec::new()))
        }
        ("PUT", None) if req.path.starts_with(&format!("{base}/manifests/")) => {
            let ct = req.headers.get("content-type").cloned().unwrap_or_default();
            st.files.insert(req.path.clone(), (ct, req.body.clone()));
            Some((
                "201 Created",
                vec![("Docker-Content-Digest", sha(&req.body))],
            ))
        }
        _ => None,
    }
}

fn sha(b: &[u8]) -> String {
    cairn_layer::hash::sha256_digest(b)
}

/// A gzip layer with one file: (tar, tar.gz).
fn layer(name: &str, content: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, name, content).unwrap();
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    (tar, gz.finish().unwrap())
}

const LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const V2: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// library/busybox:latest as a docker manifest list over amd64 and arm64 images. Returns the
/// digests of the list, the amd64 manifest, the arm64 manifest and the arm64 layer.
fn populate(st: &mut State) -> (String, String, String, String) {
    let mut put = |path: String, kind: &str, body: Vec<u8>| {
        st.files.insert(path, (kind.to_string(), body));
    };
    let base = "/v2/library/busybox";
    let mut entries = Vec::new();
    let mut out = Vec::new();
    for arch in ["amd64", "arm64"] {
        let (tar, gz) = layer(arch, format!("I am {arch}\n").as_bytes());
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": arch, "os": "linux", "config": {"Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [sha(&tar)]},
            "container_config": {"Hostname": "docker-only key"},
        }))
        .unwrap();
        let m = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": V2,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "digest": sha(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "digest": sha(&gz), "size": gz.len()}],
        }))
        .unwrap();
        entries.push(serde_json::json!({
            "mediaType": V2, "digest": sha(&m), "size": m.len(),
            "platform": {"os": "linux", "architecture": arch},
        }));
        out.push((sha(&m), sha(&gz)));
        put(format!("{base}/blobs/{}", sha(&config)), "config", config);
        put(format!("{base}/blobs/{}", sha(&gz)), "layer", gz);
        put(format!("{base}/manifests/{}", sha(&m)), V2, m);
    }
    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": LIST, "manifests": entries,
    }))
    .unwrap();
    let d = sha(&list);
    put(format!("{base}/manifests/{d}"), LIST, list.clone());
    put(format!("{base}/manifests/latest"), LIST, list);
    (d, out[0].0.clone(), out[1].0.clone(), out[1].1.clone())
}

fn options(events: Arc<Mutex<Vec<Event>>>, cred: Option<Credential>) -> PullOptions {
    PullOptions {
        registry: RegistryOptions {
            credential: cred,
            docker_config: std::path::PathBuf::from("/nonexistent/cairn-test/config.json"),
            retries: 2,
            progress: Some(Arc::new(move |e: &Event| {
                events.lock().unwrap().push(e.clone())
            })),
            ..Default::default()
        },
        platform: Some(Platform::parse("linux/arm64").unwrap()),
    }
}

fn alice() -> Option<Credential> {
    Some(Credential::UserPassword {
        username: "alice".into(),
        password: "pw".into(),
    })
}

#[test]
fn bearer_token_manifest_list_retries_and_redirects() {
    let state = Arc::new(Mutex::new(State::default()));
    let (list, amd, arm, arm_layer) = populate(&mut state.lock().unwrap());
    let blob_host_port = serve("127.0.0.2", state.clone());
    let port = serve("127.0.0.1", state.clone());
    {
        let mut st = state.lock().unwrap();
        st.redirect_to = Some(format!("http://127.0.0.2:{blob_host_port}"));
        // The layer: first a 503, then a stream cut in the middle, then (redirected) fine.
        st.faults.insert(
            format!("/v2/library/busybox/blobs/{arm_layer}"),
            vec!["503", "cut"],
        );
    }
    let root = tempfile::tempdir().unwrap();
    let store = cairn_store::Store::open(root.path()).unwrap();
    let reference = format!("127.0.0.1:{port}/library/busybox");

    // Anonymous: the token endpoint refuses, and the error says to log in.
    let events = Arc::new(Mutex::new(Vec::new()));
    let err = cairn_registry::pull(&store, &reference, &options(events.clone(), None)).unwrap_err();
    assert!(err.to_string().contains("authentication required"), "{err}");

    let rec = cairn_registry::pull(&store, &reference, &options(events.clone(), alice())).unwrap();
    assert_eq!(rec.config.architecture().to_string(), "arm64");
    assert_eq!(rec.layers[0].digest, arm_layer);
    // The manifest is kept as served: same digest, docker media types, docker-only config keys.
    assert_eq!(rec.manifest_digest, arm);
    let manifest = store.manifest_json(&rec).unwrap();
    assert_eq!(manifest["mediaType"], V2);
    assert_eq!(
        store.config_json(&rec).unwrap()["container_config"]["Hostname"],
        "docker-only key"
    );
    assert_eq!(rec.repo_tags, vec![format!("{reference}:latest")]);
    let ev = events.lock().unwrap().clone();
    assert!(
        ev.contains(&Event::Digest {
            digest: list.clone()
        }),
        "{ev:?}"
    );
    let retries = ev
        .iter()
        .filter(|e| matches!(e, Event::Retrying { .. }))
        .count();
    assert_eq!(
        retries, 1,
        "the 503 is retried inside the request, the cut stream once: {ev:?}"
    );
    assert!(ev.contains(&Event::PullComplete {
        digest: arm_layer.clone()
    }));

    // The cut download went on from where it broke, on the redirected host.
    let half = state.lock().unwrap().files[&format!("/v2/library/busybox/blobs/{arm_layer}")]
        .1
        .len()
        / 2;
    let ranges = state.lock().unwrap().ranges.clone();
    assert!(
        ranges.contains(&(format!("/blob-host/{arm_layer}"), format!("bytes={half}-"))),
        "{ranges:?}"
    );
    let log = state.lock().unwrap().log.clone();
    // The arm64 manifest was fetched by digest; the amd64 one never.
    assert!(
        log.iter().any(|l| l.contains(&format!("/manifests/{arm}"))),
        "{log:#?}"
    );
    assert!(
        !log.iter().any(|l| l.contains(&format!("/manifests/{amd}"))),
        "{log:#?}"
    );
    // The redirected download reached the other host without credentials (else it says 403).
    let redirected = format!("GET /blob-host/{arm_layer} ");
    assert!(log.contains(&redirected), "{log:#?}");
    // Requests after the challenge carried the token.
    let with_token = log.iter().filter(|l| l.ends_with(TOKEN)).count();
    assert!(with_token >= 5, "{log:#?}");

    // By digest of the list; then an unknown digest.
    let by_digest = format!("{reference}@{list}");
    cairn_registry::pull(&store, &by_digest, &options(events.clone(), alice())).unwrap();
    let unknown = format!("{reference}@sha256:{}", "0".repeat(64));
    let err = cairn_registry::pull(&store, &unknown, &options(events, alice())).unwrap_err();
    assert!(err.to_string().contains("MANIFEST_UNKNOWN"), "{err}");
}

/// The build engine may call `pull` from async code: reqwest's blocking client would panic
/// there if it ran on the caller's thread.
#[tokio::test(flavor = "current_thread")]
async fn pull_from_inside_an_async_runtime() {
    let state = Arc::new(Mutex::new(State::default()));
    let (_, _, arm, _) = populate(&mut state.lock().unwrap());
    let port = serve("127.0.0.1", state);
    let root = tempfile::tempdir().unwrap();
    let store = cairn_store::Store::open(root.path()).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let reference = format!("127.0.0.1:{port}/library/busybox:latest");
    let rec = cairn_registry::pull(&store, &reference, &options(events, alice())).unwrap();
    assert_eq!(rec.layers.len(), 1);
    assert!(
        store.has_blob(&arm),
        "the selected manifest is kept as a blob"
    );
}

#[test]
fn pull_if_missing_uses_the_store_first() {
    let state = Arc::new(Mutex::new(State::default()));
    let (_, amd, arm, _) = populate(&mut state.lock().unwrap());
    let port = serve("127.0.0.1", state.clone());
    let root = tempfile::tempdir().unwrap();
    let store = cairn_store::Store::open(root.path()).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let reference = format!("127.0.0.1:{port}/library/busybox");
    let opts = options(events.clone(), alice());

    let first = cairn_registry::pull_if_missing(&store, &reference, &opts).unwrap();
    assert_eq!(first.manifest_digest, arm);
    let requests = state.lock().unwrap().log.len();
    let again = cairn_registry::pull_if_missing(&store, &reference, &opts).unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(
        state.lock().unwrap().log.len(),
        requests,
        "no request when the store has it"
    );

    // Another platform than the stored one: pulled.
    let mut amd_opts = options(events, alice());
    amd_opts.platform = Some(Platform::parse("linux/amd64").unwrap());
    let other = cairn_registry::pull_if_missing(&store, &reference, &amd_opts).unwrap();
    assert_eq!(other.manifest_digest, amd);
    assert!(state.lock().unwrap().log.len() > requests);

    let missing = format!("127.0.0.1:{port}/library/nothing");
    let err = cairn_registry::pull_if_missing(&store, &missing, &opts).unwrap_err();
    assert!(
        matches!(err, cairn_registry::Error::NotFound { .. }),
        "{err:?}"
    );
}

/// Pushes a stored image to the fake registry with `opts`; returns the digest and the sizes of
/// the PATCH requests.
fn push_with(
    state: &Arc<Mutex<State>>,
    port: u16,
    chunk: Option<u64>,
) -> (String, String, Vec<usize>) {
    push_with_events(state, port, chunk, Arc::new(Mutex::new(Vec::new())))
}

fn push_with_events(
    state: &Arc<Mutex<State>>,
    port: u16,
    chunk: Option<u64>,
    events: Arc<Mutex<Vec<Event>>>,
) -> (String, String, Vec<usize>) {
    let root = tempfile::tempdir().unwrap();
    let store = cairn_store::Store::open(root.path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data"), vec![7u8; 300_000]).unwrap();
    let l = store
        .write_layer(
            cairn_layer::DiffSource::Tree(dir.path()),
            cairn_layer::Compression::None,
            &Default::default(),
        )
        .unwrap();
    let cfg = serde_json::json!({"architecture": "amd64", "os": "linux",
                                 "rootfs": {"type": "layers", "diff_ids": []}});
    let img = store
        .commit_image_json(&cfg, &[l], &["pushme:1".to_string()])
        .unwrap();
    let opts = cairn_registry::PushOptions {
        registry: options(events, alice()).registry,
        chunk_size: chunk,
    };
    let target = format!("127.0.0.1:{port}/library/busybox:pushed");
    let digest = cairn_registry::push(&store, "pushme:1", &target, &opts).unwrap();
    let patches = state.lock().unwrap().patches.clone();
    (digest, img.manifest_digest, patches)
}

#[test]
fn chunked_uploads_respect_the_registry() {
    // The registry wants chunks of at least 128 KiB: a 1 KiB request is raised to that.
    let state = Arc::new(Mutex::new(State {
        min_chunk: Some(128 << 10),
        ..Default::default()
    }));
    let port = serve("127.0.0.1", state.clone());
    let (digest, stored, patches) = push_with(&state, port, Some(1024));
    assert_eq!(digest, stored);
    assert!(patches.iter().all(|&p| p <= 128 << 10), "{patches:?}");
    assert!(
        patches.iter().filter(|&&p| p == 128 << 10).count() >= 2,
        "{patches:?}"
    );
    let st = state.lock().unwrap();
    let pushed = &st.files["/v2/library/busybox/manifests/pushed"].1;
    assert_eq!(
        sha(pushed),
        digest,
        "the exact stored manifest bytes were pushed"
    );
}

#[test]
fn monolithic_refused_falls_back_to_chunks() {
    let state = Arc::new(Mutex::new(State {
        no_monolithic: true,
        ..Default::default()
    }));
    let port = serve("127.0.0.1", state.clone());
    let (digest, stored, patches) = push_with(&state, port, None);
    assert_eq!(digest, stored);
    assert!(!patches.is_empty(), "fell back to PATCH uploads");
}

#[test]
fn a_cut_stream_resumes_even_without_range_support() {
    let state = Arc::new(Mutex::new(State {
        no_ranges: true,
        ..Default::default()
    }));
    let (_, _, _, arm_layer) = populate(&mut state.lock().unwrap());
    let path = format!("/v2/library/busybox/blobs/{arm_layer}");
    state
        .lock()
        .unwrap()
        .faults
        .insert(path.clone(), vec!["cut", "cut"]);
    let port = serve("127.0.0.1", state.clone());
    let root = tempfile::tempdir().unwrap();
    let store = cairn_store::Store::open(root.path()).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let reference = format!("127.0.0.1:{port}/library/busybox");
    let rec = cairn_registry::pull(&store, &reference, &options(events.clone(), alice())).unwrap();
    assert_eq!(rec.layers[0].digest, arm_layer);
    let ev = events.lock().unwrap().clone();
    let retries = ev
        .iter()
        .filter(|e| matches!(e, Event::Retrying { .. }))
        .count();
    assert_eq!(retries, 2, "{ev:?}");
    // It asked for the rest; the server sent everything and the head was skipped.
    assert_eq!(state.lock().unwrap().ranges.len(), 2);

    // Cut more often than the retries allow: a clear error, nothing stored.
    let root = tempfile::tempdir().unwrap();
    let store = cairn_store::Store::open(root.path()).unwrap();
    state
        .lock()
        .unwrap()
        .faults
        .insert(path, vec!["cut", "cut", "cut", "cut"]);
    let err = cairn_registry::pull(&store, &reference, &options(events, alice())).unwrap_err();
    assert!(err.to_string().contains("connection lost after"), "{err}");
    assert!(!store.has_blob(&arm_layer));
}

#[test]
fn a_lost_upload_session_is_started_again() {
    let state = Arc::new(Mutex::new(State {
        lose_next_upload: true,
        ..Default::default()
    }));
    let port = serve("127.0.0.1", state.clone());
    let events = Arc::new(Mutex::new(Vec::new()));
    let (digest, stored, _) = push_with_events(&state, port, None, events.clone());
    assert_eq!(digest, stored);
    let ev = events.lock().unwrap().clone();
    assert!(
        ev.iter().any(|e| matches!(e, Event::Retrying { .. })),
        "{ev:?}"
    );
    // Upload progress reaches the whole layer.
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::Progress { current, total, .. }
            if current == total && *total > 300_000)),
        "{ev:?}"
    );
    let posts = state
        .lock()
        .unwrap()
        .log
        .iter()
        .filter(|l| l.starts_with("POST /v2/library/busybox/blobs/uploads/ Bearer"))
        .count();
    assert_eq!(posts, 3, "2 blobs + 1 new session after the loss");
}
