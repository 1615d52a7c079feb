//! The `atlas-operator` binary.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "atlas-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML, ready for `kubectl apply -f -`.
    Crds,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crds => match atlas_operator::api::crd_files() {
            Ok(files) => {
                for (_, yaml) in files {
                    print!("{yaml}");
                }
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("atlas-operator: {err}");
                ExitCode::FAILURE
            }
        },
    }
}
