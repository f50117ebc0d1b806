//! Image archives: `save` (docker-archive, OCI layout as a directory or a tar) and `load`
//! (all of those, and the archives `docker save` writes, before and after docker 25).
//!
//! The docker-archive written is the docker 25+ shape: an OCI layout (`oci-layout`,
//! `index.json`, `blobs/sha256/…`) plus `manifest.json` and `repositories` for older loaders.
//! Blobs are written as stored (layers stay compressed; every docker loader decompresses
//! them), so saving is a copy and the image keeps its manifest digest.

use crate::blobs::check_digest;
use crate::images::ImageRecord;
use crate::layout::{INDEX_MEDIA_TYPE, REF_NAME};
use crate::reference::{self, Reference};
use crate::{canonical_json, io_err, Digest, Error, LayerDescriptor, Result, Store};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The archive formats of `save`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// What `docker save` writes (docker 25+): OCI layout + `manifest.json` + `repositories`.
    Docker,
    /// A plain OCI image layout.
    Oci,
}

/// One image to save and the names to give it (normalised references; may be empty).
#[derive(Debug, Clone)]
pub struct SaveItem {
    /// The image.
    pub image: ImageRecord,
    /// Names to record for it.
    pub names: Vec<String>,
}

/// What `load` committed.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The image ID.
    pub id: Digest,
    /// The names it was tagged with (normalised).
    pub names: Vec<String>,
}

const CONTAINERD_NAME: &str = "io.containerd.image.name";

fn blob_name(d: &str) -> String {
    format!("blobs/sha256/{}", d.strip_prefix("sha256:").unwrap_or(d))
}

/// Where the entries of an archive go: a tar stream or a directory.
trait Sink {
    fn dir(&mut self, path: &str) -> Result<()>;
    fn file(&mut self, path: &str, size: u64, data: &mut dyn Read) -> Result<()>;
}

struct TarSink<W: Write> {
    out: W,
}

impl<W: Write> TarSink<W> {
    fn header(&mut self, path: &str, kind: tar::EntryType, mode: u32, size: u64) -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_path(path)
            .map_err(|e| Error::Other(format!("{path}: {e}")))?;
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        self.out
            .write_all(h.as_bytes())
            .map_err(io_err("<archive>"))
    }
}

impl<W: Write> Sink for TarSink<W> {
    fn dir(&mut self, path: &str) -> Result<()> {
        self.header(&format!("{path}/"), tar::EntryType::Directory, 0o755, 0)
    }
    fn file(&mut self, path: &str, size: u64, data: &mut dyn Read) -> Result<()> {
        self.header(path, tar::EntryType::Regular, 0o644, size)?;
        let n = io::copy(&mut data.take(size), &mut self.out).map_err(io_err("<archive>"))?;
        if n != size {
            return Err(Error::Other(format!("{path}: short read while saving")));
        }
        let pad = (512 - (size % 512) as usize) % 512;
        self.out
            .write_all(&[0u8; 512][..pad])
            .map_err(io_err("<archive>"))
    }
}

struct DirSink {
    root: PathBuf,
}

impl Sink for DirSink {
    fn dir(&mut self, path: &str) -> Result<()> {
        let p = self.root.join(path);
        fs::create_dir_all(&p).map_err(io_err(p))
    }
    fn file(&mut self, path: &str, _size: u64, data: &mut dyn Read) -> Result<()> {
        let p = self.root.join(path);
        if path.starts_with("blobs/") && p.is_file() {
            return Ok(());
        }
        let mut buf = Vec::new();
        data.read_to_end(&mut buf).map_err(io_err(&p))?;
        crate::write_atomic(&p, &buf)
    }
}

impl Store {
    fn write_archive(
        &self,
        items: &[SaveItem],
        format: ArchiveFormat,
        sink: &mut dyn Sink,
    ) -> Result<()> {
        sink.dir("blobs")?;
        sink.dir("blobs/sha256")?;
        let mut written = BTreeSet::new();
        let mut index = Vec::new();
        let mut manifest_json = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for it in items {
            let img = &it.image;
            let mut blobs: Vec<Digest> = vec![img.id.clone(), img.manifest_digest.clone()];
            blobs.extend(img.layers.iter().map(|l| l.digest.clone()));
            for d in blobs {
                if written.insert(d.clone()) {
                    check_digest(&d)?;
                    let p = self.blob_path(&d);
                    let mut f = fs::File::open(&p).map_err(io_err(&p))?;
                    let size = f.metadata().map_err(io_err(&p))?.len();
                    sink.file(&blob_name(&d), size, &mut f)?;
                }
            }
            let manifest_size = fs::metadata(self.blob_path(&img.manifest_digest))
                .map_err(io_err(self.blob_path(&img.manifest_digest)))?
                .len();
            let manifest_mt = self.manifest_json(img)?["mediaType"]
                .as_str()
                .unwrap_or(crate::layout::MANIFEST_MEDIA_TYPE)
                .to_string();
            let mut familiar = Vec::new();
            if it.names.is_empty() {
                index.push(json!({ "mediaType": manifest_mt, "digest": img.manifest_digest, "size": manifest_size }));
            }
            for n in &it.names {
                let r = Reference::parse(n)?;
                let tag = r.tag.clone().unwrap_or_else(|| "latest".into());
                index.push(json!({
                    "mediaType": manifest_mt,
                    "digest": img.manifest_digest,
                    "size": manifest_size,
                    "annotations": { CONTAINERD_NAME: r.to_string(), REF_NAME: tag },
                }));
                familiar.push(r.familiar());
                repositories
                    .entry(r.familiar_repository())
                    .or_default()
                    .insert(
                        tag,
                        img.layers
                            .last()
                            .map(|l| l.diff_id.trim_start_matches("sha256:").to_string())
                            .unwrap_or_default(),
                    );
            }
            manifest_json.push(json!({
                "Config": blob_name(&img.id),
                "RepoTags": if familiar.is_empty() { Value::Null } else { json!(familiar) },
                "Layers": img.layers.iter().map(|l| blob_name(&l.digest)).collect::<Vec<_>>(),
            }));
        }
        let index = canonical_json(
            &json!({ "schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": index }),
        );
        sink.file("index.json", index.len() as u64, &mut &index[..])?;
        if format == ArchiveFormat::Docker {
            // docker's own manifest.json is not canonical JSON (keys in struct order); loaders
            // do not care.
            let m = serde_json::to_vec(&manifest_json).map_err(|e| Error::Other(e.to_string()))?;
            sink.file("manifest.json", m.len() as u64, &mut &m[..])?;
            if !repositories.is_empty() {
                let r = canonical_json(&json!(repositories));
                sink.file("repositories", r.len() as u64, &mut &r[..])?;
            }
        }
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        sink.file("oci-layout", layout.len() as u64, &mut &layout[..])?;
        Ok(())
    }

    /// Writes `items` as a tar archive in `format` to `out`.
    pub fn save_tar(
        &self,
        items: &[SaveItem],
        format: ArchiveFormat,
        out: impl Write,
    ) -> Result<()> {
        let mut sink = TarSink {
            out: io::BufWriter::with_capacity(1 << 20, out),
        };
        self.write_archive(items, format, &mut sink)?;
        sink.out
            .write_all(&[0u8; 1024])
            .map_err(io_err("<archive>"))?;
        sink.out.flush().map_err(io_err("<archive>"))
    }

    /// Writes `items` as an OCI layout directory (created if missing; blobs already there are
    /// kept, `index.json` is replaced).
    pub fn save_dir(&self, items: &[SaveItem], format: ArchiveFormat, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        self.write_archive(
            items,
            format,
            &mut DirSink {
                root: dir.to_path_buf(),
            },
        )
    }

    /// Loads every image of an archive: a docker-archive or OCI layout, as a tar stream (plain,
    /// gzip, zstd or xz) or a directory. Blobs are verified against their digests and layers
    /// against the config's diffIDs.
    pub fn load(&self, source: LoadSource<'_>) -> Result<Vec<Loaded>> {
        self.mark_in_use()?;
        let mut files = Files::default();
        match source {
            LoadSource::Tar(r) => {
                let plain = cairn_layer::decompress(r)?;
                let mut ar = tar::Archive::new(plain);
                for e in ar.entries().map_err(io_err("<archive>"))? {
                    let mut e = e.map_err(io_err("<archive>"))?;
                    if e.header().entry_type() != tar::EntryType::Regular {
                        continue;
                    }
                    let name = String::from_utf8_lossy(&e.path_bytes())
                        .trim_start_matches("./")
                        .to_string();
                    let size = e.size();
                    files.add(self, &name, size, &mut e)?;
                }
            }
            LoadSource::Dir(d) => {
                let mut stack = vec![d.to_path_buf()];
                while let Some(dir) = stack.pop() {
                    for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
                        let e = e.map_err(io_err(&dir))?;
                        let p = e.path();
                        let ft = e.file_type().map_err(io_err(&p))?;
                        if ft.is_dir() {
                            stack.push(p);
                        } else if ft.is_file() {
                            let name = p
                                .strip_prefix(d)
                                .unwrap_or(&p)
                                .to_string_lossy()
                                .into_owned();
                            let mut f = fs::File::open(&p).map_err(io_err(&p))?;
                            let size = f.metadata().map_err(io_err(&p))?.len();
                            files.add(self, &name, size, &mut f)?;
                        }
                    }
                }
            }
        }
        files.commit(self)
    }
}

/// Where `load` reads from.
pub enum LoadSource<'a> {
    /// A tar stream, maybe compressed.
    Tar(Box<dyn Read + 'a>),
    /// An extracted archive or an OCI layout directory.
    Dir(&'a Path),
}

/// The files of an archive: blobs go straight into the store, small documents stay in memory.
#[derive(Default)]
struct Files {
    /// Archive path → digest of its content (as a blob in the store).
    blobs: HashMap<String, Digest>,
    /// Small non-blob files (manifest.json, index.json, legacy `<id>.json` configs).
    small: HashMap<String, Vec<u8>>,
}

const SMALL: u64 = 8 << 20;

impl Files {
    fn add(&mut self, store: &Store, name: &str, size: u64, r: &mut dyn Read) -> Result<()> {
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            let d = format!("sha256:{hex}");
            check_digest(&d)?;
            // Verified as it is stored: a corrupt archive fails here.
            let (d, _) = store.ingest(r, Some(&d))?;
            self.blobs.insert(name.to_string(), d);
        } else if size <= SMALL
            && (name.ends_with(".json") || name == "repositories" || name == "oci-layout")
        {
            let mut v = Vec::new();
            r.read_to_end(&mut v).map_err(io_err(name))?;
            self.small.insert(name.to_string(), v);
        } else {
            // Legacy `<id>/layer.tar`: stored under its own digest, whatever it is.
            let (d, _) = store.ingest(r, None)?;
            self.blobs.insert(name.to_string(), d);
        }
        Ok(())
    }

    fn bytes(&self, store: &Store, name: &str) -> Result<Vec<u8>> {
        if let Some(v) = self.small.get(name) {
            return Ok(v.clone());
        }
        match self.blobs.get(name) {
            Some(d) => store.read_blob(d),
            None => Err(Error::Corrupt {
                what: "archive".into(),
                why: format!("{name} is missing"),
            }),
        }
    }

    fn json(&self, store: &Store, name: &str) -> Result<Value> {
        serde_json::from_slice(&self.bytes(store, name)?).map_err(|e| Error::Corrupt {
            what: format!("archive file {name}"),
            why: e.to_string(),
        })
    }

    fn commit(&self, store: &Store) -> Result<Vec<Loaded>> {
        let mut out = Vec::new();
        // Manifests named by index.json, by config digest, so that a docker-archive entry can
        // be committed from its original manifest (keeping its digest).
        let mut manifests: HashMap<Digest, (Vec<u8>, Vec<String>)> = HashMap::new();
        let mut order = Vec::new();
        if self.small.contains_key("index.json") {
            let index = self.json(store, "index.json")?;
            let mut todo: Vec<Value> = index["manifests"].as_array().cloned().unwrap_or_default();
            while let Some(desc) = todo.pop() {
                let Some(d) = desc["digest"].as_str() else {
                    continue;
                };
                check_digest(d)?;
                let bytes = store.read_blob(&d.to_string())?;
                let m: Value = serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
                    what: format!("manifest {d}"),
                    why: e.to_string(),
                })?;
                if m.get("manifests").is_some() {
                    // A nested index: take the manifests for this platform (or all if none says).
                    for sub in m["manifests"].as_array().cloned().unwrap_or_default() {
                        let arch = sub["platform"]["architecture"].as_str();
                        if arch.is_none() || arch == Some(host_arch()) {
                            todo.push(sub);
                        }
                    }
                    continue;
                }
                let Some(cfg) = m["config"]["digest"].as_str() else {
                    continue;
                };
                let ann = &desc["annotations"];
                let name = ann[CONTAINERD_NAME]
                    .as_str()
                    .map(str::to_string)
                    .or_else(|| {
                        ann[REF_NAME]
                            .as_str()
                            .filter(|n| n.contains(':') || n.contains('/'))
                            .map(str::to_string)
                    });
                let e = manifests.entry(cfg.to_string()).or_insert_with(|| {
                    order.push(cfg.to_string());
                    (bytes.clone(), Vec::new())
                });
                if let Some(n) = name {
                    e.1.push(reference::normalize(&n)?);
                }
            }
        }
        if self.small.contains_key("manifest.json") {
            let entries = self.json(store, "manifest.json")?;
            for e in entries.as_array().cloned().unwrap_or_default() {
                let cfg_path = e["Config"].as_str().unwrap_or_default();
                let names: Vec<String> = e["RepoTags"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|t| t.as_str())
                            .map(reference::normalize)
                            .collect::<Result<_>>()
                    })
                    .transpose()?
                    .unwrap_or_default();
                let config_bytes = self.bytes(store, cfg_path)?;
                let cfg_digest = cairn_layer::hash::sha256_digest(&config_bytes);
                if let Some((m, n)) = manifests.get_mut(&cfg_digest) {
                    // Also in index.json: commit from there, with these names too.
                    let _ = m;
                    for x in names {
                        if !n.contains(&x) {
                            n.push(x);
                        }
                    }
                    continue;
                }
                let config: Value =
                    serde_json::from_slice(&config_bytes).map_err(|e| Error::Corrupt {
                        what: format!("config {cfg_path}"),
                        why: e.to_string(),
                    })?;
                let diff_ids: Vec<String> =
                    serde_json::from_value(config["rootfs"]["diff_ids"].clone())
                        .unwrap_or_default();
                let paths: Vec<&str> = e["Layers"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|l| l.as_str()).collect())
                    .unwrap_or_default();
                if paths.len() != diff_ids.len() {
                    return Err(Error::Corrupt {
                        what: "manifest.json".into(),
                        why: "layers and config diff_ids differ in number".into(),
                    });
                }
                let mut layers = Vec::new();
                for (p, diff_id) in paths.iter().zip(diff_ids) {
                    let digest = match self.blobs.get(*p) {
                        Some(d) => d.clone(),
                        None => store.put_blob(&self.bytes(store, p)?)?,
                    };
                    let path = store.blob_path(&digest);
                    let mut head = [0u8; 6];
                    let n = fs::File::open(&path)
                        .and_then(|mut f| f.read(&mut head))
                        .map_err(io_err(&path))?;
                    let media_type = match cairn_layer::compress::detect(&head[..n]) {
                        cairn_layer::compress::Detected::Gzip => {
                            cairn_layer::media_type(cairn_layer::Compression::Gzip)
                        }
                        cairn_layer::compress::Detected::Zstd => {
                            cairn_layer::media_type(cairn_layer::Compression::Zstd)
                        }
                        _ => cairn_layer::media_type(cairn_layer::Compression::None),
                    };
                    let size = fs::metadata(&path).map_err(io_err(&path))?.len();
                    layers.push(LayerDescriptor {
                        digest,
                        diff_id,
                        size,
                        media_type: media_type.to_string(),
                    });
                }
                let rec = store.commit_image_raw(&config_bytes, &layers, &names)?;
                out.push(Loaded { id: rec.id, names });
            }
        }
        for cfg in order {
            let (bytes, names) = &manifests[&cfg];
            let rec = store.commit_manifest(bytes, names)?;
            out.push(Loaded {
                id: rec.id,
                names: names.clone(),
            });
        }
        if out.is_empty() {
            return Err(Error::Other(
                "no image found in the archive (no manifest.json, no index.json entries)".into(),
            ));
        }
        Ok(out)
    }
}

/// The host architecture in GOARCH spelling.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}
