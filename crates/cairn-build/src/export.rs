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

use crate::error::{io_err, Error, Result};
use crate::progress::{Reporter, Vertex};
use crate::solve::BuildOutput;

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
    /// The file this output writes (not `-`, not a directory output).
    pub fn file(&self) -> Option<&Path> {
        match self {
            Output::Local(_) => None,
            Output::Tar(p) | Output::Oci(p) | Output::Docker(p) => {
                (p.as_os_str() != "-").then_some(p.as_path())
            }
        }
    }

    /// Fails, as docker's CLI does before it builds, when the output file's directory does not
    /// exist (`failed to open F: open F: no such file or directory`). A directory output is made.
    pub fn check_dest(&self) -> std::result::Result<(), String> {
        let Some(file) = self.file() else {
            return Ok(());
        };
        if output_dir(file).is_dir() {
            return Ok(());
        }
        Err(format!(
            "failed to open {f}: open {f}: no such file or directory",
            f = file.display()
        ))
    }

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

/// The vertex that stores a built image.
const EXPORT_TO_STORE: &str = "exporting to image";

/// The name of the first vertex [`finish`] shows for these arguments: what
/// [`crate::BuildRequest::export_vertex_name`] should be.
pub fn first_vertex_name(outputs: &[Output], to_store: bool) -> Option<String> {
    if to_store {
        return Some(EXPORT_TO_STORE.into());
    }
    outputs.first().map(|o| output_vertex_name(o).into())
}

fn output_vertex_name(o: &Output) -> &'static str {
    match o {
        Output::Local(_) => "exporting to client directory",
        Output::Tar(_) => "exporting to client tarball",
        Output::Oci(_) => "exporting to oci image format",
        Output::Docker(_) => "exporting to docker image format",
    }
}

/// BuildKit's status line for the layers, with their time when there was a wait to see.
fn layers_done(v: Vertex) -> String {
    let t = v.elapsed().as_secs_f64();
    if t >= 0.05 {
        format!("exporting layers {t:.1}s done")
    } else {
        "exporting layers done".into()
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
    let value: serde_json::Value =
        serde_json::from_slice(&out.config_json).map_err(|e| Error::Other(e.to_string()))?;
    let mut record = None;
    // Running since the build's last step when the build was asked for it (the wait for the
    // layers' blobs is then its `exporting layers` time).
    let mut started = out.export_vertex;
    if to_store {
        let v = started
            .take()
            .unwrap_or_else(|| reporter.start(EXPORT_TO_STORE));
        reporter.status(v, layers_done(v));
        let committed = match already_stored(store, out, tags) {
            Some(r) => Ok(r),
            None => store.commit_image_json(&value, &out.layers, tags),
        };
        match committed {
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
        let what = output_vertex_name(o);
        let dest = match o {
            Output::Local(d) | Output::Tar(d) | Output::Oci(d) | Output::Docker(d) => d,
        };
        let v = match started.take() {
            Some(v) => {
                reporter.status(v, layers_done(v));
                v
            }
            None => reporter.start(what),
        };
        let result = match o {
            Output::Local(dir) => export_local(store, &out.layers, dir),
            Output::Tar(file) => export_rootfs_tar(store, &out.layers, file),
            Output::Oci(file) | Output::Docker(file) => {
                // The archives are written by the store's `save` code, so `cairn build -o
                // type=docker` and `cairn save` give the same bytes. It needs the image in the
                // store: commit it (untagged when only exporting) if that was not done.
                let r = match &record {
                    Some(r) => Ok(r.clone()),
                    None => store.commit_image_json(&value, &out.layers, &[]),
                };
                r.map_err(Error::from).and_then(|r| {
                    let format = if matches!(o, Output::Docker(_)) {
                        cairn_store::ArchiveFormat::Docker
                    } else {
                        cairn_store::ArchiveFormat::Oci
                    };
                    let item = cairn_store::SaveItem {
                        image: r,
                        names: tags.iter().map(|t| normalize_reference(t)).collect(),
                    };
                    write_atomic(file, |f| {
                        store
                            .save_tar(std::slice::from_ref(&item), format, f)
                            .map_err(Error::from)
                    })
                })
            }
        };
        match result {
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

/// The stored image when it is `out` and every tag already names it: a no-op rebuild then
/// writes nothing (no config, manifest, index or database transaction to fsync).
fn already_stored(
    store: &Store,
    out: &BuildOutput,
    tags: &[String],
) -> Option<cairn_store::ImageRecord> {
    for t in tags {
        let r = store.resolve(t).ok()??;
        if r.id != out.image_id {
            return None;
        }
    }
    let r = store.resolve(&out.image_id).ok()??;
    (r.id == out.image_id && r.layers == out.layers).then_some(r)
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
            &WriteOptions::default(),
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

/// `busybox` → `docker.io/library/busybox:latest`, as docker names images (the store's rules;
/// a reference it cannot parse is shown as written).
pub fn normalize_reference(reference: &str) -> String {
    cairn_store::reference::normalize(reference).unwrap_or_else(|_| reference.to_string())
}

/// The directory an output file `path` is written in: its parent, or `.` for a bare name.
pub fn output_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Writes `path` through `fill` into a temp file in the same directory, fsyncs it and renames it
/// into place: a crash leaves the old file or none, never half of one. The file is made as
/// `File::create` makes one (0666 less the umask), as docker's outputs are; a temp file's own
/// default, 0600, would leave a user's tarball unreadable to the others. Its directory must
/// exist, as for docker's `-o type=tar,dest=F`, `save -o` and `--iidfile`.
pub fn write_atomic<E: From<Error>>(
    path: &Path,
    fill: impl FnOnce(&mut fs::File) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    use std::os::unix::fs::PermissionsExt;
    let dir = output_dir(path);
    // Named here: the temp file's own error would name the temp file, twice.
    fs::metadata(dir).map_err(io_err(dir))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".cairn-export-")
        .permissions(fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .map_err(io_err(dir))?;
    fill(tmp.as_file_mut())?;
    tmp.as_file().sync_all().map_err(io_err(tmp.path()))?;
    tmp.persist(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    if let Ok(d) = fs::File::open(dir) {
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

    #[test]
    fn an_output_file_gets_the_mode_file_create_gives() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let created = d.path().join("created");
        fs::File::create(&created).unwrap();
        let p = d.path().join("image.tar");
        write_atomic(&p, |f| f.write_all(b"tar").map_err(io_err("f"))).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&p), mode(&created));
    }
}
