//! `cairn check` and `cairn compare` (owned by the check issue).

use crate::Global;

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Name of the Dockerfile
    #[arg(short = 'f', long = "file")]
    pub file: Option<String>,
    #[arg(default_value = ".")]
    pub context: String,
}

#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// Name of the Dockerfile
    #[arg(short = 'f', long = "file")]
    pub file: Option<String>,
    #[arg(default_value = ".")]
    pub context: String,
}

pub fn check(_a: CheckArgs, _g: &Global) -> anyhow::Result<i32> {
    super::not_yet("check")
}

pub fn compare(_a: CompareArgs, _g: &Global) -> anyhow::Result<i32> {
    super::not_yet("compare")
}
