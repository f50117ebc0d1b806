//! `pull`: manifest (through an index if need be) → config → layers in parallel → store.

use std::io::Read;

use sha2::Digest as _;

use cairn_store::{ImageRecord, Store};

use crate::client::{error_chain, Client};
use crate::manifest::{self, Descriptor, Fetched, ImageManifest, Platform};
use crate::reference::{validate_digest, Reference};
use crate::{sha256, sources, Error, Event, PullOptions, RegistryOptions, Result};

/// Pulls `reference` into `store` and tags it with its normalised name (no tag for a pull by
/// digest). Blobs already in the store are not downloaded; each blob lands in the store as soon
/// as it is verified, so an interrupted pull resumes where it stopped.
pub fn pull(store: &Store, reference: &str, opts: &PullOptions) -> Result<ImageRecord> {
    crate::off_runtime(|| pull_here(store, reference, opts))
}

/// What `FROM` needs: the image from the store if it is there (and of the requested platform),
/// else pulled. A missing image is [`Error::NotFound`].
pub fn pull_if_missing(store: &Store, reference: &str, opts: &PullOptions) -> Result<ImageRecord> {
    let r = Reference::parse(reference)?;
    if let Some(rec) = store.resolve(&r.to_string())? {
        let platform_ok = opts.platform.as_ref().is_none_or(|want| {
            let have = Platform {
                os: rec.config.os().to_string(),
                architecture: rec.config.architecture().to_string(),
                variant: rec.config.variant().clone(),
            };
            want.matches(&have)
        });
        if platform_ok {
            return Ok(rec);
        }
    }
    pull(store, reference, opts)
}

fn pull_here(store: &Store, reference: &str, opts: &PullOptions) -> Result<ImageRecord> {
    let r = Reference::parse(reference)?;
    let ro = &opts.registry;
    let cred = ro.credential_for(&r.registry)?;
    let client = Client::new(
        &r.registry,
        vec![format!("repository:{}:pull", r.repository)],
        cred,
        ro,
    )?;
    let repo = r.repository.as_str();
    let (top_bytes, ct) = client.get_manifest(repo, r.manifest_ref())?;
    let top_digest = sha256(&top_bytes);
    if let Some(want) = &r.digest {
        if *want != top_digest {
            return Err(Error::DigestMismatch {
                what: format!("manifest {r}"),
                expected: want.clone(),
                actual: top_digest,
            });
        }
    }
    ro.emit(Event::PullingFrom {
        tag: r.tag.clone().or(r.digest.clone()).unwrap_or_default(),
        repository: r.repository.clone(),
    });
    let (fetched, _) = manifest::parse(&top_bytes, &ct)?;
    let is_index = matches!(fetched, Fetched::Index(_));
    let (manifest_bytes, image) = match fetched {
        Fetched::Image(m) => (top_bytes.clone(), m),
        Fetched::Index(index) => {
            let want = opts.platform.clone().unwrap_or_else(Platform::host);
            let desc = manifest::select(&index, &want)?;
            validate_digest(&desc.digest).map_err(Error::Invalid)?;
            let (bytes, ct) = client.get_manifest(repo, &desc.digest)?;
            let got = sha256(&bytes);
            if got != desc.digest {
                return Err(Error::DigestMismatch {
                    what: format!("manifest for {want} in {r}"),
                    expected: desc.digest.clone(),
                    actual: got,
                });
            }
            match manifest::parse(&bytes, &ct)?.0 {
                Fetched::Image(m) => (bytes, m),
                Fetched::Index(_) => {
                    return Err(Error::Unsupported(format!("{r}: an index inside an index")))
                }
            }
        }
    };
    let mut downloaded = false;
    if let (Some(want), false) = (&opts.platform, is_index) {
        check_platform(store, &client, &r, &image, want, ro, &mut downloaded)?;
    }
    let record = fetch_image(
        store,
        &client,
        &r,
        &manifest_bytes,
        &image,
        ro,
        &mut downloaded,
    )?;
    // The digest the registry served (the index's when the tag named one): `name@digest`
    // must find this image later, as docker's RepoDigests do.
    store.add_repo_digest(&record.id, &format!("{}@{top_digest}", r.name()))?;
    let record = store.get(&record.id)?;
    ro.emit(Event::Digest {
        digest: top_digest.clone(),
    });
    ro.emit(Event::PullFinished { downloaded });
    Ok(record)
}

/// A single-platform image pulled with an explicit `--platform` must be that platform (as
/// docker checks): fetches the config early to look.
fn check_platform(
    store: &Store,
    client: &Client,
    r: &Reference,
    image: &ImageManifest,
    want: &Platform,
    ro: &RegistryOptions,
    downloaded: &mut bool,
) -> Result<()> {
    validate_digest(&image.config.digest).map_err(Error::Invalid)?;
    if !store.has_blob(&image.config.digest) {
        fetch_blob(store, client, &r.repository, &image.config, ro, false)?;
        *downloaded = true;
    }
    let config: serde_json::Value = serde_json::from_slice(&store.read_blob(&image.config.digest)?)
        .map_err(|e| Error::Invalid(format!("image config {}: {e}", image.config.digest)))?;
    let have = Platform {
        os: config["os"].as_str().unwrap_or_default().to_string(),
        architecture: config["architecture"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        variant: config["variant"].as_str().map(str::to_string),
    };
    if want.matches(&have) {
        Ok(())
    } else {
        Err(Error::NoPlatform {
            platform: want.to_string(),
            available: format!("{have} only: {r} is a single-platform image"),
        })
    }
}

fn fetch_image(
    store: &Store,
    client: &Client,
    r: &Reference,
    manifest_bytes: &[u8],
    image: &ImageManifest,
    ro: &RegistryOptions,
    downloaded: &mut bool,
) -> Result<ImageRecord> {
    let repo = r.repository.as_str();
    validate_digest(&image.config.digest).map_err(Error::Invalid)?;
    for l in &image.layers {
        validate_digest(&l.digest).map_err(Error::Invalid)?;
        manifest::check_layer_media_type(&l.media_type)?;
    }
    if !store.has_blob(&image.config.digest) {
        fetch_blob(store, client, repo, &image.config, ro, false)?;
        *downloaded = true;
    }
    let config_path = store.blob_path(&image.config.digest);
    let config_bytes = std::fs::read(&config_path).map_err(|source| Error::Io {
        path: config_path.clone(),
        source,
    })?;
    let config: serde_json::Value = serde_json::from_slice(&config_bytes)
        .map_err(|e| Error::Invalid(format!("image config {}: {e}", image.config.digest)))?;
    let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for d in &diff_ids {
        validate_digest(d).map_err(|e| Error::Invalid(format!("image config: diff ID {e}")))?;
    }
    if diff_ids.len() != image.layers.len() {
        return Err(Error::Invalid(format!(
            "{r}: the manifest has {} layers but the config lists {} diff IDs",
            image.layers.len(),
            diff_ids.len()
        )));
    }

    let missing: Vec<&Descriptor> = image
        .layers
        .iter()
        .filter(|l| {
            let have = store.has_blob(&l.digest);
            if have {
                ro.emit(Event::AlreadyExists {
                    digest: l.digest.clone(),
                });
            } else {
                ro.emit(Event::Waiting {
                    digest: l.digest.clone(),
                });
            }
            !have
        })
        .collect();
    // The same blob may appear twice in one image; fetch it once.
    let mut queue: Vec<&Descriptor> = Vec::new();
    for l in missing {
        if !queue.iter().any(|q| q.digest == l.digest) {
            queue.push(l);
        }
    }
    *downloaded |= !queue.is_empty();
    crate::for_each_parallel(queue, ro.max_concurrent, |desc| {
        fetch_blob(store, client, repo, desc, ro, true)
    })?;

    for l in &image.layers {
        sources::record(store, &l.digest, &r.registry, &r.repository);
    }
    sources::record(store, &image.config.digest, &r.registry, &r.repository);
    let tags: Vec<String> = match &r.tag {
        Some(t) => vec![format!("{}:{t}", r.name())],
        None => Vec::new(),
    };
    commit(store, manifest_bytes, &tags)
}

/// Records the image from the manifest exactly as the registry served it, so the local
/// manifest digest and image ID are the registry's (and docker's).
fn commit(store: &Store, manifest_bytes: &[u8], tags: &[String]) -> Result<ImageRecord> {
    Ok(store.commit_manifest(manifest_bytes, tags)?)
}

/// Downloads one blob into the store, verifying size and digest as it streams. A stream that
/// breaks is picked up where it stopped (HTTP Range) without the store noticing; a digest
/// mismatch is final and stores nothing.
pub(crate) fn fetch_blob(
    store: &Store,
    client: &Client,
    repo: &str,
    desc: &Descriptor,
    ro: &RegistryOptions,
    layer: bool,
) -> Result<()> {
    let resp = client.get_blob(repo, &desc.digest, 0)?;
    let mut reader = Verifying {
        inner: resp,
        hasher: sha2::Sha256::new(),
        expected: desc.digest.clone(),
        size: desc.size,
        read: 0,
        outcome: Outcome::Reading,
        client,
        repo,
        ro,
        layer,
        resumes: 0,
        last_report: 0,
    };
    match store.ingest(&mut reader, Some(&desc.digest)) {
        Ok(_) => {
            if layer {
                ro.emit(Event::PullComplete {
                    digest: desc.digest.clone(),
                });
            }
            Ok(())
        }
        Err(e) => Err(
            match std::mem::replace(&mut reader.outcome, Outcome::Reading) {
                Outcome::Mismatch(actual) => Error::DigestMismatch {
                    what: format!("blob {}", desc.digest),
                    expected: desc.digest.clone(),
                    actual,
                },
                Outcome::Network(msg) => Error::Transport(format!(
                    "blob {}: connection lost after {} of {} bytes: {msg}",
                    desc.digest, reader.read, desc.size
                )),
                Outcome::Reading => Error::Store(e),
            },
        ),
    }
}

enum Outcome {
    Reading,
    Network(String),
    Mismatch(String),
}

/// Hashes and counts what the store reads; at the end of the stream it turns a wrong size or
/// digest into a read error, so the store never commits bad content whatever it checks itself.
/// When the connection breaks it asks the registry for the rest (`Range: bytes=N-`), up to
/// `retries` times.
struct Verifying<'a> {
    inner: reqwest::blocking::Response,
    hasher: sha2::Sha256,
    expected: String,
    size: u64,
    read: u64,
    outcome: Outcome,
    client: &'a Client,
    repo: &'a str,
    ro: &'a RegistryOptions,
    /// Whether progress events are wanted (layers, not configs).
    layer: bool,
    resumes: u32,
    last_report: u64,
}

impl Verifying<'_> {
    /// Replaces the broken stream by one that starts at `self.read`; gives up (as an I/O error
    /// the store sees) after `retries` attempts.
    fn resume(&mut self, why: String) -> std::io::Result<()> {
        let mut why = why;
        loop {
            if self.resumes >= self.ro.retries {
                self.outcome = Outcome::Network(why.clone());
                return Err(std::io::Error::other(why));
            }
            self.resumes += 1;
            self.ro.emit(Event::Retrying {
                digest: self.expected.clone(),
                attempt: self.resumes,
                error: format!("{why}; resuming at byte {}", self.read),
            });
            std::thread::sleep(std::time::Duration::from_millis(250 << self.resumes.min(6)));
            let mut resp = match self.client.get_blob(self.repo, &self.expected, self.read) {
                Ok(r) => r,
                Err(e) => {
                    // The request has had its own retries: the registry is gone.
                    let again = e.to_string();
                    // Its message starts with "blob <digest>: ", which ours already says.
                    let again = again.split_once(": ").map_or(again.as_str(), |(_, m)| m);
                    let msg = format!("{why}; reconnecting failed: {again}");
                    self.outcome = Outcome::Network(msg.clone());
                    return Err(std::io::Error::other(msg));
                }
            };
            if resp.status() == reqwest::StatusCode::PARTIAL_CONTENT {
                let range = resp
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                if range.starts_with(&format!("bytes {}-", self.read)) {
                    self.inner = resp;
                    return Ok(());
                }
                why = format!("the registry resumed with range {range:?}");
                continue;
            }
            // No range support: the whole blob again; skip what was already read.
            match std::io::copy(&mut (&mut resp).take(self.read), &mut std::io::sink()) {
                Ok(n) if n == self.read => {
                    self.inner = resp;
                    return Ok(());
                }
                Ok(_) => why = "the stream ended early".into(),
                Err(e) => why = error_chain(&e),
            }
        }
    }
}

impl Read for Verifying<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = loop {
            match self.inner.read(buf) {
                Ok(0) if self.read < self.size => {
                    self.resume(format!(
                        "the stream ended after {} of {} bytes",
                        self.read, self.size
                    ))?;
                }
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => self.resume(error_chain(&e))?,
            }
        };
        if n == 0 {
            let actual = format!("sha256:{}", hex::encode(self.hasher.clone().finalize()));
            if actual != self.expected {
                self.outcome = Outcome::Mismatch(actual.clone());
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("digest mismatch: {actual}"),
                ));
            }
            return Ok(0);
        }
        self.read += n as u64;
        if self.read > self.size {
            self.outcome =
                Outcome::Mismatch(format!("more than the {} bytes announced", self.size));
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "blob larger than its descriptor",
            ));
        }
        self.hasher.update(&buf[..n]);
        // About 50 reports per blob are plenty for a progress bar.
        if self.layer
            && (self.read - self.last_report >= (self.size / 50).max(1 << 20)
                || self.read == self.size)
        {
            self.last_report = self.read;
            self.ro.emit(Event::Progress {
                digest: self.expected.clone(),
                current: self.read,
                total: self.size,
            });
        }
        Ok(n)
    }
}
