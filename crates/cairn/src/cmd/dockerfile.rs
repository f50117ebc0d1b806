//! `cairn dockerfile ...` (owned by the frontend issue).

use crate::Global;

#[derive(clap::Subcommand, Debug)]
pub enum DockerfileCommand {
    /// Parse a Dockerfile and print it
    Parse {
        /// Print JSON
        #[arg(long)]
        json: bool,
        file: String,
    },
}

pub fn run(_c: DockerfileCommand, _g: &Global) -> anyhow::Result<i32> {
    super::not_yet("dockerfile parse")
}
