//! The change storm: many migration directories edited at once, and how long until each resource
//! has applied its new migration.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use devcluster::cluster::Cluster;
use serde::Serialize;

use super::SETTLE;
use crate::bench::audit::AuditLog;
use crate::bench::audit::timeline::{Latency, Requests, Timeline, first_requests, seconds};
use crate::bench::operator::Operator;
use crate::bench::wait::wait_rows;
use crate::bench::workload::{Workload, apply};

#[derive(Clone, Debug, Serialize)]
pub struct StormFigures {
    pub resources: usize,
    pub edited: usize,
    /// From the start of the `kubectl apply` of the edited ConfigMaps to the last Ready.
    pub all_ready_seconds: f64,
    /// Per resource, its ConfigMap's edit to its new Job's creation.
    pub to_job: Latency,
    /// Per resource, its ConfigMap's edit to Ready again.
    pub to_ready: Latency,
    pub jobs_created: usize,
    pub jobs_deleted: usize,
    pub writes: usize,
    pub cpu_seconds: f64,
}

/// Edits `edited` ConfigMaps at once (a second migration file) and waits for each resource to
/// apply it.
pub fn storm(
    cluster: &Cluster,
    workload: &Workload,
    operator: &Operator,
    edited: usize,
    deadline: Duration,
) -> Result<StormFigures> {
    let edited = edited.min(workload.size);
    let keys: BTreeSet<String> = (0..edited)
        .map(|k| format!("{}/{}", workload.namespace_of(k), Workload::name(k)))
        .collect();
    let items = (0..edited).map(|k| workload.configmap(k, true)).collect();
    let mut audit = AuditLog::from_now(&cluster.audit_log())?;
    let cpu_before = operator.cpu_seconds()?;
    let started_at = jiff::Timestamp::now();
    apply(cluster, &workload.scratch, "storm", items)?;
    wait_rows(
        cluster,
        workload,
        operator,
        deadline,
        Some(&keys),
        |row| row.ready == "True" && row.version == "2",
        "Ready at version 2",
    )?;
    std::thread::sleep(SETTLE);
    let cpu_seconds = operator.cpu_seconds()? - cpu_before;
    let requests = audit.read_new(&workload.needle())?;
    // A ConfigMap has the name of the resource it is the directory of.
    let edits = first_requests(&requests, |r| {
        r.resource == "configmaps" && r.verb == "patch" && r.code == 200
    });
    let timeline = Timeline::of(&requests, workload);
    let latencies = timeline.latencies(&edits, started_at);
    let counted = Requests::count(requests.iter(), workload);
    Ok(StormFigures {
        resources: workload.size,
        edited,
        all_ready_seconds: seconds(started_at, latencies.last_ready),
        to_job: latencies.to_job,
        to_ready: latencies.to_ready,
        jobs_created: timeline.jobs_created,
        jobs_deleted: timeline.jobs_deleted,
        writes: counted.writes,
        cpu_seconds,
    })
}
