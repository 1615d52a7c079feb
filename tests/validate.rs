//! The validate step (src/reconcile/validate): seed manifests and their ConfigMaps turned into what the Job needs.

mod support;

use std::collections::BTreeMap;

use atlas_operator::api::{AtlasMigration, AtlasSchema};
use atlas_operator::reconcile::dereference::{self, ConfigMaps};
use atlas_operator::reconcile::hash;
use atlas_operator::reconcile::validate::{
    self, CREDENTIALS_PLACEHOLDER, ENV_PASSWORD, ENV_URL, InputSource,
};
use contract::{self, Desired, Reason, Target, Value, Work};
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::json;
use support::{repo_path, yaml_documents};

fn example(path: &str, kind: &str, pick: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let mut doc = yaml_documents(&repo_path(path))
        .into_iter()
        .find(|d| d["kind"] == kind && pick(d))
        .unwrap();
    doc["metadata"]["namespace"] = json!("tenant-a");
    doc
}

fn seed_configmap() -> ConfigMaps {
    let cm: ConfigMap = serde_json::from_value(example(
        "examples/postgres-migration/migrationdir.yaml",
        "ConfigMap",
        |_| true,
    ))
    .unwrap();
    BTreeMap::from([("migrationdir".to_string(), cm)])
}

fn seed_migration() -> AtlasMigration {
    serde_json::from_value(example(
        "examples/postgres-migration/atlasmigration.yaml",
        "AtlasMigration",
        |_| true,
    ))
    .unwrap()
}

#[test]
fn seed_migration_plans_a_secret_url_and_the_configmap() {
    let configmaps = seed_configmap();
    let plan = support::plan(&seed_migration(), &configmaps).unwrap();
    assert_eq!(plan.hash.len(), 64);
    assert_eq!(plan.task.target, Target::UrlEnv(ENV_URL.into()));
    let url = &plan.env[0];
    assert_eq!(url.name, ENV_URL);
    assert!(url.value.is_none(), "a URL is never a literal in the Job");
    let selector = url
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (selector.name.as_str(), selector.key.as_str()),
        ("postgres-credentials", "url")
    );
    assert_eq!(
        plan.inputs,
        Some(InputSource::ConfigMap {
            name: "migrationdir".into(),
            keys: None
        })
    );
    assert!(plan.inline.is_empty());
    let data = configmaps["migrationdir"].data.clone().unwrap();
    assert_eq!(
        plan.task.inputs_digest,
        contract::digest_files(data.iter().map(|(n, c)| (n.as_str(), c.as_bytes())))
    );
    assert_eq!(plan.backoff_limit, 20);
    assert_eq!(plan.task.resource, "tenant-a/atlasmigration-sample");
}

#[test]
fn the_hash_follows_the_spec_and_the_configmap_and_nothing_else() {
    let resource = seed_migration();
    let configmaps = seed_configmap();
    let base = support::plan(&resource, &configmaps).unwrap().hash;
    assert_eq!(base, support::plan(&resource, &configmaps).unwrap().hash);

    // Status and metadata noise do not change it.
    let mut noisy = resource.clone();
    noisy.metadata.resource_version = Some("42".into());
    noisy.metadata.labels = Some(BTreeMap::from([("team".into(), "a".into())]));
    noisy.status = Some(Default::default());
    assert_eq!(base, support::plan(&noisy, &configmaps).unwrap().hash);

    // A new file in the ConfigMap does.
    let mut edited = configmaps.clone();
    edited
        .get_mut("migrationdir")
        .unwrap()
        .data
        .as_mut()
        .unwrap()
        .insert("20230316085612.sql".into(), "select 1;\n".into());
    assert_ne!(base, support::plan(&resource, &edited).unwrap().hash);

    // So does the spec, and the same spec under another name.
    let mut changed = resource.clone();
    changed.spec.baseline = Some("1".into());
    assert_ne!(base, support::plan(&changed, &configmaps).unwrap().hash);
    let mut renamed = resource.clone();
    renamed.metadata.name = Some("other".into());
    assert_ne!(base, support::plan(&renamed, &configmaps).unwrap().hash);

    // The reapply annotation is the documented way to apply again with an unchanged spec.
    let mut reapply = resource.clone();
    reapply.metadata.annotations = Some(BTreeMap::from([(
        hash::REAPPLY_ANNOTATION.to_string(),
        "2026-11-23".to_string(),
    )]));
    assert_ne!(base, support::plan(&reapply, &configmaps).unwrap().hash);
}

#[test]
fn a_missing_configmap_waits_for_it() {
    let err = support::plan(&seed_migration(), &ConfigMaps::new()).unwrap_err();
    assert_eq!(err.reason, Reason::ReadingMigrationData);
    assert!(err.waits_for_object);
    assert_eq!(err.message, "ConfigMap migrationdir not found");
}

#[test]
fn the_inline_directory_goes_into_the_inputs_configmap() {
    let inline: AtlasMigration = serde_json::from_value(example(
        "examples/postgres-migration/atlasmigration-inline.yaml",
        "AtlasMigration",
        |_| true,
    ))
    .unwrap();
    let plan = support::plan(&inline, &ConfigMaps::new()).unwrap();
    assert_eq!(
        plan.inputs,
        Some(InputSource::Inline {
            files: vec!["20230316085611.sql".into(), "atlas.sum".into()]
        })
    );
    assert!(plan.inline.contains_key("20230316085611.sql"));
    assert!(plan.inline["atlas.sum"].starts_with("h1:FwM0"));
    // The same files as the ConfigMap variant: the runner checks the same digest.
    let from_cm = support::plan(&seed_migration(), &seed_configmap()).unwrap();
    assert_eq!(plan.task.inputs_digest, from_cm.task.inputs_digest);
}

#[test]
fn plain_text_secrets_in_the_spec_stay_out_of_the_job_spec() {
    let mut resource = seed_migration();
    resource.spec.target.url_from = None;
    resource.spec.target.url = Some("postgres://root:Sentinel-1@db/app".into());
    resource.spec.dev.dev_url = Some("postgres://root:Sentinel-2@dev/app".into());
    let plan = support::plan(&resource, &seed_configmap()).unwrap();
    // For the credentials Secret, never the inputs ConfigMap (which `view` can read).
    assert_eq!(
        plan.credentials["atlas-operator.target-url"],
        "postgres://root:Sentinel-1@db/app"
    );
    assert_eq!(
        plan.credentials["atlas-operator.dev-url"],
        "postgres://root:Sentinel-2@dev/app"
    );
    let inline = serde_json::to_string(&plan.inline).unwrap();
    assert!(!inline.contains("Sentinel"), "{inline}");
    let env = serde_json::to_string(&plan.env).unwrap();
    assert!(!env.contains("Sentinel"), "{env}");
    assert!(env.contains(CREDENTIALS_PLACEHOLDER), "{env}");
    assert!(
        !serde_json::to_string(&plan.task)
            .unwrap()
            .contains("Sentinel-1")
    );

    let mut credentials: AtlasMigration = serde_json::from_value(json!({
        "apiVersion": "db.atlasgo.io/v1alpha1", "kind": "AtlasMigration",
        "metadata": {"name": "c", "namespace": "tenant-a"},
        "spec": {
            "credentials": {"scheme": "postgres", "user": "root", "host": "db", "port": 5432,
                            "passwordFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
            "dir": {"configMapRef": {"name": "migrationdir"}}
        }
    }))
    .unwrap();
    let plan = support::plan(&credentials, &seed_configmap()).unwrap();
    let Target::Credentials(parts) = &plan.task.target else {
        panic!("{:?}", plan.task.target)
    };
    assert_eq!(parts.user, Some(Value::Literal("root".into())));
    assert_eq!(parts.password_env.as_deref(), Some(ENV_PASSWORD));
    assert_eq!(parts.port, Some(5432));
    credentials.spec.target.credentials.as_mut().unwrap().host = None;
    let err = support::plan(&credentials, &seed_configmap()).unwrap_err();
    assert_eq!(err.message, "credentials need host or hostFrom");
}

#[test]
fn cloud_sources_this_build_cannot_reach_are_refused_plainly() {
    let argocd: AtlasMigration = serde_json::from_value(example(
        "examples/argocd/atlas-migration.yaml",
        "AtlasMigration",
        |_| true,
    ))
    .unwrap();
    let err = support::plan(&argocd, &ConfigMaps::new()).unwrap_err();
    assert_eq!(err.reason, Reason::ReadingMigrationData);
    assert!(!err.waits_for_object);
    assert!(err.message.contains("Atlas Cloud"), "{}", err.message);
}

/// What this operator cannot do is never silently ignored: a review asked for refuses the apply
/// (no change may run unreviewed), a drift check it cannot run is said and the apply goes on.
#[test]
fn cloud_policies_are_refused_or_said_never_ignored() {
    let mut mysql: AtlasSchema = serde_json::from_value(example(
        "examples/mysql-schema/schema.yaml",
        "AtlasSchema",
        |_| true,
    ))
    .unwrap();
    mysql.spec.policy =
        Some(serde_json::from_value(json!({"lint": {"review": "ALWAYS"}})).unwrap());
    let err = support::plan(&mysql, &ConfigMaps::new()).unwrap_err();
    assert_eq!(err.message, validate::schema::LINT_REVIEW_REFUSED);
    assert!(!err.waits_for_object);

    let plan = support::plan(&seed_migration(), &seed_configmap()).unwrap();
    assert!(plan.notices.is_empty());
    let mut drift = seed_migration();
    drift.spec.policy =
        Some(serde_json::from_value(json!({"drift": {"onError": "FAIL"}})).unwrap());
    let plan = support::plan(&drift, &seed_configmap()).unwrap();
    assert_eq!(plan.notices, [validate::migration::DRIFT_NOT_CHECKED]);
    drift.spec.cloud = Some(serde_json::from_value(json!({"project": "p"})).unwrap());
    let plan = support::plan(&drift, &seed_configmap()).unwrap();
    assert_eq!(
        plan.notices,
        [
            validate::migration::DRIFT_NOT_CHECKED,
            validate::CLOUD_WITHOUT_TOKEN
        ]
    );
    // A token of the resource's own reaches the Job from its Secret: nothing to say.
    drift.spec.cloud = Some(
        serde_json::from_value(json!({"project": "p", "url": "https://atlas.example",
            "tokenFrom": {"secretKeyRef": {"name": "atlas-token", "key": "token"}}}))
        .unwrap(),
    );
    let plan = support::plan(&drift, &seed_configmap()).unwrap();
    assert_eq!(plan.notices, [validate::migration::DRIFT_NOT_CHECKED]);
    let token = plan
        .env
        .iter()
        .find(|var| var.name == "ATLAS_TOKEN")
        .expect("the token's variable");
    assert!(token.value.is_none(), "never the value");
    let selector = token
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (selector.name.as_str(), selector.key.as_str()),
        ("atlas-token", "token")
    );
    let cloud = plan.task.cloud.as_ref().unwrap();
    assert_eq!(cloud.project.as_deref(), Some("p"));
    assert_eq!(cloud.url.as_deref(), Some("https://atlas.example"));
}

#[test]
fn seed_schemas_plan_their_policies() {
    let mysql: AtlasSchema = serde_json::from_value(example(
        "examples/mysql-schema/schema.yaml",
        "AtlasSchema",
        |_| true,
    ))
    .unwrap();
    let plan = support::plan(&mysql, &ConfigMaps::new()).unwrap();
    assert!(plan.inline["schema.sql"].contains("short_bio"));
    let Work::Schema(schema) = &plan.task.work else {
        panic!("{:?}", plan.task.work)
    };
    assert_eq!(
        schema.desired,
        Desired::File("/atlas/inputs/schema.sql".into())
    );
    assert!(!schema.lint_destructive);

    let policy: AtlasSchema = serde_json::from_value(example(
        "examples/schema-policy/schema.yaml",
        "AtlasSchema",
        |_| true,
    ))
    .unwrap();
    let plan = support::plan(&policy, &ConfigMaps::new()).unwrap();
    let Work::Schema(schema) = &plan.task.work else {
        panic!("{:?}", plan.task.work)
    };
    assert!(schema.lint_destructive);
    assert_eq!(schema.skip, ["drop_index"]);
    assert_eq!(schema.exclude, ["ignore_me"]);
    assert!(!schema.lint_data_depend);
}

#[test]
fn the_data_dependent_lint_policy_reaches_the_runner() {
    let resource: AtlasSchema = serde_json::from_value(json!({
        "apiVersion": "db.atlasgo.io/v1alpha1", "kind": "AtlasSchema",
        "metadata": {"name": "s", "namespace": "tenant-a"},
        "spec": {"url": "mysql://root:pass@db:3306/app", "devURL": "mysql://root:pass@dev:3306/dev",
                 "schema": {"sql": "create table t (id int);"},
                 "policy": {"lint": {"dataDepend": {"error": true}}}}
    }))
    .unwrap();
    let plan = support::plan(&resource, &ConfigMaps::new()).unwrap();
    let Work::Schema(schema) = &plan.task.work else {
        panic!("{:?}", plan.task.work)
    };
    assert!(schema.lint_data_depend);
    assert!(!schema.lint_destructive);
}

#[test]
fn a_schema_from_a_configmap_key_needs_the_key() {
    let resource: AtlasSchema = serde_json::from_value(json!({
        "apiVersion": "db.atlasgo.io/v1alpha1", "kind": "AtlasSchema",
        "metadata": {"name": "s", "namespace": "tenant-a"},
        "spec": {"urlFrom": {"secretKeyRef": {"name": "db", "key": "url"}},
                 "schema": {"configMapKeyRef": {"name": "desired", "key": "schema.hcl"}}}
    }))
    .unwrap();
    let err = support::plan(&resource, &ConfigMaps::new()).unwrap_err();
    assert!(err.waits_for_object);
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "desired"}, "data": {"other.hcl": "x"}
    }))
    .unwrap();
    let configmaps = BTreeMap::from([("desired".to_string(), cm)]);
    let err = support::plan(&resource, &configmaps).unwrap_err();
    assert_eq!(err.message, "ConfigMap desired has no key schema.hcl");
    assert_eq!(dereference::schema_configmaps(&resource), ["desired"]);
}

/// A custom atlas.hcl travels to the runner by reference (the inputs ConfigMap or the user's
/// Secret) and its variables by environment variable; misuse is refused with what to fix.
#[test]
fn custom_configs_and_vars_are_planned_by_reference() {
    let mut resource = seed_migration();
    resource.spec.project.config = Some("variable \"a\" {\n  type = string\n}\n".into());
    resource.spec.project.vars = Some(vec![
        serde_json::from_value(json!({"key": "a", "value": "plain"})).unwrap(),
        serde_json::from_value(
            json!({"key": "a", "valueFrom": {"secretKeyRef": {"name": "vars", "key": "a"}}}),
        )
        .unwrap(),
    ]);
    let plan = support::plan(&resource, &seed_configmap()).unwrap();
    assert_eq!(
        plan.task.custom_config_env.as_deref(),
        Some(validate::ENV_CUSTOM_CONFIG)
    );
    assert!(plan.inline.values().any(|v| v.contains("variable \"a\"")));
    assert_eq!(plan.task.vars[0].value, Value::Literal("plain".into()));
    let Value::Env(secret_env) = &plan.task.vars[1].value else {
        panic!("{:?}", plan.task.vars[1]);
    };
    let env = plan.env.iter().find(|e| &e.name == secret_env).unwrap();
    let selector = env
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (selector.name.as_str(), selector.key.as_str()),
        ("vars", "a")
    );

    let mut from_secret = seed_migration();
    from_secret.spec.project.config_from = Some(
        serde_json::from_value(json!({"secretKeyRef": {"name": "hcl", "key": "atlas.hcl"}}))
            .unwrap(),
    );
    let plan = support::plan(&from_secret, &seed_configmap()).unwrap();
    let env = plan
        .env
        .iter()
        .find(|e| e.name == validate::ENV_CUSTOM_CONFIG)
        .unwrap();
    assert!(env.value_from.as_ref().unwrap().secret_key_ref.is_some());

    let mut both = from_secret.clone();
    both.spec.project.config = Some("env \"k8s\" {}".into());
    let err = support::plan(&both, &seed_configmap()).unwrap_err();
    assert!(
        err.message.contains("only one of config and configFrom"),
        "{}",
        err.message
    );

    let mut vars_alone = seed_migration();
    vars_alone.spec.project.vars = Some(vec![
        serde_json::from_value(json!({"key": "a", "value": "b"})).unwrap(),
    ]);
    let err = support::plan(&vars_alone, &seed_configmap()).unwrap_err();
    assert_eq!(err.reason, Reason::ReadingMigrationData);
    assert!(
        err.message.contains("custom Atlas config"),
        "{}",
        err.message
    );
}

/// `backoffLimit` as upstream reads it: retries before the resource is failed, 20 by default,
/// and 0 for no limit (the Job's own 0 would mean no retry at all).
#[test]
fn backoff_limit_zero_means_no_limit() {
    for (given, job) in [(None, 20), (Some(3), 3), (Some(0), i32::MAX)] {
        let mut migration = seed_migration();
        migration.spec.backoff_limit = given;
        let plan = support::plan(&migration, &seed_configmap()).unwrap();
        assert_eq!(plan.backoff_limit, job, "spec.backoffLimit {given:?}");
    }
}

/// Upstream's users may name the target only in their own project file: with a custom config
/// and no url, urlFrom or credentials, the runner leaves the config's url to Atlas; without a
/// custom config the refusal says how to name one.
#[test]
fn a_target_named_only_by_the_custom_config_is_planned() {
    let mut resource = seed_migration();
    resource.spec.target.url_from = None;
    resource.spec.project.config = Some(
        "variable \"db_url\" {\n  type = string\n}\nenv \"test\" {\n  url = var.db_url\n}\n".into(),
    );
    resource.spec.project.env_name = Some("test".into());
    let plan = support::plan(&resource, &seed_configmap()).unwrap();
    assert_eq!(plan.task.target, Target::FromConfig);
    assert_eq!(plan.task.env_name, "test");

    resource.spec.project.config = None;
    let refused = support::plan(&resource, &seed_configmap()).unwrap_err();
    assert_eq!(refused.message, validate::TARGET_REQUIRED);
}

/// `spec.jobPod.env` may not set what the operator sets, nor read anything but a value or a
/// Secret's or ConfigMap's key.
#[test]
fn job_pod_env_is_checked() {
    let refused = |env: serde_json::Value| {
        let mut migration = seed_migration();
        migration.spec.job_pod = Some(serde_json::from_value(json!({"env": env})).unwrap());
        support::plan(&migration, &seed_configmap()).unwrap_err()
    };
    for name in [
        "PATH",
        "ATLAS_BIN",
        contract::TASK_ENV,
        "ATLAS_RUNNER_URL",
        "TMPDIR",
    ] {
        let err = refused(json!([{"name": name, "value": "x"}]));
        assert!(
            err.message.contains("is set by the operator"),
            "{name}: {}",
            err.message
        );
        assert!(!err.waits_for_object);
    }
    let err = refused(json!([{"name": "ATLAS_TOKEN", "value": "x"}]));
    assert!(
        err.message.contains("spec.cloud.tokenFrom"),
        "{}",
        err.message
    );
    let err = refused(
        json!([{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]),
    );
    assert!(
        err.message.contains("secretKeyRef, configMapKeyRef"),
        "{}",
        err.message
    );

    let mut migration = seed_migration();
    migration.spec.job_pod = Some(
        serde_json::from_value(json!({"env": [
            {"name": "HTTPS_PROXY", "value": "http://proxy:3128"},
            {"name": "PGSSLROOTCERT_DATA", "valueFrom": {"configMapKeyRef": {"name": "ca", "key": "crt"}}}]}))
        .unwrap(),
    );
    let plan = support::plan(&migration, &seed_configmap()).unwrap();
    assert_eq!(plan.job_pod.env.as_ref().unwrap().len(), 2);
}

/// `txMode: all` stored before the CRD left it out: read, and refused with a message (Atlas's
/// `schema apply` would refuse it anyway, with "unknown tx-mode").
#[test]
fn a_stored_tx_mode_all_is_refused_plainly() {
    let mut mysql: AtlasSchema = serde_json::from_value(example(
        "examples/mysql-schema/schema.yaml",
        "AtlasSchema",
        |_| true,
    ))
    .unwrap();
    mysql.spec.tx_mode = serde_json::from_value(json!("all")).unwrap();
    let err = support::plan(&mysql, &ConfigMaps::new()).unwrap_err();
    assert_eq!(err.message, validate::schema::TX_MODE_ALL_REFUSED);
    assert!(!err.waits_for_object);
    mysql.spec.tx_mode = serde_json::from_value(json!("none")).unwrap();
    let plan = support::plan(&mysql, &ConfigMaps::new()).unwrap();
    let Work::Schema(work) = &plan.task.work else {
        panic!("{:?}", plan.task.work)
    };
    assert_eq!(work.tx_mode, Some(contract::TxMode::None));
}
