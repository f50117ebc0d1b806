//! `cairn run`, `ps`, `logs`, `stop`, `rm` (owned by the sandbox issue).

use crate::Global;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    pub image: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}
#[derive(clap::Args, Debug)]
pub struct PsArgs {}
#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    pub container: String,
}
#[derive(clap::Args, Debug)]
pub struct StopArgs {
    pub containers: Vec<String>,
}
#[derive(clap::Args, Debug)]
pub struct RmArgs {
    pub containers: Vec<String>,
}

pub fn run(_a: RunArgs, _g: &Global) -> anyhow::Result<i32> {
    super::not_yet("run")
}
pub fn ps(_a: PsArgs, _g: &Global) -> anyhow::Result<i32> {
    super::not_yet("ps")
}
pub fn logs(_a: LogsArgs, _g: &Global) -> anyhow::Result<i32> {
    super::not_yet("logs")
}
pub fn stop(_a: StopArgs, _g: &Global) -> anyhow::Result<i32> {
    super::not_yet("stop")
}
pub fn rm(_a: RmArgs, _g: &Global) -> anyhow::Result<i32> {
    super::not_yet("rm")
}
