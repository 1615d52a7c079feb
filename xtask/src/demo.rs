//! `cargo xtask demo`: the operator's main job end to end, as far as this build goes.
//!
//! This build has no controller and no runner yet, so the demo runs every real part that exists
//! and does the controller's part by hand, saying so: the seed manifests are applied to a real
//! API server (CRDs, validation, printer columns), and the seed's schema and migrations are
//! applied to real databases with the pinned Atlas CLI, the way the runner will. The steps that
//! are missing are named at the end, with the issue that brings each.

use std::collections::BTreeMap;
use std::fs;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use devcluster::cmd;
use devcluster::db::{self, Engine, TestDatabase};
use serde_json::Value;

use crate::workspace_root;

const NAMESPACE: &str = "demo";
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
        "a local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager)",
    );
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
        "install the CRDs; apply the seed manifests to the API server",
    );
    let kubectl = |args: &[&str]| -> Result<String> {
        let mut command = cluster.kubectl();
        command.args(args);
        Ok(cmd::output(&mut command, LIMIT)?)
    };
    let crds = workspace_root().join("crds");
    kubectl(&["apply", "--server-side", "-f", &crds.display().to_string()])?;
    kubectl(&[
        "wait",
        "--for=condition=established",
        "--timeout=60s",
        "crd/atlasschemas.db.atlasgo.io",
        "crd/atlasmigrations.db.atlasgo.io",
    ])?;
    let namespace = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n");
    apply_stdin(cluster, &namespace)?;
    // The seeds' Secrets point at Deployments of their own; here they point at the local servers.
    for (name, url) in [
        ("mysql-credentials", servers.mysql_url()),
        ("postgres-credentials", servers.postgres_url()),
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
        .and_then(|yaml| apply_stdin(cluster, &yaml))?;
    }
    for file in [
        "examples/mysql-schema/schema.yaml",
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
    println!(
        "{}",
        indent(&kubectl(&[
            "-n",
            NAMESPACE,
            "get",
            "atlasschemas,atlasmigrations"
        ])?)
    );
    println!(
        "    READY stays empty: this build has no controller to act on them (issue 7).\n    \
         The API server refuses a bad manifest with the CRD's rules, for example:"
    );
    let bad = "apiVersion: db.atlasgo.io/v1alpha1\nkind: AtlasMigration\nmetadata:\n  name: bad\n\
               spec:\n  url: postgres://a\n  urlFrom: {secretKeyRef: {name: s, key: url}}\n  \
               dir: {configMapRef: {name: migrationdir}}\n";
    match apply_stdin(cluster, bad) {
        Ok(_) => bail!("the API server accepted an AtlasMigration with both url and urlFrom"),
        Err(err) => {
            let text = err.to_string();
            let line = text
                .lines()
                .find(|line| line.contains("set only one of"))
                .unwrap_or(&text);
            println!("    {}", line.trim());
        }
    }

    step(
        "5",
        "what the controller will do, done by hand: the seed's schema and migrations applied with Atlas",
    );
    let mysql = TestDatabase::create(Engine::MariaDb, "demo_myapp")?;
    let dev = TestDatabase::create(Engine::MariaDb, "demo_dev")?;
    let postgres = TestDatabase::create(Engine::Postgres, "demo_postgres")?;
    let work = std::env::temp_dir().join(format!("atlas-operator-demo-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(work.join("migrations"))?;

    let schema = seed_document("examples/mysql-schema/schema.yaml")?;
    let sql = schema["spec"]["schema"]["sql"]
        .as_str()
        .context("the seed AtlasSchema has no schema.sql")?;
    fs::write(work.join("schema.sql"), sql)?;
    atlas(&[
        "schema",
        "apply",
        "--url",
        &mysql.url,
        "--dev-url",
        &dev.url,
        "--to",
        &format!("file://{}", work.join("schema.sql").display()),
        "--auto-approve",
    ])?;
    println!("    MariaDB (standing in for MySQL): describe users");
    println!("{}", indent(&mysql.query("describe users")?));

    let dir = seed_document("examples/postgres-migration/migrationdir.yaml")?;
    let files: BTreeMap<String, String> = serde_json::from_value(dir["data"].clone())?;
    for (name, content) in &files {
        fs::write(work.join("migrations").join(name), content)?;
    }
    let out = atlas(&[
        "migrate",
        "apply",
        "--url",
        &postgres.url,
        "--dir",
        &format!("file://{}", work.join("migrations").display()),
    ])?;
    println!("{}", indent(&out));
    println!("    PostgreSQL: the users table");
    println!(
        "{}",
        indent(&postgres.query(
            "select column_name, data_type, column_default from information_schema.columns \
             where table_name = 'users' order by ordinal_position"
        )?)
    );
    let _ = fs::remove_dir_all(&work);

    println!(
        "\nThe demo stops here. Still missing for the full flow (the operator applies the schema \
         and the resource turns Ready):\n\
         - running the operator itself in this demo, with its Jobs on the local cluster (issue 7;\n\
           the integration tests in tests/controller.rs already do)\n\
         - automatic dev databases (issue 8)"
    );
    Ok(())
}

fn apply_stdin(cluster: &devcluster::cluster::Cluster, yaml: &str) -> Result<String> {
    let dir =
        std::env::temp_dir().join(format!("atlas-operator-demo-apply-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let file = dir.join("manifest.yaml");
    fs::write(&file, yaml)?;
    let mut command = cluster.kubectl();
    command.args(["apply", "-f"]).arg(&file);
    let result = cmd::output(&mut command, LIMIT);
    let _ = fs::remove_dir_all(&dir);
    Ok(result?)
}

fn seed_document(relative: &str) -> Result<Value> {
    let path = workspace_root().join(relative);
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn atlas(args: &[&str]) -> Result<String> {
    let mut atlas: Command = devcluster::tools::atlas()?;
    atlas.args(args);
    Ok(cmd::output(&mut atlas, LIMIT)?)
}

fn indent(text: &str) -> String {
    text.trim_end()
        .lines()
        .map(|line| format!("      {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}
