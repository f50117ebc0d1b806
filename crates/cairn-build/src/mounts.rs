//! `RUN --mount`: turns each mount of a RUN into sandbox mounts (bind, cache, tmpfs, secret,
//! ssh), and keeps what they need alive while the step runs.
//!
//! A child module of `solve` so that it can use the solver's helpers (stage results, base
//! images, step errors) without widening their visibility.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use cairn_dockerfile::{Mount, Source, Step};
use cairn_sandbox::{MountKind, MountSpec, Rootfs};

use super::{join_inside, RunExtras, Solver};
use crate::error::{io_err, Result};
use crate::image;

/// Turns one `RUN --mount` into sandbox mounts, adding to `x`.
pub(super) fn run_mount(
    s: &Solver<'_>,
    step: &Step,
    m: &Mount,
    workdir: &str,
    x: &mut RunExtras,
) -> Result<()> {
    let RunExtras {
        env,
        mounts,
        keep_dirs,
        keep_roots,
    } = x;
    // A relative target is relative to the working directory, as in BuildKit.
    let abs = |t: &str| image::resolve_workdir(workdir, t);
    match m {
        Mount::Tmpfs { target, size } => mounts.push(MountSpec {
            kind: MountKind::Tmpfs { size: *size },
            target: abs(target),
        }),
        Mount::Cache {
            id,
            target,
            ro,
            from,
            mode,
            uid,
            gid,
            ..
        } => {
            if from.is_some() {
                return Err(s.step_error(
                    step,
                    "RUN --mount=type=cache,from=… is not supported yet".into(),
                ));
            }
            let target = abs(target);
            let dir = s.store.cache_mount_dir(id.as_deref().unwrap_or(&target))?;
            if let Some(mode) = mode {
                fs::set_permissions(&dir, fs::Permissions::from_mode(*mode))
                    .map_err(io_err(&dir))?;
            }
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::chown(&dir, *uid, *gid).map_err(io_err(&dir))?;
            }
            mounts.push(MountSpec {
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
            let root: PathBuf = match from {
                None | Some(Source::Context) => {
                    let ctx = s.context.ok_or_else(|| {
                        s.step_error(step, "no build context for the bind mount".into())
                    })?;
                    if *rw {
                        // Writes to a bind mount are discarded, never made to the context.
                        let r = Rootfs::prepare(
                            &[ctx.root().to_path_buf()],
                            &s.scratch,
                            s.snapshotter,
                        )?;
                        let p = r.path().to_path_buf();
                        keep_roots.push(r);
                        p
                    } else {
                        ctx.root().to_path_buf()
                    }
                }
                Some(Source::Stage(i)) => {
                    let res = s.stage_result(*i)?;
                    s.root_of(&res.layers, keep_dirs, keep_roots)?
                }
                Some(Source::Image(r)) => {
                    let img = s.base(r)?;
                    s.root_of(&img.layers, keep_dirs, keep_roots)?
                }
            };
            let source = join_inside(&root, &sub).ok_or_else(|| {
                s.step_error(step, format!("bind source {sub:?} escapes its root"))
            })?;
            mounts.push(MountSpec {
                kind: MountKind::Bind {
                    source,
                    readonly: !*rw,
                },
                target: abs(target),
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
                env.push(format!("{var}={}", String::from_utf8_lossy(&value.0)));
            }
            if let Some(t) = target {
                // A private (0700) directory that lives only as long as the RUN.
                let dir = s.tempdir()?;
                let file = dir.path().join("secret");
                fs::write(&file, &value.0).map_err(io_err(&file))?;
                fs::set_permissions(&file, fs::Permissions::from_mode(mode.unwrap_or(0o400)))
                    .map_err(io_err(&file))?;
                std::os::unix::fs::chown(&file, Some(uid.unwrap_or(0)), Some(gid.unwrap_or(0)))
                    .map_err(io_err(&file))?;
                mounts.push(MountSpec {
                    kind: MountKind::Bind {
                        source: file,
                        readonly: true,
                    },
                    target: abs(t),
                });
                keep_dirs.push(dir);
            }
        }
        Mount::Ssh { id, required, .. } => {
            if *required {
                return Err(s.step_error(
                    step,
                    format!("ssh mount {id:?} is required but cairn has no SSH forwarding yet"),
                ));
            }
            s.reporter.warning(format!(
                "{}:{}: ssh mount {id:?} skipped (not supported yet)",
                s.req.dockerfile_name, step.span.line
            ));
        }
    }
    Ok(())
}
