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
    fn options(&self) -> RegistryOptions {
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
    #[arg(long)]
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

/// Prints docker-style lines for events; each state line once per blob.
fn printer(quiet: bool, pushing: bool) -> Option<cairn_registry::ProgressFn> {
    if quiet {
        return None;
    }
    let seen: Mutex<HashSet<(String, &'static str)>> = Mutex::new(HashSet::new());
    Some(Arc::new(move |e: &Event| {
        let short = |d: &str| {
            d.trim_start_matches("sha256:")
                .chars()
                .take(12)
                .collect::<String>()
        };
        let line = match e {
            Event::PullingFrom { tag, repository } => {
                let repo = repository.strip_prefix("library/").unwrap_or(repository);
                format!("{tag}: Pulling from {repo}")
            }
            Event::AlreadyExists { digest } if pushing => {
                format!("{}: Layer already exists", short(digest))
            }
            Event::AlreadyExists { digest } => format!("{}: Already exists", short(digest)),
            Event::Waiting { digest } => format!("{}: Pulling fs layer", short(digest)),
            Event::PullComplete { digest } => format!("{}: Pull complete", short(digest)),
            Event::Retrying {
                digest,
                attempt,
                error,
            } => format!("{}: Retrying ({attempt}): {error}", short(digest)),
            Event::Digest { digest } => format!("Digest: {digest}"),
            Event::Mounted { digest, from } => format!("{}: Mounted from {from}", short(digest)),
            Event::Pushed { digest } => format!("{}: Pushed", short(digest)),
            Event::ManifestPushed { tag, digest, size } => {
                format!("{tag}: digest: {digest} size: {size}")
            }
            _ => return,
        };
        let key = match e {
            Event::AlreadyExists { digest } => Some((digest.clone(), "exists")),
            Event::Waiting { digest } => Some((digest.clone(), "waiting")),
            _ => None,
        };
        if let (Some(k), Ok(mut s)) = (key, seen.lock()) {
            if !s.insert(k) {
                return;
            }
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
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
    cairn_registry::pull(&store, &a.reference, &opts)
        .with_context(|| format!("pulling {}", r.familiar()))?;
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
        (None, false) => {
            if stdin.is_terminal() {
                eprint!("Password: ");
            }
            let mut l = String::new();
            stdin.lock().read_line(&mut l)?;
            l.trim_end_matches(['\n', '\r']).to_string()
        }
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
