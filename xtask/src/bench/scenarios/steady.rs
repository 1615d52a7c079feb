//! The steady state: with every resource Ready, what the operator still does while left alone.

use std::time::{Duration, Instant};

use anyhow::Result;
use devcluster::cluster::Cluster;
use devcluster::operator;
use serde::Serialize;

use crate::bench::audit::timeline::Requests;
use crate::bench::audit::{AuditLog, Request};
use crate::bench::operator::Operator;
use crate::bench::workload::Workload;

#[derive(Clone, Debug, Serialize)]
pub struct SteadyFigures {
    pub resources: usize,
    pub idle_seconds: f64,
    /// Writes by the operator to anything in its namespaces: the goal is none.
    pub writes: usize,
    /// The first few, to see what they were.
    pub write_examples: Vec<String>,
    /// Renewals of its Lease (leader election), which a leader makes by design.
    pub lease_writes: usize,
    pub reads: usize,
    pub cpu_seconds: f64,
    /// CPU over the idle time, in percent of one core.
    pub cpu_percent: f64,
    pub rss_mib: f64,
}

/// Leaves the operator alone with every resource Ready and counts what it does.
pub fn steady(
    cluster: &Cluster,
    workload: &Workload,
    operator: &Operator,
    idle: Duration,
) -> Result<SteadyFigures> {
    let mut audit = AuditLog::from_now(&cluster.audit_log())?;
    let cpu_before = operator.cpu_seconds()?;
    let started = Instant::now();
    std::thread::sleep(idle);
    let cpu_seconds = operator.cpu_seconds()? - cpu_before;
    let idle_seconds = started.elapsed().as_secs_f64();
    let memory = operator.memory()?;
    let requests = audit.read_new(&workload.needle())?;
    let counted = Requests::count(requests.iter(), workload);
    let user = operator::user();
    let write_examples = requests
        .iter()
        .filter(|r| r.user == user && workload.owns(&r.namespace) && r.is_write())
        .take(10)
        .map(Request::describe)
        .collect();
    Ok(SteadyFigures {
        resources: workload.size,
        idle_seconds,
        writes: counted.writes,
        write_examples,
        lease_writes: counted.lease_writes,
        reads: counted.reads,
        cpu_seconds,
        cpu_percent: 100.0 * cpu_seconds / idle_seconds,
        rss_mib: memory.rss_mib(),
    })
}
