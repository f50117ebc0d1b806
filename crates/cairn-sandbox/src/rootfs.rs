//! A container's root filesystem over a stack of snapshots: an overlay mount (the snapshots as
//! shared, never-written lowerdirs and a fresh upperdir that becomes the change) or, without
//! overlayfs, a copied tree diffed against a pristine copy.

use crate::copy;
use crate::error::{Error, IoContext, Result};
use crate::spec::{MountKind, MountSpec};
use cairn_layer::DiffSource;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// How a [`Rootfs`] is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotterKind {
    /// overlayfs: instant, shares the snapshots, the upper dir is the change.
    Overlay,
    /// A copy of the flattened snapshots, diffed against a second pristine copy: slow, works on
    /// any filesystem.
    Native,
}

impl SnapshotterKind {
    /// `CAIRN_SNAPSHOTTER=native|overlay` if set, else overlay when the kernel has it.
    pub fn detect() -> SnapshotterKind {
        match std::env::var("CAIRN_SNAPSHOTTER").as_deref() {
            Ok("native") => return SnapshotterKind::Native,
            Ok("overlay") | Ok("overlayfs") => return SnapshotterKind::Overlay,
            _ => {}
        }
        let listed = fs::read_to_string("/proc/filesystems")
            .map(|s| {
                s.lines()
                    .any(|l| l.split_whitespace().last() == Some("overlay"))
            })
            .unwrap_or(false);
        if listed || Path::new("/sys/module/overlay").exists() {
            SnapshotterKind::Overlay
        } else {
            SnapshotterKind::Native
        }
    }

    /// [`SnapshotterKind::detect`] for a rootfs made in `scratch`: also Native when `scratch` is
    /// itself on overlayfs (cairn inside a container), where an overlay upper dir cannot live.
    pub fn detect_for(scratch: &Path) -> SnapshotterKind {
        const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;
        if std::env::var_os("CAIRN_SNAPSHOTTER").is_none() {
            if let Ok(st) = rustix::fs::statfs(scratch) {
                // f_type is a c_long-sized field whose width varies across architectures.
                #[allow(clippy::unnecessary_cast)]
                let f_type = st.f_type as i64;
                if f_type == OVERLAYFS_SUPER_MAGIC {
                    return SnapshotterKind::Native;
                }
            }
        }
        SnapshotterKind::detect()
    }

    /// Parses `overlay`/`overlayfs`/`native` (the `--snapshotter` flag).
    pub fn parse(s: &str) -> Option<SnapshotterKind> {
        match s {
            "overlay" | "overlayfs" => Some(SnapshotterKind::Overlay),
            "native" => Some(SnapshotterKind::Native),
            _ => None,
        }
    }
}

/// Where an overlay root keeps its upper and work dirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpperDir {
    /// On disk, next to the root: the change outlives the mount (a build step's layer, a
    /// container kept after it exits).
    Disk,
    /// In the tmpfs of the root's init layer, gone with the mount: for a change that is thrown
    /// away (`cairn run --rm`). Making and removing the overlay's work dirs on disk is most of
    /// what a short run costs beyond the process itself; in memory it costs nothing. What the
    /// container writes takes memory (the tmpfs is bounded by the kernel's default, half the
    /// RAM).
    Memory,
}

/// A prepared root filesystem. Dropping it unmounts it and removes the directories it made.
#[derive(Debug)]
pub struct Rootfs {
    kind: SnapshotterKind,
    /// The directories this rootfs created inside the caller's scratch dir (removed on drop).
    owned: Vec<PathBuf>,
    merged: PathBuf,
    upper: PathBuf,
    /// Native only: the pristine flattened lowers.
    base: Option<PathBuf>,
    mounted: AtomicBool,
    /// The tmpfs holding the init layer (overlay only).
    init_mount: Option<PathBuf>,
    /// Where the upper and work dirs are (overlay only).
    placement: UpperDir,
}

/// Entries every container mounts over; the overlay snapshotter puts them in an "init" layer
/// between the image and the upper dir (docker's `-init` layer), so that creating them never
/// copies a directory of the image up into the change.
const INIT_DIRS: [&str; 3] = ["proc", "dev", "sys"];
const INIT_ETC_FILES: [&str; 3] = ["resolv.conf", "hosts", "hostname"];

impl Rootfs {
    /// Prepares a root from `lowers` (snapshot dirs, bottom layer first; may be empty for
    /// `FROM scratch`) inside `scratch`, which must exist and be on a filesystem that can hold an
    /// overlay upper dir (not itself overlayfs).
    pub fn prepare(lowers: &[PathBuf], scratch: &Path, kind: SnapshotterKind) -> Result<Rootfs> {
        Rootfs::prepare_with_mounts(lowers, scratch, kind, &[])
    }

    /// [`Rootfs::prepare`] knowing the mounts the runs will use (`-v`, `RUN --mount`): with
    /// overlay, their mount points go into the init layer under the upper dir, so that creating
    /// them copies no directory of the image up into the change (`run` would otherwise create
    /// them in the rootfs and remove them afterwards, leaving the copied-up parents behind).
    pub fn prepare_with_mounts(
        lowers: &[PathBuf],
        scratch: &Path,
        kind: SnapshotterKind,
        mounts: &[MountSpec],
    ) -> Result<Rootfs> {
        let dir = tempfile::Builder::new()
            .prefix("rootfs-")
            .tempdir_in(scratch)
            .ctx(|| format!("creating a rootfs dir in {}", scratch.display()))?
            .keep();
        let mut owned = own_entries(&dir);
        owned.push(dir.clone());
        Rootfs::prepare_at(lowers, dir, owned, kind, mounts, UpperDir::Disk)
    }

    /// [`Rootfs::prepare_with_mounts`] straight in `dir`, a directory made for this one root
    /// (a container's own directory): its entries `upper`, `work`, `init`, `merged`, `base` and
    /// `flat` are this rootfs's, made here and removed by the drop, and nothing else in `dir` is
    /// touched. Saves making and removing a temp dir of its own (two metadata operations on
    /// disk for every `cairn run`).
    ///
    /// With [`UpperDir::Memory`] (overlay only; a native root is a copy on disk either way), the
    /// upper and work dirs are made in the init layer's tmpfs and nothing but the `init` mount
    /// point is made in `dir`.
    pub fn prepare_in(
        lowers: &[PathBuf],
        dir: &Path,
        kind: SnapshotterKind,
        mounts: &[MountSpec],
        upper: UpperDir,
    ) -> Result<Rootfs> {
        Rootfs::prepare_at(
            lowers,
            dir.to_path_buf(),
            own_entries(dir),
            kind,
            mounts,
            upper,
        )
    }

    fn prepare_at(
        lowers: &[PathBuf],
        dir: PathBuf,
        owned: Vec<PathBuf>,
        kind: SnapshotterKind,
        mounts: &[MountSpec],
        upper: UpperDir,
    ) -> Result<Rootfs> {
        let extra: Vec<(String, bool)> = mounts
            .iter()
            .map(|m| {
                let is_dir = match &m.kind {
                    MountKind::Bind { source, .. } => source.is_dir(),
                    MountKind::Tmpfs { .. } => true,
                };
                (m.target.clone(), is_dir)
            })
            .collect();
        let mut rootfs = Rootfs {
            kind,
            owned,
            merged: dir.join("merged"),
            upper: dir.join("upper"),
            base: None,
            mounted: AtomicBool::new(false),
            init_mount: None,
            placement: upper,
        };
        let lowers = topmost_occurrences(lowers);
        match kind {
            SnapshotterKind::Overlay => rootfs.prepare_overlay(&lowers, &dir, &extra, upper)?,
            SnapshotterKind::Native => rootfs.prepare_native(&lowers, &dir)?,
        }
        Ok(rootfs)
    }

    fn prepare_overlay(
        &mut self,
        lowers: &[PathBuf],
        dir: &Path,
        extra: &[(String, bool)],
        upper: UpperDir,
    ) -> Result<()> {
        let init = dir.join("init");
        let mut work = dir.join("work");
        let on_disk: &[&PathBuf] = match upper {
            UpperDir::Disk => &[&self.upper, &work, &init],
            UpperDir::Memory => &[&init],
        };
        for d in on_disk {
            make_or_reuse_dir(d).ctx(|| format!("creating {}", d.display()))?;
        }
        let top_first: Vec<&Path> = lowers.iter().rev().map(PathBuf::as_path).collect();
        // The init layer lives in a tmpfs: made and dropped at every run, it costs no disk I/O
        // (creating and unlinking its entries on a busy disk cost more than the run itself).
        // The overlay's mount point is in it too (`init/merged`, next to the layer
        // `init/layer`): one directory less to make and remove on disk, and one lazy unmount
        // of `init` takes both mounts away. An upper dir in memory lives there as well, on a
        // tmpfs of the kernel's default size and, like the disk it replaces, without
        // nosuid/nodev.
        let (flags, options) = match upper {
            UpperDir::Disk => (
                nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                "mode=755,size=1m",
            ),
            UpperDir::Memory => (nix::mount::MsFlags::empty(), "mode=755"),
        };
        nix::mount::mount(Some("tmpfs"), &init, Some("tmpfs"), flags, Some(options))
            .map_err(|e| Error::io(format!("mounting a tmpfs on {}", init.display()), e.into()))?;
        self.init_mount = Some(init.clone());
        let layer = init.join("layer");
        self.merged = init.join("merged");
        let mut made = vec![&layer, &self.merged];
        if upper == UpperDir::Memory {
            self.upper = init.join("upper");
            work = init.join("work");
            made.extend([&self.upper, &work]);
            // Nothing of the upper side is on disk to remove later.
            let on_disk = [init.clone(), dir.join("flat")];
            self.owned.retain(|d| on_disk.contains(d));
        }
        for d in made {
            fs::DirBuilder::new()
                .mode(0o755)
                .create(d)
                .ctx(|| format!("creating {}", d.display()))?;
        }
        build_init_layer(&layer, &top_first, extra)
            .ctx(|| format!("creating the init layer {}", layer.display()))?;
        // The merged root shows the upper dir's own attributes: give it the image's.
        if let Some(top) = top_first.first() {
            let m = fs::symlink_metadata(top).ctx(|| format!("reading {}", top.display()))?;
            copy::copy_metadata(top, &m, &self.upper)
                .ctx(|| format!("setting up {}", self.upper.display()))?;
        }
        let mut layers: Vec<&Path> = vec![layer.as_path()];
        // Past overlayfs's stack limit, the bottom layers are merged into one copied tree
        // (whiteouts applied) that stands in for them as the lowest lowerdir.
        let flat = dir.join("flat");
        if top_first.len() + 1 > MAX_LAYERS {
            let keep = MAX_LAYERS - 2;
            fs::DirBuilder::new()
                .mode(0o755)
                .create(&flat)
                .ctx(|| format!("creating {}", flat.display()))?;
            for l in top_first[keep..].iter().rev() {
                copy::apply_tree(l, &flat, true)
                    .ctx(|| format!("merging snapshot {}", l.display()))?;
            }
            layers.extend(top_first[..keep].iter().copied());
            layers.push(flat.as_path());
        } else {
            layers.extend(top_first.iter().copied());
        }
        mount_overlay(&layers, &self.upper, &work, &self.merged)?;
        self.mounted.store(true, Ordering::SeqCst);
        register(
            &self.merged,
            &self.upper,
            layers.iter().map(|l| l.to_path_buf()).collect(),
        );
        Ok(())
    }

    fn prepare_native(&mut self, lowers: &[PathBuf], dir: &Path) -> Result<()> {
        let base = dir.join("base");
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&base)
            .ctx(|| format!("creating {}", base.display()))?;
        for l in lowers {
            copy::apply_tree(l, &base, true).ctx(|| format!("copying snapshot {}", l.display()))?;
        }
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&self.merged)
            .ctx(|| format!("creating {}", self.merged.display()))?;
        copy::apply_tree(&base, &self.merged, false)
            .ctx(|| format!("copying {}", base.display()))?;
        // The change is read by comparing the working copy (`merged`) with `base`.
        self.upper = self.merged.clone();
        self.base = Some(base);
        Ok(())
    }

    /// The root to run processes in.
    pub fn path(&self) -> &Path {
        &self.merged
    }

    /// Which snapshotter made this root.
    pub fn kind(&self) -> SnapshotterKind {
        self.kind
    }

    /// Where the change is read from after the process exits: the overlay upper dir, or the
    /// working copy compared with the pristine one.
    ///
    /// With overlay, directories of the image that were copied up into the upper dir only because
    /// a run created a mount point in them (and that the process left as they were) are removed
    /// from the upper dir first; that takes unmounting the overlay, so call this after the last
    /// run in this root.
    pub fn diff_source(&self) -> DiffSource<'_> {
        let stale = take_copied_up(&self.merged);
        if !stale.dirs.is_empty() && self.mounted.swap(false, Ordering::SeqCst) {
            // The upper dir may only be changed directly once the overlay is gone.
            if nix::mount::umount2(&self.merged, nix::mount::MntFlags::MNT_DETACH).is_ok() {
                remove_pure_copy_ups(&self.upper, &stale.layers, &stale.dirs);
            } else {
                self.mounted.store(true, Ordering::SeqCst);
            }
        }
        match &self.base {
            Some(base) => DiffSource::Compare {
                lower: base,
                upper: &self.merged,
            },
            None => DiffSource::OverlayUpper(&self.upper),
        }
    }

    /// Unmounts and removes everything now, reporting errors that `drop` would swallow.
    pub fn cleanup(mut self) -> Result<()> {
        self.release()
    }

    /// Unmounts the root and moves its upper dir (the change a layer was just written from) to
    /// `to`, on the same filesystem, instead of removing it; everything else is removed. `false`
    /// (and everything removed) when there is no upper dir to hand over: the native snapshotter.
    pub fn into_upper(mut self, to: &Path) -> Result<bool> {
        if self.placement == UpperDir::Memory {
            // Gone with the tmpfs at the unmount.
            self.release()?;
            return Ok(false);
        }
        if !self.unmount_keeping_dirs()? {
            return Ok(false);
        }
        fs::rename(&self.upper, to).map_err(|e| {
            Error::io(
                format!("moving {} to {}", self.upper.display(), to.display()),
                e,
            )
        })?;
        self.remove_owned()?;
        Ok(true)
    }

    /// Unmounts the root and, when its directory can serve the next root made in it with
    /// [`Rootfs::prepare_in`] (overlay, the upper dir left empty and without xattrs: a run that
    /// changed nothing), leaves `upper`, `work` and `init` there, with what overlayfs left in
    /// the work dir that would refuse the next mount removed. Otherwise removes everything, as
    /// [`Rootfs::cleanup`]. `true` when the directories were kept.
    ///
    /// A `cairn run --rm` that recycles its container directory this way saves making and
    /// removing four directories on disk, which cost more than the rest of its start.
    ///
    /// A root whose upper dir was in memory ([`UpperDir::Memory`]) left nothing on disk but the
    /// `init` mount point: that is kept, whatever the process wrote.
    pub fn release_for_reuse(mut self) -> Result<bool> {
        if !self.unmount_keeping_dirs()? {
            return Ok(false);
        }
        if self.placement == UpperDir::Memory {
            let init = self.upper.parent().map(Path::to_path_buf);
            self.owned.retain(|d| Some(d) != init.as_ref());
            self.remove_owned()?;
            return Ok(true);
        }
        let work = self.upper.with_file_name("work");
        let reusable = is_pristine_dir(&self.upper) && remove_volatile_marker(&work).is_ok();
        if !reusable {
            self.remove_owned()?;
            return Ok(false);
        }
        // Kept: `upper`, `work` and `init` (the latter just a mount point, empty once the tmpfs
        // is gone). Anything else this root made is removed.
        let keep = [self.upper.clone(), work, self.upper.with_file_name("init")];
        self.owned.retain(|d| !keep.contains(d));
        self.remove_owned()?;
        Ok(true)
    }

    /// Unmounts an overlay root, leaving its directories for the caller to keep (`true`); any
    /// other root (native) is released entirely (`false`).
    fn unmount_keeping_dirs(&mut self) -> Result<bool> {
        if self.kind != SnapshotterKind::Overlay || self.base.is_some() {
            self.release()?;
            return Ok(false);
        }
        self.unmount()?;
        Ok(true)
    }

    fn release(&mut self) -> Result<()> {
        self.unmount()?;
        self.remove_owned()
    }

    fn unmount(&mut self) -> Result<()> {
        unregister(&self.merged);
        let mounted = self.mounted.swap(false, Ordering::SeqCst);
        match self.init_mount.take() {
            // The overlay is mounted inside the init tmpfs (`init/merged`): one lazy unmount of
            // the tmpfs detaches both.
            Some(init) => nix::mount::umount2(&init, nix::mount::MntFlags::MNT_DETACH)
                .map_err(|e| Error::io(format!("unmounting {}", init.display()), e.into()))?,
            None if mounted => nix::mount::umount2(&self.merged, nix::mount::MntFlags::MNT_DETACH)
                .map_err(|e| {
                    Error::io(format!("unmounting {}", self.merged.display()), e.into())
                })?,
            None => {}
        }
        Ok(())
    }

    fn remove_owned(&mut self) -> Result<()> {
        for d in std::mem::take(&mut self.owned) {
            match remove_tree(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("removing {}", d.display()), e)),
            }
        }
        Ok(())
    }
}

impl Drop for Rootfs {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            eprintln!("cairn: warning: cleaning up a rootfs: {e}");
        }
    }
}

/// The entries of its directory a [`Rootfs`] makes (and removes).
fn own_entries(dir: &Path) -> Vec<PathBuf> {
    ["upper", "work", "init", "merged", "base", "flat"]
        .iter()
        .map(|n| dir.join(n))
        .collect()
}

/// Makes `d` (mode 0755), or takes it as it is when a recycled root left it there (see
/// [`Rootfs::release_for_reuse`]): then it must be as that left it, an empty directory without
/// xattrs; a work dir gets the marker of a volatile mount removed, which overlayfs would refuse.
fn make_or_reuse_dir(d: &Path) -> io::Result<()> {
    match fs::DirBuilder::new().mode(0o755).create(d) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        r => return r,
    }
    if d.file_name() == Some(OsStr::new("work")) {
        return remove_volatile_marker(d);
    }
    if !is_pristine_dir(d) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "left over by another root and not empty",
        ));
    }
    Ok(())
}

/// An empty, real directory (not a symlink) with no extended attributes but overlayfs's own
/// (an upper dir keeps the `trusted.overlay.uuid` of the mount; the next mount takes it over).
fn is_pristine_dir(d: &Path) -> bool {
    let is_dir = fs::symlink_metadata(d).is_ok_and(|m| m.is_dir());
    is_dir
        && fs::read_dir(d).is_ok_and(|mut it| it.next().is_none())
        && copy::list_xattrs(d).is_ok_and(|names| {
            names
                .iter()
                .all(|n| n.to_bytes().starts_with(b"trusted.overlay."))
        })
}

/// What a volatile overlay mount leaves in its work dir (`work/incompat/volatile/dirty`):
/// overlayfs refuses to mount over a work dir that still holds it. NotFound is fine.
fn remove_volatile_marker(work: &Path) -> io::Result<()> {
    remove_named(work, &VOLATILE_MARKER)
}

/// The marker of a volatile mount inside an overlay work dir, innermost first.
const VOLATILE_MARKER: [(&str, bool); 3] = [
    ("work/incompat/volatile/dirty", false),
    ("work/incompat/volatile", true),
    ("work/incompat", true),
];

/// Removes the entries `(path relative to dir, is a directory)` in order, one syscall each;
/// a missing one is fine, the first other error stops.
fn remove_named(dir: &Path, entries: &[(&str, bool)]) -> io::Result<()> {
    for &(rel, is_dir) in entries {
        let p = dir.join(rel);
        let r = if is_dir {
            fs::remove_dir(&p)
        } else {
            fs::remove_file(&p)
        };
        match r {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `remove_dir_all`, with a fast path for what a run usually leaves: an empty upper dir or mount
/// point, an overlay work dir holding only what overlayfs made in it (`work/`,
/// `work/incompat/volatile/dirty`). Those go by name, one syscall each (rmdir is the expensive
/// part on ext4, the directory walk doubles it); anything else falls back to the walk. Only the
/// work dir gets names tried inside it: the container cannot write there, while a name in the
/// upper dir could be its symlink.
fn remove_tree(d: &Path) -> io::Result<()> {
    if d.file_name() == Some(OsStr::new("work")) {
        let [dirty, volatile, incompat] = VOLATILE_MARKER;
        // Not the expected shape (an error): the walk below handles it.
        let _ = remove_named(d, &[dirty, volatile, incompat, ("work", true)]);
    }
    match fs::remove_dir(d) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(e),
        Err(_) => fs::remove_dir_all(d),
    }
}

/// Overlay roots in use, by merged path: what `run` needs to tell which directories its mount
/// points copied up, and what `diff_source` needs to remove them.
#[derive(Debug, Default)]
struct Registered {
    upper: PathBuf,
    /// Lowerdirs, top first (the init layer included).
    layers: Vec<PathBuf>,
    /// Directories (relative to the root) copied up into the upper dir by mount points.
    dirs: Vec<String>,
}

static OVERLAYS: Mutex<Option<HashMap<PathBuf, Registered>>> = Mutex::new(None);

fn register(merged: &Path, upper: &Path, layers: Vec<PathBuf>) {
    if let Ok(mut g) = OVERLAYS.lock() {
        g.get_or_insert_with(HashMap::new).insert(
            merged.to_path_buf(),
            Registered {
                upper: upper.to_path_buf(),
                layers,
                dirs: Vec::new(),
            },
        );
    }
}

fn unregister(merged: &Path) {
    if let Ok(mut g) = OVERLAYS.lock() {
        if let Some(m) = g.as_mut() {
            m.remove(merged);
        }
    }
}

/// The upper dir of the overlay root mounted on `merged`, if it is one of ours.
pub(crate) fn overlay_upper(merged: &Path) -> Option<PathBuf> {
    let g = OVERLAYS.lock().ok()?;
    g.as_ref()?.get(merged).map(|r| r.upper.clone())
}

/// Records directories (relative paths) that mount points of a run copied up in `merged`.
pub(crate) fn record_copied_up(merged: &Path, dirs: Vec<String>) {
    if let Ok(mut g) = OVERLAYS.lock() {
        if let Some(r) = g.as_mut().and_then(|m| m.get_mut(merged)) {
            r.dirs.extend(dirs);
        }
    }
}

fn take_copied_up(merged: &Path) -> Registered {
    let Ok(mut g) = OVERLAYS.lock() else {
        return Registered::default();
    };
    match g.as_mut().and_then(|m| m.get_mut(merged)) {
        Some(r) => Registered {
            upper: r.upper.clone(),
            layers: r.layers.clone(),
            dirs: std::mem::take(&mut r.dirs),
        },
        None => Registered::default(),
    }
}

/// Keeps only the topmost occurrence of each snapshot (bottom first in, bottom first out).
///
/// An image can hold the same layer twice (`COPY a /a`, `RUN rm /a`, `COPY a /a`), and overlayfs
/// refuses a mount whose lower dirs repeat (ELOOP). Dropping the lower copy changes nothing: the
/// upper one adds the same files and the same whiteouts, over everything below it.
fn topmost_occurrences(lowers: &[PathBuf]) -> Vec<PathBuf> {
    let mut seen = std::collections::HashSet::new();
    let mut top_first: Vec<PathBuf> = lowers
        .iter()
        .rev()
        .filter(|p| seen.insert(p.as_path()))
        .cloned()
        .collect();
    top_first.reverse();
    top_first
}

/// Removes from `upper` the recorded directories that are still pure copies of the image's: empty,
/// not opaque, with the owner, mode and mtime the lowers give them. Deepest first, so that a
/// parent emptied by its child goes too.
fn remove_pure_copy_ups(upper: &Path, layers: &[PathBuf], dirs: &[String]) {
    use std::os::unix::fs::MetadataExt;
    let mut dirs: Vec<&String> = dirs.iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    dirs.dedup();
    let tops: Vec<&Path> = layers.iter().map(PathBuf::as_path).collect();
    for rel in dirs {
        let rel = rel.trim_start_matches('/');
        let p = upper.join(rel);
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        let empty = fs::read_dir(&p)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        let opaque = copy::get_xattr(&p, "trusted.overlay.opaque")
            .ok()
            .flatten()
            .is_some();
        let same = match copy::lookup_in_lowers(&tops, OsStr::new(rel)) {
            Some((_, l)) => {
                l.is_dir()
                    && (l.mode(), l.uid(), l.gid(), l.mtime(), l.mtime_nsec())
                        == (m.mode(), m.uid(), m.gid(), m.mtime(), m.mtime_nsec())
            }
            None => false,
        };
        if m.is_dir() && empty && !opaque && same {
            // The removal must not show as a change of the parent (which may be next in line).
            let parent = p.parent().map(Path::to_path_buf);
            let before = parent.as_ref().and_then(|d| fs::symlink_metadata(d).ok());
            if fs::remove_dir(&p).is_ok() {
                if let (Some(d), Some(b)) = (parent, before) {
                    let _ = copy::set_times(&d, &b);
                }
            }
        }
    }
}

/// Creates the init layer: the mount points of [`INIT_DIRS`], /etc/{resolv.conf,hosts,hostname}
/// and `extra` (path, is a directory), each with the attributes the image gives that path (and its
/// parents) when it has them, so the merged view and any copy-up into the change show the image's
/// metadata.
fn build_init_layer(
    init: &Path,
    lowers_top_first: &[&Path],
    extra: &[(String, bool)],
) -> io::Result<()> {
    if let Some(top) = lowers_top_first.first() {
        copy::copy_metadata_with(top, &fs::symlink_metadata(top)?, init, false)?;
    }
    let mut points: Vec<(String, bool)> = INIT_DIRS.iter().map(|d| (d.to_string(), true)).collect();
    points.extend(INIT_ETC_FILES.iter().map(|f| (format!("etc/{f}"), false)));
    points.extend(extra.iter().cloned());
    // Metadata is applied at the end, deepest first: creating an entry moves its parent's mtime.
    let mut fixups: Vec<(PathBuf, PathBuf, fs::Metadata)> = Vec::new();
    for (path, is_dir) in &points {
        add_mount_point(init, lowers_top_first, path, *is_dir, &mut fixups)?;
    }
    fixups.sort_by_key(|(p, _, _)| std::cmp::Reverse(p.components().count()));
    for (dst, src, m) in fixups {
        copy::copy_metadata_with(&src, &m, &dst, false)?;
    }
    Ok(())
}

fn add_mount_point(
    init: &Path,
    lowers_top_first: &[&Path],
    path: &str,
    is_dir: bool,
    fixups: &mut Vec<(PathBuf, PathBuf, fs::Metadata)>,
) -> io::Result<()> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() || parts.contains(&"..") {
        return Ok(());
    }
    // Check the whole path first: a symlink or a file of the image on the way is the image's
    // business (the run resolves it inside the rootfs), never shadowed by this layer.
    let mut found = Vec::with_capacity(parts.len());
    for i in 0..parts.len() {
        let rel = parts[..=i].join("/");
        let last = i + 1 == parts.len();
        let hit = copy::lookup_in_lowers(lowers_top_first, OsStr::new(&rel));
        match &hit {
            Some((_, m)) if !last && !m.is_dir() => return Ok(()),
            Some((_, m)) if last && (m.is_dir() != is_dir || m.file_type().is_symlink()) => {
                return Ok(())
            }
            _ => {}
        }
        found.push(hit);
    }
    for (i, hit) in found.into_iter().enumerate() {
        let dst = init.join(parts[..=i].join("/"));
        if fs::symlink_metadata(&dst).is_ok() {
            continue;
        }
        if i + 1 < parts.len() || is_dir {
            fs::DirBuilder::new().mode(0o755).create(&dst)?;
        } else {
            fs::File::create(&dst)?;
        }
        if let Some((src, m)) = hit {
            fixups.push((dst, src, m));
        }
    }
    Ok(())
}

/// Overlay mounts are made `volatile` (Linux 5.10+): no sync of the upper dir at unmount, which
/// otherwise is most of the cost of a short run. Safe here because an upper dir is never mounted
/// again: after a crash it is garbage whatever its state; while the machine is up, the change is
/// read from the page cache like any file.
///
/// The kernel takes one page of mount options; overlayfs at most 500 layers (OVL_MAX_STACK).
const MAX_OPTIONS: usize = 4000;
const MAX_LAYERS: usize = 500;

fn mount_overlay(
    layers_top_first: &[&Path],
    upper: &Path,
    work: &Path,
    merged: &Path,
) -> Result<()> {
    if layers_top_first.len() > MAX_LAYERS {
        return Err(Error::Setup(format!(
            "{} layers: overlayfs stacks at most {MAX_LAYERS}",
            layers_top_first.len()
        )));
    }
    // The new mount API takes one lowerdir per call ("lowerdir+", Linux 6.8): no length limit.
    match mount_overlay_fsconfig(layers_top_first, upper, work, merged) {
        Ok(()) => return Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EINVAL)) => {}
        Err(e) => {
            return Err(Error::io(
                format!("mounting overlay on {}", merged.display()),
                e,
            ))
        }
    }
    // Older kernels: one option string. Descriptor paths are short and fixed-size, so a long
    // chain of long snapshot paths still fits.
    let mut fds = Vec::new();
    let mut lower_opt = String::new();
    for l in layers_top_first {
        let fd = rustix::fs::open(
            *l,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| Error::io(format!("opening {}", l.display()), e.into()))?;
        if !lower_opt.is_empty() {
            lower_opt.push(':');
        }
        lower_opt.push_str(&format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&fd)
        ));
        fds.push(fd);
    }
    let data = format!(
        "lowerdir={lower_opt},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    if data.len() > MAX_OPTIONS {
        return Err(Error::Setup(format!(
            "{} layers do not fit in one overlay mount on this kernel (needs Linux 6.8)",
            layers_top_first.len()
        )));
    }
    let mount = |data: &str| {
        nix::mount::mount(
            Some("overlay"),
            merged,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(data),
        )
    };
    let upper_opts: String = SELF_CONTAINED_UPPER
        .iter()
        .map(|(k, v)| format!(",{k}={v}"))
        .collect();
    // Each option the kernel may not know (volatile: 5.10, metacopy: 4.19) is dropped in turn.
    mount(&format!("{data}{upper_opts},volatile"))
        .or_else(|_| mount(&format!("{data}{upper_opts}")))
        .or_else(|_| mount(&data))
        .map_err(|e| {
            Error::io(
                format!("mounting overlay on {}", merged.display()),
                e.into(),
            )
        })
}

/// Overlay features that would make the upper dir depend on the lower layers (a metadata-only
/// copy-up, a directory rename recorded as a redirect, inode index entries), forced off whatever
/// the kernel's defaults: the upper dir is read as a layer diff and kept as a snapshot on its own.
const SELF_CONTAINED_UPPER: [(&str, &str); 3] = [
    ("metacopy", "off"),
    ("redirect_dir", "off"),
    ("index", "off"),
];

fn mount_overlay_fsconfig(
    layers_top_first: &[&Path],
    upper: &Path,
    work: &Path,
    merged: &Path,
) -> io::Result<()> {
    use rustix::mount::{
        fsconfig_create, fsconfig_set_string, fsmount, fsopen, move_mount, FsMountFlags,
        FsOpenFlags, MountAttrFlags, MoveMountFlags,
    };
    let fs_fd = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    for l in layers_top_first {
        fsconfig_set_string(&fs_fd, "lowerdir+", *l)?;
    }
    fsconfig_set_string(&fs_fd, "upperdir", upper)?;
    fsconfig_set_string(&fs_fd, "workdir", work)?;
    for (key, value) in SELF_CONTAINED_UPPER {
        fsconfig_set_string(&fs_fd, key, value)?;
    }
    // See VOLATILE: a kernel without it (< 5.10) has no "lowerdir+" either.
    rustix::mount::fsconfig_set_flag(&fs_fd, "volatile")?;
    fsconfig_create(&fs_fd)?;
    let mnt = fsmount(
        &fs_fd,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::empty(),
    )?;
    move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        merged,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn remove_tree_takes_overlay_work_dirs_by_name_and_never_follows_the_upper_dirs_links() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("c");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(outside.join("volatile")).unwrap();
        std::fs::write(outside.join("volatile/dirty"), b"keep").unwrap();
        // What a volatile overlay mount leaves in its work dir.
        std::fs::create_dir_all(dir.join("work/work/incompat/volatile")).unwrap();
        std::fs::write(dir.join("work/work/incompat/volatile/dirty"), b"").unwrap();
        std::fs::create_dir_all(dir.join("upper/d")).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("upper/incompat")).unwrap();
        std::fs::create_dir_all(dir.join("work2/work/x")).unwrap();
        super::remove_tree(&dir.join("work")).unwrap();
        super::remove_tree(&dir.join("upper")).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("work2/incompat")).unwrap();
        super::remove_tree(&dir.join("work2")).unwrap();
        assert!(
            matches!(super::remove_tree(&dir.join("upper")), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
        );
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        assert_eq!(
            std::fs::read(outside.join("volatile/dirty")).unwrap(),
            b"keep"
        );
    }

    #[test]
    fn repeated_layers_keep_their_top_position() {
        let p = |s: &str| std::path::PathBuf::from(s);
        assert_eq!(
            super::topmost_occurrences(&[p("base"), p("x"), p("rm"), p("x"), p("y")]),
            vec![p("base"), p("rm"), p("x"), p("y")]
        );
    }

    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn detection_follows_the_environment_and_the_scratch_filesystem() {
        // One test for the env var: tests run in parallel threads of one process.
        std::env::set_var("CAIRN_SNAPSHOTTER", "native");
        assert_eq!(SnapshotterKind::detect(), SnapshotterKind::Native);
        std::env::set_var("CAIRN_SNAPSHOTTER", "overlay");
        assert_eq!(
            SnapshotterKind::detect_for(Path::new("/")),
            SnapshotterKind::Overlay
        );
        std::env::remove_var("CAIRN_SNAPSHOTTER");
        assert_eq!(
            SnapshotterKind::parse("native"),
            Some(SnapshotterKind::Native)
        );
        assert_eq!(SnapshotterKind::parse("zfs"), None);
    }

    #[test]
    fn init_layer_copies_image_metadata_and_respects_symlinked_etc() {
        let t = tempfile::tempdir().unwrap();
        let lower = t.path().join("lower");
        fs::create_dir_all(lower.join("etc")).unwrap();
        fs::set_permissions(lower.join("etc"), fs::Permissions::from_mode(0o750)).unwrap();
        fs::write(lower.join("etc/hosts"), b"image hosts").unwrap();
        let init = t.path().join("init");
        fs::create_dir(&init).unwrap();
        build_init_layer(&init, &[lower.as_path()], &[("/srv/data/m".into(), true)]).unwrap();
        assert!(init.join("srv/data/m").is_dir());
        let etc = fs::metadata(init.join("etc")).unwrap();
        assert_eq!(etc.mode() & 0o777, 0o750);
        assert_eq!(
            etc.mtime(),
            fs::metadata(lower.join("etc")).unwrap().mtime()
        );
        assert!(init.join("proc").is_dir() && init.join("etc/resolv.conf").is_file());
        let hosts = fs::metadata(init.join("etc/hosts")).unwrap();
        assert_eq!((hosts.uid(), hosts.len()), (0, 0), "an empty mount point");

        let lower2 = t.path().join("lower2");
        fs::create_dir(&lower2).unwrap();
        std::os::unix::fs::symlink("/somewhere", lower2.join("etc")).unwrap();
        let init2 = t.path().join("init2");
        fs::create_dir(&init2).unwrap();
        build_init_layer(&init2, &[lower2.as_path()], &[("/etc/x/y".into(), false)]).unwrap();
        assert!(
            !init2.join("etc").exists(),
            "a symlinked /etc of the image must not be shadowed"
        );
    }
}
