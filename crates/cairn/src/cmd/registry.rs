//! `cairn pull`, `push`, `login`, `logout` (owned by the registry issue).

use crate::Global;

#[derive(clap::Args, Debug)]
pub struct PullArgs {
    pub reference: String,
}
#[derive(clap::Args, Debug)]
pub struct PushArgs {
    pub reference: String,
}
#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    pub server: Option<String>,
}
#[derive(clap::Args, Debug)]
pub struct LogoutArgs {
    pub server: Option<String>,
}

pub fn pull(_a: PullArgs, _g: &Global) -> anyhow::Result<i32> {
    super::not_yet("pull")
}
pub fn push(_a: PushArgs, _g: &Global) -> anyhow::Result<i32> {
    super::not_yet("push")
}
pub fn login(_a: LoginArgs, _g: &Global) -> anyhow::Result<i32> {
    super::not_yet("login")
}
pub fn logout(_a: LogoutArgs, _g: &Global) -> anyhow::Result<i32> {
    super::not_yet("logout")
}
