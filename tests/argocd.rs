//! The ArgoCD example (`examples/argocd/kustomize/`): rendered by the pinned `kubectl kustomize`
//! as ArgoCD's repo server renders it, the migration and its generated ConfigMap sit a sync wave
//! before the application, and a sync run the way ArgoCD runs one (wave by wave, the next wave
//! only once the last is Healthy by ArgoCD's health rules for `db.atlasgo.io`, see
//! `status::argo_health`) applies the seed migration through the real operator, Atlas and
//! PostgreSQL before the application's Deployment exists. A migration that fails is Degraded and
//! holds the application back until a fixed directory is synced.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use atlas_operator::reconcile::status::{self, ArgoHealth};
use contract::Kind;
use devcluster::cluster::TestNamespace;
use devcluster::db::{Engine, TestDatabase};
use devcluster::operator::OperatorProcess;
use serde_json::{Value, json};
use support::e2e::{apply_json, cluster, get, hashed, ready, secret, start_operator};
use support::{repo_path, yaml_documents};

const EXAMPLE: &str = "examples/argocd/kustomize";
const WAVE: &str = "argocd.argoproj.io/sync-wave";
const LIMIT: Duration = Duration::from_secs(120);

/// `kubectl kustomize <dir>` with the pinned kubectl (kustomize v5, as ArgoCD bundles), as JSON.
fn render(dir: &Path) -> Vec<Value> {
    let kubectl = devcluster::tools::path("kubectl")
        .unwrap_or_else(|err| panic!("the pinned kubectl (run `cargo xtask tools`): {err}"));
    let mut command = std::process::Command::new(kubectl);
    command.arg("kustomize").arg(dir);
    let text = devcluster::cmd::output(&mut command, Duration::from_secs(60))
        .unwrap_or_else(|err| panic!("kubectl kustomize {}: {err}", dir.display()));
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|err| panic!("reading what kustomize printed: {err}\n{text}"))
        .into_iter()
        .filter(|doc| !doc.is_null())
        .collect()
}

fn wave(doc: &Value) -> i64 {
    match doc["metadata"]["annotations"][WAVE].as_str() {
        Some(wave) => wave
            .parse()
            .unwrap_or_else(|_| panic!("{WAVE} {wave:?} is not a number")),
        None => 0,
    }
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn the<'a>(docs: &'a [Value], wanted: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| kind(d) == wanted).collect();
    assert_eq!(found.len(), 1, "expected one {wanted}: {docs:#?}");
    found[0]
}

fn atlas_kind(doc: &Value) -> Option<Kind> {
    match (doc["apiVersion"].as_str()?, kind(doc)) {
        ("db.atlasgo.io/v1alpha1", "AtlasMigration") => Some(Kind::Migration),
        ("db.atlasgo.io/v1alpha1", "AtlasSchema") => Some(Kind::Schema),
        _ => None,
    }
}

/// `atlas.sum` of a directory, as Atlas computes it.
fn atlas_sum(files: &[(&str, &str)]) -> String {
    hashed(files)["atlas.sum"].as_str().unwrap().to_string()
}

#[test]
fn the_example_renders_the_migration_a_wave_before_the_app() {
    let docs = render(&repo_path(&format!("{EXAMPLE}/manifests")));
    assert_eq!(docs.len(), 3, "{docs:#?}");
    let configmap = the(&docs, "ConfigMap");
    let migration = the(&docs, "AtlasMigration");
    let app = the(&docs, "Deployment");

    // kustomize names the ConfigMap after its content, and writes that name into the
    // AtlasMigration only because kustomizeconfig.yaml says the field is a ConfigMap reference.
    let generated = name(configmap);
    assert!(
        generated.starts_with("myapp-migrations-") && generated != "myapp-migrations",
        "{generated}"
    );
    assert_eq!(migration["spec"]["dir"]["configMapRef"]["name"], generated);

    // The same directory as the seed's ConfigMap, byte for byte (atlas.sum hashes the bytes), and
    // its atlas.sum is what Atlas computes for the file.
    let seed = yaml_documents(&repo_path("examples/postgres-migration/migrationdir.yaml"));
    assert_eq!(configmap["data"], seed[0]["data"]);
    let sql = configmap["data"]["20230316085611.sql"].as_str().unwrap();
    assert_eq!(
        configmap["data"]["atlas.sum"],
        atlas_sum(&[("20230316085611.sql", sql)])
    );

    // The directory and its migration first, then the application.
    assert_eq!(wave(configmap), -1);
    assert_eq!(wave(migration), -1);
    assert_eq!(wave(app), 0);
    let last_atlas_wave = docs
        .iter()
        .filter(|d| atlas_kind(d).is_some() || kind(d) == "ConfigMap")
        .map(wave)
        .max();
    let first_app_wave = docs
        .iter()
        .filter(|d| atlas_kind(d).is_none() && kind(d) != "ConfigMap")
        .map(wave)
        .min();
    assert!(last_atlas_wave < first_app_wave);

    // The Application syncs that folder and prunes old directories only after the last wave.
    let application = &yaml_documents(&repo_path(&format!("{EXAMPLE}/application.yaml")))[0];
    assert_eq!(application["kind"], "Application");
    assert_eq!(application["spec"]["source"]["path"], "manifests");
    assert!(
        application["spec"]["source"]["repoURL"]
            .as_str()
            .unwrap()
            .contains("REPLACE-ME")
    );
    let options = &application["spec"]["syncPolicy"]["syncOptions"];
    assert!(
        options
            .as_array()
            .unwrap()
            .contains(&json!("PruneLast=true")),
        "{options}"
    );
}

/// What a sync that did not finish stopped at.
#[derive(Debug)]
struct Stopped {
    wave: i64,
    resource: String,
    status: Value,
}

/// A sync as ArgoCD runs one, for the parts this example relies on: waves in order, lowest first;
/// within a wave ConfigMaps before custom resources (ArgoCD's kind order); the next wave only
/// once every `db.atlasgo.io` resource of this one is Healthy; Degraded ends the sync there.
/// Kinds without a health rule count as Healthy once applied, as in ArgoCD. Not done: diffing,
/// hooks, pruning.
///
/// ArgoCD waits 2 s after a wave (`ARGOCD_SYNC_WAVE_DELAY`) before it looks at health, so that
/// controllers can react to the change first; here the health is read once the operator has
/// observed the applied generation, which is what that delay is for, without a fixed sleep.
fn sync(ns: &TestNamespace, docs: &[Value], operator: &OperatorProcess) -> Result<(), Stopped> {
    let mut waves: Vec<i64> = docs.iter().map(wave).collect();
    waves.sort();
    waves.dedup();
    for current in waves {
        let mut in_wave: Vec<&Value> = docs.iter().filter(|d| wave(d) == current).collect();
        in_wave.sort_by_key(|d| (kind(d) != "ConfigMap", atlas_kind(d).is_some()));
        for doc in &in_wave {
            apply_json(&ns.name, doc);
        }
        for doc in in_wave {
            let Some(atlas) = atlas_kind(doc) else {
                continue;
            };
            let what = format!("{}/{}", kind(doc).to_lowercase(), name(doc));
            let deadline = Instant::now() + LIMIT;
            loop {
                let live = get(ns, &what).unwrap_or(Value::Null);
                let observed =
                    live["status"]["observedGeneration"] == live["metadata"]["generation"];
                let conditions: Vec<_> =
                    serde_json::from_value(live["status"]["conditions"].clone())
                        .unwrap_or_default();
                match (observed, status::argo_health(atlas, &conditions)) {
                    (true, ArgoHealth::Healthy) => break,
                    (true, ArgoHealth::Degraded) => {
                        return Err(Stopped {
                            wave: current,
                            resource: what,
                            status: live["status"].clone(),
                        });
                    }
                    _ => {}
                }
                assert!(
                    Instant::now() < deadline,
                    "{what} neither Healthy nor Degraded in {LIMIT:?}: {}\noperator log:\n{}",
                    live["status"],
                    operator.log()
                );
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }
    Ok(())
}

fn ready_condition(object: &Value) -> &Value {
    ready(object).unwrap_or(&Value::Null)
}

/// The namespace as the Application's destination: the Secret the example expects (not in Git)
/// pointing at a fresh PostgreSQL database, and the operator watching it.
fn destination(hint: &str) -> (TestNamespace, TestDatabase, OperatorProcess) {
    let ns = cluster()
        .namespace(hint)
        .unwrap_or_else(|err| panic!("creating a namespace: {err}"));
    let db = TestDatabase::create(Engine::Postgres, hint)
        .unwrap_or_else(|err| panic!("creating a database: {err}"));
    secret(&ns, "postgres-credentials", json!({"url": db.url}));
    let operator = start_operator(&ns.name);
    (ns, db, operator)
}

#[test]
fn a_sync_applies_the_app_only_once_the_migration_is_applied() {
    let (ns, db, operator) = destination("argocd-sync");
    let docs = render(&repo_path(&format!("{EXAMPLE}/manifests")));

    sync(&ns, &docs, &operator).unwrap_or_else(|stopped| {
        panic!(
            "the sync stopped: {stopped:#?}\noperator log:\n{}",
            operator.log()
        )
    });

    let migration = get(&ns, "atlasmigration/myapp-migration").unwrap();
    assert_eq!(
        ready_condition(&migration)["status"],
        "True",
        "{}",
        migration["status"]
    );
    assert_eq!(ready_condition(&migration)["reason"], "Applied");
    assert_eq!(migration["status"]["lastAppliedVersion"], "20230316085611");
    assert_eq!(
        db.query("select count(*) from users").unwrap().trim(),
        "0",
        "the seed's table is there"
    );
    // The API server's own clock: the application was created once the migration was Ready.
    let app = get(&ns, "deployment/myapp").expect("the application was applied");
    let ready_at = ready_condition(&migration)["lastTransitionTime"]
        .as_str()
        .unwrap();
    let created_at = app["metadata"]["creationTimestamp"].as_str().unwrap();
    let (ready_at, created_at): (jiff::Timestamp, jiff::Timestamp) =
        (ready_at.parse().unwrap(), created_at.parse().unwrap());
    assert!(ready_at <= created_at, "{ready_at} > {created_at}");
}

/// A copy of the example's manifests folder with another migration file, listed in the
/// kustomization and hashed into atlas.sum as `atlas migrate hash` would.
fn with_second_migration(dir: &Path, file: &str, sql: &str) {
    let example = repo_path(&format!("{EXAMPLE}/manifests"));
    std::fs::create_dir_all(dir.join("migrations")).unwrap();
    for entry in [
        "kustomization.yaml",
        "kustomizeconfig.yaml",
        "atlas-migration.yaml",
        "app.yaml",
        "migrations/20230316085611.sql",
    ] {
        std::fs::copy(example.join(entry), dir.join(entry)).unwrap();
    }
    let first = std::fs::read_to_string(example.join("migrations/20230316085611.sql")).unwrap();
    std::fs::write(dir.join("migrations").join(file), sql).unwrap();
    std::fs::write(
        dir.join("migrations/atlas.sum"),
        atlas_sum(&[("20230316085611.sql", first.as_str()), (file, sql)]),
    )
    .unwrap();
    let kustomization = std::fs::read_to_string(example.join("kustomization.yaml")).unwrap();
    let listed = "      - migrations/atlas.sum\n";
    assert!(kustomization.contains(listed), "{kustomization}");
    std::fs::write(
        dir.join("kustomization.yaml"),
        kustomization.replace(listed, &format!("      - migrations/{file}\n{listed}")),
    )
    .unwrap();
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_failed_migration_holds_the_app_back_until_a_fixed_directory_is_synced() {
    let (ns, db, operator) = destination("argocd-fail");
    let repo = TempDir(std::env::temp_dir().join(format!("argocd-test-{}", ns.name)));
    let file = "20230317000000_bio_index.sql";

    // A commit with a migration that cannot run: its wave ends Degraded and the sync stops there.
    with_second_migration(
        &repo.0,
        file,
        "create index users_bio on users (short_bioo);\n",
    );
    let broken = render(&repo.0);
    let stopped = sync(&ns, &broken, &operator).expect_err("a sync past a failed migration");
    assert_eq!(stopped.wave, -1);
    assert_eq!(stopped.resource, "atlasmigration/myapp-migration");
    let failed = json!({"status": stopped.status});
    let condition = ready_condition(&failed);
    assert_eq!(condition["reason"], "Migrating", "{}", failed["status"]);
    // Definitive: ArgoCD's retries of the same commit cannot help, only a new commit can.
    let stalled = failed["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Stalled")
        .unwrap();
    assert_eq!(stalled["status"], "True", "{}", failed["status"]);
    let message = condition["message"].as_str().unwrap();
    assert!(message.contains(file), "{message}");
    assert!(message.contains("short_bioo"), "{message}");
    assert!(
        get(&ns, "deployment/myapp").is_none(),
        "the application was applied past a failed migration"
    );
    // What docs/conditions.md says to read: the Job's log has every statement that ran, the
    // failed one included; its pod's termination message has the result as JSON.
    let jobs = ns
        .cluster()
        .kubectl_output(&[
            "-n",
            &ns.name,
            "get",
            "jobs",
            "-l",
            "db.atlasgo.io/kind=atlasmigration,db.atlasgo.io/name=myapp-migration",
            "-o",
            "name",
        ])
        .unwrap();
    let job = jobs.trim();
    assert!(
        job.starts_with("job.batch/atlasmigration-myapp-migration-"),
        "{jobs}"
    );
    let job = job.trim_start_matches("job.batch/");
    let log = ns
        .cluster()
        .kubectl_output(&["-n", &ns.name, "logs", &format!("job/{job}")])
        .unwrap();
    assert!(log.contains("create sequence users_seq"), "{log}");
    assert!(log.contains("short_bioo"), "{log}");
    let result = ns
        .cluster()
        .kubectl_output(&[
            "-n",
            &ns.name,
            "get",
            "pods",
            "-l",
            &format!("job-name={job}"),
            "-o",
            r#"jsonpath={.items[0].status.containerStatuses[?(@.name=="runner")].state.terminated.message}"#,
        ])
        .unwrap();
    let result: Value =
        serde_json::from_str(&result).unwrap_or_else(|err| panic!("{err}: {result}"));
    assert_eq!(result["reason"], "Migrating", "{result}");
    assert_eq!(result["currentVersion"], "20230316085611", "{result}");

    // The first file went through (one transaction per file); the database is at its version.
    assert_eq!(db.query("select count(*) from users").unwrap().trim(), "0");

    // The fix, committed: a new directory, so a new ConfigMap name in the AtlasMigration.
    with_second_migration(
        &repo.0,
        file,
        "create index users_bio on users (short_bio);\n",
    );
    let fixed = render(&repo.0);
    assert_ne!(
        name(the(&fixed, "ConfigMap")),
        name(the(&broken, "ConfigMap"))
    );
    sync(&ns, &fixed, &operator).unwrap_or_else(|stopped| {
        panic!(
            "the sync stopped: {stopped:#?}\noperator log:\n{}",
            operator.log()
        )
    });
    let applied = get(&ns, "atlasmigration/myapp-migration").unwrap();
    assert_eq!(applied["status"]["lastAppliedVersion"], "20230317000000");
    assert_eq!(
        applied["status"]["observedGeneration"],
        applied["metadata"]["generation"]
    );
    assert!(get(&ns, "deployment/myapp").is_some());
    assert_eq!(
        db.query("select indexname from pg_indexes where indexname = 'users_bio'")
            .unwrap()
            .trim(),
        "users_bio"
    );
}
