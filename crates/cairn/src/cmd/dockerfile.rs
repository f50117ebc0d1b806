//! `cairn dockerfile ...`: tools around the Dockerfile frontend.

use crate::Global;
use cairn_dockerfile::{Args, Command};

#[derive(clap::Subcommand, Debug)]
pub enum DockerfileCommand {
    /// Parse a Dockerfile and print it (instructions with positions, flags and heredocs)
    Parse {
        /// Print JSON
        #[arg(long)]
        json: bool,
        /// The Dockerfile (`-` for stdin)
        file: String,
    },
}

pub fn run(c: DockerfileCommand, _g: &Global) -> anyhow::Result<i32> {
    match c {
        DockerfileCommand::Parse { json, file } => {
            let (name, text) = super::outline::read_dockerfile(Some(&file), ".")?;
            let df = cairn_dockerfile::parse(&name, &text)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&df)?);
                return Ok(0);
            }
            for ins in &df.instructions {
                let flags: Vec<String> = ins
                    .flags
                    .iter()
                    .map(|f| match &f.value {
                        Some(v) => format!("--{}={v}", f.name),
                        None => format!("--{}", f.name),
                    })
                    .collect();
                let args = match &ins.args {
                    Args::Command(Command::Exec(v)) => format!("exec {v:?}"),
                    Args::Command(Command::Shell(s)) => format!("shell {s:?}"),
                    other => format!("{other:?}"),
                };
                println!(
                    "{}:{} {} {} {args}",
                    ins.span.line,
                    ins.span.column,
                    ins.keyword.as_str(),
                    flags.join(" ")
                );
                for h in &ins.heredocs {
                    println!(
                        "    <<{} ({} bytes, expand={}, strip_tabs={})",
                        h.name,
                        h.content.len(),
                        h.expand,
                        h.chomp
                    );
                }
            }
            for w in &df.warnings {
                eprintln!("WARNING: {}:{}: {}", name, w.span.line, w.message);
            }
            Ok(0)
        }
    }
}
