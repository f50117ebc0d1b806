//! The image config as docker and BuildKit write it, and how each Dockerfile step changes it.
//!
//! `oci_spec`'s `Config` has no `Healthcheck`, `OnBuild`, `Shell` or `ArgsEscaped`, which docker
//! images carry (BuildKit writes them as extension fields of the OCI config), and it keeps labels in
//! a `HashMap`, whose order would change the config digest from run to run. So the engine keeps its
//! own model: fixed field order, `BTreeMap`s, and every key it does not know kept in `extra` so an
//! imported base image's config survives a round trip.

use std::collections::BTreeMap;

use cairn_dockerfile::{Chmod, Command, Copy, Healthcheck, Run, ShellRun, StepKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::gofmt;

/// BuildKit's `comment` on every history entry made from a Dockerfile instruction.
pub const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// `PATH` of an image built `FROM scratch` (BuildKit's default for linux).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The default `SHELL` of RUN, CMD and ENTRYPOINT in shell form.
pub fn default_shell() -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into()]
}

/// An empty JSON object (`{}`), the value type of `ExposedPorts` and `Volumes`. Any value is
/// accepted when reading (some tools write `null`), `{}` is written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Empty {}

impl<'de> Deserialize<'de> for Empty {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(Empty {})
    }
}

/// Reads `null` as the default value: configs written by other tools have `"history": null`,
/// `"config": null`.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A docker/OCI image config (`application/vnd.oci.image.config.v1+json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// Creation time, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// MAINTAINER.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// `amd64`, `arm64`, …
    #[serde(default)]
    pub architecture: String,
    /// `linux`.
    #[serde(default)]
    pub os: String,
    /// `v8` for arm64, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// What a container of this image runs with.
    #[serde(default, deserialize_with = "null_default")]
    pub config: ContainerConfig,
    /// Layer diffIDs, bottom first.
    #[serde(default, deserialize_with = "null_default")]
    pub rootfs: RootFs,
    /// One entry per instruction (and per base image layer).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub history: Vec<History>,
    /// Fields this model does not know, kept as they were.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The `rootfs` object of an image config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Uncompressed layer digests, bottom first.
    #[serde(default, deserialize_with = "null_default")]
    pub diff_ids: Vec<String>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        }
    }
}

/// One history entry, as `docker history` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The instruction, e.g. `RUN /bin/sh -c make # buildkit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// `buildkit.dockerfile.v0` for entries cairn writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True when the instruction made no layer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// The `config` object: docker's container config fields, extensions included.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    /// USER.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// EXPOSE: `"8080/tcp": {}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, Empty>>,
    /// ENV, `K=V`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// ENTRYPOINT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// CMD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// VOLUME.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, Empty>>,
    /// WORKDIR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// LABEL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// STOPSIGNAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Set by CMD as BuildKit does (docker's Windows-era field, kept for compatibility).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
    /// HEALTHCHECK (docker extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    /// ONBUILD triggers (docker extension).
    #[serde(default, rename = "OnBuild", skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    /// SHELL (docker extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    /// Fields this model does not know, kept as they were.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// docker's `Healthcheck` object (durations in nanoseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    /// `["CMD-SHELL", cmd]`, `["CMD", args…]` or `["NONE"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    /// Between checks.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interval: u64,
    /// Of one check.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout: u64,
    /// Grace period after start.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_period: u64,
    /// Between checks during the start period.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_interval: u64,
    /// Failures before unhealthy.
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub retries: u32,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}
fn is_zero32(v: &u32) -> bool {
    *v == 0
}

impl ImageConfig {
    /// The config of an image built `FROM scratch` for `platform` (`os/arch[/variant]`, default:
    /// the host's): BuildKit's empty image, with `PATH` set and `WorkingDir` `/`.
    pub fn scratch(platform: Option<&str>) -> ImageConfig {
        let (os, arch, variant) = parse_platform(platform);
        ImageConfig {
            architecture: arch,
            os,
            variant,
            config: ContainerConfig {
                env: Some(vec![format!("PATH={DEFAULT_PATH}")]),
                working_dir: Some("/".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Parses a config blob.
    pub fn from_json(bytes: &[u8]) -> Result<ImageConfig, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The canonical bytes of this config: its digest is the image ID. Deterministic (fixed field
    /// order, sorted maps), compact as BuildKit writes it.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain structs, strings and maps with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The value of `key` in `Env`, if set.
    pub fn env_get(&self, key: &str) -> Option<&str> {
        self.config
            .env
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
                (k == key).then_some(v)
            })
    }

    /// Sets `key=value` in `Env`, replacing an earlier value in place.
    pub fn env_set(&mut self, key: &str, value: &str) {
        let env = self.config.env.get_or_insert_with(Vec::new);
        let entry = format!("{key}={value}");
        match env
            .iter_mut()
            .find(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k) == key)
        {
            Some(slot) => *slot = entry,
            None => env.push(entry),
        }
    }

    /// The working directory (`/` when unset), cleaned: `Config.WorkingDir` keeps an absolute
    /// WORKDIR as written (`/app/`, `/x/./y/../z`), as BuildKit does, but the directory made,
    /// the RUN's cwd and the base of relative paths are the cleaned path.
    pub fn workdir(&self) -> String {
        match self.config.working_dir.as_deref() {
            Some(w) if !w.is_empty() => resolve_workdir("/", w),
            _ => "/".into(),
        }
    }

    /// The shell used for shell-form commands.
    pub fn shell(&self) -> Vec<String> {
        match &self.config.shell {
            Some(s) if !s.is_empty() => s.clone(),
            _ => default_shell(),
        }
    }

    /// `command` as an argv: exec form as is, shell form after the SHELL.
    pub fn argv(&self, command: &Command) -> Vec<String> {
        match command {
            Command::Exec(v) => v.clone(),
            Command::Shell(s) => {
                let mut v = self.shell();
                v.push(s.clone());
                v
            }
        }
    }
}

fn parse_platform(platform: Option<&str>) -> (String, String, Option<String>) {
    let host_arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    };
    let mut os = "linux".to_string();
    let mut arch = host_arch.to_string();
    let mut variant = None;
    if let Some(p) = platform.filter(|p| !p.is_empty()) {
        let mut parts = p.split('/');
        if let Some(o) = parts.next() {
            os = o.to_string();
        }
        if let Some(a) = parts.next() {
            arch = a.to_string();
        }
        variant = parts.next().map(str::to_string);
    }
    (os, arch, variant)
}

/// Joins `path` onto the working directory `base` and cleans it, as BuildKit's
/// `system.NormalizeWorkdir` does (`..` never climbs above `/`).
pub fn resolve_workdir(base: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{}", base.trim_end_matches('/'), path)
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in joined.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// How one step changes the stage's state, before any layer is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The history `created_by` text.
    pub created_by: String,
    /// True if the step makes a layer (RUN, COPY/ADD, WORKDIR other than `/`); the layer may
    /// still turn out empty, then the history entry is marked `empty_layer`.
    pub makes_layer: bool,
    /// False for steps that add no history entry (ONBUILD).
    pub record: bool,
}

/// Per-stage bookkeeping the config alone cannot hold.
#[derive(Debug, Clone, Default)]
pub struct StageMeta {
    /// CMD was set in this stage (then ENTRYPOINT keeps it).
    pub cmd_set: bool,
}

/// Applies the config side of `step` to `cfg` and returns its history text.
///
/// `original` is the instruction as written: only used to keep a `--chmod` value exactly as the
/// user wrote it (`0755` stays `0755`), since the plan carries it as a number.
pub fn apply_step(
    cfg: &mut ImageConfig,
    meta: &mut StageMeta,
    kind: &StepKind,
    original: &str,
) -> Applied {
    let meta_only = |created_by: String| Applied {
        created_by,
        makes_layer: false,
        record: true,
    };
    match kind {
        StepKind::Run(run) => Applied {
            created_by: format!("RUN {} # buildkit", run_command_string(cfg, run)),
            makes_layer: true,
            record: true,
        },
        StepKind::Copy(copy) => Applied {
            created_by: format!("{} # buildkit", copy_message(copy, original)),
            makes_layer: true,
            record: true,
        },
        StepKind::Env(kvs) => {
            let mut msg = String::from("ENV");
            for (k, v) in kvs {
                cfg.env_set(k, v);
                msg.push_str(&format!(" {k}={v}"));
            }
            meta_only(msg)
        }
        StepKind::Arg(args) => {
            let parts: Vec<String> = args
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => format!("{k}={v}"),
                    None => k.clone(),
                })
                .collect();
            meta_only(format!("ARG {}", parts.join(" ")))
        }
        StepKind::Workdir(path) => {
            // BuildKit's `system.NormalizeWorkdir` joins (hence cleans) only a relative path;
            // an absolute one is kept as written in Config.WorkingDir and in the history.
            let wd = if path.starts_with('/') {
                path.clone()
            } else {
                resolve_workdir(&cfg.workdir(), path)
            };
            cfg.config.working_dir = Some(wd.clone());
            Applied {
                makes_layer: wd != "/",
                created_by: format!("WORKDIR {wd}"),
                record: true,
            }
        }
        StepKind::User(user) => {
            cfg.config.user = Some(user.clone());
            meta_only(format!("USER {user}"))
        }
        StepKind::Label(kvs) => {
            let labels = cfg.config.labels.get_or_insert_with(BTreeMap::new);
            let mut msg = String::from("LABEL");
            for (k, v) in kvs {
                labels.insert(k.clone(), v.clone());
                msg.push_str(&format!(" {k}={v}"));
            }
            meta_only(msg)
        }
        StepKind::Expose(ports) => {
            let parsed: BTreeMap<String, Empty> = ports
                .iter()
                .flat_map(|p| expand_port(p))
                .map(|p| (p, Empty {}))
                .collect();
            let exposed = cfg.config.exposed_ports.get_or_insert_with(BTreeMap::new);
            exposed.extend(parsed.clone());
            let shown: Vec<String> = parsed.keys().map(|k| format!("{k}:{{}}")).collect();
            meta_only(format!("EXPOSE map[{}]", shown.join(" ")))
        }
        StepKind::Volume(vols) => {
            let v = cfg.config.volumes.get_or_insert_with(BTreeMap::new);
            for vol in vols {
                v.insert(vol.clone(), Empty {});
            }
            meta_only(format!("VOLUME {}", gofmt::plain_list(vols)))
        }
        StepKind::StopSignal(sig) => {
            cfg.config.stop_signal = Some(sig.clone());
            meta_only(format!("STOPSIGNAL {sig}"))
        }
        StepKind::Healthcheck(hc) => {
            let h = health_config(cfg, hc.as_ref());
            let text = format!(
                "HEALTHCHECK &{{{} {} {} {} {} {}}}",
                gofmt::quote_list(&h.test),
                gofmt::quote(&gofmt::duration(h.interval)),
                gofmt::quote(&gofmt::duration(h.timeout)),
                gofmt::quote(&gofmt::duration(h.start_period)),
                gofmt::quote(&gofmt::duration(h.start_interval)),
                gofmt::quote_rune(h.retries),
            );
            cfg.config.healthcheck = Some(h);
            meta_only(text)
        }
        StepKind::Shell(shell) => {
            cfg.config.shell = Some(shell.clone());
            meta_only(format!("SHELL {}", gofmt::plain_list(shell)))
        }
        StepKind::Cmd(c) => {
            let args = cfg.argv(c);
            meta.cmd_set = true;
            cfg.config.cmd = Some(args.clone());
            cfg.config.args_escaped = Some(true);
            meta_only(format!("CMD {}", gofmt::quote_list(&args)))
        }
        StepKind::Entrypoint(c) => {
            let args = cfg.argv(c);
            cfg.config.entrypoint = Some(args.clone());
            // docker: an ENTRYPOINT drops the CMD inherited from the base, not one set here.
            if !meta.cmd_set {
                cfg.config.cmd = None;
            }
            meta_only(format!("ENTRYPOINT {}", gofmt::quote_list(&args)))
        }
        StepKind::Onbuild(trigger) => {
            cfg.config
                .on_build
                .get_or_insert_with(Vec::new)
                .push(trigger.clone());
            Applied {
                created_by: String::new(),
                makes_layer: false,
                record: false,
            }
        }
        StepKind::Maintainer(m) => {
            cfg.author = Some(m.clone());
            meta_only(format!("MAINTAINER {m}"))
        }
    }
}

/// docker's Healthcheck object for `hc` (`None` is `HEALTHCHECK NONE`).
fn health_config(cfg: &ImageConfig, hc: Option<&Healthcheck>) -> HealthConfig {
    let Some(hc) = hc else {
        return HealthConfig {
            test: vec!["NONE".into()],
            ..Default::default()
        };
    };
    let _ = cfg;
    let test = match &hc.test {
        Command::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
        Command::Exec(v) => {
            let mut t = vec!["CMD".to_string()];
            t.extend(v.iter().cloned());
            t
        }
    };
    HealthConfig {
        test,
        interval: hc.interval_ns.unwrap_or(0),
        timeout: hc.timeout_ns.unwrap_or(0),
        start_period: hc.start_period_ns.unwrap_or(0),
        start_interval: hc.start_interval_ns.unwrap_or(0),
        retries: hc.retries.unwrap_or(0),
    }
}

/// `80` → `80/tcp`; `8000-8002/udp` → three ports; as docker's `nat.ParsePortSpecs`.
pub fn expand_port(spec: &str) -> Vec<String> {
    let (ports, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let proto = if proto.is_empty() {
        "tcp".to_string()
    } else {
        proto.to_lowercase()
    };
    // A host IP or host port (`127.0.0.1:80:80`) is meaningless for EXPOSE: keep the last part.
    let ports = ports.rsplit(':').next().unwrap_or(ports);
    if let Some((a, b)) = ports.split_once('-') {
        if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
            if a <= b && b - a < 65536 {
                return (a..=b).map(|p| format!("{p}/{proto}")).collect();
            }
        }
    }
    vec![format!("{ports}/{proto}")]
}

/// BuildKit's `runCommandString`: `|N K=V … argv…`, the ARGs the step sees then the command.
fn run_command_string(cfg: &ImageConfig, run: &Run) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !run.declared_args.is_empty() {
        parts.push(format!("|{}", run.declared_args.len()));
        for k in &run.declared_args {
            // The value the step sees, as BuildKit's (its state env, else the ARG's value,
            // empty when unset): `args_env` holds an ARG set after any ENV of the name.
            let v = match run.args_env.iter().find(|(n, _)| n == k) {
                Some((_, v)) => v.as_str(),
                None => cfg.env_get(k).unwrap_or(""),
            };
            parts.push(format!("{k}={v}"));
        }
    }
    parts.extend(run_argv(cfg, run).args);
    parts.join(" ")
}

/// The process a RUN starts, after heredocs and SHELL are applied (BuildKit's rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunArgv {
    /// The argv.
    pub args: Vec<String>,
    /// A script to provide at `/dev/pipes/<name>` (a heredoc with a `#!` line), mode 0755.
    pub script: Option<(String, String)>,
}

/// Turns a RUN into its argv, with the frontend's heredoc rules ([`Run::shell_run`], as
/// BuildKit): a RUN that is one heredoc runs its body with the shell (or, when the body starts with
/// `#!`, as an executable file); a command that feeds heredocs to a program gets them appended so
/// that the shell's own heredoc support reads them.
pub fn run_argv(cfg: &ImageConfig, run: &Run) -> RunArgv {
    match run.shell_run() {
        None => RunArgv {
            args: cfg.argv(&run.command),
            script: None,
        },
        Some(ShellRun::Command(text)) => {
            let mut args = cfg.shell();
            args.push(text);
            RunArgv { args, script: None }
        }
        Some(ShellRun::Shebang(h)) => RunArgv {
            args: vec![format!("/dev/pipes/{}", h.name)],
            script: Some((h.name.clone(), h.content.clone())),
        },
    }
}

/// `COPY [--parents] [--chown=…] [--chmod=…] src… <<heredoc… dest`, as BuildKit's history.
fn copy_message(copy: &Copy, original: &str) -> String {
    let mut msg = String::from(if copy.add { "ADD" } else { "COPY" });
    if copy.parents {
        msg.push_str(" --parents");
    }
    if let Some(chown) = &copy.chown {
        msg.push_str(&format!(" --chown={chown}"));
    }
    if let Some(chmod) = &copy.chmod {
        let written = flag_value(original, "--chmod").filter(|v| !v.contains('$'));
        let text = match (written, chmod) {
            (Some(w), _) => w,
            (None, Chmod::Octal(m)) => format!("{m:o}"),
            (None, Chmod::Symbolic(s)) => s.clone(),
        };
        msg.push_str(&format!(" --chmod={text}"));
    }
    for s in &copy.sources {
        msg.push(' ');
        msg.push_str(s);
    }
    for h in &copy.heredocs {
        msg.push_str(&format!(" <<{}", h.name));
    }
    msg.push(' ');
    msg.push_str(&copy.dest);
    msg
}

/// The value of `--name=value` in an instruction as written.
fn flag_value(original: &str, name: &str) -> Option<String> {
    original.split_whitespace().find_map(|w| {
        w.strip_prefix(name)
            .and_then(|r| r.strip_prefix('='))
            .map(|v| v.trim_matches('"').to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_dockerfile::{Heredoc, NetworkMode};

    fn run(cmd: Command) -> Run {
        Run {
            command: cmd,
            heredocs: vec![],
            mounts: vec![],
            network: None::<NetworkMode>,
            security: None,
            args_env: vec![],
            declared_args: vec![],
        }
    }

    fn copy(sources: &[&str], dest: &str) -> Copy {
        Copy {
            add: false,
            from: None,
            sources: sources.iter().map(|s| s.to_string()).collect(),
            heredocs: vec![],
            dest: dest.into(),
            chown: None,
            chmod: None,
            link: false,
            parents: false,
            exclude: vec![],
            checksum: None,
            keep_git_dir: false,
            unpack: None,
        }
    }

    fn apply(cfg: &mut ImageConfig, meta: &mut StageMeta, kind: StepKind) -> Applied {
        apply_step(cfg, meta, &kind, "")
    }

    #[test]
    fn history_texts_match_buildkit() {
        let mut cfg = ImageConfig::scratch(Some("linux/amd64"));
        let mut m = StageMeta::default();
        let a = apply(&mut cfg, &mut m, StepKind::Workdir("/app".into()));
        assert_eq!(a.created_by, "WORKDIR /app");
        assert!(a.makes_layer);
        let a = apply(
            &mut cfg,
            &mut m,
            StepKind::Copy(copy(&["go.mod", "main.go"], "./")),
        );
        assert_eq!(a.created_by, "COPY go.mod main.go ./ # buildkit");
        let mut r = run(Command::Shell("go build -o server .".into()));
        r.args_env = vec![("VERSION".into(), "1.0".into())];
        r.declared_args = vec!["VERSION".into()];
        let a = apply(&mut cfg, &mut m, StepKind::Run(r));
        assert_eq!(
            a.created_by,
            "RUN |1 VERSION=1.0 /bin/sh -c go build -o server . # buildkit"
        );
        let a = apply(&mut cfg, &mut m, StepKind::Expose(vec!["8080".into()]));
        assert_eq!(a.created_by, "EXPOSE map[8080/tcp:{}]");
        assert!(!a.makes_layer);
        let a = apply(
            &mut cfg,
            &mut m,
            StepKind::Cmd(Command::Exec(vec!["./server".into()])),
        );
        assert_eq!(a.created_by, r#"CMD ["./server"]"#);
        let a = apply(
            &mut cfg,
            &mut m,
            StepKind::Env(vec![("PATH".into(), "/go/bin:/usr/bin".into())]),
        );
        assert_eq!(a.created_by, "ENV PATH=/go/bin:/usr/bin");
        assert_eq!(cfg.config.env, Some(vec!["PATH=/go/bin:/usr/bin".into()]));
        let a = apply(
            &mut cfg,
            &mut m,
            StepKind::Volume(vec!["/data".into(), "/logs".into()]),
        );
        assert_eq!(a.created_by, "VOLUME [/data /logs]");
        let a = apply(
            &mut cfg,
            &mut m,
            StepKind::Arg(vec![("A".into(), Some("1".into())), ("B".into(), None)]),
        );
        assert_eq!(a.created_by, "ARG A=1 B");
    }

    #[test]
    fn healthcheck_config_and_text() {
        let mut cfg = ImageConfig::scratch(None);
        let mut m = StageMeta::default();
        let hc = Healthcheck {
            test: Command::Shell("wget -q --spider http://localhost || exit 1".into()),
            interval_ns: Some(30_000_000_000),
            timeout_ns: None,
            start_period_ns: None,
            start_interval_ns: None,
            retries: Some(3),
        };
        let a = apply(&mut cfg, &mut m, StepKind::Healthcheck(Some(hc)));
        assert_eq!(
            a.created_by,
            r#"HEALTHCHECK &{["CMD-SHELL" "wget -q --spider http://localhost || exit 1"] "30s" "0s" "0s" "0s" '\x03'}"#
        );
        let json: Value = serde_json::from_slice(&cfg.to_json()).unwrap();
        assert_eq!(
            json["config"]["Healthcheck"],
            serde_json::json!({"Test": ["CMD-SHELL", "wget -q --spider http://localhost || exit 1"],
                               "Interval": 30_000_000_000u64, "Retries": 3})
        );
    }

    #[test]
    fn entrypoint_resets_inherited_cmd_only() {
        let mut cfg = ImageConfig::scratch(None);
        cfg.config.cmd = Some(vec!["sh".into()]);
        let mut m = StageMeta::default();
        apply(
            &mut cfg,
            &mut m,
            StepKind::Entrypoint(Command::Exec(vec!["/server".into()])),
        );
        assert_eq!(cfg.config.cmd, None);
        apply(
            &mut cfg,
            &mut m,
            StepKind::Cmd(Command::Exec(vec!["--port".into(), "80".into()])),
        );
        apply(
            &mut cfg,
            &mut m,
            StepKind::Entrypoint(Command::Shell("exec /server".into())),
        );
        assert_eq!(cfg.config.cmd, Some(vec!["--port".into(), "80".into()]));
        assert_eq!(
            cfg.config.entrypoint,
            Some(vec!["/bin/sh".into(), "-c".into(), "exec /server".into()])
        );
    }

    #[test]
    fn config_json_has_docker_fields_and_round_trips_unknown_keys() {
        let text = br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"OnBuild":["RUN x"],"Domainname":""},"rootfs":{"type":"layers","diff_ids":[]},"moby.buildkit.cache.v0":"x"}"#;
        let mut cfg = ImageConfig::from_json(text).unwrap();
        assert_eq!(cfg.config.on_build, Some(vec!["RUN x".into()]));
        let mut m = StageMeta::default();
        apply(
            &mut cfg,
            &mut m,
            StepKind::Expose(vec!["443".into(), "80/udp".into()]),
        );
        apply(
            &mut cfg,
            &mut m,
            StepKind::Shell(vec!["/bin/bash".into(), "-c".into()]),
        );
        let json: Value = serde_json::from_slice(&cfg.to_json()).unwrap();
        assert_eq!(
            json["config"]["ExposedPorts"],
            serde_json::json!({"443/tcp": {}, "80/udp": {}})
        );
        assert_eq!(
            json["config"]["Shell"],
            serde_json::json!(["/bin/bash", "-c"])
        );
        assert_eq!(json["config"]["Domainname"], "");
        assert_eq!(json["moby.buildkit.cache.v0"], "x");
        // Same value, same bytes: the config digest is stable.
        assert_eq!(
            cfg.to_json(),
            ImageConfig::from_json(&cfg.to_json()).unwrap().to_json()
        );
    }

    #[test]
    fn configs_of_other_tools_with_nulls_are_read() {
        let text = br#"{"architecture":"amd64","os":"linux","config":null,"rootfs":{"type":"layers","diff_ids":null},"history":null}"#;
        let cfg = ImageConfig::from_json(text).unwrap();
        assert_eq!(cfg.config, ContainerConfig::default());
        assert!(cfg.history.is_empty() && cfg.rootfs.diff_ids.is_empty());
        let text = br#"{"architecture":"amd64","os":"linux","config":{"ExposedPorts":{"80/tcp":null},"Env":null}}"#;
        let cfg = ImageConfig::from_json(text).unwrap();
        assert!(cfg.config.exposed_ports.unwrap().contains_key("80/tcp"));
    }

    #[test]
    fn run_history_lists_every_declared_arg_with_the_value_the_step_sees() {
        let mut cfg = ImageConfig::scratch(Some("linux/amd64"));
        let mut m = StageMeta::default();
        apply(
            &mut cfg,
            &mut m,
            StepKind::Env(vec![
                ("LOCAL".into(), "e".into()),
                ("LATE".into(), "env".into()),
            ]),
        );
        let mut r = run(Command::Shell("x".into()));
        r.declared_args = vec!["UNSET".into(), "SET".into(), "LOCAL".into(), "LATE".into()];
        // LATE: an ARG that a later ENV overrode, so not in args_env.
        r.args_env = vec![("SET".into(), "value".into()), ("LOCAL".into(), "a".into())];
        let a = apply(&mut cfg, &mut m, StepKind::Run(r));
        assert_eq!(
            a.created_by,
            "RUN |4 UNSET= SET=value LOCAL=a LATE=env /bin/sh -c x # buildkit"
        );
    }

    #[test]
    fn absolute_workdir_is_kept_as_written() {
        let mut cfg = ImageConfig::scratch(Some("linux/amd64"));
        let mut m = StageMeta::default();
        let a = apply(&mut cfg, &mut m, StepKind::Workdir("/x/./y/../z/".into()));
        assert_eq!(a.created_by, "WORKDIR /x/./y/../z/");
        assert_eq!(cfg.config.working_dir.as_deref(), Some("/x/./y/../z/"));
        assert_eq!(cfg.workdir(), "/x/z");
        let a = apply(&mut cfg, &mut m, StepKind::Workdir("w/".into()));
        assert_eq!(a.created_by, "WORKDIR /x/z/w");
        assert_eq!(cfg.config.working_dir.as_deref(), Some("/x/z/w"));
    }

    #[test]
    fn workdirs_resolve_relative_to_the_previous_one() {
        assert_eq!(resolve_workdir("/", "app"), "/app");
        assert_eq!(resolve_workdir("/app", "src/../bin"), "/app/bin");
        assert_eq!(resolve_workdir("/app", "/root/"), "/root");
        assert_eq!(resolve_workdir("/", ".."), "/");
    }

    #[test]
    fn ports_expand() {
        assert_eq!(expand_port("80"), vec!["80/tcp"]);
        assert_eq!(expand_port("53/UDP"), vec!["53/udp"]);
        assert_eq!(
            expand_port("8000-8002"),
            vec!["8000/tcp", "8001/tcp", "8002/tcp"]
        );
    }

    #[test]
    fn heredoc_runs_follow_buildkit() {
        let cfg = ImageConfig::scratch(None);
        let mut r = run(Command::Shell("<<EOF".into()));
        r.heredocs = vec![Heredoc {
            name: "EOF".into(),
            content: "echo hi\necho there\n".into(),
            quoted: false,
            strip_tabs: false,
        }];
        assert_eq!(
            run_argv(&cfg, &r).args,
            vec!["/bin/sh", "-c", "echo hi\necho there\n"]
        );
        r.heredocs[0].content = "#!/bin/sh\necho hi\n".into();
        let a = run_argv(&cfg, &r);
        assert_eq!(a.args, vec!["/dev/pipes/EOF"]);
        assert_eq!(a.script.unwrap().1, "#!/bin/sh\necho hi\n");
        let mut r = run(Command::Shell("cat > /x <<EOF".into()));
        r.heredocs = vec![Heredoc {
            name: "EOF".into(),
            content: "data\n".into(),
            quoted: true,
            strip_tabs: false,
        }];
        assert_eq!(
            run_argv(&cfg, &r).args,
            vec!["/bin/sh", "-c", "cat > /x <<EOF\ndata\nEOF"]
        );
    }

    #[test]
    fn copy_flags_in_history() {
        let mut c = copy(&["a", "b"], "/dst/");
        c.chown = Some("node:node".into());
        c.chmod = Some(Chmod::Octal(0o755));
        let mut cfg = ImageConfig::scratch(None);
        let a = apply_step(
            &mut cfg,
            &mut StageMeta::default(),
            &StepKind::Copy(c.clone()),
            "COPY --chown=node:node --chmod=0755 a b /dst/",
        );
        assert_eq!(
            a.created_by,
            "COPY --chown=node:node --chmod=0755 a b /dst/ # buildkit"
        );
        let a = apply_step(&mut cfg, &mut StageMeta::default(), &StepKind::Copy(c), "");
        assert_eq!(
            a.created_by,
            "COPY --chown=node:node --chmod=755 a b /dst/ # buildkit"
        );
    }
}
