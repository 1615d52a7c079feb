//! `runner`: the process in an atlas-operator Job pod. It reads its task from `RUNNER_TASK`,
//! runs one Atlas apply, prints a readable log for `kubectl logs`, and writes a
//! compact JSON result to the termination message. Its exit code tells the Job controller whether
//! retrying can help (see `contract::EXIT_*`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use atlas_runner::atlas::Atlas;
use atlas_runner::run::Run;
use atlas_runner::{migrate, schema, wait};
use clap::{Parser, Subcommand};
use contract::{CONTRACT_VERSION, Kind, RunResult, Task, Work};

#[derive(Parser)]
#[command(
    name = "runner",
    version,
    about = "Runs one Atlas apply in an atlas-operator Job pod"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Where the result goes: the container's terminationMessagePath.
    #[arg(long, global = true, default_value = "/dev/termination-log")]
    termination_log: PathBuf,
    /// The Atlas CLI.
    #[arg(long, global = true, env = "ATLAS_BIN", default_value = "atlas")]
    atlas: PathBuf,
    /// Where the private working directory is made.
    #[arg(long, global = true, env = "TMPDIR", default_value = "/tmp")]
    tmp: PathBuf,
    /// The longest one Atlas call may take.
    #[arg(long, global = true, default_value_t = 1800)]
    timeout_seconds: u64,
}

#[derive(Subcommand)]
enum Command {
    /// `atlas migrate apply` of the mounted migration directory (an AtlasMigration).
    Migrate,
    /// `atlas schema apply` of the mounted desired schema (an AtlasSchema).
    Schema,
    /// For an application's init container: exit 0 once every migration of a directory is
    /// applied to the database, polling until then; exit 1 at the time limit.
    Wait {
        /// The mounted migration directory.
        #[arg(long, default_value = "/migrations")]
        dir: String,
        /// The environment variable holding the database URL.
        #[arg(long, default_value = "DATABASE_URL")]
        url_env: String,
        /// The schema of Atlas's revisions table, if not the default.
        #[arg(long)]
        revisions_schema: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        wait_seconds: u64,
    },
}

fn main() -> ExitCode {
    atlas_runner::atlas::stop_on_sigterm();
    let cli = Cli::parse();
    let atlas = Atlas::new(cli.atlas.clone(), Duration::from_secs(cli.timeout_seconds));
    let mut run = Run::new(atlas, cli.tmp.clone());
    let kind = match cli.command {
        Command::Migrate => Kind::Migration,
        Command::Schema => Kind::Schema,
        Command::Wait {
            dir,
            url_env,
            revisions_schema,
            wait_seconds,
        } => {
            let options = wait::WaitOptions {
                dir,
                url_env,
                revisions_schema,
                limit: Duration::from_secs(wait_seconds),
            };
            return match wait::run(&options, &mut run) {
                Ok(_) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("runner wait: {}", run.redactor.redact(&err.to_string()));
                    ExitCode::FAILURE
                }
            };
        }
    };
    let result = match read_task(kind) {
        Ok(task) => {
            run.log(&format!(
                "runner {} (contract v{CONTRACT_VERSION}): {} {}",
                env!("CARGO_PKG_VERSION"),
                kind.resource_kind(),
                task.resource
            ));
            run.log(&format!(
                "confinement: {}",
                atlas_runner::confinement::Confinement::current()
            ));
            run.ask_atlas_version();
            match &task.work {
                Work::Migration(options) => migrate::run(&task, options, &mut run),
                Work::Schema(options) => schema::run(&task, options, &mut run),
            }
        }
        Err(message) => run.failed(kind.input_reason(), &message, false),
    };
    finish(&cli.termination_log, &run, result)
}

/// The task, refused when it is for another kind or another contract version.
fn read_task(kind: Kind) -> Result<Task, String> {
    let text = std::env::var(contract::TASK_ENV).map_err(|_| {
        format!(
            "{} is not set: this pod was not made by atlas-operator",
            contract::TASK_ENV
        )
    })?;
    let task = Task::decode(&text)
        .map_err(|err| format!("{} cannot be read: {err}", contract::TASK_ENV))?;
    if task.kind() != kind {
        return Err(format!(
            "the task is for an {}, not an {}",
            task.kind().resource_kind(),
            kind.resource_kind()
        ));
    }
    Ok(task)
}

fn finish(path: &PathBuf, run: &Run, result: RunResult) -> ExitCode {
    let encoded = result.encode();
    if let Err(err) = std::fs::write(path, &encoded) {
        // The log still carries the result; the controller falls back to it.
        eprintln!("runner: writing the result to {}: {err}", path.display());
    }
    run.log(&format!(
        "result: {:?} {} in {} ms",
        result.outcome, result.reason, result.duration_ms
    ));
    ExitCode::from(result.exit_code())
}
