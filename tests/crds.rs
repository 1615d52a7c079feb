//! The CRDs: generated from the types and checked in unchanged, listing every field of the Go
//! operator's API, and refusing bad manifests with a readable message.

mod support;

use atlas_operator::api::{self, crds};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::cel::Validator;
use serde_json::{Value, json};
use support::{repo_path, yaml_documents};

#[test]
fn checked_in_crds_match_the_types() {
    for ((file, yaml), crd) in api::crd_files().unwrap().into_iter().zip(crds()) {
        let path = repo_path("crds").join(&file);
        let on_disk = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        assert!(
            on_disk == yaml,
            "crds/{file} differs from the Rust types: run `cargo xtask crds` and commit"
        );
        // And the file is a CRD the API server would read back the same.
        let docs = yaml_documents(&path);
        let parsed: CustomResourceDefinition = serde_json::from_value(docs[0].clone()).unwrap();
        assert_eq!(
            parsed, crd,
            "crds/{file} does not read back as the same CRD"
        );
    }
}

fn schema_of(kind: &str) -> Value {
    let crd = crds()
        .into_iter()
        .find(|crd| crd.spec.names.kind == kind)
        .unwrap();
    let version = &crd.spec.versions[0];
    serde_json::to_value(
        version
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

/// The schema node at a dotted path of property names (`spec.dir.configMapRef`).
fn node<'a>(schema: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(schema, |node, name| node.get("properties")?.get(name))
}

const SHARED_FIELDS: &[&str] = &[
    "spec.url",
    "spec.urlFrom.secretKeyRef.name",
    "spec.urlFrom.secretKeyRef.key",
    "spec.credentials.scheme",
    "spec.credentials.user",
    "spec.credentials.userFrom.secretKeyRef",
    "spec.credentials.password",
    "spec.credentials.passwordFrom.secretKeyRef",
    "spec.credentials.host",
    "spec.credentials.hostFrom.secretKeyRef",
    "spec.credentials.port",
    "spec.credentials.database",
    "spec.credentials.parameters",
    "spec.config",
    "spec.configFrom.secretKeyRef",
    "spec.envName",
    "spec.vars",
    "spec.devURL",
    "spec.devURLFrom.secretKeyRef",
    "spec.devDB.spec",
    "spec.devDB.metadata.labels",
    "spec.devDB.metadata.annotations",
    "spec.cloud.tokenFrom.secretKeyRef",
    "spec.backoffLimit",
    "status.conditions",
    "status.observedGeneration",
    "status.observed_hash",
    "status.failed",
];

const SCHEMA_FIELDS: &[&str] = &[
    "spec.cloud.repo",
    "spec.schema.sql",
    "spec.schema.hcl",
    "spec.schema.url",
    "spec.schema.configMapKeyRef.name",
    "spec.schema.configMapKeyRef.key",
    "spec.exclude",
    "spec.schemas",
    "spec.txMode",
    "spec.policy.lint.destructive.error",
    "spec.policy.lint.review",
    "spec.policy.diff.concurrent_index.create",
    "spec.policy.diff.concurrent_index.drop",
    "spec.policy.diff.skip.add_schema",
    "spec.policy.diff.skip.drop_schema",
    "spec.policy.diff.skip.modify_schema",
    "spec.policy.diff.skip.add_table",
    "spec.policy.diff.skip.drop_table",
    "spec.policy.diff.skip.modify_table",
    "spec.policy.diff.skip.add_column",
    "spec.policy.diff.skip.drop_column",
    "spec.policy.diff.skip.modify_column",
    "spec.policy.diff.skip.add_index",
    "spec.policy.diff.skip.drop_index",
    "spec.policy.diff.skip.modify_index",
    "spec.policy.diff.skip.add_foreign_key",
    "spec.policy.diff.skip.drop_foreign_key",
    "spec.policy.diff.skip.modify_foreign_key",
    "status.last_applied",
    "status.planURL",
    "status.planLink",
];

const MIGRATION_FIELDS: &[&str] = &[
    "spec.cloud.url",
    "spec.cloud.project",
    "spec.dir.configMapRef.name",
    "spec.dir.local",
    "spec.dir.remote.name",
    "spec.dir.remote.tag",
    "spec.revisionsSchema",
    "spec.baseline",
    "spec.execOrder",
    "spec.protectedFlows.migrateDown.allow",
    "spec.protectedFlows.migrateDown.autoApprove",
    "spec.policy.drift.onError",
    "spec.policy.drift.exclude",
    "status.lastApplied",
    "status.lastAppliedVersion",
    "status.lastDeploymentUrl",
    "status.approvalUrl",
];

#[test]
fn crds_list_every_field_of_the_go_operator() {
    for (kind, own) in [
        ("AtlasSchema", SCHEMA_FIELDS),
        ("AtlasMigration", MIGRATION_FIELDS),
    ] {
        let schema = schema_of(kind);
        for path in SHARED_FIELDS.iter().chain(own) {
            let field = node(&schema, path).unwrap_or_else(|| panic!("{kind}: no field {path}"));
            // `kubectl explain` shows the description: every field of ours carries one.
            if !path.contains("Ref.") && !path.contains("Ref") {
                assert!(
                    field
                        .get("description")
                        .is_some_and(|d| d.as_str() != Some("")),
                    "{kind}: {path} has no description"
                );
            }
        }
        assert!(
            node(&schema, "spec.vars").unwrap()["items"]["properties"]["valueFrom"]["properties"]
                .get("configMapKeyRef")
                .is_some()
        );
    }
    let migration = schema_of("AtlasMigration");
    assert_eq!(migration["properties"]["spec"]["required"], json!(["dir"]));
}

#[test]
fn enums_and_defaults_are_upstreams() {
    let schema = schema_of("AtlasSchema");
    // Upstream's also has `all`, which `atlas schema apply --tx-mode` refuses ("[none, file]").
    assert_eq!(
        node(&schema, "spec.txMode").unwrap()["enum"],
        json!(["file", "none"])
    );
    assert_eq!(node(&schema, "spec.txMode").unwrap()["default"], "file");
    assert_eq!(
        node(&schema, "spec.policy.lint.review").unwrap()["enum"],
        json!(["ALWAYS", "WARNING", "ERROR"])
    );
    assert_eq!(node(&schema, "spec.backoffLimit").unwrap()["default"], 20);
    assert_eq!(
        node(&schema, "status").unwrap()["default"],
        json!({"observedGeneration": -1})
    );

    let schema = schema_of("AtlasMigration");
    assert_eq!(
        node(&schema, "spec.execOrder").unwrap()["enum"],
        json!(["linear", "linear-skip", "non-linear"])
    );
    assert_eq!(
        node(&schema, "spec.execOrder").unwrap()["default"],
        "linear"
    );
    assert_eq!(
        node(&schema, "spec.policy.drift.onError").unwrap()["enum"],
        json!(["FAIL", "CONTINUE"])
    );
    assert_eq!(
        node(&schema, "status").unwrap()["default"],
        json!({"observedGeneration": -1})
    );
}

#[test]
fn crds_are_namespaced_with_status_and_printer_columns() {
    for crd in crds() {
        assert_eq!(crd.spec.group, "db.atlasgo.io");
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.served && version.storage);
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let columns: Vec<_> = version
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| (c.name.as_str(), c.json_path.as_str()))
            .collect();
        let mut expected = vec![
            ("Ready", r#".status.conditions[?(@.type=="Ready")].status"#),
            ("Reason", r#".status.conditions[?(@.type=="Ready")].reason"#),
        ];
        if crd.spec.names.kind == "AtlasMigration" {
            expected.push(("Version", ".status.lastAppliedVersion"));
        }
        expected.push(("Age", ".metadata.creationTimestamp"));
        assert_eq!(columns, expected, "{}", crd.spec.names.kind);
    }
}

/// Validates an object against the CRD's CEL rules, client side, the way the API server does.
fn cel_errors(kind: &str, spec: Value) -> Vec<String> {
    let object = json!({
        "apiVersion": "db.atlasgo.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x"},
        "spec": spec,
    });
    match Validator::new().validate(&schema_of(kind), &object, None) {
        Ok(()) => vec![],
        Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
    }
}

#[test]
fn every_example_passes_the_validation_rules() {
    for path in support::yaml_files(&repo_path("examples"))
        .into_iter()
        .chain(support::yaml_files(&repo_path("tests/fixtures/upstream")))
    {
        for doc in yaml_documents(&path) {
            let kind = doc["kind"].as_str().unwrap_or_default();
            if kind == "AtlasSchema" || kind == "AtlasMigration" {
                let errors = cel_errors(kind, doc["spec"].clone());
                assert!(errors.is_empty(), "{}: {errors:?}", path.display());
            }
        }
    }
}

#[test]
fn ambiguous_or_missing_target_is_refused() {
    let dir = json!({"configMapRef": {"name": "migrations"}});
    let errors = cel_errors(
        "AtlasMigration",
        json!({"url": "postgres://a", "urlFrom": {"secretKeyRef": {"name": "s", "key": "url"}}, "dir": dir}),
    );
    assert_eq!(errors, ["set only one of url, urlFrom or credentials"]);

    let errors = cel_errors("AtlasMigration", json!({"dir": dir}));
    assert_eq!(
        errors,
        [atlas_operator::reconcile::validate::TARGET_REQUIRED]
    );

    let errors = cel_errors(
        "AtlasSchema",
        json!({"credentials": {"user": "root", "host": "db"}, "schema": {"sql": "create table t (id int);"}}),
    );
    assert_eq!(
        errors,
        ["credentials.scheme is required (postgres, mysql, maria, sqlite, …)"]
    );

    let errors = cel_errors(
        "AtlasSchema",
        json!({"credentials": {"scheme": "postgres"}, "schema": {"sql": "create table t (id int);"}}),
    );
    assert_eq!(errors, ["credentials need host or hostFrom"]);
}

#[test]
fn schema_needs_exactly_one_source() {
    let url = "mysql://root:pass@mysql:3306/myapp";
    let errors = cel_errors(
        "AtlasSchema",
        json!({"url": url, "schema": {"sql": "a", "hcl": "b"}}),
    );
    assert_eq!(errors, ["set only one of sql, hcl, url or configMapKeyRef"]);
    let errors = cel_errors("AtlasSchema", json!({"url": url, "schema": {}}));
    assert_eq!(
        errors,
        ["schema needs one of sql, hcl, url or configMapKeyRef"]
    );
    let errors = cel_errors("AtlasSchema", json!({"url": url}));
    assert_eq!(
        errors,
        ["schema needs one of sql, hcl, url or configMapKeyRef"]
    );
    // A custom project configuration may name the desired schema itself.
    assert!(
        cel_errors(
            "AtlasSchema",
            json!({"config": "env \"k8s\" {}", "envName": "k8s"})
        )
        .is_empty()
    );
}

#[test]
fn dir_needs_exactly_one_source() {
    let url = "postgres://root:pass@postgres:5432/postgres";
    let errors = cel_errors(
        "AtlasMigration",
        json!({"url": url, "dir": {"configMapRef": {"name": "m"}, "local": {"1.sql": "select 1;"}}}),
    );
    assert_eq!(errors, ["set only one of configMapRef, local or remote"]);
    let errors = cel_errors("AtlasMigration", json!({"url": url, "dir": {}}));
    assert_eq!(errors, ["dir needs one of configMapRef, local or remote"]);
}
