//! What the end-to-end tests on the local cluster share: kubectl, the operator process, polling
//! an object's status, and the seed's migration.

use std::path::Path;
use std::time::{Duration, Instant};

use devcluster::cluster::{self, Cluster, TestNamespace};
use devcluster::db::{Engine, TestDatabase};
use devcluster::operator::OperatorProcess;
use devcluster::seed;
use serde_json::{Value, json};

pub fn cluster() -> Cluster {
    cluster::shared().unwrap_or_else(|err| panic!("starting the local cluster: {err}"))
}

pub fn kubectl(args: &[&str]) -> Result<String, String> {
    cluster()
        .kubectl_output(args)
        .map_err(|err| err.to_string())
}

pub fn apply_json(namespace: &str, manifest: &Value) {
    cluster()
        .apply(Some(namespace), &manifest.to_string())
        .unwrap_or_else(|err| panic!("applying {manifest}: {err}"));
}

/// The operator binary watching `namespace` as its service account; stopped when dropped.
pub fn start_operator(namespace: &str) -> OperatorProcess {
    start_operator_with(namespace, &[])
}

/// [`start_operator`] with more flags.
pub fn start_operator_with(namespace: &str, extra: &[&str]) -> OperatorProcess {
    OperatorProcess::start_with(
        &cluster(),
        Path::new(env!("CARGO_BIN_EXE_atlas-operator")),
        &[namespace],
        extra,
    )
    .unwrap_or_else(|err| panic!("starting the operator: {err}"))
}

pub fn get(ns: &TestNamespace, what: &str) -> Option<Value> {
    kubectl(&["-n", &ns.name, "get", what, "-o", "json"])
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
}

/// The condition of type `kind` in an object's status.
pub fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

pub fn ready(object: &Value) -> Option<&Value> {
    condition(object, "Ready")
}

/// Polls `check` until it returns a value; panics with `context()` when `limit` passes.
pub fn eventually<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn is_ready(object: &Value) -> bool {
    ready(object).is_some_and(|r| r["status"] == "True")
}

/// Polls `what` until `check` holds; panics with the last state and the operator's log.
pub fn wait_for(
    ns: &TestNamespace,
    what: &str,
    limit: Duration,
    operator: &OperatorProcess,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Some(object) = get(ns, what) {
            if check(&object) {
                return object;
            }
            last = object;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!(
        "{what} did not get there in {limit:?}; last: {}\noperator log:\n{}",
        serde_json::to_string_pretty(&last["status"]).unwrap(),
        operator.log()
    );
}

pub fn secret(ns: &TestNamespace, name: &str, data: Value) {
    apply_json(
        &ns.name,
        &json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name}, "stringData": data}),
    );
}

pub fn configmap(ns: &TestNamespace, name: &str, data: Value) {
    apply_json(
        &ns.name,
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name}, "data": data}),
    );
}

/// The seed's AtlasMigration: the URL in Secret `postgres-credentials`, the directory in
/// ConfigMap `migrationdir`.
pub fn seed_migration() -> Value {
    json!({"apiVersion": "db.atlasgo.io/v1alpha1", "kind": "AtlasMigration",
        "metadata": {"name": "atlasmigration-sample"},
        "spec": {"urlFrom": {"secretKeyRef": {"key": "url", "name": "postgres-credentials"}},
                 "dir": {"configMapRef": {"name": "migrationdir"}}}})
}

/// Where `wait_for` finds the seed's AtlasMigration.
pub const SEED_MIGRATION: &str = "atlasmigration/atlasmigration-sample";

/// A namespace of the test's own with a PostgreSQL database of its own, whose URL is in the
/// seed's Secret `postgres-credentials`: where every seed-migration test starts.
pub fn namespace_with_database(hint: &str) -> (TestNamespace, TestDatabase) {
    let ns = cluster()
        .namespace(hint)
        .unwrap_or_else(|err| panic!("namespace {hint}: {err}"));
    let db = TestDatabase::create(Engine::Postgres, &hint.replace('-', "_"))
        .unwrap_or_else(|err| panic!("database {hint}: {err}"));
    secret(&ns, "postgres-credentials", json!({"url": db.url}));
    (ns, db)
}

/// The seed's migration directory, the ConfigMap `migrationdir`, holding `files`.
pub fn migration_dir(ns: &TestNamespace, files: Value) {
    configmap(ns, "migrationdir", files);
}

/// The seed's migration file and its `atlas.sum`, as a ConfigMap's data.
pub fn seed_files() -> Value {
    json!({seed::MIGRATION_FILE: seed::MIGRATION_SQL, "atlas.sum": seed::MIGRATION_SUM})
}

/// Polls `what` until it is Ready (two minutes at most).
pub fn wait_ready(ns: &TestNamespace, what: &str, operator: &OperatorProcess) -> Value {
    wait_for(ns, what, Duration::from_secs(120), operator, is_ready)
}

/// A migration directory with its `atlas.sum`, as Atlas computes it.
pub fn hashed(files: &[(&str, &str)]) -> Value {
    let owned: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(n, c)| (n.to_string(), c.as_bytes().to_vec()))
        .collect();
    let sum = atlas_runner::sum::file(&owned);
    let mut data = serde_json::Map::new();
    for (name, content) in files {
        data.insert(name.to_string(), json!(content));
    }
    data.insert("atlas.sum".into(), json!(sum));
    Value::Object(data)
}
