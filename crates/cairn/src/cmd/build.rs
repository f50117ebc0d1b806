//! `cairn build` (owned by the build issue; `--print` by the frontend issue).

use crate::Global;

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// Name of the Dockerfile (default: PATH/Dockerfile); `-` reads it from stdin
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<String>,
    /// Name and optionally a tag in the "name:tag" format
    #[arg(short = 't', long = "tag", value_name = "NAME:TAG")]
    pub tags: Vec<String>,
    /// Set the target build stage to build
    #[arg(long)]
    pub target: Option<String>,
    /// Set build-time variables
    #[arg(long = "build-arg", value_name = "K[=V]")]
    pub build_args: Vec<String>,
    /// Print the result of a build request instead of building: outline, targets
    #[arg(long, visible_alias = "call", value_name = "REQUEST")]
    pub print: Option<String>,
    /// Build context: a directory, or `-` for a tar (or a Dockerfile) on stdin
    #[arg(value_name = "PATH|-", default_value = ".")]
    pub context: String,
}

pub fn run(args: BuildArgs, g: &Global) -> anyhow::Result<i32> {
    if let Some(request) = args.print.clone() {
        return super::outline::print(&args, &request, g);
    }
    super::not_yet("build")
}
