//! The build context: a directory (or a tar on stdin) filtered by `.dockerignore`.
//!
//! CONTRACT (the engine calls these; add freely, change only with the callers):
//! ```text
//! BuildContext::open(dir: &Path, dockerfile: Option<&Path>) -> Result<BuildContext>
//!     // reads <dockerfile>.dockerignore next to the Dockerfile if present, else <dir>/.dockerignore
//! BuildContext::from_tar(reader: impl Read, scratch: &Path) -> Result<BuildContext>
//! ctx.root() -> &Path
//! ctx.is_ignored(rel: &Path) -> bool
//! ```
