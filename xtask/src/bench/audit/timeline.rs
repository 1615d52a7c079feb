//! What the audit log's requests say about one run: per resource, when the operator created its
//! Job and when it last wrote its status; the latencies between such times; and the operator's
//! requests counted by kind. Times come from the audit log because it has microseconds (the
//! objects' timestamps have whole seconds). Only this run's namespaces and Lease count: other
//! agents' operators act as the same service account at the same time.

use std::collections::BTreeMap;

use contract::Kind;
use devcluster::operator;
use serde::Serialize;

use super::Request;
use crate::bench::workload::Workload;

/// Percentiles of per-resource latencies, in seconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    fn of(mut seconds: Vec<f64>) -> Latency {
        if seconds.is_empty() {
            return Latency::default();
        }
        seconds.sort_by(f64::total_cmp);
        // Nearest rank: the smallest value with at least p% of the values at or below it.
        let rank =
            |p: f64| seconds[((p / 100.0 * seconds.len() as f64).ceil() as usize).max(1) - 1];
        Latency {
            p50: rank(50.0),
            p99: rank(99.0),
            max: seconds[seconds.len() - 1],
        }
    }
}

/// The operator's requests in this run's namespaces, by verb.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Requests {
    pub by_verb: BTreeMap<String, usize>,
    pub reads: usize,
    pub writes: usize,
    /// Writes to its Lease (leader election), counted apart.
    pub lease_writes: usize,
}

impl Requests {
    pub fn count<'a>(requests: impl Iterator<Item = &'a Request>, workload: &Workload) -> Requests {
        let lease = workload.lease();
        let user = operator::user();
        let mut counted = Requests::default();
        for request in requests.filter(|r| r.user == user) {
            if request.resource == "leases" && request.name == lease {
                if request.is_write() {
                    counted.lease_writes += 1;
                }
            } else if workload.owns(&request.namespace) {
                *counted.by_verb.entry(request.verb.clone()).or_default() += 1;
                if request.is_write() {
                    counted.writes += 1;
                } else {
                    counted.reads += 1;
                }
            }
        }
        counted
    }
}

/// An object by namespace and name.
pub type Key = (String, String);

/// When each object was first the target of a request that `matches`, made by anyone but the
/// operator: the bench's create of a resource or edit of its ConfigMap, which the resource's
/// latencies count from.
pub fn first_requests(
    requests: &[Request],
    matches: impl Fn(&Request) -> bool,
) -> BTreeMap<Key, jiff::Timestamp> {
    let user = operator::user();
    let mut first = BTreeMap::new();
    for r in requests.iter().filter(|r| r.user != user && matches(r)) {
        first
            .entry((r.namespace.clone(), r.name.clone()))
            .or_insert(r.at);
    }
    first
}

/// Per resource: when the operator first created a Job for it, and when it last wrote its
/// status (the write that turned it Ready: a Ready resource gets no more).
pub struct Timeline {
    first_job: BTreeMap<Key, jiff::Timestamp>,
    last_status: BTreeMap<Key, jiff::Timestamp>,
    pub jobs_created: usize,
    pub jobs_deleted: usize,
}

impl Timeline {
    pub fn of(requests: &[Request], workload: &Workload) -> Timeline {
        let user = operator::user();
        let mut timeline = Timeline {
            first_job: BTreeMap::new(),
            last_status: BTreeMap::new(),
            jobs_created: 0,
            jobs_deleted: 0,
        };
        for r in requests
            .iter()
            .filter(|r| r.user == user && workload.owns(&r.namespace))
        {
            match (r.verb.as_str(), r.resource.as_str(), r.subresource.as_str()) {
                ("create", "jobs", "") if r.code == 201 => {
                    timeline.jobs_created += 1;
                    if let Some(owner) = job_owner(&r.name) {
                        timeline
                            .first_job
                            .entry((r.namespace.clone(), owner))
                            .or_insert(r.at);
                    }
                }
                ("delete", "jobs", "") if r.code == 200 => timeline.jobs_deleted += 1,
                ("patch", "atlasmigrations", "status") => {
                    timeline
                        .last_status
                        .insert((r.namespace.clone(), r.name.clone()), r.at);
                }
                _ => {}
            }
        }
        timeline
    }

    /// Per resource of `starts`, from its start to its Job and to its Ready; `last_ready` is
    /// never before `since` (when the phase began).
    pub fn latencies(
        &self,
        starts: &BTreeMap<Key, jiff::Timestamp>,
        since: jiff::Timestamp,
    ) -> Latencies {
        let mut to_job = Vec::new();
        let mut to_ready = Vec::new();
        let mut last_ready = since;
        for (key, at) in starts {
            if let Some(job) = self.first_job.get(key) {
                to_job.push(seconds(*at, *job));
            }
            if let Some(ready) = self.last_status.get(key) {
                to_ready.push(seconds(*at, *ready));
                last_ready = last_ready.max(*ready);
            }
        }
        Latencies {
            ready: to_ready.len(),
            to_job: Latency::of(to_job),
            to_ready: Latency::of(to_ready),
            last_ready,
        }
    }
}

/// What `Timeline::latencies` found.
pub struct Latencies {
    pub to_job: Latency,
    pub to_ready: Latency,
    /// How many of the resources have a status write (the others never turned Ready).
    pub ready: usize,
    pub last_ready: jiff::Timestamp,
}

/// The resource a Job was made for: `atlasmigration-<name>-<hash8>` (names here are short, so
/// never cut).
fn job_owner(job: &str) -> Option<String> {
    let (head, hash) = job.rsplit_once('-')?;
    let name = head.strip_prefix(
        atlas_operator::reconcile::build::job_name(Kind::Migration, "", "").trim_end_matches('-'),
    )?;
    (hash.len() == 8).then(|| name.trim_start_matches('-').to_string())
}

pub fn seconds(from: jiff::Timestamp, to: jiff::Timestamp) -> f64 {
    (to.as_microsecond() - from.as_microsecond()) as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jobs_resource_is_its_name_without_prefix_and_hash() {
        assert_eq!(
            job_owner("atlasmigration-m-0042-f6ed89e0").as_deref(),
            Some("m-0042")
        );
        assert_eq!(job_owner("atlasmigration-m-0042"), None);
        assert_eq!(job_owner("atlasschema-m-0042-f6ed89e0"), None);
    }

    fn at(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + second).unwrap()
    }

    fn key(name: &str) -> Key {
        ("ns".to_string(), name.to_string())
    }

    #[test]
    fn a_start_is_the_first_matching_request_not_by_the_operator() {
        let request = |user: &str, name: &str, code: i64, second: i64| Request {
            verb: "patch".into(),
            resource: "configmaps".into(),
            subresource: String::new(),
            namespace: "ns".into(),
            name: name.into(),
            user: user.into(),
            code,
            at: at(second),
        };
        let operator = operator::user();
        let requests = [
            request(&operator, "a", 200, 1),
            request("admin", "a", 200, 2),
            request("admin", "a", 200, 3),
            request("admin", "b", 409, 4),
        ];
        let starts = first_requests(&requests, |r| r.code == 200);
        assert_eq!(starts, BTreeMap::from([(key("a"), at(2))]));
    }

    #[test]
    fn latencies_count_from_each_start_and_the_last_ready_from_the_phase() {
        let timeline = Timeline {
            first_job: BTreeMap::from([(key("a"), at(2)), (key("b"), at(3))]),
            last_status: BTreeMap::from([(key("a"), at(5))]),
            jobs_created: 2,
            jobs_deleted: 0,
        };
        let starts = BTreeMap::from([(key("a"), at(1)), (key("b"), at(1))]);
        let latencies = timeline.latencies(&starts, at(0));
        assert_eq!(latencies.ready, 1);
        assert_eq!((latencies.to_job.p50, latencies.to_job.max), (1.0, 2.0));
        assert_eq!(latencies.to_ready.max, 4.0);
        assert_eq!(latencies.last_ready, at(5));
        assert_eq!(timeline.latencies(&starts, at(9)).last_ready, at(9));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let latency = Latency::of((1..=100).map(f64::from).collect());
        assert_eq!((latency.p50, latency.p99, latency.max), (50.0, 99.0, 100.0));
        let one = Latency::of(vec![2.5]);
        assert_eq!((one.p50, one.p99, one.max), (2.5, 2.5, 2.5));
        let ten = Latency::of((1..=10).map(f64::from).collect());
        assert_eq!((ten.p50, ten.p99), (5.0, 10.0));
    }
}
