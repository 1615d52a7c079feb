//! The operator end to end on the local cluster: the real API server, Job controller and garbage
//! collector, the process-kubelet running the runner, real Atlas and real databases. The
//! operator runs as its own process, impersonating a service account bound to exactly the rules
//! in `rbac/operator-clusterrole.yaml`, and watches only its test's namespace.

use std::time::{Duration, Instant};

mod support;

use devcluster::db::{Engine, TestDatabase};
use devcluster::operator::{self, OperatorProcess};
use devcluster::seed;
use serde_json::{Value, json};
use support::e2e::*;

#[test]
fn seed_migration_becomes_ready_and_follows_its_configmap() {
    let (ns, db) = namespace_with_database("ctl-seed");
    migration_dir(&ns, seed_files());
    let operator = start_operator(&ns.name);
    apply_json(&ns.name, &seed_migration());

    let started = Instant::now();
    let done = wait_ready(&ns, SEED_MIGRATION, &operator);
    eprintln!("seed migration Ready in {:?}", started.elapsed());
    assert_eq!(ready(&done).unwrap()["reason"], "Applied");
    assert_eq!(done["status"]["lastAppliedVersion"], "20230316085611");
    assert!(done["status"]["lastApplied"].as_i64().unwrap() > 0);
    assert_eq!(done["status"]["observed_hash"].as_str().unwrap().len(), 64);
    assert_eq!(
        done["status"]["observedGeneration"],
        done["metadata"]["generation"]
    );
    let default = db
        .query("select column_default from information_schema.columns where table_name = 'users' and column_name = 'id'")
        .unwrap();
    assert_eq!(default.trim(), "nextval('users_seq'::regclass)");
    // `kubectl wait`, as the ArgoCD tutorial gates its rollout.
    kubectl(&[
        "-n",
        &ns.name,
        "wait",
        "--for=condition=ready",
        "--timeout=10s",
        SEED_MIGRATION,
    ])
    .unwrap();

    // A second file in the ConfigMap: a new Job, the new version, the old Job gone.
    let first_hash = done["status"]["observed_hash"]
        .as_str()
        .unwrap()
        .to_string();
    migration_dir(
        &ns,
        hashed(&[
            (seed::MIGRATION_FILE, seed::MIGRATION_SQL),
            (
                "20230316085612.sql",
                "alter table users add column nickname varchar(64);\n",
            ),
        ]),
    );
    let next = wait_for(
        &ns,
        SEED_MIGRATION,
        Duration::from_secs(120),
        &operator,
        |m| {
            m["status"]["lastAppliedVersion"] == "20230316085612"
                && ready(m).is_some_and(|r| r["status"] == "True")
        },
    );
    assert_ne!(next["status"]["observed_hash"], json!(first_hash));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let jobs = get(&ns, "jobs").unwrap();
        let names: Vec<&str> = jobs["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["metadata"]["deletionTimestamp"].is_null())
            .map(|j| j["metadata"]["name"].as_str().unwrap())
            .collect();
        if names.len() == 1 {
            assert!(names[0].ends_with(&next["status"]["observed_hash"].as_str().unwrap()[..8]));
            break;
        }
        assert!(Instant::now() < deadline, "older Jobs stay: {names:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn broken_sql_fails_with_an_event_and_a_fix_recovers() {
    let (ns, _db) = namespace_with_database("ctl-broken");
    migration_dir(
        &ns,
        hashed(&[("1_users.sql", "create tabel users (id int);\n")]),
    );
    let operator = start_operator(&ns.name);
    apply_json(&ns.name, &seed_migration());

    let failed = wait_for(
        &ns,
        SEED_MIGRATION,
        Duration::from_secs(120),
        &operator,
        |m| ready(m).is_some_and(|r| r["reason"] == "Migrating"),
    );
    let message = ready(&failed).unwrap()["message"].as_str().unwrap();
    assert!(
        message.contains("1_users.sql") && message.contains("tabel"),
        "{message}"
    );
    assert_eq!(condition(&failed, "Stalled").unwrap()["status"], "True");
    let events = kubectl(&["-n", &ns.name, "get", "events.events.k8s.io", "-o", "json"]).unwrap();
    assert!(events.contains("\"reason\": \"Migrating\""), "{events}");

    // Another failure of the same reason is an event with its own message, not "x2" of the first.
    migration_dir(
        &ns,
        hashed(&[("1_users.sql", "create table users (id nosuchtype);\n")]),
    );
    wait_for(
        &ns,
        SEED_MIGRATION,
        Duration::from_secs(120),
        &operator,
        |m| ready(m).is_some_and(|r| r["message"].as_str().unwrap_or("").contains("nosuchtype")),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events: Value = serde_json::from_str(
            &kubectl(&["-n", &ns.name, "get", "events.events.k8s.io", "-o", "json"]).unwrap(),
        )
        .unwrap();
        let notes: Vec<&str> = events["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["reason"] == "Migrating")
            .filter_map(|e| e["note"].as_str())
            .collect();
        if notes.iter().any(|n| n.contains("tabel"))
            && notes.iter().any(|n| n.contains("nosuchtype"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "{notes:?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    migration_dir(
        &ns,
        hashed(&[("1_users.sql", "create table users (id int);\n")]),
    );
    wait_ready(&ns, SEED_MIGRATION, &operator);
}

/// A host that does not resolve is shown within seconds with the seed's reason, the host and the
/// error, and an event, while `Reconciling=True` says the Job retries (kstatus: in progress); the
/// retries succeed by themselves once the Secret names a host that is there. Before, it stayed
/// `Ready=False Reconciling` without an event until the Job's deadline (30 minutes).
#[test]
fn an_unresolvable_host_is_reported_at_once_and_retries_recover() {
    let (ns, db) = namespace_with_database("ctl-nohost");
    secret(
        &ns,
        "postgres-credentials",
        json!({"url": "postgres://app:secret@no-such-host.invalid:5432/app?sslmode=disable"}),
    );
    migration_dir(&ns, seed_files());
    let operator = start_operator(&ns.name);
    let started = Instant::now();
    apply_json(&ns.name, &seed_migration());
    let failing = wait_for(
        &ns,
        SEED_MIGRATION,
        Duration::from_secs(60),
        &operator,
        |m| ready(m).is_some_and(|r| r["reason"] == "Migrating"),
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    let message = ready(&failing).unwrap()["message"].as_str().unwrap();
    assert!(
        message.contains("no-such-host.invalid") && message.contains("does not resolve"),
        "{message}"
    );
    assert!(!message.contains("secret"), "{message}");
    assert_eq!(
        condition(&failing, "Reconciling").unwrap()["status"],
        "True",
        "{failing}"
    );
    assert_eq!(
        condition(&failing, "Stalled").unwrap()["status"],
        "False",
        "{failing}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events =
            kubectl(&["-n", &ns.name, "get", "events.events.k8s.io", "-o", "json"]).unwrap();
        if events.contains("no-such-host.invalid") {
            break;
        }
        assert!(Instant::now() < deadline, "no event: {events}");
        std::thread::sleep(Duration::from_millis(200));
    }

    secret(&ns, "postgres-credentials", json!({"url": db.url}));
    let done = wait_for(
        &ns,
        SEED_MIGRATION,
        Duration::from_secs(90),
        &operator,
        is_ready,
    );
    assert_eq!(done["status"]["failed"], 0, "{done}");
}

/// A policy this operator cannot apply but can go on without (Atlas Cloud's drift check) is said
/// in the Ready message and a Warning event, never silently dropped.
#[test]
fn a_drift_policy_it_cannot_run_is_said_not_ignored() {
    let (ns, _db) = namespace_with_database("ctl-drift");
    migration_dir(&ns, seed_files());
    let operator = start_operator(&ns.name);
    let mut migration = seed_migration();
    migration["spec"]["policy"] = json!({"drift": {"onError": "FAIL"}});
    apply_json(&ns.name, &migration);
    let done = wait_ready(&ns, SEED_MIGRATION, &operator);
    let message = ready(&done).unwrap()["message"].as_str().unwrap();
    assert!(
        message.starts_with("migrated to version")
            && message.contains("policy.drift was not applied"),
        "{message}"
    );
    let events = kubectl(&["-n", &ns.name, "get", "events.events.k8s.io", "-o", "json"]).unwrap();
    assert!(
        events.contains("\"reason\": \"PolicyNotApplied\""),
        "{events}"
    );
}

/// A Job the API server refuses (here a ResourceQuota allowing no Jobs) is shown at once with the
/// API server's message, in progress for kstatus; once the quota allows it, the Job runs.
#[test]
fn a_job_refused_by_a_quota_is_reported_and_runs_once_allowed() {
    let (ns, _db) = namespace_with_database("ctl-quota");
    migration_dir(&ns, seed_files());
    apply_json(
        &ns.name,
        &json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-jobs"},
                "spec": {"hard": {"count/jobs.batch": "0"}}}),
    );
    // Enforced once the quota controller has counted the namespace.
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&ns, "resourcequota/no-jobs").is_none_or(|q| q["status"]["hard"].is_null()) {
        assert!(Instant::now() < deadline, "the quota was never counted");
        std::thread::sleep(Duration::from_millis(200));
    }
    let operator = start_operator(&ns.name);
    apply_json(&ns.name, &seed_migration());
    let refused = wait_for(
        &ns,
        SEED_MIGRATION,
        Duration::from_secs(60),
        &operator,
        |m| {
            ready(m).is_some_and(|r| {
                r["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("exceeded quota")
            })
        },
    );
    assert_eq!(ready(&refused).unwrap()["reason"], "Migrating");
    kubectl(&["-n", &ns.name, "delete", "resourcequota/no-jobs"]).unwrap();
    // Looked at again by itself within a minute; a touch wakes it sooner.
    kubectl(&["-n", &ns.name, "annotate", SEED_MIGRATION, "touched=1"]).unwrap();
    wait_ready(&ns, SEED_MIGRATION, &operator);
}

#[test]
fn a_missing_secret_is_reported_within_seconds_and_the_secret_unblocks_it() {
    let ns = cluster().namespace("ctl-secret").unwrap();
    let db = TestDatabase::create(Engine::Postgres, "ctl_secret").unwrap();
    migration_dir(&ns, seed_files());
    let operator = start_operator(&ns.name);
    apply_json(&ns.name, &seed_migration());

    let started = Instant::now();
    let waiting = wait_for(
        &ns,
        SEED_MIGRATION,
        Duration::from_secs(60),
        &operator,
        |m| ready(m).is_some_and(|r| r["reason"] == "ReadingMigrationData"),
    );
    let message = ready(&waiting).unwrap()["message"].as_str().unwrap();
    assert!(message.contains("postgres-credentials"), "{message}");
    // kstatus reads it as in progress (Reconciling=True), not as done.
    assert_eq!(
        condition(&waiting, "Reconciling").unwrap()["status"],
        "True",
        "{waiting}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "took {:?}",
        started.elapsed()
    );

    secret(&ns, "postgres-credentials", json!({"url": db.url}));
    wait_ready(&ns, SEED_MIGRATION, &operator);
}

#[test]
fn seed_schema_with_a_dev_url_on_mariadb() {
    let ns = cluster().namespace("ctl-schema").unwrap();
    let db = TestDatabase::create(Engine::MariaDb, "ctl_schema").unwrap();
    let dev = TestDatabase::create(Engine::MariaDb, "ctl_schema_dev").unwrap();
    db.query("create table ignore_me (id int)").unwrap();
    secret(
        &ns,
        "mysql-credentials",
        json!({"url": db.url, "dev": dev.url}),
    );
    let operator = start_operator(&ns.name);
    let mut schema = json!({"apiVersion": "db.atlasgo.io/v1alpha1", "kind": "AtlasSchema",
    "metadata": {"name": "atlasschema-mysql"},
    "spec": {
        "urlFrom": {"secretKeyRef": {"key": "url", "name": "mysql-credentials"}},
        "devURLFrom": {"secretKeyRef": {"key": "dev", "name": "mysql-credentials"}},
        "policy": {"lint": {"destructive": {"error": true}}, "diff": {"skip": {"drop_index": true}}},
        "schema": {"sql": "create table users (\n  id int not null auto_increment,\n  name varchar(255) not null,\n  primary key (id)\n);\n"},
        "exclude": ["ignore_me"]
    }});
    apply_json(&ns.name, &schema);
    let done = wait_for(
        &ns,
        "atlasschema/atlasschema-mysql",
        Duration::from_secs(120),
        &operator,
        |s| ready(s).is_some_and(|r| r["status"] == "True"),
    );
    assert!(done["status"]["last_applied"].as_i64().unwrap() > 0);
    let tables = db.query("show tables").unwrap();
    assert_eq!(tables.trim(), "ignore_me\nusers");
    // As upstream's message does, the applied statements are named.
    let message = ready(&done).unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.starts_with("the schema has been applied (1 statements):\n- CREATE TABLE `users`"),
        "{message}"
    );

    // A column dropped under the lint policy: refused in upstream's words, nothing applied.
    schema["spec"]["schema"]["sql"] =
        json!("create table users (\n  id int not null auto_increment,\n  primary key (id)\n);\n");
    apply_json(&ns.name, &schema);
    let refused = wait_for(
        &ns,
        "atlasschema/atlasschema-mysql",
        Duration::from_secs(120),
        &operator,
        |s| ready(s).is_some_and(|r| r["reason"] == "LintPolicyError"),
    );
    let message = ready(&refused).unwrap()["message"].as_str().unwrap();
    let lines: Vec<&str> = message.lines().collect();
    assert_eq!(lines[0], "destructive changes detected:", "{message}");
    assert!(
        lines[1].starts_with("- ALTER TABLE") && lines[1].ends_with("users DROP COLUMN name"),
        "{message}"
    );
    let columns = db.query("show columns from users").unwrap();
    assert!(columns.contains("name"), "{columns}");
}

/// `policy.lint.dataDepend.error`: a change that loses data without dropping anything (a
/// narrowed column, `NOT NULL` added without a default, on a table with rows) is refused:
/// Ready=False with `LintPolicyError` and a message naming the policy, Stalled, an event, and
/// the rows as they were.
#[test]
fn a_data_losing_change_under_the_data_depend_policy_is_refused_with_an_event() {
    let ns = cluster().namespace("ctl-datadep").unwrap();
    let db = TestDatabase::create(Engine::MariaDb, "ctl_datadep").unwrap();
    let dev = TestDatabase::create(Engine::MariaDb, "ctl_datadep_dev").unwrap();
    db.query(
        "create table users (id int primary key, name varchar(255)); \
         insert into users values (1, 'a name longer than ten'), (2, 'b')",
    )
    .unwrap();
    secret(
        &ns,
        "mysql-credentials",
        json!({"url": db.url, "dev": dev.url}),
    );
    let operator = start_operator(&ns.name);
    apply_json(
        &ns.name,
        &json!({"apiVersion": "db.atlasgo.io/v1alpha1", "kind": "AtlasSchema",
        "metadata": {"name": "datadep"},
        "spec": {
            "urlFrom": {"secretKeyRef": {"key": "url", "name": "mysql-credentials"}},
            "devURLFrom": {"secretKeyRef": {"key": "dev", "name": "mysql-credentials"}},
            "policy": {"lint": {"destructive": {"error": true}, "dataDepend": {"error": true}}},
            "schema": {"sql": "create table users (id int primary key, name varchar(10), \
                               batch int not null);\n"}
        }}),
    );
    let refused = wait_for(
        &ns,
        "atlasschema/datadep",
        Duration::from_secs(120),
        &operator,
        |s| ready(s).is_some_and(|r| r["reason"] == "LintPolicyError"),
    );
    let message = ready(&refused).unwrap()["message"].as_str().unwrap();
    let lines: Vec<&str> = message.lines().collect();
    assert_eq!(lines[0], "data dependent changes detected:", "{message}");
    assert!(
        lines[1].starts_with("- ALTER TABLE")
            && lines[1].contains("users ALTER COLUMN name TYPE varchar(10)"),
        "{message}"
    );
    assert!(
        lines[2].contains("users ADD COLUMN batch NOT NULL without a default"),
        "{message}"
    );
    assert!(
        message.contains("spec.policy.lint.dataDepend.error is true"),
        "{message}"
    );
    assert_eq!(condition(&refused, "Stalled").unwrap()["status"], "True");
    let events = kubectl(&["-n", &ns.name, "get", "events.events.k8s.io", "-o", "json"]).unwrap();
    assert!(
        events.contains("\"reason\": \"LintPolicyError\""),
        "{events}"
    );
    assert_eq!(
        db.query("select name from users order by id").unwrap(),
        "a name longer than ten\nb\n"
    );
}

/// Upstream's users write a dev database as `devURL` on the pod's loopback plus a `devDB` pod of
/// that server: both are honoured, the server runs as a native sidecar with `devDB`'s image and
/// environment, and the runner plans against it at the given URL.
#[test]
fn dev_url_with_dev_db_runs_the_described_server_next_to_the_runner() {
    let ns = cluster().namespace("ctl-devdb").unwrap();
    let db = TestDatabase::create(Engine::MariaDb, "ctl_devdb").unwrap();
    secret(&ns, "mysql-credentials", json!({"url": db.url}));
    let operator = start_operator(&ns.name);
    apply_json(
        &ns.name,
        &json!({"apiVersion": "db.atlasgo.io/v1alpha1", "kind": "AtlasSchema",
        "metadata": {"name": "atlasschema-mysql"},
        "spec": {
            "urlFrom": {"secretKeyRef": {"key": "url", "name": "mysql-credentials"}},
            "devURL": "mysql://root:pass@localhost:3306/dev",
            "devDB": {"spec": {"containers": [{
                "name": "mysql",
                "image": "mysql:8",
                "env": [
                    {"name": "MYSQL_ROOT_PASSWORD", "value": "pass"},
                    {"name": "MYSQL_DATABASE", "value": "dev"}
                ],
                "ports": [{"containerPort": 3306}]
            }]}},
            "schema": {"sql": "create table users (\n  id int not null auto_increment,\n  primary key (id)\n);\n"}
        }}),
    );
    wait_for(
        &ns,
        "atlasschema/atlasschema-mysql",
        Duration::from_secs(120),
        &operator,
        |s| ready(s).is_some_and(|r| r["status"] == "True"),
    );
    let pods = get(&ns, "pods").unwrap();
    let pod = &pods["items"][0];
    assert_eq!(pod["spec"]["initContainers"][0]["image"], "mysql:8");
    assert_eq!(
        pod["spec"]["initContainers"][0]["env"][0]["name"],
        "MYSQL_ROOT_PASSWORD"
    );
    assert_eq!(db.query("show tables").unwrap().trim(), "users");
}

/// Written as upstream's users write them: the target (and the dev database) named only by the
/// resource's own atlas.hcl, `env "test" { url = var.db_url … }` with `envName: test`, the
/// variables from a Secret and a ConfigMap. A migration on PostgreSQL and a schema on MariaDB.
#[test]
fn targets_named_only_by_the_custom_config_are_applied() {
    let ns = cluster().namespace("ctl-config-target").unwrap();
    let pg = TestDatabase::create(Engine::Postgres, "ctl_config_target").unwrap();
    let maria = TestDatabase::create(Engine::MariaDb, "ctl_config_target").unwrap();
    let maria_dev = TestDatabase::create(Engine::MariaDb, "ctl_config_target_dev").unwrap();
    pg.query("create schema tenant_meta").unwrap();
    secret(
        &ns,
        "db-urls",
        json!({"pg": pg.url, "maria": maria.url, "maria-dev": maria_dev.url}),
    );
    configmap(&ns, "atlas-settings", json!({"revisions": "tenant_meta"}));
    migration_dir(&ns, seed_files());
    let operator = start_operator_with(&ns.name, &["--allow-custom-config"]);

    let migration = json!({"apiVersion": "db.atlasgo.io/v1alpha1", "kind": "AtlasMigration",
    "metadata": {"name": "config-target"},
    "spec": {
        "envName": "test",
        "config": "variable \"db_url\" {\n  type = string\n}\nvariable \"revisions\" {\n  type = string\n}\n\nenv \"test\" {\n  url = var.db_url\n  migration {\n    revisions_schema = var.revisions\n  }\n}\n",
        "vars": [
            {"key": "db_url", "valueFrom": {"secretKeyRef": {"name": "db-urls", "key": "pg"}}},
            {"key": "revisions", "valueFrom": {"configMapKeyRef": {"name": "atlas-settings", "key": "revisions"}}}
        ],
        "dir": {"configMapRef": {"name": "migrationdir"}}
    }});
    apply_json(&ns.name, &migration);
    let schema = json!({"apiVersion": "db.atlasgo.io/v1alpha1", "kind": "AtlasSchema",
    "metadata": {"name": "config-target"},
    "spec": {
        "envName": "test",
        "config": "variable \"url\" {\n  type = string\n}\nvariable \"dev\" {\n  type = string\n}\n\nenv \"test\" {\n  url = var.url\n  dev = var.dev\n}\n",
        "vars": [
            {"key": "url", "valueFrom": {"secretKeyRef": {"name": "db-urls", "key": "maria"}}},
            {"key": "dev", "valueFrom": {"secretKeyRef": {"name": "db-urls", "key": "maria-dev"}}}
        ],
        "schema": {"sql": "create table users (\n  id int not null auto_increment,\n  primary key (id)\n);\n"}
    }});
    apply_json(&ns.name, &schema);
    let done = wait_ready(&ns, "atlasmigration/config-target", &operator);
    assert_eq!(done["status"]["lastAppliedVersion"], "20230316085611");
    let where_ = pg
        .query("select table_schema from information_schema.tables where table_name = 'atlas_schema_revisions'")
        .unwrap();
    assert_eq!(where_.trim(), "tenant_meta");
    wait_ready(&ns, "atlasschema/config-target", &operator);
    assert_eq!(maria.query("show tables").unwrap().trim(), "users");
    // No Job carries a URL: they came as secretKeyRef env only.
    let jobs = kubectl(&["-n", &ns.name, "get", "jobs", "-o", "json"]).unwrap();
    for url in [&pg.url, &maria.url, &maria_dev.url] {
        assert!(!jobs.contains(url.as_str()), "a URL in a Job");
    }
}

/// Upstream's template directories: the ConfigMap's files are templates that the resource's
/// atlas.hcl renders (`data "template_dir"` over `migrations`) with a variable from a ConfigMap.
#[test]
fn a_template_directory_is_rendered_and_applied() {
    let (ns, db) = namespace_with_database("ctl-template-dir");
    migration_dir(
        &ns,
        hashed(&[("1_init.sql", "create table {{ .table }} (id int);\n")]),
    );
    configmap(&ns, "atlas-settings", json!({"table": "from_template"}));
    let operator = start_operator_with(&ns.name, &["--allow-custom-config"]);
    let mut migration = seed_migration();
    migration["spec"]["config"] = json!(
        "variable \"table\" {\n  type = string\n}\n\ndata \"template_dir\" \"migrations\" {\n  path = \"migrations\"\n  vars = {\n    table = var.table\n  }\n}\n\nenv \"k8s\" {\n  migration {\n    dir = data.template_dir.migrations.url\n  }\n}\n"
    );
    migration["spec"]["vars"] = json!([
        {"key": "table", "valueFrom": {"configMapKeyRef": {"name": "atlas-settings", "key": "table"}}}
    ]);
    apply_json(&ns.name, &migration);
    wait_ready(&ns, SEED_MIGRATION, &operator);
    let tables = db
        .query("select count(*) from information_schema.tables where table_name = 'from_template'")
        .unwrap();
    assert_eq!(tables.trim(), "1");
}

/// A directory that lost files the database has applied is a protected "migrate down": refused
/// in upstream's words, which scripts compare, and nothing is dropped.
#[test]
fn a_migrate_down_is_refused_in_upstreams_words() {
    let (ns, db) = namespace_with_database("ctl-down");
    let both = [
        ("1_a.sql", "create table a (id int);\n"),
        ("2_b.sql", "create table b (id int);\n"),
    ];
    migration_dir(&ns, hashed(&both));
    let operator = start_operator(&ns.name);
    apply_json(&ns.name, &seed_migration());
    wait_ready(&ns, SEED_MIGRATION, &operator);
    // The ConfigMap as a rollback in Git would leave it: the newer file is gone.
    apply_json(
        &ns.name,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "migrationdir"},
                "data": hashed(&both[..1])}),
    );
    let refused = wait_for(
        &ns,
        SEED_MIGRATION,
        Duration::from_secs(60),
        &operator,
        |m| ready(m).is_some_and(|r| r["reason"] == "ProtectedFlowError"),
    );
    let message = ready(&refused).unwrap()["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "migrate down is not allowed, set `migrateDown.allow` to true to allow downgrade"
        ),
        "{message}"
    );
    let tables = db
        .query("select count(*) from information_schema.tables where table_name = 'b'")
        .unwrap();
    assert_eq!(tables.trim(), "1", "nothing dropped");
}

/// `policy.lint.destructive` on an AtlasMigration without a devURL: nothing pending needs no
/// dev database; a pending file that drops a table with rows makes the first Job report the
/// target's driver, the next (`…-dev`) bring a sidecar dev database that the runner replays the
/// files on, and the drop is refused as LintPolicyError with an event: the rows stay.
#[test]
fn a_migration_lint_gets_a_dev_database_and_refuses_a_drop() {
    let (ns, db) = namespace_with_database("ctl-miglint");
    let base = ("1_a.sql", "create table a (id int);\n");
    migration_dir(&ns, hashed(&[base]));
    let operator = start_operator(&ns.name);
    let mut linted = seed_migration();
    linted["spec"]["policy"] = json!({"lint": {"destructive": {"error": true}}});
    apply_json(&ns.name, &linted);
    wait_ready(&ns, SEED_MIGRATION, &operator);
    db.query("insert into a values (1), (2)").unwrap();

    migration_dir(&ns, hashed(&[base, ("2_drop_a.sql", "drop table a;\n")]));
    let refused = wait_for(
        &ns,
        SEED_MIGRATION,
        Duration::from_secs(180),
        &operator,
        |m| ready(m).is_some_and(|r| r["reason"] == "LintPolicyError"),
    );
    let message = ready(&refused).unwrap()["message"].as_str().unwrap();
    assert!(
        message.starts_with("destructive changes detected:\n- DROP TABLE public.a\n"),
        "{message}"
    );
    assert!(message.contains("2_drop_a.sql"), "{message}");
    assert_eq!(refused["status"]["lastAppliedVersion"], "1");
    assert_eq!(db.query("select count(*) from a").unwrap().trim(), "2");
    let jobs = get(&ns, "jobs").unwrap();
    let names: Vec<&str> = jobs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["metadata"]["name"].as_str().unwrap())
        .collect();
    assert!(names.iter().any(|n| n.ends_with("-dev")), "{names:?}");
    let events = kubectl(&["-n", &ns.name, "get", "events.events.k8s.io", "-o", "json"]).unwrap();
    assert!(events.contains("LintPolicyError"), "{events}");
}

/// With every resource Ready, the operator makes no write at all.
#[test]
fn an_idle_operator_writes_nothing() {
    let (ns, _db) = namespace_with_database("ctl-idle");
    migration_dir(&ns, seed_files());
    let operator = start_operator(&ns.name);
    apply_json(&ns.name, &seed_migration());
    wait_ready(&ns, SEED_MIGRATION, &operator);
    // Let the last events of the apply land, then count.
    std::thread::sleep(Duration::from_secs(3));
    let audit = cluster().audit_log();
    let user = operator::user();
    let writes = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|line| {
                line.contains(&user) && line.contains(&format!("\"namespace\":\"{}\"", ns.name))
            })
            .filter(|line| {
                [
                    "\"verb\":\"create\"",
                    "\"verb\":\"update\"",
                    "\"verb\":\"patch\"",
                    "\"verb\":\"delete\"",
                ]
                .iter()
                .any(|verb| line.contains(verb))
            })
            .map(str::to_string)
            .collect()
    };
    let before = writes(&std::fs::read_to_string(&audit).unwrap()).len();
    // The filter sees the operator's writes: the apply made some (Job, status, events).
    assert!(
        before > 0,
        "no write by {user} found in {}",
        audit.display()
    );
    std::thread::sleep(Duration::from_secs(60));
    let after = writes(&std::fs::read_to_string(&audit).unwrap());
    assert_eq!(
        after.len(),
        before,
        "writes while idle: {:#?}",
        &after[before..]
    );
}

/// A sentinel password: in no log, event, status, Job or pod spec, or termination message.
#[test]
fn a_password_appears_nowhere() {
    let ns = cluster().namespace("ctl-sentinel").unwrap();
    let db = TestDatabase::create(Engine::Postgres, "ctl_sentinel").unwrap();
    let role = format!("r_{}", db.name);
    let password = "Sentinel-Ctl-81x";
    db.query(&format!(
        "create role {role} login password '{password}'; alter database {} owner to {role}; grant all on schema public to {role}",
        db.name
    ))
    .unwrap();
    let servers = devcluster::db::shared().unwrap();
    secret(&ns, "db", json!({"password": password}));
    migration_dir(&ns, seed_files());
    let operator = start_operator(&ns.name);
    apply_json(
        &ns.name,
        &json!({"apiVersion": "db.atlasgo.io/v1alpha1", "kind": "AtlasMigration",
        "metadata": {"name": "sentinel"},
        "spec": {"credentials": {"scheme": "postgres", "user": role, "host": "127.0.0.1",
                                  "port": servers.postgres_port, "database": db.name,
                                  "parameters": {"sslmode": "disable"},
                                  "passwordFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                 "dir": {"configMapRef": {"name": "migrationdir"}}}}),
    );
    wait_for(
        &ns,
        "atlasmigration/sentinel",
        Duration::from_secs(120),
        &operator,
        |m| ready(m).is_some_and(|r| r["status"] == "True"),
    );
    let everything = [
        kubectl(&[
            "-n",
            &ns.name,
            "get",
            "atlasmigrations,jobs,pods,configmaps,events.events.k8s.io",
            "-o",
            "json",
        ])
        .unwrap(),
        operator.log(),
    ];
    for text in everything {
        assert!(!text.contains(password), "the password leaked:\n{text}");
    }
}

/// A password written in the spec (an inline URL, as upstream's examples do) reaches the Job's pod
/// through a Secret the operator creates, owned by the Job: never through a ConfigMap (the
/// built-in `view` role reads those), the Job's spec, the status, events or the log. The Secret
/// goes with its Job.
#[test]
fn an_inline_password_is_kept_in_a_secret_owned_by_the_job() {
    let ns = cluster().namespace("ctl-inline").unwrap();
    let db = TestDatabase::create(Engine::Postgres, "ctl_inline").unwrap();
    let role = format!("r_{}", db.name);
    let password = "Sentinel-Inline-52q";
    db.query(&format!(
        "create role {role} login password '{password}'; alter database {} owner to {role}; grant all on schema public to {role}",
        db.name
    ))
    .unwrap();
    let servers = devcluster::db::shared().unwrap();
    migration_dir(&ns, seed_files());
    let operator = start_operator(&ns.name);
    let url = format!(
        "postgres://{role}:{password}@127.0.0.1:{}/{}?sslmode=disable",
        servers.postgres_port, db.name
    );
    apply_json(
        &ns.name,
        &json!({"apiVersion": "db.atlasgo.io/v1alpha1", "kind": "AtlasMigration",
        "metadata": {"name": "inline"},
        "spec": {"url": url, "dir": {"configMapRef": {"name": "migrationdir"}}}}),
    );
    wait_for(
        &ns,
        "atlasmigration/inline",
        Duration::from_secs(120),
        &operator,
        |m| ready(m).is_some_and(|r| r["status"] == "True"),
    );
    // The resource itself holds it, as written: what the admission warning is about.
    let status = kubectl(&[
        "-n",
        &ns.name,
        "get",
        "atlasmigration/inline",
        "-o",
        "jsonpath={.status}",
    ])
    .unwrap();
    let readable_by_view = kubectl(&[
        "-n",
        &ns.name,
        "get",
        "jobs,pods,configmaps,events.events.k8s.io",
        "-o",
        "json",
    ])
    .unwrap();
    for text in [status, readable_by_view, operator.log()] {
        assert!(!text.contains(password), "the password leaked:\n{text}");
    }
    let jobs = get(&ns, "jobs").unwrap();
    let job = &jobs["items"][0];
    // By default a mesh's proxy is kept out of the Job's pod (it would keep it running).
    assert_eq!(
        job["spec"]["template"]["metadata"]["annotations"]["sidecar.istio.io/inject"],
        "false"
    );
    let secret: Value = serde_json::from_str(
        &kubectl(&[
            "-n",
            &ns.name,
            "get",
            "secret",
            &format!("{}-credentials", job["metadata"]["name"].as_str().unwrap()),
            "-o",
            "json",
        ])
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["uid"],
        job["metadata"]["uid"]
    );
    assert_eq!(secret["immutable"], true);

    // With its Job, the garbage collector takes the Secret (on a cluster just started it begins
    // only once all its informers have synced, which can take a minute).
    kubectl(&[
        "-n",
        &ns.name,
        "delete",
        "atlasmigration/inline",
        "--wait=true",
    ])
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let secrets = kubectl(&["-n", &ns.name, "get", "secrets", "-o", "name"]).unwrap();
        if !secrets.contains("-credentials") {
            break;
        }
        assert!(Instant::now() < deadline, "still there: {secrets}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The install-wide Atlas Cloud token reaches the Job's pod from a Secret of its namespace, and
/// a namespace without that Secret still runs (the reference is optional); the token is in no
/// Job spec, status, event or log, and the runner says what became of it.
#[test]
fn the_install_wide_atlas_token_reaches_the_job_from_its_namespace() {
    let token = "aci_Sentinel-Token-9d1";
    let (ns, _db) = namespace_with_database("ctl-token");
    secret(&ns, "atlas-token-secret", json!({"ATLAS_TOKEN": token}));
    migration_dir(&ns, seed_files());
    let operator = start_operator_with(&ns.name, &["--atlas-token-secret", "atlas-token-secret"]);
    apply_json(&ns.name, &seed_migration());
    wait_ready(&ns, SEED_MIGRATION, &operator);

    let jobs = get(&ns, "jobs").unwrap();
    let job = &jobs["items"][0];
    let env = job["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    let var = env.iter().find(|v| v["name"] == "ATLAS_TOKEN").unwrap();
    assert_eq!(
        var["valueFrom"]["secretKeyRef"],
        json!({"name": "atlas-token-secret", "key": "ATLAS_TOKEN", "optional": true})
    );
    let name = job["metadata"]["name"].as_str().unwrap();
    let log = ns
        .cluster()
        .kubectl_output(&["-n", &ns.name, "logs", &format!("job/{name}")])
        .unwrap();
    assert!(
        log.contains("Atlas Cloud token given (ATLAS_TOKEN)"),
        "{log}"
    );
    let readable = kubectl(&[
        "-n",
        &ns.name,
        "get",
        "jobs,pods,configmaps,events.events.k8s.io,atlasmigrations",
        "-o",
        "json",
    ])
    .unwrap();
    for text in [readable, log, operator.log()] {
        assert!(!text.contains(token), "the token leaked:\n{text}");
    }

    // Without the Secret in the namespace the Job runs without a token.
    kubectl(&["-n", &ns.name, "delete", "secret", "atlas-token-secret"]).unwrap();
    migration_dir(
        &ns,
        hashed(&[
            (seed::MIGRATION_FILE, seed::MIGRATION_SQL),
            (
                "20230316085612.sql",
                "alter table users add column nick text;\n",
            ),
        ]),
    );
    wait_for(
        &ns,
        SEED_MIGRATION,
        Duration::from_secs(120),
        &operator,
        |m| {
            m["status"]["lastAppliedVersion"] == "20230316085612"
                && ready(m).is_some_and(|r| r["status"] == "True")
        },
    );
}

/// A Job whose pods the API server refuses (here a ValidatingAdmissionPolicy of the namespace,
/// as a cluster's policy engine would): said within seconds with the API server's own words,
/// as a retried failure (Reconciling=True), not as progress for ever.
#[test]
fn a_job_whose_pods_are_refused_says_why() {
    let (ns, _db) = namespace_with_database("ctl-podrefused");
    let policy = format!("deny-pods-{}", ns.name);
    apply_json(
        &ns.name,
        &json!({"apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy", "metadata": {"name": policy},
            "spec": {"failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                       "operations": ["CREATE"], "resources": ["pods"]}],
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns.name}}},
                "validations": [{"expression": "false",
                    "message": "pods here need the team label (policy test)"}]}}),
    );
    apply_json(
        &ns.name,
        &json!({"apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": policy},
            "spec": {"policyName": policy, "validationActions": ["Deny"]}}),
    );
    // A new policy takes effect once the API server's admission has loaded it: wait until it
    // refuses a pod (a server-side dry run creates nothing).
    eventually(
        "the policy to refuse pods",
        Duration::from_secs(30),
        || {
            let probe = kubectl(&[
                "-n",
                &ns.name,
                "run",
                "probe",
                "--image=busybox:1.36",
                "--restart=Never",
                "--dry-run=server",
            ]);
            match probe {
                Err(err) if err.contains("pods here need the team label") => Some(()),
                _ => None,
            }
        },
        String::new,
    );
    migration_dir(&ns, seed_files());
    let operator = start_operator(&ns.name);
    apply_json(&ns.name, &seed_migration());
    let started = Instant::now();
    let refused = wait_for(
        &ns,
        SEED_MIGRATION,
        Duration::from_secs(60),
        &operator,
        |m| {
            ready(m).is_some_and(|r| {
                r["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("cannot create its pod")
            })
        },
    );
    eprintln!(
        "refusal said {:.1}s after apply",
        started.elapsed().as_secs_f64()
    );
    let message = ready(&refused).unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("pods here need the team label (policy test)"),
        "{message}"
    );
    assert_eq!(ready(&refused).unwrap()["reason"], "Migrating");
    assert_eq!(
        condition(&refused, "Reconciling").unwrap()["status"],
        "True"
    );
    assert_eq!(condition(&refused, "Stalled").unwrap()["status"], "False");
    for kind in [
        "validatingadmissionpolicybinding",
        "validatingadmissionpolicy",
    ] {
        kubectl(&["delete", kind, &policy, "--ignore-not-found"]).unwrap();
    }
}

/// A plain HTTP GET on loopback (the operator's endpoints), without a client library.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())?;
    Some((status, body))
}

#[test]
fn health_and_metrics_endpoints_report_the_work() {
    let (ns, _db) = namespace_with_database("ctl-metrics");
    migration_dir(&ns, seed_files());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let operator = start_operator_with(&ns.name, &["--metrics-address", &address]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(port, "/readyz").map(|(status, _)| status) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "/readyz never answered 200:\n{}",
            operator.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(http_get(port, "/healthz").unwrap(), (200, "ok".to_string()));
    apply_json(&ns.name, &seed_migration());
    wait_ready(&ns, SEED_MIGRATION, &operator);
    let (status, metrics) = http_get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("atlas_operator_jobs_created_total{kind=\"AtlasMigration\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("atlas_operator_reconciles_total{kind=\"AtlasMigration\",outcome=\"ok\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("atlas_operator_reconcile_duration_seconds_bucket"),
        "{metrics}"
    );
    // controller-runtime's series, which stock dashboards and alerts for Kubernetes operators
    // query: one controller per kind, named after it.
    for series in [
        "controller_runtime_reconcile_total{controller=\"atlasmigration\",result=\"success\"}",
        "controller_runtime_reconcile_time_seconds_bucket{le=\"0.005\",controller=\"atlasmigration\"}",
        "controller_runtime_active_workers{controller=\"atlasmigration\"} ",
        "controller_runtime_max_concurrent_reconciles{controller=\"atlasmigration\"} 4",
        "atlas_operator_resources_reconciling{kind=\"AtlasMigration\"} 0",
    ] {
        assert!(metrics.contains(series), "{series}:\n{metrics}");
    }
    // Resources by Ready state, read from the operator's cache at the scrape.
    assert!(
        metrics.contains("atlas_operator_resources{kind=\"AtlasMigration\",ready=\"True\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("atlas_operator_resources{kind=\"AtlasSchema\",ready=\"True\"} 0"),
        "{metrics}"
    );
    kubectl(&["-n", &ns.name, "delete", SEED_MIGRATION, "--wait=true"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = http_get(port, "/metrics").unwrap();
        if metrics.contains("atlas_operator_resources{kind=\"AtlasMigration\",ready=\"True\"} 0") {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Two replicas: one leads and makes the one Job; the other waits.
#[test]
fn two_operators_elect_one_leader_and_make_one_job() {
    let (ns, _db) = namespace_with_database("ctl-leader");
    migration_dir(&ns, seed_files());
    let first = start_operator(&ns.name);
    let second = start_operator(&ns.name);
    apply_json(&ns.name, &seed_migration());
    wait_ready(&ns, SEED_MIGRATION, &first);
    let jobs = get(&ns, "jobs").unwrap();
    assert_eq!(jobs["items"].as_array().unwrap().len(), 1);
    let leaders = [first.log(), second.log()]
        .iter()
        .filter(|log| log.contains("leading: starting the controllers"))
        .count();
    assert_eq!(
        leaders,
        1,
        "first:\n{}\nsecond:\n{}",
        first.log(),
        second.log()
    );
    // Each replica writes the Lease under a field manager of its own (the lock itself is the
    // resourceVersion of every replace), so the managed fields name the holder.
    let lease_name = format!("lease/atlas-operator-{}", ns.name);
    let lease: Value = serde_json::from_str(
        &kubectl(&[
            "-n",
            "atlas-operator-system",
            "get",
            &lease_name,
            "-o",
            "json",
            "--show-managed-fields",
        ])
        .unwrap(),
    )
    .unwrap();
    let holder = lease["spec"]["holderIdentity"].as_str().unwrap();
    let managers: Vec<&str> = lease["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["manager"].as_str())
        .collect();
    assert!(
        managers.contains(&atlas_operator::runtime::lease_field_manager(holder).as_str()),
        "{managers:?}"
    );
    assert!(
        !managers.contains(&"atlas-operator"),
        "a shared field manager on the Lease: {managers:?}"
    );
}

/// A standby leads within a second of the leader releasing the Lease (SIGTERM), and within the
/// Lease's duration (15 s) plus 2 s of the leader's crash (SIGKILL). The crate used before slept
/// until the expiry it had last read and took 15–27 s in both cases.
#[test]
fn a_standby_takes_over_at_once_after_a_release_and_soon_after_a_crash() {
    let ns = cluster().namespace("ctl-takeover").unwrap();
    let leads = |operator: &OperatorProcess, limit: Duration| -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if operator.log().contains("leading: starting the controllers") {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    };
    let stands_by = |operator: &OperatorProcess| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !operator.log().contains("waiting for the leadership") {
            assert!(Instant::now() < deadline, "{}", operator.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut first = start_operator(&ns.name);
    leads(&first, Duration::from_secs(30)).unwrap_or_else(|| panic!("{}", first.log()));
    let mut second = start_operator(&ns.name);
    stands_by(&second);
    // Long enough for the standby to have seen the leader renew at least once.
    std::thread::sleep(Duration::from_secs(6));
    assert!(!second.log().contains("leading:"), "{}", second.log());

    let status = first
        .terminate(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("{}", first.log()));
    assert!(status.success(), "{status:?}\n{}", first.log());
    let after_release = leads(&second, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("standby never led:\n{}", second.log()));
    assert!(
        after_release < Duration::from_secs(2),
        "led {after_release:?} after the release:\n{}",
        second.log()
    );

    let third = start_operator(&ns.name);
    stands_by(&third);
    std::thread::sleep(Duration::from_secs(6));
    second.kill();
    let after_crash = leads(&third, Duration::from_secs(40))
        .unwrap_or_else(|| panic!("standby never led:\n{}", third.log()));
    assert!(
        after_crash <= Duration::from_secs(17),
        "led {after_crash:?} after the crash:\n{}",
        third.log()
    );
    eprintln!("took over {after_release:?} after a release, {after_crash:?} after a crash");
}

/// The seed's MySQL AtlasSchema, unchanged (no dev URL, the URL in a Secret): the operator finds
/// the driver with a first Job and brings a throwaway dev database with the second.
#[test]
fn the_seed_schema_unchanged_gets_a_dev_database_of_its_own() {
    let ns = cluster().namespace("ctl-devdb").unwrap();
    let db = TestDatabase::create(Engine::MariaDb, "ctl_devdb").unwrap();
    secret(&ns, "mysql-credentials", json!({"url": db.url}));
    let operator = start_operator(&ns.name);
    let seed =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mysql-schema/schema.yaml");
    kubectl(&["-n", &ns.name, "apply", "-f", seed.to_str().unwrap()]).unwrap();
    let done = wait_for(
        &ns,
        "atlasschema/atlasschema-mysql",
        Duration::from_secs(180),
        &operator,
        |s| ready(s).is_some_and(|r| r["status"] == "True"),
    );
    assert_eq!(ready(&done).unwrap()["reason"], "Applied");
    let columns = db
        .query("select column_name from information_schema.columns where table_schema = database() and table_name = 'users' order by ordinal_position")
        .unwrap();
    assert_eq!(columns.trim(), "id\nname\nemail\nshort_bio");
    let jobs = get(&ns, "jobs").unwrap();
    let names: Vec<&str> = jobs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().any(|n| n.ends_with("-dev")), "{names:?}");
}

/// The migration directory's ConfigMap does not exist yet: a clear reason and an event, no Job,
/// and the apply starts by itself once the ConfigMap is created.
#[test]
fn a_missing_configmap_is_reported_and_its_creation_unblocks_the_apply() {
    let (ns, _db) = namespace_with_database("ctl-nocm");
    let operator = start_operator(&ns.name);
    apply_json(&ns.name, &seed_migration());
    let waiting = wait_for(
        &ns,
        SEED_MIGRATION,
        Duration::from_secs(60),
        &operator,
        |m| ready(m).is_some_and(|r| r["reason"] == "ReadingMigrationData"),
    );
    assert_eq!(
        ready(&waiting).unwrap()["message"],
        "ConfigMap migrationdir not found"
    );
    let events = kubectl(&["-n", &ns.name, "get", "events.events.k8s.io", "-o", "json"]).unwrap();
    assert!(
        events.contains("ConfigMap migrationdir not found"),
        "{events}"
    );
    assert!(
        get(&ns, "jobs").unwrap()["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    migration_dir(&ns, seed_files());
    wait_ready(&ns, SEED_MIGRATION, &operator);
}

/// A resource that brings its own atlas.hcl is refused by a default operator, with the flag to
/// ask for; an operator started with `--allow-custom-config` applies it, its variable (read from
/// a Secret) included.
#[test]
fn a_custom_config_runs_only_where_the_operator_allows_it() {
    let ns = cluster().namespace("ctl-custom").unwrap();
    let db = TestDatabase::create(Engine::Postgres, "ctl_custom").unwrap();
    db.query("create schema tenant_meta").unwrap();
    secret(&ns, "postgres-credentials", json!({"url": db.url}));
    secret(&ns, "atlas-vars", json!({"meta": "tenant_meta"}));
    migration_dir(&ns, seed_files());
    let mut custom = seed_migration();
    custom["spec"]["config"] = json!(
        "variable \"meta\" {\n  type = string\n}\n\nenv \"k8s\" {\n  migration {\n    revisions_schema = var.meta\n  }\n}\n"
    );
    custom["spec"]["vars"] = json!([
        {"key": "meta", "valueFrom": {"secretKeyRef": {"name": "atlas-vars", "key": "meta"}}}
    ]);
    let refusing = start_operator(&ns.name);
    apply_json(&ns.name, &custom);
    let refused = wait_for(
        &ns,
        SEED_MIGRATION,
        Duration::from_secs(60),
        &refusing,
        |m| ready(m).is_some_and(|r| r["status"] == "False" && r["reason"] != "Reconciling"),
    );
    let condition = ready(&refused).unwrap();
    assert_eq!(condition["reason"], "ReadingMigrationData");
    assert!(
        condition["message"]
            .as_str()
            .unwrap()
            .contains("--allow-custom-config"),
        "{condition}"
    );
    assert!(
        get(&ns, "jobs").unwrap()["items"]
            .as_array()
            .unwrap()
            .is_empty(),
        "no Job for a refused config"
    );
    let events = kubectl(&["-n", &ns.name, "get", "events", "-o", "json"]).unwrap();
    assert!(events.contains("allow-custom-config"), "{events}");
    drop(refusing);

    let allowing = start_operator_with(&ns.name, &["--allow-custom-config"]);
    wait_ready(&ns, SEED_MIGRATION, &allowing);
    let where_ = db
        .query("select table_schema from information_schema.tables where table_name = 'atlas_schema_revisions'")
        .unwrap();
    assert_eq!(where_.trim(), "tenant_meta");
}

/// One operator, two namespaces: resources failing in one (a missing Secret, broken SQL) do not
/// hold up the other's.
#[test]
fn failures_in_one_namespace_do_not_hold_up_another() {
    let broken = cluster().namespace("ctl-broken").unwrap();
    let healthy = cluster().namespace("ctl-healthy").unwrap();
    let db = TestDatabase::create(Engine::Postgres, "ctl_healthy").unwrap();
    let bad_db = TestDatabase::create(Engine::Postgres, "ctl_broken").unwrap();
    secret(&healthy, "postgres-credentials", json!({"url": db.url}));
    migration_dir(&healthy, seed_files());
    // In the broken namespace: no Secret at all for one, broken SQL for the other.
    secret(&broken, "broken-sql", json!({"url": bad_db.url}));
    configmap(
        &broken,
        "broken-dir",
        hashed(&[("20230101000000.sql", "create tabel oops (id int);\n")]),
    );
    let mut no_secret = seed_migration();
    no_secret["metadata"]["name"] = json!("no-secret");
    let mut broken_sql = seed_migration();
    broken_sql["metadata"]["name"] = json!("broken-sql");
    broken_sql["spec"]["urlFrom"]["secretKeyRef"]["name"] = json!("broken-sql");
    broken_sql["spec"]["dir"]["configMapRef"]["name"] = json!("broken-dir");
    migration_dir(&broken, seed_files());

    let operator = OperatorProcess::start_with(
        &cluster(),
        std::path::Path::new(env!("CARGO_BIN_EXE_atlas-operator")),
        &[&broken.name, &healthy.name],
        &["--concurrency", "1"],
    )
    .unwrap();
    apply_json(&broken.name, &no_secret);
    apply_json(&broken.name, &broken_sql);
    apply_json(&healthy.name, &seed_migration());
    wait_ready(&healthy, SEED_MIGRATION, &operator);
    wait_for(
        &broken,
        "atlasmigration/no-secret",
        Duration::from_secs(60),
        &operator,
        |m| ready(m).is_some_and(|r| r["reason"] == "ReadingMigrationData"),
    );
    wait_for(
        &broken,
        "atlasmigration/broken-sql",
        Duration::from_secs(120),
        &operator,
        |m| ready(m).is_some_and(|r| r["reason"] == "Migrating"),
    );
}

/// `backoffLimit` and `status.failed` as upstream's users read them: `failed` counts the failed
/// attempts while retries go on (the Job controller backs off between them), retries stop once
/// it exceeds `backoffLimit`, and it is 0 again once applied.
#[test]
fn failed_counts_the_attempts_up_to_the_backoff_limit() {
    let (ns, db) = namespace_with_database("ctl-retry");
    migration_dir(&ns, seed_files());
    // Nothing listens on port 1: connection refused, which the runner reports as transient.
    secret(
        &ns,
        "postgres-credentials",
        json!({"url": "postgres://root:pass@127.0.0.1:1/db?sslmode=disable"}),
    );
    let operator = start_operator(&ns.name);
    let mut migration = seed_migration();
    migration["spec"]["backoffLimit"] = json!(1);
    apply_json(&ns.name, &migration);
    let retrying = wait_for(
        &ns,
        SEED_MIGRATION,
        Duration::from_secs(60),
        &operator,
        |m| m["status"]["failed"] == 1,
    );
    // Shown at once with its reason while the Job retries; Reconciling=True until it stops.
    assert_eq!(ready(&retrying).unwrap()["reason"], "Migrating");
    assert_eq!(
        condition(&retrying, "Reconciling").unwrap()["status"],
        "True"
    );
    let failed = wait_for(
        &ns,
        SEED_MIGRATION,
        Duration::from_secs(90),
        &operator,
        |m| condition(m, "Stalled").is_some_and(|c| c["status"] == "True"),
    );
    assert_eq!(ready(&failed).unwrap()["reason"], "Migrating");
    assert_eq!(
        condition(&failed, "Reconciling").unwrap()["status"],
        "False"
    );
    assert_eq!(failed["status"]["failed"], 2, "{}", failed["status"]);
    assert!(
        ready(&failed).unwrap()["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("connection refused"),
        "{}",
        failed["status"]
    );
    let jobs = get(&ns, "jobs").unwrap();
    assert_eq!(
        jobs["items"][0]["status"]["failed"], 2,
        "one retry, then no more"
    );

    // Fixed: the right URL, and a change to the spec (a Secret's change alone applies nothing).
    secret(&ns, "postgres-credentials", json!({"url": db.url}));
    migration["spec"]["backoffLimit"] = json!(2);
    apply_json(&ns.name, &migration);
    let done = wait_ready(&ns, SEED_MIGRATION, &operator);
    assert_eq!(done["status"]["failed"], 0);
}

/// At the default level the operator's log says which resources it handled: one line for each
/// Job it made and each change of Ready, with the resource, the hash and the outcome as fields
/// (JSON with --log-format json), and no colour codes when its output is not a terminal.
#[test]
fn the_log_names_each_resource_it_handled() {
    let (ns, _db) = namespace_with_database("ctl-log");
    migration_dir(&ns, seed_files());
    let operator = start_operator_with(&ns.name, &["--log-format", "json"]);
    apply_json(&ns.name, &seed_migration());
    wait_ready(&ns, SEED_MIGRATION, &operator);
    let log = operator.log();
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );
    let resource = format!("{}/atlasmigration-sample", ns.name);
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let line = |message: &str, ready: Option<&str>| {
        lines
            .iter()
            .find(|l| {
                l["fields"]["message"] == message
                    && l["fields"]["resource"] == resource.as_str()
                    && ready.is_none_or(|ready| l["fields"]["ready"] == ready)
            })
            .unwrap_or_else(|| panic!("no {message:?} line for {resource}:\n{log}"))
    };
    let created = line("Job created", None);
    assert_eq!(created["level"], "INFO");
    assert_eq!(created["fields"]["kind"], "AtlasMigration");
    let hash = created["fields"]["hash"].as_str().unwrap();
    assert!(
        created["fields"]["job"].as_str().unwrap().ends_with(hash),
        "{created}"
    );
    let started = line("Ready changed", Some("False"));
    assert_eq!(started["fields"]["reason"], "Reconciling");
    let ready = line("Ready changed", Some("True"));
    assert_eq!(ready["fields"]["reason"], "Applied");
    assert_eq!(ready["fields"]["desired_hash"], hash);
    assert!(
        ready["fields"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("migrated to version 20230316085611"),
        "{ready}"
    );
}

/// SIGTERM, as Kubernetes sends when it deletes the operator's pod: the process exits cleanly
/// and gives the Lease up, so a standby replica does not wait for it to expire.
#[test]
fn sigterm_stops_the_operator_cleanly_and_releases_its_lease() {
    let ns = cluster().namespace("ctl-sigterm").unwrap();
    let mut operator = start_operator(&ns.name);
    let lease = format!("lease/{}", operator::lease_name(&[&ns.name]));
    let holder = || {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = kubectl(&["-n", operator::NAMESPACE, "get", &lease, "-o", "json"])
                .unwrap_or_default();
            let holder = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string));
            if holder.is_some() || Instant::now() > deadline {
                return holder;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    assert!(holder().is_some(), "{}", operator.log());
    // A standby has no reconcile to finish: it stops at once, leaving the leader's Lease alone.
    let mut standby = start_operator(&ns.name);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !standby.log().contains("waiting for the leadership") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let stopped = standby
        .terminate(Duration::from_secs(5))
        .unwrap_or_else(|| {
            panic!(
                "standby still running 5 s after SIGTERM:\n{}",
                standby.log()
            )
        });
    assert!(stopped.success(), "{stopped:?}\n{}", standby.log());
    assert!(
        standby.log().contains("stopped while standing by"),
        "{}",
        standby.log()
    );
    assert!(holder().is_some(), "the leader still holds the Lease");
    let status = operator
        .terminate(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("still running 20 s after SIGTERM:\n{}", operator.log()));
    assert!(status.success(), "{status:?}\n{}", operator.log());
    assert!(
        operator.log().contains("lease released"),
        "{}",
        operator.log()
    );
    let text = kubectl(&["-n", operator::NAMESPACE, "get", &lease, "-o", "json"]).unwrap();
    let released: Value = serde_json::from_str(&text).unwrap();
    assert!(
        released["spec"]["holderIdentity"].is_null(),
        "{}",
        released["spec"]
    );
}

/// `--label-selector`: resources without the label are left alone (no status, no Job).
#[test]
fn a_label_selector_limits_what_the_operator_touches() {
    let (ns, _db) = namespace_with_database("ctl-selector");
    migration_dir(&ns, seed_files());
    let operator = start_operator_with(&ns.name, &["--label-selector", "team=payments"]);
    let mut ours = seed_migration();
    ours["metadata"]["labels"] = json!({"team": "payments"});
    let mut theirs = seed_migration();
    theirs["metadata"]["name"] = json!("someone-elses");
    apply_json(&ns.name, &theirs);
    apply_json(&ns.name, &ours);
    wait_ready(&ns, SEED_MIGRATION, &operator);
    let untouched = get(&ns, "atlasmigration/someone-elses").unwrap();
    // (The API server fills the status's schema defaults; the operator wrote no condition.)
    assert!(
        untouched["status"]["conditions"].is_null(),
        "{}",
        untouched["status"]
    );
    let jobs = get(&ns, "jobs").unwrap();
    assert_eq!(jobs["items"].as_array().unwrap().len(), 1, "{jobs}");
}

/// A PostgreSQL AtlasSchema with the URL in a Secret and no dev URL, two at once: each Job
/// brings its own dev database, both apply, and every dev database is gone when its Job ends.
#[test]
fn postgres_schemas_without_a_dev_url_get_dev_databases_side_by_side() {
    let ns = cluster().namespace("ctl-pgdev").unwrap();
    let dbs = [
        TestDatabase::create(Engine::Postgres, "ctl_pgdev_a").unwrap(),
        TestDatabase::create(Engine::Postgres, "ctl_pgdev_b").unwrap(),
    ];
    let operator = start_operator(&ns.name);
    for (name, db) in ["app-a", "app-b"].iter().zip(&dbs) {
        secret(&ns, name, json!({"url": db.url}));
        apply_json(
            &ns.name,
            &json!({"apiVersion": "db.atlasgo.io/v1alpha1", "kind": "AtlasSchema",
                "metadata": {"name": name},
                "spec": {"urlFrom": {"secretKeyRef": {"key": "url", "name": name}},
                         "schema": {"sql": "create table users (\n  id serial primary key,\n  email varchar(255) unique not null\n);\n"}}}),
        );
    }
    for name in ["app-a", "app-b"] {
        let done = wait_for(
            &ns,
            &format!("atlasschema/{name}"),
            Duration::from_secs(180),
            &operator,
            |s| ready(s).is_some_and(|r| r["status"] == "True"),
        );
        assert_eq!(ready(&done).unwrap()["reason"], "Applied");
    }
    for db in &dbs {
        let columns = db
            .query("select column_name from information_schema.columns where table_name = 'users' order by ordinal_position")
            .unwrap();
        assert_eq!(columns.trim(), "id\nemail");
    }
    // Every dev database sidecar stopped with its pod: nothing keeps running.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pods = get(&ns, "pods").unwrap();
        let dev_pods: Vec<&Value> = pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| {
                p["spec"]["initContainers"]
                    .as_array()
                    .is_some_and(|c| !c.is_empty())
            })
            .collect();
        let running: Vec<String> = dev_pods
            .iter()
            .flat_map(|p| {
                p["status"]["initContainerStatuses"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter(|c| c["state"]["terminated"].is_null())
            .map(|c| c["name"].to_string())
            .collect();
        if dev_pods.len() == 2 && running.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dev pods {}, sidecars still running: {running:?}",
            dev_pods.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A dev database image that cannot start ends in GettingDevDB with what went wrong, and no
/// change is made to the target.
#[test]
fn a_dev_database_that_cannot_start_is_getting_dev_db() {
    let ns = cluster().namespace("ctl-baddev").unwrap();
    let db = TestDatabase::create(Engine::Postgres, "ctl_baddev").unwrap();
    let operator = start_operator_with(
        &ns.name,
        &[
            "--dev-image-postgres",
            "registry.invalid/no-such-postgres:16",
        ],
    );
    apply_json(
        &ns.name,
        &json!({"apiVersion": "db.atlasgo.io/v1alpha1", "kind": "AtlasSchema",
            "metadata": {"name": "no-dev"},
            "spec": {"url": db.url,
                     "schema": {"sql": "create table t (id int primary key);\n"}}}),
    );
    let failed = wait_for(
        &ns,
        "atlasschema/no-dev",
        Duration::from_secs(90),
        &operator,
        |s| ready(s).is_some_and(|r| r["reason"] == "GettingDevDB"),
    );
    let message = ready(&failed).unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("no-such-postgres"), "{message}");
    assert_eq!(
        db.query("select count(*) from information_schema.tables where table_name = 't'")
            .unwrap()
            .trim(),
        "0"
    );
}
