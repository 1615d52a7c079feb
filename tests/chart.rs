//! The Helm chart (`charts/atlas-operator`), checked with the real `helm` (`cargo xtask tools`
//! builds it): lint, rendered manifests of both RBAC modes (snapshots: review a change with
//! `cargo insta review`, or `INSTA_UPDATE=always cargo test --test chart` and read the diff), the
//! values schema, and that the chart says what the rest of the repository says: the CRDs of
//! `crds/`, the rules of `rbac/`, the flags of the binary, the Go operator's values.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use atlas_operator::reconcile::build::JobSettings;
use serde_json::{Value, json};
use support::{repo_path, yaml_documents};

const RELEASE: &str = "atlas-operator";
const NAMESPACE: &str = "atlas-operator-system";
const NAMESPACED: &str = "watchNamespaces: [tenant-a, tenant-b]\n";

fn chart() -> PathBuf {
    repo_path("charts/atlas-operator")
}

fn helm() -> Command {
    let path = devcluster::tools::path("helm")
        .unwrap_or_else(|err| panic!("{err} (`cargo xtask tools` builds helm)"));
    Command::new(path)
}

/// Runs helm with `values` (YAML) on its standard input, read as `-f -`.
fn helm_with_values(args: &[&str], values: &str) -> Output {
    let mut child = helm()
        .args(args)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("helm starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(values.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// `helm template` of the chart with `values`; Err holds helm's error output.
fn try_render(values: &str) -> Result<Vec<Value>, String> {
    let chart = chart();
    let output = helm_with_values(
        &[
            "template",
            RELEASE,
            chart.to_str().unwrap(),
            "--namespace",
            NAMESPACE,
        ],
        values,
    );
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let text = String::from_utf8(output.stdout).unwrap();
    Ok(serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|err| panic!("helm's output does not parse: {err}\n{text}"))
        .into_iter()
        .filter(|doc| !doc.is_null())
        .collect())
}

fn render(values: &str) -> Vec<Value> {
    try_render(values).unwrap_or_else(|err| panic!("helm template failed:\n{err}"))
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|doc| doc["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    match of_kind(docs, kind).as_slice() {
        [doc] => doc,
        found => panic!("expected one {kind}, found {}", found.len()),
    }
}

fn named<'a>(docs: &'a [Value], kind: &str, namespace: Option<&str>, name: &str) -> &'a Value {
    docs.iter()
        .find(|doc| {
            doc["kind"] == kind
                && doc["metadata"]["name"] == name
                && doc["metadata"]["namespace"].as_str() == namespace
        })
        .unwrap_or_else(|| panic!("no {kind} {namespace:?}/{name} in the rendered chart"))
}

fn operator_container(docs: &[Value]) -> &Value {
    &one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

/// The operator container's literal env values by name (`valueFrom` entries read as null).
fn env(docs: &[Value]) -> Vec<(String, Value)> {
    operator_container(docs)["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|var| {
            (
                var["name"].as_str().unwrap().to_string(),
                var.get("value").cloned().unwrap_or(Value::Null),
            )
        })
        .collect()
}

fn env_value(docs: &[Value], name: &str) -> Option<String> {
    env(docs)
        .into_iter()
        .find(|(key, _)| key == name)
        .and_then(|(_, value)| value.as_str().map(str::to_string))
}

fn rules_of_file(path: &str) -> Vec<Value> {
    yaml_documents(&repo_path(path))[0]["rules"]
        .as_array()
        .unwrap()
        .clone()
}

/// Everything but the CRDs, which `chart_crds_are_the_repositorys` compares whole.
fn without_crds(docs: Vec<Value>) -> Vec<Value> {
    docs.into_iter()
        .filter(|doc| doc["kind"] != "CustomResourceDefinition")
        .collect()
}

#[test]
fn chart_version_is_the_crates() {
    let chart = &yaml_documents(&chart().join("Chart.yaml"))[0];
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn helm_lint_passes_in_both_modes() {
    let chart = chart();
    // And with every optional part on and the Job pod settings set.
    let everything = "metrics: {serviceMonitor: {enabled: true}, grafanaDashboard: {enabled: true},\n\
                      \x20 prometheusRule: {enabled: true}}\n\
                      podDisruptionBudget: {enabled: true}\n\
                      networkPolicy: {enabled: true}\n\
                      atlasToken: {secretName: atlas-token}\n\
                      jobs: {tolerations: [{key: pool, operator: Exists}], nodeSelector: {pool: db},\n\
                      \x20 priorityClassName: migrations, podLabels: {team: db},\n\
                      \x20 env: [{name: HTTPS_PROXY, value: 'http://proxy:3128'}]}\n\
                      admissionPolicies: {jobShape: {serviceAccounts: [wi], imagePullSecrets: [reg]}}\n";
    for values in ["{}", NAMESPACED, everything] {
        let output = helm_with_values(&["lint", "--strict", chart.to_str().unwrap()], values);
        assert!(
            output.status.success(),
            "helm lint --strict with {values}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn cluster_wide_install_renders_as_reviewed() {
    insta::assert_yaml_snapshot!("cluster_wide", without_crds(render("{}")));
}

#[test]
fn namespaced_install_renders_as_reviewed() {
    insta::assert_yaml_snapshot!("namespaced", without_crds(render(NAMESPACED)));
}

#[test]
fn a_typo_in_values_is_refused() {
    for (values, key) in [
        ("replicaCont: 2", "replicaCont"),
        ("rbac: {craete: false}", "craete"),
        ("image: {tga: v1}", "tga"),
        ("serviceAccount: {annotation: {}}", "annotation"),
        ("runner: {imgae: {repository: x}}", "imgae"),
        ("jobs: {deadlineSeconds: 60}", "deadlineSeconds"),
        ("metrics: {serviceMonitor: {enable: true}}", "enable"),
        ("devDatabase: {images: {maria: mariadb:11}}", "maria"),
    ] {
        let err = try_render(values).expect_err(values);
        assert!(
            err.contains("additional properties") && err.contains(&format!("'{key}'")),
            "{values}: helm's error does not name `{key}`:\n{err}"
        );
    }
    // Wrong types and values are refused too, not passed on to the operator.
    for values in [
        "replicaCount: two",
        "logFormat: yaml",
        "watchNamespaces: [Tenant_A]",
        "allowCustomConfig: \"yes\"",
        "runner: {image: {pullPolicy: Sometimes}}",
    ] {
        assert!(try_render(values).is_err(), "{values} was accepted");
    }
}

#[test]
fn chart_crds_are_the_repositorys() {
    let files = |dir: &str| -> Vec<(String, String)> {
        let mut files: Vec<_> = std::fs::read_dir(repo_path(dir))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .map(|path| {
                (
                    path.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read_to_string(&path).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    };
    assert!(
        files("charts/atlas-operator/files/crds") == files("crds"),
        "the chart's CRDs differ from crds/: run `cargo xtask crds`"
    );

    // As rendered: the same objects, kept on `helm uninstall` unless crds.keep=false.
    let expected: Vec<Value> = files("crds")
        .iter()
        .flat_map(|(name, _)| yaml_documents(&repo_path("crds").join(name)))
        .collect();
    let strip_keep = |mut crd: Value| {
        let annotations = crd["metadata"]["annotations"].as_object_mut().unwrap();
        assert_eq!(
            annotations.remove("helm.sh/resource-policy"),
            Some(json!("keep"))
        );
        if annotations.is_empty() {
            crd["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("annotations");
        }
        crd
    };
    let rendered: Vec<Value> = of_kind(&render("{}"), "CustomResourceDefinition")
        .into_iter()
        .cloned()
        .map(strip_keep)
        .collect();
    assert_eq!(rendered, expected);
    let not_kept: Vec<Value> = of_kind(&render("crds: {keep: false}"), "CustomResourceDefinition")
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(not_kept, expected);
    assert!(of_kind(&render("crds: {create: false}"), "CustomResourceDefinition").is_empty());
}

#[test]
fn cluster_wide_rbac_is_rbac_operator_clusterrole_yaml() {
    let docs = render("{}");
    let role = one(&docs, "ClusterRole");
    assert_eq!(
        role["rules"].as_array().unwrap(),
        &rules_of_file("rbac/operator-clusterrole.yaml")
    );
    let binding = one(&docs, "ClusterRoleBinding");
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
               "name": role["metadata"]["name"]})
    );
    let account = one(&docs, "ServiceAccount");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}])
    );
    assert_eq!(
        one(&docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"],
        account["metadata"]["name"]
    );
    assert!(of_kind(&docs, "Role").is_empty() && of_kind(&docs, "RoleBinding").is_empty());
    assert_eq!(env_value(&docs, "WATCH_NAMESPACES"), None);
}

#[test]
fn namespaced_rbac_is_rbac_operator_role_yaml_in_each_namespace() {
    let docs = render(NAMESPACED);
    let file_rules = rules_of_file("rbac/operator-role.yaml");
    let is_lease = |rule: &Value| rule["resources"] == json!(["leases"]);
    let (lease_rules, resource_rules): (Vec<Value>, Vec<Value>) =
        file_rules.iter().cloned().partition(is_lease);
    assert_eq!(
        lease_rules.len(),
        1,
        "operator-role.yaml has one Lease rule"
    );

    for namespace in ["tenant-a", "tenant-b"] {
        let role = named(&docs, "Role", Some(namespace), RELEASE);
        assert_eq!(role["rules"].as_array().unwrap(), &resource_rules);
        let binding = named(&docs, "RoleBinding", Some(namespace), RELEASE);
        assert_eq!(
            binding["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": RELEASE})
        );
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}])
        );
    }
    // The Lease only where the operator runs, so a tenant namespace holds no Lease rights.
    let lease_name = format!("{RELEASE}-leader-election");
    let lease_role = named(&docs, "Role", Some(NAMESPACE), &lease_name);
    assert_eq!(lease_role["rules"].as_array().unwrap(), &lease_rules);
    assert_eq!(
        named(&docs, "RoleBinding", Some(NAMESPACE), &lease_name)["subjects"],
        json!([{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}])
    );
    assert_eq!(of_kind(&docs, "Role").len(), 3);
    assert_eq!(of_kind(&docs, "RoleBinding").len(), 3);
    assert!(
        of_kind(&docs, "ClusterRole").is_empty() && of_kind(&docs, "ClusterRoleBinding").is_empty(),
        "a namespace-scoped install grants nothing cluster-wide"
    );
    assert_eq!(
        env_value(&docs, "WATCH_NAMESPACES").as_deref(),
        Some("tenant-a,tenant-b")
    );

    // Without leader election there is no Lease to hold.
    let docs = render(&format!("{NAMESPACED}leaderElection: {{enabled: false}}\n"));
    assert_eq!(of_kind(&docs, "Role").len(), 2);
    assert_eq!(
        env_value(&docs, "LEADER_ELECTION").as_deref(),
        Some("false")
    );
}

#[test]
fn rbac_create_false_renders_no_rbac() {
    for values in [
        "rbac: {create: false}",
        "rbac: {create: false}\nwatchNamespaces: [a]",
    ] {
        let docs = render(values);
        for kind in ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"] {
            assert!(of_kind(&docs, kind).is_empty(), "{values}: a {kind}");
        }
    }
}

#[test]
fn aggregated_cluster_roles_extend_admin_edit_and_view() {
    let docs = render("rbac: {aggregateClusterRoles: true}");
    let edit = named(&docs, "ClusterRole", None, &format!("{RELEASE}-edit"));
    let labels = &edit["metadata"]["labels"];
    assert_eq!(
        labels["rbac.authorization.k8s.io/aggregate-to-admin"],
        "true"
    );
    assert_eq!(
        labels["rbac.authorization.k8s.io/aggregate-to-edit"],
        "true"
    );
    let view = named(&docs, "ClusterRole", None, &format!("{RELEASE}-view"));
    assert_eq!(
        view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );
    assert_eq!(
        view["rules"],
        json!([{"apiGroups": ["db.atlasgo.io"],
                "resources": ["atlasmigrations", "atlasschemas",
                              "atlasmigrations/status", "atlasschemas/status"],
                "verbs": ["get", "list", "watch"]}])
    );
    // Nobody but the operator writes the status.
    for rule in edit["rules"].as_array().unwrap() {
        let resources = rule["resources"].as_array().unwrap();
        if resources
            .iter()
            .any(|r| r.as_str().unwrap().ends_with("/status"))
        {
            assert_eq!(rule["verbs"], json!(["get"]));
        }
    }
}

#[test]
fn no_rule_reads_or_changes_secrets_in_any_mode() {
    let everything_on = "rbac: {aggregateClusterRoles: true}\n\
                         metrics: {serviceMonitor: {enabled: true}}\n\
                         podDisruptionBudget: {enabled: true}\n\
                         networkPolicy: {enabled: true}\n";
    let upstream =
        std::fs::read_to_string(repo_path("tests/fixtures/upstream-chart/values.yaml")).unwrap();
    for values in [
        "{}",
        NAMESPACED,
        everything_on,
        &format!("{everything_on}{NAMESPACED}"),
        &upstream,
    ] {
        let docs = render(values);
        let roles: Vec<&Value> = docs
            .iter()
            .filter(|doc| doc["kind"] == "Role" || doc["kind"] == "ClusterRole")
            .collect();
        assert!(!roles.is_empty());
        for role in roles {
            for rule in role["rules"].as_array().unwrap() {
                let names = |key: &str| -> Vec<&str> {
                    rule[key]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_str().unwrap())
                        .collect()
                };
                // Secrets: create only (the credentials Secret of a Job), never read or change.
                assert!(
                    !names("resources").contains(&"secrets")
                        || (names("resources") == ["secrets"] && names("verbs") == ["create"]),
                    "{} grants more than creating secrets: {rule}",
                    role["metadata"]["name"]
                );
                for key in ["apiGroups", "resources", "verbs"] {
                    assert!(
                        !names(key).contains(&"*"),
                        "{} has a wildcard (which covers secrets): {rule}",
                        role["metadata"]["name"]
                    );
                }
            }
        }
    }
}

/// The Pod Security Standards' `restricted` profile, as far as a pod spec shows it, plus a
/// read-only root filesystem.
fn assert_restricted(pod: &Value, containers: &[&Value]) {
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let uid = pod["securityContext"]["runAsUser"].as_i64();
    assert!(
        uid.is_some_and(|uid| uid > 0),
        "numeric non-root UID: {uid:?}"
    );
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    for key in ["hostNetwork", "hostPID", "hostIPC"] {
        assert_ne!(pod[key], true, "{key}");
    }
    for volume in pod["volumes"].as_array().into_iter().flatten() {
        assert!(volume.get("hostPath").is_none(), "a hostPath volume");
    }
    for container in containers {
        let context = &container["securityContext"];
        assert_eq!(context["allowPrivilegeEscalation"], false);
        assert_eq!(context["readOnlyRootFilesystem"], true);
        assert_eq!(context["capabilities"]["drop"], json!(["ALL"]));
        assert!(context["capabilities"].get("add").is_none());
        assert_ne!(context["privileged"], true);
        assert_ne!(context["runAsUser"], 0);
    }
}

#[test]
fn the_operator_pod_is_restricted() {
    for values in ["{}", NAMESPACED] {
        let docs = render(values);
        let pod = &one(&docs, "Deployment")["spec"]["template"]["spec"];
        assert_restricted(pod, &[operator_container(&docs)]);
    }
    // The Go operator's values set parts of the security contexts; ours fill in the rest.
    let upstream =
        std::fs::read_to_string(repo_path("tests/fixtures/upstream-chart/values.yaml")).unwrap();
    let docs = render(&upstream);
    let pod = &one(&docs, "Deployment")["spec"]["template"]["spec"];
    assert_restricted(pod, &[operator_container(&docs)]);
}

/// The Go chart's `revisionHistoryLimit` (upstream values files set it) reaches the Deployment.
#[test]
fn the_go_charts_revision_history_limit_is_honoured() {
    let deployment = |values: &str| one(&render(values), "Deployment").clone();
    assert_eq!(deployment("{}")["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(
        deployment("revisionHistoryLimit: 3")["spec"]["revisionHistoryLimit"],
        3
    );
    let upstream =
        std::fs::read_to_string(repo_path("tests/fixtures/upstream-chart/values.yaml")).unwrap();
    let docs = render(&format!("{upstream}\nrevisionHistoryLimit: 2\n"));
    assert_eq!(one(&docs, "Deployment")["spec"]["revisionHistoryLimit"], 2);
}

#[test]
fn probes_and_metrics_use_the_operators_address() {
    let docs = render("metrics: {port: 9090, service: {port: 9100}}");
    let container = operator_container(&docs);
    assert_eq!(
        env_value(&docs, "METRICS_ADDRESS").as_deref(),
        Some("0.0.0.0:9090")
    );
    assert_eq!(
        container["ports"],
        json!([{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}])
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "metrics", "{probe}");
    }
    let service = one(&docs, "Service");
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "metrics", "port": 9100, "targetPort": "metrics", "protocol": "TCP"}])
    );
    assert_eq!(
        service["spec"]["selector"],
        one(&docs, "Deployment")["spec"]["selector"]["matchLabels"]
    );
}

/// `atlas-operator run --help`, which lists each flag's environment variable.
fn run_help() -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_atlas-operator"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

/// The help of the flag whose environment variable is `env`: from its `[env: …]` line to the
/// next flag.
fn flag_help<'a>(help: &'a str, env: &str) -> &'a str {
    let start = help
        .find(&format!("[env: {env}="))
        .unwrap_or_else(|| panic!("no flag reads {env}"));
    let rest = &help[start..];
    let end = rest.find("\n  -").unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn every_env_var_the_chart_sets_is_read_by_the_operator() {
    let help = run_help();
    let everything = "watchNamespaces: [a]\nlabelSelector: [app=foo]\nallowCustomConfig: true\n\
                      runner: {image: {pullPolicy: Always}, imagePullSecrets: [{name: reg}]}\n\
                      jobs: {serviceAccountName: migrator, ttlSecondsAfterFinished: 600,\n\
                      \x20      tolerations: [{key: a, operator: Exists}], nodeSelector: {a: b},\n\
                      \x20      affinity: {nodeAffinity: {}}, priorityClassName: p, podLabels: {a: b},\n\
                      \x20      env: [{name: A, value: b}]}\n\
                      atlasToken: {secretName: token}\n";
    let docs = render(everything);
    let names: Vec<String> = env(&docs).into_iter().map(|(name, _)| name).collect();
    for name in &names {
        if name == "POD_NAME" {
            // Read directly by main.rs, not a flag: the leader election identity.
            let main = std::fs::read_to_string(repo_path("src/main.rs")).unwrap();
            assert!(main.contains("\"POD_NAME\""));
            continue;
        }
        assert!(
            help.contains(&format!("[env: {name}=")),
            "the chart sets {name}, which `atlas-operator run` does not read"
        );
    }
    assert_eq!(operator_container(&docs)["args"], json!(["run"]));
    assert!(operator_container(&docs).get("command").is_none());
}

#[test]
fn values_map_onto_the_operators_settings() {
    let values = "watchNamespaces: [a, b]\n\
                  labelSelector: [\"app=foo\", \"env in (prod,staging)\"]\n\
                  allowCustomConfig: true\n\
                  logFormat: json\n\
                  concurrency: 8\n\
                  leaderElection: {leaseName: my-lease}\n\
                  runner: {image: {repository: reg.example/runner, tag: v9, pullPolicy: Always},\n\
                  \x20        imagePullSecrets: [{name: reg-a}, {name: reg-b}]}\n\
                  jobs: {activeDeadlineSeconds: 600, ttlSecondsAfterFinished: 3600,\n\
                  \x20      serviceAccountName: migrator, resources: {limits: {memory: 1Gi}},\n\
                  \x20      tolerations: [{key: pool, operator: Exists}], nodeSelector: {pool: db},\n\
                  \x20      affinity: {nodeAffinity: {}}, priorityClassName: migrations,\n\
                  \x20      podLabels: {team: platform}, env: [{name: HTTPS_PROXY, value: 'http://p:3128'}]}\n\
                  devDatabase: {images: {postgres: 'postgres:15', mysql: 'mysql:8.0',\n\
                  \x20             mariadb: 'mariadb:10.11'}}\n";
    let docs = render(values);
    let expected = [
        ("WATCH_NAMESPACES", "a,b"),
        ("WATCH_LABEL_SELECTOR", "app=foo,env in (prod,staging)"),
        ("ALLOW_CUSTOM_CONFIG", "true"),
        ("LOG_FORMAT", "json"),
        ("CONCURRENCY", "8"),
        ("LEADER_ELECTION", "true"),
        ("LEASE_NAME", "my-lease"),
        ("RUNNER_IMAGE", "reg.example/runner:v9"),
        ("RUNNER_IMAGE_PULL_POLICY", "Always"),
        ("RUNNER_IMAGE_PULL_SECRETS", "reg-a,reg-b"),
        ("JOB_DEADLINE_SECONDS", "600"),
        ("JOB_TTL_SECONDS", "3600"),
        ("JOB_SERVICE_ACCOUNT", "migrator"),
        // Helm merges the given keys into the defaults: the requests stay.
        (
            "JOB_RESOURCES",
            r#"{"limits":{"memory":"1Gi"},"requests":{"cpu":"50m","memory":"64Mi"}}"#,
        ),
        ("JOB_TOLERATIONS", r#"[{"key":"pool","operator":"Exists"}]"#),
        ("JOB_NODE_SELECTOR", r#"{"pool":"db"}"#),
        ("JOB_AFFINITY", r#"{"nodeAffinity":{}}"#),
        ("JOB_PRIORITY_CLASS_NAME", "migrations"),
        ("JOB_POD_LABELS", r#"{"team":"platform"}"#),
        (
            "JOB_ENV",
            r#"[{"name":"HTTPS_PROXY","value":"http://p:3128"}]"#,
        ),
        ("DEV_IMAGE_POSTGRES", "postgres:15"),
        ("DEV_IMAGE_MYSQL", "mysql:8.0"),
        ("DEV_IMAGE_MARIA", "mariadb:10.11"),
    ];
    for (name, value) in expected {
        assert_eq!(env_value(&docs, name).as_deref(), Some(value), "{name}");
    }
    // A selector given as one string is passed as it is.
    let docs = render("labelSelector: \"tier in (db), !legacy\"");
    assert_eq!(
        env_value(&docs, "WATCH_LABEL_SELECTOR").as_deref(),
        Some("tier in (db), !legacy")
    );
}

#[test]
fn the_charts_defaults_are_the_operators() {
    let docs = render("{}");
    let defaults = JobSettings::default();
    assert_eq!(
        env_value(&docs, "RUNNER_IMAGE"),
        Some(defaults.runner_image.clone())
    );
    assert_eq!(
        env_value(&docs, "JOB_DEADLINE_SECONDS"),
        defaults.active_deadline_seconds.map(|s| s.to_string())
    );
    assert_eq!(env_value(&docs, "JOB_TTL_SECONDS"), None);
    let resources: k8s_openapi::api::core::v1::ResourceRequirements =
        serde_json::from_str(&env_value(&docs, "JOB_RESOURCES").expect("JOB_RESOURCES")).unwrap();
    assert_eq!(Some(resources), defaults.resources);
    for (name, driver) in [
        ("DEV_IMAGE_POSTGRES", "postgres"),
        ("DEV_IMAGE_MYSQL", "mysql"),
        ("DEV_IMAGE_MARIA", "maria"),
    ] {
        assert_eq!(
            env_value(&docs, name).as_ref(),
            defaults.dev_images.get(driver),
            "{name}"
        );
    }
    let help = run_help();
    for (name, value) in [
        ("LOG_FORMAT", "text"),
        ("CONCURRENCY", "4"),
        ("METRICS_ADDRESS", "0.0.0.0:8080"),
    ] {
        assert_eq!(env_value(&docs, name).as_deref(), Some(value), "{name}");
        assert!(
            flag_help(&help, name).contains(&format!("[default: {value}]")),
            "`atlas-operator run` has another default for {name}"
        );
    }
    // Custom configurations stay off unless asked for.
    assert_eq!(env_value(&docs, "ALLOW_CUSTOM_CONFIG"), None);
    assert_eq!(env_value(&docs, "WATCH_LABEL_SELECTOR"), None);
}

#[test]
fn the_go_operators_values_render() {
    let values =
        std::fs::read_to_string(repo_path("tests/fixtures/upstream-chart/values.yaml")).unwrap();
    let docs = render(&values);
    let name = "platform-atlas-operator";
    let deployment = named(&docs, "Deployment", Some(NAMESPACE), name);
    let pod = &deployment["spec"]["template"];
    let container = operator_container(&docs);

    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(
        container["image"],
        "registry.example.com/mirror/atlas-operator:0.1.0-mirror"
    );
    assert_eq!(container["imagePullPolicy"], "Always");
    assert_eq!(
        pod["spec"]["imagePullSecrets"],
        json!([{"name": "mirror-credentials"}])
    );
    assert_eq!(pod["metadata"]["labels"]["app.kubernetes.io/name"], "atlas");
    assert_eq!(pod["metadata"]["labels"]["team"], "platform");
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
    assert_eq!(pod["spec"]["serviceAccountName"], "atlas-operator-sa");
    let account = named(
        &docs,
        "ServiceAccount",
        Some(NAMESPACE),
        "atlas-operator-sa",
    );
    assert_eq!(account["metadata"]["labels"]["team"], "platform");
    assert_eq!(
        account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::123456789012:role/atlas-operator"
    );
    assert_eq!(container["resources"]["limits"]["cpu"], "500m");
    assert_eq!(pod["spec"]["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(pod["spec"]["priorityClassName"], "platform-critical");
    assert_eq!(pod["spec"]["tolerations"][0]["key"], "dedicated");
    assert!(pod["spec"]["affinity"]["nodeAffinity"].is_object());
    assert_eq!(pod["spec"]["initContainers"][0]["name"], "my-init");
    assert_eq!(pod["spec"]["volumes"][0]["name"], "extra-volume");
    assert_eq!(container["volumeMounts"][0]["mountPath"], "/extra-volume");

    assert_eq!(
        env_value(&docs, "ALLOW_CUSTOM_CONFIG").as_deref(),
        Some("true")
    );
    assert_eq!(
        env_value(&docs, "WATCH_LABEL_SELECTOR").as_deref(),
        Some("app=foo,env in (prod,staging)")
    );
    assert_eq!(
        env_value(&docs, "WATCH_NAMESPACES").as_deref(),
        Some("team-a,team-b")
    );
    assert_eq!(env_value(&docs, "RUST_LOG").as_deref(), Some("debug"));
    let names: BTreeSet<String> = env(&docs).into_iter().map(|(name, _)| name).collect();
    assert!(names.contains("FROM_SECRET"));
    // prewarmDevDB, persistence and watchSecrets are accepted and do nothing here.
    assert!(!names.contains("PREWARM_DEVDB"));
    assert!(of_kind(&docs, "PersistentVolumeClaim").is_empty());
    assert!(of_kind(&docs, "CustomResourceDefinition").is_empty());
    for namespace in ["team-a", "team-b"] {
        named(&docs, "Role", Some(namespace), name);
    }
    named(&docs, "ClusterRole", None, &format!("{name}-edit"));
}

/// The chart's ValidatingAdmissionPolicies and their bindings, in `docs`.
fn admission_policies(docs: &[Value]) -> Vec<Value> {
    docs.iter()
        .filter(|doc| {
            doc["kind"] == "ValidatingAdmissionPolicy"
                || doc["kind"] == "ValidatingAdmissionPolicyBinding"
        })
        .cloned()
        .collect()
}

/// The value of a policy's variable `name`: the CEL the chart rendered.
fn policy_variable<'a>(policy: &'a Value, name: &str) -> &'a str {
    policy["spec"]["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|var| var["name"] == name)
        .and_then(|var| var["expression"].as_str())
        .unwrap_or_else(|| panic!("no variable {name} in {policy:#}"))
}

#[test]
fn admission_policies_are_on_by_default_and_named_after_the_release() {
    let docs = render("{}");
    let names: BTreeSet<(String, String)> = admission_policies(&docs)
        .iter()
        .map(|doc| {
            (
                doc["kind"].as_str().unwrap().to_string(),
                doc["metadata"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = [
        "atlas-operator-inline-credentials",
        "atlas-operator-job-shape",
    ]
    .into_iter()
    .flat_map(|name| {
        [
            ("ValidatingAdmissionPolicy".to_string(), name.to_string()),
            (
                "ValidatingAdmissionPolicyBinding".to_string(),
                name.to_string(),
            ),
        ]
    })
    .collect();
    assert_eq!(names, expected);
    let binding = |name: &str| named(&docs, "ValidatingAdmissionPolicyBinding", None, name);
    let warn = binding("atlas-operator-inline-credentials");
    assert_eq!(warn["spec"]["validationActions"], json!(["Warn"]));
    assert_eq!(
        warn["spec"]["policyName"],
        "atlas-operator-inline-credentials"
    );
    let deny = binding("atlas-operator-job-shape");
    assert_eq!(deny["spec"]["validationActions"], json!(["Deny"]));
    assert_eq!(deny["spec"]["policyName"], "atlas-operator-job-shape");
    // A warning never blocks; the Job shape fails closed, for the operator only.
    let policy = |name: &str| named(&docs, "ValidatingAdmissionPolicy", None, name);
    assert_eq!(
        policy("atlas-operator-inline-credentials")["spec"]["failurePolicy"],
        "Ignore"
    );
    let shape = policy("atlas-operator-job-shape");
    assert_eq!(shape["spec"]["failurePolicy"], "Fail");
    assert_eq!(
        shape["spec"]["matchConditions"],
        json!([{"name": "the-operators-service-account",
                "expression": "request.userInfo.username == \
                               \"system:serviceaccount:atlas-operator-system:atlas-operator\""}])
    );
    // Its parameters are what the operator is told to render.
    assert_eq!(
        policy_variable(shape, "runnerImage"),
        serde_json::to_string(&env_value(&docs, "RUNNER_IMAGE").unwrap()).unwrap()
    );
    assert_eq!(
        policy_variable(shape, "devImages"),
        r#"["mariadb","mysql","postgres"]"#
    );
    assert_eq!(policy_variable(shape, "serviceAccount"), r#""default""#);
    assert_eq!(policy_variable(shape, "pullSecrets"), "[]");
}

#[test]
fn admission_policies_follow_the_values() {
    let values = "watchNamespaces: [tenant-a, tenant-b]\n\
                  serviceAccount: {name: atlas-sa}\n\
                  runner: {image: {repository: reg.example:5000/runner, tag: v9},\n\
                  \x20        imagePullSecrets: [{name: reg-a}, {name: reg-b}]}\n\
                  jobs: {serviceAccountName: migrator}\n\
                  devDatabase: {images: {postgres: 'reg.example:5000/postgres:15@sha256:abc',\n\
                  \x20             mysql: 'mysql:8.0', mariadb: 'mariadb'}}\n\
                  admissionPolicies: {jobShape: {extraDevDatabaseImages: [postgis/postgis]}}\n";
    let docs = render(values);
    insta::assert_yaml_snapshot!("admission_policies", admission_policies(&docs));
    let shape = named(
        &docs,
        "ValidatingAdmissionPolicy",
        None,
        "atlas-operator-job-shape",
    );
    assert_eq!(
        policy_variable(shape, "runnerImage"),
        r#""reg.example:5000/runner:v9""#
    );
    assert_eq!(
        policy_variable(shape, "devImages"),
        r#"["mariadb","mysql","postgis/postgis","reg.example:5000/postgres"]"#
    );
    assert_eq!(policy_variable(shape, "serviceAccount"), r#""migrator""#);
    assert_eq!(
        policy_variable(shape, "pullSecrets"),
        r#"["reg-a","reg-b"]"#
    );
    assert!(
        shape["spec"]["matchConditions"][0]["expression"]
            .as_str()
            .unwrap()
            .ends_with("\"system:serviceaccount:atlas-operator-system:atlas-sa\"")
    );
    // A namespaced release warns in its own namespaces only.
    let warn = named(
        &docs,
        "ValidatingAdmissionPolicyBinding",
        None,
        "atlas-operator-inline-credentials",
    );
    assert_eq!(
        warn["spec"]["matchResources"]["namespaceSelector"],
        json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In",
                                      "values": ["tenant-a", "tenant-b"]}]})
    );
}

#[test]
fn admission_policies_can_be_switched_off() {
    let off = |policy: &str| {
        render(&format!(
            "admissionPolicies: {{{policy}: {{enabled: false}}}}"
        ))
    };
    let names = |docs: &[Value]| -> BTreeSet<String> {
        admission_policies(docs)
            .iter()
            .map(|doc| doc["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(&off("inlineCredentialWarning")),
        BTreeSet::from(["atlas-operator-job-shape".to_string()])
    );
    assert_eq!(
        names(&off("jobShape")),
        BTreeSet::from(["atlas-operator-inline-credentials".to_string()])
    );
    let none = render(
        "admissionPolicies: {inlineCredentialWarning: {enabled: false}, \
         jobShape: {enabled: false}}",
    );
    assert!(admission_policies(&none).is_empty());
    // Only the policies go: everything else renders as before.
    let all = render("{}");
    assert_eq!(none.len(), all.len() - 4);
    let err = try_render("admissionPolicies: {jobShape: {enable: false}}").unwrap_err();
    assert!(err.contains("'enable'"), "{err}");
}

/// The Atlas Cloud token is the Jobs', never the operator's: `atlasToken` names the Secret the
/// Jobs read, and upstream's `extraEnvs` entry `ATLAS_TOKEN` (a secretKeyRef) is read as that
/// setting and kept out of the operator's container. A literal token is refused with what to do.
#[test]
fn the_atlas_cloud_token_goes_to_the_jobs_never_the_operator() {
    let docs = render("{}");
    assert_eq!(env_value(&docs, "ATLAS_TOKEN_SECRET"), None);

    let docs = render("atlasToken: {secretName: atlas-token, key: token}");
    assert_eq!(
        env_value(&docs, "ATLAS_TOKEN_SECRET").as_deref(),
        Some("atlas-token")
    );
    assert_eq!(
        env_value(&docs, "ATLAS_TOKEN_SECRET_KEY").as_deref(),
        Some("token")
    );

    let upstream = "extraEnvs:\n\
                    - {name: RUST_LOG, value: debug}\n\
                    - name: ATLAS_TOKEN\n\
                    \x20 valueFrom: {secretKeyRef: {name: atlas-token-secret, key: ATLAS_TOKEN}}\n";
    let docs = render(upstream);
    let names: Vec<String> = env(&docs).into_iter().map(|(name, _)| name).collect();
    assert!(!names.iter().any(|n| n == "ATLAS_TOKEN"), "{names:?}");
    assert!(names.iter().any(|n| n == "RUST_LOG"), "{names:?}");
    assert_eq!(
        env_value(&docs, "ATLAS_TOKEN_SECRET").as_deref(),
        Some("atlas-token-secret")
    );
    assert_eq!(
        env_value(&docs, "ATLAS_TOKEN_SECRET_KEY").as_deref(),
        Some("ATLAS_TOKEN")
    );

    let err = try_render("extraEnvs: [{name: ATLAS_TOKEN, value: aci_literal}]").unwrap_err();
    assert!(err.contains("ATLAS_TOKEN must come from a Secret"), "{err}");
    assert!(!err.contains("aci_literal"), "{err}");
}

/// The Grafana dashboard and the PrometheusRule (both off by default) render, the dashboard is
/// valid JSON, and every series they query is one the operator exports, by its exact name.
#[test]
fn the_dashboard_and_alerts_query_only_what_the_operator_exports() {
    let defaults = render("{}");
    assert!(of_kind(&defaults, "PrometheusRule").is_empty());
    assert!(!defaults.iter().any(|d| {
        d["kind"] == "ConfigMap"
            && d["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("-dashboard"))
    }));
    let docs = render(
        "metrics: {grafanaDashboard: {enabled: true}, prometheusRule: {enabled: true,\n\
         \x20 additionalLabels: {team: db}}}\n",
    );
    let dashboard = of_kind(&docs, "ConfigMap")
        .into_iter()
        .find(|d| {
            d["metadata"]["name"]
                .as_str()
                .unwrap()
                .ends_with("-dashboard")
        })
        .expect("the dashboard's ConfigMap");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json: Value =
        serde_json::from_str(dashboard["data"]["atlas-operator.json"].as_str().unwrap())
            .expect("the dashboard is JSON");
    let mut queries: Vec<String> = json["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().clone())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(queries.len() >= 8, "{queries:?}");
    let rule = one(&docs, "PrometheusRule");
    for alert in rule["spec"]["groups"][0]["rules"].as_array().unwrap() {
        assert_eq!(alert["labels"]["team"], "db", "{alert}");
        queries.push(alert["expr"].as_str().unwrap().to_string());
    }

    // What the operator exports: the `# TYPE` lines of its registry once each family has a
    // series (as after one reconcile, one Job and one failure).
    use atlas_operator::metrics::{Counted, KindLabels, Metrics, ReasonLabels};
    let metrics = std::sync::Arc::new(Metrics::default());
    drop(metrics.measure("AtlasMigration"));
    metrics.count_reconcile("AtlasMigration", false);
    metrics.add_workers("AtlasMigration", 4);
    metrics.count_ready("AtlasMigration", || {
        vec![Counted {
            ready: "False".into(),
            reconciling: true,
        }]
    });
    let kind = || KindLabels {
        kind: "AtlasMigration".into(),
    };
    metrics.jobs_created.get_or_create(&kind()).inc();
    metrics
        .failures
        .get_or_create(&ReasonLabels {
            kind: "AtlasMigration".into(),
            reason: "Migrating".into(),
        })
        .inc();
    let exported: Vec<String> = metrics
        .encode()
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|line| line.split_whitespace().next().unwrap().to_string())
        .collect();
    for query in &queries {
        let names = query
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("atlas_operator_") || w.starts_with("controller_runtime_"));
        for name in names {
            let family = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            assert!(
                exported.iter().any(|e| e == family || e == name),
                "{name} (in `{query}`) is not exported; the operator exports {exported:?}"
            );
        }
    }
}
