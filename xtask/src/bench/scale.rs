//! The operator under load on the shared local cluster: N AtlasMigrations across 10 namespaces of
//! this run, each with its own migration directory (a ConfigMap) and its own SQLite file, applied
//! by an operator process of this run that watches only those namespaces and holds a Lease of its
//! own. Times come from the audit log (microseconds; the objects' timestamps have whole seconds),
//! counted only for this run's namespaces and Lease: other agents' operators act as the same
//! service account at the same time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use devcluster::cluster::Cluster;
use devcluster::operator;
use serde::Serialize;

use super::audit::timeline::{Latency, Requests, Timeline, seconds};
use super::audit::{AuditLog, Request};
use super::operator::Operator;
use super::wait::{wait_all, wait_rows};
use super::workload::{NAMESPACES, Workload, apply, kubectl};

/// Writes of a finished apply (the last event, the Job's final status) still land for a moment
/// after the resource turns Ready.
const SETTLE: Duration = Duration::from_secs(3);

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

    let user = operator::user();
    let mut created: BTreeMap<(String, String), jiff::Timestamp> = BTreeMap::new();
    for r in requests.iter().filter(|r| {
        r.user != user
            && r.resource == "atlasmigrations"
            && r.subresource.is_empty()
            && r.code == 201
    }) {
        created
            .entry((r.namespace.clone(), r.name.clone()))
            .or_insert(r.at);
    }
    let timeline = Timeline::of(&requests, workload);
    let mut to_job = Vec::new();
    let mut to_ready = Vec::new();
    let mut last_ready = applied_at;
    for (key, at) in &created {
        if let Some(job) = timeline.first_job.get(key) {
            to_job.push(seconds(*at, *job));
        }
        if let Some(ready) = timeline.last_status.get(key) {
            to_ready.push(seconds(*at, *ready));
            last_ready = last_ready.max(*ready);
        }
    }
    if created.len() != workload.size || to_ready.len() != workload.size {
        bail!(
            "the audit log shows {} of {} creations and {} Ready status writes: is the audit \
             log {} complete?",
            created.len(),
            workload.size,
            to_ready.len(),
            cluster.audit_log().display()
        );
    }
    let counted = Requests::count(requests.iter(), workload);
    Ok(ScaleFigures {
        resources: workload.size,
        namespaces: NAMESPACES,
        apply_seconds,
        all_ready_seconds: seconds(applied_at, last_ready),
        to_job: Latency::of(to_job),
        to_ready: Latency::of(to_ready),
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
    let user = operator::user();
    let mut edits: BTreeMap<(String, String), jiff::Timestamp> = BTreeMap::new();
    for r in requests.iter().filter(|r| {
        r.user != user && r.resource == "configmaps" && r.verb == "patch" && r.code == 200
    }) {
        edits
            .entry((r.namespace.clone(), r.name.clone()))
            .or_insert(r.at);
    }
    let timeline = Timeline::of(&requests, workload);
    let mut to_job = Vec::new();
    let mut to_ready = Vec::new();
    let mut last = started_at;
    for (key, at) in &edits {
        if let Some(job) = timeline.first_job.get(key) {
            to_job.push(seconds(*at, *job));
        }
        if let Some(ready) = timeline.last_status.get(key) {
            to_ready.push(seconds(*at, *ready));
            last = last.max(*ready);
        }
    }
    let counted = Requests::count(requests.iter(), workload);
    Ok(StormFigures {
        resources: workload.size,
        edited,
        all_ready_seconds: seconds(started_at, last),
        to_job: Latency::of(to_job),
        to_ready: Latency::of(to_ready),
        jobs_created: timeline.jobs_created,
        jobs_deleted: timeline.jobs_deleted,
        writes: counted.writes,
        cpu_seconds,
    })
}

#[derive(Clone, Debug, Serialize)]
pub struct StartFigures {
    pub resources: usize,
    /// Process start to its first `reconciled` (Lease, lists and watches included).
    pub first_reconcile_seconds: f64,
    /// Process start to every resource reconciled once.
    pub all_reconciled_seconds: f64,
    /// Writes to its namespaces while it looked at everything again: all was Ready, so none.
    pub writes: usize,
    pub cpu_seconds: f64,
    pub rss_mib: f64,
    pub rss_peak_mib: f64,
}

/// Stops `previous`, frees its Lease (a killed leader keeps it until it expires) and starts a
/// new operator with every resource present: how long until it has looked at all of them.
pub fn restart(
    cluster: &Cluster,
    binary: &Path,
    workload: &Workload,
    previous: Operator,
    deadline: Duration,
    keep_log: PathBuf,
) -> Result<(Operator, StartFigures)> {
    drop(previous);
    kubectl(
        cluster,
        &[
            "-n",
            operator::NAMESPACE,
            "delete",
            "lease",
            &workload.lease(),
            "--ignore-not-found",
        ],
        Duration::from_secs(60),
    )?;
    let mut audit = AuditLog::from_now(&cluster.audit_log())?;
    let operator = Operator::start(cluster, binary, workload, keep_log)?;
    let limit = Instant::now() + deadline;
    let (first, last) = loop {
        let mut reconciled = operator.reconciled();
        reconciled.sort();
        // When the last resource was first looked at (later lines are reconciles again).
        let mut seen = BTreeSet::new();
        let mut all_at = None;
        for (at, object) in &reconciled {
            if object.starts_with("AtlasMigration") && seen.insert(object.as_str()) {
                all_at = Some(*at);
            }
        }
        if seen.len() >= workload.size
            && let (Some((first, _)), Some(last)) = (reconciled.first(), all_at)
        {
            break (*first, last);
        }
        if Instant::now() > limit {
            bail!(
                "the restarted operator reconciled {} of {} resources in {deadline:?}; its log \
                 ends:\n{}",
                seen.len(),
                workload.size,
                operator.log_tail()
            );
        }
        operator.memory()?;
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(SETTLE);
    let memory = operator.memory()?;
    let cpu_seconds = operator.cpu_seconds()?;
    let requests = audit.read_new(&workload.needle())?;
    let counted = Requests::count(requests.iter(), workload);
    let figures = StartFigures {
        resources: workload.size,
        first_reconcile_seconds: seconds(operator.started, first),
        all_reconciled_seconds: seconds(operator.started, last),
        writes: counted.writes,
        cpu_seconds,
        rss_mib: memory.rss_mib(),
        rss_peak_mib: memory.peak_mib(),
    };
    Ok((operator, figures))
}
