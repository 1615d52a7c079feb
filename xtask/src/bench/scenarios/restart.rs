//! The operator's start with every resource present: how long a new process takes to look at all
//! of them again, and that it writes nothing while doing so.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use devcluster::cluster::Cluster;
use devcluster::operator;
use serde::Serialize;

use super::SETTLE;
use crate::bench::audit::AuditLog;
use crate::bench::audit::timeline::{Requests, seconds};
use crate::bench::operator::Operator;
use crate::bench::workload::{Workload, kubectl};

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
