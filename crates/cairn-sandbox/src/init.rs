//! The container init. A caller that is single-threaded when it starts a container simply forks
//! it (`process::fork_init`): the child is as free to unshare, fork and allocate as a fresh exec.
//! A multi-threaded caller (a build with worker threads, a health check from its thread) cannot
//! do that safely, so there the init is this same binary, re-exec'd as `<exe> __cairn-init` with
//! the plan on fd 3 and a message pipe on fd 4.
//!
//! A (this process) unshares the namespaces and forks B, PID 1 of the new PID namespace, which
//! builds the mounts, pivots, and forks C, which becomes the user and execs the command. A and B
//! block all asynchronous signals and wait for them with `sigwait`: SIGCHLD reaps, any other
//! signal is forwarded one level down. Messages to the caller on fd 4, one per line:
//! `pid <host pid of B>` and `error <code> <text>`.

use crate::setup::{self, ContainerPlan};
use crate::spec::Network;
use crate::syscall::LinuxSyscall;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;

/// The hidden first argument that turns the binary into the container init.
pub const INIT_ARG: &str = "__cairn-init";
pub(crate) const PLAN_FD: i32 = 3;
pub(crate) const MSG_FD: i32 = 4;
/// With a tty: a unix socket to send the pty master back on.
pub(crate) const CONSOLE_FD: i32 = 5;
/// Exit code of a container that could not be set up (docker uses 125 for its own failures).
pub(crate) const SETUP_FAILED: i32 = 125;

/// If this process was started as the container init (`<exe> __cairn-init`), runs it and exits;
/// otherwise returns at once. Call it as the very first line of `main` of every binary that runs
/// containers (the `cairn` binary, test binaries with `harness = false`), before any thread exists.
pub fn maybe_run_init() {
    if std::env::args_os().nth(1).as_deref() == Some(OsStr::new(INIT_ARG)) {
        std::process::exit(init_main());
    }
}

fn report(msg: &mut File, line: &str) {
    let one_line: String = line
        .chars()
        .map(|c| if c == '\n' { ' ' } else { c })
        .collect();
    let _ = msg.write_all(format!("{one_line}\n").as_bytes());
}

fn fail(msg: &mut File, code: i32, text: &str) -> i32 {
    report(msg, &format!("error {code} {text}"));
    code
}

fn init_main() -> i32 {
    // SAFETY: the caller set up fds 3 and 4 for us and nothing else in this process owns them.
    let mut msg = unsafe { File::from_raw_fd(MSG_FD) };
    let mut plan_file = unsafe { File::from_raw_fd(PLAN_FD) };
    let mut text = String::new();
    if let Err(e) = plan_file.read_to_string(&mut text) {
        return fail(
            &mut msg,
            SETUP_FAILED,
            &format!("reading the container plan: {e}"),
        );
    }
    drop(plan_file);
    let plan: ContainerPlan = match serde_json::from_str(&text) {
        Ok(p) => p,
        Err(e) => {
            return fail(
                &mut msg,
                SETUP_FAILED,
                &format!("decoding the container plan: {e}"),
            )
        }
    };
    run_init(&plan, msg)
}

/// A's work, from the plan on: in the re-exec'd init above, or straight after the fork in a
/// single-threaded caller that joins a running container (see `process::fork_init`). Expects
/// the message pipe on fd 4 (`msg`) and, with a tty, the console socket on fd 5.
pub(crate) fn run_init(plan: &ContainerPlan, mut msg: File) -> i32 {
    let mask = match prologue(plan, &mut msg) {
        Ok(m) => m,
        Err(code) => return code,
    };
    if let Some(pid) = plan.join {
        return join_and_exec(pid, plan, msg, &mask);
    }
    if let Err(code) = enter_namespaces(plan, &mut msg, true) {
        return code;
    }
    // SAFETY: single-threaded (a fresh exec that spawned no thread).
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let code = pid1(plan, msg, &mask);
            // SAFETY: _exit skips atexit handlers that belong to A.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => {
            report(&mut msg, &format!("pid {child}"));
            drop(msg);
            supervise(child, &mask)
        }
        Err(e) => fail(&mut msg, SETUP_FAILED, &format!("fork: {e}")),
    }
}

/// B without an A: the child of a single-threaded caller that made the PID namespace itself
/// (`unshare(CLONE_NEWPID)` before its fork, see `process::fork_init`), so this process already
/// is PID 1 of the container and the caller waits for it and signals it directly. Same fds as
/// [`run_init`].
pub(crate) fn run_pid1(plan: &ContainerPlan, mut msg: File) -> i32 {
    let mask = match prologue(plan, &mut msg) {
        Ok(m) => m,
        Err(code) => return code,
    };
    if let Err(code) = enter_namespaces(plan, &mut msg, false) {
        return code;
    }
    pid1(plan, msg, &mask)
}

/// Close-on-exec for the descriptors meant for the caller only, and every asynchronous signal
/// blocked (they are taken with `sigwait` by [`supervise`]).
fn prologue(plan: &ContainerPlan, msg: &mut File) -> Result<SigSet, i32> {
    if plan.tty {
        // SAFETY: fd 5 is ours when the plan asks for a tty; only its flags change.
        unsafe { libc::fcntl(CONSOLE_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let _ = nix::fcntl::fcntl(
        &*msg,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    let mask = forwarded_signals();
    if let Err(e) = mask.thread_block() {
        return Err(fail(msg, SETUP_FAILED, &format!("blocking signals: {e}")));
    }
    Ok(mask)
}

/// Unshares the container's namespaces (the PID one only with `pid`: it takes effect for the
/// children), makes every mount private and sets up the network.
fn enter_namespaces(plan: &ContainerPlan, msg: &mut File, pid: bool) -> Result<(), i32> {
    let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    if pid {
        flags |= CloneFlags::CLONE_NEWPID;
    }
    if plan.network == Network::None {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if let Err(e) = nix::sched::unshare(flags) {
        return Err(fail(
            msg,
            SETUP_FAILED,
            &format!("creating namespaces: {e}"),
        ));
    }
    if let Err(e) = nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    ) {
        return Err(fail(msg, SETUP_FAILED, &format!("making / private: {e}")));
    }
    if let Err(e) = setup::setup_network(&LinuxSyscall, plan.network) {
        return Err(fail(msg, SETUP_FAILED, &e));
    }
    Ok(())
}

/// An exec into a running container: join its namespaces (the PID one takes effect for children,
/// hence the fork), then become the process like C does.
fn join_and_exec(pid: u32, plan: &ContainerPlan, mut msg: File, mask: &SigSet) -> i32 {
    // All opened before any setns: /proc/<pid> is not reachable any more once in the new mount ns.
    let mut fds = Vec::new();
    for (ns, flag) in [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        match File::open(format!("/proc/{pid}/ns/{ns}")) {
            Ok(f) => fds.push((ns, f, flag)),
            Err(e) => {
                return fail(
                    &mut msg,
                    SETUP_FAILED,
                    &format!("container {pid} is not running: {e}"),
                )
            }
        }
    }
    for (ns, f, flag) in &fds {
        if let Err(e) = nix::sched::setns(f, *flag) {
            return fail(
                &mut msg,
                SETUP_FAILED,
                &format!("joining the {ns} namespace of {pid}: {e}"),
            );
        }
    }
    drop(fds);
    // SAFETY: single-threaded.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let code = match setup::restrict_capabilities(&LinuxSyscall, plan.privileged) {
                Ok(()) => exec_process(plan, &mut msg),
                Err(e) => fail(&mut msg, SETUP_FAILED, &e),
            };
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => {
            report(&mut msg, &format!("pid {child}"));
            drop(msg);
            supervise(child, mask)
        }
        Err(e) => fail(&mut msg, SETUP_FAILED, &format!("fork: {e}")),
    }
}

/// Every signal but the synchronous ones (a fault must still kill us) is blocked and waited for.
fn forwarded_signals() -> SigSet {
    let mut set = SigSet::all();
    for s in [
        Signal::SIGSEGV,
        Signal::SIGBUS,
        Signal::SIGFPE,
        Signal::SIGILL,
        Signal::SIGTRAP,
        Signal::SIGSYS,
        Signal::SIGABRT,
    ] {
        set.remove(s);
    }
    set
}

/// Waits for `child`, reaping every other child (orphans reparented to PID 1) and forwarding
/// every other signal to `child`. Returns the child's exit code, 128+N for signal N.
fn supervise(child: Pid, mask: &SigSet) -> i32 {
    loop {
        let Ok(sig) = mask.wait() else { continue };
        if sig != Signal::SIGCHLD {
            let _ = nix::sys::signal::kill(child, sig);
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => return code,
                Ok(WaitStatus::Signaled(pid, s, _)) if pid == child => return 128 + s as i32,
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }
}

/// B: PID 1 of the container.
fn pid1(plan: &ContainerPlan, mut msg: File, mask: &SigSet) -> i32 {
    // Dies with A, and its death kills everything in the PID namespace.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let sys = LinuxSyscall;
    if let Err(e) = setup::setup_rootfs(&sys, plan) {
        return fail(&mut msg, SETUP_FAILED, &e);
    }
    if let Err(e) = setup::restrict_capabilities(&sys, plan.privileged) {
        return fail(&mut msg, SETUP_FAILED, &e);
    }
    // SAFETY: single-threaded.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let code = exec_process(plan, &mut msg);
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(msg);
            supervise(child, mask)
        }
        Err(e) => fail(&mut msg, SETUP_FAILED, &format!("fork: {e}")),
    }
}

/// C: becomes the process of the spec. Returns only on failure.
fn exec_process(plan: &ContainerPlan, msg: &mut File) -> i32 {
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    // The Rust runtime of cairn ignores SIGPIPE, and an ignored signal stays ignored across
    // execve: the command gets the default disposition, as under docker.
    // SAFETY: plain sigaction to SIG_DFL in a single-threaded process.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let _ = nix::unistd::setsid();
    if plan.tty {
        if let Err(e) = attach_console(plan.uid) {
            return fail(msg, SETUP_FAILED, &format!("setting up the terminal: {e}"));
        }
    }
    let cwd = if plan.cwd.is_empty() {
        "/"
    } else {
        plan.cwd.as_str()
    };
    // WORKDIR is created as root, as docker does, before the switch to the user; through the
    // image's symlinks (now relative to the new root), dangling ones included.
    let created = crate::stubs::secure_join(std::path::Path::new("/"), cwd)
        .unwrap_or_else(|_| cwd.to_string());
    if let Err(e) = std::fs::create_dir_all(&created) {
        return fail(
            msg,
            SETUP_FAILED,
            &format!("creating working directory {cwd}: {e}"),
        );
    }
    if let Err(e) = setup::become_user(&LinuxSyscall, plan) {
        return fail(msg, SETUP_FAILED, &e);
    }
    if let Err(e) = std::env::set_current_dir(cwd) {
        return fail(msg, SETUP_FAILED, &format!("chdir to {cwd}: {e}"));
    }
    let path_var = plan
        .env
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or(crate::spec::DEFAULT_PATH);
    let prog = &plan.args[0];
    let resolved = match find_executable(prog, path_var) {
        Some(p) => p,
        None => {
            return fail(
                msg,
                127,
                &format!("exec: {prog:?}: executable file not found in $PATH"),
            );
        }
    };
    let to_c = |s: &str| CString::new(s).unwrap_or_default();
    let argv: Vec<CString> = plan.args.iter().map(|a| to_c(a)).collect();
    let envp: Vec<CString> = plan.env.iter().map(|a| to_c(a)).collect();
    let Ok(path_c) = CString::new(resolved.as_os_str().as_bytes()) else {
        return fail(msg, 127, &format!("exec: {prog:?}: invalid path"));
    };
    let err = match nix::unistd::execve(&path_c, &argv, &envp) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    let code = if err == nix::Error::ENOENT { 127 } else { 126 };
    fail(
        msg,
        code,
        &format!("exec: {prog:?}: {}", std::io::Error::from(err)),
    )
}

/// Opens a pty in the container's devpts, sends the master to the caller over [`CONSOLE_FD`],
/// and makes the slave (owned by the user, as docker does) this process's controlling terminal
/// and stdin/stdout/stderr. Called after setsid, in the container's mount namespace.
fn attach_console(uid: u32) -> std::io::Result<()> {
    use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(
        name.as_c_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY,
        rustix::fs::Mode::empty(),
    )?;
    rustix::fs::fchown(&slave, Some(rustix::fs::Uid::from_raw(uid)), None)?;
    {
        // SAFETY: CONSOLE_FD was set up by the caller for a tty run and is closed right after.
        let sock = unsafe { BorrowedFd::borrow_raw(CONSOLE_FD) };
        let fds = [master.as_fd()];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        control.push(SendAncillaryMessage::ScmRights(&fds));
        sendmsg(
            sock,
            &[std::io::IoSlice::new(b"m")],
            &mut control,
            SendFlags::empty(),
        )?;
    }
    drop(master);
    // SAFETY: plain fd calls on descriptors this process owns.
    unsafe {
        libc::close(CONSOLE_FD);
        if libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        for fd in 0..3 {
            if libc::dup2(slave.as_raw_fd(), fd) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// execvp's lookup, in the container's root and PATH.
fn find_executable(prog: &str, path_var: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if prog.contains('/') {
        return Some(prog.into());
    }
    path_var
        .split(':')
        .map(|d| std::path::Path::new(if d.is_empty() { "." } else { d }).join(prog))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}
