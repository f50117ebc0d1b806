//! `push`: blobs the registry lacks (HEAD, then mount from a sibling repository, then upload),
//! then the exact manifest bytes of the store, so the registry's digest is cairn's.

use cairn_store::Store;

use crate::client::{Client, Mount};
use crate::manifest::{self, Descriptor, Fetched, ImageManifest};
use crate::reference::Reference;
use crate::{sha256, sources, Error, Event, PushOptions, Result};

/// Pushes the stored image `image_ref` (a name or an ID prefix) to `target_ref` and returns the
/// manifest digest, which is the digest of the manifest as the store has it.
pub fn push(
    store: &Store,
    image_ref: &str,
    target_ref: &str,
    opts: &PushOptions,
) -> Result<String> {
    crate::off_runtime(|| push_here(store, image_ref, target_ref, opts))
}

fn push_here(
    store: &Store,
    image_ref: &str,
    target_ref: &str,
    opts: &PushOptions,
) -> Result<String> {
    let record = store.resolve(image_ref)?.ok_or_else(|| Error::NotFound {
        what: format!("image {image_ref}"),
        message: "no such image in the store".into(),
    })?;
    let target = Reference::parse(target_ref)?;
    let mpath = store.blob_path(&record.manifest_digest);
    let mbytes = std::fs::read(&mpath).map_err(|source| Error::Io {
        path: mpath.clone(),
        source,
    })?;
    let digest = sha256(&mbytes);
    if digest != record.manifest_digest {
        return Err(Error::DigestMismatch {
            what: format!("stored manifest of {image_ref}"),
            expected: record.manifest_digest.clone(),
            actual: digest,
        });
    }
    if let Some(d) = &target.digest {
        if *d != digest {
            return Err(Error::DigestMismatch {
                what: format!("push to {target}"),
                expected: d.clone(),
                actual: digest,
            });
        }
    }
    let (fetched, media_type) = manifest::parse(&mbytes, "")?;
    let Fetched::Image(image) = fetched else {
        return Err(Error::Unsupported("pushing an index".into()));
    };
    let pushed = push_manifest(store, &target, &mbytes, &media_type, &image, opts)?;
    // docker records where an image was pushed in its RepoDigests too.
    store.add_repo_digest(&record.id, &format!("{}@{pushed}", target.name()))?;
    Ok(pushed)
}

/// Uploads the blobs `image` names (all in the store) and then `mbytes` as the manifest of
/// `target`; returns the manifest digest.
pub(crate) fn push_manifest(
    store: &Store,
    target: &Reference,
    mbytes: &[u8],
    media_type: &str,
    image: &ImageManifest,
    opts: &PushOptions,
) -> Result<String> {
    let ro = &opts.registry;
    let digest = sha256(mbytes);
    let mut blobs: Vec<Descriptor> = vec![image.config.clone()];
    for l in &image.layers {
        if !blobs.iter().any(|b| b.digest == l.digest) {
            blobs.push(l.clone());
        }
    }
    // Sibling repositories on the same registry that already hold some of the blobs.
    let mut from_repos: Vec<String> = Vec::new();
    for b in &blobs {
        for (reg, repo) in sources::lookup(store, &b.digest) {
            if reg == target.registry && repo != target.repository && !from_repos.contains(&repo) {
                from_repos.push(repo);
            }
        }
    }
    from_repos.truncate(4);
    let mut scopes = vec![format!("repository:{}:pull,push", target.repository)];
    scopes.extend(from_repos.iter().map(|r| format!("repository:{r}:pull")));
    let client = Client::new(
        &target.registry,
        scopes,
        ro.credential_for(&target.registry)?,
        ro,
    )?;
    client.ping()?;

    crate::for_each_parallel(blobs, ro.max_concurrent, |desc| {
        push_blob(store, &client, target, &desc, opts)
    })?;

    let tag = target.tag.clone().unwrap_or_else(|| digest.clone());
    let reported = client.put_manifest(&target.repository, &tag, mbytes, media_type)?;
    if let Some(r) = reported {
        if r != digest {
            return Err(Error::DigestMismatch {
                what: format!("manifest pushed to {target}"),
                expected: digest,
                actual: r,
            });
        }
    }
    ro.emit(Event::ManifestPushed {
        tag,
        digest: digest.clone(),
        size: mbytes.len() as u64,
    });
    Ok(digest)
}

fn push_blob(
    store: &Store,
    client: &Client,
    target: &Reference,
    desc: &Descriptor,
    opts: &PushOptions,
) -> Result<()> {
    let ro = &opts.registry;
    let repo = target.repository.as_str();
    let done = |ev: Event| {
        sources::record(store, &desc.digest, &target.registry, repo);
        ro.emit(ev);
    };
    if client.has_blob(repo, &desc.digest)? {
        done(Event::AlreadyExists {
            digest: desc.digest.clone(),
        });
        return Ok(());
    }
    let path = store.blob_path(&desc.digest);
    let size = std::fs::metadata(&path)
        .map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?
        .len();
    if size != desc.size {
        return Err(Error::Invalid(format!(
            "blob {} is {size} bytes in the store but {} in the manifest",
            desc.digest, desc.size
        )));
    }
    let mut location = None;
    for (reg, from) in sources::lookup(store, &desc.digest) {
        if reg != target.registry || from == target.repository {
            continue;
        }
        // A refused mount (no access to `from`, blob gone) is not an error: upload instead.
        match client.mount(repo, &desc.digest, &from) {
            Ok(Mount::Mounted) => {
                done(Event::Mounted {
                    digest: desc.digest.clone(),
                    from,
                });
                return Ok(());
            }
            Ok(Mount::Upload(loc)) => {
                location = Some(loc);
                break;
            }
            Err(_) => continue,
        }
    }
    let mut attempt = 0;
    loop {
        let loc = match location.take() {
            Some(l) => l,
            None => client.start_upload(repo)?,
        };
        ro.emit(Event::Progress {
            digest: desc.digest.clone(),
            current: 0,
            total: size,
        });
        match upload(client, repo, &loc, desc, &path, size, opts.chunk_size) {
            Ok(()) => break,
            // A dropped connection or a lost session (404): start a new session from the top.
            Err(e @ (Error::Transport(_) | Error::NotFound { .. })) if attempt < ro.retries => {
                attempt += 1;
                ro.emit(Event::Retrying {
                    digest: desc.digest.clone(),
                    attempt,
                    error: e.to_string(),
                });
                std::thread::sleep(std::time::Duration::from_millis(250 << attempt.min(6)));
            }
            Err(e) => return Err(e),
        }
    }
    done(Event::Pushed {
        digest: desc.digest.clone(),
    });
    Ok(())
}

/// One upload of `path` through the session at `location`: monolithic unless `chunk` is set;
/// a registry that refuses a monolithic PUT gets chunks in a new session.
fn upload(
    client: &Client,
    repo: &str,
    location: &str,
    desc: &Descriptor,
    path: &std::path::Path,
    size: u64,
    chunk: Option<u64>,
) -> Result<()> {
    match chunk {
        Some(chunk) => client.put_chunked(location, &desc.digest, path, size, chunk),
        None => match client.put_monolithic(location, &desc.digest, path, size) {
            Err(Error::Registry { status, .. }) if (401..500).contains(&status) => {
                let loc = client.start_upload(repo)?;
                client.put_chunked(&loc, &desc.digest, path, size, 16 << 20)
            }
            other => other,
        },
    }
}
