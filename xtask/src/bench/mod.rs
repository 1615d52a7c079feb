//! `cargo xtask bench`: what the operator costs and how it scales, measured on the local cluster
//! (real API server, Job controller and process-kubelet), real Atlas and real databases. It
//! prints a table and writes `target/bench/results.json` and `target/bench/scale.svg`. It fails
//! only when it cannot measure (a resource never Ready, a command failing), never because of a
//! figure's value: figures are noisy on a shared machine and are for people to read.
//!
//! `--quick` is the smoke run `cargo xtask test` includes, so the harness never rots.

mod audit;
mod operator;
mod plot;
mod proc;
mod runner;
mod scenarios;
mod table;
mod wait;
mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use operator::Operator;
use scenarios::{ScaleFigures, StartFigures, SteadyFigures, StormFigures};
use workload::Workload;

/// What one run measures.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub mode: &'static str,
    /// Numbers of AtlasMigrations, each spread over 10 namespaces.
    pub sizes: Vec<usize>,
    pub idle_seconds: u64,
    /// ConfigMaps edited at once in the change storm (at most the largest size).
    pub storm: usize,
    pub runner_runs: usize,
    /// `release` for the figures; the quick run uses the debug build `cargo xtask test` has.
    pub profile: &'static str,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            mode: "full",
            sizes: vec![10, 100, 1000],
            idle_seconds: 300,
            storm: 100,
            runner_runs: 11,
            profile: "release",
        }
    }

    pub fn quick() -> Plan {
        Plan {
            mode: "quick",
            sizes: vec![10],
            idle_seconds: 15,
            storm: 10,
            runner_runs: 3,
            profile: "debug",
        }
    }
}

/// The smoke run for `cargo xtask test`: about a minute and a half on a running cluster.
pub fn quick() -> Result<()> {
    run(Plan::quick())
}

/// `cargo xtask bench --runner-only`: the runner-overhead phase alone (release build, PostgreSQL,
/// no cluster), for a quick look at what the runner adds to Atlas.
pub fn runner_only(runs: usize) -> Result<()> {
    eprintln!(
        "==> bench (runner only): {runs} runs each of `runner migrate` and bare `atlas migrate apply`"
    );
    devcluster::packages::ensure()?;
    devcluster::tools::ensure_all()?;
    devcluster::db::up()?;
    crate::steps::step(
        "build",
        "cargo",
        &["build", "-p", "atlas-runner", "--release"],
    )?;
    let runner_bin = devcluster::target_dir().join("release").join("runner");
    let scratch = devcluster::target_dir()
        .join("bench")
        .join(format!("runner-{}", run_id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let _scratch = RemoveOnDrop(scratch.clone());
    let figures = runner::measure(&runner_bin, runs, &scratch)?;
    print!("{}", table::runner_paragraph(&figures));
    Ok(())
}

#[derive(Debug, Serialize)]
struct Results {
    plan: Plan,
    started_at: String,
    machine: proc::Machine,
    load_average_at_end: String,
    /// The whole command, builds and set-up included.
    wall_seconds: f64,
    /// The measurements alone.
    measure_seconds: f64,
    runner: runner::RunnerFigures,
    scale: Vec<ScaleFigures>,
    steady: SteadyFigures,
    storm: StormFigures,
    start: StartFigures,
    notes: BTreeMap<&'static str, String>,
}

pub fn run(plan: Plan) -> Result<()> {
    let began = Instant::now();
    let started_at = jiff::Timestamp::now();
    let machine = proc::machine();
    eprintln!(
        "==> bench ({}): sizes {:?}, {} s idle, storm of {}, {} runner runs, {} build",
        plan.mode, plan.sizes, plan.idle_seconds, plan.storm, plan.runner_runs, plan.profile
    );
    if let Ok(filter) = std::env::var("RUST_LOG")
        && !filter.contains("atlas_operator=debug")
    {
        anyhow::bail!(
            "RUST_LOG={filter} hides the operator's `reconciled` lines the start figure is read \
             from; unset it or add atlas_operator=debug"
        );
    }

    devcluster::packages::ensure()?;
    devcluster::tools::ensure_all()?;
    devcluster::db::up()?;
    let cluster = devcluster::cluster::up()?;
    workload::wait_for_earlier_runs(&cluster, Duration::from_secs(400))?;
    let mut build = vec!["build", "-p", "atlas-operator", "-p", "atlas-runner"];
    if plan.profile == "release" {
        build.push("--release");
    }
    crate::steps::step("build", "cargo", &build)?;
    let bin_dir = devcluster::target_dir().join(plan.profile);
    let operator_bin = bin_dir.join("atlas-operator");
    let runner_bin = bin_dir.join("runner");

    let out = devcluster::target_dir().join("bench");
    // The results, the plot and the operators' logs go here, whether or not the scratch files
    // below do (a fresh clone has no target/bench yet).
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let run_id = run_id();
    // A Job's pod has an emptyDir at /tmp that hides what is below it on the host, so a clone
    // under /tmp keeps the SQLite files (which the pods open) in /var/tmp instead.
    let scratch_root = if out.starts_with("/tmp") {
        PathBuf::from("/var/tmp/atlas-operator-bench")
    } else {
        out.clone()
    };
    let scratch = scratch_root.join(format!("work-{run_id}"));
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let _scratch = RemoveOnDrop(scratch.clone());
    let measuring = Instant::now();

    eprintln!(
        "==> runner overhead: {} runs each of `runner migrate` and bare `atlas migrate apply`",
        plan.runner_runs
    );
    let runner = runner::measure(&runner_bin, plan.runner_runs, &scratch)?;
    eprintln!(
        "    runner {:.0} ms, atlas {:.0} ms (medians)",
        runner.runner_median_ms, runner.atlas_median_ms
    );

    let mut scale_figures = Vec::new();
    let mut tail = None;
    for (i, &size) in plan.sizes.iter().enumerate() {
        let last = i + 1 == plan.sizes.len();
        eprintln!(
            "==> scale: {size} AtlasMigrations in {} namespaces",
            workload::NAMESPACES
        );
        let phase = Instant::now();
        let workload = Workload::new(&run_id, size, &scratch, &cluster)?;
        workload.create_namespaces()?;
        workload.apply_inputs()?;
        let operator = Operator::start(
            &cluster,
            &operator_bin,
            &workload,
            out.join(format!("operator-{size}.log")),
        )?;
        operator.wait_leading(Duration::from_secs(60))?;
        // Let the initial lists and watches finish: "idle" is after them.
        std::thread::sleep(Duration::from_secs(5));
        let deadline = Duration::from_secs(120 + size as u64);
        eprintln!(
            "    namespaces, inputs and operator ready in {:.0} s",
            phase.elapsed().as_secs_f64()
        );
        let figures = scenarios::scale(&cluster, &workload, &operator, deadline)?;
        eprintln!(
            "    all Ready {:.1} s after apply; RSS {:.1} → peak {:.1} MiB; CPU {:.1} s",
            figures.all_ready_seconds,
            figures.rss_idle_mib,
            figures.rss_peak_mib,
            figures.cpu_seconds
        );
        scale_figures.push(figures);
        if last {
            eprintln!(
                "==> steady state: {size} Ready, {} s idle",
                plan.idle_seconds
            );
            let steady = scenarios::steady(
                &cluster,
                &workload,
                &operator,
                Duration::from_secs(plan.idle_seconds),
            )?;
            eprintln!(
                "    {} writes, {} Lease renewals, {:.2} s CPU",
                steady.writes, steady.lease_writes, steady.cpu_seconds
            );
            let edited = plan.storm.min(size);
            eprintln!("==> change storm: {edited} ConfigMaps edited at once");
            let storm = scenarios::storm(&cluster, &workload, &operator, edited, deadline)?;
            eprintln!(
                "    all Ready again in {:.1} s; {} Jobs created",
                storm.all_ready_seconds, storm.jobs_created
            );
            eprintln!("==> operator start with {size} resources present");
            let (operator, start) = scenarios::restart(
                &cluster,
                &operator_bin,
                &workload,
                operator,
                Duration::from_secs(120),
                out.join(format!("operator-{size}-restart.log")),
            )?;
            eprintln!(
                "    first reconcile {:.2} s, all {:.2} s after the process started",
                start.first_reconcile_seconds, start.all_reconciled_seconds
            );
            drop(operator);
            tail = Some((steady, storm, start));
        } else {
            drop(operator);
            workload.delete();
            workload.wait_deleted(Duration::from_secs(180));
        }
    }
    let (steady, storm, start) =
        tail.expect("the last size ran the steady, storm and start phases");

    let results = Results {
        plan,
        started_at: started_at.to_string(),
        machine,
        load_average_at_end: proc::load_average(),
        wall_seconds: began.elapsed().as_secs_f64(),
        measure_seconds: measuring.elapsed().as_secs_f64(),
        runner,
        scale: scale_figures,
        steady,
        storm,
        start,
        notes: notes(),
    };
    let json = out.join("results.json");
    std::fs::write(&json, serde_json::to_string_pretty(&results)?)?;
    let svg = out.join("scale.svg");
    plot::draw(&results.scale, &svg)?;
    print!("{}", table::table(&results));
    println!("wrote {} and {}", json.display(), svg.display());
    Ok(())
}

/// What limits the figures, kept with them.
fn notes() -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        (
            "kubelet",
            format!(
                "the process-kubelet runs at most {} pods at once, each a bwrap sandbox with the \
                 runner and three Atlas processes; other agents' tests share those slots",
                devcluster::kubelet::DEFAULT_MAX_PODS
            ),
        ),
        (
            "operator",
            "default flags (--concurrency 4 per kind and namespace, no Job TTL), leader \
             election on with a Lease of its own"
                .to_string(),
        ),
        (
            "times",
            "from the API server's audit log (microseconds): creation = the create of the \
             AtlasMigration, Job = the operator's create of its Job, Ready = the operator's last \
             status write"
                .to_string(),
        ),
    ])
}

/// A migration directory with its `atlas.sum`, computed as Atlas computes it.
pub fn hashed_dir(files: &[(&str, &str)]) -> Vec<(String, String)> {
    let owned: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(name, content)| (name.to_string(), content.as_bytes().to_vec()))
        .collect();
    let sum = atlas_runner::sum::file(&owned);
    let mut dir: Vec<(String, String)> = files
        .iter()
        .map(|(name, content)| (name.to_string(), content.to_string()))
        .collect();
    dir.push(("atlas.sum".into(), sum));
    dir
}

/// Four hex digits, so that this run's namespaces and Lease are its own.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:04x}", (nanos ^ std::process::id()) & 0xffff)
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
