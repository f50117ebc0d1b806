//! The narrow interface between the container set-up logic and the kernel (youki's `Syscall`
//! idea): [`LinuxSyscall`] does the real calls, [`RecordingSyscall`] records them so that the
//! set-up logic is unit-tested without root.

use caps::Capability;
use nix::mount::MsFlags;
use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A path that names an object already resolved inside a root: for the Linux implementation an
/// `O_PATH` descriptor reached as `/proc/self/fd/N`, so a later symlink swap cannot redirect it.
#[derive(Debug)]
pub struct PathHandle {
    path: PathBuf,
    _fd: Option<OwnedFd>,
}

impl PathHandle {
    /// The path to hand to `mount(2)` and friends.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Every kernel call the container set-up makes.
pub trait Syscall {
    /// `mount(2)`.
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()>;
    /// Resolves `path` inside `root` as if `root` were `/` (symlinks and `..` cannot leave it).
    fn open_in_root(&self, root: &Path, path: &str) -> io::Result<PathHandle>;
    /// `mkdir(2)`; an existing directory is not an error.
    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// Creates an empty regular file (a bind-mount point) if missing.
    fn create_file(&self, path: &Path) -> io::Result<()>;
    /// `symlink(2)`.
    fn symlink(&self, target: &str, link: &Path) -> io::Result<()>;
    /// Creates (or truncates) a file with these contents.
    fn write_file(&self, path: &Path, contents: &[u8]) -> io::Result<()>;
    /// `unlink(2)`.
    fn unlink(&self, path: &Path) -> io::Result<()>;
    /// Makes `new_root` the root of the mount namespace and detaches the old root.
    fn pivot_root(&self, new_root: &Path) -> io::Result<()>;
    /// `sethostname(2)`.
    fn sethostname(&self, name: &str) -> io::Result<()>;
    /// Brings the loopback interface of the current network namespace up.
    fn loopback_up(&self) -> io::Result<()>;
    /// Drops every capability but `keep` from the bounding set.
    fn limit_bounding_set(&self, keep: &[Capability]) -> io::Result<()>;
    /// Sets the effective, permitted and inheritable sets (inheritable empty, as docker).
    fn set_capabilities(&self, caps: &[Capability]) -> io::Result<()>;
    /// `setgroups(2)`.
    fn set_groups(&self, groups: &[u32]) -> io::Result<()>;
    /// `setresgid(2)` then `setresuid(2)`.
    fn set_ids(&self, uid: u32, gid: u32) -> io::Result<()>;
    /// `prctl(PR_SET_NO_NEW_PRIVS)`.
    fn set_no_new_privs(&self) -> io::Result<()>;
}

/// The real kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSyscall;

fn errno(e: nix::Error) -> io::Error {
    io::Error::from(e)
}

impl Syscall for LinuxSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data).map_err(errno)
    }

    fn open_in_root(&self, root: &Path, path: &str) -> io::Result<PathHandle> {
        let fd = open_in_root(root, path, rustix::fs::OFlags::PATH)?;
        Ok(PathHandle {
            path: PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
            _fd: Some(fd),
        })
    }

    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()> {
        match nix::unistd::mkdir(path, nix::sys::stat::Mode::from_bits_truncate(mode)) {
            Ok(()) | Err(nix::Error::EEXIST) => Ok(()),
            Err(e) => Err(errno(e)),
        }
    }

    fn create_file(&self, path: &Path) -> io::Result<()> {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map(drop)
    }

    fn symlink(&self, target: &str, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }

    fn write_file(&self, path: &Path, contents: &[u8]) -> io::Result<()> {
        std::fs::write(path, contents)
    }

    fn unlink(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn pivot_root(&self, new_root: &Path) -> io::Result<()> {
        // pivot_root(".", ".") stacks the old root under the new one; detaching "." then drops
        // it without needing a put_old directory inside the image (runc's trick).
        nix::unistd::chdir(new_root).map_err(errno)?;
        nix::unistd::pivot_root(".", ".").map_err(errno)?;
        nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH).map_err(errno)?;
        nix::unistd::chdir("/").map_err(errno)
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        nix::unistd::sethostname(name).map_err(errno)
    }

    fn loopback_up(&self) -> io::Result<()> {
        // SIOCSIFFLAGS on a throwaway socket is all `ip link set lo up` does.
        let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if sock < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let res = unsafe {
            let mut r = libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req);
            if r == 0 {
                req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
                r = libc::ioctl(sock, libc::SIOCSIFFLAGS, &req);
            }
            r
        };
        let err = io::Error::last_os_error();
        unsafe { libc::close(sock) };
        if res < 0 {
            return Err(err);
        }
        Ok(())
    }

    fn limit_bounding_set(&self, keep: &[Capability]) -> io::Result<()> {
        for cap in caps::all() {
            if !keep.contains(&cap) {
                caps::drop(None, caps::CapSet::Bounding, cap).map_err(caps_err)?;
            }
        }
        Ok(())
    }

    fn set_capabilities(&self, keep: &[Capability]) -> io::Result<()> {
        let set: caps::CapsHashSet = keep.iter().copied().collect();
        caps::set(None, caps::CapSet::Inheritable, &caps::CapsHashSet::new()).map_err(caps_err)?;
        caps::set(None, caps::CapSet::Effective, &set).map_err(caps_err)?;
        caps::set(None, caps::CapSet::Permitted, &set).map_err(caps_err)
    }

    fn set_groups(&self, groups: &[u32]) -> io::Result<()> {
        let gids: Vec<nix::unistd::Gid> = groups
            .iter()
            .map(|g| nix::unistd::Gid::from_raw(*g))
            .collect();
        nix::unistd::setgroups(&gids).map_err(errno)
    }

    fn set_ids(&self, uid: u32, gid: u32) -> io::Result<()> {
        let gid = nix::unistd::Gid::from_raw(gid);
        let uid = nix::unistd::Uid::from_raw(uid);
        nix::unistd::setresgid(gid, gid, gid).map_err(errno)?;
        nix::unistd::setresuid(uid, uid, uid).map_err(errno)
    }

    fn set_no_new_privs(&self) -> io::Result<()> {
        nix::sys::prctl::set_no_new_privs().map_err(errno)
    }
}

fn caps_err(e: caps::errors::CapsError) -> io::Error {
    io::Error::other(e.to_string())
}

/// Opens `path` inside `root` with `RESOLVE_IN_ROOT`: absolute symlinks and `..` are resolved
/// against `root`, never the host's `/`.
pub(crate) fn open_in_root(
    root: &Path,
    path: &str,
    flags: rustix::fs::OFlags,
) -> io::Result<OwnedFd> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
    let root_fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    Ok(openat2(
        &root_fd,
        rel,
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )?)
}

/// One recorded call of [`RecordingSyscall`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `mount(source, target, fstype, flags, data)`.
    Mount {
        /// Source, as given.
        source: Option<PathBuf>,
        /// Target, as given (handles are recorded as `<root>/<path>`).
        target: PathBuf,
        /// Filesystem type.
        fstype: Option<String>,
        /// Flags.
        flags: MsFlags,
        /// Data string.
        data: Option<String>,
    },
    /// `mkdir(path)`.
    Mkdir(PathBuf),
    /// `create_file(path)`.
    CreateFile(PathBuf),
    /// `symlink(target, link)`.
    Symlink(String, PathBuf),
    /// `write_file(path, contents)`.
    WriteFile(PathBuf, Vec<u8>),
    /// `unlink(path)`.
    Unlink(PathBuf),
    /// `pivot_root(new_root)`.
    PivotRoot(PathBuf),
    /// `sethostname(name)`.
    Sethostname(String),
    /// `loopback_up()`.
    LoopbackUp,
    /// `limit_bounding_set(keep)`.
    LimitBoundingSet(Vec<Capability>),
    /// `set_capabilities(caps)`.
    SetCapabilities(Vec<Capability>),
    /// `set_groups(groups)`.
    SetGroups(Vec<u32>),
    /// `set_ids(uid, gid)`.
    SetIds(u32, u32),
    /// `set_no_new_privs()`.
    SetNoNewPrivs,
}

/// Records every call and succeeds, for unit tests of the set-up logic.
#[derive(Debug, Default)]
pub struct RecordingSyscall {
    calls: RefCell<Vec<Call>>,
    missing: RefCell<Vec<PathBuf>>,
}

impl RecordingSyscall {
    /// A recorder on which `open_in_root` fails with `NotFound` for `paths` (as `<root>/<path>`)
    /// until they are created with `mkdir` or `create_file`.
    pub fn with_missing(paths: &[&str]) -> RecordingSyscall {
        RecordingSyscall {
            calls: RefCell::default(),
            missing: RefCell::new(paths.iter().map(PathBuf::from).collect()),
        }
    }

    fn created(&self, path: &Path) {
        self.missing.borrow_mut().retain(|m| m != path);
    }

    /// The calls made so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }

    fn push(&self, call: Call) -> io::Result<()> {
        self.calls.borrow_mut().push(call);
        Ok(())
    }
}

impl Syscall for RecordingSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        self.push(Call::Mount {
            source: source.map(Path::to_path_buf),
            target: target.to_path_buf(),
            fstype: fstype.map(str::to_string),
            flags,
            data: data.map(str::to_string),
        })
    }
    fn open_in_root(&self, root: &Path, path: &str) -> io::Result<PathHandle> {
        let path = root.join(path.trim_start_matches('/'));
        if self.missing.borrow().contains(&path) {
            return Err(io::ErrorKind::NotFound.into());
        }
        Ok(PathHandle { path, _fd: None })
    }
    fn mkdir(&self, path: &Path, _mode: u32) -> io::Result<()> {
        self.created(path);
        self.push(Call::Mkdir(path.to_path_buf()))
    }
    fn create_file(&self, path: &Path) -> io::Result<()> {
        self.created(path);
        self.push(Call::CreateFile(path.to_path_buf()))
    }
    fn symlink(&self, target: &str, link: &Path) -> io::Result<()> {
        self.push(Call::Symlink(target.to_string(), link.to_path_buf()))
    }
    fn write_file(&self, path: &Path, contents: &[u8]) -> io::Result<()> {
        self.push(Call::WriteFile(path.to_path_buf(), contents.to_vec()))
    }
    fn unlink(&self, path: &Path) -> io::Result<()> {
        self.push(Call::Unlink(path.to_path_buf()))
    }
    fn pivot_root(&self, new_root: &Path) -> io::Result<()> {
        self.push(Call::PivotRoot(new_root.to_path_buf()))
    }
    fn sethostname(&self, name: &str) -> io::Result<()> {
        self.push(Call::Sethostname(name.to_string()))
    }
    fn loopback_up(&self) -> io::Result<()> {
        self.push(Call::LoopbackUp)
    }
    fn limit_bounding_set(&self, keep: &[Capability]) -> io::Result<()> {
        self.push(Call::LimitBoundingSet(keep.to_vec()))
    }
    fn set_capabilities(&self, caps: &[Capability]) -> io::Result<()> {
        self.push(Call::SetCapabilities(caps.to_vec()))
    }
    fn set_groups(&self, groups: &[u32]) -> io::Result<()> {
        self.push(Call::SetGroups(groups.to_vec()))
    }
    fn set_ids(&self, uid: u32, gid: u32) -> io::Result<()> {
        self.push(Call::SetIds(uid, gid))
    }
    fn set_no_new_privs(&self) -> io::Result<()> {
        self.push(Call::SetNoNewPrivs)
    }
}
