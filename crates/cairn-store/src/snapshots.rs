//! Snapshots: each layer unpacked once, as an overlay lowerdir, shared by every image using it.

use crate::blobs::check_digest;
use crate::file_pool::boot_id;
use crate::images::{ImageRecord, LayerInfo};
use crate::{io_err, sync_dir, unique, Error, LayerDescriptor, Result, Store};
use cairn_layer::UnpackMode;
use cairn_layer::{Compression, DiffSource, WriteOptions};
use std::fs;
use std::io::BufReader;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

impl Store {
    /// Where the snapshot of the layer with diffID `diff_id` is (or would be).
    pub fn snapshot_path(&self, diff_id: &str) -> PathBuf {
        self.root
            .join("snapshots")
            .join(diff_id.strip_prefix("sha256:").unwrap_or(diff_id))
    }

    /// Whether the snapshot of `diff_id` is in the store and whole (checked again after a
    /// reboot, see `settle_pending`), without making it: for a layer that has no blob.
    pub fn has_snapshot(&self, diff_id: &str) -> Result<bool> {
        check_digest(diff_id)?;
        let dst = self.snapshot_path(diff_id);
        self.mark_in_use()?;
        Ok(dst.is_dir() && self.settle_pending(&dst, diff_id)?)
    }

    /// The layer unpacked (OCI whiteouts as overlay whiteouts), made on first use by unpacking
    /// into a temp dir that is renamed into place, so a snapshot is either whole or absent. The
    /// unpacked stream must hash to `layer.diff_id`. Do not write into it: every image with this
    /// layer shares it.
    pub fn snapshot(&self, layer: &LayerDescriptor) -> Result<PathBuf> {
        // Marks the store in use even for an existing snapshot: a process that mounts it must
        // keep prune's hands off.
        let ready = self.has_snapshot(&layer.diff_id)?;
        let dst = self.snapshot_path(&layer.diff_id);
        if ready {
            return Ok(dst);
        }
        // One unpack per layer at a time, across threads and processes (flock locks open file
        // descriptions): stages that start from one image would otherwise unpack it side by side
        // and throw all copies but one away. Whoever waited finds the snapshot made.
        let _unpacking = self.lock_snapshot(&dst)?;
        if dst.is_dir() {
            return Ok(dst);
        }
        let tmp = self.snapshot_tmp()?;
        let res = (|| {
            let p = self.blob_path(&layer.digest);
            let f = fs::File::open(&p).map_err(io_err(&p))?;
            let stats = cairn_layer::unpack_layer(
                BufReader::with_capacity(256 * 1024, f),
                &tmp,
                UnpackMode::OverlayLower,
            )?;
            if self.layer_info(&layer.digest)?.is_none() {
                self.record_layer(
                    &layer.digest,
                    &LayerInfo {
                        diff_id: stats.diff_id.clone(),
                        content_size: stats.bytes,
                        tar_size: stats.tar_size,
                    },
                )?;
            }
            self.install_snapshot(&tmp, &dst, &layer.diff_id, &stats.diff_id)
        })();
        if res.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        res.map(|()| dst)
    }

    /// A fresh directory to unpack a snapshot into, on the snapshots' filesystem.
    pub(crate) fn snapshot_tmp(&self) -> Result<PathBuf> {
        let tmp = self
            .tmp_dir()
            .join(format!("snap-{}-{:x}", std::process::id(), unique()));
        fs::create_dir(&tmp).map_err(io_err(&tmp))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).map_err(io_err(&tmp))?;
        Ok(tmp)
    }

    /// Moves the unpacked `tmp` to `dst` once its stream hashed to the layer's diffID, made
    /// durable first (a snapshot is either whole or absent). The caller removes `tmp` on error.
    fn install_snapshot(&self, tmp: &Path, dst: &Path, diff_id: &str, actual: &str) -> Result<()> {
        if actual != diff_id {
            return Err(Error::DigestMismatch {
                expected: diff_id.to_string(),
                actual: actual.to_string(),
            });
        }
        let d = fs::File::open(tmp).map_err(io_err(tmp))?;
        rustix::fs::syncfs(&d).map_err(|e| Error::Io {
            path: tmp.to_path_buf(),
            source: e.into(),
        })?;
        match fs::rename(tmp, dst) {
            Ok(()) => sync_dir(&self.root.join("snapshots")),
            // Another process made it first: theirs is as good as ours.
            Err(_) if dst.is_dir() => {
                let _ = fs::remove_dir_all(tmp);
                Ok(())
            }
            Err(e) => Err(Error::Io {
                path: dst.to_path_buf(),
                source: e,
            }),
        }
    }

    /// Installs a snapshot unpacked while its layer was imported (see `import_layer`): under the
    /// snapshot's lock, unless one is there already. Removes `tmp` in every case.
    pub(crate) fn adopt_snapshot(&self, tmp: &Path, diff_id: &str, actual: &str) -> Result<()> {
        self.adopt_with(tmp, diff_id, |dst| {
            self.install_snapshot(tmp, dst, diff_id, actual)
        })
    }

    /// Moves the tree `tmp` into place as the snapshot of `diff_id` with `install` (given the
    /// snapshot's path), under the snapshot's lock, unless one is there already. Whatever
    /// happens, `tmp` is gone afterwards: moved, or removed.
    fn adopt_with(
        &self,
        tmp: &Path,
        diff_id: &str,
        install: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        let res = (|| {
            check_digest(diff_id)?;
            let dst = self.snapshot_path(diff_id);
            let _lock = self.lock_snapshot(&dst)?;
            if dst.is_dir() {
                return Ok(());
            }
            install(&dst)
        })();
        // A snapshot made meanwhile by someone else wins; ours, or what is left of it, goes.
        if tmp.exists() {
            let _ = fs::remove_dir_all(tmp);
        }
        res
    }

    /// Makes the snapshot of the layer with diffID `diff_id` from `tree`, a directory on the
    /// store's filesystem that holds exactly what unpacking the layer would give: the overlay
    /// upper dir the layer was just written from, hashed with `opts`. A build's next step then
    /// mounts it at once instead of decompressing and recreating every file of the layer
    /// (BuildKit keeps its snapshots the same way). What the layer writer leaves out of the tar
    /// is taken out of the tree first (overlay's bookkeeping xattrs, sockets), so the snapshot
    /// equals the layer, but for mtimes newer than the clamp, which the next steps see
    /// unclamped, as in BuildKit. `tree` is consumed: moved into place, or removed when a
    /// snapshot is there already.
    ///
    /// The snapshot is not synced: `syncfs` flushes every dirty page of the filesystem, the
    /// other programs' too, and took seconds on a disk busy with another builder's write-back
    /// (0.23 s after a 200 MB COPY on a quiet one). Instead a marker in `ROOT/snapshots-pending/`
    /// records this boot and `opts`' clamp. Within this boot the page cache serves the snapshot
    /// whole whatever reached the disk; after a reboot its first user hashes it again and
    /// keeps it only if it still hashes to `diff_id` (see [`Store::snapshot`]). The marker is
    /// created before the rename: a journalling filesystem (ext4, xfs) commits metadata changes
    /// in order, so a snapshot that survived a crash has its marker.
    pub fn adopt_upper_as_snapshot(
        &self,
        tree: &Path,
        diff_id: &str,
        opts: &WriteOptions,
    ) -> Result<()> {
        let prepared = self
            .mark_in_use()
            .and_then(|()| strip_unarchived(tree))
            .and_then(|()| {
                fs::set_permissions(tree, fs::Permissions::from_mode(0o755)).map_err(io_err(tree))
            });
        if let Err(e) = prepared {
            let _ = fs::remove_dir_all(tree);
            return Err(e);
        }
        self.adopt_with(tree, diff_id, |dst| {
            let marker = self.pending_marker(dst);
            let dir = marker.parent().unwrap_or(Path::new("."));
            fs::create_dir_all(dir).map_err(io_err(dir))?;
            let clamp = opts.clamp_mtime.map(|c| c.to_string()).unwrap_or_default();
            let text = format!("{}\n{clamp}\n", boot_id().unwrap_or(""));
            fs::write(&marker, text).map_err(io_err(&marker))?;
            fs::rename(tree, dst).map_err(|e| {
                let _ = fs::remove_file(&marker);
                io_err(dst)(e)
            })
        })
    }

    fn pending_marker(&self, dst: &Path) -> PathBuf {
        self.root
            .join("snapshots-pending")
            .join(dst.file_name().unwrap_or_default())
    }

    /// Whether the existing snapshot `dst` (of the layer `diff_id`) can be used: it has no
    /// marker, or one of this boot, or it still hashes to `diff_id` (then the marker goes: a
    /// reboot flushed it). One that does not is removed and `false` returned, so that the
    /// caller makes it again from its blob. An unreadable marker counts as another boot's.
    fn settle_pending(&self, dst: &Path, diff_id: &str) -> Result<bool> {
        let marker = self.pending_marker(dst);
        let Ok(text) = fs::read_to_string(&marker) else {
            return Ok(true);
        };
        let mut lines = text.lines();
        let boot = lines.next().unwrap_or("");
        if Some(boot) == boot_id() {
            return Ok(true);
        }
        let _lock = self.lock_snapshot(dst)?;
        if !marker.exists() {
            return Ok(dst.is_dir());
        }
        let opts = WriteOptions {
            clamp_mtime: lines.next().and_then(|c| c.parse().ok()),
            ..Default::default()
        };
        let whole = cairn_layer::write_layer(
            DiffSource::OverlayUpper(dst),
            Compression::None,
            &opts,
            std::io::sink(),
        )
        .is_ok_and(|d| d.diff_id == diff_id);
        if !whole {
            let doomed = self.tmp_dir().join(format!("torn-{:x}", unique()));
            fs::rename(dst, &doomed).map_err(io_err(dst))?;
            let _ = fs::remove_dir_all(&doomed);
        }
        fs::remove_file(&marker).map_err(io_err(&marker))?;
        Ok(whole)
    }

    /// Takes the exclusive lock of the snapshot at `dst`, released on drop. The lock files live
    /// in `locks/snapshots/`, not beside the snapshots, which `check` and `prune` read as layers.
    fn lock_snapshot(&self, dst: &Path) -> Result<fs::File> {
        let dir = self.root.join("locks").join("snapshots");
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let mut name = dst.file_name().unwrap_or_default().to_owned();
        name.push(".lock");
        crate::locked_file(&dir.join(name), rustix::fs::FlockOperation::LockExclusive)
    }

    /// Unpacks the snapshots of `image` now, as docker does when an image is loaded, so that the
    /// first build or run from it finds them ready. Only as root: snapshots hold whiteout devices
    /// and `trusted.*` xattrs; otherwise nothing is done here and `snapshot` says why when used.
    pub fn warm_snapshots(&self, image: &ImageRecord) -> Result<()> {
        if rustix::process::geteuid().is_root() {
            self.snapshots_for(image)?;
        }
        Ok(())
    }

    /// The snapshots of every layer of `image`, bottom layer first (reverse this for overlay's
    /// `lowerdir=`, which lists the top first).
    pub fn snapshots_for(&self, image: &ImageRecord) -> Result<Vec<PathBuf>> {
        image.layers.iter().map(|l| self.snapshot(l)).collect()
    }
}

/// Removes from the upper dir `dir` what a layer tar does not carry: overlayfs's own xattrs
/// (`trusted.overlay.*`/`user.overlay.*` but the opaque marker, which the tar carries as a
/// whiteout) and sockets.
fn strip_unarchived(dir: &Path) -> Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        strip_overlay_xattrs(&d)?;
        for e in fs::read_dir(&d).map_err(io_err(&d))? {
            let e = e.map_err(io_err(&d))?;
            let p = e.path();
            let ft = e.file_type().map_err(io_err(&p))?;
            if ft.is_dir() {
                stack.push(p);
            } else if std::os::unix::fs::FileTypeExt::is_socket(&ft) {
                fs::remove_file(&p).map_err(io_err(&p))?;
            } else {
                strip_overlay_xattrs(&p)?;
            }
        }
    }
    Ok(())
}

fn strip_overlay_xattrs(p: &Path) -> Result<()> {
    let io = |e: rustix::io::Errno| Error::Io {
        path: p.to_path_buf(),
        source: e.into(),
    };
    let mut names = vec![0u8; 1024];
    let n = match rustix::fs::llistxattr(p, &mut names[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::RANGE) => {
            names = vec![0u8; 64 * 1024];
            rustix::fs::llistxattr(p, &mut names[..]).map_err(io)?
        }
        Err(rustix::io::Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let internal = name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.");
        if internal && !name.ends_with(b".overlay.opaque") {
            let cname = std::ffi::CString::new(name).map_err(|_| Error::Io {
                path: p.to_path_buf(),
                source: std::io::Error::other("xattr name with a NUL"),
            })?;
            rustix::fs::lremovexattr(p, &cname).map_err(io)?;
        }
    }
    Ok(())
}
