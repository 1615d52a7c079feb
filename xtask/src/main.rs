//! `cargo xtask <command>`: the developer and CI commands (see the README and docs/development.md).

mod bench;
mod cluster;
mod crds;
mod db;
mod demo;
mod images;
mod steps;
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
    /// Regenerate crds/*.yaml (and the Helm chart's copy) from the Rust API types.
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
    /// Measure what the operator costs and how it scales (docs/performance.md).
    Bench {
        /// The smoke run (10 resources, short idle): about a minute and a half.
        #[arg(long)]
        quick: bool,
        /// Other numbers of resources than 10,100,1000 (comma-separated), for a closer look.
        #[arg(long, value_delimiter = ',')]
        sizes: Vec<usize>,
        /// Another steady-state idle time than 300 s (15 s with --quick).
        #[arg(long)]
        idle_seconds: Option<u64>,
        /// Only the runner-overhead phase (11 runs, release build; no cluster): what the runner
        /// adds to a bare `atlas migrate apply`.
        #[arg(long, conflicts_with_all = ["quick", "sizes", "idle_seconds"])]
        runner_only: bool,
    },
    /// Build the operator's and the runner's images with buildah (from the Dockerfiles, on base
    /// images assembled here) and import them into the real node when one runs.
    Images,
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
        Command::Images => images::run(),
        Command::Demo { keep } => demo::run(keep),
        Command::Bench {
            quick,
            sizes,
            idle_seconds,
            runner_only,
        } => {
            if runner_only {
                bench::runner_only(bench::Plan::full().runner_runs)
            } else {
                let mut plan = if quick {
                    bench::Plan::quick()
                } else {
                    bench::Plan::full()
                };
                if !sizes.is_empty() {
                    plan.sizes = sizes;
                    plan.mode = "custom";
                }
                if let Some(idle) = idle_seconds {
                    plan.idle_seconds = idle;
                    plan.mode = "custom";
                }
                bench::run(plan)
            }
        }
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
