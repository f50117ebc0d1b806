//! Exporters: where a built image goes besides the store (`-o type=…,dest=…`).
//!
//! - `local`: the image's file system, unpacked into a directory;
//! - `tar`: the same as one (deterministic) tar file;
//! - `oci`: an OCI image layout in a tar (`oci-layout`, `index.json`, `blobs/sha256/…`);
//! - `docker`: a docker-archive (`docker load`), which is also an OCI layout, as docker ≥ 25
//!   writes it.
//!
//! Every file is written to a temp file next to its destination and renamed into place.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use cairn_layer::{Compression, DiffSource, LayerDescriptor, UnpackMode, WriteOptions};
use cairn_store::Store;
use serde_json::json;

use crate::error::{io_err, Error, Result};
use crate::progress::Reporter;
use crate::solve::BuildOutput;

/// OCI media type of an image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI media type of an image config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// An `-o` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Unpack the file system into a directory.
    Local(PathBuf),
    /// The file system as a tar file (`-` = stdout).
    Tar(PathBuf),
    /// An OCI layout tar.
    Oci(PathBuf),
    /// A docker-archive tar.
    Docker(PathBuf),
}

impl Output {
    /// Parses `type=local,dest=DIR` (docker's `-o` syntax; a bare path means `local`).
    pub fn parse(spec: &str) -> std::result::Result<Output, String> {
        if !spec.contains('=') {
            return Ok(Output::Local(PathBuf::from(spec)));
        }
        let mut kind = None;
        let mut dest = None;
        for part in spec.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("invalid output option {part:?} (want key=value)"))?;
            match k.trim() {
                "type" => kind = Some(v.trim().to_string()),
                "dest" => dest = Some(PathBuf::from(v.trim())),
                other => return Err(format!("unknown output option {other:?}")),
            }
        }
        let kind = kind.unwrap_or_else(|| "local".into());
        let dest = dest.ok_or_else(|| format!("output type {kind} needs dest=PATH"))?;
        match kind.as_str() {
            "local" => Ok(Output::Local(dest)),
            "tar" => Ok(Output::Tar(dest)),
            "oci" => Ok(Output::Oci(dest)),
            "docker" => Ok(Output::Docker(dest)),
            "image" | "registry" => Err(format!(
                "output type {kind} is not supported yet (images go to the store with -t)"
            )),
            other => Err(format!(
                "unknown output type {other:?} (local, tar, oci, docker)"
            )),
        }
    }
}

/// Stores the image (when `to_store`) under `tags`, then writes every `-o` output, reporting each
/// as BuildKit does (`exporting to image`, `writing image sha256:… done`, `naming to … done`).
/// Returns the stored image's record.
pub fn finish(
    store: &Store,
    out: &BuildOutput,
    tags: &[String],
    outputs: &[Output],
    to_store: bool,
    reporter: &Reporter<'_>,
) -> Result<Option<cairn_store::ImageRecord>> {
    let mut record = None;
    if to_store {
        let v = reporter.start("exporting to image");
        let value: serde_json::Value =
            serde_json::from_slice(&out.config_json).map_err(|e| Error::Other(e.to_string()))?;
        reporter.status(v, "exporting layers done");
        match store.commit_image_json(&value, &out.layers, tags) {
            Ok(r) => {
                reporter.status(v, format!("writing image {} done", r.id));
                for t in tags {
                    reporter.status(v, format!("naming to {} done", normalize_reference(t)));
                }
                reporter.done(v);
                record = Some(r);
            }
            Err(e) => {
                reporter.failed(v, e.to_string());
                return Err(e.into());
            }
        }
    }
    for o in outputs {
        let (what, dest) = match o {
            Output::Local(d) => ("exporting to client directory", d),
            Output::Tar(d) => ("exporting to client tarball", d),
            Output::Oci(d) => ("exporting to oci image format", d),
            Output::Docker(d) => ("exporting to docker image format", d),
        };
        let v = reporter.start(what);
        match export(store, out, o, tags) {
            Ok(()) => {
                reporter.status(v, format!("sending tarball to {} done", dest.display()));
                reporter.done(v);
            }
            Err(e) => {
                reporter.failed(v, e.to_string());
                return Err(e);
            }
        }
    }
    Ok(record)
}

/// Writes `out` as `output` asks. `tags` name the image inside `oci` and `docker` archives.
pub fn export(store: &Store, out: &BuildOutput, output: &Output, tags: &[String]) -> Result<()> {
    match output {
        Output::Local(dir) => export_local(store, &out.layers, dir),
        Output::Tar(file) => export_rootfs_tar(store, &out.layers, file),
        Output::Oci(file) => export_archive(store, out, tags, file, false),
        Output::Docker(file) => export_archive(store, out, tags, file, true),
    }
}

/// Unpacks `layers` (bottom first) into `dir`, created if missing.
pub fn export_local(store: &Store, layers: &[LayerDescriptor], dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    for l in layers {
        let path = store.blob_path(&l.digest);
        let f = fs::File::open(&path).map_err(io_err(&path))?;
        cairn_layer::unpack_layer(io::BufReader::new(f), dir, UnpackMode::Apply)
            .map_err(|e| Error::Other(format!("unpacking layer {}: {e}", l.digest)))?;
    }
    Ok(())
}

/// Writes the image's file system as one tar.
pub fn export_rootfs_tar(store: &Store, layers: &[LayerDescriptor], file: &Path) -> Result<()> {
    let tmp_root = store.root().join("tmp");
    fs::create_dir_all(&tmp_root).map_err(io_err(&tmp_root))?;
    let dir = tempfile::Builder::new()
        .prefix("export-")
        .tempdir_in(&tmp_root)
        .map_err(io_err(&tmp_root))?;
    let rootfs = dir.path().join("rootfs");
    export_local(store, layers, &rootfs)?;
    let write = |w: &mut dyn Write| -> Result<()> {
        cairn_layer::write_layer(
            DiffSource::Tree(&rootfs),
            Compression::None,
            &WriteOptions { clamp_mtime: None },
            w,
        )
        .map_err(|e| Error::Other(format!("writing {}: {e}", file.display())))?;
        Ok(())
    };
    if file.as_os_str() == "-" {
        let stdout = io::stdout();
        let mut lock = stdout.lock();
        write(&mut lock)?;
        return lock.flush().map_err(io_err(file));
    }
    write_atomic(file, |f| write(f))
}

/// The OCI manifest of an image whose config is `config_json`.
pub fn manifest_json(config_json: &[u8], layers: &[LayerDescriptor]) -> Vec<u8> {
    let config_digest = cairn_layer::hash::sha256_digest(config_json);
    let m = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": config_digest,
            "size": config_json.len(),
        },
        "layers": layers.iter().map(|l| json!({
            "mediaType": l.media_type,
            "digest": l.digest,
            "size": l.size,
        })).collect::<Vec<_>>(),
    });
    // Canonical, as the store writes manifests: the same image has the same manifest digest.
    cairn_store::canonical_json(&m)
}

/// `busybox` → `docker.io/library/busybox:latest`, as docker names images.
pub fn normalize_reference(reference: &str) -> String {
    let (name, suffix) = match reference.find('@') {
        Some(i) => (&reference[..i], &reference[i..]),
        None => {
            let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
            match reference[last_slash..].rfind(':') {
                Some(i) => (&reference[..last_slash + i], &reference[last_slash + i..]),
                None => (reference, ":latest"),
            }
        }
    };
    let first = name.split('/').next().unwrap_or("");
    let has_domain =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let full = if has_domain {
        name.to_string()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    };
    format!("{full}{suffix}")
}

/// docker's short form: `docker.io/library/x:y` → `x:y`, `docker.io/u/x:y` → `u/x:y`.
pub fn familiar_reference(reference: &str) -> String {
    let full = normalize_reference(reference);
    full.strip_prefix("docker.io/library/")
        .or_else(|| full.strip_prefix("docker.io/"))
        .unwrap_or(&full)
        .to_string()
}

fn export_archive(
    store: &Store,
    out: &BuildOutput,
    tags: &[String],
    file: &Path,
    docker: bool,
) -> Result<()> {
    let manifest = manifest_json(&out.config_json, &out.layers);
    let manifest_digest = cairn_layer::hash::sha256_digest(&manifest);
    let mut index_entries = Vec::new();
    let names: Vec<String> = tags.iter().map(|t| normalize_reference(t)).collect();
    if names.is_empty() {
        index_entries.push(json!({
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": manifest_digest,
            "size": manifest.len(),
        }));
    }
    for name in &names {
        let tag = name.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
        index_entries.push(json!({
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": tag,
            },
        }));
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": index_entries,
    }))
    .unwrap_or_default();
    let hex = |d: &str| d.trim_start_matches("sha256:").to_string();
    let docker_manifest = serde_json::to_vec(&json!([{
        "Config": format!("blobs/sha256/{}", hex(&out.image_id)),
        "RepoTags": tags.iter().map(|t| familiar_reference(t)).collect::<Vec<_>>(),
        "Layers": out.layers.iter().map(|l| format!("blobs/sha256/{}", hex(&l.digest))).collect::<Vec<_>>(),
    }]))
    .unwrap_or_default();

    write_atomic(file, |w| {
        let mut tar = tar::Builder::new(w);
        let mut add_bytes = |name: &str, bytes: &[u8]| -> io::Result<()> {
            let mut h = tar_header(bytes.len() as u64);
            tar.append_data(&mut h, name, bytes)
        };
        let e = |e: io::Error| Error::Other(format!("writing {}: {e}", file.display()));
        add_bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(e)?;
        add_bytes("index.json", &index).map_err(e)?;
        if docker {
            add_bytes("manifest.json", &docker_manifest).map_err(e)?;
        }
        add_bytes(
            &format!("blobs/sha256/{}", hex(&manifest_digest)),
            &manifest,
        )
        .map_err(e)?;
        add_bytes(
            &format!("blobs/sha256/{}", hex(&out.image_id)),
            &out.config_json,
        )
        .map_err(e)?;
        let mut seen = std::collections::HashSet::new();
        for l in &out.layers {
            if !seen.insert(l.digest.clone()) {
                continue;
            }
            let path = store.blob_path(&l.digest);
            let f = fs::File::open(&path).map_err(io_err(&path))?;
            let len = f.metadata().map_err(io_err(&path))?.len();
            let mut h = tar_header(len);
            tar.append_data(&mut h, format!("blobs/sha256/{}", hex(&l.digest)), f)
                .map_err(e)?;
        }
        tar.into_inner().map_err(e)?;
        Ok(())
    })
}

/// A fixed header: the archive's bytes depend only on its content.
fn tar_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

/// Writes `path` through `fill` into a temp file in the same directory, fsyncs it and renames it
/// into place: a crash leaves the old file or none, never half of one.
pub fn write_atomic(path: &Path, fill: impl FnOnce(&mut fs::File) -> Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".cairn-export-")
        .tempfile_in(&dir)
        .map_err(io_err(&dir))?;
    fill(tmp.as_file_mut())?;
    tmp.as_file().sync_all().map_err(io_err(tmp.path()))?;
    tmp.persist(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    if let Ok(d) = fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_outputs() {
        assert_eq!(
            Output::parse("type=local,dest=out").unwrap(),
            Output::Local("out".into())
        );
        assert_eq!(
            Output::parse("type=oci,dest=/tmp/x.tar").unwrap(),
            Output::Oci("/tmp/x.tar".into())
        );
        assert_eq!(Output::parse("dir").unwrap(), Output::Local("dir".into()));
        assert!(Output::parse("type=tar").is_err());
        assert!(Output::parse("type=weird,dest=x").is_err());
    }

    #[test]
    fn names_like_docker() {
        assert_eq!(
            normalize_reference("busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalize_reference("go-app:multi"),
            "docker.io/library/go-app:multi"
        );
        assert_eq!(normalize_reference("me/app"), "docker.io/me/app:latest");
        assert_eq!(
            normalize_reference("localhost:5000/app:1"),
            "localhost:5000/app:1"
        );
        assert_eq!(familiar_reference("go-app:multi"), "go-app:multi");
        assert_eq!(familiar_reference("me/app"), "me/app:latest");
    }

    #[test]
    fn manifest_names_config_and_layers() {
        let layers = vec![LayerDescriptor {
            digest: "sha256:ab".into(),
            diff_id: "sha256:cd".into(),
            size: 12,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        }];
        let m: serde_json::Value = serde_json::from_slice(&manifest_json(b"{}", &layers)).unwrap();
        assert_eq!(
            m["config"]["digest"],
            cairn_layer::hash::sha256_digest(b"{}")
        );
        assert_eq!(m["config"]["size"], 2);
        assert_eq!(m["layers"][0]["digest"], "sha256:ab");
    }

    #[test]
    fn atomic_write_replaces_whole_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_atomic(&p, |f| f.write_all(b"one").map_err(io_err("f"))).unwrap();
        write_atomic(&p, |f| f.write_all(b"two").map_err(io_err("f"))).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
