//! Prometheus metrics, registered once: reconciles by kind and outcome and their duration, Jobs
//! created, failures by reason, and resources by Ready state. Served on `/metrics` by
//! [`crate::server`].

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

/// Reads the Ready statuses of one kind's cached resources (a controller's store).
type ReadySource = Box<dyn Fn() -> Vec<String> + Send + Sync>;

pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<OutcomeLabels, Counter>,
    pub reconcile_duration: Family<KindLabels, Histogram>,
    pub jobs_created: Family<KindLabels, Counter>,
    pub failures: Family<ReasonLabels, Counter>,
    resources: Family<ReadyLabels, Gauge>,
    ready_sources: Mutex<Vec<(&'static str, ReadySource)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("atlas_operator");
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
        Metrics {
            registry,
            reconciles,
            reconcile_duration,
            jobs_created,
            failures,
            resources,
            ready_sources: Mutex::new(Vec::new()),
        }
    }
}

impl Metrics {
    /// Starts timing a reconcile; the duration is recorded when the guard is dropped.
    pub fn measure(self: &Arc<Self>, kind: &str) -> Measure {
        Measure {
            metrics: self.clone(),
            kind: kind.into(),
            started: Instant::now(),
        }
    }

    /// Counts `kind`'s resources by Ready status from `source` at every scrape. Reading the
    /// controllers' caches then, rather than tracking each reconcile, keeps the gauge right when
    /// a resource is deleted, which no reconcile sees.
    pub fn count_ready(
        &self,
        kind: &'static str,
        source: impl Fn() -> Vec<String> + Send + Sync + 'static,
    ) {
        self.ready_sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((kind, Box::new(source)));
    }

    fn refresh_resources(&self) {
        let sources = self.ready_sources.lock().unwrap_or_else(|e| e.into_inner());
        let mut counts = std::collections::BTreeMap::<ReadyLabels, i64>::new();
        for (kind, source) in sources.iter() {
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
            for ready in source() {
                *counts
                    .entry(ReadyLabels {
                        kind: (*kind).into(),
                        ready,
                    })
                    .or_default() += 1;
            }
        }
        self.resources.clear();
        for (labels, count) in counts {
            self.resources.get_or_create(&labels).set(count);
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
    started: Instant,
}

impl Drop for Measure {
    fn drop(&mut self) {
        self.metrics
            .reconcile_duration
            .get_or_create(&KindLabels {
                kind: self.kind.clone(),
            })
            .observe(self.started.elapsed().as_secs_f64());
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
        metrics
            .reconciles
            .get_or_create(&OutcomeLabels {
                kind: "AtlasMigration".into(),
                outcome: "ok".into(),
            })
            .inc();
        let text = metrics.encode();
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
