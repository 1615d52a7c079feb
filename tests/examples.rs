//! Every manifest in examples/ (the seeds' manifests, verbatim) loads into our types with no field
//! lost, and the examples hold every manifest of the seeds.

mod support;

use atlas_operator::api::{AtlasMigration, AtlasSchema};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde_json::Value;
use support::{kustomize_files, repo_path, round_trip_differences, yaml_documents, yaml_files};

/// The objects in examples/: kustomize's own files are not objects (tests/argocd.rs renders the
/// folder they describe).
fn example_documents() -> Vec<(String, Value)> {
    let kustomize = kustomize_files(&repo_path("examples"));
    yaml_files(&repo_path("examples"))
        .into_iter()
        .filter(|path| !kustomize.contains(path))
        .flat_map(|path| {
            let name = path
                .strip_prefix(repo_path(""))
                .unwrap()
                .display()
                .to_string();
            yaml_documents(&path)
                .into_iter()
                .map(move |doc| (name.clone(), doc))
        })
        .collect()
}

#[test]
fn every_example_round_trips_through_the_types() {
    let mut checked = 0;
    for (file, doc) in example_documents() {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        let differences = match (
            doc["apiVersion"].as_str().unwrap_or_default(),
            kind.as_str(),
        ) {
            ("db.atlasgo.io/v1alpha1", "AtlasSchema") => {
                round_trip_differences::<AtlasSchema>(&doc)
            }
            ("db.atlasgo.io/v1alpha1", "AtlasMigration") => {
                round_trip_differences::<AtlasMigration>(&doc)
            }
            ("v1", "Secret") => round_trip_differences::<Secret>(&doc),
            ("v1", "ConfigMap") => round_trip_differences::<ConfigMap>(&doc),
            ("apps/v1", "Deployment") => round_trip_differences::<Deployment>(&doc),
            // ArgoCD's Application is not ours to model; the tutorial's is checked below, the
            // kustomize example's by tests/argocd.rs.
            ("argoproj.io/v1alpha1", "Application") => continue,
            (api_version, kind) => panic!("{file}: unexpected {api_version} {kind}"),
        };
        assert!(differences.is_empty(), "{file} ({kind}): {differences:#?}");
        checked += 1;
    }
    assert!(
        checked >= 9,
        "only {checked} example documents were checked"
    );
}

/// The seed README's manifests, by the names it gives them, are all here.
#[test]
fn examples_hold_every_seed_manifest() {
    let documents = example_documents();
    let find = |kind: &str, name: &str, pick: &dyn Fn(&Value) -> bool| {
        documents
            .iter()
            .filter(|(_, doc)| doc["kind"] == kind && doc["metadata"]["name"] == name)
            .find(|(_, doc)| pick(doc))
            .unwrap_or_else(|| panic!("no {kind} {name} in examples/"))
            .1
            .clone()
    };

    let mysql = find("AtlasSchema", "atlasschema-mysql", &|doc| {
        doc["spec"]["policy"].is_null()
    });
    let sql = mysql["spec"]["schema"]["sql"].as_str().unwrap();
    assert!(sql.contains("short_bio varchar(255) not null"));
    assert_eq!(
        mysql["spec"]["urlFrom"]["secretKeyRef"]["name"],
        "mysql-credentials"
    );

    let policy = find("AtlasSchema", "atlasschema-mysql", &|doc| {
        !doc["spec"]["policy"].is_null()
    });
    assert_eq!(
        policy["spec"]["policy"]["lint"]["destructive"]["error"],
        true
    );
    assert_eq!(policy["spec"]["policy"]["diff"]["skip"]["drop_index"], true);
    assert_eq!(policy["spec"]["exclude"][0], "ignore_me");

    let dir = find("ConfigMap", "migrationdir", &|_| true);
    let configmap = find("AtlasMigration", "atlasmigration-sample", &|doc| {
        !doc["spec"]["dir"]["configMapRef"].is_null()
    });
    assert_eq!(
        configmap["spec"]["dir"]["configMapRef"]["name"],
        "migrationdir"
    );
    let inline = find("AtlasMigration", "atlasmigration-sample", &|doc| {
        !doc["spec"]["dir"]["local"].is_null()
    });
    // The inline directory is the ConfigMap's data, byte for byte: atlas.sum hashes those bytes.
    assert_eq!(inline["spec"]["dir"]["local"], dir["data"]);
    assert_eq!(
        dir["data"]["atlas.sum"],
        "h1:FwM0ApKo8xhcZFrSlpa6dYjvi0fnDPo/aZSzajtbHLc=\n\
         20230316085611.sql h1:ldFr73m6ZQzNi8q9dVJsOU/ZHmkBo4Sax03AaL0VUUs=\n"
    );

    let argocd = find("AtlasMigration", "migration", &|_| true);
    assert_eq!(argocd["spec"]["cloud"]["project"], "atlasdemo");
    assert_eq!(
        argocd["spec"]["dir"]["remote"]["tag"],
        "1d579be616db48803bb21713fd836a9165030f18"
    );
    let application = find("Application", "atlas-argocd-demo", &|_| true);
    assert_eq!(application["spec"]["source"]["path"], "manifests");

    // Every Secret the examples reference is among the examples too.
    for (secret, key) in [
        ("mysql-credentials", "url"),
        ("postgres-credentials", "url"),
        ("atlas-credentials", "token"),
    ] {
        let found = find("Secret", secret, &|_| true);
        assert!(
            found["stringData"][key].is_string(),
            "Secret {secret} lacks key {key}"
        );
    }
}

/// devcluster::seed is the one copy of the seed's SQL that tests, benchmarks and the demo use:
/// it must be the examples' text, byte for byte (atlas.sum hashes the exact bytes).
#[test]
fn the_seed_content_in_code_is_the_examples_text() {
    use devcluster::seed;
    let docs = yaml_documents(&repo_path("examples/postgres-migration/migrationdir.yaml"));
    let data = &docs[0]["data"];
    assert_eq!(data[seed::MIGRATION_FILE], seed::MIGRATION_SQL);
    assert_eq!(data["atlas.sum"], seed::MIGRATION_SUM);
    let docs = yaml_documents(&repo_path("examples/mysql-schema/schema.yaml"));
    assert_eq!(docs[0]["spec"]["schema"]["sql"], seed::SCHEMA_SQL);
}
