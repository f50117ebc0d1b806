//! `cairn pull`, `push`, `login`, `logout`: thin glue over `cairn_registry`, printing progress
//! the way docker does.

use std::collections::HashSet;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use cairn_registry::{Event, Platform, PullOptions, PushOptions, Reference, RegistryOptions};

use crate::Global;

/// Connection flags shared by the registry commands.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConnArgs {
    /// Allow plain http and unverified TLS for this registry (host[:port]); repeatable.
    /// Also CAIRN_INSECURE_REGISTRIES (comma-separated). Loopback registries always allow http.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registry: Vec<String>,
    /// Trust this PEM certificate authority too (also CAIRN_REGISTRY_CA, colon-separated)
    #[arg(long = "tls-ca", value_name = "FILE")]
    pub tls_ca: Vec<PathBuf>,
}

impl ConnArgs {
    /// The registry options these flags (and the environment) give.
    pub fn options(&self) -> RegistryOptions {
        let mut o = RegistryOptions::default();
        o.insecure_registries.extend(
            self.insecure_registry
                .iter()
                .map(|h| cairn_registry::reference::normalize_server(h)),
        );
        o.ca_files.extend(self.tls_ca.iter().cloned());
        o
    }
}

#[derive(clap::Args, Debug)]
pub struct PullArgs {
    /// Image to pull: NAME[:TAG|@DIGEST]
    pub reference: String,
    /// Platform to select from a multi-platform image (os/arch[/variant]); default: the host's
    #[arg(long, env = "DOCKER_DEFAULT_PLATFORM")]
    pub platform: Option<String>,
    /// Suppress progress output; print only the image name
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// Image to push: NAME[:TAG] (also the destination unless DESTINATION is given)
    pub reference: String,
    /// Push under another name: REGISTRY/NAME[:TAG]
    pub destination: Option<String>,
    /// Upload blobs in chunks of this many bytes (default: one request per blob)
    #[arg(long, value_name = "BYTES")]
    pub chunk_size: Option<u64>,
    /// Suppress progress output
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// Registry server (default: docker.io)
    pub server: Option<String>,
    /// Username
    #[arg(long, short = 'u')]
    pub username: Option<String>,
    /// Password (prefer --password-stdin: command lines are visible to other users)
    #[arg(long, short = 'p', conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from standard input
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(clap::Args, Debug)]
pub struct LogoutArgs {
    /// Registry server (default: docker.io)
    pub server: Option<String>,
}

/// Docker's size notation (decimal units).
fn human(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.3}{}", units[u]).replace(".000", "")
    }
}

fn short(d: &str) -> String {
    d.trim_start_matches("sha256:").chars().take(12).collect()
}

#[derive(Default)]
struct Screen {
    /// Per-blob status lines (terminal mode), in first-seen order.
    rows: Vec<(String, String)>,
    /// How many of them are on screen below the last plain line.
    drawn: usize,
    /// State lines already printed (plain mode prints each once).
    seen: HashSet<(String, &'static str)>,
}

/// Renders events as docker does: on a terminal one live line per blob with a progress bar,
/// otherwise one line per state change.
fn printer(quiet: bool, pushing: bool) -> Option<cairn_registry::ProgressFn> {
    if quiet {
        return None;
    }
    let tty = std::io::stdout().is_terminal();
    let screen = Mutex::new(Screen::default());
    Some(Arc::new(move |e: &Event| {
        let (blob, status): (Option<&String>, String) = match e {
            Event::PullingFrom { tag, repository } => {
                let repo = repository.strip_prefix("library/").unwrap_or(repository);
                (None, format!("{tag}: Pulling from {repo}"))
            }
            Event::AlreadyExists { digest } if pushing => {
                (Some(digest), "Layer already exists".into())
            }
            Event::AlreadyExists { digest } => (Some(digest), "Already exists".into()),
            Event::Waiting { digest } => (Some(digest), "Pulling fs layer".into()),
            Event::Progress {
                digest,
                current,
                total,
            } => {
                if !tty {
                    return;
                }
                let width = 50u64;
                let done = (current * width).checked_div(*total).unwrap_or(width);
                let bar = format!(
                    "[{}>{}]",
                    "=".repeat(done.saturating_sub(1) as usize),
                    " ".repeat((width - done.min(width)) as usize)
                );
                let verb = if pushing { "Pushing" } else { "Downloading" };
                let sizes = format!("{}/{}", human(*current), human(*total));
                (Some(digest), format!("{verb} {bar} {sizes}"))
            }
            Event::PullComplete { digest } => (Some(digest), "Pull complete".into()),
            Event::Retrying {
                digest,
                attempt,
                error,
            } => (Some(digest), format!("Retrying ({attempt}): {error}")),
            Event::Mounted { digest, from } => (Some(digest), format!("Mounted from {from}")),
            Event::Pushed { digest } => (Some(digest), "Pushed".into()),
            Event::Digest { digest } => (None, format!("Digest: {digest}")),
            Event::ManifestPushed { tag, digest, size } => {
                (None, format!("{tag}: digest: {digest} size: {size}"))
            }
            Event::PullFinished { .. } => return,
        };
        let Ok(mut sc) = screen.lock() else { return };
        let mut out = std::io::stdout().lock();
        match blob {
            None => {
                let _ = writeln!(out, "{status}");
                sc.rows.clear();
                sc.drawn = 0;
            }
            Some(d) if tty => {
                let id = short(d);
                match sc.rows.iter_mut().find(|(i, _)| *i == id) {
                    Some(row) => row.1 = status,
                    None => sc.rows.push((id, status)),
                }
                if sc.drawn > 0 {
                    let _ = write!(out, "\x1b[{}A", sc.drawn);
                }
                for (id, st) in &sc.rows {
                    let _ = writeln!(out, "\x1b[2K{id}: {st}");
                }
                sc.drawn = sc.rows.len();
            }
            Some(d) => {
                let key = match e {
                    Event::AlreadyExists { .. } => Some("exists"),
                    Event::Waiting { .. } => Some("waiting"),
                    _ => None,
                };
                if let Some(k) = key {
                    if !sc.seen.insert((d.clone(), k)) {
                        return;
                    }
                }
                let _ = writeln!(out, "{}: {status}", short(d));
            }
        }
        let _ = out.flush();
    }))
}

pub fn pull(a: PullArgs, g: &Global) -> anyhow::Result<i32> {
    let store = super::open_store(g)?;
    let r = Reference::parse(&a.reference)?;
    let mut opts = PullOptions {
        registry: a.conn.options(),
        platform: a.platform.as_deref().map(Platform::parse).transpose()?,
    };
    opts.registry.progress = printer(a.quiet, false);
    let downloaded = Arc::new(Mutex::new(true));
    if let Some(p) = opts.registry.progress.clone() {
        let d = downloaded.clone();
        opts.registry.progress = Some(Arc::new(move |e: &Event| {
            if let (Event::PullFinished { downloaded }, Ok(mut slot)) = (e, d.lock()) {
                *slot = *downloaded;
            }
            p(e)
        }));
    }
    let img = cairn_registry::pull(&store, &a.reference, &opts)
        .with_context(|| format!("pulling {}", r.familiar()))?;
    store.warm_snapshots(&img)?;
    if !a.quiet {
        let fresh = downloaded.lock().map(|d| *d).unwrap_or(true);
        if fresh {
            println!("Status: Downloaded newer image for {}", r.familiar());
        } else {
            println!("Status: Image is up to date for {}", r.familiar());
        }
    }
    println!("{r}");
    Ok(0)
}

pub fn push(a: PushArgs, g: &Global) -> anyhow::Result<i32> {
    let store = super::open_store(g)?;
    let dest = a.destination.clone().unwrap_or_else(|| a.reference.clone());
    let target = Reference::parse(&dest)?;
    let mut opts = PushOptions {
        registry: a.conn.options(),
        chunk_size: a.chunk_size,
    };
    opts.registry.progress = printer(a.quiet, true);
    if !a.quiet {
        println!("The push refers to repository [{}]", target.name());
    }
    let digest = cairn_registry::push(&store, &a.reference, &dest, &opts)
        .with_context(|| format!("pushing {}", target.familiar()))?;
    if a.quiet {
        println!("{digest}");
    }
    Ok(0)
}

pub fn login(a: LoginArgs, _g: &Global) -> anyhow::Result<i32> {
    let server = a.server.clone().unwrap_or_else(|| "docker.io".into());
    anyhow::ensure!(
        !(a.password_stdin && a.username.is_none()),
        "--password-stdin needs --username (standard input carries only the password)"
    );
    let stdin = std::io::stdin();
    let username = match a.username {
        Some(u) => u,
        None => {
            eprint!("Username: ");
            let mut l = String::new();
            stdin.lock().read_line(&mut l)?;
            l.trim().to_string()
        }
    };
    let password = match (a.password, a.password_stdin) {
        (Some(p), _) => {
            eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
            p
        }
        (None, true) => {
            let mut p = String::new();
            std::io::Read::read_to_string(&mut stdin.lock(), &mut p)?;
            p.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => cairn_registry::auth::read_secret_line("Password: ")?,
    };
    anyhow::ensure!(!username.is_empty(), "a username is required");
    anyhow::ensure!(!password.is_empty(), "a password is required");
    let opts = a.conn.options();
    cairn_registry::login(&server, &username, &password, &opts)
        .with_context(|| format!("login to {server}"))?;
    println!("Login Succeeded");
    Ok(0)
}

pub fn logout(a: LogoutArgs, _g: &Global) -> anyhow::Result<i32> {
    let server = a.server.unwrap_or_else(|| "docker.io".into());
    let name = cairn_registry::reference::normalize_server(&server);
    if cairn_registry::logout(&server, &RegistryOptions::default())? {
        println!("Removing login credentials for {name}");
    } else {
        println!("Not logged in to {name}");
    }
    Ok(0)
}
