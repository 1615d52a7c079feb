//! `cargo xtask demo`: the operator's main job end to end, as far as this build goes.
//!
//! Tools, databases and the local cluster; then the operator (as its own process, with the
//! shipped RBAC) applies both seed flows unchanged: the PostgreSQL versioned migrations (and a
//! second file added to their ConfigMap), and the MySQL AtlasSchema, whose dev database the
//! operator brings as a sidecar (MariaDB stands in for MySQL here).

use std::collections::BTreeMap;
use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use devcluster::cmd;
use devcluster::db::{self, Engine, TestDatabase};
use devcluster::operator::OperatorProcess;
use serde_json::Value;

use crate::workspace_root;

const NAMESPACE: &str = "demo";
/// The inline `dir.local` variant of the seed migration has the same name: it gets a namespace
/// (and a database) of its own.
const NAMESPACE_INLINE: &str = "demo-inline";
const LIMIT: Duration = Duration::from_secs(120);

pub fn run(keep: bool) -> Result<()> {
    step("1", "the CRDs match the Rust types");
    crate::crds::run(true)?;

    step("2", "the pinned tools and Debian's database servers");
    devcluster::packages::ensure()?;
    crate::tools::run()?;
    let servers = db::up()?;

    step(
        "3",
        "build the operator and the runner; a local Kubernetes (etcd, kube-apiserver, \
         kube-controller-manager, the process-kubelet)",
    );
    crate::steps::step(
        "build",
        "cargo",
        &["build", "-p", "atlas-operator", "-p", "atlas-runner"],
    )?;
    let cluster = devcluster::cluster::up()?;
    println!("    kubeconfig: {}", cluster.kubeconfig().display());

    let result = apply_everything(&cluster, &servers);
    if keep {
        println!(
            "\n--keep: the cluster and databases stay up. Try:\n  \
             kubectl --kubeconfig {} -n {NAMESPACE} get atlasschemas,atlasmigrations\n  \
             source {} && psql \"$POSTGRES_URL\"\n\
             Stop them with `cargo xtask cluster down` and `cargo xtask db down`.",
            cluster.kubeconfig().display(),
            db::urls_file().display()
        );
    } else {
        devcluster::cluster::down()?;
        db::down()?;
    }
    result
}

fn step(number: &str, title: &str) {
    println!("\n==> step {number}: {title}");
}

fn apply_everything(cluster: &devcluster::cluster::Cluster, servers: &db::Servers) -> Result<()> {
    step(
        "4",
        "install the CRDs and the operator's RBAC; start the operator",
    );
    let kubectl = |args: &[&str]| -> Result<String> {
        let mut command = cluster.kubectl();
        command.args(args);
        Ok(cmd::output(&mut command, LIMIT)?)
    };
    // A demo run starts from nothing, whatever a `--keep` run left behind.
    kubectl(&[
        "delete",
        "namespace",
        NAMESPACE,
        NAMESPACE_INLINE,
        "--ignore-not-found",
        "--wait=true",
    ])?;
    fresh_databases(servers)?;
    for name in [NAMESPACE, NAMESPACE_INLINE] {
        let namespace = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n");
        cluster.apply(None, &namespace)?;
    }
    let binary = devcluster::target_dir().join("debug/atlas-operator");
    let operator = OperatorProcess::start(cluster, &binary, &[NAMESPACE, NAMESPACE_INLINE])?;
    println!(
        "    atlas-operator runs as {} (rbac/operator-clusterrole.yaml), watching namespaces \
         {NAMESPACE} and {NAMESPACE_INLINE}",
        devcluster::operator::user()
    );

    step(
        "5",
        "the seed's versioned migrations: Secret, ConfigMap and AtlasMigration, unchanged",
    );
    // The seeds' Secrets point at Deployments of their own; here they point at the local servers.
    for (name, url) in [
        ("mysql-credentials", servers.mysql_url()),
        (
            "postgres-credentials",
            servers.postgres_url_for(DEMO_POSTGRES_DATABASE),
        ),
    ] {
        kubectl(&[
            "-n",
            NAMESPACE,
            "create",
            "secret",
            "generic",
            name,
            &format!("--from-literal=url={url}"),
            "--dry-run=client",
            "-o",
            "yaml",
        ])
        .and_then(|yaml| Ok(cluster.apply(None, &yaml)?))?;
    }
    for file in [
        "examples/postgres-migration/migrationdir.yaml",
        "examples/postgres-migration/atlasmigration.yaml",
    ] {
        let out = kubectl(&[
            "-n",
            NAMESPACE,
            "apply",
            "-f",
            &workspace_root().join(file).display().to_string(),
        ])?;
        print!("    {out}");
    }
    let started = Instant::now();
    let waited = kubectl(&[
        "-n",
        NAMESPACE,
        "wait",
        "--for=condition=ready",
        "--timeout=110s",
        "atlasmigration/atlasmigration-sample",
    ]);
    if let Err(err) = waited {
        bail!(
            "the AtlasMigration did not turn Ready: {err}\noperator log:\n{}",
            operator.log()
        );
    }
    println!("    Ready after {:.1}s", started.elapsed().as_secs_f64());
    println!(
        "{}",
        indent(&kubectl(&["-n", NAMESPACE, "get", "atlasmigrations"])?)
    );
    println!("    PostgreSQL: \\d users");
    println!("{}", indent(&psql(servers, USERS_COLUMNS)?));

    step(
        "6",
        "a second migration file added to the ConfigMap: a new Job applies it",
    );
    let dir = seed_document("examples/postgres-migration/migrationdir.yaml")?;
    let mut files: BTreeMap<String, String> = serde_json::from_value(dir["data"].clone())?;
    files.remove("atlas.sum");
    files.insert(
        "20230316085612.sql".into(),
        "alter table users add column nickname varchar(64);\n".into(),
    );
    let owned: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(n, c)| (n.clone(), c.clone().into_bytes()))
        .collect();
    let sum = atlas_runner::sum::file(&owned);
    files.insert("atlas.sum".into(), sum);
    let configmap = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "migrationdir", "namespace": NAMESPACE}, "data": files});
    cluster.apply(None, &configmap.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(110);
    loop {
        let version = kubectl(&[
            "-n",
            NAMESPACE,
            "get",
            "atlasmigration/atlasmigration-sample",
            "-o",
            "jsonpath={.status.lastAppliedVersion} {.status.conditions[?(@.type==\"Ready\")].status}",
        ])?;
        if version.trim() == "20230316085612 True" {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the new migration was not applied (status: {version})\noperator log:\n{}",
                operator.log()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    println!(
        "{}",
        indent(&kubectl(&["-n", NAMESPACE, "get", "atlasmigrations,jobs"])?)
    );
    println!("    PostgreSQL: \\d users");
    println!("{}", indent(&psql(servers, USERS_COLUMNS)?));
    let job = kubectl(&[
        "-n",
        NAMESPACE,
        "get",
        "jobs",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ])?;
    println!("    kubectl logs job/{job}");
    println!(
        "{}",
        indent(&kubectl(&["-n", NAMESPACE, "logs", &format!("job/{job}")])?)
    );

    step(
        "7",
        "the seed's MySQL AtlasSchema, unchanged: the operator brings a throwaway dev database",
    );
    let out = kubectl(&[
        "-n",
        NAMESPACE,
        "apply",
        "-f",
        &workspace_root()
            .join("examples/mysql-schema/schema.yaml")
            .display()
            .to_string(),
    ])?;
    print!("    {out}");
    let started = Instant::now();
    if let Err(err) = kubectl(&[
        "-n",
        NAMESPACE,
        "wait",
        "--for=condition=ready",
        "--timeout=110s",
        "atlasschema/atlasschema-mysql",
    ]) {
        bail!(
            "the AtlasSchema did not turn Ready: {err}\noperator log:\n{}",
            operator.log()
        );
    }
    println!("    Ready after {:.1}s", started.elapsed().as_secs_f64());
    println!(
        "{}",
        indent(&kubectl(&["-n", NAMESPACE, "get", "atlasschemas,jobs"])?)
    );
    println!("    MariaDB (standing in for MySQL): describe myapp.users");
    let mut describe = Command::new("mariadb");
    describe
        .arg("--no-defaults")
        .args(["-h", "127.0.0.1", "-P", &servers.mysql_port.to_string()])
        .args(["-u", db::USER, "-t", "-e", "describe myapp.users"])
        .env("MYSQL_PWD", db::PASSWORD);
    println!("{}", indent(&cmd::output(&mut describe, LIMIT)?));

    step(
        "8",
        "the seed's inline variant (dir.local), unchanged, against a database of its own",
    );
    let inline_db = TestDatabase::create(Engine::Postgres, "demo_inline")?;
    kubectl(&[
        "-n",
        NAMESPACE_INLINE,
        "create",
        "secret",
        "generic",
        "postgres-credentials",
        &format!("--from-literal=url={}", inline_db.url),
        "--dry-run=client",
        "-o",
        "yaml",
    ])
    .and_then(|yaml| Ok(cluster.apply(None, &yaml)?))?;
    let out = kubectl(&[
        "-n",
        NAMESPACE_INLINE,
        "apply",
        "-f",
        &workspace_root()
            .join("examples/postgres-migration/atlasmigration-inline.yaml")
            .display()
            .to_string(),
    ])?;
    print!("    {out}");
    let started = Instant::now();
    if let Err(err) = kubectl(&[
        "-n",
        NAMESPACE_INLINE,
        "wait",
        "--for=condition=ready",
        "--timeout=110s",
        "atlasmigration/atlasmigration-sample",
    ]) {
        bail!(
            "the inline AtlasMigration did not turn Ready: {err}\noperator log:\n{}",
            operator.log()
        );
    }
    println!("    Ready after {:.1}s", started.elapsed().as_secs_f64());
    println!(
        "{}",
        indent(&kubectl(&[
            "-n",
            NAMESPACE_INLINE,
            "get",
            "atlasmigrations,configmaps"
        ])?)
    );
    println!("    PostgreSQL ({}): \\d users", inline_db.name);
    println!("{}", indent(&inline_db.query(USERS_COLUMNS)?));

    step(
        "9",
        "the desired schema changes: a column added to the AtlasSchema's SQL",
    );
    let mut schema = seed_document("examples/mysql-schema/schema.yaml")?;
    schema["metadata"]["namespace"] = NAMESPACE.into();
    let with_nickname = "create table users (\n  id int not null auto_increment,\n  \
        name varchar(255) not null,\n  email varchar(255) unique not null,\n  \
        short_bio varchar(255) not null,\n  nickname varchar(64) null,\n  primary key (id)\n);\n";
    schema["spec"]["schema"]["sql"] = with_nickname.into();
    cluster.apply(None, &schema.to_string())?;
    let ready = wait_ready(&kubectl, "atlasschema/atlasschema-mysql", |status, _| {
        status == "True"
    })
    .with_context(|| format!("operator log:\n{}", operator.log()))?;
    println!("    Ready: {ready}");
    println!("    MariaDB: describe myapp.users");
    println!("{}", indent(&cmd::output(&mut describe, LIMIT)?));

    step(
        "10",
        "then a column dropped, under the lint policy `destructive.error: true`: refused",
    );
    let without_bio = with_nickname.replace("  short_bio varchar(255) not null,\n", "");
    schema["spec"]["schema"]["sql"] = without_bio.into();
    schema["spec"]["policy"] = serde_json::json!({"lint": {"destructive": {"error": true}}});
    cluster.apply(None, &schema.to_string())?;
    let refused = wait_ready(
        &kubectl,
        "atlasschema/atlasschema-mysql",
        |status, reason| status == "False" && reason != "Reconciling",
    )
    .with_context(|| format!("operator log:\n{}", operator.log()))?;
    println!("    Ready: {refused}");
    println!(
        "{}",
        indent(&kubectl(&["-n", NAMESPACE, "get", "atlasschemas"])?)
    );
    println!("    kubectl get events (the AtlasSchema's)");
    println!(
        "{}",
        indent(&kubectl(&[
            "-n",
            NAMESPACE,
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=atlasschema-mysql",
            "-o",
            "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message",
        ])?)
    );
    println!("    MariaDB: describe myapp.users (short_bio is still there: nothing was applied)");
    println!("{}", indent(&cmd::output(&mut describe, LIMIT)?));
    println!("\nDone: both seed flows applied by the operator, unchanged, and a refused change.");
    drop(operator);
    Ok(())
}

/// Waits until the resource's Ready condition for its current generation satisfies `done`
/// (given status and reason); returns `status reason: message`.
fn wait_ready(
    kubectl: &dyn Fn(&[&str]) -> Result<String>,
    what: &str,
    done: impl Fn(&str, &str) -> bool,
) -> Result<String> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let text = kubectl(&["-n", NAMESPACE, "get", what, "-o", "json"])?;
        let object: Value = serde_json::from_str(&text)?;
        let current = object["status"]["observedGeneration"] == object["metadata"]["generation"];
        let ready = object["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready");
        if let Some(ready) = ready {
            let status = ready["status"].as_str().unwrap_or_default();
            let reason = ready["reason"].as_str().unwrap_or_default();
            if current && done(status, reason) {
                return Ok(format!(
                    "{status} {reason}: {}",
                    ready["message"].as_str().unwrap_or_default()
                ));
            }
        }
        if Instant::now() > deadline {
            bail!(
                "{what} did not get there in {LIMIT:?}; status: {}",
                object["status"]
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

const USERS_COLUMNS: &str = "select column_name, data_type, column_default from \
    information_schema.columns where table_name = 'users' order by ordinal_position";

/// The seed migration's database on the local PostgreSQL (the MySQL seed's is `myapp`).
const DEMO_POSTGRES_DATABASE: &str = "demo";

/// Drops and recreates the demo's two databases.
fn fresh_databases(servers: &db::Servers) -> Result<()> {
    for sql in [
        format!("DROP DATABASE IF EXISTS {DEMO_POSTGRES_DATABASE} WITH (FORCE)"),
        format!("CREATE DATABASE {DEMO_POSTGRES_DATABASE}"),
    ] {
        let mut psql = Command::new("psql");
        psql.arg(servers.postgres_url())
            .args(["-X", "-q", "-c", &sql]);
        cmd::output(&mut psql, LIMIT)?;
    }
    let mut mariadb = Command::new("mariadb");
    mariadb
        .arg("--no-defaults")
        .args(["-h", "127.0.0.1", "-P", &servers.mysql_port.to_string()])
        .args(["-u", db::USER, "-e"])
        .arg(format!(
            "DROP DATABASE IF EXISTS {0}; CREATE DATABASE {0}",
            db::MYSQL_DATABASE
        ))
        .env("MYSQL_PWD", db::PASSWORD);
    cmd::output(&mut mariadb, LIMIT)?;
    Ok(())
}

fn psql(servers: &db::Servers, sql: &str) -> Result<String> {
    let mut psql = Command::new("psql");
    psql.arg(servers.postgres_url_for(DEMO_POSTGRES_DATABASE))
        .args(["-X", "-q", "-A", "-t", "-F", "\t", "-c", sql]);
    Ok(cmd::output(&mut psql, LIMIT)?)
}

fn seed_document(relative: &str) -> Result<Value> {
    let path = workspace_root().join(relative);
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn indent(text: &str) -> String {
    text.trim_end()
        .lines()
        .map(|line| format!("      {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}
