//! The container set-up logic, written against [`Syscall`] so that it is unit-tested without root:
//! which mounts a container gets, in which order and with which flags, and how the process's
//! identity is taken on.

use crate::caps_set::DEFAULT_CAPABILITIES;
use crate::spec::{MountKind, MountSpec, Network};
use crate::syscall::Syscall;
use nix::mount::MsFlags;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Everything the init process needs, computed by the caller (user resolved, env completed,
/// mounts ordered) so that the init does no policy of its own. Sent as JSON on fd 3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerPlan {
    /// The prepared root (a mount point or a plain directory).
    pub rootfs: PathBuf,
    /// argv; `args[0]` is looked up in `env`'s PATH inside the container.
    pub args: Vec<String>,
    /// The complete environment.
    pub env: Vec<String>,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (the primary one included).
    pub groups: Vec<u32>,
    /// Working directory inside the container; created if missing.
    pub cwd: String,
    /// Hostname to set, if any.
    pub hostname: Option<String>,
    /// Network namespace.
    pub network: Network,
    /// Mounts after the standard ones, parents before children.
    pub mounts: Vec<PlannedMount>,
    /// The process runs on a terminal (its stdin is a pty slave that becomes its controlling tty).
    pub tty: bool,
    /// Instead of creating a container, join the namespaces of the running one whose PID 1 has
    /// this host PID (an exec, e.g. a health check); `rootfs` and `mounts` are then unused.
    #[serde(default)]
    pub join: Option<u32>,
    /// Keep every capability (see [`crate::ProcessSpec::privileged`]).
    #[serde(default)]
    pub privileged: bool,
}

/// A mount of a [`ContainerPlan`]: one of the user's [`MountSpec`]s or a generated /etc file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedMount {
    /// What is mounted.
    pub kind: PlannedMountKind,
    /// Absolute path inside the container.
    pub target: String,
}

/// The kind of a [`PlannedMount`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlannedMountKind {
    /// A host path.
    Bind {
        /// Host path.
        source: PathBuf,
        /// Read-only.
        readonly: bool,
    },
    /// A fresh tmpfs.
    Tmpfs {
        /// Size limit in bytes.
        size: Option<u64>,
    },
    /// A file with these contents (/etc/hosts and friends), written by the init into the
    /// container's /dev tmpfs and bound from there: no temp file on disk.
    Generated {
        /// The file's contents.
        contents: String,
    },
}

impl From<MountSpec> for PlannedMount {
    fn from(m: MountSpec) -> PlannedMount {
        PlannedMount {
            kind: match m.kind {
                MountKind::Bind { source, readonly } => PlannedMountKind::Bind { source, readonly },
                MountKind::Tmpfs { size } => PlannedMountKind::Tmpfs { size },
            },
            target: m.target,
        }
    }
}

impl PlannedMount {
    /// Whether the mount point must be a directory (a bind of a file needs a file).
    pub(crate) fn wants_dir(&self) -> bool {
        match &self.kind {
            PlannedMountKind::Bind { source, .. } => source.is_dir(),
            PlannedMountKind::Tmpfs { .. } => true,
            PlannedMountKind::Generated { .. } => false,
        }
    }
}

/// The /etc files every container gets, generated.
pub(crate) fn etc_mounts(resolv: String, hosts: String, hostname: String) -> Vec<PlannedMount> {
    [
        ("/etc/resolv.conf", resolv),
        ("/etc/hosts", hosts),
        ("/etc/hostname", hostname),
    ]
    .into_iter()
    .map(|(target, contents)| PlannedMount {
        kind: PlannedMountKind::Generated { contents },
        target: target.to_string(),
    })
    .collect()
}

/// Orders the user's mounts and the generated ones: parents before children (so that a mount on
/// /a/b is not hidden by a later one on /a), the user's own mount winning over a generated one on
/// the same target (docker skips its /etc/hosts when the user mounts one).
pub(crate) fn plan_mounts(user: &[MountSpec], generated: Vec<PlannedMount>) -> Vec<PlannedMount> {
    let mut all: Vec<PlannedMount> = generated
        .into_iter()
        .filter(|g| {
            !user
                .iter()
                .any(|u| clean_target(&u.target) == clean_target(&g.target))
        })
        .collect();
    all.extend(user.iter().cloned().map(PlannedMount::from));
    all.sort_by_key(|m| depth(&m.target));
    all
}

fn clean_target(t: &str) -> String {
    let parts: Vec<&str> = t
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

fn depth(t: &str) -> usize {
    t.split('/').filter(|p| !p.is_empty() && *p != ".").count()
}

/// Checks a mount target: absolute, no `..` (docker refuses them; inside the rootfs they could
/// only be resolved against the image's own symlinks, which is never what the user meant).
pub(crate) fn validate_target(target: &str) -> Result<(), String> {
    if !target.starts_with('/') {
        return Err(format!("mount target {target:?} must be an absolute path"));
    }
    if target.split('/').any(|p| p == "..") {
        return Err(format!("mount target {target:?} must not contain \"..\""));
    }
    if clean_target(target) == "/" {
        return Err("mount target cannot be /".into());
    }
    Ok(())
}

const DEV_NODES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// Kernel interfaces docker hides from containers (files: /dev/null over them; dirs: empty tmpfs).
const MASKED_FILES: [&str; 6] = [
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
];
const MASKED_DIRS: [&str; 4] = [
    "/proc/acpi",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
/// Kernel interfaces docker makes read-only in containers.
const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

type SetupResult = Result<(), String>;

fn ctx<T>(r: std::io::Result<T>, what: impl FnOnce() -> String) -> Result<T, String> {
    r.map_err(|e| format!("{}: {e}", what()))
}

/// Builds the container's mount tree on `plan.rootfs` and pivots into it. Runs in PID 1 of the new
/// PID namespace (so that /proc shows the container's processes), inside the new mount namespace.
/// Every target is resolved inside the rootfs, so a symlink in the image cannot redirect a mount
/// onto the host.
pub fn setup_rootfs(sys: &dyn Syscall, plan: &ContainerPlan) -> SetupResult {
    let root = plan.rootfs.as_path();
    let none = None::<&str>;
    // pivot_root needs the new root to be a mount point; a native (copied) rootfs is a plain dir.
    ctx(
        sys.mount(
            Some(root),
            root,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            none,
        ),
        || format!("bind-mounting {}", root.display()),
    )?;

    let proc_ = ctx(sys.open_in_root(root, "/proc"), || "resolving /proc".into())?;
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    ctx(
        sys.mount(
            Some(Path::new("proc")),
            proc_.path(),
            Some("proc"),
            nosuid_nodev_noexec,
            none,
        ),
        || "mounting /proc".into(),
    )?;
    drop(proc_);

    setup_dev(sys, root)?;

    let sys_ = ctx(sys.open_in_root(root, "/sys"), || "resolving /sys".into())?;
    ctx(
        sys.mount(
            Some(Path::new("sysfs")),
            sys_.path(),
            Some("sysfs"),
            nosuid_nodev_noexec | MsFlags::MS_RDONLY,
            none,
        ),
        || "mounting /sys".into(),
    )?;
    drop(sys_);

    for m in &plan.mounts {
        mount_one(sys, root, m)?;
    }

    mask_kernel_paths(sys, root)?;

    if let Some(name) = &plan.hostname {
        ctx(sys.sethostname(name), || {
            format!("setting hostname {name:?}")
        })?;
    }
    ctx(sys.pivot_root(root), || {
        format!("pivot_root into {}", root.display())
    })
}

fn setup_dev(sys: &dyn Syscall, root: &Path) -> SetupResult {
    let dev = ctx(sys.open_in_root(root, "/dev"), || "resolving /dev".into())?;
    ctx(
        sys.mount(
            Some(Path::new("tmpfs")),
            dev.path(),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
            Some("mode=755,size=65536k"),
        ),
        || "mounting /dev".into(),
    )?;
    drop(dev);
    // Re-resolve: the old handle names the directory under the tmpfs, not the tmpfs.
    let dev = ctx(sys.open_in_root(root, "/dev"), || "resolving /dev".into())?;
    let d = dev.path();
    for node in DEV_NODES {
        let target = d.join(node);
        ctx(sys.create_file(&target), || format!("creating /dev/{node}"))?;
        let host = PathBuf::from("/dev").join(node);
        ctx(
            sys.mount(Some(&host), &target, None, MsFlags::MS_BIND, None),
            || format!("binding host /dev/{node}"),
        )?;
    }
    ctx(sys.mkdir(&d.join("pts"), 0o755), || {
        "creating /dev/pts".into()
    })?;
    ctx(
        sys.mount(
            Some(Path::new("devpts")),
            &d.join("pts"),
            Some("devpts"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
        ),
        || "mounting /dev/pts".into(),
    )?;
    ctx(sys.symlink("pts/ptmx", &d.join("ptmx")), || {
        "creating /dev/ptmx".into()
    })?;
    ctx(sys.mkdir(&d.join("shm"), 0o1777), || {
        "creating /dev/shm".into()
    })?;
    ctx(
        sys.mount(
            Some(Path::new("shm")),
            &d.join("shm"),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=1777,size=65536k"),
        ),
        || "mounting /dev/shm".into(),
    )?;
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        ctx(sys.symlink(target, &d.join(link)), || {
            format!("creating /dev/{link}")
        })?;
    }
    Ok(())
}

fn mount_one(sys: &dyn Syscall, root: &Path, m: &PlannedMount) -> SetupResult {
    validate_target(&m.target)?;
    let target = match sys.open_in_root(root, &m.target) {
        Ok(h) => h,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && under_dev(&m.target) => {
            create_in_dev(sys, root, m)?;
            ctx(sys.open_in_root(root, &m.target), || {
                format!("resolving mount target {}", m.target)
            })?
        }
        Err(e) => return Err(format!("resolving mount target {}: {e}", m.target)),
    };
    match &m.kind {
        PlannedMountKind::Bind { source, readonly } => {
            ctx(
                sys.mount(
                    Some(source),
                    target.path(),
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                ),
                || format!("binding {} on {}", source.display(), m.target),
            )?;
            drop(target);
            if *readonly {
                // MS_RDONLY is ignored on the first bind; it takes a remount of the new mount.
                let mounted = ctx(sys.open_in_root(root, &m.target), || {
                    format!("resolving {}", m.target)
                })?;
                ctx(
                    sys.mount(
                        None,
                        mounted.path(),
                        None,
                        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                        None,
                    ),
                    || format!("making {} read-only", m.target),
                )?;
            }
        }
        PlannedMountKind::Tmpfs { size } => {
            let data = size.map(|s| format!("size={s}"));
            ctx(
                sys.mount(
                    Some(Path::new("tmpfs")),
                    target.path(),
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    data.as_deref(),
                ),
                || format!("mounting tmpfs on {}", m.target),
            )?;
        }
        PlannedMountKind::Generated { contents } => {
            // Written into our own /dev tmpfs, bound, then unlinked: the bind keeps the inode,
            // and the container never sees the source.
            let dev = ctx(sys.open_in_root(root, "/dev"), || "resolving /dev".into())?;
            let name: String = m
                .target
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            let source = dev.path().join(format!(".cairn{name}"));
            ctx(sys.write_file(&source, contents.as_bytes()), || {
                format!("writing {}", m.target)
            })?;
            ctx(
                sys.mount(Some(&source), target.path(), None, MsFlags::MS_BIND, None),
                || format!("binding {}", m.target),
            )?;
            ctx(sys.unlink(&source), || {
                format!("unlinking the source of {}", m.target)
            })?;
        }
    }
    Ok(())
}

/// Whether `target` lies in the container's /dev, a tmpfs made for this run: the caller cannot
/// create mount points there beforehand, and nothing created there reaches the rootfs.
pub(crate) fn under_dev(target: &str) -> bool {
    let t = clean_target(target);
    t.starts_with("/dev/")
}

fn create_in_dev(sys: &dyn Syscall, root: &Path, m: &PlannedMount) -> SetupResult {
    let dev = ctx(sys.open_in_root(root, "/dev"), || "resolving /dev".into())?;
    let t = clean_target(&m.target);
    let parts: Vec<&str> = t.trim_start_matches("/dev/").split('/').collect();
    let is_dir = m.wants_dir();
    let mut p = dev.path().to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        p.push(part);
        let r = if i + 1 < parts.len() || is_dir {
            sys.mkdir(&p, 0o755)
        } else {
            sys.create_file(&p)
        };
        ctx(r, || format!("creating mount point {}", m.target))?;
    }
    Ok(())
}

fn mask_kernel_paths(sys: &dyn Syscall, root: &Path) -> SetupResult {
    // Each path exists only on some kernels: a missing one is skipped, a failing mount is not.
    for p in MASKED_FILES {
        if let Ok(h) = sys.open_in_root(root, p) {
            ctx(
                sys.mount(
                    Some(Path::new("/dev/null")),
                    h.path(),
                    None,
                    MsFlags::MS_BIND,
                    None,
                ),
                || format!("masking {p}"),
            )?;
        }
    }
    for p in MASKED_DIRS {
        if let Ok(h) = sys.open_in_root(root, p) {
            ctx(
                sys.mount(
                    Some(Path::new("tmpfs")),
                    h.path(),
                    Some("tmpfs"),
                    MsFlags::MS_RDONLY,
                    None,
                ),
                || format!("masking {p}"),
            )?;
        }
    }
    for p in READONLY_PATHS {
        if let Ok(h) = sys.open_in_root(root, p) {
            ctx(
                sys.mount(
                    Some(h.path()),
                    h.path(),
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                ),
                || format!("binding {p}"),
            )?;
            drop(h);
            let h = ctx(sys.open_in_root(root, p), || format!("resolving {p}"))?;
            ctx(
                sys.mount(
                    None,
                    h.path(),
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                    None,
                ),
                || format!("making {p} read-only"),
            )?;
        }
    }
    Ok(())
}

/// Network set-up in the init before it forks PID 1: a new namespace only has a down loopback.
pub fn setup_network(sys: &dyn Syscall, network: Network) -> SetupResult {
    match network {
        Network::Host => Ok(()),
        Network::None => ctx(sys.loopback_up(), || "bringing loopback up".into()),
    }
}

/// PID 1 keeps root but only docker's default capabilities, for itself and what it forks; a
/// privileged plan keeps them all.
pub fn restrict_capabilities(sys: &dyn Syscall, privileged: bool) -> SetupResult {
    if privileged {
        return Ok(());
    }
    ctx(sys.limit_bounding_set(&DEFAULT_CAPABILITIES), || {
        "limiting the bounding set".into()
    })?;
    ctx(sys.set_capabilities(&DEFAULT_CAPABILITIES), || {
        "setting capabilities".into()
    })
}

/// Takes on the user of the plan: groups before ids (setgroups needs CAP_SETGID, which setuid to a
/// non-root user drops), then no_new_privs so that no setuid binary gains anything back.
pub fn become_user(sys: &dyn Syscall, plan: &ContainerPlan) -> SetupResult {
    ctx(sys.set_groups(&plan.groups), || {
        format!("setgroups {:?}", plan.groups)
    })?;
    ctx(sys.set_ids(plan.uid, plan.gid), || {
        format!("switching to uid {} gid {}", plan.uid, plan.gid)
    })?;
    ctx(sys.set_no_new_privs(), || "setting no_new_privs".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::{Call, RecordingSyscall};

    fn planned(v: Vec<MountSpec>) -> Vec<PlannedMount> {
        v.into_iter().map(PlannedMount::from).collect()
    }

    fn plan() -> ContainerPlan {
        ContainerPlan {
            rootfs: "/r".into(),
            args: vec!["true".into()],
            env: vec![],
            uid: 0,
            gid: 0,
            groups: vec![0],
            cwd: "/".into(),
            hostname: Some("box".into()),
            network: Network::Host,
            mounts: vec![],
            tty: false,
            join: None,
            privileged: false,
        }
    }

    fn mounts(calls: &[Call]) -> Vec<(PathBuf, Option<String>, MsFlags, Option<String>)> {
        calls
            .iter()
            .filter_map(|c| match c {
                Call::Mount {
                    target,
                    fstype,
                    flags,
                    data,
                    ..
                } => Some((target.clone(), fstype.clone(), *flags, data.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn standard_mounts_in_order_and_pivot_last() {
        let sys = RecordingSyscall::default();
        setup_rootfs(&sys, &plan()).unwrap();
        let calls = sys.calls();
        let m = mounts(&calls);
        assert_eq!(
            m[0].0,
            PathBuf::from("/r"),
            "rootfs bound onto itself first"
        );
        assert!(m[0].2.contains(MsFlags::MS_BIND));
        let proc_ = m.iter().find(|x| x.1.as_deref() == Some("proc")).unwrap();
        assert!(proc_
            .2
            .contains(MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV));
        let sysfs = m.iter().find(|x| x.1.as_deref() == Some("sysfs")).unwrap();
        assert!(
            sysfs.2.contains(MsFlags::MS_RDONLY),
            "/sys must be read-only"
        );
        let devpts = m.iter().find(|x| x.1.as_deref() == Some("devpts")).unwrap();
        assert!(devpts.3.as_deref().unwrap().contains("newinstance"));
        for node in DEV_NODES {
            assert!(
                calls.iter().any(|c| matches!(c, Call::Mount { source: Some(s), .. } if s == &PathBuf::from("/dev").join(node))),
                "host /dev/{node} bound"
            );
        }
        assert!(calls.contains(&Call::Symlink("pts/ptmx".into(), "/r/dev/ptmx".into())));
        assert!(calls.contains(&Call::Sethostname("box".into())));
        assert_eq!(calls.last(), Some(&Call::PivotRoot("/r".into())));
    }

    #[test]
    fn readonly_bind_is_remounted_and_tmpfs_gets_size() {
        let sys = RecordingSyscall::default();
        let mut p = plan();
        p.hostname = None;
        p.mounts = planned(vec![
            MountSpec {
                kind: MountKind::Bind {
                    source: "/host/data".into(),
                    readonly: true,
                },
                target: "/data".into(),
            },
            MountSpec {
                kind: MountKind::Tmpfs {
                    size: Some(1 << 20),
                },
                target: "/scratch".into(),
            },
        ]);
        setup_rootfs(&sys, &p).unwrap();
        let calls = sys.calls();
        let m = mounts(&calls);
        let data: Vec<_> = m.iter().filter(|x| x.0 == Path::new("/r/data")).collect();
        assert_eq!(data.len(), 2);
        assert!(data[0].2.contains(MsFlags::MS_BIND) && !data[0].2.contains(MsFlags::MS_REMOUNT));
        assert!(data[1].2.contains(MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY));
        let tmp = m.iter().find(|x| x.0 == Path::new("/r/scratch")).unwrap();
        assert_eq!(tmp.3.as_deref(), Some("size=1048576"));
        assert!(
            !calls.iter().any(|c| matches!(c, Call::Sethostname(_))),
            "no hostname asked, none set"
        );
    }

    #[test]
    fn escaping_targets_are_refused() {
        let sys = RecordingSyscall::default();
        let mut p = plan();
        p.mounts = planned(vec![MountSpec {
            kind: MountKind::Tmpfs { size: None },
            target: "/data/../../etc".into(),
        }]);
        let err = setup_rootfs(&sys, &p).unwrap_err();
        assert!(err.contains(".."), "{err}");
        assert!(!sys.calls().iter().any(|c| matches!(c, Call::PivotRoot(_))));
        assert!(validate_target("relative/x").is_err());
        assert!(validate_target("/").is_err());
        assert!(validate_target("/ok/x").is_ok());
    }

    #[test]
    fn mounts_are_ordered_parents_first_and_user_wins() {
        let bind = |t: &str, s: &str| MountSpec {
            kind: MountKind::Bind {
                source: s.into(),
                readonly: false,
            },
            target: t.into(),
        };
        let user = vec![
            bind("/a/b/c", "/h1"),
            bind("/a", "/h2"),
            bind("/etc/hosts", "/myhosts"),
        ];
        let planned = plan_mounts(&user, etc_mounts("r".into(), "h".into(), "n".into()));
        let targets: Vec<&str> = planned.iter().map(|m| m.target.as_str()).collect();
        assert_eq!(
            targets,
            [
                "/a",
                "/etc/resolv.conf",
                "/etc/hostname",
                "/etc/hosts",
                "/a/b/c"
            ]
        );
        assert!(planned.contains(&bind("/etc/hosts", "/myhosts").into()));
        assert!(planned.iter().any(|m| m.target == "/etc/resolv.conf"
            && m.kind
                == PlannedMountKind::Generated {
                    contents: "r".into()
                }));
    }

    #[test]
    fn identity_order_groups_then_ids_then_nnp() {
        let sys = RecordingSyscall::default();
        let mut p = plan();
        p.uid = 1000;
        p.gid = 1000;
        p.groups = vec![1000, 27];
        become_user(&sys, &p).unwrap();
        assert_eq!(
            sys.calls(),
            vec![
                Call::SetGroups(vec![1000, 27]),
                Call::SetIds(1000, 1000),
                Call::SetNoNewPrivs
            ]
        );
        let sys = RecordingSyscall::default();
        restrict_capabilities(&sys, false).unwrap();
        assert_eq!(
            sys.calls(),
            vec![
                Call::LimitBoundingSet(DEFAULT_CAPABILITIES.to_vec()),
                Call::SetCapabilities(DEFAULT_CAPABILITIES.to_vec())
            ]
        );
    }

    #[test]
    fn generated_files_are_written_in_dev_bound_and_unlinked() {
        let sys = RecordingSyscall::default();
        let mut p = plan();
        p.mounts = etc_mounts("nameserver 1.1.1.1\n".into(), "h".into(), "n".into());
        setup_rootfs(&sys, &p).unwrap();
        let calls = sys.calls();
        let src = PathBuf::from("/r/dev/.cairn-etc-resolv-conf");
        let w = calls
            .iter()
            .position(|c| *c == Call::WriteFile(src.clone(), b"nameserver 1.1.1.1\n".to_vec()))
            .unwrap();
        assert!(
            matches!(&calls[w + 1], Call::Mount { source: Some(s), target, .. } if *s == src && target == Path::new("/r/etc/resolv.conf"))
        );
        assert_eq!(calls[w + 2], Call::Unlink(src));
    }

    #[test]
    fn mount_points_in_dev_are_made_in_the_tmpfs() {
        let sys = RecordingSyscall::with_missing(&["/r/dev/pipes/sub"]);
        let mut p = plan();
        p.mounts = planned(vec![MountSpec {
            kind: MountKind::Tmpfs { size: None },
            target: "/dev/pipes/sub".into(),
        }]);
        setup_rootfs(&sys, &p).unwrap();
        let calls = sys.calls();
        let mk = |s: &str| Call::Mkdir(PathBuf::from(s));
        let i = calls.iter().position(|c| *c == mk("/r/dev/pipes")).unwrap();
        assert_eq!(calls[i + 1], mk("/r/dev/pipes/sub"));
        assert!(mounts(&calls)
            .iter()
            .any(|m| m.0 == Path::new("/r/dev/pipes/sub")));
        // Elsewhere a missing target is an error (the caller creates those).
        let sys = RecordingSyscall::with_missing(&["/r/data"]);
        p.mounts[0].target = "/data".into();
        assert!(setup_rootfs(&sys, &p).unwrap_err().contains("/data"));
    }

    #[test]
    fn network_none_brings_loopback_up() {
        let sys = RecordingSyscall::default();
        setup_network(&sys, Network::Host).unwrap();
        assert!(sys.calls().is_empty());
        setup_network(&sys, Network::None).unwrap();
        assert_eq!(sys.calls(), vec![Call::LoopbackUp]);
    }
}
