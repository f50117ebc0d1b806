//! `RUN --mount`: turns each mount of a RUN into sandbox mounts (bind, cache, tmpfs, secret,
//! ssh), and keeps what they need alive while the step runs (cache-mount locks, ssh agent
//! proxies, temporary directories).
//!
//! A child module of `solve` so that it can use the solver's helpers (stage results, base
//! images, step errors) without widening their visibility.
//!
//! What never reaches an image: every mount is a mount of the sandbox, so nothing written under
//! its target lands in the rootfs diff, and the sandbox removes the mount points it had to
//! create. What the cache key sees: a bind mount's source contents (in `Solver::step_inputs`);
//! never a cache mount's contents, a secret's bytes or an ssh socket.
//!
//! `--security=insecure` (only with `--allow security.insecure`) keeps every capability.
//! Not done: `--ssh id=KEYFILE` is refused (it would need an agent of our own: the
//! user runs `ssh-agent` + `ssh-add` and passes the socket); a bind of a context directory
//! without .dockerignore rules is the context itself (read-only), with rules a filtered copy.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cairn_dockerfile::{CacheSharing, Mount, Source, Step};
use cairn_sandbox::{MountKind, MountSpec, Rootfs};
use cairn_store::{CacheLock, CacheMount};

use super::{join_inside, synthetic_copy, RunExtras, Solver};
use crate::copy::{self, CopyRequest, SourceRoot};
use crate::error::{io_err, Result};

/// BuildKit's default mount point of the N-th ssh mount of a RUN.
const SSH_TARGET_PREFIX: &str = "/run/buildkit/ssh_agent.";

/// How many symlinks a bind source may go through (Linux's MAXSYMLINKS).
const MAX_LINKS: usize = 40;

/// What a RUN's mounts hold while the process runs; dropping it releases the cache-mount locks
/// and stops the ssh agent proxies.
#[derive(Default)]
pub(super) struct Held {
    /// By cache id: a second mount of the same id in one RUN shares the first one's lock.
    caches: Vec<(String, CacheMount)>,
    ssh: Vec<SshProxy>,
}

/// Refuses `RUN --security=insecure` unless the build allows it (`--allow security.insecure`).
pub(super) fn check_security(
    s: &Solver<'_>,
    step: &Step,
    run: &cairn_dockerfile::Run,
) -> Result<()> {
    if !insecure(run) {
        return Ok(());
    }
    if !s.req.allow_insecure {
        return Err(s.step_error(
            step,
            "RUN --security=insecure is not allowed: pass --allow security.insecure to grant it"
                .into(),
        ));
    }
    Ok(())
}

/// `RUN --security=insecure`: the step keeps every capability ([`check_security`] has refused it
/// already unless the build allows it).
pub(super) fn insecure(run: &cairn_dockerfile::Run) -> bool {
    run.security.as_deref() == Some("insecure")
}

/// Turns one `RUN --mount` into sandbox mounts, adding to `x`.
pub(super) fn run_mount(
    s: &Solver<'_>,
    step: &Step,
    m: &Mount,
    workdir: &str,
    x: &mut RunExtras,
) -> Result<()> {
    // A relative target is relative to the working directory, as in BuildKit; one that climbs
    // above `/` is a mistake, not something to clamp silently.
    let abs = |t: &str| {
        mount_target(workdir, t).ok_or_else(|| {
            s.step_error(
                step,
                format!("mount target {t:?} climbs out of the container's root with \"..\""),
            )
        })
    };
    match m {
        Mount::Tmpfs { target, size } => x.mounts.push(MountSpec {
            kind: MountKind::Tmpfs { size: *size },
            target: abs(target)?,
        }),
        Mount::Cache {
            id,
            target,
            ro,
            sharing,
            from,
            source,
            mode,
            uid,
            gid,
        } => {
            let target = abs(target)?;
            let id = id.clone().unwrap_or_else(|| target.clone());
            let lock = match sharing {
                CacheSharing::Shared => CacheLock::Shared,
                CacheSharing::Locked => CacheLock::Exclusive,
                CacheSharing::Private => CacheLock::TryExclusive,
            };
            let already = x.held.caches.iter().find(|(i, _)| *i == id);
            // `locked` waits here, before the step takes a run slot. The same id twice in one
            // RUN is one user (locking it again would wait for ourselves).
            let opened = match already {
                Some((_, cm)) => Some((cm.dir.clone(), false)),
                None => s.store.open_cache_mount(&id, lock)?.map(|cm| {
                    let r = (cm.dir.clone(), cm.created);
                    x.held.caches.push((id.clone(), cm));
                    r
                }),
            };
            let (dir, created) = match opened {
                Some(r) => r,
                None => {
                    // `private` and someone else has the cache: a fresh directory of our own,
                    // thrown away after the step (BuildKit makes a new empty mount).
                    let d = s.tempdir()?;
                    let p = d.path().join("cache");
                    fs::create_dir(&p).map_err(io_err(&p))?;
                    x.keep_dirs.push(d);
                    (p, true)
                }
            };
            if created {
                // As BuildKit: mode, owner and the `from` seed apply to a new cache only.
                if let Some(from) = from {
                    seed_cache(s, step, from, source.as_deref(), &dir, x)?;
                }
                fs::set_permissions(&dir, fs::Permissions::from_mode(mode.unwrap_or(0o755)))
                    .map_err(io_err(&dir))?;
                std::os::unix::fs::chown(&dir, Some(uid.unwrap_or(0)), Some(gid.unwrap_or(0)))
                    .map_err(io_err(&dir))?;
            }
            x.mounts.push(MountSpec {
                kind: MountKind::Bind {
                    source: dir,
                    readonly: *ro,
                },
                target,
            });
        }
        Mount::Bind {
            target,
            source,
            from,
            rw,
        } => {
            let sub = source.clone().unwrap_or_else(|| ".".into());
            let (root, in_context) = match from {
                None | Some(Source::Context) => {
                    let ctx = s.context.ok_or_else(|| {
                        s.step_error(step, "no build context for the bind mount".into())
                    })?;
                    let resolved = context_source(s, step, ctx, &sub)?;
                    if resolved.is_dir() && (ctx.ignore_file().is_some() || *rw) {
                        // The files .dockerignore excludes are not part of the context that
                        // BuildKit would send: the step sees a copy without them (a copy that
                        // `rw` writes then change, thrown away after the step). A `rw` bind of
                        // a directory is a copy too: a prepared root (an overlay) would show the
                        // sandbox's mount-point stubs (`dev`, `proc`, ...) of its init layer.
                        let d = s.tempdir()?;
                        let dest = d.path().join("src");
                        fs::create_dir(&dest).map_err(io_err(&dest))?;
                        let c = synthetic_copy(&sub);
                        let req = CopyRequest {
                            copy: &c,
                            workdir: "/",
                            owner: None,
                        };
                        copy::apply(&req, &SourceRoot::Context(ctx), &dest)
                            .map_err(|e| s.step_error(step, format!("bind source {sub:?}: {e}")))?;
                        x.keep_dirs.push(d);
                        x.mounts.push(MountSpec {
                            kind: MountKind::Bind {
                                source: dest,
                                readonly: !*rw,
                            },
                            target: abs(target)?,
                        });
                        return Ok(());
                    }
                    if *rw {
                        // Writes to a bind mount are discarded, never made to the context: the
                        // step writes to an overlay over it, dropped afterwards.
                        let r = Rootfs::prepare(
                            &[ctx.root().to_path_buf()],
                            &s.scratch,
                            s.snapshotter,
                        )?;
                        let p = r.path().to_path_buf();
                        x.keep_roots.push(r);
                        (p, true)
                    } else {
                        (ctx.root().to_path_buf(), true)
                    }
                }
                // A stage's or an image's root is prepared afresh (an overlay, or a temp dir
                // for no layers) for this step only, so `rw` writes die with it.
                Some(Source::Stage(i)) => {
                    let res = s.stage_result(*i)?;
                    let p = s.root_of(&res.layers, &mut x.keep_dirs, &mut x.keep_roots)?;
                    (p, false)
                }
                Some(Source::Image(r)) => {
                    let img = s.base(r)?;
                    let p = s.root_of(&img.layers, &mut x.keep_dirs, &mut x.keep_roots)?;
                    (p, false)
                }
            };
            let source = resolve_source(&root, &sub, in_context).map_err(|why| {
                let what = if in_context { "context" } else { "stage" };
                s.step_error(step, format!("bind source {sub:?}: {why} (in the {what})"))
            })?;
            x.mounts.push(MountSpec {
                kind: MountKind::Bind {
                    source,
                    readonly: !*rw,
                },
                target: abs(target)?,
            });
        }
        Mount::Secret {
            id,
            target,
            env: env_name,
            required,
            mode,
            uid,
            gid,
        } => {
            let Some(value) = s.req.secrets.get(id) else {
                if *required {
                    return Err(s.step_error(
                        step,
                        format!(
                            "secret {id:?} is required: pass it with --secret id={id},src=FILE"
                        ),
                    ));
                }
                // As BuildKit: an optional secret that was not given is simply absent.
                return Ok(());
            };
            if let Some(var) = env_name {
                x.env
                    .push(format!("{var}={}", String::from_utf8_lossy(&value.0)));
            }
            if let Some(t) = target {
                // A private (0700) directory that lives only as long as the RUN, in memory when
                // /dev/shm exists, so that the bytes never touch the store's disk.
                let dir = secret_dir(s)?;
                let file = dir.path().join("secret");
                fs::write(&file, &value.0).map_err(io_err(&file))?;
                fs::set_permissions(&file, fs::Permissions::from_mode(mode.unwrap_or(0o400)))
                    .map_err(io_err(&file))?;
                std::os::unix::fs::chown(&file, Some(uid.unwrap_or(0)), Some(gid.unwrap_or(0)))
                    .map_err(io_err(&file))?;
                x.mounts.push(MountSpec {
                    kind: MountKind::Bind {
                        source: file,
                        readonly: true,
                    },
                    target: abs(t)?,
                });
                x.keep_dirs.push(dir);
            }
        }
        Mount::Ssh {
            id,
            target,
            required,
            mode,
            uid,
            gid,
        } => {
            let Some(agent) = s.req.ssh.get(id) else {
                if *required {
                    return Err(s.step_error(
                        step,
                        format!(
                            "ssh agent {id:?} is required: pass it with --ssh {id}[=SOCKET] \
                             (default: $SSH_AUTH_SOCK)"
                        ),
                    ));
                }
                return Ok(());
            };
            let n = x.held.ssh.len();
            let t = match target {
                Some(t) => abs(t)?,
                None => format!("{SSH_TARGET_PREFIX}{}", n + 1),
            };
            // A socket of our own, forwarding to the agent: mode and owner apply to it, and the
            // container never touches the host's socket.
            let dir = s.tempdir()?;
            let sock = dir.path().join("agent.sock");
            let proxy = SshProxy::start(&sock, agent.clone(), dir).map_err(io_err(&sock))?;
            fs::set_permissions(&sock, fs::Permissions::from_mode(mode.unwrap_or(0o600)))
                .map_err(io_err(&sock))?;
            std::os::unix::fs::chown(&sock, Some(uid.unwrap_or(0)), Some(gid.unwrap_or(0)))
                .map_err(io_err(&sock))?;
            if n == 0 {
                // As BuildKit: the first ssh mount is the step's agent.
                x.env.push(format!("SSH_AUTH_SOCK={t}"));
            }
            x.mounts.push(MountSpec {
                kind: MountKind::Bind {
                    source: sock,
                    readonly: false,
                },
                target: t,
            });
            x.held.ssh.push(proxy);
        }
    }
    Ok(())
}

/// Refuses a context bind source that leaves the context before the step's cache key digests
/// it (the digest would report a confusing COPY error, or follow a link out of the context).
pub(super) fn check_bind_source(s: &Solver<'_>, step: &Step, m: &Mount) -> Result<()> {
    if let Mount::Bind {
        source,
        from: None | Some(Source::Context),
        ..
    } = m
    {
        if let Some(ctx) = s.context {
            context_source(s, step, ctx, source.as_deref().unwrap_or("."))?;
        }
    }
    Ok(())
}

/// Checks a bind source in the build context: inside it (no `..` out, no link out), not
/// excluded by .dockerignore. Returns the resolved path.
fn context_source(
    s: &Solver<'_>,
    step: &Step,
    ctx: &crate::context::BuildContext,
    sub: &str,
) -> Result<PathBuf> {
    let rel = join_inside(Path::new(""), sub)
        .ok_or_else(|| s.step_error(step, format!("bind source {sub:?} is outside the context")))?;
    if !rel.as_os_str().is_empty() && ctx.is_ignored(&rel) {
        return Err(s.step_error(
            step,
            format!("bind source {sub:?} is excluded by .dockerignore"),
        ));
    }
    resolve_source(ctx.root(), sub, true)
        .map_err(|why| s.step_error(step, format!("bind source {sub:?}: {why} (in the context)")))
}

/// Fills a new cache directory from `source` of `from` (`--mount=type=cache,from=…,source=…`).
fn seed_cache(
    s: &Solver<'_>,
    step: &Step,
    from: &Source,
    source: Option<&str>,
    dir: &Path,
    x: &mut RunExtras,
) -> Result<()> {
    let sub = source.unwrap_or(".");
    let c = synthetic_copy(sub);
    let req = CopyRequest {
        copy: &c,
        workdir: "/",
        owner: None,
    };
    let root;
    let src = match from {
        Source::Context => SourceRoot::Context(
            s.context
                .ok_or_else(|| s.step_error(step, "no build context for the cache mount".into()))?,
        ),
        Source::Stage(i) => {
            let res = s.stage_result(*i)?;
            root = s.root_of(&res.layers, &mut x.keep_dirs, &mut x.keep_roots)?;
            SourceRoot::Dir(&root)
        }
        Source::Image(r) => {
            let img = s.base(r)?;
            root = s.root_of(&img.layers, &mut x.keep_dirs, &mut x.keep_roots)?;
            SourceRoot::Dir(&root)
        }
    };
    copy::apply(&req, &src, dir)
        .map_err(|e| s.step_error(step, format!("seeding the cache mount: {e}")))?;
    Ok(())
}

/// A 0700 temp dir for a secret: in /dev/shm (memory) when it can, else in the scratch dir.
/// Its name carries our PID, so that the dirs of a cairn that was killed before it could remove
/// them (SIGKILL, or the exit after Ctrl-C) are removed by the next build that uses a secret.
fn secret_dir(s: &Solver<'_>) -> Result<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        sweep_dead_secret_dirs(shm);
        if let Ok(d) = tempfile::Builder::new()
            .prefix(&format!("{SECRET_PREFIX}{}-", std::process::id()))
            .tempdir_in(shm)
        {
            return Ok(d);
        }
    }
    s.tempdir()
}

/// Prefix of the secret dirs in /dev/shm: `cairn-secret-<pid>-<random>`.
const SECRET_PREFIX: &str = "cairn-secret-";

fn sweep_dead_secret_dirs(shm: &Path) {
    let Ok(entries) = fs::read_dir(shm) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(SECRET_PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            // Best effort: another build may be sweeping the same dir.
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// The absolute mount target for `t` in `workdir`; `None` when `..` climbs above `/`.
fn mount_target(workdir: &str, t: &str) -> Option<String> {
    let joined = if t.starts_with('/') {
        t.to_string()
    } else {
        format!("{}/{}", workdir.trim_end_matches('/'), t)
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in joined.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// Resolves `sub` inside `root`, following symlinks (the last one too: a bind of a link binds
/// what it points to). A link or `..` that leaves `root` is an error. Absolute link targets
/// mean the root of a stage or image (its own `/`); in the build context they point at the
/// host, so they are refused (`absolute_links_escape`).
fn resolve_source(
    root: &Path,
    sub: &str,
    absolute_links_escape: bool,
) -> std::result::Result<PathBuf, String> {
    // Pending components, last first, so that a link's target can be pushed in front.
    let mut pending: Vec<std::ffi::OsString> = Vec::new();
    push_components(&mut pending, Path::new(sub));
    let mut resolved: Vec<std::ffi::OsString> = Vec::new();
    let mut links = 0usize;
    while let Some(c) = pending.pop() {
        if c == ".." {
            if resolved.pop().is_none() {
                return Err("\"..\" leads out of the root".into());
            }
            continue;
        }
        let mut p = root.to_path_buf();
        p.extend(resolved.iter());
        p.push(&c);
        let md = match fs::symlink_metadata(&p) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err("not found".into());
            }
            Err(e) => return Err(e.to_string()),
        };
        if !md.file_type().is_symlink() {
            resolved.push(c);
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err("too many levels of symbolic links".into());
        }
        let target = fs::read_link(&p).map_err(|e| e.to_string())?;
        if target.is_absolute() {
            if absolute_links_escape {
                return Err(format!(
                    "the symlink {} points out of it, to {}",
                    c.to_string_lossy(),
                    target.display()
                ));
            }
            resolved.clear();
        }
        push_components(&mut pending, &target);
    }
    let mut out = root.to_path_buf();
    out.extend(resolved.iter());
    Ok(out)
}

/// Pushes `p`'s components onto `pending` so that the first one is popped first.
fn push_components(pending: &mut Vec<std::ffi::OsString>, p: &Path) {
    let comps: Vec<std::ffi::OsString> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    pending.extend(comps.into_iter().rev());
}

/// A unix socket that forwards every connection to an ssh agent's socket, while the step runs.
struct SshProxy {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The directory of the socket, removed once the proxy has stopped.
    _dir: Option<tempfile::TempDir>,
}

/// How often the proxy's accept loop looks at its stop flag.
const SSH_POLL: std::time::Duration = std::time::Duration::from_millis(20);

impl SshProxy {
    /// Listens on `path` (in `dir`, kept until the proxy stops) and forwards to `agent`.
    fn start(path: &Path, agent: PathBuf, dir: tempfile::TempDir) -> std::io::Result<SshProxy> {
        let listener = UnixListener::bind(path)?;
        // Polled, not blocking: stopping must not depend on the socket still being reachable.
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    // Nothing waiting (or a client gone before we took it).
                    Err(_) => {
                        std::thread::sleep(SSH_POLL);
                        continue;
                    }
                };
                if client.set_nonblocking(false).is_err() {
                    continue;
                }
                let agent = agent.clone();
                // One pair of pumps per connection; they end when either side closes, which
                // the end of the step guarantees (its processes are killed).
                std::thread::spawn(move || {
                    if let Ok(upstream) = UnixStream::connect(&agent) {
                        pump_both(client, upstream);
                    }
                });
            }
        });
        Ok(SshProxy {
            stop,
            thread: Some(thread),
            _dir: Some(dir),
        })
    }
}

impl Drop for SshProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn pump_both(a: UnixStream, b: UnixStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let t = std::thread::spawn(move || pump(a, b2));
    pump(b, a2);
    let _ = t.join();
}

fn pump(mut from: UnixStream, mut to: UnixStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_absolute_and_cannot_climb_out() {
        assert_eq!(
            mount_target("/app", "node_modules").as_deref(),
            Some("/app/node_modules")
        );
        assert_eq!(
            mount_target("/app", "/root/.npm").as_deref(),
            Some("/root/.npm")
        );
        assert_eq!(mount_target("/app", "../x").as_deref(), Some("/x"));
        assert_eq!(mount_target("/app", "../../x"), None);
    }

    #[test]
    fn sources_follow_links_inside_and_refuse_escapes() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink("a/b", root.join("rel")).unwrap();
        std::os::unix::fs::symlink("/a/b/f", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("a/b/up")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
        assert_eq!(resolve_source(&root, "rel/f", true), Ok(root.join("a/b/f")));
        assert_eq!(
            resolve_source(&root, "a/b/../b/f", true),
            Ok(root.join("a/b/f"))
        );
        assert_eq!(resolve_source(&root, ".", true), Ok(root.clone()));
        // An absolute link is the stage's own `/`, but the host's in the context.
        assert_eq!(resolve_source(&root, "abs", false), Ok(root.join("a/b/f")));
        assert!(resolve_source(&root, "abs", true)
            .unwrap_err()
            .contains("points out"));
        assert!(resolve_source(&root, "etc/passwd", true).is_err());
        assert!(resolve_source(&root, "a/b/up/x", false)
            .unwrap_err()
            .contains(".."));
        assert!(resolve_source(&root, "../x", false).is_err());
        assert_eq!(resolve_source(&root, "nope", true), Err("not found".into()));
    }

    #[test]
    fn secret_dirs_of_dead_processes_are_swept() {
        let tmp = tempfile::tempdir().unwrap();
        // PID 0 is never a process; ours is alive.
        let dead = tmp.path().join(format!("{SECRET_PREFIX}0-abc"));
        let alive = tmp
            .path()
            .join(format!("{SECRET_PREFIX}{}-abc", std::process::id()));
        let other = tmp.path().join("something-else");
        for d in [&dead, &alive, &other] {
            fs::create_dir(d).unwrap();
        }
        // /proc/0 does not exist.
        sweep_dead_secret_dirs(tmp.path());
        assert!(!dead.exists() && alive.exists() && other.exists());
    }

    #[test]
    fn the_ssh_proxy_forwards_both_ways() {
        let tmp = tempfile::tempdir().unwrap();
        let agent_path = tmp.path().join("agent");
        let agent = UnixListener::bind(&agent_path).unwrap();
        // An "agent" that answers each request with its bytes reversed.
        let server = std::thread::spawn(move || {
            let (mut c, _) = agent.accept().unwrap();
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf).unwrap();
            buf.reverse();
            c.write_all(&buf).unwrap();
        });
        let proxy_path = tmp.path().join("proxy");
        let dir = tempfile::tempdir().unwrap();
        let proxy = SshProxy::start(&proxy_path, agent_path, dir).unwrap();
        let mut c = UnixStream::connect(&proxy_path).unwrap();
        c.write_all(b"hello").unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"olleh");
        server.join().unwrap();
        drop(proxy);
        assert!(
            UnixStream::connect(&proxy_path).is_err(),
            "the proxy outlived the step"
        );
    }
}
