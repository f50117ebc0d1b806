//! A small registry client over blocking `reqwest` (rustls).
//!
//! Why not `oci-client` 0.18: it uploads blobs from memory (`push_blob` takes the bytes), hides
//! the upload session (no cross-repository mount fallback to chunked, no control of retries),
//! and is async, so feeding its streams into the store's synchronous, verifying `ingest` would
//! need a runtime bridge. What the protocol needs here is a few requests; owning them keeps blobs
//! streaming from disk to socket and from socket to store, with every retry and error message
//! under our control.

use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use reqwest::blocking::{Client as Http, RequestBuilder, Response};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION};
use reqwest::{StatusCode, Url};

use crate::auth::{parse_challenge, Challenge, Credential};
use crate::reference::{is_loopback, registry_api_host};
use crate::{Error, RegistryOptions};

/// Media types a manifest GET accepts, most specific first.
pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.v1+prettyjws;q=0.1";

/// Largest manifest we read into memory; real ones are a few KiB.
const MAX_MANIFEST: u64 = 8 << 20;

/// A connection to one registry, authenticated for a set of scopes.
pub(crate) struct Client {
    http: Http,
    /// Normalised registry name (for messages and credentials).
    pub registry: String,
    host: String,
    /// `https://host` or `http://host`, decided by the first request.
    base: Mutex<Option<String>>,
    allow_http: bool,
    scopes: Vec<String>,
    credential: Option<Credential>,
    auth_header: Mutex<Option<String>>,
    retries: u32,
    /// Requests sent, for tests and `--debug`.
    pub requests: std::sync::atomic::AtomicU64,
    /// The smallest chunk the registry takes (`OCI-Chunk-Min-Length`), 0 if it never said.
    min_chunk: std::sync::atomic::AtomicU64,
    /// Where upload progress goes.
    progress: Option<crate::ProgressFn>,
}

/// The result of trying to mount a blob from another repository.
pub(crate) enum Mount {
    /// The registry linked the blob; nothing to upload.
    Mounted,
    /// The registry opened an upload session instead.
    Upload(String),
}

impl Client {
    /// A client for `registry` that will ask tokens for `scopes`
    /// (`repository:NAME:pull`, `repository:NAME:pull,push`).
    pub fn new(
        registry: &str,
        scopes: Vec<String>,
        credential: Option<Credential>,
        opts: &RegistryOptions,
    ) -> Result<Client, Error> {
        let host = registry_api_host(registry).to_string();
        let explicit_insecure = opts.is_insecure(registry) || opts.is_insecure(&host);
        let mut b = Http::builder()
            .user_agent(concat!("cairn/", env!("CARGO_PKG_VERSION")))
            // Blobs can take minutes; a dead peer shows up as a read error, not a timeout.
            .timeout(None)
            .connect_timeout(Duration::from_secs(15));
        let mut ca_files = opts.ca_files.clone();
        for dir in &opts.certs_dirs {
            // Docker's layout: one directory per host[:port]; a missing one is the usual case.
            if let Ok(entries) = std::fs::read_dir(dir.join(&host)) {
                let mut crts: Vec<_> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "crt"))
                    .collect();
                crts.sort();
                ca_files.extend(crts);
            }
        }
        for path in &ca_files {
            let pem = std::fs::read(path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Error::Transport(format!("{}: not a PEM certificate: {e}", path.display()))
            })? {
                b = b.add_root_certificate(cert);
            }
        }
        if explicit_insecure {
            // What docker's --insecure-registry means: TLS without verification, or plain http.
            b = b.danger_accept_invalid_certs(true);
        }
        let http = b
            .build()
            .map_err(|e| Error::Transport(format!("cannot set up HTTP client: {e}")))?;
        Ok(Client {
            http,
            registry: registry.to_string(),
            allow_http: explicit_insecure || is_loopback(&host),
            host,
            base: Mutex::new(None),
            scopes,
            credential,
            auth_header: Mutex::new(None),
            retries: opts.retries,
            requests: Default::default(),
            min_chunk: Default::default(),
            progress: opts.progress.clone(),
        })
    }

    fn base(&self) -> Result<String, Error> {
        if let Some(b) = self.base.lock().map_err(poisoned)?.clone() {
            return Ok(b);
        }
        self.ping()?;
        self.base
            .lock()
            .map_err(poisoned)?
            .clone()
            .ok_or_else(|| Error::Transport("registry base URL not set".into()))
    }

    /// `GET /v2/`: picks https or (when allowed) http, and authenticates if challenged.
    pub fn ping(&self) -> Result<(), Error> {
        let mut https_err = None;
        for scheme in ["https", "http"] {
            if scheme == "http" && !self.allow_http {
                break;
            }
            let base = format!("{scheme}://{}", self.host);
            // When http may follow, a failed TLS handshake is an answer, not a transient error.
            let retries = if scheme == "https" && self.allow_http {
                0
            } else {
                self.retries
            };
            let resp = self.with_retries_n(&format!("{base}/v2/"), retries, || {
                self.count();
                Ok(self.http.get(format!("{base}/v2/")).send())
            });
            let resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    if scheme == "https" {
                        https_err = Some(e);
                        continue;
                    }
                    // Both failed: a certificate problem explains more than "refused" on http.
                    return Err(match https_err {
                        Some(h) if h.to_string().contains("certificate") => h,
                        _ => e,
                    });
                }
            };
            // A TLS server answering plain http says 400: the TLS error is the one to report.
            if scheme == "http" && resp.status() == StatusCode::BAD_REQUEST {
                if let Some(e) = https_err {
                    return Err(e);
                }
            }
            *self.base.lock().map_err(poisoned)? = Some(base);
            return match resp.status() {
                StatusCode::UNAUTHORIZED => {
                    let ch = challenge_of(&resp);
                    self.authenticate(ch)
                }
                s if s.is_success() => Ok(()),
                _ => Err(self.error_from(resp, "/v2/")),
            };
        }
        Err(https_err.unwrap_or_else(|| Error::Transport("no scheme to try".into())))
    }

    /// Verifies that the credentials are accepted: `GET /v2/` must succeed once authenticated.
    pub fn check(&self) -> Result<(), Error> {
        let what = format!("{}/v2/", self.registry);
        let resp = self.send(&what, &|h, base| Ok(h.get(format!("{base}/v2/"))))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.error_from(resp, &what))
        }
    }

    fn count(&self) {
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Retries transport errors and 5xx/429 answers with exponential backoff; an `Err` from `f`
    /// (a request that cannot even be built) is final.
    fn with_retries(
        &self,
        what: &str,
        f: impl FnMut() -> Result<reqwest::Result<Response>, Error>,
    ) -> Result<Response, Error> {
        self.with_retries_n(what, self.retries, f)
    }

    fn with_retries_n(
        &self,
        what: &str,
        retries: u32,
        mut f: impl FnMut() -> Result<reqwest::Result<Response>, Error>,
    ) -> Result<Response, Error> {
        let mut attempt = 0;
        loop {
            let r = f()?;
            let retryable = match &r {
                Ok(resp) => {
                    resp.status().is_server_error()
                        || resp.status() == StatusCode::TOO_MANY_REQUESTS
                }
                Err(e) => !e.is_builder() && !e.is_redirect(),
            };
            if !retryable || attempt >= retries {
                return r.map_err(|e| {
                    let msg = error_chain(&e);
                    let hint = if msg.contains("certificate") {
                        " (trust the registry's CA with --tls-ca or CAIRN_REGISTRY_CA, \
                         or allow it with --insecure-registry)"
                    } else {
                        ""
                    };
                    Error::Transport(format!("{what}: {msg}{hint}"))
                });
            }
            attempt += 1;
            std::thread::sleep(Duration::from_millis(250 << attempt.min(6)));
        }
    }

    /// Sends the request `make` builds (again on each retry), with authentication: a 401
    /// answer is met once by fetching a token for the challenge.
    pub fn send(
        &self,
        what: &str,
        make: &dyn Fn(&Http, &str) -> Result<RequestBuilder, Error>,
    ) -> Result<Response, Error> {
        let base = self.base()?;
        let mut reauthed = false;
        loop {
            let auth = self.auth_header.lock().map_err(poisoned)?.clone();
            let resp = self.with_retries(what, || {
                self.count();
                let rb = make(&self.http, &base)?;
                let rb = match &auth {
                    Some(a) => rb.header(AUTHORIZATION, a),
                    None => rb,
                };
                Ok(rb.send())
            });
            let resp = resp?;
            if resp.status() == StatusCode::UNAUTHORIZED && !reauthed {
                reauthed = true;
                let ch = challenge_of(&resp);
                self.authenticate(ch)?;
                continue;
            }
            return Ok(resp);
        }
    }

    fn authenticate(&self, ch: Option<Challenge>) -> Result<(), Error> {
        let Some(ch) = ch else {
            return Err(Error::Unauthorized {
                registry: self.registry.clone(),
                message: "the registry refused access without saying how to authenticate".into(),
            });
        };
        let header = match ch.scheme.as_str() {
            "basic" => match &self.credential {
                Some(Credential::UserPassword { username, password }) => {
                    let b = base64::engine::general_purpose::STANDARD
                        .encode(format!("{username}:{password}"));
                    if self.auth_header.lock().map_err(poisoned)?.as_deref()
                        == Some(&format!("Basic {b}"))
                    {
                        return Err(Error::Unauthorized {
                            registry: self.registry.clone(),
                            message: "invalid username or password".into(),
                        });
                    }
                    format!("Basic {b}")
                }
                _ => {
                    return Err(Error::Unauthorized {
                        registry: self.registry.clone(),
                        message: format!("authentication required (cairn login {})", self.registry),
                    })
                }
            },
            "bearer" => format!("Bearer {}", self.fetch_token(&ch)?),
            other => {
                return Err(Error::Unauthorized {
                    registry: self.registry.clone(),
                    message: format!("unsupported authentication scheme {other:?}"),
                })
            }
        };
        *self.auth_header.lock().map_err(poisoned)? = Some(header);
        Ok(())
    }

    fn fetch_token(&self, ch: &Challenge) -> Result<String, Error> {
        let realm = ch.params.get("realm").ok_or_else(|| Error::Unauthorized {
            registry: self.registry.clone(),
            message: "bearer challenge without realm".into(),
        })?;
        let mut url = Url::parse(realm).map_err(|e| Error::Unauthorized {
            registry: self.registry.clone(),
            message: format!("bad token realm {realm:?}: {e}"),
        })?;
        let mut scopes = self.scopes.clone();
        if let Some(s) = ch.params.get("scope") {
            for s in s.split(' ') {
                if !scopes.iter().any(|x| x == s) {
                    scopes.push(s.to_string());
                }
            }
        }
        let service = ch.params.get("service").cloned().unwrap_or_default();
        let resp = match &self.credential {
            Some(Credential::IdentityToken(t)) => {
                let mut form = vec![
                    ("grant_type", "refresh_token".to_string()),
                    ("refresh_token", t.clone()),
                    ("service", service.clone()),
                    ("client_id", "cairn".to_string()),
                ];
                if !scopes.is_empty() {
                    form.push(("scope", scopes.join(" ")));
                }
                self.with_retries(realm, || {
                    self.count();
                    Ok(self.http.post(url.clone()).form(&form).send())
                })?
            }
            cred => {
                {
                    let mut q = url.query_pairs_mut();
                    if !service.is_empty() {
                        q.append_pair("service", &service);
                    }
                    for s in &scopes {
                        q.append_pair("scope", s);
                    }
                    if let Some(Credential::UserPassword { username, .. }) = cred {
                        q.append_pair("account", username);
                    }
                }
                self.with_retries(realm, || {
                    self.count();
                    let rb = self.http.get(url.clone());
                    let rb = match cred {
                        Some(Credential::UserPassword { username, password }) => {
                            rb.basic_auth(username, Some(password))
                        }
                        _ => rb,
                    };
                    Ok(rb.send())
                })?
            }
        };
        if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
            return Err(Error::Unauthorized {
                registry: self.registry.clone(),
                message: if self.credential.is_some() {
                    "invalid username or password".into()
                } else {
                    format!("authentication required (cairn login {})", self.registry)
                },
            });
        }
        if !resp.status().is_success() {
            return Err(self.error_from(resp, "token"));
        }
        let v: serde_json::Value = resp
            .json()
            .map_err(|e| Error::Transport(format!("token response from {realm}: {e}")))?;
        v["token"]
            .as_str()
            .or(v["access_token"].as_str())
            .map(str::to_string)
            .ok_or_else(|| Error::Unauthorized {
                registry: self.registry.clone(),
                message: format!("token response from {realm} has no token"),
            })
    }

    /// Turns a failed answer into an error whose message says what the registry said.
    pub fn error_from(&self, resp: Response, what: &str) -> Error {
        let status = resp.status();
        let mut body = String::new();
        let _ = resp.take(64 << 10).read_to_string(&mut body);
        let message = registry_message(&body).unwrap_or_else(|| {
            let b = body.trim();
            if b.is_empty() {
                status.canonical_reason().unwrap_or("").to_string()
            } else {
                b.chars().take(300).collect()
            }
        });
        match status {
            StatusCode::NOT_FOUND => Error::NotFound {
                what: what.to_string(),
                message,
            },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::Unauthorized {
                registry: self.registry.clone(),
                message: format!("{what}: {message}"),
            },
            _ => Error::Registry {
                registry: self.registry.clone(),
                status: status.as_u16(),
                what: what.to_string(),
                message,
            },
        }
    }

    /// Fetches a manifest (or index): its bytes and the media type the registry declared.
    pub fn get_manifest(&self, repo: &str, reference: &str) -> Result<(Vec<u8>, String), Error> {
        let what = format!("{}/{repo}:{reference}", self.registry);
        let path = format!("/v2/{repo}/manifests/{reference}");
        let resp = self.send(&what, &|h, base| {
            Ok(h.get(format!("{base}{path}"))
                .header(ACCEPT, MANIFEST_ACCEPT))
        })?;
        if !resp.status().is_success() {
            return Err(self.error_from(resp, &what));
        }
        let ct = content_type(resp.headers());
        let mut body = Vec::new();
        resp.take(MAX_MANIFEST + 1)
            .read_to_end(&mut body)
            .map_err(|e| Error::Transport(format!("{what}: {e}")))?;
        if body.len() as u64 > MAX_MANIFEST {
            return Err(Error::Invalid(format!(
                "{what}: manifest larger than 8 MiB"
            )));
        }
        Ok((body, ct))
    }

    /// Starts downloading a blob from byte `offset` (a `Range` request when not 0: the answer
    /// is 206 if the registry honours it, else 200 with the whole blob); the caller streams and
    /// verifies the body.
    pub fn get_blob(&self, repo: &str, digest: &str, offset: u64) -> Result<Response, Error> {
        let what = format!("blob {digest}");
        let path = format!("/v2/{repo}/blobs/{digest}");
        let resp = self.send(&what, &|h, base| {
            let rb = h.get(format!("{base}{path}"));
            Ok(if offset > 0 {
                rb.header(reqwest::header::RANGE, format!("bytes={offset}-"))
            } else {
                rb
            })
        })?;
        if !resp.status().is_success() {
            return Err(self.error_from(resp, &what));
        }
        Ok(resp)
    }

    /// Whether the repository already has the blob.
    pub fn has_blob(&self, repo: &str, digest: &str) -> Result<bool, Error> {
        let what = format!("blob {digest}");
        let path = format!("/v2/{repo}/blobs/{digest}");
        let resp = self.send(&what, &|h, base| Ok(h.head(format!("{base}{path}"))))?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.error_from(resp, &what)),
        }
    }

    /// Asks the registry to link `digest` from repository `from`; it may open an upload instead.
    pub fn mount(&self, repo: &str, digest: &str, from: &str) -> Result<Mount, Error> {
        let what = format!("mount {digest} from {from}");
        let path = format!("/v2/{repo}/blobs/uploads/");
        let resp = self.send(&what, &|h, base| {
            Ok(h.post(format!("{base}{path}"))
                .query(&[("mount", digest), ("from", from)])
                .header(reqwest::header::CONTENT_LENGTH, "0"))
        })?;
        match resp.status() {
            StatusCode::CREATED => Ok(Mount::Mounted),
            StatusCode::ACCEPTED => {
                self.note_min_chunk(&resp);
                Ok(Mount::Upload(self.location(&resp, &what)?))
            }
            _ => Err(self.error_from(resp, &what)),
        }
    }

    /// Opens an upload session; returns its absolute URL.
    pub fn start_upload(&self, repo: &str) -> Result<String, Error> {
        let what = format!("upload to {}/{repo}", self.registry);
        let path = format!("/v2/{repo}/blobs/uploads/");
        let resp = self.send(&what, &|h, base| {
            Ok(h.post(format!("{base}{path}"))
                .header(reqwest::header::CONTENT_LENGTH, "0"))
        })?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.error_from(resp, &what));
        }
        self.note_min_chunk(&resp);
        self.location(&resp, &what)
    }

    fn note_min_chunk(&self, resp: &Response) {
        let min = resp
            .headers()
            .get("OCI-Chunk-Min-Length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(m) = min {
            self.min_chunk
                .fetch_max(m, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn location(&self, resp: &Response, what: &str) -> Result<String, Error> {
        let loc = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Invalid(format!("{what}: the registry sent no Location")))?;
        let base = Url::parse(&format!("{}/", self.base()?))
            .map_err(|e| Error::Invalid(format!("{what}: {e}")))?;
        base.join(loc)
            .map(|u| u.to_string())
            .map_err(|e| Error::Invalid(format!("{what}: bad Location {loc:?}: {e}")))
    }

    /// Uploads the file's bytes in one PUT that also closes the session.
    pub fn put_monolithic(
        &self,
        location: &str,
        digest: &str,
        path: &std::path::Path,
        size: u64,
    ) -> Result<(), Error> {
        let what = format!("upload of {digest}");
        let mut url = Url::parse(location).map_err(|e| Error::Invalid(format!("{what}: {e}")))?;
        url.query_pairs_mut().append_pair("digest", digest);
        let resp = self.send(&what, &|h, _| {
            let f = std::fs::File::open(path).map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?;
            Ok(h.put(url.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(reqwest::blocking::Body::sized(
                    self.counting(f, digest, 0, size),
                    size,
                )))
        })?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.error_from(resp, &what));
        }
        Ok(())
    }

    /// Uploads the file in PATCH requests of `chunk` bytes, then closes the session with PUT.
    pub fn put_chunked(
        &self,
        location: &str,
        digest: &str,
        path: &std::path::Path,
        size: u64,
        chunk: u64,
    ) -> Result<(), Error> {
        use std::io::{Seek, SeekFrom};
        let what = format!("chunked upload of {digest}");
        let chunk = chunk
            .max(self.min_chunk.load(std::sync::atomic::Ordering::Relaxed))
            .max(1);
        let mut location = location.to_string();
        let mut offset = 0u64;
        while offset < size {
            let len = chunk.min(size - offset);
            let loc = location.clone();
            let resp = self.send(&what, &|h, _| {
                let mut f = std::fs::File::open(path).map_err(|source| Error::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                f.seek(SeekFrom::Start(offset))
                    .map_err(|source| Error::Io {
                        path: path.to_path_buf(),
                        source,
                    })?;
                Ok(h.patch(loc.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header("Content-Range", format!("{}-{}", offset, offset + len - 1))
                    .body(reqwest::blocking::Body::sized(
                        self.counting(f.take(len), digest, offset, size),
                        len,
                    )))
            })?;
            if resp.status() != StatusCode::ACCEPTED {
                return Err(self.error_from(resp, &what));
            }
            location = self.location(&resp, &what)?;
            offset += len;
        }
        let mut url = Url::parse(&location).map_err(|e| Error::Invalid(format!("{what}: {e}")))?;
        url.query_pairs_mut().append_pair("digest", digest);
        let resp = self.send(&what, &|h, _| {
            Ok(h.put(url.clone())
                .header(reqwest::header::CONTENT_LENGTH, "0"))
        })?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.error_from(resp, &what));
        }
        Ok(())
    }

    /// PUTs the exact manifest bytes; returns the digest the registry reports, if any.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Option<String>, Error> {
        let what = format!("manifest {}/{repo}:{reference}", self.registry);
        let path = format!("/v2/{repo}/manifests/{reference}");
        let body = bytes.to_vec();
        let resp = self.send(&what, &|h, base| {
            Ok(h.put(format!("{base}{path}"))
                .header(
                    CONTENT_TYPE,
                    HeaderValue::from_str(media_type)
                        .map_err(|_| Error::Invalid(format!("bad media type {media_type:?}")))?,
                )
                .body(body.clone()))
        })?;
        if !resp.status().is_success() {
            return Err(self.error_from(resp, &what));
        }
        Ok(resp
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string))
    }
}

/// An upload body that reports how far it got.
struct Counting<R> {
    inner: R,
    digest: String,
    sent: u64,
    total: u64,
    last_report: u64,
    progress: crate::ProgressFn,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sent += n as u64;
        // A sized body is read up to its length, not always to EOF: report the end too.
        let end = n == 0 || self.sent >= self.total;
        if n > 0 && (self.sent - self.last_report >= (self.total / 50).max(1 << 20) || end) {
            self.last_report = self.sent;
            (self.progress)(&crate::Event::Progress {
                digest: self.digest.clone(),
                current: self.sent.min(self.total),
                total: self.total,
            });
        }
        Ok(n)
    }
}

impl Client {
    /// Wraps an upload body so that it reports progress (if anyone listens).
    fn counting<R: Read + Send + 'static>(
        &self,
        inner: R,
        digest: &str,
        offset: u64,
        total: u64,
    ) -> Box<dyn Read + Send> {
        match &self.progress {
            Some(p) => Box::new(Counting {
                inner,
                digest: digest.to_string(),
                sent: offset,
                total,
                last_report: offset,
                progress: p.clone(),
            }),
            None => Box::new(inner),
        }
    }
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> Error {
    Error::Transport("a registry worker thread panicked".into())
}

fn challenge_of(resp: &Response) -> Option<Challenge> {
    resp.headers()
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(parse_challenge)
        // Prefer bearer: it works for anonymous pulls too.
        .max_by_key(|c| c.scheme == "bearer")
}

fn content_type(h: &HeaderMap) -> String {
    h.get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or(s).trim().to_string())
        .unwrap_or_default()
}

/// The messages of a distribution-spec error body `{"errors":[{"code","message"}]}`.
fn registry_message(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let errs = v["errors"].as_array()?;
    let msgs: Vec<String> = errs
        .iter()
        .map(|e| {
            let code = e["code"].as_str().unwrap_or("");
            let msg = e["message"].as_str().unwrap_or("");
            match (code.is_empty(), msg.is_empty()) {
                (false, false) => format!("{code}: {msg}"),
                (false, true) => code.to_string(),
                _ => msg.to_string(),
            }
        })
        .collect();
    (!msgs.is_empty()).then(|| msgs.join("; "))
}

/// The whole `source()` chain of an error on one line (reqwest's top message is vague).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    // reqwest's top line repeats the URL that our messages already name.
    if s.starts_with("error sending request") {
        if let Some(c) = cur {
            s = c.to_string();
            cur = c.source();
        }
    }
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(registry: &str, insecure: &[&str]) -> Client {
        let opts = RegistryOptions {
            insecure_registries: insecure.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        Client::new(registry, Vec::new(), None, &opts).unwrap()
    }

    #[test]
    fn plain_http_only_for_loopback_or_when_asked() {
        assert!(client("127.0.0.1:5000", &[]).allow_http);
        assert!(client("localhost:5000", &[]).allow_http);
        assert!(client("[::1]:5000", &[]).allow_http);
        assert!(!client("registry.example:5000", &[]).allow_http);
        assert!(!client("docker.io", &[]).allow_http);
        assert!(client("registry.example:5000", &["registry.example:5000"]).allow_http);
        assert!(client("registry.example:5000", &["registry.example"]).allow_http);
        assert!(client("registry.example:5000", &["*"]).allow_http);
        assert!(!client("registry.example:5000", &["other.example"]).allow_http);
    }

    #[test]
    fn error_bodies() {
        let body =
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(
            registry_message(body).unwrap(),
            "MANIFEST_UNKNOWN: manifest unknown"
        );
        assert_eq!(registry_message("<html>"), None);
    }
}
