//! The operator process of a run: it watches only the workload's namespaces, so its Lease (named
//! after them) is its own, and it logs JSON, which the start figure is read from. Its log is kept
//! after it stops, for reading afterwards.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use devcluster::cluster::Cluster;
use devcluster::operator::OperatorProcess;
use serde_json::Value;

use super::proc::{self, Memory};
use super::workload::Workload;

/// The operator of this run, with the time it was started.
pub struct Operator {
    process: Option<OperatorProcess>,
    pub started: jiff::Timestamp,
    keep_log: PathBuf,
}

impl Operator {
    pub fn start(
        cluster: &Cluster,
        binary: &Path,
        workload: &Workload,
        keep_log: PathBuf,
    ) -> Result<Operator> {
        let started = jiff::Timestamp::now();
        let process = OperatorProcess::start_with(
            cluster,
            binary,
            &workload.namespace_refs(),
            &["--log-format", "json"],
        )?;
        Ok(Operator {
            process: Some(process),
            started,
            keep_log,
        })
    }

    fn process(&self) -> &OperatorProcess {
        self.process.as_ref().expect("running until dropped")
    }

    pub fn pid(&self) -> u32 {
        self.process().pid()
    }

    pub fn memory(&self) -> Result<Memory> {
        proc::memory(self.pid()).with_context(|| {
            format!(
                "the operator (pid {}) is gone; its log:\n{}",
                self.pid(),
                tail(&self.process().log(), 40)
            )
        })
    }

    pub fn cpu_seconds(&self) -> Result<f64> {
        proc::cpu_seconds(self.pid()).context("the operator is gone")
    }

    /// Waits for the Lease: from then on the controllers run.
    pub fn wait_leading(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self
                .process()
                .log()
                .contains("leading: starting the controllers")
            {
                return Ok(());
            }
            self.memory()?;
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "the operator did not get its Lease within {limit:?}; its log:\n{}",
            tail(&self.process().log(), 40)
        )
    }

    /// `(time, object)` of every `reconciled` line of its log (debug level, JSON format).
    pub fn reconciled(&self) -> Vec<(jiff::Timestamp, String)> {
        self.process()
            .log()
            .lines()
            .filter(|line| line.contains("\"reconciled\""))
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter_map(|line| {
                Some((
                    line["timestamp"].as_str()?.parse().ok()?,
                    line["fields"]["object"].as_str()?.to_string(),
                ))
            })
            .collect()
    }

    pub fn log_tail(&self) -> String {
        tail(&self.process().log(), 40)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(process) = self.process.take() {
            // OperatorProcess removes its log when dropped: keep a copy to read afterwards.
            let _ = std::fs::copy(process.log_path(), &self.keep_log);
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
