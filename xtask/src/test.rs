//! `cargo xtask test`: everything CI checks, in the order that fails fastest.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::steps::step;
use crate::workspace_root;

pub fn run() -> Result<()> {
    step("format", "cargo", &["fmt", "--all", "--", "--check"])?;
    step(
        "clippy",
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    crate::crds::run(true)?;

    // The real parts the integration tests run against.
    devcluster::packages::ensure()?;
    crate::tools::run()?;
    let started_databases = !matches!(devcluster::db::status(), devcluster::db::Status::Up(_));
    devcluster::db::up()?;
    let started_cluster = !matches!(
        devcluster::cluster::status(),
        devcluster::cluster::Status::Up(_)
    );
    devcluster::cluster::up()?;
    // The safety corpus (runner/tests/safety_corpus.rs) writes its counts here; a stale file
    // from an earlier run must not stand in for this one's.
    let corpus_counts = devcluster::target_dir().join("tmp/safety-corpus");
    let _ = std::fs::remove_dir_all(&corpus_counts);
    let bulk = cargo_test(&["--workspace", "--no-fail-fast"]);
    // The benchmark's smoke run, so its harness never rots: it fails only when it cannot
    // measure, never on a figure's value (docs/performance.md).
    let bench = crate::bench::quick();
    // Last, as it replaces the cluster's node: the tests in real containers.
    let real = real_node_tier();
    // Leave the machine as we found it: what someone started by hand stays up (with the node
    // it had: the tier ends with a real one).
    if started_cluster || real.ran {
        devcluster::cluster::down()?;
    }
    if !started_cluster && real.ran {
        devcluster::cluster::up()?;
    }
    if started_databases {
        devcluster::db::down()?;
    }
    let mut totals = bulk?;
    if let Some(tier) = real.totals {
        let tier = tier?;
        // The tier's tests are `#[ignore]`d in the bulk run, so they were counted as skipped
        // there: each one that ran now counts once, as passed or failed.
        totals.ignored = totals.ignored.saturating_sub(tier.passed + tier.failed);
        totals.passed += tier.passed;
        totals.failed += tier.failed;
    }
    if let Err(err) = &bench {
        eprintln!("xtask: the benchmark smoke run failed: {err:#}");
    }
    print_corpus_counts(&corpus_counts);
    // One closing line for the whole run: cargo prints one per test binary, and the last of
    // those (often a doc-test binary with nothing in it) says nothing about the run.
    println!(
        "summary: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    if totals.failed > 0 {
        bail!("{} tests failed", totals.failed);
    }
    bench.context("cargo xtask bench --quick")?;
    if totals.passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

/// The safety corpus's counts per engine (blocked, safe applied, unchanged when blocked), or
/// that it did not write them.
fn print_corpus_counts(dir: &std::path::Path) {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default();
    files.sort();
    if files.is_empty() {
        println!("safety corpus: no counts written (did runner/tests/safety_corpus.rs run?)");
    }
    for file in files {
        if let Ok(text) = std::fs::read_to_string(&file) {
            print!("{text}");
        }
    }
}

#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

/// What the real-node tier did: nothing where the machine cannot run containers (its tests
/// then stay counted as skipped), else the totals of its run.
struct Tier {
    ran: bool,
    totals: Option<Result<Totals>>,
}

/// The tests that need a real kubelet and container runtime, `#[ignore]`d in the bulk run as
/// they replace its cluster: every package's `tests/real_node.rs`, one after the other.
fn real_node_tier() -> Tier {
    if let Err(reason) = devcluster::cluster::real_node::can_run_containers() {
        eprintln!("==> real-node tier skipped: {reason}");
        return Tier {
            ran: false,
            totals: None,
        };
    }
    let started = std::time::Instant::now();
    let totals = cargo_test(&[
        "--workspace",
        "--no-fail-fast",
        "--test",
        "real_node",
        "--",
        "--ignored",
        "--test-threads=1",
    ]);
    eprintln!(
        "==> real-node tier: {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Tier {
        ran: true,
        totals: Some(totals),
    }
}

/// `cargo test <args>` (with `--workspace --no-fail-fast`: unit, integration and doc tests,
/// every binary runs, so one failure does not hide the others), echoing its output and adding
/// up its `test result:` lines.
fn cargo_test(args: &[&str]) -> Result<Totals> {
    eprintln!("==> tests: cargo test {}", args.join(" "));
    let mut child = Command::new("cargo")
        .arg("test")
        .args(args)
        .current_dir(workspace_root())
        .stdout(Stdio::piped())
        .spawn()
        .context("could not start cargo test")?;
    let mut totals = Totals::default();
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(result) = line.strip_prefix("test result: ") {
            for part in result.split([';', '.']) {
                let mut words = part.split_whitespace();
                if let (Some(count), Some(what)) = (words.next(), words.next()) {
                    let count: u64 = count.parse().unwrap_or(0);
                    match what {
                        "passed" => totals.passed += count,
                        "failed" => totals.failed += count,
                        "ignored" => totals.ignored += count,
                        _ => {}
                    }
                }
            }
        }
    }
    let status = child.wait()?;
    if !status.success() && totals.failed == 0 {
        bail!("cargo test failed ({status}) before any test failed: see the output above");
    }
    Ok(totals)
}
