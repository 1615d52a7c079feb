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
    let totals = cargo_test();
    // The benchmark's smoke run, so its harness never rots: it fails only when it cannot
    // measure, never on a figure's value (docs/performance.md).
    let bench = crate::bench::quick();
    // Leave the machine as we found it: what someone started by hand stays up.
    if started_cluster {
        devcluster::cluster::down()?;
    }
    if started_databases {
        devcluster::db::down()?;
    }
    let totals = totals?;
    if let Err(err) = &bench {
        eprintln!("xtask: the benchmark smoke run failed: {err:#}");
    }
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

#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

/// `cargo test --workspace --no-fail-fast` (unit, integration and doc tests: every binary runs,
/// so one failure does not hide the others), echoing its output and adding up
/// its `test result:` lines.
fn cargo_test() -> Result<Totals> {
    eprintln!("==> tests: cargo test --workspace --no-fail-fast");
    let mut child = Command::new("cargo")
        .args(["test", "--workspace", "--no-fail-fast"])
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
