//! `cargo xtask <command>`: the developer and CI commands (see the README and docs/development.md).

mod cluster;
mod crds;
mod db;
mod demo;
mod run;
mod test;
mod tools;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Developer and CI commands for atlas-operator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Regenerate crds/*.yaml from the Rust API types.
    Crds {
        /// Fail instead of writing when the checked-in YAML differs from the types.
        #[arg(long)]
        check: bool,
    },
    /// Run everything CI checks: formatting, clippy, unit and integration tests.
    Test,
    /// Build (or reuse from the cache) the pinned Go tools and print their versions.
    Tools,
    /// Local PostgreSQL and MariaDB servers for tests and the demo.
    Db {
        #[command(subcommand)]
        command: db::DbCommand,
    },
    /// The local Kubernetes (etcd, kube-apiserver, kube-controller-manager) for tests and the demo.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Run the operator's main job end to end, as far as this build can.
    Demo {
        /// Leave what the demo started running.
        #[arg(long)]
        keep: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crds { check } => crds::run(check),
        Command::Test => test::run(),
        Command::Tools => tools::run(),
        Command::Db { command } => db::run(command),
        Command::Cluster { command } => cluster::run(command),
        Command::Demo { keep } => demo::run(keep),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root, whatever directory `cargo xtask` was started from.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}
