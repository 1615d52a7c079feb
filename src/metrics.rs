//! Prometheus metrics, registered once: reconciles by kind and outcome and their duration, Jobs
//! created, failures by reason, and resources by Ready state (`atlas_operator_*`); and the series
//! controller-runtime operators export (`controller_runtime_*`), under the same names, labels
//! and buckets, so stock dashboards and alerts for those operators work here. Served on
//! `/metrics` by [`crate::server`].

use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub kind: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub kind: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ReadyLabels {
    pub kind: String,
    /// The Ready condition's status: `True`, `False`, or `Unknown` (no condition yet).
    pub ready: String,
}

/// controller-runtime's label: the controller's name (the lower-case kind, as controller-runtime
/// names a controller built `For` a kind).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerResultLabels {
    pub controller: String,
    /// `success` or `error` (controller-runtime also has `requeue` and `requeue_after`, which
    /// kube's opaque `Action` does not tell apart from success).
    pub result: String,
}

/// One cached resource as the gauges count it: its Ready status and whether `Reconciling` is
/// true.
pub struct Counted {
    pub ready: String,
    pub reconciling: bool,
}

/// Reads one kind's cached resources (a controller's store).
type ReadySource = Box<dyn Fn() -> Vec<Counted> + Send + Sync>;

/// controller-runtime's reconcile time buckets.
const CONTROLLER_RUNTIME_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8,
];

pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<OutcomeLabels, Counter>,
    pub reconcile_duration: Family<KindLabels, Histogram>,
    pub jobs_created: Family<KindLabels, Counter>,
    pub failures: Family<ReasonLabels, Counter>,
    resources: Family<ReadyLabels, Gauge>,
    reconciling: Family<KindLabels, Gauge>,
    ready_sources: Mutex<Vec<(&'static str, ReadySource)>>,
    reconcile_total: Family<ControllerResultLabels, Counter>,
    reconcile_errors: Family<ControllerLabels, Counter>,
    reconcile_time: Family<ControllerLabels, Histogram>,
    active_workers: Family<ControllerLabels, Gauge>,
    max_concurrent: Family<ControllerLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("atlas_operator");
        let reconciles = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles, by kind and outcome (ok, error)",
            reconciles.clone(),
        );
        let reconcile_duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
        });
        registry.register(
            "reconcile_duration_seconds",
            "How long a reconcile took, by kind",
            reconcile_duration.clone(),
        );
        let jobs_created = Family::<KindLabels, Counter>::default();
        registry.register(
            "jobs_created",
            "Apply Jobs created, by kind",
            jobs_created.clone(),
        );
        let failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "failures",
            "Resources that turned Ready=False, by kind and reason",
            failures.clone(),
        );
        let resources = Family::<ReadyLabels, Gauge>::default();
        registry.register(
            "resources",
            "Resources in the operator's cache, by kind and Ready status",
            resources.clone(),
        );
        let reconciling = Family::<KindLabels, Gauge>::default();
        registry.register(
            "resources_reconciling",
            "Resources whose Reconciling condition is True (a Job at work or retrying, or \
             waiting for an object), by kind",
            reconciling.clone(),
        );

        let reconcile_total = Family::<ControllerResultLabels, Counter>::default();
        root.register(
            "controller_runtime_reconcile",
            "Total number of reconciliations per controller",
            reconcile_total.clone(),
        );
        let reconcile_errors = Family::<ControllerLabels, Counter>::default();
        root.register(
            "controller_runtime_reconcile_errors",
            "Total number of reconciliation errors per controller",
            reconcile_errors.clone(),
        );
        let reconcile_time = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(CONTROLLER_RUNTIME_BUCKETS)
        });
        root.register(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            reconcile_time.clone(),
        );
        let active_workers = Family::<ControllerLabels, Gauge>::default();
        root.register(
            "controller_runtime_active_workers",
            "Number of currently used workers per controller",
            active_workers.clone(),
        );
        let max_concurrent = Family::<ControllerLabels, Gauge>::default();
        root.register(
            "controller_runtime_max_concurrent_reconciles",
            "Maximum number of concurrent reconciles per controller",
            max_concurrent.clone(),
        );
        Metrics {
            registry: root,
            reconciles,
            reconcile_duration,
            jobs_created,
            failures,
            resources,
            reconciling,
            ready_sources: Mutex::new(Vec::new()),
            reconcile_total,
            reconcile_errors,
            reconcile_time,
            active_workers,
            max_concurrent,
        }
    }
}

impl Metrics {
    /// Starts timing a reconcile of `kind` (`AtlasMigration`); the duration is recorded, and
    /// the controller-runtime worker count given back, when the guard is dropped.
    pub fn measure(self: &Arc<Self>, kind: &str) -> Measure {
        let controller = ControllerLabels {
            controller: kind.to_lowercase(),
        };
        self.active_workers.get_or_create(&controller).inc();
        Measure {
            metrics: self.clone(),
            kind: kind.into(),
            controller,
            started: Instant::now(),
        }
    }

    /// Counts a reconcile's end in both our series and controller-runtime's.
    pub fn count_reconcile(&self, kind: &str, ok: bool) {
        self.reconciles
            .get_or_create(&OutcomeLabels {
                kind: kind.into(),
                outcome: if ok { "ok" } else { "error" }.into(),
            })
            .inc();
        let controller = kind.to_lowercase();
        self.reconcile_total
            .get_or_create(&ControllerResultLabels {
                controller: controller.clone(),
                result: if ok { "success" } else { "error" }.into(),
            })
            .inc();
        if !ok {
            self.reconcile_errors
                .get_or_create(&ControllerLabels { controller })
                .inc();
        }
    }

    /// The workers a controller of `kind` runs at most (`--concurrency`); with one controller
    /// per namespace, their sum.
    pub fn add_workers(&self, kind: &str, workers: u16) {
        self.max_concurrent
            .get_or_create(&ControllerLabels {
                controller: kind.to_lowercase(),
            })
            .inc_by(i64::from(workers));
    }

    /// Counts `kind`'s resources by Ready status from `source` at every scrape. Reading the
    /// controllers' caches then, rather than tracking each reconcile, keeps the gauge right when
    /// a resource is deleted, which no reconcile sees.
    pub fn count_ready(
        &self,
        kind: &'static str,
        source: impl Fn() -> Vec<Counted> + Send + Sync + 'static,
    ) {
        self.ready_sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((kind, Box::new(source)));
    }

    fn refresh_resources(&self) {
        let sources = self.ready_sources.lock().unwrap_or_else(|e| e.into_inner());
        let mut counts = std::collections::BTreeMap::<ReadyLabels, i64>::new();
        let mut reconciling = std::collections::BTreeMap::<&str, i64>::new();
        for (kind, source) in sources.iter() {
            reconciling.entry(kind).or_default();
            // Every state of a watched kind is reported, zero included, so a dashboard sees a
            // count fall to zero rather than a series vanish.
            for ready in ["True", "False", "Unknown"] {
                counts
                    .entry(ReadyLabels {
                        kind: (*kind).into(),
                        ready: ready.into(),
                    })
                    .or_default();
            }
            for counted in source() {
                *counts
                    .entry(ReadyLabels {
                        kind: (*kind).into(),
                        ready: counted.ready,
                    })
                    .or_default() += 1;
                if counted.reconciling {
                    *reconciling.entry(kind).or_default() += 1;
                }
            }
        }
        self.resources.clear();
        for (labels, count) in counts {
            self.resources.get_or_create(&labels).set(count);
        }
        self.reconciling.clear();
        for (kind, count) in reconciling {
            self.reconciling
                .get_or_create(&KindLabels { kind: kind.into() })
                .set(count);
        }
    }

    pub fn encode(&self) -> String {
        self.refresh_resources();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("encoding metrics into a String cannot fail");
        text
    }
}

/// Records a reconcile's duration on drop, whatever path the reconcile returned by.
pub struct Measure {
    metrics: Arc<Metrics>,
    kind: String,
    controller: ControllerLabels,
    started: Instant,
}

impl Drop for Measure {
    fn drop(&mut self) {
        let took = self.started.elapsed().as_secs_f64();
        self.metrics
            .reconcile_duration
            .get_or_create(&KindLabels {
                kind: self.kind.clone(),
            })
            .observe(took);
        self.metrics
            .reconcile_time
            .get_or_create(&self.controller)
            .observe(took);
        self.metrics
            .active_workers
            .get_or_create(&self.controller)
            .dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_encoded_with_their_labels() {
        let metrics = Arc::new(Metrics::default());
        {
            let _measure = metrics.measure("AtlasMigration");
        }
        metrics.count_reconcile("AtlasMigration", true);
        metrics.count_reconcile("AtlasMigration", false);
        metrics.add_workers("AtlasMigration", 4);
        let text = metrics.encode();
        // controller-runtime's names and labels, which stock dashboards and alerts query.
        for series in [
            "controller_runtime_reconcile_total{controller=\"atlasmigration\",result=\"success\"} 1",
            "controller_runtime_reconcile_total{controller=\"atlasmigration\",result=\"error\"} 1",
            "controller_runtime_reconcile_errors_total{controller=\"atlasmigration\"} 1",
            "controller_runtime_reconcile_time_seconds_count{controller=\"atlasmigration\"} 1",
            "controller_runtime_active_workers{controller=\"atlasmigration\"} 0",
            "controller_runtime_max_concurrent_reconciles{controller=\"atlasmigration\"} 4",
        ] {
            assert!(text.contains(series), "{series} missing:\n{text}");
        }
        assert!(
            text.contains(
                "atlas_operator_reconciles_total{kind=\"AtlasMigration\",outcome=\"ok\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "atlas_operator_reconcile_duration_seconds_count{kind=\"AtlasMigration\"} 1"
            ),
            "{text}"
        );
    }
}
