//! Request-level tests of one reconcile: a mock API server (tower-test) answers and records
//! every request, so each test states exactly what the reconcile asked of the API server. The
//! Job and pod caches are filled by hand, as the watches would leave them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::{Client, Resource};
use serde_json::{Value, json};

use super::dereference::Dereferenced;
use super::*;
use crate::api::{AtlasMigration, AtlasSchema};

/// One request the reconcile made.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    body: Value,
}

impl Seen {
    fn is(&self, method: &str, path_end: &str) -> bool {
        self.method == method && self.path.ends_with(path_end)
    }
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// A mock API server answering with `respond(request) -> (status code, body)`.
fn api_server(respond: impl Fn(&Seen) -> (u16, Value) + Send + 'static) -> (Client, Log) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let log: Log = Arc::default();
    let seen = log.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let request = Seen {
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            let (code, answer) = respond(&request);
            seen.lock().unwrap().push(request);
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            );
        }
    });
    (Client::new(service, "default"), log)
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": reason, "reason": reason, "code": code})
}

/// The answers of an API server that accepts every write (echoing it) and has no ConfigMaps;
/// a status patch answers with `resource` and the patched status.
fn accepting(resource: &impl serde::Serialize) -> impl Fn(&Seen) -> (u16, Value) + Send + 'static {
    let resource = serde_json::to_value(resource).unwrap();
    move |request| answer(&resource, request)
}

fn answer(resource: &Value, request: &Seen) -> (u16, Value) {
    match request.method.as_str() {
        "POST" => (201, request.body.clone()),
        "GET" if request.path.ends_with("/configmaps") => (
            200,
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                   "metadata": {}, "items": []}),
        ),
        "GET" => (404, status(404, "NotFound")),
        "PATCH" => {
            let mut patched = resource.clone();
            patched["status"] = request.body["status"].clone();
            (200, patched)
        }
        _ => (405, status(405, "MethodNotAllowed")),
    }
}

fn context(client: Client, jobs: &[Job], pods: &[Pod]) -> ControllerContext {
    let metrics = Arc::new(crate::metrics::Metrics::default());
    ControllerContext {
        shared: Arc::new(Context::new(client, JobSettings::default(), metrics)),
        cache: crate::cache::Cache::listed(jobs, pods),
    }
}

fn metadata(name: &str) -> Value {
    json!({"name": name, "namespace": "team-a", "uid": format!("uid-{name}"), "generation": 1})
}

/// An AtlasMigration with its directory inline: dereferencing it reads nothing.
fn inline_migration() -> AtlasMigration {
    serde_json::from_value(json!({
        "apiVersion": "db.atlasgo.io/v1alpha1", "kind": "AtlasMigration",
        "metadata": metadata("app"),
        "spec": {"url": "postgres://app@db:5432/app", "dir": {"local": {
            "1.sql": "create table t (id int);\n",
            "atlas.sum": "h1:x\n1.sql h1:y\n"}}}
    }))
    .unwrap()
}

/// Dispatches requests made from another task, so the mock server's task runs meanwhile.
async fn reconcile_once<K: AtlasResource>(resource: K, ctx: ControllerContext) -> Action {
    tokio::time::timeout(Duration::from_secs(5), reconcile_resource(&resource, &ctx))
        .await
        .expect("the reconcile finishes")
        .expect("the reconcile succeeds")
}

#[tokio::test]
async fn ready_for_the_desired_hash_reads_and_writes_nothing() {
    let mut resource = inline_migration();
    let hash = Dereferenced::new(&resource, Default::default()).hash;
    resource.status = serde_json::from_value(json!({
        "observed_hash": hash, "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Applied", "message": "",
                        "lastTransitionTime": "2026-12-01T00:00:00Z"}]
    }))
    .unwrap();
    let (client, log) = api_server(accepting(&resource));
    let action = reconcile_once(resource, context(client, &[], &[])).await;
    assert_eq!(action, Action::await_change());
    assert!(log.lock().unwrap().is_empty(), "{:?}", log.lock().unwrap());
}

#[tokio::test]
async fn a_job_that_exists_but_is_not_cached_yet_is_left_to_its_watch_event() {
    // Another reconcile (or a previous operator) created the Job: 409 on create.
    let resource = serde_json::to_value(inline_migration()).unwrap();
    let (client, log) = api_server(move |request| {
        if request.is("POST", "/jobs") {
            (409, status(409, "AlreadyExists"))
        } else {
            answer(&resource, request)
        }
    });
    let action = reconcile_once(inline_migration(), context(client, &[], &[])).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(1)));
    let log = log.lock().unwrap();
    let asked: Vec<_> = log
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    // The inputs ConfigMap, then the Job; no status write, no event, no clean-up.
    assert_eq!(
        asked,
        [
            ("POST", "/api/v1/namespaces/team-a/configmaps"),
            ("POST", "/apis/batch/v1/namespaces/team-a/jobs"),
        ],
        "{log:?}"
    );
}

#[tokio::test]
async fn a_missing_configmap_is_reported_and_waited_for() {
    let resource: AtlasMigration = serde_json::from_value(json!({
        "apiVersion": "db.atlasgo.io/v1alpha1", "kind": "AtlasMigration",
        "metadata": metadata("app"),
        "spec": {"url": "postgres://app@db:5432/app", "dir": {"configMapRef": {"name": "migrations"}}}
    }))
    .unwrap();
    let (client, log) = api_server(accepting(&resource));
    let action = reconcile_once(resource, context(client, &[], &[])).await;
    assert_eq!(action, Action::requeue(RESYNC_WAITING));
    let log = log.lock().unwrap();
    assert!(log[0].is("GET", "/configmaps/migrations"), "{log:?}");
    let patch = log
        .iter()
        .find(|r| r.is("PATCH", "/atlasmigrations/app/status"))
        .unwrap_or_else(|| panic!("no status write: {log:?}"));
    let ready = &patch.body["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "ReadingMigrationData");
    assert_eq!(ready["message"], "ConfigMap migrations not found");
    let event = log
        .iter()
        .find(|r| r.is("POST", "/events"))
        .unwrap_or_else(|| panic!("no event: {log:?}"));
    assert_eq!(event.body["reason"], "ReadingMigrationData");
    assert!(
        !log.iter().any(|r| r.path.contains("/jobs")),
        "no Job for an incomplete resource: {log:?}"
    );
}

/// A Job the API server refuses (a quota, an admission policy) is shown in the status with the
/// API server's message and looked at again, instead of only retried in the operator's log.
#[tokio::test]
async fn a_job_the_api_server_refuses_is_reported() {
    let resource: AtlasMigration = serde_json::from_value(json!({
        "apiVersion": "db.atlasgo.io/v1alpha1", "kind": "AtlasMigration",
        "metadata": metadata("app"),
        "spec": {"urlFrom": {"secretKeyRef": {"name": "db", "key": "url"}},
                 "dir": {"local": {"1.sql": "create table t (id int);\n",
                                   "atlas.sum": "h1:x\n1.sql h1:y\n"}}}
    }))
    .unwrap();
    let echo = serde_json::to_value(&resource).unwrap();
    let (client, log) = api_server(move |request| {
        if request.is("POST", "/jobs") {
            let mut refused = status(403, "Forbidden");
            refused["message"] = json!(
                "jobs \"x\" is forbidden: exceeded quota: compute, requested: count/jobs.batch=1"
            );
            (403, refused)
        } else {
            answer(&echo, request)
        }
    });
    let action = reconcile_once(resource, context(client, &[], &[])).await;
    assert_eq!(action, Action::requeue(RESYNC_WAITING));
    let log = log.lock().unwrap();
    let patch = log
        .iter()
        .find(|r| r.is("PATCH", "/atlasmigrations/app/status"))
        .unwrap_or_else(|| panic!("no status write: {log:?}"));
    let condition = |type_: &str| {
        patch.body["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == type_)
            .unwrap()
            .clone()
    };
    assert_eq!(condition("Ready")["status"], "False");
    assert_eq!(condition("Ready")["reason"], "Migrating");
    assert!(
        condition("Ready")["message"]
            .as_str()
            .unwrap()
            .contains("exceeded quota"),
        "{patch:?}"
    );
    assert_eq!(condition("Reconciling")["status"], "True");
    assert!(log.iter().any(|r| r.is("POST", "/events")), "{log:?}");
}

/// A ConfigMap the watch has seen unchanged since it was read is not read again: only the first
/// of two reconciles GETs it.
#[tokio::test]
async fn an_unchanged_configmap_is_read_once() {
    let resource: AtlasMigration = serde_json::from_value(json!({
        "apiVersion": "db.atlasgo.io/v1alpha1", "kind": "AtlasMigration",
        "metadata": metadata("app"),
        "spec": {"urlFrom": {"secretKeyRef": {"name": "db", "key": "url"}},
                 "dir": {"configMapRef": {"name": "migrations"}}}
    }))
    .unwrap();
    let configmap: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "migrations", "namespace": "team-a", "resourceVersion": "7"},
        "data": {"1.sql": "create table t (id int);\n", "atlas.sum": "h1:x\n1.sql h1:y\n"}
    }))
    .unwrap();
    let served = serde_json::to_value(&configmap).unwrap();
    let echo = serde_json::to_value(&resource).unwrap();
    let (client, log) = api_server(move |request| {
        if request.is("GET", "/configmaps/migrations") {
            (200, served.clone())
        } else {
            answer(&echo, request)
        }
    });
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let ctx = ControllerContext {
        shared: Arc::new(Context::new(client, JobSettings::default(), metrics)),
        cache: crate::cache::Cache::listed_with(&[], &[], &[configmap]),
    };
    let reads = || {
        log.lock()
            .unwrap()
            .iter()
            .filter(|r| r.is("GET", "/configmaps/migrations"))
            .count()
    };
    tokio::time::timeout(Duration::from_secs(5), reconcile_resource(&resource, &ctx))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reads(), 1);
    tokio::time::timeout(Duration::from_secs(5), reconcile_resource(&resource, &ctx))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reads(), 1, "{:?}", log.lock().unwrap());
}

#[tokio::test]
async fn the_driver_an_earlier_job_found_brings_a_dev_database_in_the_next_job() {
    // The URL is in a Secret the operator does not read: the first Job of this hash reported
    // the driver, so this reconcile's Job is the `-dev` one with a MySQL sidecar.
    let resource: AtlasSchema = serde_json::from_value(json!({
        "apiVersion": "db.atlasgo.io/v1alpha1", "kind": "AtlasSchema",
        "metadata": metadata("shop"),
        "spec": {"urlFrom": {"secretKeyRef": {"name": "db", "key": "url"}},
                 "schema": {"sql": "create table t (id int);\n"}}
    }))
    .unwrap();
    let hash = Dereferenced::new(&resource, Default::default()).hash;
    let first = build::job_name(contract::Kind::Schema, "shop", &hash[..8]);
    let owner = resource.controller_owner_ref(&()).unwrap();
    let labels = json!({"job-name": first, build::LABEL_HASH: &hash[..8]});
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": first, "namespace": "team-a", "labels": labels,
                     "ownerReferences": [owner]},
        "status": {"conditions": [{"type": "Complete", "status": "True"}]}
    }))
    .unwrap();
    let found = json!({"version": contract::CONTRACT_VERSION, "outcome": "needs-dev-database",
                       "reason": "GettingDevDB", "message": "", "devDriver": "mysql",
                       "durationMs": 5});
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": format!("{first}-x"), "namespace": "team-a", "labels": labels},
        "status": {"containerStatuses": [{"name": "runner", "image": "", "imageID": "",
            "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "message": found.to_string()}}}]}
    }))
    .unwrap();
    let (client, log) = api_server(accepting(&resource));
    let action = reconcile_once(resource, context(client, &[job], &[pod])).await;
    // No pod yet: looked at again in a few seconds, in case the API server refuses it.
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(
            observe::POD_CREATE_GRACE_SECONDS as u64
        ))
    );
    let log = log.lock().unwrap();
    let created = log
        .iter()
        .find(|r| r.is("POST", "/jobs"))
        .unwrap_or_else(|| panic!("no Job: {log:?}"));
    assert_eq!(created.body["metadata"]["name"], format!("{first}-dev"));
    let sidecar = &created.body["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(sidecar["name"], build::DEV_CONTAINER);
    assert_eq!(sidecar["restartPolicy"], "Always");
    // The first Job is of the same hash: kept, not deleted as an older one.
    assert!(!log.iter().any(|r| r.method == "DELETE"), "{log:?}");
}

/// A schema Job whose Atlas build left views and functions out: Ready=True (the tables were
/// applied), a Warning condition naming them, and a Warning event; nothing else is written.
#[tokio::test]
async fn objects_the_atlas_build_left_out_are_a_warning_condition_and_event() {
    let resource: AtlasSchema = serde_json::from_value(json!({
        "apiVersion": "db.atlasgo.io/v1alpha1", "kind": "AtlasSchema",
        "metadata": metadata("shop"),
        "spec": {"urlFrom": {"secretKeyRef": {"name": "db", "key": "url"}},
                 "devURLFrom": {"secretKeyRef": {"name": "db", "key": "dev"}},
                 "schema": {"sql": "create table t (id int);\ncreate view v as select id from t;\n"}}
    }))
    .unwrap();
    let hash = Dereferenced::new(&resource, Default::default()).hash;
    let name = build::job_name(contract::Kind::Schema, "shop", &hash[..8]);
    let owner = resource.controller_owner_ref(&()).unwrap();
    let labels = json!({"job-name": name, build::LABEL_HASH: &hash[..8]});
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "team-a", "labels": labels,
                     "ownerReferences": [owner]},
        "status": {"conditions": [{"type": "Complete", "status": "True"}]}
    }))
    .unwrap();
    let result = json!({"version": contract::CONTRACT_VERSION, "outcome": "applied",
                        "reason": "Applied", "message": "the schema has been applied (1 statements)",
                        "statementsApplied": 1, "durationMs": 5,
                        "unmanaged": ["view public.v", "function public.total(integer)"]});
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-x"), "namespace": "team-a", "labels": labels},
        "status": {"containerStatuses": [{"name": "runner", "image": "", "imageID": "",
            "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "message": result.to_string()}}}]}
    }))
    .unwrap();
    let (client, log) = api_server(accepting(&resource));
    let action = reconcile_once(resource, context(client, &[job], &[pod])).await;
    assert_eq!(action, Action::await_change());
    let log = log.lock().unwrap();
    let patch = log
        .iter()
        .find(|r| r.is("PATCH", "/atlasschemas/shop/status"))
        .unwrap_or_else(|| panic!("no status write: {log:?}"));
    let condition = |type_: &str| {
        patch.body["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == type_)
            .unwrap_or_else(|| panic!("no {type_}: {patch:?}"))
            .clone()
    };
    assert_eq!(condition("Ready")["status"], "True");
    assert_eq!(condition("Warning")["status"], "True");
    assert_eq!(condition("Warning")["reason"], "UnmanagedObjects");
    let warning = condition("Warning")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        warning.contains("view public.v, function public.total(integer)"),
        "{warning}"
    );
    let events: Vec<&Seen> = log.iter().filter(|r| r.is("POST", "/events")).collect();
    let warned = events
        .iter()
        .find(|e| e.body["reason"] == "UnmanagedObjects")
        .unwrap_or_else(|| panic!("no UnmanagedObjects event: {events:?}"));
    assert_eq!(warned.body["type"], "Warning");
    assert_eq!(warned.body["note"], warning);
    assert!(
        events.iter().any(|e| e.body["reason"] == "Applied"),
        "{events:?}"
    );
}
