//! `cairn`: the command line. Thin glue: each command group lives in `cmd/` and calls the crates.

mod cmd;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// A daemonless builder of small, correct, reproducible OCI images from Dockerfiles.
#[derive(Parser, Debug)]
#[command(name = "cairn", version, about, long_about = None, propagate_version = true)]
#[command(disable_help_subcommand = false, arg_required_else_help = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags that every command understands.
#[derive(clap::Args, Debug, Clone)]
pub struct Global {
    /// Root directory of the store (default: /var/lib/cairn as root, $XDG_DATA_HOME/cairn otherwise)
    #[arg(long, global = true, env = "CAIRN_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Print debug information
    #[arg(long, short = 'D', global = true)]
    pub debug: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build an image from a Dockerfile
    Build(cmd::build::BuildArgs),
    /// Check a Dockerfile and the image it builds against the multi-stage checklist
    Check(cmd::check::CheckArgs),
    /// Build each stage and compare their sizes and layers
    Compare(cmd::check::CompareArgs),
    /// Run a command in a new container
    Run(cmd::run::RunArgs),
    /// List containers
    Ps(cmd::run::PsArgs),
    /// Fetch the logs of a container
    Logs(cmd::run::LogsArgs),
    /// Stop one or more running containers
    Stop(cmd::run::StopArgs),
    /// Remove one or more containers
    Rm(cmd::run::RmArgs),
    /// List images
    Images(cmd::image::ImagesArgs),
    /// Show the history of an image
    History(cmd::image::HistoryArgs),
    /// Return low-level information on an image
    Inspect(cmd::image::InspectArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(cmd::image::TagArgs),
    /// Remove one or more images
    Rmi(cmd::image::RmiArgs),
    /// Save one or more images to a tar archive or an OCI layout
    Save(cmd::image::SaveArgs),
    /// Load an image from a tar archive or an OCI layout
    Load(cmd::image::LoadArgs),
    /// Import the contents from a tarball to create a filesystem image
    Import(cmd::image::ImportArgs),
    /// Download an image from a registry
    Pull(cmd::registry::PullArgs),
    /// Upload an image to a registry
    Push(cmd::registry::PushArgs),
    /// Log in to a registry
    Login(cmd::registry::LoginArgs),
    /// Log out from a registry
    Logout(cmd::registry::LogoutArgs),
    /// Manage images
    #[command(subcommand)]
    Image(cmd::image::ImageCommand),
    /// Manage cairn's store
    #[command(subcommand)]
    System(cmd::image::SystemCommand),
    /// Manage the build cache
    #[command(subcommand)]
    Builder(cmd::image::BuilderCommand),
    /// Dockerfile tools
    #[command(subcommand)]
    Dockerfile(cmd::dockerfile::DockerfileCommand),
}

fn main() -> ExitCode {
    cairn_sandbox::maybe_run_init();
    let cli = Cli::parse();
    let code = match cmd::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("ERROR: {}", error_text(&err));
            1
        }
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// The error and its causes, `: `-joined as anyhow's `{:#}`, but a cause that the message so far
/// already ends with is left out: the library errors' messages include their source (`path:
/// source`), which the chain then gives again.
fn error_text(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::error_text;

    #[test]
    fn a_cause_already_in_the_message_is_said_once() {
        let io = std::io::Error::from_raw_os_error(2);
        let lib = cairn_build::Error::Io {
            path: "/x/y".into(),
            source: io,
        };
        let err = anyhow::Error::new(lib).context("writing /x/y/id");
        assert_eq!(
            error_text(&err),
            "writing /x/y/id: /x/y: No such file or directory (os error 2)"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_text(&plain), "outer: inner");
    }
}
