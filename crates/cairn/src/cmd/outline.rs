//! `cairn build --print=outline|targets` (owned by the frontend issue).

use super::build::BuildArgs;
use crate::Global;

pub fn print(_args: &BuildArgs, request: &str, _g: &Global) -> anyhow::Result<i32> {
    super::not_yet(&format!("build --print={request}"))
}
