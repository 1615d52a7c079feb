//! The build step: the Job rendered for a plan, snapshot-tested (review a change with
//! `cargo insta review`, or `INSTA_UPDATE=always cargo test --test build` and read the diff).

mod support;

use std::collections::BTreeMap;

use atlas_operator::api::{AtlasMigration, AtlasSchema};
use atlas_operator::reconcile::build::{self, JobSettings, Owner};
use atlas_operator::reconcile::dereference::ConfigMaps;
use atlas_operator::reconcile::validate;
use contract::Kind;
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::json;
use support::{repo_path, yaml_documents};

fn doc(path: &str, kind: &str) -> serde_json::Value {
    let mut doc = yaml_documents(&repo_path(path))
        .into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap();
    doc["metadata"]["namespace"] = json!("tenant-a");
    doc
}

fn owner(kind: Kind, name: &str) -> Owner {
    Owner {
        kind,
        namespace: "tenant-a".into(),
        name: name.into(),
        uid: "0b9f6a52-1c1e-4d4e-9a43-5f0c1f7f0001".into(),
    }
}

fn settings() -> JobSettings {
    JobSettings {
        runner_image: "ghcr.io/atlas-operator/runner:test".into(),
        ..JobSettings::default()
    }
}

#[test]
fn seed_migration_job() {
    let resource: AtlasMigration = serde_json::from_value(doc(
        "examples/postgres-migration/atlasmigration.yaml",
        "AtlasMigration",
    ))
    .unwrap();
    let cm: ConfigMap = serde_json::from_value(doc(
        "examples/postgres-migration/migrationdir.yaml",
        "ConfigMap",
    ))
    .unwrap();
    let configmaps: ConfigMaps = BTreeMap::from([("migrationdir".to_string(), cm)]);
    let plan = support::plan(&resource, &configmaps).unwrap();
    let owner = owner(Kind::Migration, "atlasmigration-sample");
    assert!(build::inputs_configmap(&plan, &owner).is_none());
    let rendered = build::render(&plan, &owner, &settings());
    insta::assert_yaml_snapshot!(rendered);
}

#[test]
fn seed_schema_job_and_its_inputs() {
    let resource: AtlasSchema =
        serde_json::from_value(doc("examples/schema-policy/schema.yaml", "AtlasSchema")).unwrap();
    let plan = support::plan(&resource, &ConfigMaps::new()).unwrap();
    let owner = owner(Kind::Schema, "atlasschema-mysql");
    let rendered = build::render(&plan, &owner, &settings());
    insta::assert_yaml_snapshot!(rendered);
    let inputs = build::inputs_configmap(&plan, &owner).unwrap();
    assert_eq!(inputs.immutable, Some(true));
    insta::assert_yaml_snapshot!(inputs);
}

#[test]
fn the_pod_is_restricted() {
    let resource: AtlasSchema =
        serde_json::from_value(doc("examples/mysql-schema/schema.yaml", "AtlasSchema")).unwrap();
    let plan = support::plan(&resource, &ConfigMaps::new()).unwrap();
    let rendered = build::render(&plan, &owner(Kind::Schema, "s"), &settings());
    let pod = rendered.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    let security = pod.security_context.unwrap();
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let container = &pod.containers[0];
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(
        security.capabilities.as_ref().unwrap().drop,
        Some(vec!["ALL".to_string()])
    );
    assert_eq!(
        container.termination_message_policy.as_deref(),
        Some("FallbackToLogsOnError")
    );
    let mounts = container.volume_mounts.as_ref().unwrap();
    assert!(mounts.iter().any(|m| m.mount_path == "/tmp"));
}

#[test]
fn a_password_written_in_the_spec_is_not_in_the_job() {
    let mut resource: AtlasMigration = serde_json::from_value(doc(
        "examples/postgres-migration/atlasmigration-inline.yaml",
        "AtlasMigration",
    ))
    .unwrap();
    resource.spec.target.url_from = None;
    resource.spec.target.url = Some("postgres://root:Sentinel-Job-7@db:5432/app".into());
    let plan = support::plan(&resource, &ConfigMaps::new()).unwrap();
    let owner = owner(Kind::Migration, "m");
    let job = build::render(&plan, &owner, &settings());
    let rendered = serde_json::to_string(&job).unwrap();
    assert!(!rendered.contains("Sentinel-Job-7"), "{rendered}");
    // Never in a ConfigMap, which the built-in `view` role reads.
    if let Some(inputs) = build::inputs_configmap(&plan, &owner) {
        let data = serde_json::to_string(&inputs).unwrap();
        assert!(!data.contains("Sentinel-Job-7"), "{data}");
    }
    // It reaches the pod from the credentials Secret, owned by the Job, which starts suspended
    // until the Secret exists.
    let mut created = job.clone();
    created.metadata.uid = Some("job-uid".into());
    let secret = build::credentials_secret(&plan, &owner, &created).unwrap();
    let value = &secret.data.as_ref().unwrap()["atlas-operator.target-url"];
    assert_eq!(value.0, b"postgres://root:Sentinel-Job-7@db:5432/app");
    assert_eq!(secret.immutable, Some(true));
    let owners = secret.metadata.owner_references.as_ref().unwrap();
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].uid.as_str()),
        ("Job", "job-uid")
    );
    assert_eq!(job.spec.as_ref().unwrap().suspend, Some(true));
    let name = build::credentials_name(&plan, &owner);
    assert_eq!(secret.metadata.name.as_deref(), Some(name.as_str()));
    assert!(
        rendered.contains(&format!(
            "{{\"key\":\"atlas-operator.target-url\",\"name\":\"{name}\",\"optional\":false}}"
        )),
        "{rendered}"
    );
}

#[test]
fn job_names_fit_and_stay_apart() {
    let long = "a".repeat(80);
    let name = build::job_name(Kind::Migration, &long, "0123abcd");
    assert!(name.len() <= 63, "{name}");
    assert!(name.starts_with("atlasmigration-aaa") && name.ends_with("-0123abcd"));
    assert_eq!(
        build::job_name(Kind::Schema, "atlasschema-mysql", "89ab01cd"),
        "atlasschema-atlasschema-mysql-89ab01cd"
    );
    let label = build::label_value(&long);
    assert!(label.len() <= 63);
    assert_ne!(label, build::label_value(&"a".repeat(81)));
}

/// An AtlasSchema on a server database with no dev URL: its Job brings a dev database sidecar.
#[test]
fn a_schema_without_a_dev_url_gets_a_dev_database_sidecar() {
    let mut resource: AtlasSchema =
        serde_json::from_value(doc("examples/mysql-schema/schema.yaml", "AtlasSchema")).unwrap();
    // A literal URL: the driver is known without reading a Secret.
    resource.spec.target.url_from = None;
    resource.spec.target.url = Some("mysql://root:pass@mysql:3306/myapp".into());
    let plan = support::plan(&resource, &ConfigMaps::new()).unwrap();
    assert_eq!(plan.dev, validate::DevNeed::Sidecar("mysql".into()));
    let rendered = build::render(
        &plan,
        &owner(Kind::Schema, "atlasschema-mysql"),
        &settings(),
    );
    insta::assert_yaml_snapshot!(rendered);

    // From a Secret, the driver is unknown: the first Job has no sidecar and finds it.
    let seed: AtlasSchema =
        serde_json::from_value(doc("examples/mysql-schema/schema.yaml", "AtlasSchema")).unwrap();
    let mut plan = support::plan(&seed, &ConfigMaps::new()).unwrap();
    assert_eq!(plan.dev, validate::DevNeed::Unknown);
    let owner = owner(Kind::Schema, "atlasschema-mysql");
    let first = build::render(&plan, &owner, &settings());
    assert!(
        first
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
            .init_containers
            .is_none()
    );
    plan.dev = validate::DevNeed::Found("mysql".into());
    let second = build::render(&plan, &owner, &settings());
    let name = second.metadata.name.clone().unwrap();
    assert!(name.ends_with("-dev") && name.len() <= 63, "{name}");
    let pod = second.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.init_containers.unwrap()[0].restart_policy.as_deref(),
        Some("Always")
    );

    // Migrations and explicit dev URLs need none.
    let mut explicit = resource.clone();
    explicit.spec.dev.dev_url = Some("mysql://root:pass@dev:3306/dev".into());
    assert_eq!(
        support::plan(&explicit, &ConfigMaps::new()).unwrap().dev,
        validate::DevNeed::None
    );
}

/// `spec.devDB`, the Go operator's dev database pod, shapes the sidecar where it can: the first
/// container's image, pull policy and resources, and the pod's labels and annotations.
#[test]
fn dev_db_overrides_the_sidecar_image_resources_and_pod_metadata() {
    let mut resource: AtlasSchema =
        serde_json::from_value(doc("examples/mysql-schema/schema.yaml", "AtlasSchema")).unwrap();
    resource.spec.target.url_from = None;
    resource.spec.target.url = Some("mysql://root:pass@mysql:3306/myapp".into());
    resource.spec.dev.dev_db = Some(
        serde_json::from_value(json!({
            "metadata": {
                "labels": { "team": "payments", "db.atlasgo.io/name": "not-the-owner" },
                "annotations": { "sidecar.istio.io/inject": "true", "team/owner": "payments" },
            },
            "spec": { "containers": [{
                "name": "mysql",
                "image": "mysql:8.0.36",
                "imagePullPolicy": "IfNotPresent",
                "resources": { "limits": { "memory": "2Gi" } },
            }]},
        }))
        .unwrap(),
    );
    let plan = support::plan(&resource, &ConfigMaps::new()).unwrap();
    let owner = owner(Kind::Schema, "atlasschema-mysql");
    let rendered = build::render(&plan, &owner, &settings());
    let template = rendered.spec.unwrap().template;
    let metadata = template.metadata.unwrap();
    let labels = metadata.labels.unwrap();
    assert_eq!(labels["team"], "payments");
    // The operator's own labels find its pods: a devDB label cannot take them over.
    assert_eq!(labels["db.atlasgo.io/name"], "atlasschema-mysql");
    // The resource's annotations win over the install's (the mesh opt-outs by default).
    let annotations = metadata.annotations.unwrap();
    assert_eq!(annotations["sidecar.istio.io/inject"], "true");
    assert_eq!(annotations["linkerd.io/inject"], "disabled");
    assert_eq!(annotations["team/owner"], "payments");
    let sidecar = &template.spec.unwrap().init_containers.unwrap()[0];
    assert_eq!(sidecar.image.as_deref(), Some("mysql:8.0.36"));
    assert_eq!(sidecar.image_pull_policy.as_deref(), Some("IfNotPresent"));
    let resources = sidecar.resources.clone().unwrap();
    assert_eq!(resources.limits.unwrap()["memory"].0, "2Gi");
    assert!(resources.requests.is_none());

    // With an explicit dev URL and no devDB there is no sidecar, and no dev database metadata
    // on the pod (with a devDB, the sidecar is the server the URL names: the test below).
    let mut explicit = resource.clone();
    explicit.spec.dev.dev_url = Some("mysql://root:pass@dev:3306/dev".into());
    explicit.spec.dev.dev_db = None;
    let plan = support::plan(&explicit, &ConfigMaps::new()).unwrap();
    let template = build::render(&plan, &owner, &settings())
        .spec
        .unwrap()
        .template;
    let metadata = template.metadata.unwrap();
    assert!(!metadata.labels.unwrap().contains_key("team"));
    // Only the install's: the mesh injection opt-outs.
    assert_eq!(
        metadata.annotations.unwrap(),
        BTreeMap::from([
            ("linkerd.io/inject".to_string(), "disabled".to_string()),
            ("sidecar.istio.io/inject".to_string(), "false".to_string()),
        ])
    );
    // An install that lets the mesh in: none.
    let mut mesh = settings();
    mesh.pod_annotations.clear();
    let template = build::render(&plan, &owner, &mesh).spec.unwrap().template;
    assert!(template.metadata.unwrap().annotations.is_none());

    // A devDB.spec that is not a pod spec is refused before any Job, saying why.
    let mut broken = resource.clone();
    broken.spec.dev.dev_db =
        Some(serde_json::from_value(json!({ "spec": { "containers": "mysql:8" } })).unwrap());
    let err = support::plan(&broken, &ConfigMaps::new()).unwrap_err();
    assert_eq!(err.reason.as_str(), "GettingDevDB");
    assert!(
        err.message.starts_with("spec.devDB.spec is not a pod spec"),
        "{}",
        err.message
    );
    assert!(!err.waits_for_object);
}

/// Upstream's pattern: `devURL` names a server on the pod's loopback and `devDB` describes it.
/// Both are honoured: the sidecar runs `devDB`'s image with its environment (the credentials
/// `devURL` uses), and the runner waits for and uses the given `devURL`.
#[test]
fn dev_url_and_dev_db_together_run_the_described_server_next_to_the_runner() {
    let mut resource: AtlasSchema =
        serde_json::from_value(doc("examples/mysql-schema/schema.yaml", "AtlasSchema")).unwrap();
    resource.spec.dev.dev_url = Some("mysql://root:pass@localhost:3306/dev".into());
    resource.spec.dev.dev_db = Some(
        serde_json::from_value(json!({"spec": {"containers": [{
            "name": "mysql",
            "image": "mysql:8",
            "env": [
                {"name": "MYSQL_ROOT_PASSWORD", "value": "pass"},
                {"name": "MYSQL_DATABASE", "value": "dev"},
            ],
            "ports": [{"containerPort": 3306, "name": "mysql"}],
        }]}}))
        .unwrap(),
    );
    let plan = support::plan(&resource, &ConfigMaps::new()).unwrap();
    assert_eq!(plan.dev, validate::DevNeed::Described("mysql".into()));
    let job = build::render(
        &plan,
        &owner(Kind::Schema, "atlasschema-mysql"),
        &settings(),
    );
    let pod = job.spec.unwrap().template.spec.unwrap();
    let sidecar = &pod.init_containers.as_ref().unwrap()[0];
    assert_eq!(sidecar.image.as_deref(), Some("mysql:8"));
    assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
    let env: Vec<(&str, Option<&str>)> = sidecar
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| (e.name.as_str(), e.value.as_deref()))
        .collect();
    assert_eq!(
        env,
        [
            ("MYSQL_ROOT_PASSWORD", Some("pass")),
            ("MYSQL_DATABASE", Some("dev"))
        ]
    );
    assert_eq!(sidecar.ports.as_ref().unwrap()[0].container_port, 3306);
    let runner = &pod.containers[0];
    let runner_env = runner.env.as_ref().unwrap();
    let task_text = runner_env
        .iter()
        .find(|e| e.name == contract::TASK_ENV)
        .and_then(|e| e.value.clone())
        .unwrap();
    let task = contract::Task::decode(&task_text).unwrap();
    assert_eq!(task.dev_url_env, plan.task.dev_url_env, "the user's devURL");
    assert!(task.dev_wait_seconds.is_some(), "the runner waits for it");
    assert!(
        !runner_env
            .iter()
            .any(|e| e.name == validate::ENV_DEV_URL && e.value.is_some()),
        "no generated dev URL"
    );

    // An image the operator does not know, with a devURL from a Secret: nothing says the driver.
    resource.spec.dev.dev_url = None;
    resource.spec.dev.dev_url_from = Some(
        serde_json::from_value(json!({"secretKeyRef": {"name": "dev", "key": "url"}})).unwrap(),
    );
    resource.spec.dev.dev_db = Some(
        serde_json::from_value(
            json!({"spec": {"containers": [{"name": "db", "image": "registry.example/dev-db:1"}]}}),
        )
        .unwrap(),
    );
    let refused = support::plan(&resource, &ConfigMaps::new()).unwrap_err();
    assert_eq!(refused.reason, contract::Reason::GettingDevDb);
}

/// The Atlas Cloud token reaches the runner from a Secret of the Job's namespace: the resource's
/// `cloud.tokenFrom` (required), else the install-wide one (optional: a namespace without it runs
/// without a token). Never a value in the Job.
#[test]
fn the_atlas_cloud_token_comes_from_a_secret_the_resources_first() {
    let mut resource: AtlasMigration = serde_json::from_value(doc(
        "examples/postgres-migration/atlasmigration-inline.yaml",
        "AtlasMigration",
    ))
    .unwrap();
    let owner = owner(Kind::Migration, "m");
    let install_wide = JobSettings {
        atlas_token: Some(build::SecretKey {
            name: "atlas-token-secret".into(),
            key: "ATLAS_TOKEN".into(),
        }),
        ..settings()
    };
    let token_of = |job: &k8s_openapi::api::batch::v1::Job| {
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let vars: Vec<_> = pod.containers[0]
            .env
            .iter()
            .flatten()
            .filter(|var| var.name == "ATLAS_TOKEN")
            .cloned()
            .collect();
        assert!(vars.len() <= 1, "{vars:?}");
        vars.into_iter().next().map(|var| {
            assert!(var.value.is_none(), "never a value: {var:?}");
            let selector = var.value_from.unwrap().secret_key_ref.unwrap();
            (selector.name, selector.key, selector.optional)
        })
    };

    let plan = support::plan(&resource, &ConfigMaps::new()).unwrap();
    assert_eq!(token_of(&build::render(&plan, &owner, &settings())), None);
    assert_eq!(
        token_of(&build::render(&plan, &owner, &install_wide)),
        Some((
            "atlas-token-secret".into(),
            "ATLAS_TOKEN".into(),
            Some(true)
        ))
    );

    resource.spec.cloud = Some(
        serde_json::from_value(json!({"project": "shop",
            "tokenFrom": {"secretKeyRef": {"name": "team-token", "key": "token"}}}))
        .unwrap(),
    );
    let plan = support::plan(&resource, &ConfigMaps::new()).unwrap();
    assert_eq!(
        token_of(&build::render(&plan, &owner, &install_wide)),
        Some(("team-token".into(), "token".into(), None))
    );
}

/// Job pod settings, install-wide (`jobs.*`) and per resource (`spec.jobPod`): the resource's
/// replace the install's tolerations, affinity, resources, service account and pull secrets,
/// are merged over its nodeSelector, labels and annotations key by key, and its env goes with
/// the install's; the operator's own labels always hold.
#[test]
fn job_pod_settings_are_the_installs_with_the_resources_over_them() {
    let mut resource: AtlasMigration = serde_json::from_value(doc(
        "examples/postgres-migration/atlasmigration-inline.yaml",
        "AtlasMigration",
    ))
    .unwrap();
    let owner = owner(Kind::Migration, "m");
    let install: JobSettings = JobSettings {
        tolerations: Some(
            serde_json::from_value(json!([{"key": "pool", "operator": "Equal", "value": "db",
                                            "effect": "NoSchedule"}]))
            .unwrap(),
        ),
        node_selector: BTreeMap::from([("pool".into(), "db".into()), ("zone".into(), "a".into())]),
        affinity: Some(
            serde_json::from_value(
                json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": {"matchExpressions": [
                    {"key": "disk", "operator": "In", "values": ["ssd"]}]}}]}}),
            )
            .unwrap(),
        ),
        priority_class_name: Some("migrations".into()),
        pod_labels: BTreeMap::from([("team".into(), "platform".into())]),
        env: serde_json::from_value(
            json!([{"name": "HTTPS_PROXY", "value": "http://proxy:3128"},
                                           {"name": "SHARED", "value": "install"}]),
        )
        .unwrap(),
        ..settings()
    };
    let pod_of = |job: &k8s_openapi::api::batch::v1::Job| {
        serde_json::to_value(&job.spec.as_ref().unwrap().template).unwrap()
    };

    let plan = support::plan(&resource, &ConfigMaps::new()).unwrap();
    let template = pod_of(&build::render(&plan, &owner, &install));
    let pod = &template["spec"];
    assert_eq!(pod["tolerations"][0]["key"], "pool");
    assert_eq!(pod["nodeSelector"], json!({"pool": "db", "zone": "a"}));
    assert_eq!(
        pod["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"],
        1
    );
    assert_eq!(pod["priorityClassName"], "migrations");
    assert_eq!(template["metadata"]["labels"]["team"], "platform");
    let env = &pod["containers"][0]["env"];
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "HTTPS_PROXY")
    );

    resource.spec.job_pod = Some(
        serde_json::from_value(json!({
            "tolerations": [{"key": "tenant", "operator": "Exists"}],
            "nodeSelector": {"zone": "b"},
            "priorityClassName": "tenant-low",
            "resources": {"limits": {"memory": "1Gi"}},
            "labels": {"azure.workload.identity/use": "true", "team": "payments",
                       "app.kubernetes.io/managed-by": "someone-else"},
            "annotations": {"sidecar.istio.io/inject": "true"},
            "serviceAccountName": "payments-migrator",
            "imagePullSecrets": [{"name": "tenant-registry"}],
            "env": [{"name": "SHARED", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                    {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]
        }))
        .unwrap(),
    );
    let plan = support::plan(&resource, &ConfigMaps::new()).unwrap();
    let job = build::render(&plan, &owner, &install);
    let template = pod_of(&job);
    let pod = &template["spec"];
    assert_eq!(
        pod["tolerations"],
        json!([{"key": "tenant", "operator": "Exists"}])
    );
    assert_eq!(pod["nodeSelector"], json!({"pool": "db", "zone": "b"}));
    assert_eq!(pod["priorityClassName"], "tenant-low");
    assert_eq!(pod["serviceAccountName"], "payments-migrator");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(
        pod["imagePullSecrets"],
        json!([{"name": "tenant-registry"}])
    );
    assert_eq!(
        pod["containers"][0]["resources"],
        json!({"limits": {"memory": "1Gi"}})
    );
    let labels = &template["metadata"]["labels"];
    assert_eq!(labels["azure.workload.identity/use"], "true");
    assert_eq!(labels["team"], "payments");
    // The operator's own labels hold, whatever the resource says: its selectors need them.
    let own = build::render(
        &support::plan(
            &serde_json::from_value::<AtlasMigration>(doc(
                "examples/postgres-migration/atlasmigration-inline.yaml",
                "AtlasMigration",
            ))
            .unwrap(),
            &ConfigMaps::new(),
        )
        .unwrap(),
        &owner,
        &settings(),
    );
    let own_labels = pod_of(&own)["metadata"]["labels"].clone();
    for (key, value) in own_labels.as_object().unwrap() {
        if key != "db.atlasgo.io/hash" {
            assert_eq!(&labels[key], value, "{key}");
        }
    }
    assert_eq!(
        template["metadata"]["annotations"]["sidecar.istio.io/inject"],
        "true"
    );
    assert_eq!(
        template["metadata"]["annotations"]["linkerd.io/inject"],
        "disabled"
    );
    let env = pod["containers"][0]["env"].as_array().unwrap();
    let shared: Vec<_> = env.iter().filter(|v| v["name"] == "SHARED").collect();
    assert_eq!(shared.len(), 1);
    assert_eq!(shared[0]["valueFrom"]["secretKeyRef"]["name"], "s");
    assert!(env.iter().any(|v| v["name"] == "FROM_CM"));
    assert!(env.iter().any(|v| v["name"] == "HTTPS_PROXY"));
}
