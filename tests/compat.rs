//! Drop-in compatibility with the Go operator: manifests that set every field of its CRDs, and the
//! status it writes, survive our types unchanged (same JSON names, nothing dropped).

mod support;

use atlas_operator::api::{AtlasMigration, AtlasMigrationStatus, AtlasSchema, AtlasSchemaStatus};
use support::{repo_path, round_trip_differences, yaml_documents, yaml_files};

#[test]
fn upstream_manifests_lose_no_field() {
    let files = yaml_files(&repo_path("tests/fixtures/upstream"));
    assert!(files.len() >= 4);
    for path in files {
        for doc in yaml_documents(&path) {
            let differences = match doc["kind"].as_str() {
                Some("AtlasSchema") => round_trip_differences::<AtlasSchema>(&doc),
                Some("AtlasMigration") => round_trip_differences::<AtlasMigration>(&doc),
                other => panic!("{}: unexpected kind {other:?}", path.display()),
            };
            assert!(
                differences.is_empty(),
                "{}: {differences:#?}",
                path.display()
            );
        }
    }
}

/// Tools written for the Go operator read these exact names; upstream mixes cases on purpose.
#[test]
fn status_serializes_with_upstream_names() {
    let schema = AtlasSchemaStatus {
        conditions: Some(vec![]),
        observed_generation: Some(3),
        observed_hash: Some("abc".into()),
        last_applied: Some(1),
        plan_url: Some("u".into()),
        plan_link: Some("l".into()),
        failed: Some(0),
    };
    let json = serde_json::to_value(&schema).unwrap();
    let mut keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "conditions",
            "failed",
            "last_applied",
            "observedGeneration",
            "observed_hash",
            "planLink",
            "planURL"
        ]
    );

    let migration = AtlasMigrationStatus {
        conditions: Some(vec![]),
        observed_generation: Some(3),
        observed_hash: Some("abc".into()),
        last_applied: Some(1),
        last_applied_version: Some("20230316085611".into()),
        last_deployment_url: Some("d".into()),
        approval_url: Some("a".into()),
        failed: Some(0),
    };
    let json = serde_json::to_value(&migration).unwrap();
    let mut keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "approvalUrl",
            "conditions",
            "failed",
            "lastApplied",
            "lastAppliedVersion",
            "lastDeploymentUrl",
            "observedGeneration",
            "observed_hash"
        ]
    );
}

/// The Go operator always writes some status fields, even empty; a status it left behind must
/// still read, and an empty status must read too.
#[test]
fn status_written_by_the_go_operator_reads() {
    let left_behind = serde_json::json!({
        "observed_hash": "",
        "lastApplied": 0,
        "failed": 2,
        "conditions": [{
            "type": "Ready", "status": "False", "reason": "Migrating",
            "message": "sql/migrate: executing statement", "lastTransitionTime": "2024-03-20T09:59:56Z"
        }]
    });
    let status: AtlasMigrationStatus = serde_json::from_value(left_behind).unwrap();
    assert_eq!(status.failed, Some(2));
    assert_eq!(status.conditions.unwrap()[0].reason, "Migrating");
    let empty: AtlasSchemaStatus = serde_json::from_value(serde_json::json!({})).unwrap();
    assert_eq!(empty, AtlasSchemaStatus::default());
}
