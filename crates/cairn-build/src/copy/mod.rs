//! COPY and ADD: select sources (context, a stage's or image's rootfs), compute the digest of
//! exactly what was selected (the step's cache input), and apply them onto a stage's rootfs.
//!
//! CONTRACT (the engine calls these; add freely, change only with the callers):
//! ```text
//! enum SourceRoot<'a> { Context(&'a BuildContext), Dir(&'a Path) /* rootfs of a stage or image */ }
//! struct CopyRequest<'a> { copy: &'a cairn_dockerfile::Copy, workdir: &'a str,
//!                          owner: Option<(u32, u32)> /* --chown resolved by the caller */ }
//! inputs_digest(&CopyRequest, &SourceRoot) -> Result<String>   // sha256 over the selected files'
//!     // paths, types, modes, owners (for Dir sources), link targets and contents; never mtimes
//! apply(&CopyRequest, &SourceRoot, dest_root: &Path /* the stage's merged rootfs */) -> Result<CopyStats>
//! ```
