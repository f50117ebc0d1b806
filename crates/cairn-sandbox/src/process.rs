//! The caller's side of a run: plan, spawn the init, stream output, wait, clean up.

use crate::error::{Error, IoContext, Result};
use crate::init::{CONSOLE_FD, INIT_ARG, MSG_FD, PLAN_FD, SETUP_FAILED};
use crate::setup::{self, ContainerPlan};
use crate::spec::{MountKind, OutputStream, ProcessSpec, DEFAULT_PATH};
use crate::stubs::{StubKind, Stubs};
use crate::user;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Mutex;

/// Host PIDs of the init processes (A) of the runs in flight, for [`kill_all_running`].
static RUNNING: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Sends SIGKILL to every container this process is running: each init dies, PID 1 of its
/// container dies with it (`PR_SET_PDEATHSIG`), and with PID 1 every process of the container.
/// The `run` calls then return (128+9) and clean up their mounts. Meant for a thread that waits
/// for SIGINT/SIGTERM.
pub fn kill_all_running() {
    signal_all_running(libc::SIGKILL);
}

/// Sends `signal` to every container this process is running; the init forwards it to the
/// container's main process (SIGTERM for a graceful stop).
pub fn signal_all_running(signal: i32) {
    let pids = RUNNING.lock().map(|v| v.clone()).unwrap_or_default();
    for pid in pids {
        // SAFETY: plain kill(2).
        unsafe { libc::kill(pid, signal) };
    }
}

static TERMINATION: AtomicI32 = AtomicI32::new(0);
/// Set by [`kill_containers_on_termination_without_thread`]: the signals are blocked and `run`
/// takes them itself (a signalfd in its poll loop).
static INLINE_SIGNALS: AtomicBool = AtomicBool::new(false);

fn termination_set() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGWINCH,
    ] {
        set.add(s);
    }
    set
}

/// What SIGINT/SIGTERM/SIGHUP/SIGWINCH do under [`kill_containers_on_termination`].
fn on_termination_signal(sig: i32) {
    if sig == libc::SIGWINCH {
        resize_consoles();
    } else {
        TERMINATION.store(sig, Ordering::SeqCst);
        kill_all_running();
    }
}

/// [`kill_containers_on_termination`] without its signal thread, for a caller that runs one
/// container at a time from one thread (`cairn run`): the signals are blocked in the calling
/// thread and `run` waits for them together with the container's output, and
/// [`termination_signal`] collects any that came outside a run. A process that stays
/// single-threaded this way gets its container init forked instead of re-exec'd (faster start).
/// Threads spawned later inherit the blocked mask; none of them may wait for these signals.
pub fn kill_containers_on_termination_without_thread() -> Result<()> {
    termination_set()
        .thread_block()
        .map_err(|e| Error::io("blocking signals", e.into()))?;
    INLINE_SIGNALS.store(true, Ordering::SeqCst);
    Ok(())
}

/// With [`kill_containers_on_termination_without_thread`]: handles the termination signals that
/// are pending, without waiting.
fn take_pending_signals() {
    if !INLINE_SIGNALS.load(Ordering::SeqCst) {
        return;
    }
    let set = termination_set();
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        // SAFETY: sigtimedwait on a valid set, no siginfo wanted.
        let sig = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &zero) };
        if sig <= 0 {
            break;
        }
        on_termination_signal(sig);
    }
}

/// Makes SIGINT, SIGTERM and SIGHUP kill every running container (see [`kill_all_running`])
/// and SIGWINCH resize their terminals
/// instead of killing cairn outright, so that each `run` returns and its caller can unmount and
/// clean up; [`termination_signal`] then says which signal came. Blocks the signals in the calling
/// thread, so call it before any other thread is spawned (threads inherit the mask).
pub fn kill_containers_on_termination() -> Result<()> {
    let set = termination_set();
    set.thread_block()
        .map_err(|e| Error::io("blocking signals", e.into()))?;
    std::thread::Builder::new()
        .name("cairn-signals".into())
        .spawn(move || loop {
            if let Ok(sig) = set.wait() {
                on_termination_signal(sig as i32);
            }
        })
        .map_err(|e| Error::io("starting the signal thread", e))?;
    Ok(())
}

/// The signal that asked this process to terminate, once [`kill_containers_on_termination`]
/// caught one.
pub fn termination_signal() -> Option<i32> {
    take_pending_signals();
    match TERMINATION.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Pty masters of the runs with a tty, resized with our terminal.
static CONSOLES: Mutex<Vec<OwnedFd>> = Mutex::new(Vec::new());

/// Gives every container terminal the current size of ours (on SIGWINCH).
fn resize_consoles() {
    let Ok(ws) = rustix::termios::tcgetwinsize(rustix::stdio::stdout()) else {
        return;
    };
    if let Ok(consoles) = CONSOLES.lock() {
        for c in consoles.iter() {
            let _ = rustix::termios::tcsetwinsize(c, ws);
        }
    }
}

/// Optional callbacks of [`run_with`].
#[derive(Default)]
pub struct RunHooks<'a> {
    /// Called once the container's PID 1 exists, with its host PID (its namespaces are in
    /// `/proc/<pid>/ns/`, to join for a health check).
    pub on_start: Option<Box<dyn FnMut(u32) + 'a>>,
    /// Where the process's stdin comes from when `spec.stdin` is set: None = this process's fd 0.
    pub stdin: Option<OwnedFd>,
}

/// Runs `spec` in `rootfs` (see the crate docs), calling `on_output` with chunks of its output.
/// Returns the exit code (128+N when killed by signal N); `Err` when the container could not be
/// set up or the command could not be started ([`Error::Exec`] carries 126/127).
pub fn run(
    rootfs: &Path,
    spec: &ProcessSpec,
    on_output: &mut dyn FnMut(OutputStream, &[u8]),
) -> Result<i32> {
    run_with(rootfs, spec, on_output, &mut RunHooks::default())
}

/// [`run`] with hooks.
pub fn run_with(
    rootfs: &Path,
    spec: &ProcessSpec,
    on_output: &mut dyn FnMut(OutputStream, &[u8]),
    hooks: &mut RunHooks<'_>,
) -> Result<i32> {
    if spec.args.is_empty() || spec.args[0].is_empty() {
        return Err(Error::InvalidSpec("no command given".into()));
    }
    for m in &spec.mounts {
        setup::validate_target(&m.target).map_err(Error::InvalidSpec)?;
        if let MountKind::Bind { source, .. } = &m.kind {
            if !source.is_absolute() || !source.exists() {
                return Err(Error::InvalidSpec(format!(
                    "bind source path does not exist: {}",
                    source.display()
                )));
            }
        }
    }
    let user = user::resolve(rootfs, &spec.user)?;
    let hostname = if spec.hostname.is_empty() {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into())
    } else {
        spec.hostname.clone()
    };
    let (resolv, hosts, hostname_file) = etc_files(&hostname, spec.network);
    let mounts = setup::plan_mounts(
        &spec.mounts,
        setup::etc_mounts(resolv, hosts, hostname_file),
    );

    let mut targets: Vec<(String, StubKind)> = ["/proc", "/dev", "/sys"]
        .iter()
        .map(|t| (t.to_string(), StubKind::Dir))
        .collect();
    // Under /dev the container gets a fresh tmpfs: its mount points are made there, not here.
    for m in mounts.iter().filter(|m| !setup::under_dev(&m.target)) {
        let kind = if m.wants_dir() {
            StubKind::Dir
        } else {
            StubKind::File
        };
        targets.push((m.target.clone(), kind));
    }
    let stubs = Stubs::create(rootfs, &targets)?;

    let plan = ContainerPlan {
        rootfs: rootfs.to_path_buf(),
        args: spec.args.clone(),
        env: complete_env(&spec.env, &user.home, &hostname, spec.tty),
        uid: user.uid,
        gid: user.gid,
        groups: user.groups.clone(),
        cwd: if spec.cwd.is_empty() {
            "/".into()
        } else {
            spec.cwd.clone()
        },
        hostname: (!spec.hostname.is_empty()).then(|| spec.hostname.clone()),
        network: spec.network,
        mounts,
        tty: spec.tty,
        join: None,
        privileged: spec.privileged,
    };
    let result = spawn_and_wait(&plan, spec.stdin, on_output, hooks);
    drop(stubs);
    result
}

/// Runs `spec` inside the running container whose PID 1 has host PID `container_pid` (as
/// `docker exec`; used for health checks): same namespaces, capabilities and user rules; `mounts`
/// and `network` of the spec are ignored. `hooks.on_start` gets the host PID of the new process.
pub fn exec_in(
    container_pid: u32,
    spec: &ProcessSpec,
    on_output: &mut dyn FnMut(OutputStream, &[u8]),
    hooks: &mut RunHooks<'_>,
) -> Result<i32> {
    if spec.args.is_empty() || spec.args[0].is_empty() {
        return Err(Error::InvalidSpec("no command given".into()));
    }
    let root = PathBuf::from(format!("/proc/{container_pid}/root"));
    let user = user::resolve(&root, &spec.user)?;
    let hostname = std::fs::read_to_string(root.join("etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let plan = ContainerPlan {
        rootfs: root,
        args: spec.args.clone(),
        env: complete_env(&spec.env, &user.home, &hostname, spec.tty),
        uid: user.uid,
        gid: user.gid,
        groups: user.groups,
        cwd: if spec.cwd.is_empty() {
            "/".into()
        } else {
            spec.cwd.clone()
        },
        hostname: None,
        network: spec.network,
        mounts: Vec::new(),
        tty: spec.tty,
        join: Some(container_pid),
        privileged: spec.privileged,
    };
    spawn_and_wait(&plan, spec.stdin, on_output, hooks)
}

/// Makes SIGINT, SIGTERM and SIGHUP go to the containers this process runs (their init forwards
/// them to the main process) instead of killing this process: the graceful stop of a detached
/// container's supervisor. Same threading rule as [`kill_containers_on_termination`].
pub fn forward_termination_signals() -> Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block()
        .map_err(|e| Error::io("blocking signals", e.into()))?;
    std::thread::Builder::new()
        .name("cairn-signals".into())
        .spawn(move || loop {
            if let Ok(sig) = set.wait() {
                TERMINATION.store(sig as i32, Ordering::SeqCst);
                signal_all_running(sig as i32);
            }
        })
        .map_err(|e| Error::io("starting the signal thread", e))?;
    Ok(())
}

/// The environment a Dockerfile process sees: the given one plus PATH, HOME, HOSTNAME (and TERM
/// on a tty) when absent.
pub(crate) fn complete_env(env: &[String], home: &str, hostname: &str, tty: bool) -> Vec<String> {
    let has = |k: &str| {
        env.iter()
            .any(|kv| kv.split_once('=').map(|(n, _)| n) == Some(k))
    };
    let mut out = Vec::with_capacity(env.len() + 4);
    if !has("PATH") {
        out.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !has("HOSTNAME") {
        out.push(format!("HOSTNAME={hostname}"));
    }
    out.extend(env.iter().cloned());
    if tty && !has("TERM") {
        out.push("TERM=xterm".into());
    }
    if !has("HOME") {
        out.push(format!("HOME={home}"));
    }
    out
}

/// Contents of /etc/resolv.conf, /etc/hosts and /etc/hostname for a container.
fn etc_files(hostname: &str, network: crate::spec::Network) -> (String, String, String) {
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let hosts = match network {
        // With the host's network, the host's names are the right answer (docker does the same).
        crate::spec::Network::Host => std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
        crate::spec::Network::None => String::new(),
    };
    let hosts = if hosts.trim().is_empty() {
        format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n")
    } else {
        hosts
    };
    (resolv, hosts, format!("{hostname}\n"))
}

fn cloexec_pipe() -> Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| Error::io("pipe", e.into()))
}

/// Which binary to re-exec as the init: `CAIRN_INIT_EXE` (for test binaries of other crates that
/// cannot call [`crate::maybe_run_init`]) or this very binary.
fn init_exe() -> PathBuf {
    std::env::var_os("CAIRN_INIT_EXE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/proc/self/exe"))
}

struct Registered(i32);

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut v) = RUNNING.lock() {
            v.retain(|p| *p != self.0);
        }
    }
}

/// How the init was started.
enum Init {
    /// This binary re-exec'd (`<exe> __cairn-init`).
    Exec(std::process::Child),
    /// A fork of this (single-threaded) process; `pid1`: it is the container's PID 1 itself
    /// (there is no A), see [`fork_init`].
    Forked { pid: i32, pid1: bool },
}

impl Init {
    fn pid(&self) -> i32 {
        match self {
            Init::Exec(c) => c.id() as i32,
            Init::Forked { pid, .. } => *pid,
        }
    }

    /// The exit code, or None and the signal that killed it.
    fn wait(self) -> Result<(Option<i32>, i32)> {
        match self {
            Init::Exec(mut c) => {
                let status = c.wait().ctx(|| "waiting for the container init".into())?;
                Ok((status.code(), status.signal().unwrap_or(0)))
            }
            Init::Forked { pid, .. } => loop {
                use nix::sys::wait::{waitpid, WaitStatus};
                match waitpid(nix::unistd::Pid::from_raw(pid), None) {
                    Ok(WaitStatus::Exited(_, code)) => return Ok((Some(code), 0)),
                    Ok(WaitStatus::Signaled(_, sig, _)) => return Ok((None, sig as i32)),
                    Ok(_) | Err(nix::Error::EINTR) => continue,
                    Err(e) => return Err(Error::io("waiting for the container init", e.into())),
                }
            },
        }
    }
}

/// Whether this process has a single thread, so that a fork of it may do anything (allocate,
/// take locks) until it execs: no other thread can have held a lock at the fork.
fn single_threaded() -> bool {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return false;
    };
    // Field 20 (num_threads); the fields after the `(comm)` start with field 3.
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().nth(17))
        .and_then(|n| n.parse::<u32>().ok())
        == Some(1)
}

/// Where the init's stdin comes from.
enum InitStdin {
    Null,
    Inherit,
    Fd(OwnedFd),
}

/// The descriptors the init starts with: stdin/stdout/stderr, the message pipe (fd 4) and, with a
/// tty, the console socket (fd 5).
struct InitFds {
    stdin: InitStdin,
    out: OwnedFd,
    err: OwnedFd,
    msg: OwnedFd,
    console: Option<OwnedFd>,
}

fn spawn_and_wait(
    plan: &ContainerPlan,
    stdin: bool,
    on_output: &mut dyn FnMut(OutputStream, &[u8]),
    hooks: &mut RunHooks<'_>,
) -> Result<i32> {
    let (msg_r, msg_w) = cloexec_pipe()?;
    // With a tty, the process opens its terminal in the container's own devpts (so `tty` names
    // it and programs find it under /dev/pts) and sends us the master side over this socket.
    let (console_r, console_w) = if plan.tty {
        let (r, w) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| Error::io("socketpair", e.into()))?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };
    let (out_r, out_w) = cloexec_pipe()?;
    let (err_r, err_w) = cloexec_pipe()?;
    let mut stdin_source = hooks.stdin.take();
    let init_stdin = match (stdin && !plan.tty, stdin_source.take()) {
        (true, Some(fd)) => InitStdin::Fd(fd),
        (true, None) => InitStdin::Inherit,
        (false, fd) => {
            stdin_source = fd;
            InitStdin::Null
        }
    };
    let fds = InitFds {
        stdin: init_stdin,
        out: out_w,
        err: err_w,
        msg: msg_w,
        console: console_w,
    };
    // CAIRN_INIT_EXE names a binary to exec: honour it (tests point it at impostors).
    let child = if std::env::var_os("CAIRN_INIT_EXE").is_none() && single_threaded() {
        fork_init(plan, fds)?
    } else {
        exec_init(plan, fds)?
    };
    let registered = Registered(child.pid());
    if let Ok(mut v) = RUNNING.lock() {
        v.push(registered.0);
    }
    // A signal that came between spawn and registration found nothing to kill.
    if termination_signal().is_some() {
        // SAFETY: plain kill(2) of our own child.
        unsafe { libc::kill(registered.0, libc::SIGKILL) };
    }

    let mut msgs = String::new();
    if let Init::Forked { pid, pid1: true } = child {
        // PID 1 exists already, and it is ours: no A to tell us its pid.
        msgs = format!("pid {pid}\n");
        if let Some(cb) = hooks.on_start.as_mut() {
            cb(pid as u32);
        }
    }
    let mut io = Pump {
        out: Some(out_r),
        err: Some(err_r),
        msg: Some(msg_r),
        console: console_r,
        master: None,
        signals: inline_signalfd(),
        stdin: if stdin && plan.tty {
            Some(stdin_source)
        } else {
            None
        },
        registered_console: None,
    };
    let seen = msgs.len();
    io.run(on_output, &mut msgs, seen, hooks);
    drop(io);
    let forked = matches!(child, Init::Forked { .. });
    let (exit_code, signal) = child.wait()?;
    drop(registered);
    let code = exit_code.unwrap_or(128 + signal);

    for line in msgs.lines() {
        if let Some(rest) = line.strip_prefix("error ") {
            let (c, text) = rest.split_once(' ').unwrap_or((rest, ""));
            let c: i32 = c.parse().unwrap_or(SETUP_FAILED);
            return Err(if c == 126 || c == 127 {
                Error::Exec {
                    message: text.to_string(),
                    code: c,
                }
            } else {
                Error::Setup(text.to_string())
            });
        }
    }
    // An init that exits on its own without a word is not ours: a binary whose main() does not
    // call maybe_run_init() (a libtest test binary) took `__cairn-init` for something else.
    if !forked && exit_code.is_some() && !msgs.lines().any(|l| l.starts_with("pid ")) {
        return Err(Error::Setup(format!(
            "the container init ({}) did not start: call cairn_sandbox::maybe_run_init() first in \
             main(), or point CAIRN_INIT_EXE at a cairn binary",
            init_exe().display()
        )));
    }
    if forked && exit_code == Some(SETUP_FAILED) && !msgs.lines().any(|l| l.starts_with("pid ")) {
        return Err(Error::Setup(
            "the container init failed before it started".into(),
        ));
    }
    Ok(code)
}

/// Starts the init as `<exe> __cairn-init` with the plan on fd 3: a fresh single-threaded process
/// whatever the caller's threads are doing.
fn exec_init(plan: &ContainerPlan, fds: InitFds) -> Result<Init> {
    let json =
        serde_json::to_vec(plan).map_err(|e| Error::Setup(format!("encoding the plan: {e}")))?;
    let plan_fd = rustix::fs::memfd_create("cairn-plan", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| Error::io("memfd_create", e.into()))?;
    let mut plan_file = File::from(plan_fd);
    plan_file
        .write_all(&json)
        .ctx(|| "writing the plan".into())?;
    plan_file.rewind().ctx(|| "rewinding the plan".into())?;

    let mut cmd = Command::new(init_exe());
    cmd.arg(INIT_ARG).env_clear();
    cmd.stdout(Stdio::from(fds.out))
        .stderr(Stdio::from(fds.err));
    match fds.stdin {
        InitStdin::Fd(fd) => cmd.stdin(Stdio::from(fd)),
        InitStdin::Inherit => cmd.stdin(Stdio::inherit()),
        InitStdin::Null => cmd.stdin(Stdio::null()),
    };
    let plan_raw = plan_file.as_raw_fd();
    let msg_raw = fds.msg.as_raw_fd();
    let console_raw = fds.console.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1);
    // SAFETY: only async-signal-safe calls (fcntl, dup2, prctl, setpgid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut fds = [
                (plan_raw, PLAN_FD),
                (msg_raw, MSG_FD),
                (console_raw, CONSOLE_FD),
            ];
            if !place_fds(&mut fds) || !die_with_parent() {
                return Err(std::io::Error::last_os_error());
            }
            leave_process_group();
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .ctx(|| format!("starting the container init {}", init_exe().display()))?;
    Ok(Init::Exec(child))
}

/// Starts the init as a fork of this process, which must be single-threaded: no execve of this
/// (large) binary, no dynamic loading, no plan to encode and decode. The child sets up the same
/// descriptors as [`exec_init`] gives the re-exec'd init and closes every other one (as the exec
/// would have, they are all close-on-exec).
///
/// For a new container there is no A either: this process makes the PID namespace
/// (`unshare(CLONE_NEWPID)` applies to the children only, and is undone here right after the
/// fork), so the child is PID 1 and runs [`crate::init::run_pid1`]; one process less to start,
/// and one exit less to wait for at the end. A join (`exec_in`) forks an A as usual.
fn fork_init(plan: &ContainerPlan, fds: InitFds) -> Result<Init> {
    let pid1 = plan.join.is_none();
    let own_pid_ns = if pid1 {
        let ns = File::open("/proc/self/ns/pid").ctx(|| "opening /proc/self/ns/pid".into())?;
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID)
            .map_err(|e| Error::io("creating the PID namespace", e.into()))?;
        Some(ns)
    } else {
        None
    };
    let restore_pid_ns = || -> Result<()> {
        match &own_pid_ns {
            Some(ns) => nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWPID)
                .map_err(|e| Error::io("returning to this process's PID namespace", e.into())),
            None => Ok(()),
        }
    };
    let null = match fds.stdin {
        InitStdin::Null => Some(
            rustix::fs::open(
                "/dev/null",
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| Error::io("opening /dev/null", e.into()))?,
        ),
        _ => None,
    };
    let stdin_raw = match (&fds.stdin, &null) {
        (InitStdin::Fd(fd), _) => fd.as_raw_fd(),
        (InitStdin::Null, Some(fd)) => fd.as_raw_fd(),
        _ => -1,
    };
    let out_raw = fds.out.as_raw_fd();
    let err_raw = fds.err.as_raw_fd();
    let msg_raw = fds.msg.as_raw_fd();
    let console_raw = fds.console.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1);
    // SAFETY: the caller checked that this process has a single thread, so the child is a
    // complete copy of it and may run ordinary code; it never returns from this block.
    match unsafe { libc::fork() } {
        -1 => {
            let e = std::io::Error::last_os_error();
            restore_pid_ns()?;
            Err(Error::io("forking the container init", e))
        }
        0 => unsafe {
            // SAFETY (whole block): the child, alone in its process, arranging its own fds.
            let mut fds = [
                (stdin_raw, 0),
                (out_raw, 1),
                (err_raw, 2),
                (msg_raw, MSG_FD),
                (console_raw, CONSOLE_FD),
            ];
            if !place_fds(&mut fds) {
                libc::_exit(SETUP_FAILED);
            }
            libc::close(PLAN_FD);
            let first_free = if console_raw >= 0 {
                CONSOLE_FD + 1
            } else {
                CONSOLE_FD
            };
            close_from(first_free);
            // The init dies with the thread that started it: no orphaned container survives
            // cairn. If cairn is already gone, it stops here: nobody reads the message pipe
            // any more (getppid() cannot tell, it is 0 in a new PID namespace).
            let mut pfd = libc::pollfd {
                fd: MSG_FD,
                events: 0,
                revents: 0,
            };
            if !die_with_parent() || libc::poll(&mut pfd, 1, 0) != 0 {
                libc::_exit(SETUP_FAILED);
            }
            leave_process_group();
            let msg = File::from_raw_fd(MSG_FD);
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if pid1 {
                    crate::init::run_pid1(plan, msg)
                } else {
                    crate::init::run_init(plan, msg)
                }
            }))
            .unwrap_or_else(|_| {
                let line = b"error 125 the container init panicked\n";
                libc::write(MSG_FD, line.as_ptr().cast(), line.len());
                SETUP_FAILED
            });
            libc::_exit(code)
        },
        pid => {
            drop(fds);
            drop(null);
            if let Err(e) = restore_pid_ns() {
                // SAFETY: plain kill(2) of our own child, then reaping it.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                return Err(e);
            }
            Ok(Init::Forked { pid, pid1 })
        }
    }
}

/// In a child about to become the init: puts each `(source, target)` descriptor at `target`,
/// skipping negative sources. All sources are first copied above 10, as any may itself be one of
/// the targets. False, with errno set, on failure. Async-signal-safe (no allocation).
///
/// # Safety
/// The caller is that child and owns every descriptor named.
unsafe fn place_fds(fds: &mut [(i32, i32)]) -> bool {
    for (src, _) in fds.iter_mut() {
        if *src >= 0 {
            *src = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, 10);
            if *src < 0 {
                return false;
            }
        }
    }
    fds.iter()
        .all(|&(src, target)| src < 0 || libc::dup2(src, target) == target)
}

/// The init dies with the thread that started it: no orphaned container survives cairn. False,
/// with errno set, on failure. Async-signal-safe.
///
/// # Safety
/// Called in the child about to become the init.
unsafe fn die_with_parent() -> bool {
    libc::prctl(
        libc::PR_SET_PDEATHSIG,
        libc::SIGKILL as libc::c_ulong,
        0,
        0,
        0,
    ) == 0
}

/// Ctrl-C on cairn's terminal is cairn's to handle (kill the container), not the init's.
///
/// # Safety
/// Called in the child about to become the init.
unsafe fn leave_process_group() {
    libc::setpgid(0, 0);
}

/// Closes every descriptor from `first` up.
///
/// # Safety
/// The caller owns every such descriptor (the forked init, before it runs anything).
unsafe fn close_from(first: i32) {
    if libc::syscall(
        libc::SYS_close_range,
        first as libc::c_uint,
        libc::c_uint::MAX,
        0,
    ) == 0
    {
        return;
    }
    let max = match libc::sysconf(libc::_SC_OPEN_MAX) {
        n if n > 0 => n.min(65536) as i32,
        _ => 1024,
    };
    for fd in first..max {
        libc::close(fd);
    }
}

/// With [`kill_containers_on_termination_without_thread`]: a signalfd for the termination
/// signals, which [`Pump::run`] waits on with the container's output.
fn inline_signalfd() -> Option<OwnedFd> {
    if !INLINE_SIGNALS.load(Ordering::SeqCst) {
        return None;
    }
    let set = termination_set();
    // SAFETY: signalfd(2) with a valid set; the new descriptor is ours.
    let fd = unsafe { libc::signalfd(-1, set.as_ref(), libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    // SAFETY: a fresh descriptor owned by nobody else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The streams of a run: the init's stdout/stderr pipes, its message pipe, and with a tty the
/// socket that brings the pty master, then the master itself.
struct Pump {
    out: Option<OwnedFd>,
    err: Option<OwnedFd>,
    msg: Option<OwnedFd>,
    console: Option<OwnedFd>,
    master: Option<OwnedFd>,
    /// See [`inline_signalfd`]: not a stream, it does not keep the pump going.
    signals: Option<OwnedFd>,
    /// With a tty and `-i`: where keystrokes come from (None inside = this process's stdin).
    stdin: Option<Option<OwnedFd>>,
    /// The copy of the master in [`CONSOLES`], dropped from there with the pump.
    registered_console: Option<i32>,
}

impl Drop for Pump {
    fn drop(&mut self) {
        if let (Some(fd), Ok(mut consoles)) = (self.registered_console, CONSOLES.lock()) {
            consoles.retain(|c| c.as_raw_fd() != fd);
        }
    }
}

impl Pump {
    /// Copies output to `on_output` and collects init messages until every stream is closed
    /// (every process of the container has exited or closed them).
    fn run(
        &mut self,
        on_output: &mut dyn FnMut(OutputStream, &[u8]),
        msgs: &mut String,
        mut msg_seen: usize,
        hooks: &mut RunHooks<'_>,
    ) {
        use rustix::event::{poll, PollFd, PollFlags};
        let mut buf = vec![0u8; 65536];
        loop {
            let slots: [&Option<OwnedFd>; 6] = [
                &self.out,
                &self.err,
                &self.msg,
                &self.console,
                &self.master,
                &self.signals,
            ];
            let open: Vec<usize> = (0..6).filter(|i| slots[*i].is_some()).collect();
            if open.iter().all(|i| *i == 5) {
                break;
            }
            let mut pfds: Vec<PollFd<'_>> = open
                .iter()
                .filter_map(|i| slots[*i].as_ref().map(|f| PollFd::new(f, PollFlags::IN)))
                .collect();
            match poll(&mut pfds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => break,
            }
            let ready: Vec<usize> = open
                .iter()
                .zip(pfds.iter())
                .filter(|(_, p)| !p.revents().is_empty())
                .map(|(i, _)| *i)
                .collect();
            drop(pfds);
            for i in ready {
                if i == 3 {
                    self.receive_master();
                    continue;
                }
                if i == 5 {
                    self.take_signals();
                    continue;
                }
                let slot = match i {
                    0 => &mut self.out,
                    1 => &mut self.err,
                    2 => &mut self.msg,
                    _ => &mut self.master,
                };
                let Some(fd) = slot.as_ref() else { continue };
                match rustix::io::read(fd.as_fd(), &mut buf) {
                    Ok(0) => *slot = None,
                    Ok(n) => match i {
                        1 => on_output(OutputStream::Stderr, &buf[..n]),
                        2 => msgs.push_str(&String::from_utf8_lossy(&buf[..n])),
                        _ => on_output(OutputStream::Stdout, &buf[..n]),
                    },
                    Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => {}
                    // EIO: a pty master whose slave side is closed by everyone.
                    Err(_) => *slot = None,
                }
            }
            // Report the start as soon as the init told us PID 1's pid.
            while let Some(end) = msgs[msg_seen..].find('\n') {
                let line = &msgs[msg_seen..msg_seen + end];
                if let Some(pid) = line
                    .strip_prefix("pid ")
                    .and_then(|p| p.parse::<u32>().ok())
                {
                    if let Some(cb) = hooks.on_start.as_mut() {
                        cb(pid);
                    }
                }
                msg_seen += end + 1;
            }
        }
    }

    fn take_signals(&mut self) {
        let Some(fd) = self.signals.as_ref() else {
            return;
        };
        // struct signalfd_siginfo: 128 bytes, ssi_signo first.
        let mut info = [0u8; 128];
        loop {
            match rustix::io::read(fd, &mut info) {
                Ok(128) => {
                    let sig = u32::from_ne_bytes([info[0], info[1], info[2], info[3]]);
                    on_termination_signal(sig as i32);
                }
                Err(rustix::io::Errno::INTR) => continue,
                Ok(_) | Err(_) => break,
            }
        }
    }

    fn receive_master(&mut self) {
        use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
        let Some(sock) = self.console.take() else {
            return;
        };
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut byte = [0u8; 1];
        let mut iov = [std::io::IoSliceMut::new(&mut byte)];
        if recvmsg(&sock, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC).is_err() {
            return;
        }
        let master = control.drain().find_map(|m| match m {
            RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
            _ => None,
        });
        let Some(master) = master else { return };
        if let (Ok(dup), Ok(mut consoles)) = (master.try_clone(), CONSOLES.lock()) {
            self.registered_console = Some(dup.as_raw_fd());
            consoles.push(dup);
        }
        // The container's terminal starts with the size of ours.
        if let Ok(ws) = rustix::termios::tcgetwinsize(rustix::stdio::stdout()) {
            let _ = rustix::termios::tcsetwinsize(&master, ws);
        }
        if let Some(source) = self.stdin.take() {
            if let Ok(dup) = master.try_clone() {
                let mut to_pty = File::from(dup);
                let mut from: Box<dyn Read + Send> = match source {
                    Some(fd) => Box::new(File::from(fd)),
                    None => Box::new(std::io::stdin()),
                };
                // Detached: it may sit in a read of our stdin after the container is gone.
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to_pty.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        }
        self.master = Some(master);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_gets_path_home_hostname_defaults_only_when_absent() {
        let e = complete_env(&["A=1".into()], "/home/app", "box", false);
        assert_eq!(
            e,
            vec![
                format!("PATH={DEFAULT_PATH}"),
                "HOSTNAME=box".into(),
                "A=1".into(),
                "HOME=/home/app".into()
            ]
        );
        let e = complete_env(
            &["PATH=/x".into(), "HOME=/h".into(), "HOSTNAME=y".into()],
            "/root",
            "box",
            true,
        );
        assert_eq!(
            e,
            vec![
                "PATH=/x".to_string(),
                "HOME=/h".into(),
                "HOSTNAME=y".into(),
                "TERM=xterm".into()
            ]
        );
    }
}
