//! Waiting for the workload's AtlasMigrations to reach a state, as `kubectl get` shows their
//! conditions. It only decides when a phase may stop: the figures' times come from the audit log,
//! not from when a poll happened to see a change.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use devcluster::cluster::Cluster;

use super::operator::Operator;
use super::workload::{Workload, kubectl};

/// One resource as `kubectl get` shows it.
pub struct Row {
    pub key: String,
    pub ready: String,
    pub reason: String,
    pub stalled: String,
    pub version: String,
}

fn rows(cluster: &Cluster, workload: &Workload) -> Result<Vec<Row>> {
    let jsonpath = "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}{\"\\t\"}\
        {.status.conditions[?(@.type==\"Ready\")].status}{\"\\t\"}\
        {.status.conditions[?(@.type==\"Ready\")].reason}{\"\\t\"}\
        {.status.conditions[?(@.type==\"Stalled\")].status}{\"\\t\"}\
        {.status.lastAppliedVersion}{\"\\n\"}{end}";
    let out = kubectl(
        cluster,
        &[
            "get",
            "atlasmigrations",
            "-A",
            "-l",
            &workload.selector(),
            "-o",
            jsonpath,
        ],
        Duration::from_secs(60),
    )?;
    Ok(out
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let mut parts = line.split('\t').map(str::to_string);
            let mut next = || parts.next().unwrap_or_default();
            Row {
                key: next(),
                ready: next(),
                reason: next(),
                stalled: next(),
                version: next(),
            }
        })
        .collect())
}

/// Polls until `done` holds for every resource of `keys` (all of the workload's when None);
/// fails at once on a Stalled resource (retrying cannot help it) and at the deadline.
pub fn wait_rows(
    cluster: &Cluster,
    workload: &Workload,
    operator: &Operator,
    deadline: Duration,
    keys: Option<&BTreeSet<String>>,
    done: impl Fn(&Row) -> bool,
    what: &str,
) -> Result<()> {
    let expected = keys.map_or(workload.size, BTreeSet::len);
    let started = Instant::now();
    let mut last_report = Instant::now();
    // Listing 1,000 objects costs the API server too: poll less often the more there are.
    let poll = Duration::from_millis(if workload.size > 100 { 2000 } else { 500 });
    loop {
        let rows = rows(cluster, workload)?;
        let relevant: Vec<&Row> = rows
            .iter()
            .filter(|row| keys.is_none_or(|keys| keys.contains(&row.key)))
            .collect();
        let finished = relevant.iter().filter(|row| done(row)).count();
        if finished == expected {
            return Ok(());
        }
        if let Some(stalled) = relevant.iter().find(|row| row.stalled == "True") {
            bail!(
                "{} is Stalled ({}); the operator's log ends:\n{}",
                stalled.key,
                stalled.reason,
                operator.log_tail()
            );
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
            for row in relevant.iter().filter(|row| !done(row)) {
                *reasons.entry(row.reason.as_str()).or_default() += 1;
            }
            eprintln!(
                "    {:>5.0}s: {finished}/{expected} {what}; the others: {reasons:?}",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        if started.elapsed() > deadline {
            bail!(
                "only {finished} of {expected} resources were {what} after {deadline:?}; the \
                 operator's log ends:\n{}",
                operator.log_tail()
            );
        }
        operator.memory()?;
        std::thread::sleep(poll);
    }
}

pub fn wait_all(
    cluster: &Cluster,
    workload: &Workload,
    operator: &Operator,
    deadline: Duration,
    done: impl Fn(&Row) -> bool,
    what: &str,
) -> Result<()> {
    wait_rows(cluster, workload, operator, deadline, None, done, what)
}
