//! The scale phase: how long N AtlasMigrations take from `kubectl apply` to Ready, and what the
//! operator spends (memory, CPU, API requests) on them.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use devcluster::cluster::Cluster;
use serde::Serialize;

use super::SETTLE;
use crate::bench::audit::AuditLog;
use crate::bench::audit::timeline::{Latency, Requests, Timeline, first_requests, seconds};
use crate::bench::operator::Operator;
use crate::bench::wait::wait_all;
use crate::bench::workload::{NAMESPACES, Workload, apply};

#[derive(Clone, Debug, Serialize)]
pub struct ScaleFigures {
    pub resources: usize,
    pub namespaces: usize,
    /// The `kubectl apply` of all resources itself.
    pub apply_seconds: f64,
    /// From the start of `kubectl apply` to the last resource's Ready.
    pub all_ready_seconds: f64,
    /// Per resource, its creation to its Job's creation.
    pub to_job: Latency,
    /// Per resource, its creation to Ready.
    pub to_ready: Latency,
    /// Operator running, ConfigMaps and Secrets present, no AtlasMigration yet.
    pub rss_idle_mib: f64,
    pub rss_peak_mib: f64,
    pub rss_after_mib: f64,
    /// Operator CPU from the apply until all were Ready (and settled).
    pub cpu_seconds: f64,
    pub jobs_created: usize,
    pub requests: Requests,
    pub reads_per_resource: f64,
    pub writes_per_resource: f64,
}

/// Applies the workload's AtlasMigrations and measures until all are Ready.
pub fn scale(
    cluster: &Cluster,
    workload: &Workload,
    operator: &Operator,
    deadline: Duration,
) -> Result<ScaleFigures> {
    let idle = operator.memory()?;
    let mut audit = AuditLog::from_now(&cluster.audit_log())?;
    let cpu_before = operator.cpu_seconds()?;
    let applied_at = jiff::Timestamp::now();
    let started = Instant::now();
    apply(
        cluster,
        &workload.scratch,
        "migrations",
        workload.migrations(),
    )?;
    let apply_seconds = started.elapsed().as_secs_f64();
    wait_all(
        cluster,
        workload,
        operator,
        deadline,
        |row| row.ready == "True",
        "Ready",
    )?;
    std::thread::sleep(SETTLE);
    let after = operator.memory()?;
    let cpu_seconds = operator.cpu_seconds()? - cpu_before;
    let requests = audit.read_new(&workload.needle())?;

    let created = first_requests(&requests, |r| {
        r.resource == "atlasmigrations" && r.subresource.is_empty() && r.code == 201
    });
    let timeline = Timeline::of(&requests, workload);
    let latencies = timeline.latencies(&created, applied_at);
    if created.len() != workload.size || latencies.ready != workload.size {
        bail!(
            "the audit log shows {} of {} creations and {} Ready status writes: is the audit \
             log {} complete?",
            created.len(),
            workload.size,
            latencies.ready,
            cluster.audit_log().display()
        );
    }
    let counted = Requests::count(requests.iter(), workload);
    Ok(ScaleFigures {
        resources: workload.size,
        namespaces: NAMESPACES,
        apply_seconds,
        all_ready_seconds: seconds(applied_at, latencies.last_ready),
        to_job: latencies.to_job,
        to_ready: latencies.to_ready,
        rss_idle_mib: idle.rss_mib(),
        rss_peak_mib: after.peak_mib(),
        rss_after_mib: after.rss_mib(),
        cpu_seconds,
        jobs_created: timeline.jobs_created,
        reads_per_resource: counted.reads as f64 / workload.size as f64,
        writes_per_resource: counted.writes as f64 / workload.size as f64,
        requests: counted,
    })
}
