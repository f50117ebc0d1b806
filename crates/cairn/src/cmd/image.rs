//! Image and store commands: images, history, inspect, tag, rmi, save, load, import, image/system
//! (owned by the store issue). Output follows the docker CLI: same columns, same size and
//! duration wording, Go-template `--format` with docker's `json`/`join`/`table` extensions.

use super::format::{created_since, ellipsis, go_time, human_size, parse_time, short_id, tabwrite};
use super::template::{render_rows, Template};
use crate::Global;
use anyhow::{bail, Context as _};
use cairn_store::reference::{self, Reference};
use cairn_store::{ArchiveFormat, ImageRecord, LoadSource, SaveItem, Store};
use serde_json::{json, Map, Value};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

/// `cairn images` (docker images).
#[derive(clap::Args, Debug)]
pub struct ImagesArgs {
    /// Show only images of this repository (and tag)
    #[arg(value_name = "REPOSITORY[:TAG]")]
    pub reference: Option<String>,
    /// Show all images (cairn keeps no intermediate images: same as without)
    #[arg(short, long)]
    pub all: bool,
    /// Show digests
    #[arg(long)]
    pub digests: bool,
    /// Filter output: dangling=true|false, reference=PATTERN (`*` matches within a path
    /// component, as docker's)
    #[arg(short = 'f', long = "filter", value_name = "FILTER")]
    pub filters: Vec<String>,
    /// Format output using a Go template ('table' prefix for a table with headers, 'json')
    #[arg(long, value_name = "TEMPLATE")]
    pub format: Option<String>,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Only show image IDs
    #[arg(short, long)]
    pub quiet: bool,
}

/// `cairn history` (docker history).
#[derive(clap::Args, Debug)]
pub struct HistoryArgs {
    /// Format output using a Go template
    #[arg(long, value_name = "TEMPLATE")]
    pub format: Option<String>,
    /// Print sizes and dates in human readable format
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub human: bool,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Only show image IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Per layer: its size and what made it, with the layers that hold most of the image
    #[arg(long)]
    pub layers: bool,
    /// The image
    pub image: String,
}

/// `cairn inspect` (docker image inspect).
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Format output using a Go template
    #[arg(short, long, value_name = "TEMPLATE")]
    pub format: Option<String>,
    /// Images to inspect
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// `cairn tag SRC DST`.
#[derive(clap::Args, Debug)]
pub struct TagArgs {
    /// SOURCE_IMAGE[:TAG]
    pub source: String,
    /// TARGET_IMAGE[:TAG]
    pub target: String,
}

/// `cairn rmi` (docker rmi).
#[derive(clap::Args, Debug)]
pub struct RmiArgs {
    /// Force removal of the image (all its tags)
    #[arg(short, long)]
    pub force: bool,
    /// Do not delete untagged parents (accepted for compatibility; cairn has no parent chain)
    #[arg(long)]
    pub no_prune: bool,
    /// Images to remove
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// `cairn save` (docker save, plus `--format oci`).
#[derive(clap::Args, Debug)]
pub struct SaveArgs {
    /// Write to a file (or, with --format oci, a directory), instead of STDOUT
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Archive format: docker (docker-archive, what `docker load` reads) or oci (OCI layout)
    #[arg(long, value_name = "FORMAT", default_value = "docker")]
    pub format: String,
    /// Images to save
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// `cairn load` (docker load; also OCI layouts).
#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// Read from a tar archive file (plain, gzip, zstd, xz) or an OCI layout directory, instead
    /// of STDIN
    #[arg(short, long, value_name = "PATH")]
    pub input: Option<PathBuf>,
    /// Suppress the load output
    #[arg(short, long)]
    pub quiet: bool,
}

/// `cairn import` (docker import, reproducible).
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// Apply Dockerfile instruction to the created image (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL,
    /// USER, WORKDIR, VOLUME, ONBUILD, STOPSIGNAL)
    #[arg(short, long = "change", value_name = "INSTRUCTION")]
    pub changes: Vec<String>,
    /// Set commit message for imported image
    #[arg(short, long, value_name = "MESSAGE")]
    pub message: Option<String>,
    /// Set platform (only the host's os/arch is accepted for now)
    #[arg(long)]
    pub platform: Option<String>,
    /// Layer compression: gzip or zstd
    #[arg(long, default_value = "gzip")]
    pub compression: String,
    /// A rootfs tarball (plain, gzip, zstd or xz), or `-` for STDIN
    #[arg(value_name = "FILE|-")]
    pub file: String,
    /// REPOSITORY[:TAG] to give the image
    pub reference: Option<String>,
}

/// `cairn image prune` and `cairn system prune`.
#[derive(clap::Args, Debug)]
pub struct PruneArgs {
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
    /// Also remove every build cache entry (system prune only)
    #[arg(long)]
    pub build_cache: bool,
    /// Also empty the RUN --mount=type=cache directories no build is using (system prune only)
    #[arg(long)]
    pub cache_mounts: bool,
}

/// `cairn system df`.
#[derive(clap::Args, Debug)]
pub struct DfArgs {
    /// Show every cache mount
    #[arg(short, long)]
    pub verbose: bool,
}

/// `cairn builder …`: the build cache.
#[derive(clap::Subcommand, Debug)]
pub enum BuilderCommand {
    /// Remove the build cache: every cache record and the RUN --mount=type=cache directories
    /// no build is using
    Prune(BuilderPruneArgs),
}

/// `cairn builder prune`.
#[derive(clap::Args, Debug)]
pub struct BuilderPruneArgs {
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
}

/// `cairn image …`: docker's image management group.
#[derive(clap::Subcommand, Debug)]
pub enum ImageCommand {
    /// List images
    #[command(visible_alias = "list")]
    Ls(ImagesArgs),
    /// Show the history of an image
    History(HistoryArgs),
    /// Display detailed information on one or more images
    Inspect(InspectArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(TagArgs),
    /// Remove one or more images
    #[command(visible_alias = "remove")]
    Rm(RmiArgs),
    /// Save one or more images to a tar archive or an OCI layout
    Save(SaveArgs),
    /// Load an image from a tar archive or an OCI layout
    Load(LoadArgs),
    /// Import the contents from a tarball to create a filesystem image
    Import(ImportArgs),
    /// Remove unused (dangling) images and the blobs nothing references
    Prune(PruneArgs),
}

/// `cairn system …`: store maintenance.
#[derive(clap::Subcommand, Debug)]
pub enum SystemCommand {
    /// Verify every blob's digest and every reference of the store
    Check,
    /// Remove what nothing references: dangling images, unreferenced blobs and snapshots,
    /// cache entries whose blobs are gone, temp files of interrupted writes
    Prune(PruneArgs),
    /// Show disk usage: images, build cache, cache mounts
    Df(DfArgs),
}

// ---------------------------------------------------------------------------------------------
// images

/// A reader that went away (`cairn images | head -1`) ends the listing quietly, as with docker.
fn quiet_broken_pipe(r: anyhow::Result<i32>) -> anyhow::Result<i32> {
    match r {
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(0)
        }
        other => other,
    }
}

fn store(g: &Global) -> anyhow::Result<Store> {
    super::open_store(g)
}

fn find(store: &Store, s: &str) -> anyhow::Result<ImageRecord> {
    store
        .resolve(s)?
        .ok_or_else(|| anyhow::anyhow!("No such image: {s}"))
}

/// The rows `docker images` prints: one per tag, one `<none>` row for an untagged image.
fn image_rows(store: &Store, a: &ImagesArgs) -> anyhow::Result<Vec<Value>> {
    let mut images = store.list_images()?;
    images.sort_by(|x, y| {
        let t = |i: &ImageRecord| i.created.as_deref().and_then(parse_time);
        t(y).cmp(&t(x)).then(x.id.cmp(&y.id))
    });
    let filter = match &a.reference {
        Some(f) => {
            let explicit_tag = f.rsplit('/').next().is_some_and(|last| last.contains(':'));
            Some((Reference::parse(f)?, explicit_tag))
        }
        None => None,
    };
    let mut dangling: Option<bool> = None;
    let mut patterns = Vec::new();
    for f in &a.filters {
        match f.split_once('=') {
            Some(("dangling", v)) => dangling = Some(matches!(v, "true" | "1")),
            Some(("reference", v)) => patterns.push(v.to_string()),
            _ => bail!("invalid filter {f:?} (supported: dangling=true|false, reference=PATTERN)"),
        }
    }
    let mut rows = Vec::new();
    for img in &images {
        if dangling.is_some_and(|d| d != img.repo_tags.is_empty()) {
            continue;
        }
        let refs: Vec<Option<Reference>> = if img.repo_tags.is_empty() {
            vec![None]
        } else {
            img.repo_tags
                .iter()
                .map(|t| Reference::parse(t).ok())
                .collect()
        };
        for r in refs {
            if let Some((f, explicit_tag)) = &filter {
                let Some(r) = &r else { continue };
                if r.repository() != f.repository() || (*explicit_tag && r.tag != f.tag) {
                    continue;
                }
            }
            if !patterns.is_empty() {
                let Some(r) = &r else { continue };
                let (short, full) = (r.familiar(), r.to_string());
                let hit = |p: &String| {
                    let p = if p.contains(':') {
                        p.clone()
                    } else {
                        format!("{p}:*")
                    };
                    glob_match(&p, &short) || glob_match(&p, &full)
                };
                if !patterns.iter().any(hit) {
                    continue;
                }
            }
            let (repo, tag) = match &r {
                Some(r) => (
                    r.familiar_repository(),
                    r.tag.clone().unwrap_or_else(|| "<none>".into()),
                ),
                None => ("<none>".to_string(), "<none>".to_string()),
            };
            rows.push(json!({
                "Repository": repo,
                "Tag": tag,
                "ID": short_id(&img.id, a.no_trunc),
                // The digest its registry served for this repository, as docker shows it.
                "Digest": r
                    .as_ref()
                    .and_then(|r| {
                        let prefix = format!("{}@", r.repository());
                        img.repo_digests.iter().find_map(|d| d.strip_prefix(&prefix))
                    })
                    .unwrap_or(&img.manifest_digest),
                "CreatedSince": created_since(img.created.as_deref()),
                "CreatedAt": go_time(img.created.as_deref()),
                "Size": human_size(img.size),
                "VirtualSize": human_size(img.size),
                "SharedSize": "N/A",
                "UniqueSize": "N/A",
                "Containers": "N/A",
            }));
        }
    }
    Ok(rows)
}

/// docker's reference filter: `*` matches any run of characters except `/`, `?` one.
fn glob_match(pattern: &str, s: &str) -> bool {
    fn m(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => m(&p[1..], s) || (!s.is_empty() && s[0] != b'/' && m(p, &s[1..])),
            (Some(b'?'), Some(c)) if *c != b'/' => m(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => m(&p[1..], &s[1..]),
            _ => false,
        }
    }
    m(pattern.as_bytes(), s.as_bytes())
}

/// Lists images, one row per tag, newest first.
pub fn images(a: ImagesArgs, g: &Global) -> anyhow::Result<i32> {
    quiet_broken_pipe(images_inner(a, g))
}

fn images_inner(a: ImagesArgs, g: &Global) -> anyhow::Result<i32> {
    let store = store(g)?;
    let rows = image_rows(&store, &a)?;
    let mut out = std::io::stdout().lock();
    if a.quiet {
        for r in &rows {
            writeln!(out, "{}", r["ID"].as_str().unwrap_or_default())?;
        }
        return Ok(0);
    }
    let format = match &a.format {
        Some(f) => f.clone(),
        None if a.digests => {
            "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
                .into()
        }
        None => "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}".into(),
    };
    let headers = [
        ("Repository", "REPOSITORY"),
        ("Tag", "TAG"),
        ("ID", "IMAGE ID"),
        ("Digest", "DIGEST"),
        ("CreatedSince", "CREATED"),
        ("CreatedAt", "CREATED AT"),
        ("Size", "SIZE"),
        ("VirtualSize", "VIRTUAL SIZE"),
        ("SharedSize", "SHARED SIZE"),
        ("UniqueSize", "UNIQUE SIZE"),
        ("Containers", "CONTAINERS"),
    ];
    write!(out, "{}", render_rows(&format, &rows, &headers)?)?;
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// history

/// Prints one row per history entry, newest first.
pub fn history(a: HistoryArgs, g: &Global) -> anyhow::Result<i32> {
    quiet_broken_pipe(history_inner(a, g))
}

fn history_inner(a: HistoryArgs, g: &Global) -> anyhow::Result<i32> {
    let store = store(g)?;
    let img = find(&store, &a.image)?;
    if a.layers {
        cairn_check::layers::layer_report(&store, &img)?.render(&mut std::io::stdout().lock())?;
        return Ok(0);
    }
    let config = store.config_json(&img)?;
    let mut entries: Vec<Value> = config["history"].as_array().cloned().unwrap_or_default();
    if entries.is_empty() {
        // No history recorded: one anonymous entry per layer, as docker shows.
        entries = img
            .layers
            .iter()
            .map(|_| json!({ "created": config["created"] }))
            .collect();
    }
    let mut layer_sizes = Vec::new();
    for l in &img.layers {
        layer_sizes.push(store.layer_size(l)?);
    }
    let mut rows = Vec::new();
    let mut layer_i = 0;
    let mut per_entry = Vec::new();
    for e in &entries {
        let empty = e["empty_layer"].as_bool().unwrap_or(false);
        let size = if empty {
            0
        } else {
            let s = layer_sizes.get(layer_i).copied().unwrap_or(0);
            layer_i += 1;
            s
        };
        per_entry.push(size);
    }
    let n = entries.len();
    for (i, e) in entries.iter().enumerate().rev() {
        let created = e["created"].as_str();
        let id = if i + 1 == n {
            short_id(&img.id, a.no_trunc)
        } else {
            "<missing>".into()
        };
        // docker's CLI (historyContext.CreatedBy) shows every tab as a space, before truncating.
        let created_by = e["created_by"]
            .as_str()
            .unwrap_or_default()
            .replace('\t', " ");
        let created_by = if a.no_trunc {
            created_by
        } else {
            ellipsis(&created_by, 45)
        };
        rows.push(json!({
            "ID": id,
            "CreatedSince": if a.human { created_since(created) } else { created.unwrap_or_default().to_string() },
            "CreatedAt": created.unwrap_or_default(),
            "CreatedBy": created_by,
            "Size": if a.human { human_size(per_entry[i]) } else { per_entry[i].to_string() },
            "Comment": e["comment"].as_str().unwrap_or_default(),
        }));
    }
    let mut out = std::io::stdout().lock();
    if a.quiet {
        for r in &rows {
            writeln!(out, "{}", r["ID"].as_str().unwrap_or_default())?;
        }
        return Ok(0);
    }
    let format = a.format.clone().unwrap_or_else(|| {
        "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}".into()
    });
    let headers = [
        ("ID", "IMAGE"),
        ("CreatedSince", "CREATED"),
        ("CreatedAt", "CREATED AT"),
        ("CreatedBy", "CREATED BY"),
        ("Size", "SIZE"),
        ("Comment", "COMMENT"),
    ];
    write!(out, "{}", render_rows(&format, &rows, &headers)?)?;
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// inspect

/// The object `docker image inspect` prints for one image.
pub fn inspect_json(store: &Store, img: &ImageRecord) -> anyhow::Result<Value> {
    let c = store.config_json(img)?;
    let cc = &c["config"];
    let or_null = |v: &Value| if v.is_null() { Value::Null } else { v.clone() };
    let mut config = Map::new();
    config.insert("Hostname".into(), json!(""));
    config.insert("Domainname".into(), json!(""));
    config.insert(
        "User".into(),
        json!(cc["User"].as_str().unwrap_or_default()),
    );
    config.insert("AttachStdin".into(), json!(false));
    config.insert("AttachStdout".into(), json!(false));
    config.insert("AttachStderr".into(), json!(false));
    if !cc["ExposedPorts"].is_null() {
        config.insert("ExposedPorts".into(), cc["ExposedPorts"].clone());
    }
    config.insert("Tty".into(), json!(false));
    config.insert("OpenStdin".into(), json!(false));
    config.insert("StdinOnce".into(), json!(false));
    config.insert("Env".into(), or_null(&cc["Env"]));
    config.insert("Cmd".into(), or_null(&cc["Cmd"]));
    if !cc["Healthcheck"].is_null() {
        config.insert("Healthcheck".into(), cc["Healthcheck"].clone());
    }
    if let Some(b) = cc["ArgsEscaped"].as_bool() {
        config.insert("ArgsEscaped".into(), json!(b));
    }
    config.insert("Image".into(), json!(""));
    config.insert("Volumes".into(), or_null(&cc["Volumes"]));
    config.insert(
        "WorkingDir".into(),
        json!(cc["WorkingDir"].as_str().unwrap_or_default()),
    );
    config.insert("Entrypoint".into(), or_null(&cc["Entrypoint"]));
    config.insert("OnBuild".into(), or_null(&cc["OnBuild"]));
    config.insert("Labels".into(), or_null(&cc["Labels"]));
    if let Some(s) = cc["StopSignal"].as_str() {
        config.insert("StopSignal".into(), json!(s));
    }
    if !cc["Shell"].is_null() {
        config.insert("Shell".into(), cc["Shell"].clone());
    }
    let tags: Vec<String> = img
        .repo_tags
        .iter()
        .map(|t| reference::familiar(t))
        .collect();
    let mut repos: Vec<String> = img
        .repo_tags
        .iter()
        .filter_map(|t| Reference::parse(t).ok())
        // A tag without a digest its registry served: the local manifest's, as before.
        .filter(|r| {
            let prefix = format!("{}@", r.repository());
            !img.repo_digests.iter().any(|d| d.starts_with(&prefix))
        })
        .map(|r| format!("{}@{}", r.familiar_repository(), img.manifest_digest))
        .chain(img.repo_digests.iter().map(|d| reference::familiar(d)))
        .collect();
    repos.sort();
    repos.dedup();
    let mut o = Map::new();
    o.insert("Id".into(), json!(img.id));
    o.insert("RepoTags".into(), json!(tags));
    o.insert("RepoDigests".into(), json!(repos));
    o.insert("Parent".into(), json!(""));
    o.insert(
        "Comment".into(),
        json!(c["comment"].as_str().unwrap_or_default()),
    );
    o.insert(
        "Created".into(),
        json!(c["created"].as_str().unwrap_or("0001-01-01T00:00:00Z")),
    );
    o.insert(
        "DockerVersion".into(),
        json!(c["docker_version"].as_str().unwrap_or_default()),
    );
    o.insert(
        "Author".into(),
        json!(c["author"].as_str().unwrap_or_default()),
    );
    o.insert("Config".into(), Value::Object(config));
    o.insert(
        "Architecture".into(),
        json!(c["architecture"].as_str().unwrap_or_default()),
    );
    if let Some(v) = c["variant"].as_str() {
        o.insert("Variant".into(), json!(v));
    }
    o.insert("Os".into(), json!(c["os"].as_str().unwrap_or_default()));
    o.insert("Size".into(), json!(img.size));
    o.insert(
        "RootFS".into(),
        json!({ "Type": c["rootfs"]["type"].as_str().unwrap_or("layers"), "Layers": img.layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>() }),
    );
    o.insert(
        "Metadata".into(),
        json!({ "LastTagTime": "0001-01-01T00:00:00Z" }),
    );
    Ok(Value::Object(o))
}

/// Prints the docker-style JSON of each image (or a template per image).
pub fn inspect(a: InspectArgs, g: &Global) -> anyhow::Result<i32> {
    quiet_broken_pipe(inspect_inner(a, g))
}

fn inspect_inner(a: InspectArgs, g: &Global) -> anyhow::Result<i32> {
    let store = store(g)?;
    let mut found = Vec::new();
    let mut code = 0;
    let mut errors = Vec::new();
    for name in &a.images {
        match store.resolve(name)? {
            Some(img) => found.push(inspect_json(&store, &img)?),
            None => {
                errors.push(format!("Error: No such image: {name}"));
                code = 1;
            }
        }
    }
    let mut out = std::io::stdout().lock();
    match &a.format {
        Some(f) => {
            let t = Template::parse(f)?;
            for v in &found {
                writeln!(out, "{}", t.render(v)?)?;
            }
        }
        None => {
            // docker indents with four spaces.
            let mut buf = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
            serde::Serialize::serialize(&found, &mut ser)?;
            out.write_all(&buf)?;
            writeln!(out)?;
        }
    }
    for e in errors {
        eprintln!("{e}");
    }
    Ok(code)
}

// ---------------------------------------------------------------------------------------------
// tag, rmi

/// Points a new reference at an image.
pub fn tag(a: TagArgs, g: &Global) -> anyhow::Result<i32> {
    let store = store(g)?;
    let img = find(&store, &a.source)?;
    store.tag(&img.id, &a.target)?;
    Ok(0)
}

/// Untags, and deletes an image once no tag is left; prints what it did as docker does.
pub fn rmi(a: RmiArgs, g: &Global) -> anyhow::Result<i32> {
    let store = store(g)?;
    let mut code = 0;
    let mut out = std::io::stdout().lock();
    for name in &a.images {
        if let Err(e) = rmi_one(&store, name, a.force, &mut out) {
            eprintln!("Error response from daemon: {e:#}");
            code = 1;
        }
    }
    Ok(code)
}

fn rmi_one(store: &Store, name: &str, force: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let img = find(store, name)?;
    // By tag (not by ID or digest): untag that one name.
    let by_tag = Reference::parse(name)
        .ok()
        .filter(|r| r.digest.is_none())
        .map(|r| r.to_string())
        .filter(|full| img.repo_tags.contains(full));
    let untag: Vec<String> = match by_tag {
        Some(t) => vec![t],
        None => {
            if img.repo_tags.len() > 1 && !force {
                bail!(
                    "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                    short_id(&img.id, false)
                );
            }
            img.repo_tags.clone()
        }
    };
    for t in &untag {
        store.untag(t)?;
        writeln!(out, "Untagged: {}", reference::familiar(t))?;
    }
    let left = store
        .resolve(&img.id)?
        .map(|i| i.repo_tags.len())
        .unwrap_or(0);
    if left == 0 {
        store.delete_image(&img.id)?;
        writeln!(out, "Deleted: {}", img.id)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// save, load

/// The docker CLI's `ValidateOutputPath`: the output's directory must exist (the archive is
/// not written into a directory made up from a typo), and an existing output must be a
/// directory or a regular file.
fn validate_output_path(path: &std::path::Path) -> anyhow::Result<()> {
    let dir = cairn_build::export::output_dir(path);
    if !dir.exists() {
        bail!(
            "invalid output path: directory {:?} does not exist",
            dir.display().to_string()
        );
    }
    use std::os::unix::fs::FileTypeExt;
    let Ok(m) = std::fs::metadata(path) else {
        return Ok(());
    };
    let t = m.file_type();
    let got = if t.is_dir() || t.is_file() {
        return Ok(());
    } else if t.is_block_device() || t.is_char_device() {
        "got a device"
    } else if t.is_fifo() {
        "got a named pipe"
    } else if t.is_socket() {
        "got a socket"
    } else {
        "got an irregular file"
    };
    bail!(
        "invalid output path: {:?} must be a directory or a regular file: {got}",
        path.display().to_string()
    )
}

/// Writes images as a docker-archive or an OCI layout.
pub fn save(a: SaveArgs, g: &Global) -> anyhow::Result<i32> {
    if let Some(p) = &a.output {
        validate_output_path(p).context("failed to save image")?;
    }
    let store = store(g)?;
    let format = match a.format.as_str() {
        "docker" | "docker-archive" => ArchiveFormat::Docker,
        "oci" | "oci-archive" | "oci-layout" => ArchiveFormat::Oci,
        other => bail!("unknown --format {other:?}: use docker or oci"),
    };
    let mut items: Vec<SaveItem> = Vec::new();
    for name in &a.images {
        let img = find(&store, name)?;
        // Saved by tag: that tag only; by ID: every tag of the image (as docker does).
        let names = match Reference::parse(name)
            .ok()
            .filter(|r| r.digest.is_none())
            .map(|r| r.to_string())
        {
            Some(full) if img.repo_tags.contains(&full) => vec![full],
            _ => img.repo_tags.clone(),
        };
        match items.iter_mut().find(|i| i.image.id == img.id) {
            Some(it) => it.names.extend(names),
            None => items.push(SaveItem { image: img, names }),
        }
    }
    match &a.output {
        None => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            store.save_tar(&items, format, stdout.lock())?;
        }
        Some(p) => {
            let as_dir = format == ArchiveFormat::Oci
                && (p.is_dir() || (!p.exists() && !p.to_string_lossy().ends_with(".tar")));
            if as_dir {
                store.save_dir(&items, format, p)?;
            } else {
                cairn_build::export::write_atomic(p, |f| {
                    store.save_tar(
                        &items,
                        format,
                        std::io::BufWriter::with_capacity(1 << 20, f),
                    )?;
                    Ok::<_, anyhow::Error>(())
                })?;
            }
        }
    }
    Ok(0)
}

/// Loads every image of an archive or layout and names it.
pub fn load(a: LoadArgs, g: &Global) -> anyhow::Result<i32> {
    let store = store(g)?;
    let loaded = match &a.input {
        Some(p) if p.is_dir() => store.load(LoadSource::Dir(p))?,
        Some(p) => {
            let f = std::fs::File::open(p).with_context(|| format!("open {}", p.display()))?;
            store.load(LoadSource::Tar(Box::new(
                std::io::BufReader::with_capacity(1 << 20, f),
            )))?
        }
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                bail!("requested load from stdin, but stdin is empty");
            }
            store.load(LoadSource::Tar(Box::new(stdin.lock())))?
        }
    };
    for l in &loaded {
        if let Some(img) = store.resolve(&l.id)? {
            store.warm_snapshots(&img)?;
        }
    }
    if !a.quiet {
        let mut out = std::io::stdout().lock();
        for l in loaded {
            if l.names.is_empty() {
                writeln!(out, "Loaded image ID: {}", l.id)?;
            }
            for n in l.names {
                writeln!(out, "Loaded image: {}", reference::familiar(&n))?;
            }
        }
    }
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// import

/// Splits an instruction argument in JSON form (`["a","b"]`) or returns None for shell form.
fn json_form(s: &str) -> Option<Vec<String>> {
    let t = s.trim();
    if !t.starts_with('[') {
        return None;
    }
    serde_json::from_str(t).ok()
}

/// `K=V K2="v 2"` (or the legacy `K V` form when `legacy` and there is no `=`).
fn key_values(s: &str, legacy: bool) -> anyhow::Result<Vec<(String, String)>> {
    let s = s.trim();
    if legacy
        && !s
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .contains('=')
    {
        let (k, v) = s.split_once(char::is_whitespace).unwrap_or((s, ""));
        return Ok(vec![(k.to_string(), v.trim().to_string())]);
    }
    let mut out = Vec::new();
    for w in shell_words(s)? {
        let (k, v) = w
            .split_once('=')
            .with_context(|| format!("{w:?}: expected KEY=VALUE"))?;
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// Splits on blanks, honouring '…', "…" and backslash escapes.
fn shell_words(s: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => bail!("unterminated quote in {s:?}"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => cur.extend(chars.next()),
                        Some(x) => cur.push(x),
                        None => bail!("unterminated quote in {s:?}"),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.extend(chars.next());
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// Applies one `--change` instruction to a docker-style config object.
pub fn apply_change(cfg: &mut Map<String, Value>, change: &str) -> anyhow::Result<()> {
    let change = change.trim();
    let (instr, arg) = change
        .split_once(char::is_whitespace)
        .unwrap_or((change, ""));
    let arg = arg.trim();
    let exec_form = |a: &str| -> Vec<String> {
        json_form(a).unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into(), a.to_string()])
    };
    let map_entry = |cfg: &mut Map<String, Value>, key: &str| -> Map<String, Value> {
        cfg.get(key)
            .and_then(|v| v.as_object())
            .cloned()
            .unwrap_or_default()
    };
    match instr.to_ascii_uppercase().as_str() {
        "CMD" => {
            cfg.insert("Cmd".into(), json!(exec_form(arg)));
        }
        "ENTRYPOINT" => {
            cfg.insert("Entrypoint".into(), json!(exec_form(arg)));
        }
        "ENV" => {
            let mut env: Vec<String> = cfg
                .get("Env")
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default();
            for (k, v) in key_values(arg, true)? {
                env.retain(|e| e.split_once('=').map(|(ek, _)| ek) != Some(k.as_str()));
                env.push(format!("{k}={v}"));
            }
            cfg.insert("Env".into(), json!(env));
        }
        "EXPOSE" => {
            let mut ports = map_entry(cfg, "ExposedPorts");
            for p in arg.split_whitespace() {
                let p = if p.contains('/') { p.to_string() } else { format!("{p}/tcp") };
                ports.insert(p, json!({}));
            }
            cfg.insert("ExposedPorts".into(), Value::Object(ports));
        }
        "LABEL" => {
            let mut labels = map_entry(cfg, "Labels");
            for (k, v) in key_values(arg, true)? {
                labels.insert(k, json!(v));
            }
            cfg.insert("Labels".into(), Value::Object(labels));
        }
        "USER" => {
            cfg.insert("User".into(), json!(arg));
        }
        "WORKDIR" => {
            cfg.insert("WorkingDir".into(), json!(arg));
        }
        "VOLUME" => {
            let mut vols = map_entry(cfg, "Volumes");
            let list = json_form(arg).unwrap_or_else(|| arg.split_whitespace().map(str::to_string).collect());
            for v in list {
                vols.insert(v, json!({}));
            }
            cfg.insert("Volumes".into(), Value::Object(vols));
        }
        "ONBUILD" => {
            let mut on: Vec<Value> = cfg.get("OnBuild").and_then(|v| v.as_array()).cloned().unwrap_or_default();
            on.push(json!(arg));
            cfg.insert("OnBuild".into(), Value::Array(on));
        }
        "STOPSIGNAL" => {
            cfg.insert("StopSignal".into(), json!(arg));
        }
        other => bail!(
            "{other} is not a valid change command (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, WORKDIR, VOLUME, ONBUILD, STOPSIGNAL)"
        ),
    }
    Ok(())
}

/// The `created` of imported images: SOURCE_DATE_EPOCH, else the epoch. docker uses "now";
/// cairn prefers that importing the same tarball twice gives the same image ID.
fn import_created() -> anyhow::Result<String> {
    let secs: i64 = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) if !s.is_empty() => s
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={s:?} is not a number"))?,
        _ => 0,
    };
    let t = time::OffsetDateTime::from_unix_timestamp(secs)?;
    Ok(t.format(&time::format_description::well_known::Rfc3339)?)
}

/// Makes a one-layer image from a rootfs tarball and prints its ID.
pub fn import(a: ImportArgs, g: &Global) -> anyhow::Result<i32> {
    let compression = match a.compression.as_str() {
        "gzip" => cairn_layer::Compression::Gzip,
        "zstd" => cairn_layer::Compression::Zstd,
        other => bail!("unknown --compression {other:?}: use gzip or zstd"),
    };
    let arch = cairn_store::host_arch();
    if let Some(p) = &a.platform {
        if p != &format!("linux/{arch}") {
            bail!("--platform {p}: only the host platform linux/{arch} can be imported");
        }
    }
    let mut config = Map::new();
    for c in &a.changes {
        apply_change(&mut config, c)?;
    }
    let tags: Vec<String> = match &a.reference {
        Some(r) => vec![reference::normalize(r)?],
        None => vec![],
    };
    let store = store(g)?;
    let layer = if a.file == "-" {
        store.import_layer(std::io::stdin().lock(), compression)?
    } else {
        let f = std::fs::File::open(&a.file).with_context(|| format!("open {}", a.file))?;
        store.import_layer(std::io::BufReader::with_capacity(1 << 20, f), compression)?
    };
    let created = import_created()?;
    // docker's CLI streams a file argument as the request body: its history says "-" too.
    let msg = a
        .message
        .clone()
        .unwrap_or_else(|| "Imported from -".into());
    let mut cfg = json!({
        "architecture": arch,
        "os": "linux",
        "created": created,
        "comment": msg,
        "rootfs": { "type": "layers", "diff_ids": [layer.diff_id] },
        "history": [{ "created": created, "comment": msg }],
    });
    if !config.is_empty() {
        cfg["config"] = Value::Object(config);
    }
    let img = store.commit_image_json(&cfg, &[layer], &tags)?;
    store.warm_snapshots(&img)?;
    println!("{}", img.id);
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// image / system

/// Dispatches `cairn image …`.
pub fn image_command(c: ImageCommand, g: &Global) -> anyhow::Result<i32> {
    match c {
        ImageCommand::Ls(a) => images(a, g),
        ImageCommand::History(a) => history(a, g),
        ImageCommand::Inspect(a) => inspect(a, g),
        ImageCommand::Tag(a) => tag(a, g),
        ImageCommand::Rm(a) => rmi(a, g),
        ImageCommand::Save(a) => save(a, g),
        ImageCommand::Load(a) => load(a, g),
        ImageCommand::Import(a) => import(a, g),
        ImageCommand::Prune(a) => prune(a, g, false),
    }
}

fn confirm(warning: &str) -> anyhow::Result<bool> {
    eprint!("{warning}\nAre you sure you want to continue? [y/N] ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

fn prune(a: PruneArgs, g: &Global, system: bool) -> anyhow::Result<i32> {
    if !a.force && std::io::stdin().is_terminal() {
        let w = if system {
            "WARNING! This will remove:\n  - all dangling images\n  - unreferenced blobs and snapshots\n  - build cache entries whose layers are gone"
        } else {
            "WARNING! This will remove all dangling images."
        };
        if !confirm(w)? {
            return Ok(0);
        }
    }
    let store = store(g)?;
    let before: Vec<ImageRecord> = store.list_images()?;
    let rep = store.prune(&cairn_store::PruneOptions {
        dangling_images: true,
        build_cache: system && a.build_cache,
    })?;
    let mut out = std::io::stdout().lock();
    if !rep.images.is_empty() {
        writeln!(out, "Deleted Images:")?;
        for id in &rep.images {
            if before.iter().any(|i| &i.id == id) {
                writeln!(out, "deleted: {id}")?;
            }
        }
        writeln!(out)?;
    }
    if system && rep.cache_entries > 0 {
        writeln!(out, "Deleted build cache entries: {}", rep.cache_entries)?;
    }
    let mut reclaimed = rep.reclaimed;
    if system && a.cache_mounts {
        let m = store.prune_cache_mounts()?;
        write_cache_mounts_pruned(&mut out, &m)?;
        reclaimed += m.reclaimed;
    }
    if rep.spared_recent {
        writeln!(
            out,
            "(another cairn process is using the store: files younger than an hour were kept)"
        )?;
    }
    writeln!(out, "Total reclaimed space: {}", human_size(reclaimed))?;
    Ok(0)
}

fn write_cache_mounts_pruned(
    out: &mut impl Write,
    m: &cairn_store::CacheMountsPruned,
) -> anyhow::Result<()> {
    writeln!(out, "Deleted cache mounts: {}", m.removed)?;
    if m.busy > 0 {
        writeln!(
            out,
            "(cache mounts in use by a build were kept: {})",
            m.busy
        )?;
    }
    Ok(())
}

/// Dispatches `cairn builder …`.
pub fn builder_command(c: BuilderCommand, g: &Global) -> anyhow::Result<i32> {
    match c {
        BuilderCommand::Prune(a) => {
            if !a.force
                && std::io::stdin().is_terminal()
                && !confirm("WARNING! This will remove all build cache.")?
            {
                return Ok(0);
            }
            let store = store(g)?;
            let rep = store.prune(&cairn_store::PruneOptions {
                dangling_images: false,
                build_cache: true,
            })?;
            let m = store.prune_cache_mounts()?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "Deleted build cache entries: {}", rep.cache_entries)?;
            write_cache_mounts_pruned(&mut out, &m)?;
            writeln!(
                out,
                "Total reclaimed space: {}",
                human_size(rep.reclaimed.saturating_add(m.reclaimed))
            )?;
            Ok(0)
        }
    }
}

/// docker's RECLAIMABLE column: size and share of the total.
fn reclaimable(part: u64, total: u64) -> String {
    if total == 0 {
        return human_size(part);
    }
    format!(
        "{} ({}%)",
        human_size(part),
        part.saturating_mul(100) / total
    )
}

/// `cairn system df`: docker's table (TYPE TOTAL ACTIVE SIZE RECLAIMABLE) with the rows cairn
/// has: images (active = tagged), the build cache, the cache mounts (active = in use).
fn df(a: DfArgs, g: &Global) -> anyhow::Result<i32> {
    let store = store(g)?;
    let images = store.list_images()?;
    // Layers shared by images count once, as docker's SharedSize makes them.
    let mut sizes: std::collections::BTreeMap<String, (u64, bool)> = Default::default();
    for img in &images {
        let tagged = !img.repo_tags.is_empty();
        for l in &img.layers {
            let size = store.layer_size(l)?;
            let e = sizes.entry(l.diff_id.clone()).or_insert((size, false));
            e.1 |= tagged;
        }
    }
    let img_size: u64 = sizes.values().map(|v| v.0).sum();
    let img_reclaim: u64 = sizes.values().filter(|v| !v.1).map(|v| v.0).sum();
    let active = images.iter().filter(|i| !i.repo_tags.is_empty()).count();
    let cache = store.build_cache_usage()?;
    let mounts = store.cache_mounts()?;
    let m_size: u64 = mounts.iter().map(|m| m.size).sum();
    let m_free: u64 = mounts.iter().filter(|m| !m.in_use).map(|m| m.size).sum();
    let rows = vec![
        vec!["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
            .into_iter()
            .map(String::from)
            .collect(),
        vec![
            "Images".into(),
            images.len().to_string(),
            active.to_string(),
            human_size(img_size),
            reclaimable(img_reclaim, img_size),
        ],
        vec![
            "Build Cache".into(),
            cache.entries.to_string(),
            "0".into(),
            human_size(cache.size),
            human_size(cache.reclaimable),
        ],
        vec![
            "Cache Mounts".into(),
            mounts.len().to_string(),
            mounts.iter().filter(|m| m.in_use).count().to_string(),
            human_size(m_size),
            reclaimable(m_free, m_size),
        ],
    ];
    let mut out = std::io::stdout().lock();
    write!(out, "{}", tabwrite(&rows))?;
    if a.verbose {
        writeln!(out, "\nCache mounts space usage:\n")?;
        let mut rows: Vec<Vec<String>> =
            vec![vec!["CACHE ID".into(), "SIZE".into(), "IN USE".into()]];
        for m in &mounts {
            rows.push(vec![
                m.id.clone(),
                human_size(m.size),
                if m.in_use { "true" } else { "false" }.into(),
            ]);
        }
        write!(out, "{}", tabwrite(&rows))?;
    }
    Ok(0)
}

/// Dispatches `cairn system …`; `check` exits 1 when it finds a problem.
pub fn system_command(c: SystemCommand, g: &Global) -> anyhow::Result<i32> {
    match c {
        SystemCommand::Prune(a) => prune(a, g, true),
        SystemCommand::Df(a) => quiet_broken_pipe(df(a, g)),
        SystemCommand::Check => {
            let store = store(g)?;
            let rep = store.check()?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "checked {} blobs and {} images in {}",
                rep.blobs_checked,
                rep.images_checked,
                store.root().display()
            )?;
            for gb in &rep.garbage {
                writeln!(out, "garbage: {gb}")?;
            }
            for p in &rep.problems {
                writeln!(out, "PROBLEM: {p}")?;
            }
            if rep.problems.is_empty() {
                writeln!(out, "ok")?;
                Ok(0)
            } else {
                writeln!(out, "{} problem(s) found", rep.problems.len())?;
                Ok(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_like_docker_import() {
        let mut c = Map::new();
        for ch in [
            "CMD [\"/bin/sh\"]",
            "ENTRYPOINT echo hi",
            "ENV A=1 B=\"two words\"",
            "ENV C 3",
            "EXPOSE 80 53/udp",
            "LABEL k=v",
            "USER 1000:1000",
            "WORKDIR /srv",
            "VOLUME [\"/data\"]",
            "ONBUILD RUN true",
            "STOPSIGNAL SIGTERM",
        ] {
            apply_change(&mut c, ch).unwrap();
        }
        let c = Value::Object(c);
        assert_eq!(c["Cmd"], json!(["/bin/sh"]));
        assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-c", "echo hi"]));
        assert_eq!(c["Env"], json!(["A=1", "B=two words", "C=3"]));
        assert_eq!(c["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
        assert_eq!(c["Volumes"], json!({"/data": {}}));
        assert_eq!(c["OnBuild"], json!(["RUN true"]));
        assert!(apply_change(&mut Map::new(), "RUN x").is_err());
    }

    #[test]
    fn reference_filters_glob_like_docker() {
        assert!(glob_match("busy*:*", "busybox:latest"));
        assert!(glob_match("*/bb:v?", "localhost:5000/bb:v1"));
        assert!(
            !glob_match("*:latest", "library/x:latest"),
            "* does not cross /"
        );
        assert!(!glob_match("alpine:*", "busybox:latest"));
    }
}
