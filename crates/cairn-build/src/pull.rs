//! Base images from registries: the resolver `cairn build` uses, which reads the store and pulls
//! what it lacks (or, with `--pull`, checks every tag against its registry again).

use std::sync::Mutex;

use cairn_store::Store;

use crate::base::{base_from_record, BaseImage, BaseResolver, StoreResolver};
use crate::error::{Error, Result};

/// Resolves base images from the store, pulling those it does not have.
pub struct RegistryResolver<'a> {
    store: &'a Store,
    opts: cairn_registry::PullOptions,
    always_pull: bool,
    /// Serializes pulls: stages resolve their bases from several threads, and two pulls of the
    /// same image would download its layers twice.
    pulling: Mutex<()>,
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
        }
    }
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
        let pulled = if self.always_pull {
            cairn_registry::pull(self.store, reference, &opts)
        } else {
            cairn_registry::pull_if_missing(self.store, reference, &opts)
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
            Err(e) => Err(Error::Other(format!("pulling {reference}: {e}"))),
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
