//! `cairn build` (owned by the build issue; `--print` by the frontend issue).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use cairn_build::context::BuildContext;
use cairn_build::{BuildRequest, Output, RegistryResolver, Reporter, SecretValue};

// Declared here rather than in cmd/mod.rs: only `cairn build` renders build progress.
#[path = "build_cache.rs"]
mod build_cache;
#[path = "progress.rs"]
mod progress;

use crate::Global;
use progress::{Mode, Renderer};

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// Name of the Dockerfile (default: PATH/Dockerfile); `-` reads it from stdin
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<String>,
    /// Name and optionally a tag in the "name:tag" format
    #[arg(short = 't', long = "tag", value_name = "NAME:TAG")]
    pub tags: Vec<String>,
    /// Set the target build stage to build
    #[arg(long)]
    pub target: Option<String>,
    /// Set build-time variables (`K` alone takes the value from the environment)
    #[arg(long = "build-arg", value_name = "K[=V]")]
    pub build_args: Vec<String>,
    /// Print the result of a build request instead of building: outline, targets
    #[arg(long, visible_alias = "call", value_name = "REQUEST")]
    pub print: Option<String>,
    /// Do not use the cache when building the image
    #[arg(long)]
    pub no_cache: bool,
    /// Always attempt to pull a newer version of the base images
    #[arg(long)]
    pub pull: bool,
    /// Export the build cache: type=registry,ref=REF[,mode=min|max] or type=inline
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub cache_to: Vec<String>,
    /// Import a build cache: type=registry,ref=REF (a cache or an image with an inline cache)
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub cache_from: Vec<String>,
    /// Check the build after it succeeds (as `cairn check`); exit 1 on errors
    #[arg(long)]
    pub check: bool,
    /// With --check: warnings are errors too
    #[arg(long)]
    pub check_error: bool,
    /// Push the image to its registry under every -t tag after the build
    #[arg(long)]
    pub push: bool,
    #[command(flatten)]
    pub conn: super::registry::ConnArgs,
    /// Type of progress output: auto, tty, plain, json, quiet
    #[arg(long, value_name = "TYPE", default_value = "auto")]
    pub progress: String,
    /// Networking mode for RUN instructions: host (default) or none
    #[arg(long, value_name = "MODE", default_value = "host")]
    pub network: String,
    /// Set metadata for the image
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// Write the image ID to the file
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Suppress the build output and print the image ID on success
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Output destination: type=local|tar|oci|docker,dest=PATH
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,
    /// Secret for RUN --mount=type=secret: id=ID[,src=FILE|,env=VAR] (default: the variable ID)
    #[arg(long = "secret", value_name = "SPEC")]
    pub secrets: Vec<String>,
    /// SSH agent for RUN --mount=type=ssh: default|ID[=SOCKET] (default: $SSH_AUTH_SOCK)
    #[arg(long = "ssh", value_name = "SPEC")]
    pub ssh: Vec<String>,
    /// Allow extra privileged entitlement: security.insecure
    #[arg(long = "allow", value_name = "ENTITLEMENT")]
    pub allow: Vec<String>,
    /// Set the target platform (os/arch); only the host's runs
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Build context: a directory, or `-` for a tar (or a Dockerfile) on stdin
    #[arg(value_name = "PATH|-", default_value = ".")]
    pub context: String,
}

pub fn run(args: BuildArgs, g: &Global) -> anyhow::Result<i32> {
    if let Some(request) = args.print.clone() {
        return super::outline::print(&args, &request, g);
    }
    // Mounts made from here on die with the process; must happen before any thread exists.
    cairn_sandbox::enter_private_mount_namespace().context("entering a private mount namespace")?;
    // Ctrl-C kills the running RUNs and stops the build at the next step (the engine checks),
    // leaving no half-written layer; threads started from here on inherit the blocked signals.
    cairn_sandbox::kill_containers_on_termination().context("installing signal handling")?;
    std::thread::spawn(|| {
        // A step that is not a RUN (unpacking a big base image) cannot be interrupted: give it
        // a few seconds, then leave; the kernel removes our mounts with the mount namespace.
        while cairn_sandbox::termination_signal().is_none() {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        std::thread::sleep(std::time::Duration::from_secs(5));
        let signal = cairn_sandbox::termination_signal().unwrap_or(2);
        eprintln!("ERROR: build interrupted by signal {signal}");
        std::process::exit(128 + signal);
    });

    let mode = if args.quiet {
        Mode::Quiet
    } else {
        Mode::parse(&args.progress, std::io::stderr().is_terminal()).ok_or_else(|| {
            anyhow::anyhow!(
                "invalid --progress {:?}: auto, tty, plain, json, quiet",
                args.progress
            )
        })?
    };
    let network = match args.network.as_str() {
        "host" | "default" => cairn_sandbox::Network::Host,
        "none" => cairn_sandbox::Network::None,
        other => bail!("invalid --network {other:?}: default, host or none"),
    };
    let outputs = args
        .outputs
        .iter()
        .map(|o| Output::parse(o).map_err(|e| anyhow::anyhow!("-o {o}: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for o in &outputs {
        o.check_dest().map_err(anyhow::Error::msg)?;
    }
    // Checked before building, not after minutes of work.
    for t in &args.tags {
        cairn_store::reference::normalize(t)
            .map_err(|e| anyhow::anyhow!("invalid tag {t:?}: {e}"))?;
    }
    if args.push && args.tags.is_empty() {
        bail!("--push needs at least one -t NAME:TAG to push to");
    }
    let cache_to = args
        .cache_to
        .iter()
        .map(|s| build_cache::parse_cache_to(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cache_from = args
        .cache_from
        .iter()
        .map(|s| build_cache::parse_cache_from(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let build_args = crate::cmd::outline::build_args(&args.build_args)?;
    let labels = parse_labels(&args.labels)?;
    let secrets = args
        .secrets
        .iter()
        .map(|s| parse_secret(s))
        .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
    let ssh = args
        .ssh
        .iter()
        .map(|s| parse_ssh(s))
        .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
    let mut allow_insecure = false;
    for a in &args.allow {
        match a.as_str() {
            "security.insecure" => allow_insecure = true,
            other => bail!("invalid --allow {other:?}: security.insecure"),
        }
    }
    let source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => Some(
            v.trim()
                .parse::<i64>()
                .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"))?,
        ),
        _ => None,
    };

    let store = super::open_store(g)?;
    let input = read_inputs(&args, store.root())?;
    let context = match &input.context_dir {
        Some(dir) => Some(
            BuildContext::open(dir, input.dockerfile_path.as_deref())
                .with_context(|| format!("opening the build context {}", dir.display()))?
                .with_hash_cache(&store.context_hash_dir()),
        ),
        None => None,
    };
    if let Some(p) = &args.platform {
        let arch = p.split('/').nth(1).unwrap_or("");
        if !arch.is_empty() && arch != cairn_store::host_arch() {
            // No emulation: RUN executes the host's binaries; only FROM scratch images and COPY
            // are truly built for another platform.
            eprintln!(
                "WARNING: --platform {p}: RUN steps execute on this host ({}), without emulation",
                cairn_store::host_arch()
            );
        }
    }

    let to_store = outputs.is_empty() || !args.tags.is_empty();
    let req = BuildRequest {
        dockerfile_name: input.dockerfile_name.clone(),
        dockerfile: input.dockerfile,
        context: context.as_ref(),
        target: args.target.clone(),
        build_args,
        platform: args.platform.clone(),
        no_cache: args.no_cache,
        network,
        source_date_epoch,
        labels,
        secrets,
        ssh,
        allow_insecure,
        blobs_for_all_stages: cache_to
            .iter()
            .any(|c| matches!(c, build_cache::CacheTo::Registry { max: true, .. })),
        export_vertex_name: cairn_build::export::first_vertex_name(&outputs, to_store),
    };
    let renderer = Renderer::new(mode);
    let reporter = Reporter::new(&renderer);
    let ticker = renderer.start_ticker();
    let pull_opts = cairn_registry::PullOptions {
        registry: registry_options(&args.conn, mode == Mode::Quiet),
        platform: None,
    };
    build_cache::import(&store, &cache_from, &pull_opts, &reporter);
    let resolver = RegistryResolver::new(&store, pull_opts, args.pull).with_reporter(&reporter);
    let inline_cache = cache_to.contains(&build_cache::CacheTo::Inline);
    let result = cairn_build::build(&store, &resolver, &req, &reporter).and_then(|mut out| {
        if inline_cache {
            build_cache::add_inline(&store, &mut out)
                .map_err(|e| cairn_build::Error::Other(format!("--cache-to type=inline: {e:#}")))?;
        }
        let record =
            cairn_build::export::finish(&store, &out, &args.tags, &outputs, to_store, &reporter)?;
        // The store's ID is the one `cairn images` shows; it equals ours unless the store
        // normalised the config.
        Ok((record.map(|r| r.id).unwrap_or(out.image_id.clone()), out))
    });
    renderer.stop_ticker(ticker);
    // Before the context on stdin is removed: the check rebuilds (all cache hits) from it.
    let check = (result.is_ok() && (args.check || args.check_error)).then(|| {
        let quiet = cairn_build::progress::Discard;
        let reporter = Reporter::new(&quiet);
        cairn_check::check_request(&store, &resolver, &req, &reporter, args.check_error)
    });
    if let Some(ctx) = &context {
        // Only a speed-up for the next build: failing to save it is not an error.
        let _ = ctx.save_hash_cache();
    }
    drop(input.scratch);

    match result {
        Ok((image_id, out)) => {
            if let Some(report) = check {
                let report = report.context("checking the build")?;
                report.render_human(&mut std::io::stderr().lock())?;
                if report.exit_code() != 0 {
                    return Ok(report.exit_code());
                }
            }
            if let Some(f) = &args.iidfile {
                write_file_atomic(f, image_id.as_bytes())?;
            }
            if mode == Mode::Quiet {
                println!("{image_id}");
            }
            let push_opts = cairn_registry::PushOptions {
                registry: registry_options(&args.conn, mode == Mode::Quiet),
                chunk_size: None,
            };
            build_cache::export(&store, &out, &cache_to, &push_opts, mode == Mode::Quiet)?;
            if args.push {
                let opts = push_opts;
                for tag in &args.tags {
                    let digest = cairn_registry::push(&store, tag, tag, &opts)
                        .with_context(|| format!("pushing {tag}"))?;
                    if mode != Mode::Quiet {
                        println!("pushed {tag}@{digest}");
                    }
                }
            }
            Ok(0)
        }
        Err(e) => {
            renderer.report_error(&e, &req.dockerfile);
            Ok(e.exit_code())
        }
    }
}

/// Registry options of a build: its pulls and pushes report one stderr line per layer event
/// (stdout carries the image ID with -q), not docker's live bars, which would fight the build's
/// own display.
fn registry_options(
    conn: &super::registry::ConnArgs,
    quiet: bool,
) -> cairn_registry::RegistryOptions {
    let mut o = conn.options();
    if !quiet {
        o.progress = Some(std::sync::Arc::new(|e: &cairn_registry::Event| {
            use cairn_registry::Event as E;
            let short = |d: &str| {
                d.trim_start_matches("sha256:")
                    .chars()
                    .take(12)
                    .collect::<String>()
            };
            match e {
                E::PullingFrom { tag, repository } => eprintln!("#pull {repository}:{tag}"),
                E::PullComplete { digest } => eprintln!("#pull {}: pull complete", short(digest)),
                E::Digest { digest } => eprintln!("#pull digest: {digest}"),
                E::Pushed { digest } => eprintln!("#push {}: pushed", short(digest)),
                E::Mounted { digest, from } => {
                    eprintln!("#push {}: mounted from {from}", short(digest))
                }
                E::ManifestPushed { tag, digest, size } => {
                    eprintln!("#push {tag}: digest: {digest} size: {size}")
                }
                _ => {}
            }
        }));
    }
    o
}

/// The Dockerfile and where the context is.
struct Inputs {
    dockerfile_name: String,
    dockerfile: String,
    /// Where the Dockerfile was read from on disk, for `<Dockerfile>.dockerignore`.
    dockerfile_path: Option<PathBuf>,
    context_dir: Option<PathBuf>,
    /// A context extracted from stdin lives here until the build ends.
    scratch: Option<ScratchDir>,
}

/// A directory removed when dropped.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn read_inputs(args: &BuildArgs, store_root: &Path) -> anyhow::Result<Inputs> {
    if args.context == "-" {
        if args.file.as_deref() == Some("-") {
            bail!("-f - and a context on stdin cannot both read stdin");
        }
        let mut data = Vec::new();
        std::io::stdin()
            .read_to_end(&mut data)
            .context("reading the context from stdin")?;
        if !looks_like_archive(&data) {
            // `docker build - < Dockerfile`: a Dockerfile and no context at all.
            let text = String::from_utf8(data).context("the Dockerfile on stdin is not UTF-8")?;
            return Ok(Inputs {
                dockerfile_name: "Dockerfile".into(),
                dockerfile: text,
                dockerfile_path: None,
                context_dir: None,
                scratch: None,
            });
        }
        let tmp_root = store_root.join("tmp");
        std::fs::create_dir_all(&tmp_root)
            .with_context(|| format!("creating {}", tmp_root.display()))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let scratch = ScratchDir(tmp_root.join(format!("context-{}-{nanos}", std::process::id())));
        std::fs::create_dir(&scratch.0)
            .with_context(|| format!("creating {}", scratch.0.display()))?;
        let dir = scratch.0.join("context");
        BuildContext::from_tar(&data[..], &dir).context("reading the context tar from stdin")?;
        let name = args.file.clone().unwrap_or_else(|| "Dockerfile".into());
        let path = dir.join(name.trim_start_matches('/'));
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("the context on stdin has no {name}"))?;
        return Ok(Inputs {
            dockerfile_name: name,
            dockerfile: text,
            dockerfile_path: Some(path),
            context_dir: Some(dir),
            scratch: Some(scratch),
        });
    }
    let dir = PathBuf::from(&args.context);
    if !dir.is_dir() {
        bail!(
            "unable to prepare context: path {:?} not found",
            args.context
        );
    }
    let (name, text, path) = match args.file.as_deref() {
        Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the Dockerfile from stdin")?;
            ("Dockerfile".to_string(), text, None)
        }
        Some(f) => {
            let p = PathBuf::from(f);
            let text = std::fs::read_to_string(&p)
                .with_context(|| format!("failed to read dockerfile {f}"))?;
            (f.to_string(), text, Some(p))
        }
        None => {
            let p = dir.join("Dockerfile");
            let text = std::fs::read_to_string(&p)
                .with_context(|| format!("failed to read dockerfile {}", p.display()))?;
            ("Dockerfile".to_string(), text, Some(p))
        }
    };
    Ok(Inputs {
        dockerfile_name: name,
        dockerfile: text,
        dockerfile_path: path,
        context_dir: Some(dir),
        scratch: None,
    })
}

/// A tar (ustar magic) or a compressed stream (gzip, bzip2, xz, zstd), as `docker build -` tells
/// a context from a Dockerfile.
fn looks_like_archive(data: &[u8]) -> bool {
    let magic: [&[u8]; 4] = [
        &[0x1f, 0x8b],
        b"BZh",
        &[0xfd, b'7', b'z', b'X', b'Z', 0],
        &[0x28, 0xb5, 0x2f, 0xfd],
    ];
    magic.iter().any(|m| data.starts_with(m)) || data.get(257..262).is_some_and(|m| m == b"ustar")
}

/// docker's `--secret id=ID[,src=FILE|,env=VAR]` (`source=`, `type=file|env` accepted too); with
/// neither `src` nor `env`, the environment variable named ID.
fn parse_secret(spec: &str) -> anyhow::Result<(String, SecretValue)> {
    let mut id = None;
    let mut src = None;
    let mut env = None;
    let mut kind = None;
    for part in spec.split(',') {
        let (k, v) = part.split_once('=').unwrap_or(("id", part));
        match k.trim() {
            "id" => id = Some(v.to_string()),
            "src" | "source" => src = Some(v.to_string()),
            "env" => env = Some(v.to_string()),
            "type" => kind = Some(v.to_string()),
            other => bail!("--secret {spec:?}: unknown key {other:?} (id, src, env, type)"),
        }
    }
    let id = id.ok_or_else(|| anyhow::anyhow!("--secret {spec:?}: id= is missing"))?;
    if kind.as_deref() == Some("env") && env.is_none() {
        env = src.take().or_else(|| Some(id.clone()));
    }
    let bytes = match (src, env) {
        (Some(path), _) => {
            std::fs::read(&path).with_context(|| format!("--secret id={id}: reading {path}"))?
        }
        (None, Some(var)) => std::env::var_os(&var)
            .ok_or_else(|| anyhow::anyhow!("--secret id={id}: ${var} is not set"))?
            .into_encoded_bytes(),
        (None, None) => std::env::var_os(&id)
            .ok_or_else(|| {
                anyhow::anyhow!("--secret id={id}: give src=FILE or env=VAR (${id} is not set)")
            })?
            .into_encoded_bytes(),
    };
    Ok((id, SecretValue(bytes)))
}

/// docker's `--ssh default|ID[=SOCKET]`: an agent socket by id (`default` without a path:
/// $SSH_AUTH_SOCK). Key files would need an agent of our own: refused with a hint.
fn parse_ssh(spec: &str) -> anyhow::Result<(String, PathBuf)> {
    let (id, paths) = match spec.split_once('=') {
        Some((id, p)) => (id.to_string(), Some(p)),
        None => (spec.to_string(), None),
    };
    if id.is_empty() {
        bail!("--ssh {spec:?}: the id is empty");
    }
    let path = match paths {
        Some(p) if p.contains(',') => {
            bail!("--ssh {spec:?}: several keys need an agent: run ssh-agent, ssh-add them, then --ssh {id}")
        }
        Some(p) => PathBuf::from(p),
        None => std::env::var_os("SSH_AUTH_SOCK")
            .map(PathBuf::from)
            .ok_or_else(|| anyhow::anyhow!("--ssh {spec}: SSH_AUTH_SOCK is not set"))?,
    };
    let md =
        std::fs::metadata(&path).with_context(|| format!("--ssh {spec}: {}", path.display()))?;
    use std::os::unix::fs::FileTypeExt as _;
    if !md.file_type().is_socket() {
        bail!(
            "--ssh {spec}: {} is not an agent socket (key files are not supported: load the key \
             with ssh-add into an agent and pass its socket)",
            path.display()
        );
    }
    Ok((id, path))
}

fn parse_labels(items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items {
        let (k, v) = item.split_once('=').unwrap_or((item.as_str(), ""));
        if k.is_empty() {
            bail!("invalid --label {item:?}: empty name");
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

fn write_file_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    cairn_build::export::write_atomic(path, |f| {
        f.write_all(bytes).map_err(|source| cairn_build::Error::Io {
            path: path.to_path_buf(),
            source,
        })
    })
    .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_args_from_flags_and_environment() {
        std::env::set_var("CAIRN_TEST_ARG", "from-env");
        let a = crate::cmd::outline::build_args(&[
            "A=1".into(),
            "B=".into(),
            "CAIRN_TEST_ARG".into(),
            "CAIRN_TEST_UNSET_ARG".into(),
        ])
        .unwrap();
        assert_eq!(a.get("A").map(String::as_str), Some("1"));
        assert_eq!(a.get("B").map(String::as_str), Some(""));
        assert_eq!(
            a.get("CAIRN_TEST_ARG").map(String::as_str),
            Some("from-env")
        );
        assert!(!a.contains_key("CAIRN_TEST_UNSET_ARG"));
        assert!(crate::cmd::outline::build_args(&["=x".into()]).is_err());
    }

    #[test]
    fn secrets_from_files_and_environment() {
        let dir = std::env::temp_dir().join(format!("cairn-secret-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("s");
        std::fs::write(&f, b"from-file").unwrap();
        let (id, v) = parse_secret(&format!("id=a,src={}", f.display())).unwrap();
        assert_eq!((id.as_str(), v.0.as_slice()), ("a", &b"from-file"[..]));
        std::env::set_var("CAIRN_TEST_SECRET", "from-env");
        let (_, v) = parse_secret("id=b,env=CAIRN_TEST_SECRET").unwrap();
        assert_eq!(v.0, b"from-env");
        let (id, v) = parse_secret("id=CAIRN_TEST_SECRET").unwrap();
        assert_eq!(
            (id.as_str(), v.0.as_slice()),
            ("CAIRN_TEST_SECRET", &b"from-env"[..])
        );
        assert!(parse_secret("src=/x").is_err());
        assert!(parse_secret("id=c,env=CAIRN_TEST_UNSET_SECRET").is_err());
        assert!(format!("{v:?}").contains("8 bytes") && !format!("{v:?}").contains("from-env"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn stdin_kinds() {
        assert!(looks_like_archive(&[0x1f, 0x8b, 8, 0]));
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert!(looks_like_archive(&tar));
        assert!(!looks_like_archive(b"FROM busybox\nRUN true\n"));
    }
}
