//! One module per command group. Each `run` returns the process exit code.

pub mod build;
pub mod check;
pub mod dockerfile;
mod format;
pub mod image;
pub mod outline;
pub mod registry;
pub mod run;
mod template;

use crate::{Cli, Command, Global};

pub fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let g = &cli.global;
    match cli.command {
        Command::Build(a) => build::run(a, g),
        Command::Check(a) => check::check(a, g),
        Command::Compare(a) => check::compare(a, g),
        Command::Run(a) => run::run(a, g),
        Command::Ps(a) => run::ps(a, g),
        Command::Logs(a) => run::logs(a, g),
        Command::Stop(a) => run::stop(a, g),
        Command::Rm(a) => run::rm(a, g),
        Command::Images(a) => image::images(a, g),
        Command::History(a) => image::history(a, g),
        Command::Inspect(a) => image::inspect(a, g),
        Command::Tag(a) => image::tag(a, g),
        Command::Rmi(a) => image::rmi(a, g),
        Command::Save(a) => image::save(a, g),
        Command::Load(a) => image::load(a, g),
        Command::Import(a) => image::import(a, g),
        Command::Pull(a) => registry::pull(a, g),
        Command::Push(a) => registry::push(a, g),
        Command::Login(a) => registry::login(a, g),
        Command::Logout(a) => registry::logout(a, g),
        Command::Image(c) => image::image_command(c, g),
        Command::System(c) => image::system_command(c, g),
        Command::Builder(c) => image::builder_command(c, g),
        Command::Dockerfile(c) => dockerfile::run(c, g),
    }
}

/// The error for a command whose issue has not landed yet.
#[allow(dead_code)] // every command has landed; kept for new command slots
pub fn not_yet(what: &str) -> anyhow::Result<i32> {
    anyhow::bail!("`cairn {what}` is not implemented yet")
}

/// Opens the store selected by `--root` (or `CAIRN_ROOT`), else the default root.
pub fn open_store(g: &Global) -> anyhow::Result<cairn_store::Store> {
    let root = g.root.clone().unwrap_or_else(cairn_store::default_root);
    cairn_store::Store::open(&root)
        .map_err(|e| anyhow::anyhow!("cannot open the store at {}: {e}", root.display()))
}
