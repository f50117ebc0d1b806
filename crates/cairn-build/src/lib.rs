//! The build engine: plan (stages → step graph with cache keys), solve (run ready steps in
//! parallel, cache hits cost a lookup), export (store, OCI layout, docker-archive), and progress
//! events that the CLI renders.
//!
//! Module ownership while the team works in parallel: `context` and `copy` (the build context,
//! .dockerignore, COPY/ADD semantics) are written by one engineer; everything else (planning,
//! cache keys, solving, RUN, image config and history, exporters, progress) by another.

pub mod context;
pub mod copy;
pub mod base;
pub mod error;
pub mod export;
mod gofmt;
pub mod image;
pub mod key;
pub mod progress;
pub mod solve;

pub use base::{BaseImage, BaseResolver, StoreResolver};
pub use error::{Error, Result, RunFailure};
pub use export::Output;
pub use key::CacheKey;
pub use progress::{Event, ProgressSink, Reporter};
pub use solve::{build, BuildOutput, BuildRequest, StageResult};
