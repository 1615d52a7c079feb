//! What the runner adds to Atlas: `runner migrate` against a bare `atlas migrate apply` of the
//! same directory, each on a fresh PostgreSQL database, outside any pod (so the kubelet's cost is
//! not in it), taking turns so that load from elsewhere on the machine falls on both alike.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use contract::{self, CONTRACT_VERSION, MigrateApply, Outcome, Target, Task, Work};
use devcluster::db::{Engine, TestDatabase};
use devcluster::seed;
use serde::Serialize;

use super::proc::PeakWatch;

/// The seed's PostgreSQL migration (examples/postgres-migration): what users start from.

#[derive(Clone, Debug, Serialize)]
pub struct RunnerFigures {
    pub runs: usize,
    pub database: &'static str,
    pub runner_binary: String,
    pub atlas_median_ms: f64,
    pub atlas_min_ms: f64,
    pub atlas_max_ms: f64,
    pub runner_median_ms: f64,
    pub runner_min_ms: f64,
    pub runner_max_ms: f64,
    /// Runner median minus Atlas median.
    pub overhead_ms: f64,
    /// Runner median over Atlas median.
    pub ratio: f64,
    /// The runner process alone (its Atlas children are processes of their own).
    pub runner_peak_rss_mib: f64,
    /// The bare `atlas migrate apply`.
    pub atlas_peak_rss_mib: f64,
}

pub fn measure(runner: &Path, runs: usize, scratch: &Path) -> Result<RunnerFigures> {
    let atlas = devcluster::tools::path("atlas")?;
    let dir = scratch.join("runner-dir");
    let tmp = scratch.join("runner-tmp");
    std::fs::create_dir_all(&tmp)?;
    let files = super::hashed_dir(&[(seed::MIGRATION_FILE, seed::MIGRATION_SQL)]);
    std::fs::create_dir_all(&dir)?;
    for (name, content) in &files {
        std::fs::write(dir.join(name), content)?;
    }
    // Through JSON, naming only what a migration needs: optional fields keep their defaults as
    // the contract grows.
    let task: Task = serde_json::from_value(serde_json::json!({
        "version": CONTRACT_VERSION,
        "resource": "bench/runner-overhead",
        "target": Target::UrlEnv("DATABASE_URL".into()),
        "envName": "k8s",
        "inputsDigest": contract::digest_files(
            files.iter().map(|(n, c)| (n.as_str(), c.as_bytes())),
        ),
        "work": Work::Migration(MigrateApply {
            dir: dir.display().to_string(),
            ..Default::default()
        }),
    }))
    .context("the runner's task")?;
    let task_json = task.encode();

    let mut runner_times = Vec::new();
    let mut atlas_times = Vec::new();
    let (mut runner_peak, mut atlas_peak) = (0u64, 0u64);
    for i in 0..runs {
        // Alternate which goes first, so neither always runs on a warmer cache.
        for turn in [i % 2, 1 - i % 2] {
            let db = TestDatabase::create(Engine::Postgres, "bench_runner")?;
            if turn == 0 {
                let result = scratch.join("termination-log");
                let _ = std::fs::remove_file(&result);
                let mut command = Command::new(runner);
                command
                    .arg("migrate")
                    .arg("--termination-log")
                    .arg(&result)
                    .arg("--atlas")
                    .arg(&atlas)
                    .arg("--tmp")
                    .arg(&tmp)
                    .env(contract::TASK_ENV, &task_json)
                    .env("DATABASE_URL", &db.url)
                    // As the runner image sets them (devcluster's image table).
                    .env("ATLAS_NO_UPDATE_NOTIFIER", "1")
                    .env("ATLAS_NO_UPGRADE_SUGGESTIONS", "1")
                    .env("ATLAS_NO_ANON_TELEMETRY", "true");
                let (took, peak) = timed(&mut command, "runner migrate")?;
                let text = std::fs::read_to_string(&result).unwrap_or_default();
                let outcome: contract::RunResult = serde_json::from_str(&text)
                    .with_context(|| format!("the runner's result: {text}"))?;
                if outcome.outcome != Outcome::Applied {
                    bail!("runner migrate did not apply: {}", outcome.message);
                }
                runner_times.push(took);
                runner_peak = runner_peak.max(peak);
            } else {
                let mut command = devcluster::tools::atlas()?;
                command
                    .args(["migrate", "apply", "--url", &db.url, "--dir"])
                    .arg(format!("file://{}", dir.display()));
                let (took, peak) = timed(&mut command, "atlas migrate apply")?;
                atlas_times.push(took);
                atlas_peak = atlas_peak.max(peak);
            }
            let applied = db.query(
                "select count(*) from information_schema.tables where table_name = 'users'",
            )?;
            if applied.trim() != "1" {
                bail!("the migration left no users table in {}", db.name);
            }
        }
    }
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    let stats = |times: &mut Vec<Duration>| {
        times.sort();
        (
            ms(&times[times.len() / 2]),
            ms(&times[0]),
            ms(&times[times.len() - 1]),
        )
    };
    let (atlas_median_ms, atlas_min_ms, atlas_max_ms) = stats(&mut atlas_times);
    let (runner_median_ms, runner_min_ms, runner_max_ms) = stats(&mut runner_times);
    Ok(RunnerFigures {
        runs,
        database: "PostgreSQL (a fresh database per run)",
        runner_binary: runner.display().to_string(),
        atlas_median_ms,
        atlas_min_ms,
        atlas_max_ms,
        runner_median_ms,
        runner_min_ms,
        runner_max_ms,
        overhead_ms: runner_median_ms - atlas_median_ms,
        ratio: runner_median_ms / atlas_median_ms,
        runner_peak_rss_mib: runner_peak as f64 / 1024.0,
        atlas_peak_rss_mib: atlas_peak as f64 / 1024.0,
    })
}

/// Runs `command` to its end: wall time from spawn to exit, and its own peak RSS in KiB.
fn timed(command: &mut Command, what: &str) -> Result<(Duration, u64)> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let watch = PeakWatch::start(child.id());
    let mut stderr = child.stderr.take().expect("piped");
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let status = child.wait()?;
    let took = started.elapsed();
    let peak = watch.finish();
    let errors = errors.join().unwrap_or_default();
    if !status.success() {
        bail!("{what} failed ({status}): {errors}");
    }
    Ok((took, peak))
}
