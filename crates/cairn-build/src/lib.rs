//! The build engine: plan (stages → step graph with cache keys), solve (run ready steps in
//! parallel, cache hits cost a lookup), export (store, OCI layout, docker-archive), and progress
//! events that the CLI renders.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use cairn_build::{build, export, BuildRequest, Reporter, StoreResolver};
//! let store = cairn_store::Store::open("/var/lib/cairn".as_ref())?;
//! let ctx = cairn_build::context::BuildContext::open("app".as_ref(), None)?;
//! let req = BuildRequest {
//!     dockerfile_name: "Dockerfile".into(),
//!     dockerfile: std::fs::read_to_string("app/Dockerfile")?,
//!     context: Some(&ctx),
//!     ..Default::default()
//! };
//! let sink = |e: cairn_build::Event| eprintln!("{e:?}");
//! let reporter = Reporter::new(&sink);
//! let out = build(&store, &StoreResolver::new(&store), &req, &reporter)?;
//! export::finish(&store, &out, &["app:latest".into()], &[], true, &reporter)?;
//! println!("{}", out.image_id);
//! # Ok(()) }
//! ```
//!
//! Where things are: [`solve`] (scheduler, cache lookups, RUN/COPY/WORKDIR execution, the
//! reproducibility rules), [`image`] (config and history as BuildKit writes them), [`key`] (cache
//! keys), [`export`] (`-o` outputs), [`progress`] (events), [`base`] (base image lookup).
//!
//! Module ownership while the team works in parallel: `context` and `copy` (the build context,
//! .dockerignore, COPY/ADD semantics) are written by one engineer; everything else (planning,
//! cache keys, solving, RUN, image config and history, exporters, progress) by another.

pub mod base;
pub mod context;
pub mod copy;
pub mod error;
pub mod export;
mod gofmt;
pub mod image;
pub mod key;
pub mod progress;
pub mod pull;
pub mod solve;

pub use base::{BaseImage, BaseResolver, StoreResolver};
pub use error::{Error, Result, RunFailure};
pub use export::Output;
pub use key::CacheKey;
pub use progress::{Event, ProgressSink, Reporter};
pub use pull::RegistryResolver;
pub use solve::{build, BuildOutput, BuildRequest, SecretValue, StageResult};
