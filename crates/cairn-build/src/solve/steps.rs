//! What each kind of layer step does to the prepared root: RUN, COPY/ADD, WORKDIR.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use cairn_dockerfile::{Mount, Source, Step};
use cairn_layer::LayerDescriptor;
use cairn_sandbox::{MountKind, MountSpec, OutputStream, ProcessSpec, Rootfs, SnapshotterKind};

use super::paths::{hide_mount_stubs, mkdir_in_root};
use super::{mounts, Solver};
use crate::copy::{self, CopyRequest, SourceRoot};
use crate::error::{io_err, Error, Result, RunFailure};
use crate::image::{self, ImageConfig};
use crate::progress::{Stream, Vertex};

/// How many lines of a failing RUN's output the error keeps.
const TAIL_LINES: usize = 10;

/// What a RUN's mounts add to its process, and what must live as long as it runs (temp dirs and
/// roots bound into the container).
#[derive(Default)]
pub(super) struct RunExtras {
    pub(super) env: Vec<String>,
    pub(super) mounts: Vec<MountSpec>,
    pub(super) keep_dirs: Vec<tempfile::TempDir>,
    pub(super) keep_roots: Vec<Rootfs>,
    /// Cache-mount locks and ssh agent proxies (see `mounts`).
    pub(super) held: mounts::Held,
}

/// The last lines of a process's output.
#[derive(Default)]
struct Tail {
    lines: std::collections::VecDeque<String>,
    partial: Vec<u8>,
}

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&self.partial).into_owned();
                self.partial.clear();
                self.lines.push_back(line);
                if self.lines.len() > TAIL_LINES {
                    self.lines.pop_front();
                }
            } else {
                self.partial.push(b);
            }
        }
    }

    fn lines(mut self) -> Vec<String> {
        if !self.partial.is_empty() {
            let line = String::from_utf8_lossy(&self.partial).into_owned();
            self.lines.push_back(line);
            if self.lines.len() > TAIL_LINES {
                self.lines.pop_front();
            }
        }
        self.lines.into()
    }
}

impl Solver<'_> {
    pub(super) fn run_step(
        &self,
        name: &str,
        step: &Step,
        run: &cairn_dockerfile::Run,
        cfg: &ImageConfig,
        rootfs: &Rootfs,
        v: Vertex,
    ) -> Result<()> {
        let argv = image::run_argv(cfg, run);
        let mut env: Vec<String> = cfg.config.env.clone().unwrap_or_default();
        for (k, val) in &run.args_env {
            // The frontend lists an ARG only if no ENV of the name came after it; then it wins
            // over an earlier ENV, as in BuildKit 20.10 and current (`dispatchArg` does
            // `d.state.AddEnv`), though the reference says "ENV always overrides ARG".
            env.retain(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) != k);
            env.push(format!("{k}={val}"));
        }
        let mut x = RunExtras {
            env,
            ..Default::default()
        };
        if let Some((name, data)) = &argv.script {
            let dir = self.tempdir()?;
            let file = dir.path().join(name);
            fs::write(&file, data).map_err(io_err(&file))?;
            fs::set_permissions(&file, fs::Permissions::from_mode(0o755)).map_err(io_err(&file))?;
            x.mounts.push(MountSpec {
                kind: MountKind::Bind {
                    source: dir.path().to_path_buf(),
                    readonly: true,
                },
                target: "/dev/pipes".into(),
            });
            x.keep_dirs.push(dir);
        }
        let workdir = cfg.workdir();
        mounts::check_security(self, step, run)?;
        for m in &run.mounts {
            self.run_mount(step, m, &workdir, &mut x)?;
        }
        // The cwd is the WORKDIR as written, like BuildKit's (`llb.Dir` keeps an absolute path);
        // runc makes it with MkdirAll, which also creates the `y` of `/x/./y/../z`.
        let cwd = cfg.config.working_dir.clone().unwrap_or_default();
        if !cwd.is_empty() && cwd != workdir {
            mkdir_in_root(rootfs.path(), &cwd, None)
                .map_err(|e| self.step_error(step, format!("working directory {cwd}: {e}")))?;
        }
        let RunExtras {
            env,
            mounts,
            keep_dirs,
            keep_roots,
            held,
        } = x;
        let spec = ProcessSpec {
            args: argv.args.clone(),
            env,
            user: cfg.config.user.clone().unwrap_or_default(),
            cwd: if cwd.is_empty() { workdir } else { cwd },
            hostname: "buildkitsandbox".into(),
            network: self.network(run.network.as_ref()),
            mounts,
            tty: false,
            stdin: false,
            privileged: mounts::insecure(run),
        };
        let mut tail = Tail::default();
        let code = {
            let _permit = self.run_slots.acquire();
            cairn_sandbox::run(rootfs.path(), &spec, &mut |stream, bytes| {
                tail.push(bytes);
                let stream = match stream {
                    OutputStream::Stdout => Stream::Stdout,
                    OutputStream::Stderr => Stream::Stderr,
                };
                self.reporter.output(v, stream, bytes);
            })?
        };
        drop(keep_roots);
        drop(keep_dirs);
        drop(held);
        if let Some(signal) = cairn_sandbox::termination_signal() {
            // The signal handler killed the process: that is not the RUN's failure.
            return Err(Error::Interrupted { signal });
        }
        if code != 0 {
            return Err(Error::RunFailed(Box::new(RunFailure {
                file: self.req.dockerfile_name.clone(),
                line: step.span.line,
                end_line: step.span.end_line.max(step.span.line),
                instruction: step.original.clone(),
                vertex: name.to_string(),
                argv: argv.args,
                exit_code: code,
                tail: tail.lines(),
            })));
        }
        Ok(())
    }

    pub(super) fn tempdir(&self) -> Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix("build-")
            .tempdir_in(&self.scratch)
            .map_err(io_err(&self.scratch))
    }

    /// Turns one `RUN --mount` into sandbox mounts (see the `mounts` module).
    pub(super) fn run_mount(
        &self,
        step: &Step,
        m: &Mount,
        workdir: &str,
        x: &mut RunExtras,
    ) -> Result<()> {
        mounts::run_mount(self, step, m, workdir, x)
    }

    /// A directory showing `layers` (an empty one for no layers), kept alive by the caller.
    pub(super) fn root_of(
        &self,
        layers: &[LayerDescriptor],
        keep_dirs: &mut Vec<tempfile::TempDir>,
        keep_roots: &mut Vec<Rootfs>,
    ) -> Result<PathBuf> {
        if layers.is_empty() {
            let d = self.tempdir()?;
            let p = d.path().to_path_buf();
            keep_dirs.push(d);
            return Ok(p);
        }
        let lowers = layers
            .iter()
            .map(|l| self.store.snapshot(l))
            .collect::<Result<Vec<PathBuf>, _>>()?;
        let r = Rootfs::prepare(&lowers, &self.scratch, self.snapshotter)?;
        let p = r.path().to_path_buf();
        keep_roots.push(r);
        hide_mount_stubs(&p, &lowers).map_err(io_err(&p))?;
        Ok(p)
    }

    /// Runs a COPY/ADD onto `rootfs`; on an overlay root, what it left for the store's file pool
    /// to do in the upper dir (see `copy::pool`; `CAIRN_FILE_POOL=off` turns the pool off).
    pub(super) fn copy_step(
        &self,
        step: &Step,
        c: &cairn_dockerfile::Copy,
        cfg: &ImageConfig,
        rootfs: &Rootfs,
    ) -> Result<copy::pool::PoolOps> {
        let owner = match &c.chown {
            // A file op's owner, as BuildKit's `readUser`: a bare UID is also the GID (not the
            // passwd entry's group, unlike a RUN's user), a bare name takes its primary group.
            Some(spec) => Some(
                copy::resolve_chown(rootfs.path(), spec)
                    .map_err(|e| self.step_error(step, format!("--chown={spec}: {e}")))?,
            ),
            None => None,
        };
        let workdir = cfg.workdir();
        let req = CopyRequest {
            copy: c,
            workdir: &workdir,
            owner,
        };
        let mut keep_dirs = Vec::new();
        let mut keep_roots = Vec::new();
        let dir;
        let source = match &c.from {
            None | Some(Source::Context) => SourceRoot::Context(self.context.ok_or_else(|| {
                self.step_error(
                    step,
                    "no build context (the Dockerfile came on stdin)".into(),
                )
            })?),
            Some(Source::Stage(i)) => {
                let res = self.stage_result(*i)?;
                dir = self.root_of(&res.layers, &mut keep_dirs, &mut keep_roots)?;
                SourceRoot::Dir(&dir)
            }
            Some(Source::Image(r)) => {
                let img = self.base(r)?;
                dir = self.root_of(&img.layers, &mut keep_dirs, &mut keep_roots)?;
                SourceRoot::Dir(&dir)
            }
        };
        let pool = (rootfs.kind() == SnapshotterKind::Overlay
            && std::env::var("CAIRN_FILE_POOL").as_deref() != Ok("off"))
        .then(|| self.store.file_pool());
        let cancel = || self.should_stop();
        let (_, ops) =
            copy::apply_pooled(&req, &source, rootfs.path(), pool.as_ref(), Some(&cancel))
                .map_err(|e| match e {
                    copy::error::CopyError::Cancelled { .. } => self.stopped(),
                    e => self.step_error(step, e.to_string()),
                })?;
        Ok(ops)
    }

    pub(super) fn workdir_step(
        &self,
        step: &Step,
        cfg: &ImageConfig,
        rootfs: &Rootfs,
    ) -> Result<()> {
        let owner = match cfg.config.user.as_deref() {
            // BuildKit makes the directory `llb.WithUser(USER)`: the file-op rule of `--chown`
            // (a bare UID is also the GID), not the RUN rule (gid 0 for a UID without entry).
            Some(u) if !u.is_empty() => Some(
                copy::resolve_chown(rootfs.path(), u)
                    .map_err(|e| self.step_error(step, format!("USER {u}: {e}")))?,
            ),
            _ => None,
        };
        mkdir_in_root(rootfs.path(), &cfg.workdir(), owner)
            .map_err(|e| self.step_error(step, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        let mut t = Tail::default();
        for i in 0..15 {
            t.push(format!("line {i}\n").as_bytes());
        }
        t.push(b"partial");
        let lines = t.lines();
        assert_eq!(lines.len(), TAIL_LINES);
        assert_eq!(lines.last().unwrap(), "partial");
        assert_eq!(lines[0], "line 6");
    }
}
