//! Base images from registries: the resolver `cairn build` uses, which reads the store and pulls
//! what it lacks (or, with `--pull`, checks every tag against its registry again).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use cairn_store::Store;

use crate::base::{base_from_record, BaseImage, BaseResolver, StoreResolver};
use crate::error::{Error, Result};
use crate::progress::Reporter;

/// Resolves base images from the store, pulling those it does not have.
pub struct RegistryResolver<'a> {
    store: &'a Store,
    opts: cairn_registry::PullOptions,
    always_pull: bool,
    /// Serializes pulls: stages resolve their bases from several threads, and two pulls of the
    /// same image would download its layers twice.
    pulling: Mutex<()>,
    /// Where pulls show as vertices of the build; without it, `opts`' own progress.
    reporter: Option<&'a Reporter<'a>>,
}

impl<'a> RegistryResolver<'a> {
    /// A resolver over `store` pulling with `opts` (its platform is overridden by the build's).
    /// `always_pull` re-checks each reference with its registry even when the store has it.
    pub fn new(store: &'a Store, opts: cairn_registry::PullOptions, always_pull: bool) -> Self {
        RegistryResolver {
            store,
            opts,
            always_pull,
            pulling: Mutex::new(()),
            reporter: None,
        }
    }

    /// Shows each pull as a vertex of the build reported by `reporter` (`[internal] pull X`,
    /// one status line per layer), as BuildKit shows them.
    pub fn with_reporter(mut self, reporter: &'a Reporter<'a>) -> Self {
        self.reporter = Some(reporter);
        self
    }

    fn pull(
        &self,
        reference: &str,
        opts: &cairn_registry::PullOptions,
    ) -> cairn_registry::Result<cairn_store::ImageRecord> {
        if self.always_pull {
            cairn_registry::pull(self.store, reference, opts)
        } else {
            cairn_registry::pull_if_missing(self.store, reference, opts)
        }
    }

    /// [`Self::pull`] with its events relayed as status lines of a vertex. The registry calls
    /// its progress function from its own threads and needs it `'static`, so lines travel
    /// through a channel to a thread that borrows the reporter.
    fn pull_reported(
        &self,
        reporter: &Reporter<'_>,
        reference: &str,
        mut opts: cairn_registry::PullOptions,
    ) -> cairn_registry::Result<cairn_store::ImageRecord> {
        let name = familiar(reference);
        let v = reporter.start(format!("[internal] pull {name}"));
        let (tx, rx) = mpsc::channel::<String>();
        opts.registry.progress = Some(Arc::new(move |e: &cairn_registry::Event| {
            if let Some(line) = status_line(&name, e) {
                let _ = tx.send(line);
            }
        }));
        let finished = AtomicBool::new(false);
        let finished_ref = &finished;
        let result = std::thread::scope(|s| {
            s.spawn(move || loop {
                match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(line) => reporter.status(v, line),
                    // The sender may outlive the pull in a clone of the options: stop on the
                    // flag, not only on disconnection.
                    Err(mpsc::RecvTimeoutError::Timeout) if finished_ref.load(Ordering::SeqCst) => {
                        break
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            });
            let r = self.pull(reference, &opts);
            drop(opts);
            finished.store(true, Ordering::SeqCst);
            r
        });
        match &result {
            Ok(_) => reporter.done(v),
            Err(e) => reporter.failed(v, e.to_string()),
        }
        result
    }
}

/// The status line of an event of the pull of `name`, as BuildKit words them; None for byte
/// counts.
fn status_line(name: &str, e: &cairn_registry::Event) -> Option<String> {
    use cairn_registry::Event as E;
    let short = |d: &str| -> String { d.trim_start_matches("sha256:").chars().take(12).collect() };
    Some(match e {
        E::PullingFrom { .. } => format!("resolve {name}"),
        E::AlreadyExists { digest } => format!("sha256:{} already exists", short(digest)),
        E::PullComplete { digest } => format!("sha256:{} done", short(digest)),
        E::Retrying {
            digest,
            attempt,
            error,
        } => format!("sha256:{} retrying ({attempt}): {error}", short(digest)),
        E::Digest { digest } => format!("digest: {digest}"),
        _ => return None,
    })
}

impl BaseResolver for RegistryResolver<'_> {
    fn resolve(&self, reference: &str, platform: Option<&str>) -> Result<Option<BaseImage>> {
        let mut opts = self.opts.clone();
        if let Some(p) = platform {
            opts.platform = Some(
                cairn_registry::Platform::parse(p)
                    .map_err(|e| Error::Other(format!("--platform {p}: {e}")))?,
            );
        }
        // The store first, by the reference as written: it also knows image IDs and ID
        // prefixes, which a registry would take for repository names. With a platform asked
        // for, pull_if_missing checks the stored image is that platform.
        if !self.always_pull && platform.is_none() {
            if let Some(img) = StoreResolver::new(self.store).resolve(reference, None)? {
                return Ok(Some(img));
            }
        }
        let _guard = self.pulling.lock().unwrap_or_else(|e| e.into_inner());
        let pulled = match self.reporter {
            Some(r) => self.pull_reported(r, reference, opts),
            None => self.pull(reference, &opts),
        };
        match pulled {
            Ok(record) => base_from_record(self.store, reference, &record).map(Some),
            // Not a registry reference (an image ID, a local-only name): the store decides.
            Err(cairn_registry::Error::InvalidReference { .. }) => {
                StoreResolver::new(self.store).resolve(reference, platform)
            }
            // Registries answer 401 for a repository that does not exist, as well as 404.
            Err(
                e @ (cairn_registry::Error::NotFound { .. }
                | cairn_registry::Error::Unauthorized { .. }),
            ) => Err(Error::Other(format!(
                "pull access denied for {}, repository does not exist or may require \
                 authorization: {e}",
                familiar(reference)
            ))),
            Err(e) if self.always_pull => Err(Error::Other(format!(
                "--pull: pulling {} failed: {e}",
                familiar(reference)
            ))),
            // Offline, the likely fix is local: say so.
            // Worded as the store resolver's error, which users and tests know.
            Err(e) => Err(Error::Other(format!(
                "base image {reference:?} not found in the store, and pulling it failed: {e} \
                 (or import it: `cairn import ROOTFS.tar {reference}`, `cairn load`)"
            ))),
        }
    }
}

/// The short name docker shows (`busybox`, `x/y`), or the reference as written if it does not
/// parse.
fn familiar(reference: &str) -> String {
    cairn_registry::Reference::parse(reference)
        .map(|r| r.familiar())
        .unwrap_or_else(|_| reference.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(store: &Store, always_pull: bool) -> RegistryResolver<'_> {
        let mut opts = cairn_registry::PullOptions::default();
        // Port 1 on loopback refuses at once; no retries keep the test fast.
        opts.registry.retries = 0;
        RegistryResolver::new(store, opts, always_pull)
    }

    #[test]
    fn store_first_then_registry_with_errors_that_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": []},
        });
        let rec = store
            .commit_image_json(&config, &[], &["127.0.0.1:1/local:1".into()])
            .unwrap();

        // In the store: by name and by ID prefix, no registry asked.
        let r = resolver(&store, false);
        let by_name = r.resolve("127.0.0.1:1/local:1", None).unwrap().unwrap();
        assert_eq!(by_name.id, rec.id);
        let prefix = &rec.id["sha256:".len()..][..12];
        assert_eq!(r.resolve(prefix, None).unwrap().unwrap().id, rec.id);

        // Missing, registry unreachable: the store and the import hint are named.
        let err = r
            .resolve("127.0.0.1:1/missing:1", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"127.0.0.1:1/missing:1\" not found in the store")
                && err.contains("cairn import"),
            "{err}"
        );
        // --pull asks the registry even for what the store has.
        let err = resolver(&store, true)
            .resolve("127.0.0.1:1/local:1", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--pull: pulling 127.0.0.1:1/local:1 failed"),
            "{err}"
        );
    }

    #[test]
    fn pull_events_become_status_lines() {
        use cairn_registry::Event as E;
        let d = format!("sha256:{}", "ab".repeat(32));
        let line = |e: E| status_line("x:1", &e);
        assert_eq!(
            line(E::PullingFrom {
                tag: "1".into(),
                repository: "library/x".into()
            }),
            Some("resolve x:1".into())
        );
        assert_eq!(
            line(E::PullComplete { digest: d.clone() }),
            Some("sha256:abababababab done".into())
        );
        assert_eq!(
            line(E::Progress {
                digest: d,
                current: 1,
                total: 2
            }),
            None
        );
    }
}
