//! The sandbox: prepare a root filesystem over overlay snapshots (or a copied tree), run one
//! process in fresh namespaces inside it, stream its output, return its exit code, and hand back
//! the upper dir as the change.
//!
//! CONTRACT (cairn-build and the CLI are written against it in parallel; add freely, change a
//! signature only together with its callers):
//!
//! ```text
//! maybe_run_init()                                 // FIRST line of every main() that runs containers:
//!                                                  // the container init is this same binary re-exec'd
//! enter_private_mount_namespace() -> Result<()>   // first thing in main, before any thread: every
//!                                                  // mount cairn makes dies with the process
//! enum SnapshotterKind { Overlay, Native }         // Native: copy lowers into one dir, diff by compare
//! SnapshotterKind::detect() -> SnapshotterKind     // CAIRN_SNAPSHOTTER=overlay|native overrides
//! SnapshotterKind::detect_for(scratch) -> SnapshotterKind  // + Native when scratch is on overlayfs
//! Rootfs::prepare(lowers: &[PathBuf] /* bottom first */, scratch: &Path /* temp dir to use */,
//!                 kind: SnapshotterKind) -> Result<Rootfs>
//! Rootfs::prepare_with_mounts(lowers, scratch, kind, &[MountSpec]) -> Result<Rootfs>
//!                                                  // + mount points kept out of the upper dir
//! Rootfs::prepare_in(lowers, dir, kind, &[MountSpec], UpperDir::Disk|Memory) -> Result<Rootfs>
//!                                                  // in `dir` itself (its upper/work/init/...);
//!                                                  // Memory: upper and work in the init tmpfs
//! rootfs.path() -> &Path                           // the merged root
//! rootfs.diff_source() -> cairn_layer::DiffSource  // OverlayUpper(upper) or Compare{lower, upper}
//! drop(rootfs)                                     // unmounts and removes its temp dirs
//! ProcessSpec { args: Vec<String>, env: Vec<String> /* K=V */, user: String /* "" = root */,
//!               cwd: String, hostname: String, network: Network /* Host | None */,
//!               mounts: Vec<MountSpec>, tty: bool, stdin: bool }
//! MountSpec { kind: Bind { source: PathBuf, readonly: bool } | Tmpfs { size: Option<u64> }, target: String }
//! run(rootfs: &Path, &ProcessSpec, on_output: &mut dyn FnMut(OutputStream, &[u8])) -> Result<i32>
//! run_with(rootfs, &ProcessSpec, on_output, &mut RunHooks) -> Result<i32>   // + init pid callback
//! exec_in(container_pid, &ProcessSpec, on_output, &mut RunHooks) -> Result<i32>  // docker exec
//! kill_all_running()                               // from a signal handler thread: SIGKILL every
//!                                                  // container this process started
//! kill_containers_on_termination() / forward_termination_signals()  // SIGINT/TERM/HUP policy
//! kill_containers_on_termination_without_thread() // same policy, signals taken by `run` itself
//!                                                  // (keeps a one-thread caller one-threaded)
//! termination_signal() -> Option<i32>
//! user::resolve(rootfs: &Path, spec: &str /* name|uid[:group|gid] */) -> Result<ResolvedUser{uid, gid, groups, home}>
//! ```
//!
//! # How a run works
//!
//! `run` is called in the (possibly multi-threaded) cairn process. It resolves the user, creates
//! the mount points that are missing in the rootfs (and removes them afterwards, so no trace of
//! them reaches a layer), then starts the init, "A": a plain fork when the calling process has a
//! single thread (`cairn run`: no exec of the big binary), otherwise `/proc/self/exe
//! __cairn-init` with the plan on fd 3 (a fork of a multi-threaded process could deadlock on a
//! lock another thread held). Either way A is a single-threaded process, which unshares the mount, PID, UTS, IPC (and, for
//! `Network::None`, network) namespaces and forks "B", PID 1 of the new PID namespace: B builds
//! the mounts, pivots into the rootfs and forks "C", which switches user, drops capabilities and
//! execs the command. B reaps zombies and exits with C's status; A waits for B and exits with it.
//! A dies with the thread that spawned it (`PR_SET_PDEATHSIG`), B dies with A, and the whole PID
//! namespace dies with B: killing cairn leaves no process behind.
//!
//! # What never reaches a layer
//!
//! The overlay rootfs is `init` (a tmpfs with the mount points /proc, /dev, /sys,
//! /etc/{resolv.conf,hosts,hostname} and those of `prepare_with_mounts`, each with the image's
//! metadata: docker's "-init" layer) over the snapshots, under a fresh upper dir, mounted
//! `volatile`. The /etc files are written by the init into the container's own /dev tmpfs and
//! bound from there. Mount points the image lacks and the init layer does not have are created
//! by `run` and removed after it with their parent's times restored (BuildKit's stub cleaner);
//! with the native snapshotter that is the only mechanism. Every target is resolved inside the
//! rootfs (`RESOLVE_IN_ROOT`), so no symlink of the image can place a mount on the host.
//!
//! With a tty the process opens its terminal in the container's devpts and the master comes back
//! over a unix socket (runc's console socket), so `tty` names `/dev/pts/0`.
//!
//! ```no_run
//! use cairn_sandbox::{ProcessSpec, Rootfs, SnapshotterKind};
//! # fn main() -> Result<(), cairn_sandbox::Error> {
//! cairn_sandbox::maybe_run_init();
//! cairn_sandbox::enter_private_mount_namespace()?;
//! let lowers = vec!["/var/lib/cairn/snapshots/abc".into()];
//! let rootfs = Rootfs::prepare(&lowers, "/var/lib/cairn/tmp/x".as_ref(), SnapshotterKind::detect())?;
//! let spec = ProcessSpec { args: vec!["/bin/sh".into(), "-c".into(), "echo hi > /x".into()], ..Default::default() };
//! let code = cairn_sandbox::run(rootfs.path(), &spec, &mut |_, bytes| print!("{}", String::from_utf8_lossy(bytes)))?;
//! assert_eq!(code, 0);
//! let _change = rootfs.diff_source(); // OverlayUpper(upper) containing /x
//! # Ok(()) }
//! ```

mod caps_set;
mod copy;
mod error;
mod init;
mod process;
mod rootfs;
mod setup;
mod spec;
mod stubs;
pub mod syscall;
pub mod tty;
pub mod user;

pub use caps_set::DEFAULT_CAPABILITIES;
pub use error::{Error, Result};
pub use init::{maybe_run_init, INIT_ARG};
pub use process::{
    exec_in, forward_termination_signals, kill_all_running, kill_containers_on_termination,
    kill_containers_on_termination_without_thread, run, run_with, signal_all_running,
    termination_signal, RunHooks,
};
pub use rootfs::{Rootfs, SnapshotterKind, UpperDir};
pub use setup::{ContainerPlan, PlannedMount, PlannedMountKind};
pub use spec::{MountKind, MountSpec, Network, OutputStream, ProcessSpec, DEFAULT_PATH};

use std::sync::atomic::{AtomicBool, Ordering};

static IN_PRIVATE_NS: AtomicBool = AtomicBool::new(false);

/// Moves the calling process into a new mount namespace whose mounts are all private, so that
/// every mount cairn makes afterwards (overlay roots, binds) is invisible to the host and is torn
/// down by the kernel when the process exits, even on `kill -9`.
///
/// Call it before any thread is spawned: `unshare(CLONE_NEWNS)` fails with `EINVAL` in a
/// process whose filesystem context is shared with other threads. Calling it again is a no-op.
pub fn enter_private_mount_namespace() -> Result<()> {
    use nix::mount::{mount, MsFlags};
    use nix::sched::{unshare, CloneFlags};
    if IN_PRIVATE_NS.load(Ordering::SeqCst) {
        return Ok(());
    }
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| {
        Error::io(
            "unshare(CLONE_NEWNS) (cairn needs root to run containers)",
            e.into(),
        )
    })?;
    // The new namespace starts as a copy with the host's propagation: without this, our mounts
    // would propagate back into shared host mounts.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| Error::io("making / private", e.into()))?;
    IN_PRIVATE_NS.store(true, Ordering::SeqCst);
    Ok(())
}
