//! The operator installed as users install it: a Deployment whose pod the process-kubelet runs
//! (the operator's image maps to the binary this test run built), configured in-cluster from the
//! projected service-account token, acting with exactly the rules of
//! `rbac/operator-clusterrole.yaml`, Ready by its `/readyz` probe. Then the seed AtlasMigration
//! goes through it to Ready against a real PostgreSQL.

use std::time::{Duration, Instant};

mod support;

use devcluster::cluster::{Cluster, TestNamespace};
use devcluster::db::{Engine, TestDatabase};
use devcluster::operator;
use devcluster::seed;
use serde_json::{Value, json};
use support::e2e::{SEED_MIGRATION, apply_json, cluster, condition, eventually};

/// The operator's image as a chart names it; the kubelet runs the built `atlas-operator` for
/// any image whose repository ends with `atlas-operator`.
const OPERATOR_IMAGE: &str = "ghcr.io/atlas-operator/atlas-operator:dev";
const DEPLOYMENT: &str = "atlas-operator";
const SERVICE_ACCOUNT: &str = "atlas-operator";
fn kubectl(ns: &TestNamespace, args: &[&str]) -> String {
    let mut all = vec!["-n", ns.name.as_str()];
    all.extend_from_slice(args);
    ns.cluster()
        .kubectl_output(&all)
        .unwrap_or_else(|err| panic!("kubectl {}: {err}", args.join(" ")))
}

fn get_json(ns: &TestNamespace, what: &str) -> Value {
    serde_json::from_str(&kubectl(ns, &["get", what, "-o", "json"])).unwrap()
}

/// The ClusterRoleBinding of this test's service account to the shipped ClusterRole; removed
/// when dropped (it outlives the namespace otherwise).
struct Binding {
    cluster: Cluster,
    name: String,
}

impl Binding {
    fn create(ns: &TestNamespace) -> Binding {
        let name = format!("atlas-operator-{}", ns.name);
        let binding = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "atlas-operator"},
            "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT,
                          "namespace": ns.name}],
        });
        apply_json(&ns.name, &binding);
        Binding {
            cluster: ns.cluster().clone(),
            name,
        }
    }
}

impl Drop for Binding {
    fn drop(&mut self) {
        let _ = self.cluster.kubectl_output(&[
            "delete",
            "clusterrolebinding",
            &self.name,
            "--ignore-not-found",
        ]);
    }
}

/// The operator as a chart deploys it: its image, its service account, the pod's name and
/// namespace from the downward API, its endpoints on `port` with the probes on them.
fn deployment(ns: &TestNamespace, port: u16) -> Value {
    let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT, "labels": {"app.kubernetes.io/name": "atlas-operator"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "atlas-operator"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "atlas-operator"}},
                "spec": {
                    "serviceAccountName": SERVICE_ACCOUNT,
                    "terminationGracePeriodSeconds": 10,
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 65532},
                    "containers": [{
                        "name": "manager",
                        "image": OPERATOR_IMAGE,
                        "args": [
                            "run",
                            "--namespace", ns.name,
                            "--metrics-address", format!("0.0.0.0:{port}"),
                            "--runner-image", operator::RUNNER_IMAGE,
                        ],
                        "env": [
                            {"name": "POD_NAME", "valueFrom": field("metadata.name")},
                            {"name": "POD_NAMESPACE", "valueFrom": field("metadata.namespace")},
                            {"name": "POD_IP", "valueFrom": field("status.podIP")},
                            {"name": "RUST_LOG", "value": "info,atlas_operator=debug"},
                        ],
                        "ports": [{"name": "metrics", "containerPort": port}],
                        "startupProbe": {"httpGet": {"path": "/healthz", "port": "metrics"},
                                         "periodSeconds": 1, "failureThreshold": 60},
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"},
                                          "periodSeconds": 10},
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "metrics"},
                                           "periodSeconds": 1},
                        "securityContext": {"allowPrivilegeEscalation": false,
                                            "readOnlyRootFilesystem": true,
                                            "capabilities": {"drop": ["ALL"]}},
                    }],
                },
            },
        },
    })
}

/// The operator's pods (the namespace also holds the migration Jobs' pods).
fn operator_pods(ns: &TestNamespace) -> Vec<Value> {
    let out = kubectl(
        ns,
        &[
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=atlas-operator",
            "-o",
            "json",
        ],
    );
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"].as_array().cloned().unwrap_or_default()
}

/// Host processes whose environment says they belong to `pod` (the kubelet sets `HOSTNAME`).
fn processes_of(pod: &str) -> Vec<String> {
    let wanted = format!("HOSTNAME={pod}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|v| v == wanted.as_bytes()) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push(String::from_utf8_lossy(&cmdline).replace('\0', " "));
        }
    }
    found
}

#[test]
fn the_operator_deployment_runs_in_cluster_and_applies_the_seed_migration() {
    let cluster = cluster();
    // The CRDs and the shipped ClusterRole.
    operator::install(&cluster).unwrap_or_else(|err| panic!("installing the CRDs: {err}"));
    let ns = cluster.namespace("operator-pod").unwrap();
    let db = TestDatabase::create(Engine::Postgres, "opod_seed").unwrap();
    kubectl(&ns, &["create", "serviceaccount", SERVICE_ACCOUNT]);
    let _binding = Binding::create(&ns);
    // Its own port: pods share the node's network, and another test's operator may run.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let applied = Instant::now();
    apply_json(&ns.name, &deployment(&ns, port));
    let logs = || {
        ns.cluster()
            .kubectl_output(&["-n", &ns.name, "logs", &format!("deployment/{DEPLOYMENT}")])
            .unwrap_or_else(|err| format!("(no log: {err})"))
    };
    let describe = || {
        format!(
            "pods: {}\noperator log:\n{}",
            kubectl(&ns, &["get", "pods", "-o", "json"]),
            logs()
        )
    };
    eventually(
        "the Deployment to be Available",
        Duration::from_secs(120),
        || {
            let deployment = get_json(&ns, &format!("deployment/{DEPLOYMENT}"));
            condition(&deployment, "Available")
                .is_some_and(|c| c["status"] == "True")
                .then_some(())
        },
        describe,
    );
    eprintln!(
        "timing: the operator's Deployment Available {:.1}s after apply",
        applied.elapsed().as_secs_f64()
    );
    let pods = operator_pods(&ns);
    let pod = &pods[0];
    let pod_name = pod["metadata"]["name"].as_str().unwrap().to_string();
    let status = &pod["status"]["containerStatuses"][0];
    assert_eq!(status["ready"], true, "{pod:#}");
    assert_eq!(status["started"], true, "{pod:#}");
    assert_eq!(
        status["imageID"], "devcluster:///usr/local/bin/atlas-operator",
        "{pod:#}"
    );
    assert_eq!(condition(pod, "Ready").unwrap()["status"], "True");
    // The service-account admission plugin's projected volume, mounted where in-cluster
    // config reads it.
    let volume = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"].as_str().unwrap().starts_with("kube-api-access-"))
        .unwrap_or_else(|| panic!("no kube-api-access volume: {pod:#}"));
    let sources = volume["projected"]["sources"].as_array().unwrap();
    assert!(sources.iter().any(|s| s["serviceAccountToken"].is_object()));
    assert!(
        sources
            .iter()
            .any(|s| s["configMap"]["name"] == "kube-root-ca.crt")
    );
    assert!(
        pod["spec"]["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount")
    );

    // It leads, as the pod named by the downward API, with its Lease in its own namespace.
    let log = eventually(
        "the operator to lead",
        Duration::from_secs(30),
        || {
            let log = logs();
            log.contains("leading: starting the controllers")
                .then_some(log)
        },
        logs,
    );
    assert!(log.contains(&pod_name), "{log}");
    let holder = kubectl(
        &ns,
        &[
            "get",
            "lease",
            "atlas-operator",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
    );
    assert_eq!(holder, pod_name);

    // The seed flow: credentials in a Secret, the migration directory in a ConfigMap.
    apply_json(
        &ns.name,
        &json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "postgres-credentials"}, "stringData": {"url": db.url}}),
    );
    apply_json(
        &ns.name,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "migrationdir"},
                "data": {seed::MIGRATION_FILE: seed::MIGRATION_SQL, "atlas.sum": seed::MIGRATION_SUM}}),
    );
    let migration_applied = Instant::now();
    apply_json(
        &ns.name,
        &json!({"apiVersion": "db.atlasgo.io/v1alpha1", "kind": "AtlasMigration",
            "metadata": {"name": "atlasmigration-sample"},
            "spec": {"urlFrom": {"secretKeyRef": {"key": "url", "name": "postgres-credentials"}},
                     "dir": {"configMapRef": {"name": "migrationdir"}}}}),
    );
    let done = eventually(
        "the AtlasMigration to be Ready",
        Duration::from_secs(120),
        || {
            let migration = get_json(&ns, SEED_MIGRATION);
            condition(&migration, "Ready")
                .is_some_and(|c| c["status"] == "True")
                .then_some(migration)
        },
        || {
            format!(
                "migration: {}\n{}",
                kubectl(&ns, &["get", "atlasmigration", "-o", "json"]),
                describe()
            )
        },
    );
    eprintln!(
        "timing: the seed AtlasMigration Ready {:.1}s after apply",
        migration_applied.elapsed().as_secs_f64()
    );
    assert_eq!(condition(&done, "Ready").unwrap()["reason"], "Applied");
    assert_eq!(done["status"]["lastAppliedVersion"], "20230316085611");
    let default = db
        .query("select column_default from information_schema.columns where table_name = 'users' and column_name = 'id'")
        .unwrap();
    assert_eq!(default.trim(), "nextval('users_seq'::regclass)");

    // Every request came with the pod's own token: the service account's, bound to this pod.
    let user = format!("system:serviceaccount:{}:{SERVICE_ACCOUNT}", ns.name);
    let audit = std::fs::read_to_string(cluster.audit_log()).unwrap();
    let requests: Vec<Value> = audit
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["user"]["username"] == user.as_str())
        .collect();
    assert!(
        requests.iter().any(|e| e["objectRef"]["resource"] == "jobs"
            && e["verb"] == "create"
            && e["responseStatus"]["code"] == 201),
        "the operator's service account created no Job"
    );
    for event in &requests {
        assert_eq!(
            event["user"]["extra"]["authentication.kubernetes.io/pod-name"],
            json!([pod_name]),
            "a request without the pod-bound token: {event}"
        );
    }

    // Removing the Deployment stops the operator: no process of its pod is left.
    let deleted = Instant::now();
    kubectl(
        &ns,
        &[
            "delete",
            "deployment",
            DEPLOYMENT,
            "--cascade=foreground",
            "--wait=true",
            "--timeout=50s",
        ],
    );
    eventually(
        "the operator's pod to be gone",
        Duration::from_secs(30),
        || (operator_pods(&ns).is_empty() && processes_of(&pod_name).is_empty()).then_some(()),
        || format!("processes: {:?}", processes_of(&pod_name)),
    );
    eprintln!(
        "timing: the operator's pod and process gone {:.1}s after the Deployment's deletion",
        deleted.elapsed().as_secs_f64()
    );
}
