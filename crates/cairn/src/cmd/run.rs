//! `cairn run`, `ps`, `logs`, `stop`, `rm` (owned by the sandbox issue).
//!
//! A container is a directory `<store root>/containers/<id>/` holding `config.json` (what to
//! run, written once), `state.json` (status, pids, exit code, health; rewritten atomically),
//! `log.json` (docker's json-file format: one `{"log","stream","time"}` object per chunk) and,
//! while it runs, the rootfs dirs. A detached container is kept by a supervisor: this binary
//! re-exec'd as `cairn run --supervise <id> <image>` in its own process group. A `--rm`
//! container's overlay upper and work dirs are in its init tmpfs (`UpperDir::Memory`): nothing
//! of its rootfs is made on disk but the mount point, and its directory is recycled
//! (`containers/.spares/`) for the next one.

use super::format;
use crate::Global;
use anyhow::{anyhow, bail, Context, Result};
use cairn_sandbox::{
    MountKind, MountSpec, Network, OutputStream, ProcessSpec, Rootfs, SnapshotterKind, UpperDir,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fs;
use std::io::{Read, Seek, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Automatically remove the container when it exits (what it writes to its root
    /// filesystem is held in memory, not on disk)
    #[arg(long)]
    pub rm: bool,
    /// Run the container in the background and print its ID
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Set environment variables (K=V, or K to take it from this environment)
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Network: host (the host's, default) or none (loopback only)
    #[arg(long, default_value = "host", value_name = "host|none")]
    pub network: String,
    /// Give extended privileges to this container (every capability)
    #[arg(long)]
    pub privileged: bool,
    /// Bind mount a host path: HOST:CONTAINER[:ro]
    #[arg(short = 'v', long = "volume", value_name = "HOST:CTR[:ro]")]
    pub volumes: Vec<String>,
    /// Mount a tmpfs directory
    #[arg(long, value_name = "DIR")]
    pub tmpfs: Vec<String>,
    /// Overwrite the default ENTRYPOINT of the image ("" for none)
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Keep STDIN open
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Assign a name to the container
    #[arg(long)]
    pub name: Option<String>,
    /// Publish a port (accepted for docker compatibility: with the host network the port is
    /// already the host's)
    #[arg(short = 'p', long = "publish", value_name = "HOST:CTR")]
    pub publish: Vec<String>,
    /// Container host name (default: the host's with --network host, the short ID otherwise)
    #[arg(long)]
    pub hostname: Option<String>,
    /// How to make the rootfs: overlay or native (copy)
    #[arg(long, env = "CAIRN_SNAPSHOTTER", value_name = "overlay|native")]
    pub snapshotter: Option<String>,
    /// Internal: keep the detached container <ID> (the supervisor)
    #[arg(long, hide = true, value_name = "ID")]
    pub supervise: Option<String>,
    /// The image: a reference or an ID prefix
    pub image: String,
    /// The command and its arguments (replace the image's CMD)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only display container IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Show timestamps
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// The container: name, ID or ID prefix
    pub container: String,
}

#[derive(clap::Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait before killing the container
    #[arg(short = 't', long = "time", default_value_t = 10)]
    pub time: u64,
    /// Containers: names, IDs or ID prefixes
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// Force the removal of a running container (kills it)
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Containers: names, IDs or ID prefixes
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// What a container runs; written once at creation.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ContainerConfig {
    id: String,
    name: String,
    /// The image as the user named it.
    image: String,
    image_id: String,
    /// Unix seconds.
    created: f64,
    spec: ProcessSpec,
    /// Snapshot dirs, bottom first.
    lowers: Vec<PathBuf>,
    native: bool,
    auto_remove: bool,
    healthcheck: Option<HealthConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct HealthConfig {
    /// The argv to exec (CMD-SHELL already turned into `/bin/sh -c`).
    test: Vec<String>,
    interval: f64,
    timeout: f64,
    start_period: f64,
    retries: u32,
}

/// Where a container is; rewritten atomically at each change.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ContainerState {
    /// created | running | exited
    status: String,
    /// The process keeping the container (cairn itself in the foreground, the supervisor with -d).
    supervisor_pid: Option<i32>,
    /// Host PID of the container's PID 1.
    pid: Option<u32>,
    started: Option<f64>,
    finished: Option<f64>,
    exit_code: Option<i32>,
    error: Option<String>,
    health: Option<Health>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Health {
    /// starting | healthy | unhealthy
    status: String,
    failing_streak: u32,
    last_output: String,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn store_root(g: &Global) -> PathBuf {
    g.root.clone().unwrap_or_else(cairn_store::default_root)
}

fn containers_dir(g: &Global) -> PathBuf {
    store_root(g).join("containers")
}

/// Temp file in the same dir, then rename: a reader never sees half a file. No fsync, on purpose:
/// these files describe processes, which a crash of the machine ends anyway (a stale "running"
/// is read as exited, see `live_state`), and two fsyncs would double the start-up time of
/// `cairn run`.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} has no file name", path.display()))?;
    let tmp = path.with_file_name(format!(
        ".{}.{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        random_hex(4)?
    ));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        anyhow!("writing {}: {e}", path.display())
    })
}

/// A file that does not exist yet, in a container dir made a moment ago: written in place, no
/// temp file and rename (two fewer metadata operations on each `cairn run`). A concurrent reader
/// that sees it half-written finds invalid JSON and skips the container, as it skips one
/// without state.json.
fn write_new_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(v)?;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .and_then(|mut f| f.write_all(&bytes))
        .map_err(|e| anyhow!("writing {}: {e}", path.display()))
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    write_atomic(path, &serde_json::to_vec_pretty(v)?)
}

/// A container's state.json: replaced atomically, or written in place the first time.
fn write_state(dir: &Path, s: &ContainerState) -> Result<()> {
    let path = dir.join("state.json");
    match write_new_json(&path, s) {
        Err(_) if path.exists() => write_json(&path, s),
        r => r,
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn generate_name(existing: &[ContainerConfig]) -> Result<String> {
    const ADJ: [&str; 16] = [
        "brave", "calm", "eager", "fervent", "gentle", "happy", "jolly", "keen", "lucid", "mystic",
        "nifty", "quirky", "serene", "tender", "vibrant", "zealous",
    ];
    const NOUN: [&str; 16] = [
        "babbage", "curie", "darwin", "euler", "fermat", "gauss", "hopper", "kepler", "lovelace",
        "newton", "noether", "pascal", "ritchie", "shannon", "thompson", "turing",
    ];
    for _ in 0..64 {
        let r = random_hex(2)?;
        let n = u16::from_str_radix(&r, 16).unwrap_or(0) as usize;
        let name = format!("{}_{}", ADJ[n % 16], NOUN[(n / 16) % 16]);
        if !existing.iter().any(|c| c.name == name) {
            return Ok(name);
        }
    }
    Ok(format!("cairn_{}", random_hex(4)?))
}

/// How long a container may stay without state.json before it counts as abandoned.
const ABANDONED_AFTER_SECS: f64 = 600.0;

fn list_containers(g: &Global) -> Result<Vec<(ContainerConfig, ContainerState)>> {
    let dir = containers_dir(g);
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(out);
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(c) = read_json::<ContainerConfig>(&p.join("config.json")) else {
            continue;
        };
        let Ok(s) = read_json::<ContainerState>(&p.join("state.json")) else {
            // A foreground container gets its state when it starts, a moment after its config;
            // one still without a state long after was left by a cairn killed in between.
            if now() - c.created > ABANDONED_AFTER_SECS {
                let _ = fs::remove_dir_all(&p);
            }
            continue;
        };
        let was_alive = s.status != "exited";
        let s = live_state(s);
        // A --rm container whose keeper was killed (kill -9) is garbage: collect it here.
        if c.auto_remove && was_alive && s.status == "exited" {
            let _ = fs::remove_dir_all(&p);
            continue;
        }
        out.push((c, s));
    }
    out.sort_by(|a, b| b.0.created.total_cmp(&a.0.created));
    Ok(out)
}

/// A state that says running but whose keeper is gone (kill -9 of cairn) is reported as exited.
fn live_state(mut s: ContainerState) -> ContainerState {
    if s.status == "running" || s.status == "created" {
        if let Some(pid) = s.supervisor_pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                s.status = "exited".into();
                s.exit_code = s.exit_code.or(Some(137));
                s.error = Some("the process keeping the container died".into());
            }
        }
    }
    s
}

fn find_container(g: &Global, key: &str) -> Result<(ContainerConfig, ContainerState)> {
    let all = list_containers(g)?;
    if let Some(c) = all.iter().find(|(c, _)| c.id == key || c.name == key) {
        return Ok(c.clone());
    }
    let matches: Vec<_> = all.iter().filter(|(c, _)| c.id.starts_with(key)).collect();
    match matches.len() {
        1 => Ok(matches[0].clone()),
        0 => bail!("No such container: {key}"),
        _ => bail!("Multiple IDs found with provided prefix: {key}"),
    }
}

/// Docker's rules: --entrypoint replaces ENTRYPOINT and drops the image's CMD; arguments replace
/// CMD; the result is ENTRYPOINT + CMD.
fn command_line(config: &Value, entrypoint: Option<&str>, args: &[String]) -> Result<Vec<String>> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (ep, image_cmd) = match entrypoint {
        Some("") => (Vec::new(), Vec::new()),
        Some(e) => (vec![e.to_string()], Vec::new()),
        None => (strings(&config["Entrypoint"]), strings(&config["Cmd"])),
    };
    let cmd = if args.is_empty() {
        image_cmd
    } else {
        args.to_vec()
    };
    let mut argv = ep;
    argv.extend(cmd);
    if argv.is_empty() {
        bail!("No command specified");
    }
    Ok(argv)
}

/// The image's env with `-e` entries applied (K=V replaces K; a bare K copies it from here).
fn merge_env(image_env: &Value, overrides: &[String]) -> Vec<String> {
    let mut env: Vec<String> = image_env
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for o in overrides {
        let kv = match o.split_once('=') {
            Some(_) => o.clone(),
            None => match std::env::var(o) {
                Ok(v) => format!("{o}={v}"),
                Err(_) => continue,
            },
        };
        let key = kv
            .split_once('=')
            .map(|(k, _)| k.to_string())
            .unwrap_or_default();
        env.retain(|e| e.split_once('=').map(|(k, _)| k) != Some(key.as_str()));
        env.push(kv);
    }
    env
}

fn parse_volume(v: &str) -> Result<MountSpec> {
    let parts: Vec<&str> = v.split(':').collect();
    let (src, dst, ro) = match parts.as_slice() {
        [s, d] => (*s, *d, false),
        [s, d, "ro"] => (*s, *d, true),
        [s, d, "rw"] => (*s, *d, false),
        _ => bail!("invalid volume specification: {v:?} (expected HOST:CONTAINER[:ro])"),
    };
    if !src.starts_with('/') {
        bail!("invalid volume specification: {v:?}: named volumes are not supported, use an absolute host path");
    }
    if !dst.starts_with('/') || dst.split('/').any(|c| c == "..") {
        bail!(
            "invalid mount config: mount path {dst:?} must be absolute and must not contain \"..\""
        );
    }
    let source =
        fs::canonicalize(src).with_context(|| format!("bind source path does not exist: {src}"))?;
    Ok(MountSpec {
        kind: MountKind::Bind {
            source,
            readonly: ro,
        },
        target: dst.to_string(),
    })
}

/// Seconds from a docker duration in nanoseconds, `default` when absent or zero.
fn nanos(v: &Value, default: f64) -> f64 {
    match v.as_f64() {
        Some(n) if n > 0.0 => n / 1e9,
        _ => default,
    }
}

fn healthcheck(config: &Value) -> Option<HealthConfig> {
    let hc = &config["Healthcheck"];
    let test: Vec<String> = hc["Test"]
        .as_array()?
        .iter()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect();
    let argv = match test.first().map(String::as_str) {
        Some("CMD") => test[1..].to_vec(),
        Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), test[1..].join(" ")],
        _ => return None,
    };
    if argv.is_empty() {
        return None;
    }
    Some(HealthConfig {
        test: argv,
        interval: nanos(&hc["Interval"], 30.0),
        timeout: nanos(&hc["Timeout"], 30.0),
        start_period: nanos(&hc["StartPeriod"], 0.0),
        retries: hc["Retries"].as_u64().filter(|r| *r > 0).unwrap_or(3) as u32,
    })
}

pub fn run(a: RunArgs, g: &Global) -> Result<i32> {
    if let Some(id) = &a.supervise {
        return supervise(id, g);
    }
    // Before the store (or anything) can start a thread: the namespace needs a single thread,
    // and threads started later inherit the blocked SIGINT/SIGTERM (else one of them would take
    // the signal and die with the whole process, skipping the clean-up).
    // Without a signal thread: `run` takes the signals itself, so this process stays
    // single-threaded and the container init is forked rather than re-exec'd.
    cairn_sandbox::enter_private_mount_namespace()?;
    cairn_sandbox::kill_containers_on_termination_without_thread()?;
    let network = match a.network.as_str() {
        "host" => Network::Host,
        "none" => Network::None,
        other => bail!("network {other:?} is not supported: use host or none"),
    };
    if !a.publish.is_empty() {
        eprintln!(
            "cairn: note: -p {} has no effect: the container uses the host's network, its ports are the host's",
            a.publish.join(" -p ")
        );
    }
    let native = match &a.snapshotter {
        Some(s) => match SnapshotterKind::parse(s) {
            Some(k) => k == SnapshotterKind::Native,
            None => bail!("unknown snapshotter {s:?}: use overlay or native"),
        },
        None => SnapshotterKind::detect_for(&store_root(g)) == SnapshotterKind::Native,
    };
    let mut mounts = a
        .volumes
        .iter()
        .map(|v| parse_volume(v))
        .collect::<Result<Vec<_>>>()?;
    for t in &a.tmpfs {
        let target = t.split(':').next().unwrap_or_default().to_string();
        mounts.push(MountSpec {
            kind: MountKind::Tmpfs { size: None },
            target,
        });
    }

    let store = super::open_store(g)?;
    let image = store.resolve(&a.image)?.ok_or_else(|| {
        anyhow!(
            "Unable to find image '{}' locally (run `cairn pull {}`)",
            a.image,
            a.image
        )
    })?;
    let config_json = store.config_json(&image)?;
    let config = &config_json["config"];
    let lowers = store.snapshots_for(&image)?;
    drop(store);

    let args = command_line(config, a.entrypoint.as_deref(), &a.command)?;
    let existing: Vec<ContainerConfig> = list_containers(g)?.into_iter().map(|(c, _)| c).collect();
    if let Some(n) = &a.name {
        if existing.iter().any(|c| &c.name == n) {
            bail!("Conflict. The container name \"/{n}\" is already in use (remove it with `cairn rm {n}`)");
        }
    }
    let id = random_hex(32)?;
    let name = match &a.name {
        Some(n) => n.clone(),
        None => generate_name(&existing)?,
    };
    let hostname = a.hostname.clone().unwrap_or_else(|| match network {
        Network::Host => String::new(),
        Network::None => id[..12].to_string(),
    });
    let spec = ProcessSpec {
        args,
        env: merge_env(&config["Env"], &a.env),
        user: a
            .user
            .clone()
            .unwrap_or_else(|| config["User"].as_str().unwrap_or("").to_string()),
        cwd: a
            .workdir
            .clone()
            .or_else(|| {
                config["WorkingDir"]
                    .as_str()
                    .filter(|w| !w.is_empty())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "/".into()),
        hostname,
        network,
        mounts,
        tty: a.tty,
        stdin: a.interactive,
        privileged: a.privileged,
    };
    let cfg = ContainerConfig {
        id: id.clone(),
        name,
        image: a.image.clone(),
        image_id: image.id.clone(),
        created: now(),
        spec,
        lowers,
        native,
        auto_remove: a.rm,
        healthcheck: healthcheck(config),
    };
    let dir = containers_dir(g).join(&id);
    make_container_dir(&dir)?;
    write_new_json(&dir.join("config.json"), &cfg)?;
    if a.detach {
        write_new_json(
            &dir.join("state.json"),
            &ContainerState {
                status: "created".into(),
                // Until the supervisor takes over, this process keeps the container: if it dies
                // first, the container reads as exited.
                supervisor_pid: Some(std::process::id() as i32),
                ..Default::default()
            },
        )?;
        return start_detached(&cfg, &dir, g);
    }
    // A foreground container gets its state.json when it starts (one file write less on the
    // way to starting it); until then `ps` does not list it.
    run_foreground(&cfg, &dir)
}

fn run_foreground(cfg: &ContainerConfig, dir: &Path) -> Result<i32> {
    let state = Mutex::new(ContainerState {
        status: "created".into(),
        supervisor_pid: Some(std::process::id() as i32),
        ..Default::default()
    });
    // Kept containers keep their output for `cairn logs`, as docker's do.
    let mut log = if cfg.auto_remove {
        None
    } else {
        Some(
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("log.json"))
                .context("opening the container log")?,
        )
    };
    let (result, reusable) = keep(cfg, dir, &state, &mut |stream, bytes| {
        if let Some(log) = log.as_mut() {
            let _ = writeln!(log, "{}", log_line(stream, bytes));
        }
        // A closed stdout (`| head`) must not stop the container.
        let _ = match stream {
            OutputStream::Stdout => {
                let mut o = std::io::stdout().lock();
                o.write_all(bytes).and_then(|_| o.flush())
            }
            OutputStream::Stderr => {
                let mut e = std::io::stderr().lock();
                e.write_all(bytes).and_then(|_| e.flush())
            }
        };
    });
    finish(cfg, dir, &state, &result, reusable);
    let code = match result {
        Ok(code) => code,
        Err(RunError::Exec { message, code }) => {
            eprintln!("cairn: {message}");
            code
        }
        Err(RunError::Other(e)) => {
            eprintln!("cairn: {e:#}");
            125
        }
    };
    Ok(match cairn_sandbox::termination_signal() {
        Some(sig) => 128 + sig,
        None => code,
    })
}

enum RunError {
    Exec { message: String, code: i32 },
    Other(anyhow::Error),
}

/// Prepares the rootfs and runs the container to its end, keeping `state` (and state.json) up to
/// date and running the health check. Also says whether the container's directory can be
/// recycled for the next `--rm` container (see [`retire_container_dir`]).
fn keep(
    cfg: &ContainerConfig,
    dir: &Path,
    state: &Mutex<ContainerState>,
    on_output: &mut dyn FnMut(OutputStream, &[u8]),
) -> (Result<i32, RunError>, bool) {
    let kind = if cfg.native {
        SnapshotterKind::Native
    } else {
        SnapshotterKind::Overlay
    };
    // The container's own dir holds the rootfs's dirs directly (no temp dir of its own). What a
    // `--rm` container writes is thrown away at its end: its upper dir lives in memory.
    let upper = if cfg.auto_remove {
        UpperDir::Memory
    } else {
        UpperDir::Disk
    };
    let rootfs = match Rootfs::prepare_in(&cfg.lowers, dir, kind, &cfg.spec.mounts, upper) {
        Ok(r) => r,
        Err(e) => return (Err(RunError::Other(e.into())), false),
    };
    let _raw = (cfg.spec.tty && cfg.spec.stdin)
        .then(cairn_sandbox::tty::RawTerminal::stdin)
        .flatten();
    let stop_health = Arc::new(AtomicBool::new(false));
    let mut health_thread = None;
    let mut hooks = cairn_sandbox::RunHooks {
        on_start: Some(Box::new(|pid| {
            if let Ok(mut s) = state.lock() {
                s.status = "running".into();
                s.pid = Some(pid);
                s.started = Some(now());
                if cfg.healthcheck.is_some() {
                    s.health = Some(Health {
                        status: "starting".into(),
                        ..Default::default()
                    });
                }
                let _ = write_state(dir, &s);
            }
            if let Some(hc) = cfg.healthcheck.clone() {
                let stop = stop_health.clone();
                let (dir, spec) = (dir.to_path_buf(), cfg.spec.clone());
                health_thread = Some(std::thread::spawn(move || {
                    health_loop(pid, &hc, &spec, &dir, &stop)
                }));
            }
        })),
        stdin: None,
    };
    let result = cairn_sandbox::run_with(rootfs.path(), &cfg.spec, on_output, &mut hooks);
    drop(hooks);
    stop_health.store(true, Ordering::SeqCst);
    if let Some(t) = health_thread {
        let _ = t.join();
    }
    drop(_raw);
    let released = if cfg.auto_remove {
        rootfs.release_for_reuse()
    } else {
        rootfs.cleanup().map(|()| false)
    };
    let reusable = released.unwrap_or_else(|e| {
        eprintln!("cairn: warning: {e}");
        false
    });
    let result = match result {
        Ok(code) => Ok(code),
        Err(cairn_sandbox::Error::Exec { message, code }) => Err(RunError::Exec { message, code }),
        Err(e) => Err(RunError::Other(e.into())),
    };
    (result, reusable)
}

fn finish(
    cfg: &ContainerConfig,
    dir: &Path,
    state: &Mutex<ContainerState>,
    result: &Result<i32, RunError>,
    reusable: bool,
) {
    if cfg.auto_remove {
        retire_container_dir(dir, reusable);
        return;
    }
    if let Ok(mut s) = state.lock() {
        // The health thread has stopped: re-read its last verdict before the final write.
        if let Ok(on_disk) = read_json::<ContainerState>(&dir.join("state.json")) {
            s.health = on_disk.health;
        }
        s.status = "exited".into();
        s.finished = Some(now());
        s.exit_code = Some(match result {
            Ok(c) => *c,
            Err(RunError::Exec { code, .. }) => *code,
            Err(RunError::Other(_)) => 125,
        });
        s.error = match result {
            Ok(_) => None,
            Err(RunError::Exec { message, .. }) => Some(message.clone()),
            Err(RunError::Other(e)) => Some(format!("{e:#}")),
        };
        let _ = write_json(&dir.join("state.json"), &*s);
    }
}

/// How many recycled container dirs `containers/.spares` keeps: one per concurrent `--rm` run
/// that may want one, a few at most (each is three empty directories).
const MAX_SPARES: usize = 4;

fn spares_dir(containers: &Path) -> PathBuf {
    containers.join(".spares")
}

/// Makes the directory of a new container: a spare one renamed into place when there is one (a
/// rename costs a fraction of making and later removing the directories in it).
fn make_container_dir(dir: &Path) -> Result<()> {
    if let Some(containers) = dir.parent() {
        if let Ok(spares) = fs::read_dir(spares_dir(containers)) {
            // Another run may take the same spare first: its rename then fails, try the next.
            for spare in spares.flatten() {
                if fs::rename(spare.path(), dir).is_ok() {
                    return Ok(());
                }
            }
        }
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Removes what a --rm container leaves in its dir (config.json, state.json, by name), then
/// either keeps the dir as a spare for the next container, when its rootfs said it can serve
/// again (`Rootfs::release_for_reuse`) and there are not enough spares yet, or removes it,
/// walking it only when something else is left.
fn retire_container_dir(dir: &Path, reusable: bool) {
    let _ = fs::remove_file(dir.join("config.json"));
    let _ = fs::remove_file(dir.join("state.json"));
    if reusable {
        if let (Some(containers), Some(name)) = (dir.parent(), dir.file_name()) {
            let spares = spares_dir(containers);
            let count = fs::read_dir(&spares).map(|d| d.count()).unwrap_or(0);
            if count < MAX_SPARES
                && (count > 0 || fs::create_dir_all(&spares).is_ok())
                && fs::rename(dir, spares.join(name)).is_ok()
            {
                return;
            }
        }
    }
    if fs::remove_dir(dir).is_err() {
        let _ = fs::remove_dir_all(dir);
    }
}

/// Runs the image's HEALTHCHECK inside the container every interval and records the verdict.
fn health_loop(pid: u32, hc: &HealthConfig, spec: &ProcessSpec, dir: &Path, stop: &AtomicBool) {
    let started = Instant::now();
    let mut streak = 0u32;
    let sleep = |secs: f64| {
        let until = Instant::now() + Duration::from_secs_f64(secs);
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    loop {
        sleep(hc.interval);
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let check = ProcessSpec {
            args: hc.test.clone(),
            env: spec.env.clone(),
            user: spec.user.clone(),
            cwd: spec.cwd.clone(),
            ..Default::default()
        };
        let exec_pid = Arc::new(AtomicU32::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let watchdog = {
            let (exec_pid, done, timeout) = (exec_pid.clone(), done.clone(), hc.timeout);
            std::thread::spawn(move || {
                let until = Instant::now() + Duration::from_secs_f64(timeout);
                while Instant::now() < until && !done.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let p = exec_pid.load(Ordering::SeqCst);
                if !done.load(Ordering::SeqCst) && p != 0 {
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", &p.to_string()])
                        .status();
                }
            })
        };
        let mut output = Vec::new();
        let mut hooks = cairn_sandbox::RunHooks {
            on_start: Some(Box::new(|p| exec_pid.store(p, Ordering::SeqCst))),
            stdin: None,
        };
        let result = cairn_sandbox::exec_in(
            pid,
            &check,
            &mut |_, b| output.extend_from_slice(b),
            &mut hooks,
        );
        drop(hooks);
        done.store(true, Ordering::SeqCst);
        let _ = watchdog.join();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let ok = matches!(result, Ok(0));
        let in_start_period = started.elapsed().as_secs_f64() < hc.start_period;
        let path = dir.join("state.json");
        if let Ok(mut s) = read_json::<ContainerState>(&path) {
            let previous = s
                .health
                .as_ref()
                .map(|h| h.status.clone())
                .unwrap_or_else(|| "starting".into());
            let status;
            (status, streak) = next_health(&previous, streak, ok, in_start_period, hc.retries);
            let mut text = String::from_utf8_lossy(&output).to_string();
            if let Err(e) = &result {
                text.push_str(&e.to_string());
            }
            s.health = Some(Health {
                status,
                failing_streak: streak,
                last_output: text.chars().take(4096).collect(),
            });
            let _ = write_json(&path, &s);
        }
    }
}

/// Docker's health state machine: a success makes it healthy and resets the streak; failures
/// count (except during the start period) and make it unhealthy at `retries` in a row.
fn next_health(
    previous: &str,
    streak: u32,
    ok: bool,
    in_start_period: bool,
    retries: u32,
) -> (String, u32) {
    if ok {
        return ("healthy".into(), 0);
    }
    let streak = if in_start_period { streak } else { streak + 1 };
    let status = if streak >= retries {
        "unhealthy"
    } else {
        previous
    };
    (status.to_string(), streak)
}

fn start_detached(cfg: &ContainerConfig, dir: &Path, g: &Global) -> Result<i32> {
    let log = fs::File::create(dir.join("supervisor.log"))?;
    let root = store_root(g);
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.arg("--root")
        .arg(&root)
        .args(["run", "--supervise", &cfg.id, &cfg.image])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        // Its own process group: Ctrl-C on this terminal later is not for it.
        .process_group(0);
    let child = cmd.spawn().context("starting the container supervisor")?;
    drop(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = live_state(read_json::<ContainerState>(&dir.join("state.json"))?);
        match s.status.as_str() {
            "running" => break,
            "exited" => {
                let why = s
                    .error
                    .unwrap_or_else(|| format!("exited with code {}", s.exit_code.unwrap_or(-1)));
                if why.starts_with("exec:") || s.exit_code != Some(0) {
                    bail!("container {} failed to start: {why}", &cfg.id[..12]);
                }
                break;
            }
            _ if Instant::now() > deadline => {
                bail!("container {} did not start within 30s", &cfg.id[..12])
            }
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    println!("{}", cfg.id);
    Ok(0)
}

/// The detached container's keeper: runs it, writes its output to log.json, its state to
/// state.json, and forwards SIGTERM to it (`cairn stop`).
fn supervise(id: &str, g: &Global) -> Result<i32> {
    cairn_sandbox::enter_private_mount_namespace()?;
    cairn_sandbox::forward_termination_signals()?;
    let dir = containers_dir(g).join(id);
    let cfg: ContainerConfig = read_json(&dir.join("config.json"))?;
    let state = Mutex::new(ContainerState {
        status: "created".into(),
        supervisor_pid: Some(std::process::id() as i32),
        ..Default::default()
    });
    write_json(
        &dir.join("state.json"),
        &*state.lock().map_err(|_| anyhow!("state lock"))?,
    )?;
    let mut log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("log.json"))
        .context("opening the container log")?;
    let (result, reusable) = keep(&cfg, &dir, &state, &mut |stream, bytes| {
        let _ = writeln!(log, "{}", log_line(stream, bytes));
    });
    finish(&cfg, &dir, &state, &result, reusable);
    Ok(0)
}

/// One line of log.json, docker's json-file format.
fn log_line(stream: OutputStream, bytes: &[u8]) -> Value {
    serde_json::json!({
        "log": String::from_utf8_lossy(bytes),
        "stream": match stream { OutputStream::Stdout => "stdout", OutputStream::Stderr => "stderr" },
        "time": rfc3339(now()),
    })
}

/// UTC RFC 3339 with nanoseconds, as docker's json-file log writes `time`.
fn rfc3339(secs: f64) -> String {
    let whole = secs.floor() as i64;
    let nanos = ((secs - secs.floor()) * 1e9) as u32;
    let (days, sod) = (whole.div_euclid(86400), whole.rem_euclid(86400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Docker's `units.HumanDuration` of `secs` (Go truncates a duration to whole seconds first).
fn human_duration(secs: f64) -> String {
    format::human_duration(secs as i64)
}

fn status_text(s: &ContainerState) -> String {
    let t = now();
    match s.status.as_str() {
        "running" => {
            let mut out = format!("Up {}", human_duration(t - s.started.unwrap_or(t)));
            if let Some(h) = &s.health {
                out.push_str(match h.status.as_str() {
                    "healthy" => " (healthy)",
                    "unhealthy" => " (unhealthy)",
                    _ => " (health: starting)",
                });
            }
            out
        }
        "exited" => format!(
            "Exited ({}) {} ago",
            s.exit_code.unwrap_or(-1),
            human_duration(t - s.finished.unwrap_or(t))
        ),
        _ => "Created".into(),
    }
}

fn quoted_command(args: &[String], trunc: bool) -> String {
    let joined = args.join(" ");
    if trunc {
        format!("\"{}\"", format::ellipsis(&joined, 20))
    } else {
        format!("\"{joined}\"")
    }
}

pub fn ps(a: PsArgs, g: &Global) -> Result<i32> {
    let all = list_containers(g)?;
    let shown: Vec<_> = all
        .iter()
        .filter(|(_, s)| a.all || s.status == "running")
        .collect();
    if a.quiet {
        for (c, _) in shown {
            println!("{}", if a.no_trunc { &c.id[..] } else { &c.id[..12] });
        }
        return Ok(0);
    }
    let header = [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ];
    let mut rows = vec![header.map(String::from).to_vec()];
    rows.extend(shown.iter().map(|(c, s)| {
        vec![
            if a.no_trunc {
                c.id.clone()
            } else {
                c.id[..12].to_string()
            },
            c.image.clone(),
            quoted_command(&c.spec.args, !a.no_trunc),
            format!("{} ago", human_duration(now() - c.created)),
            status_text(s),
            String::new(),
            c.name.clone(),
        ]
    }));
    print!("{}", format::tabwrite(&rows));
    Ok(0)
}

pub fn logs(a: LogsArgs, g: &Global) -> Result<i32> {
    let (c, _) = find_container(g, &a.container)?;
    let dir = containers_dir(g).join(&c.id);
    let path = dir.join("log.json");
    let mut file = match fs::File::open(&path) {
        Ok(f) => f,
        Err(_) if !a.follow => return Ok(0),
        Err(e) => return Err(anyhow!("{}: {e}", path.display())),
    };
    let mut pending = String::new();
    loop {
        let mut chunk = String::new();
        file.read_to_string(&mut chunk)?;
        pending.push_str(&chunk);
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            print_log_line(&line, a.timestamps);
        }
        if !a.follow {
            return Ok(0);
        }
        let state = read_json::<ContainerState>(&dir.join("state.json")).map(live_state);
        let running = state.map(|s| s.status != "exited").unwrap_or(false);
        if !running {
            // One last read: output written just before the exit.
            let mut rest = String::new();
            file.read_to_string(&mut rest)?;
            for line in (pending + &rest).lines() {
                print_log_line(line, a.timestamps);
            }
            return Ok(0);
        }
        let pos = file.stream_position()?;
        std::thread::sleep(Duration::from_millis(100));
        file.seek(std::io::SeekFrom::Start(pos))?;
    }
}

fn print_log_line(line: &str, timestamps: bool) {
    let Ok(v) = serde_json::from_str::<Value>(line.trim()) else {
        return;
    };
    let text = v["log"].as_str().unwrap_or_default();
    let prefix = if timestamps {
        format!("{} ", v["time"].as_str().unwrap_or_default())
    } else {
        String::new()
    };
    let _ = if v["stream"] == "stderr" {
        let mut e = std::io::stderr().lock();
        write!(e, "{prefix}{text}").and_then(|_| e.flush())
    } else {
        let mut o = std::io::stdout().lock();
        write!(o, "{prefix}{text}").and_then(|_| o.flush())
    };
}

/// Stops a running container: SIGTERM to the main process (through PID 1), SIGKILL to PID 1
/// after `grace`. Returns once the keeper has recorded the exit.
fn stop_container(
    g: &Global,
    c: &ContainerConfig,
    s: &ContainerState,
    grace: Duration,
) -> Result<()> {
    if s.status == "exited" {
        return Ok(());
    }
    let dir = containers_dir(g).join(&c.id);
    let exited = || {
        read_json::<ContainerState>(&dir.join("state.json"))
            .map(|s| live_state(s).status == "exited")
            .unwrap_or(true)
    };
    let kill = |pid: i64, sig: &str| {
        let _ = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .stderr(std::process::Stdio::null())
            .status();
    };
    // PID 1 of the container passes SIGTERM on to the main process (docker's graceful stop),
    // whoever keeps the container (a foreground `cairn run` or a -d supervisor).
    match (s.pid, s.supervisor_pid) {
        (Some(pid), _) => kill(pid as i64, "-TERM"),
        (None, Some(sup)) => kill(sup as i64, "-TERM"),
        (None, None) => {}
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && !exited() {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !exited() {
        if let Some(pid) = s.pid {
            kill(pid as i64, "-KILL");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && !exited() {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !exited() {
            bail!("container {} did not stop", c.name);
        }
    }
    Ok(())
}

pub fn stop(a: StopArgs, g: &Global) -> Result<i32> {
    let mut code = 0;
    for key in &a.containers {
        match find_container(g, key)
            .and_then(|(c, s)| stop_container(g, &c, &s, Duration::from_secs(a.time)))
        {
            Ok(()) => println!("{key}"),
            Err(e) => {
                eprintln!("Error response: {e:#}");
                code = 1;
            }
        }
    }
    Ok(code)
}

pub fn rm(a: RmArgs, g: &Global) -> Result<i32> {
    let mut code = 0;
    for key in &a.containers {
        let r = find_container(g, key).and_then(|(c, s)| {
            if s.status != "exited" {
                if !a.force {
                    bail!(
                        "cannot remove container \"/{}\": container is running: stop the container before removing or force remove",
                        c.name
                    );
                }
                stop_container(g, &c, &s, Duration::ZERO)?;
            }
            let dir = containers_dir(g).join(&c.id);
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))
        });
        match r {
            Ok(()) => println!("{key}"),
            Err(e) => {
                eprintln!("Error response: {e:#}");
                code = 1;
            }
        }
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entrypoint_and_cmd_combine_as_docker() {
        let cfg = json!({"Entrypoint": ["/app"], "Cmd": ["--port", "80"]});
        assert_eq!(
            command_line(&cfg, None, &[]).unwrap(),
            ["/app", "--port", "80"]
        );
        assert_eq!(
            command_line(&cfg, None, &["-v".into()]).unwrap(),
            ["/app", "-v"]
        );
        assert_eq!(command_line(&cfg, Some("sh"), &[]).unwrap(), ["sh"]);
        assert_eq!(
            command_line(&cfg, Some("sh"), &["-c".into(), "x".into()]).unwrap(),
            ["sh", "-c", "x"]
        );
        assert_eq!(
            command_line(&cfg, Some(""), &["ls".into()]).unwrap(),
            ["ls"]
        );
        let cmd_only = json!({"Cmd": ["sh"]});
        assert_eq!(
            command_line(&cmd_only, None, &["ls".into(), "-la".into()]).unwrap(),
            ["ls", "-la"]
        );
        assert!(command_line(&json!({}), None, &[]).is_err());
    }

    #[test]
    fn env_overrides_replace_by_key() {
        let image = json!(["PATH=/bin", "A=1"]);
        std::env::set_var("CAIRN_TEST_FROM_HOST", "h");
        let env = merge_env(
            &image,
            &[
                "A=2".into(),
                "B=3".into(),
                "CAIRN_TEST_FROM_HOST".into(),
                "UNSET_X_Y".into(),
            ],
        );
        assert_eq!(env, ["PATH=/bin", "A=2", "B=3", "CAIRN_TEST_FROM_HOST=h"]);
    }

    #[test]
    fn volumes_are_parsed_and_escapes_refused() {
        let v = parse_volume("/tmp:/data:ro").unwrap();
        assert_eq!(v.target, "/data");
        assert!(matches!(v.kind, MountKind::Bind { readonly: true, .. }));
        assert!(parse_volume("/tmp:/data/../etc").is_err());
        assert!(parse_volume("/tmp:rel").is_err());
        assert!(parse_volume("named:/data").is_err());
        assert!(parse_volume("/does/not/exist/x:/data").is_err());
    }

    #[test]
    fn healthcheck_forms() {
        let hc = healthcheck(&json!({"Healthcheck": {"Test": ["CMD-SHELL", "wget -q --spider http://localhost || exit 1"], "Interval": 5_000_000_000u64, "Retries": 2}})).unwrap();
        assert_eq!(
            hc.test,
            [
                "/bin/sh",
                "-c",
                "wget -q --spider http://localhost || exit 1"
            ]
        );
        assert_eq!((hc.interval, hc.timeout, hc.retries), (5.0, 30.0, 2));
        assert!(healthcheck(&json!({"Healthcheck": {"Test": ["NONE"]}})).is_none());
        assert!(healthcheck(&json!({})).is_none());
    }

    #[test]
    fn health_goes_unhealthy_after_retries_and_back_on_success() {
        let (s, n) = next_health("starting", 0, false, true, 3);
        assert_eq!(
            (s.as_str(), n),
            ("starting", 0),
            "start period failures do not count"
        );
        let (s, n) = next_health("starting", 0, false, false, 2);
        assert_eq!((s.as_str(), n), ("starting", 1));
        let (s, n) = next_health(&s, n, false, false, 2);
        assert_eq!((s.as_str(), n), ("unhealthy", 2));
        let (s, n) = next_health(&s, n, true, false, 2);
        assert_eq!((s.as_str(), n), ("healthy", 0));
        let (s, n) = next_health(&s, n, false, false, 2);
        assert_eq!(
            (s.as_str(), n),
            ("healthy", 1),
            "one failure does not flip it"
        );
    }

    #[test]
    fn log_times_are_rfc3339() {
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(951_827_696.5), "2000-02-29T12:34:56.500000000Z");
    }

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(human_duration(0.3), "Less than a second");
        assert_eq!(human_duration(3.2), "3 seconds");
        assert_eq!(human_duration(65.0), "About a minute");
        assert_eq!(human_duration(7200.0), "2 hours");
        // go-units rounds hours: 1 h 40 min is "2 hours", not "About an hour"
        assert_eq!(human_duration(6000.0), "2 hours");
        let s = ContainerState {
            status: "running".into(),
            started: Some(now() - 3.5),
            health: Some(Health {
                status: "healthy".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(status_text(&s), "Up 3 seconds (healthy)");
    }
}
