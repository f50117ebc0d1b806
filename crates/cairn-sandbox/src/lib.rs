//! The sandbox: prepare a root filesystem over overlay snapshots (or a copied tree), run one
//! process in fresh namespaces inside it, stream its output, return its exit code, and hand back
//! the upper dir as the change.
//!
//! CONTRACT (cairn-build and the CLI are written against it in parallel; add freely, change a
//! signature only together with its callers):
//!
//! ```text
//! enter_private_mount_namespace() -> Result<()>   // first thing in main, before any thread: every
//!                                                  // mount cairn makes dies with the process
//! enum SnapshotterKind { Overlay, Native }         // Native: copy lowers into one dir, diff by compare
//! SnapshotterKind::detect() -> SnapshotterKind
//! Rootfs::prepare(lowers: &[PathBuf] /* bottom first */, scratch: &Path /* temp dir to use */,
//!                 kind: SnapshotterKind) -> Result<Rootfs>
//! rootfs.path() -> &Path                           // the merged root
//! rootfs.diff_source() -> cairn_layer::DiffSource  // OverlayUpper(upper) or Compare{lower, upper}
//! drop(rootfs)                                     // unmounts and removes its temp dirs
//! ProcessSpec { args: Vec<String>, env: Vec<String> /* K=V */, user: String /* "" = root */,
//!               cwd: String, hostname: String, network: Network /* Host | None */,
//!               mounts: Vec<MountSpec>, tty: bool, stdin: bool }
//! MountSpec { kind: Bind { source: PathBuf, readonly: bool } | Tmpfs { size: Option<u64> }, target: String }
//! run(rootfs: &Path, &ProcessSpec, on_output: &mut dyn FnMut(OutputStream, &[u8])) -> Result<i32>
//! user::resolve(rootfs: &Path, spec: &str /* name|uid[:group|gid] */) -> Result<ResolvedUser{uid, gid, groups, home}>
//! ```
