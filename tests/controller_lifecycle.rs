//! The operator's life around its Jobs, end to end on the local cluster (the real API server, Job
//! controller and garbage collector, the process-kubelet running the runner, real Atlas and real
//! databases): an operator that dies while a Job runs, two resources on one database, deletion,
//! what ArgoCD concludes from the status, a schema kept in a ConfigMap, and the shipped RBAC.
//!
//! Each test has its own namespace, its own databases and its own operator process, which runs
//! as its service account (`devcluster::operator`) and watches only that namespace.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use atlas_operator::reconcile::status::{self, ArgoHealth};
use contract::Kind;
use devcluster::cluster::TestNamespace;
use devcluster::db::{Engine, TestDatabase};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde_json::{Value, json};
use support::e2e::{
    apply_json, cluster, configmap, get, hashed, is_ready, kubectl, namespace_with_database, ready,
    secret, start_operator,
};

const LABEL_NAME: &str = "db.atlasgo.io/name";
const LABEL_HASH: &str = "db.atlasgo.io/hash";
/// Long enough for a whole Job to run, short enough for every test here.
const LIMIT: Duration = Duration::from_secs(120);

/// The objects of `kinds` (e.g. `jobs,configmaps`) the operator made for the resource `name`,
/// found by its label as the operator finds them. Retries a failed `kubectl` a few times: the
/// tests poll with it, and one slow API call on a busy machine is not a failure.
fn labelled(ns: &TestNamespace, kinds: &str, name: &str) -> Vec<Value> {
    let selector = format!("{LABEL_NAME}={name}");
    let mut attempts = 0;
    loop {
        match kubectl(&["-n", &ns.name, "get", kinds, "-l", &selector, "-o", "json"]) {
            Ok(text) => {
                let list: Value = serde_json::from_str(&text).unwrap();
                return list["items"].as_array().cloned().unwrap_or_default();
            }
            Err(err) if attempts >= 4 => panic!("listing {kinds}: {err}"),
            Err(_) => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

fn names(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or("?"),
                o["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// The status conditions as the typed `Condition`s ArgoCD's rules are written against.
fn conditions(object: &Value) -> Vec<Condition> {
    match &object["status"]["conditions"] {
        Value::Null => Vec::new(),
        list => serde_json::from_value(list.clone())
            .unwrap_or_else(|err| panic!("conditions that do not parse ({err}): {list}")),
    }
}

fn job_finished(job: &Value) -> bool {
    job["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True")
}

/// Polls `probe` until it gives a value; panics with `describe`'s account of the last state and
/// the operator's log.
fn poll<T>(
    limit: Duration,
    log: &dyn Fn() -> String,
    mut probe: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        if Instant::now() > deadline {
            panic!(
                "not there after {limit:?}: {}\noperator log:\n{}",
                describe(),
                log()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Polls the object `what` until `check` holds.
fn wait_for(
    ns: &TestNamespace,
    what: &str,
    log: &dyn Fn() -> String,
    check: impl Fn(&Value) -> bool,
) -> Value {
    poll(
        LIMIT,
        log,
        || get(ns, what).filter(|object| check(object)),
        || {
            let last = get(ns, what).unwrap_or(Value::Null);
            format!(
                "{what}; last status: {}",
                serde_json::to_string_pretty(&last["status"]).unwrap()
            )
        },
    )
}

fn migration(name: &str, secret: &str, dir: Value) -> Value {
    json!({"apiVersion": "db.atlasgo.io/v1alpha1", "kind": "AtlasMigration",
        "metadata": {"name": name},
        "spec": {"urlFrom": {"secretKeyRef": {"key": "url", "name": secret}}, "dir": dir}})
}

/// A migration that holds its Job running for a few seconds: long enough to look at the Job and
/// the status while it runs (and to kill the operator meanwhile).
const SLOW_SQL: &str = "select pg_sleep(6);\ncreate table slow (id int primary key);\n";

#[test]
fn an_operator_killed_while_its_job_runs_finds_the_same_job_and_its_result_when_it_returns() {
    let (ns, db) = namespace_with_database("life-restart");
    configmap(&ns, "migrationdir", hashed(&[("1_slow.sql", SLOW_SQL)]));
    let first = start_operator(&ns.name);
    apply_json(
        &ns.name,
        &migration(
            "slow",
            "postgres-credentials",
            json!({"configMapRef": {"name": "migrationdir"}}),
        ),
    );

    let job = poll(
        LIMIT,
        &|| first.log(),
        || labelled(&ns, "jobs", "slow").pop(),
        || "a Job for atlasmigration/slow".into(),
    );
    let job_name = job["metadata"]["name"].as_str().unwrap().to_string();
    // Killed, not stopped: no chance to tidy up, as when a node dies or the pod is OOM-killed.
    let first_log = first.log();
    drop(first);
    let job = get(&ns, &format!("job/{job_name}")).unwrap();
    assert!(
        !job_finished(&job),
        "the Job finished before the operator was killed; the test needs a slower migration: {}",
        job["status"]
    );

    // The new operator first waits for the killed one's Lease to expire (30 s: nobody released
    // it), as a replacement pod would; the Job carries on meanwhile.
    let restarted = Instant::now();
    let second = start_operator(&ns.name);
    let log = || {
        format!(
            "first operator:\n{first_log}\nsecond operator:\n{}",
            second.log()
        )
    };
    let done = wait_for(&ns, "atlasmigration/slow", &log, is_ready);
    eprintln!("Ready {:?} after the restart", restarted.elapsed());
    assert_eq!(ready(&done).unwrap()["reason"], "Applied");
    assert_eq!(done["status"]["lastAppliedVersion"], "1");
    let hash = done["status"]["observed_hash"].as_str().unwrap();

    // The returning operator adopted the Job it found: no second Job, no second run.
    let jobs = labelled(&ns, "jobs", "slow");
    assert_eq!(names(&jobs), [format!("Job/{job_name}")]);
    assert_eq!(jobs[0]["metadata"]["labels"][LABEL_HASH], hash[..8]);
    let pods = kubectl(&[
        "-n",
        &ns.name,
        "get",
        "pods",
        "-l",
        &format!("job-name={job_name}"),
        "-o",
        "name",
    ])
    .unwrap();
    assert_eq!(
        pods.lines().count(),
        1,
        "the Job ran more than once: {pods}"
    );
    let revisions = db
        .query("select version from atlas_schema_revisions.atlas_schema_revisions")
        .unwrap();
    assert_eq!(revisions.trim(), "1");
    assert_eq!(
        db.query("select count(*) from slow").unwrap().trim(),
        "0",
        "the table is there"
    );
}

/// Two teams, one PostgreSQL database, each with its own schema and its own migration directory.
///
/// Each AtlasMigration is bound to its schema (`search_path` in its URL) and keeps its revisions
/// table there (`revisionsSchema`, set explicitly so the intent shows). The alternatives fail with
/// Atlas (v0.13.1, tried by hand): with one shared revisions table, team B's directory, whose
/// versions are older than team A's last, is "No migration files to execute" (and the runner's
/// status check reads the newer version as a protected "migrate down"); with database-wide URLs
/// and a revisions schema each, the second apply refuses the database: "connected database is
/// not clean: found schema \"public\"". Atlas's apply lock is per database (a PostgreSQL advisory
/// lock), so the two Jobs, started together, serialise: the slow one holds the lock for a few
/// seconds and the other waits for it (Atlas waits up to 10 s) instead of failing.
#[test]
fn two_migrations_on_one_database_both_end_ready() {
    let ns = cluster().namespace("life-two").unwrap();
    let db = TestDatabase::create(Engine::Postgres, "life_two").unwrap();
    // The schemas are the DBA's, as tenants' schemas usually are; Atlas migrates inside them.
    db.query("create schema team_a; create schema team_b")
        .unwrap();
    let url_for = |schema: &str| format!("{}&search_path={schema}", db.url);
    secret(&ns, "team-a-db", json!({"url": url_for("team_a")}));
    secret(&ns, "team-b-db", json!({"url": url_for("team_b")}));
    configmap(
        &ns,
        "team-a-migrations",
        hashed(&[(
            "20240101000000_orders.sql",
            "select pg_sleep(3);\ncreate table orders (id int primary key, total numeric not null);\n",
        )]),
    );
    configmap(
        &ns,
        "team-b-migrations",
        hashed(&[
            (
                "20230101000000_invoices.sql",
                "create table invoices (id int primary key);\n",
            ),
            (
                "20230101000001_invoice_lines.sql",
                "create table invoice_lines (invoice int references invoices (id), line int);\n",
            ),
        ]),
    );
    let operator = start_operator(&ns.name);
    for (name, team) in [("team-a", "team_a"), ("team-b", "team_b")] {
        let mut manifest = migration(
            name,
            &format!("{name}-db"),
            json!({"configMapRef": {"name": format!("{name}-migrations")}}),
        );
        manifest["spec"]["revisionsSchema"] = json!(team);
        apply_json(&ns.name, &manifest);
    }

    let log = || operator.log();
    for (name, version) in [("team-a", "20240101000000"), ("team-b", "20230101000001")] {
        let done = wait_for(&ns, &format!("atlasmigration/{name}"), &log, is_ready);
        assert_eq!(ready(&done).unwrap()["reason"], "Applied", "{name}");
        assert_eq!(done["status"]["lastAppliedVersion"], version, "{name}");
        // Never failed on the way (a lock timeout would have counted one).
        assert_eq!(done["status"]["failed"], 0, "{name}: {}", done["status"]);
    }
    let tables = db
        .query(
            "select table_schema || '.' || table_name from information_schema.tables \
             where table_schema in ('team_a', 'team_b') order by 1",
        )
        .unwrap();
    assert_eq!(
        tables.trim(),
        "team_a.atlas_schema_revisions\nteam_a.orders\n\
         team_b.atlas_schema_revisions\nteam_b.invoice_lines\nteam_b.invoices"
    );
    // The two Jobs did run at the same time (so the lock, not luck, kept them apart).
    // (Ready comes from the runner's result, so the Job controller may mark the Job complete
    // a moment later.)
    let span = |name: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let job = labelled(&ns, "jobs", name).pop().unwrap();
            if let (Some(start), Some(end)) = (
                job["status"]["startTime"].as_str(),
                job["status"]["completionTime"].as_str(),
            ) {
                return (start.to_string(), end.to_string());
            }
            assert!(Instant::now() < deadline, "{job}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let (a, b) = (span("team-a"), span("team-b"));
    assert!(
        a.0 <= b.1 && b.0 <= a.1,
        "the Jobs did not overlap: {a:?} {b:?}"
    );
    let events = get(&ns, "events.events.k8s.io").unwrap();
    let warnings: Vec<&Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "Warning")
        .collect();
    assert!(warnings.is_empty(), "warning events: {warnings:#?}");
}

#[test]
fn deleting_a_migration_garbage_collects_its_jobs_and_inputs() {
    let (ns, db) = namespace_with_database("life-delete");
    let operator = start_operator(&ns.name);
    // An inline directory: the operator keeps it in a ConfigMap of its own for the Job to mount.
    apply_json(
        &ns.name,
        &migration(
            "inline",
            "postgres-credentials",
            json!({"local": hashed(&[("1_users.sql", "create table users (id int);\n")])}),
        ),
    );
    let log = || operator.log();
    wait_for(&ns, "atlasmigration/inline", &log, is_ready);
    let made = labelled(&ns, "jobs,configmaps,pods", "inline");
    let made_names = names(&made);
    let job = made_names
        .iter()
        .find(|n| n.starts_with("Job/"))
        .unwrap_or_else(|| panic!("no Job: {made_names:?}"))
        .trim_start_matches("Job/")
        .to_string();
    assert!(
        made_names.contains(&format!("ConfigMap/{job}-inputs")),
        "{made_names:?}"
    );
    assert!(
        made_names.iter().any(|n| n.starts_with("Pod/")),
        "{made_names:?}"
    );

    // Background propagation: the resource goes at once, the garbage collector follows its owner
    // references (the operator has no finalizer to run and no delete to make).
    kubectl(&[
        "-n",
        &ns.name,
        "delete",
        "atlasmigration/inline",
        "--cascade=background",
    ])
    .unwrap();
    let started = Instant::now();
    poll(
        LIMIT,
        &log,
        || {
            labelled(&ns, "jobs,configmaps,pods", "inline")
                .is_empty()
                .then_some(())
        },
        || {
            format!(
                "still there: {:?}",
                names(&labelled(&ns, "jobs,configmaps,pods", "inline"))
            )
        },
    );
    eprintln!("garbage-collected in {:?}", started.elapsed());
    // By the garbage collector: the operator deleted nothing in the namespace (it deletes only the
    // Jobs of older hashes, and there was one hash).
    let audit = std::fs::read_to_string(cluster().audit_log()).unwrap();
    let operator_deletes: Vec<&str> = audit
        .lines()
        .filter(|line| {
            line.contains(&devcluster::operator::user())
                && line.contains(&format!("\"namespace\":\"{}\"", ns.name))
                && line.contains("\"verb\":\"delete")
        })
        .collect();
    assert!(
        operator_deletes.is_empty(),
        "deletes by the operator: {operator_deletes:#?}"
    );
    // And the operator, still running, makes nothing anew for the deleted resource.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        names(&labelled(&ns, "jobs,configmaps,pods", "inline")),
        Vec::<String>::new()
    );
    // The data stays: deleting the resource does not roll the database back.
    assert_eq!(db.query("select count(*) from users").unwrap().trim(), "0");
}

/// ArgoCD's built-in health check, fed the real status as the operator writes it.
#[test]
fn argocd_sees_progressing_while_the_job_runs_healthy_after_and_degraded_on_a_definitive_failure() {
    let ns = cluster().namespace("life-argo").unwrap();
    let db = TestDatabase::create(Engine::Postgres, "life_argo").unwrap();
    let broken_db = TestDatabase::create(Engine::Postgres, "life_argo_broken").unwrap();
    let maria = TestDatabase::create(Engine::MariaDb, "life_argo_schema").unwrap();
    let maria_dev = TestDatabase::create(Engine::MariaDb, "life_argo_dev").unwrap();
    secret(&ns, "postgres-credentials", json!({"url": db.url}));
    secret(&ns, "broken-credentials", json!({"url": broken_db.url}));
    secret(
        &ns,
        "mysql-credentials",
        json!({"url": maria.url, "dev": maria_dev.url}),
    );
    configmap(&ns, "slow-dir", hashed(&[("1_slow.sql", SLOW_SQL)]));
    configmap(
        &ns,
        "broken-dir",
        hashed(&[("1_users.sql", "create tabel users (id int);\n")]),
    );
    let operator = start_operator(&ns.name);
    let log = || operator.log();
    apply_json(
        &ns.name,
        &migration(
            "slow",
            "postgres-credentials",
            json!({"configMapRef": {"name": "slow-dir"}}),
        ),
    );

    // While the Job runs: every status written says Progressing, and the operator has written one
    // (Ready=False/Reconciling), not just left the resource without conditions.
    let mut seen_while_running = Vec::new();
    let done = poll(
        LIMIT,
        &log,
        || {
            let object = get(&ns, "atlasmigration/slow")?;
            let health = status::argo_health(Kind::Migration, &conditions(&object));
            let running = labelled(&ns, "jobs", "slow")
                .first()
                .is_some_and(|job| !job_finished(job));
            // Applied may show before the Job controller marks the Job complete: the runner's
            // result is final once its container has exited.
            if running && ready(&object).is_some_and(|r| r["status"] != "True") {
                seen_while_running.push(health);
            }
            assert_ne!(
                health,
                ArgoHealth::Degraded,
                "Degraded on the way: {}",
                object["status"]
            );
            (health == ArgoHealth::Healthy).then_some(object)
        },
        || "atlasmigration/slow Healthy".into(),
    );
    assert!(
        !seen_while_running.is_empty(),
        "never saw the status while the Job ran"
    );
    assert!(
        seen_while_running
            .iter()
            .all(|h| *h == ArgoHealth::Progressing),
        "{seen_while_running:?}"
    );
    assert!(is_ready(&done));

    // A definitive failure: Degraded, which stops a sync wave.
    apply_json(
        &ns.name,
        &migration(
            "broken",
            "broken-credentials",
            json!({"configMapRef": {"name": "broken-dir"}}),
        ),
    );
    let failed = wait_for(&ns, "atlasmigration/broken", &log, |m| {
        ready(m).is_some_and(|r| r["reason"] == "Migrating")
    });
    assert_eq!(
        status::argo_health(Kind::Migration, &conditions(&failed)),
        ArgoHealth::Degraded,
        "{}",
        failed["status"]
    );

    // An AtlasSchema (its rule reads Ready's message, not its reason): Healthy once applied.
    apply_json(
        &ns.name,
        &json!({"apiVersion": "db.atlasgo.io/v1alpha1", "kind": "AtlasSchema",
        "metadata": {"name": "users"},
        "spec": {
            "urlFrom": {"secretKeyRef": {"key": "url", "name": "mysql-credentials"}},
            "devURLFrom": {"secretKeyRef": {"key": "dev", "name": "mysql-credentials"}},
            "schema": {"sql": "create table users (\n  id int not null,\n  name varchar(255) not null,\n  primary key (id)\n);\n"}
        }}),
    );
    let schema = poll(
        LIMIT,
        &log,
        || {
            let object = get(&ns, "atlasschema/users")?;
            let health = status::argo_health(Kind::Schema, &conditions(&object));
            assert_ne!(
                health,
                ArgoHealth::Degraded,
                "Degraded on the way: {}",
                object["status"]
            );
            (health == ArgoHealth::Healthy).then_some(object)
        },
        || "atlasschema/users Healthy".into(),
    );
    assert_eq!(ready(&schema).unwrap()["reason"], "Applied");
    assert_eq!(maria.query("show tables").unwrap().trim(), "users");
}

/// The namespace-scoped install and the cluster-wide one give the operator the same permissions.
#[test]
fn the_shipped_role_and_cluster_role_grant_the_same_rules() {
    let read = |file: &str| -> Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
        serde_saphyr::from_str(&text)
            .unwrap_or_else(|err| panic!("parsing {}: {err}", path.display()))
    };
    let role = read("rbac/operator-role.yaml");
    let cluster_role = read("rbac/operator-clusterrole.yaml");
    assert_eq!(role["kind"], "Role");
    assert_eq!(cluster_role["kind"], "ClusterRole");
    assert_eq!(role["metadata"]["name"], cluster_role["metadata"]["name"]);

    // As permissions: one (group, resource, verb) per grant, however the rules are grouped.
    let grants = |rules: &Value| -> BTreeSet<(String, String, String)> {
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        };
        let mut grants = BTreeSet::new();
        for rule in rules.as_array().expect("rules is a list") {
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        grants.insert((group.clone(), resource.clone(), verb));
                    }
                }
            }
        }
        grants
    };
    let role_grants = grants(&role["rules"]);
    let cluster_grants = grants(&cluster_role["rules"]);
    assert!(!role_grants.is_empty());
    assert_eq!(
        role_grants
            .symmetric_difference(&cluster_grants)
            .collect::<Vec<_>>(),
        Vec::<&(String, String, String)>::new(),
        "granted by only one of them"
    );
    // And written the same way, so a reviewer comparing the files sees no difference either.
    assert_eq!(role["rules"], cluster_role["rules"]);
    for (group, resource, verb) in &role_grants {
        assert!(
            (resource != "secrets" || verb == "create")
                && ![group, resource, verb].contains(&&"*".to_string()),
            "{group}/{resource}: {verb}"
        );
    }
}

#[test]
fn a_schema_kept_in_a_configmap_follows_its_edits() {
    let ns = cluster().namespace("life-cmschema").unwrap();
    let db = TestDatabase::create(Engine::Postgres, "life_cmschema").unwrap();
    let dev = TestDatabase::create(Engine::Postgres, "life_cmschema_dev").unwrap();
    secret(
        &ns,
        "postgres-credentials",
        json!({"url": db.url, "dev": dev.url}),
    );
    configmap(
        &ns,
        "app-schema",
        json!({"schema.sql": "create table users (\n  id int not null primary key,\n  name text not null\n);\n"}),
    );
    let operator = start_operator(&ns.name);
    let log = || operator.log();
    apply_json(
        &ns.name,
        &json!({"apiVersion": "db.atlasgo.io/v1alpha1", "kind": "AtlasSchema",
        "metadata": {"name": "app"},
        "spec": {
            "urlFrom": {"secretKeyRef": {"key": "url", "name": "postgres-credentials"}},
            "devURLFrom": {"secretKeyRef": {"key": "dev", "name": "postgres-credentials"}},
            "schema": {"configMapKeyRef": {"name": "app-schema", "key": "schema.sql"}}
        }}),
    );
    let first = wait_for(&ns, "atlasschema/app", &log, is_ready);
    assert_eq!(ready(&first).unwrap()["reason"], "Applied");
    let columns = |db: &TestDatabase| {
        db.query(
            "select column_name from information_schema.columns \
             where table_schema = 'public' and table_name = 'users' order by ordinal_position",
        )
        .unwrap()
        .trim()
        .to_string()
    };
    assert_eq!(columns(&db), "id\nname");
    let first_hash = first["status"]["observed_hash"]
        .as_str()
        .unwrap()
        .to_string();
    let first_jobs = names(&labelled(&ns, "jobs", "app"));
    assert_eq!(first_jobs.len(), 1, "{first_jobs:?}");

    // The user edits the ConfigMap, not the AtlasSchema: the ConfigMap watch finds the resource.
    configmap(
        &ns,
        "app-schema",
        json!({"schema.sql": "create table users (\n  id int not null primary key,\n  name text not null,\n  email text\n);\n"}),
    );
    let edited = Instant::now();
    let second = wait_for(&ns, "atlasschema/app", &log, |s| {
        is_ready(s) && s["status"]["observed_hash"] != json!(first_hash)
    });
    eprintln!("the edit applied in {:?}", edited.elapsed());
    assert_eq!(columns(&db), "id\nname\nemail");
    let new_hash = second["status"]["observed_hash"].as_str().unwrap();
    // A new Job for the new hash; the old one is cleaned up, the new one kept for `kubectl logs`.
    let jobs = poll(
        Duration::from_secs(30),
        &log,
        || {
            let jobs = labelled(&ns, "jobs", "app");
            (jobs.len() == 1).then_some(jobs)
        },
        || format!("one Job left: {:?}", names(&labelled(&ns, "jobs", "app"))),
    );
    assert_ne!(names(&jobs), first_jobs);
    assert_eq!(jobs[0]["metadata"]["labels"][LABEL_HASH], new_hash[..8]);
    // Nothing left in the dev database: the next apply finds it clean.
    let dev_tables = dev
        .query("select count(*) from information_schema.tables where table_schema = 'public'")
        .unwrap();
    assert_eq!(dev_tables.trim(), "0");
}
