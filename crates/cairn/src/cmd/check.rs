//! `cairn check` and `cairn compare`: the multi-stage checklist and the stage size comparison,
//! from what the build really made (crate `cairn-check`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use cairn_build::context::BuildContext;
use cairn_build::progress::Discard;
use cairn_build::{BuildRequest, Reporter, StoreResolver};
use cairn_check::compare::{self, Comparison};
use cairn_check::BuiltStage;

use crate::Global;

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Name of the Dockerfile (default: PATH/Dockerfile)
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<String>,
    /// The stage checked as the final image (default: the last)
    #[arg(long)]
    pub target: Option<String>,
    /// Set build-time variables (`K` alone takes the value from the environment)
    #[arg(long = "build-arg", value_name = "K[=V]")]
    pub build_args: Vec<String>,
    /// Check this stored image as the final image instead of building the Dockerfile
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// Only the Dockerfile rules: build nothing
    #[arg(long)]
    pub no_build: bool,
    /// Fail on warnings too (as `# check=error=true`)
    #[arg(long)]
    pub check_error: bool,
    /// Output format: human or json
    #[arg(long, value_name = "FORMAT", default_value = "human")]
    pub format: String,
    /// List the rules (names for `# check=skip=`) and exit
    #[arg(long)]
    pub list_rules: bool,
    /// Build context
    #[arg(value_name = "PATH", default_value = ".")]
    pub context: String,
}

#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// Name of the Dockerfile (default: PATH/Dockerfile)
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<String>,
    /// Build these targets (comma-separated; the last one is the final image) instead of every
    /// stage of the Dockerfile
    #[arg(long, value_name = "a,b,...", value_delimiter = ',')]
    pub targets: Vec<String>,
    /// A single-stage Dockerfile to compare the final image with (same context)
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<String>,
    /// Set build-time variables
    #[arg(long = "build-arg", value_name = "K[=V]")]
    pub build_args: Vec<String>,
    /// Also store each stage's image as NAME:STAGE (and NAME:baseline)
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    pub tag: Option<String>,
    /// Output format: human or json
    #[arg(long, value_name = "FORMAT", default_value = "human")]
    pub format: String,
    /// Build context
    #[arg(value_name = "PATH", default_value = ".")]
    pub context: String,
}

/// The Dockerfile's path: `-f` as given (relative to the working directory, as docker), else
/// `CONTEXT/Dockerfile`.
fn dockerfile_path(file: Option<&str>, context: &Path) -> PathBuf {
    match file {
        Some(f) => PathBuf::from(f),
        None => context.join("Dockerfile"),
    }
}

/// The Dockerfile's name in messages: as given with `-f`, `Dockerfile` otherwise (and for stdin,
/// as `cairn build` names it).
fn display_name(file: Option<&str>) -> String {
    match file {
        Some(f) if f != "-" => f.to_string(),
        _ => "Dockerfile".to_string(),
    }
}

/// Reads the Dockerfile; `-` is stdin.
fn read_dockerfile(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("reading the Dockerfile from stdin")?;
        return Ok(text);
    }
    std::fs::read_to_string(path)
        .with_context(|| format!("reading the Dockerfile {}", path.display()))
}

/// The Dockerfile's path for `<Dockerfile>.dockerignore`, none when it came on stdin.
fn on_disk(path: &Path) -> Option<&Path> {
    (path != Path::new("-")).then_some(path)
}

fn check_format(f: &str) -> anyhow::Result<bool> {
    match f {
        "human" | "text" => Ok(false),
        "json" => Ok(true),
        other => bail!("invalid --format {other:?}: human or json"),
    }
}

/// The number of bottom layers of an image that its Dockerfile did not make: those before the
/// first history entry written by a Dockerfile build (BuildKit's `# buildkit` suffix or comment);
/// 0 when no entry was.
fn inferred_base_layers(config: &serde_json::Value) -> usize {
    let Some(h) = config["history"].as_array() else {
        return 0;
    };
    let mut layers = 0;
    for e in h {
        let by = e["created_by"].as_str().unwrap_or("");
        let comment = e["comment"].as_str().unwrap_or("");
        if by.ends_with("# buildkit") || comment.starts_with("buildkit.dockerfile") {
            return layers;
        }
        if !e["empty_layer"].as_bool().unwrap_or(false) {
            layers += 1;
        }
    }
    // Not made by a Dockerfile build (imported, committed): all of it is the user's.
    0
}

pub fn check(a: CheckArgs, g: &Global) -> anyhow::Result<i32> {
    let json = check_format(&a.format)?;
    if a.list_rules {
        let mut out = std::io::stdout().lock();
        if json {
            serde_json::to_writer_pretty(&mut out, &cairn_check::RULES)?;
            writeln!(out)?;
        } else {
            for r in cairn_check::RULES {
                let sev = match r.severity {
                    cairn_check::Severity::Warning => "warning",
                    cairn_check::Severity::Error => "error",
                };
                writeln!(out, "{:<31} {:<8} {:<11} {}", r.name, sev, r.on, r.summary)?;
            }
        }
        return Ok(0);
    }
    let context = PathBuf::from(&a.context);
    let df_path = dockerfile_path(a.file.as_deref(), &context);
    let text = read_dockerfile(&df_path)?;
    let build_args = crate::cmd::outline::build_args(&a.build_args)?;
    let building = !a.no_build && a.image.is_none();
    if building {
        // Mounts made by RUN die with the process; must happen before any thread exists.
        cairn_sandbox::enter_private_mount_namespace()
            .context("entering a private mount namespace")?;
    }
    let store = super::open_store(g)?;
    let ctx = BuildContext::open(&context, on_disk(&df_path))
        .with_context(|| format!("opening the build context {}", context.display()))?
        .with_hash_cache(&store.context_hash_dir());
    let req = BuildRequest {
        dockerfile_name: display_name(a.file.as_deref()),
        dockerfile: text,
        context: Some(&ctx),
        target: a.target.clone(),
        build_args,
        ..Default::default()
    };

    let mut build_error = None;
    let stages: Vec<BuiltStage> = if let Some(r) = &a.image {
        let rec = store
            .resolve(r)?
            .ok_or_else(|| anyhow::anyhow!("No such image: {r}"))?;
        let config = store.config_json(&rec)?;
        vec![BuiltStage {
            name: r.clone(),
            index: 0,
            base: String::new(),
            base_layers: inferred_base_layers(&config),
            config,
            layers: rec.layers.clone(),
            is_final: true,
            layer_lines: Vec::new(),
        }]
    } else if !building {
        Vec::new()
    } else {
        let resolver = StoreResolver::new(&store);
        let reporter = Reporter::new(&Discard);
        if !json {
            eprintln!("Building the stages to check what they contain...");
        }
        match cairn_check::stages::build_stages(&store, &resolver, &req, &reporter) {
            Ok(s) => s,
            Err(e) => {
                build_error = Some(e);
                Vec::new()
            }
        }
    };
    // Only a speed-up for the next build: failing to save it is not an error.
    let _ = ctx.save_hash_cache();
    let mut report = cairn_check::check_built(&store, &req, a.check_error, &stages)?;
    if let Some(e) = &build_error {
        report.findings.push(cairn_check::build_failed(e));
    }
    let mut out = std::io::stdout().lock();
    if json {
        report.render_json(&mut out)?;
    } else {
        report.render_human(&mut out)?;
    }
    out.flush()?;
    Ok(report.exit_code())
}

/// Builds `target` of `text` and makes its comparison row.
fn build_row(
    store: &cairn_store::Store,
    req: &BuildRequest<'_>,
    name: String,
    is_final: bool,
    is_baseline: bool,
) -> anyhow::Result<(compare::Row, BuiltStage)> {
    let resolver = StoreResolver::new(store);
    let reporter = Reporter::new(&Discard);
    let out = cairn_build::build(store, &resolver, req, &reporter)
        .map_err(|e| anyhow::anyhow!("building {name}: {e}"))?;
    let df = cairn_dockerfile::parse(&req.dockerfile_name, &req.dockerfile)?;
    let plan = cairn_dockerfile::plan(
        &df,
        &cairn_dockerfile::PlanOptions {
            target: req.target.clone(),
            build_args: req.build_args.clone(),
            ..Default::default()
        },
        &|_| None,
    )?;
    let base = plan
        .stages
        .last()
        .map(|s| match &s.base {
            cairn_dockerfile::Base::Scratch => "scratch".to_string(),
            cairn_dockerfile::Base::Image(r) => r.clone(),
            cairn_dockerfile::Base::Stage(i) => format!(
                "stage {}",
                plan.stages
                    .iter()
                    .find(|p| p.index == *i)
                    .map(|p| p.display_name())
                    .unwrap_or_else(|| i.to_string())
            ),
        })
        .unwrap_or_default();
    let stage = BuiltStage {
        name: name.clone(),
        index: 0,
        base,
        config: serde_json::from_slice(&out.config_json)?,
        layers: out.layers,
        base_layers: 0,
        is_final,
        layer_lines: Vec::new(),
    };
    let mut row = compare::row(store, &stage)?;
    row.is_baseline = is_baseline;
    Ok((row, stage))
}

pub fn compare(a: CompareArgs, g: &Global) -> anyhow::Result<i32> {
    let json = check_format(&a.format)?;
    let context = PathBuf::from(&a.context);
    let df_path = dockerfile_path(a.file.as_deref(), &context);
    let text = read_dockerfile(&df_path)?;
    let build_args = crate::cmd::outline::build_args(&a.build_args)?;
    cairn_sandbox::enter_private_mount_namespace().context("entering a private mount namespace")?;
    let store = super::open_store(g)?;
    let ctx = BuildContext::open(&context, on_disk(&df_path))
        .with_context(|| format!("opening the build context {}", context.display()))?;
    let req = BuildRequest {
        dockerfile_name: display_name(a.file.as_deref()),
        dockerfile: text,
        context: Some(&ctx),
        build_args: build_args.clone(),
        ..Default::default()
    };

    let mut rows = Vec::new();
    let mut built: Vec<BuiltStage> = Vec::new();
    if a.targets.is_empty() {
        let resolver = StoreResolver::new(&store);
        let reporter = Reporter::new(&Discard);
        let stages = cairn_check::stages::build_all_stages(&store, &resolver, &req, &reporter)?;
        for s in stages {
            rows.push(compare::row(&store, &s)?);
            built.push(s);
        }
    } else {
        let last = a.targets.len() - 1;
        for (i, t) in a.targets.iter().enumerate() {
            let mut sub = req.clone();
            sub.target = Some(t.clone());
            let (row, stage) = build_row(&store, &sub, t.clone(), i == last, false)?;
            rows.push(row);
            built.push(stage);
        }
    }
    if let Some(b) = &a.baseline {
        let text = read_dockerfile(Path::new(b))?;
        let bctx = BuildContext::open(&context, Some(Path::new(b)))
            .with_context(|| format!("opening the build context {}", context.display()))?;
        let breq = BuildRequest {
            dockerfile_name: b.clone(),
            dockerfile: text,
            context: Some(&bctx),
            build_args,
            ..Default::default()
        };
        let name = format!(
            "baseline ({})",
            Path::new(b)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let (row, mut stage) = build_row(&store, &breq, name, false, true)?;
        stage.name = "baseline".into();
        rows.push(row);
        built.push(stage);
    }
    let _ = ctx.save_hash_cache();
    if let Some(name) = &a.tag {
        for s in &built {
            let tag = format!("{name}:{}", s.name);
            store
                .commit_image_json(&s.config, &s.layers, std::slice::from_ref(&tag))
                .with_context(|| format!("storing {tag}"))?;
        }
    }
    let cmp = Comparison::new(rows);
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &cmp)?;
        writeln!(out)?;
    } else {
        cmp.render(&mut out)?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_layers_end_at_the_first_buildkit_entry() {
        let cfg = serde_json::json!({"history": [
            {"created_by": "ADD file:abc in /"},
            {"created_by": "CMD [\"sh\"]", "empty_layer": true},
            {"created_by": "ADD more /"},
            {"created_by": "COPY x / # buildkit", "comment": "buildkit.dockerfile.v0"},
        ]});
        assert_eq!(inferred_base_layers(&cfg), 2);
        let imported = serde_json::json!({"history": [{"created_by": "import"}]});
        assert_eq!(inferred_base_layers(&imported), 0);
    }
}
