//! The CRDs on a real API server (devcluster's etcd + kube-apiserver): every example is accepted,
//! bad manifests are refused with our CEL messages, defaults are filled in, and `kubectl` shows
//! our printer columns and field docs.
//!
//! The cluster is shared by the test run (`cargo xtask test` brings it up and down; a plain
//! `cargo test` starts it on first use and leaves it running). Each test works in a namespace of
//! its own, so they run in parallel.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use devcluster::cluster::{self, Cluster, ClusterError, TestNamespace};
use devcluster::cmd::CmdError;
use serde_json::{Value, json};
use support::{kustomize_files, repo_path, yaml_documents, yaml_files};

/// Whether `kubectl apply -f <file>` alone should take the example. Not ArgoCD's `Application`s
/// (no such CRD here), nor kustomize's own files (tests/argocd.rs applies what they render).
fn applies_alone(file: &Path) -> bool {
    !kustomize_files(&repo_path("examples"))
        .iter()
        .any(|k| k == file)
        && yaml_documents(file)
            .iter()
            .all(|doc| doc["kind"] != "Application")
}

/// The shared cluster, with `crds/` applied and Established (once per test binary).
fn cluster() -> Cluster {
    static CRDS_INSTALLED: Mutex<bool> = Mutex::new(false);
    let cluster =
        cluster::shared().unwrap_or_else(|err| panic!("starting the local cluster: {err}"));
    let mut installed = CRDS_INSTALLED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !*installed {
        install_crds(&cluster);
        *installed = true;
    }
    cluster
}

fn install_crds(cluster: &Cluster) {
    let crds = repo_path("crds");
    let crds = crds.to_str().unwrap();
    // Other test binaries may apply the same CRDs at the same moment: server-side apply by one
    // field manager is idempotent, and a create that loses a race is simply retried.
    let mut attempt = 1;
    loop {
        match cluster.kubectl_output(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=atlas-operator-tests",
            "-f",
            crds,
        ]) {
            Ok(_) => break,
            Err(err) if attempt < 3 => {
                eprintln!("applying crds/ (attempt {attempt}): {err}");
                attempt += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(err) => panic!("applying crds/: {err}"),
        }
    }
    cluster
        .kubectl_output(&[
            "wait",
            "--for=condition=established",
            "--timeout=60s",
            "-f",
            crds,
        ])
        .unwrap_or_else(|err| panic!("the CRDs did not become Established: {err}"));
}

fn namespace(cluster: &Cluster, hint: &str) -> TestNamespace {
    cluster
        .namespace(hint)
        .unwrap_or_else(|err| panic!("creating a namespace: {err}"))
}

fn kubectl(namespace: &TestNamespace, args: &[&str]) -> Result<String, ClusterError> {
    let mut all = vec!["-n", namespace.name.as_str()];
    all.extend_from_slice(args);
    namespace.cluster().kubectl_output(&all)
}

fn apply(namespace: &TestNamespace, manifest: &Value) -> Result<String, ClusterError> {
    namespace
        .cluster()
        .apply(Some(&namespace.name), &manifest.to_string())
}

/// Applies `manifest`, expects the API server to refuse it, and returns what kubectl printed.
fn refused(namespace: &TestNamespace, manifest: Value) -> String {
    match apply(namespace, &manifest) {
        Ok(out) => panic!("the API server accepted a bad manifest ({out}):\n{manifest:#}"),
        Err(ClusterError::Command {
            source: CmdError::Failed { output, .. },
            ..
        }) => output,
        Err(other) => panic!("kubectl did not run: {other}"),
    }
}

fn assert_refused_with(namespace: &TestNamespace, manifest: Value, message: &str) {
    let output = refused(namespace, manifest.clone());
    assert!(
        output.contains("is invalid") && output.contains(message),
        "expected a refusal saying {message:?}, kubectl printed:\n{output}\nfor:\n{manifest:#}"
    );
}

fn resource(kind: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "db.atlasgo.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// A valid AtlasMigration's spec: a URL and a ConfigMap directory.
fn migration_spec() -> Value {
    json!({
        "url": "postgres://root:pass@postgres:5432/postgres?sslmode=disable",
        "dir": {"configMapRef": {"name": "migrationdir"}},
    })
}

fn with(mut spec: Value, key: &str, value: Value) -> Value {
    spec[key] = value;
    spec
}

fn relative(path: &Path) -> String {
    path.strip_prefix(repo_path(""))
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn every_example_is_accepted() {
    let cluster = cluster();
    let files: Vec<PathBuf> = yaml_files(&repo_path("examples"))
        .into_iter()
        .filter(|file| applies_alone(file))
        .collect();
    assert!(files.len() >= 8, "examples/ lost files: {files:?}");
    // A namespace per file: several examples share a name (the ConfigMap and the inline
    // migration directory; the two MySQL schemas), and each must be accepted as a new object.
    for file in files {
        let name = relative(&file);
        let namespace = namespace(&cluster, "example");
        let out = kubectl(&namespace, &["apply", "-f", file.to_str().unwrap()])
            .unwrap_or_else(|err| panic!("{name} was refused: {err}"));
        assert!(out.contains("created"), "{name}: {out}");
    }
}

#[test]
fn kubectl_shows_our_columns_and_field_docs() {
    let cluster = cluster();
    let namespace = namespace(&cluster, "columns");
    let example = repo_path("examples/postgres-migration/atlasmigration.yaml");
    kubectl(&namespace, &["apply", "-f", example.to_str().unwrap()]).unwrap();
    let table = kubectl(&namespace, &["get", "atlasmigrations"]).unwrap();
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "READY", "REASON", "VERSION", "AGE"],
        "kubectl get printed:\n{table}"
    );
    assert!(table.contains("atlasmigration-sample"), "{table}");

    // The API server publishes a new CRD's OpenAPI a moment after it is Established.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let explained = cluster.kubectl_output(&["explain", "atlasmigration.spec.dir"]);
        match explained {
            Ok(text) if text.contains("The migration directory") => {
                assert!(text.contains("configMapRef"), "{text}");
                break;
            }
            other if Instant::now() >= deadline => {
                panic!("kubectl explain never showed our docs: {other:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

#[test]
fn url_and_url_from_together_are_refused() {
    let cluster = cluster();
    let namespace = namespace(&cluster, "url-and-urlfrom");
    let spec = with(
        migration_spec(),
        "urlFrom",
        json!({"secretKeyRef": {"name": "postgres-credentials", "key": "url"}}),
    );
    assert_refused_with(
        &namespace,
        resource("AtlasMigration", "both", spec),
        "set only one of url, urlFrom or credentials",
    );
    // Nothing half-applied.
    let left = kubectl(&namespace, &["get", "atlasmigrations", "-o", "name"]).unwrap();
    assert_eq!(left.trim(), "", "a refused manifest was stored");
}

#[test]
fn a_schema_with_two_sources_is_refused() {
    let cluster = cluster();
    let namespace = namespace(&cluster, "two-sources");
    let spec = json!({
        "url": "mysql://root:pass@mysql:3306/myapp",
        "schema": {"sql": "a", "hcl": "b"},
    });
    assert_refused_with(
        &namespace,
        resource("AtlasSchema", "two-sources", spec),
        "set only one of sql, hcl, url or configMapKeyRef",
    );
}

#[test]
fn an_empty_dir_is_refused() {
    let cluster = cluster();
    let namespace = namespace(&cluster, "empty-dir");
    let spec = with(migration_spec(), "dir", json!({}));
    assert_refused_with(
        &namespace,
        resource("AtlasMigration", "empty-dir", spec),
        "dir needs one of configMapRef, local or remote",
    );
}

#[test]
fn values_outside_their_enums_are_refused() {
    let cluster = cluster();
    let namespace = namespace(&cluster, "enums");
    let schema = json!({
        "url": "mysql://root:pass@mysql:3306/myapp",
        "schema": {"sql": "create table t (id int);"},
        "txMode": "bogus",
    });
    let migration = with(migration_spec(), "execOrder", json!("bogus"));
    for (field, manifest) in [
        ("spec.txMode", resource("AtlasSchema", "tx-mode", schema)),
        (
            "spec.execOrder",
            resource("AtlasMigration", "exec-order", migration),
        ),
    ] {
        let output = refused(&namespace, manifest);
        assert!(
            output.contains(field) && output.contains("Unsupported value: \"bogus\""),
            "{output}"
        );
    }
    // `all` is `migrate apply`'s: `atlas schema apply --tx-mode` refuses it, so the CRD does.
    let all = json!({
        "url": "mysql://root:pass@mysql:3306/myapp",
        "schema": {"sql": "create table t (id int);"},
        "txMode": "all",
    });
    let output = refused(&namespace, resource("AtlasSchema", "tx-mode-all", all));
    assert!(
        output.contains("spec.txMode") && output.contains("Unsupported value: \"all\""),
        "{output}"
    );
}

#[test]
fn credentials_without_scheme_are_refused() {
    let cluster = cluster();
    let namespace = namespace(&cluster, "no-scheme");
    let mut spec = migration_spec();
    spec.as_object_mut().unwrap().remove("url");
    let spec = with(
        spec,
        "credentials",
        json!({"host": "postgres", "user": "root", "database": "postgres"}),
    );
    assert_refused_with(
        &namespace,
        resource("AtlasMigration", "no-scheme", spec),
        "credentials.scheme is required",
    );
}

#[test]
fn a_new_migration_reads_back_with_defaults() {
    let cluster = cluster();
    let namespace = namespace(&cluster, "defaults");
    apply(
        &namespace,
        &resource("AtlasMigration", "defaults", migration_spec()),
    )
    .unwrap();
    let stored: Value = serde_json::from_str(
        &kubectl(
            &namespace,
            &["get", "atlasmigration", "defaults", "-o", "json"],
        )
        .unwrap(),
    )
    .unwrap();
    // -1 until the operator has looked at it: `kubectl wait` and kstatus never take the
    // resource for reconciled before then.
    assert_eq!(
        stored["status"]["observedGeneration"],
        json!(-1),
        "{stored:#}"
    );
    assert_eq!(stored["spec"]["execOrder"], json!("linear"), "{stored:#}");
    assert_eq!(stored["spec"]["backoffLimit"], json!(20), "{stored:#}");
}
