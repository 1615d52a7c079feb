//! Job pods under a service mesh, on the local cluster: a MutatingAdmissionPolicy stands in for
//! the mesh's injector (Istio's and Linkerd's webhooks add their proxy to every new pod of a
//! namespace unless the pod opts out), so the Job's pod really gets an extra container from the
//! API server's admission, as in a meshed cluster. The proxy is a shell that never exits, as a
//! proxy does.

use std::time::{Duration, Instant};

mod support;

use serde_json::{Value, json};
use support::e2e::*;

/// The injector of `namespace`: a proxy added to each new pod not annotated
/// `sidecar.istio.io/inject: "false"`, as an ordinary container or (`native`) as a native
/// sidecar (an init container that restarts always, Istio's `ENABLE_NATIVE_SIDECARS`). Removed
/// when dropped.
struct Injector {
    name: String,
}

impl Injector {
    fn new(namespace: &str, native: bool) -> Injector {
        let name = format!("fake-mesh-{namespace}");
        let proxy = r#"name: "istio-proxy", image: "busybox:1.36", command: ["sh", "-c", "while true; do sleep 1; done"]"#;
        // JSON patches: an apply configuration may not set a container's (atomic) command.
        let mutation = if native {
            format!(
                r#"has(object.spec.initContainers) ? [JSONPatch{{op: "add", path: "/spec/initContainers/-", value: Object.spec.initContainers{{{proxy}, restartPolicy: "Always"}}}}] : [JSONPatch{{op: "add", path: "/spec/initContainers", value: [Object.spec.initContainers{{{proxy}, restartPolicy: "Always"}}]}}]"#
            )
        } else {
            format!(
                r#"[JSONPatch{{op: "add", path: "/spec/containers/-", value: Object.spec.containers{{{proxy}}}}}]"#
            )
        };
        apply_json(
            namespace,
            &json!({"apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingAdmissionPolicy", "metadata": {"name": name},
                "spec": {
                    "matchConstraints": {
                        "resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                           "operations": ["CREATE"], "resources": ["pods"]}],
                        "namespaceSelector": {"matchLabels":
                            {"kubernetes.io/metadata.name": namespace}}},
                    "matchConditions": [{"name": "not-opted-out", "expression":
                        "!has(object.metadata.annotations) || !('sidecar.istio.io/inject' in object.metadata.annotations) || object.metadata.annotations['sidecar.istio.io/inject'] != 'false'"}],
                    "failurePolicy": "Fail",
                    "reinvocationPolicy": "Never",
                    "mutations": [{"patchType": "JSONPatch",
                                   "jsonPatch": {"expression": mutation}}]}}),
        );
        apply_json(
            namespace,
            &json!({"apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingAdmissionPolicyBinding", "metadata": {"name": name},
                "spec": {"policyName": name}}),
        );
        // A new policy takes effect once the API server's admission has loaded it: wait until
        // a pod (a server-side dry run, which creates nothing) gets the proxy.
        eventually(
            "the injector to add its proxy",
            Duration::from_secs(30),
            || {
                let pod = kubectl(&[
                    "-n",
                    namespace,
                    "run",
                    "probe",
                    "--image=busybox:1.36",
                    "--restart=Never",
                    "--dry-run=server",
                    "-o",
                    "json",
                ])
                .ok()?;
                pod.contains("\"istio-proxy\"").then_some(())
            },
            String::new,
        );
        Injector { name }
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        for kind in ["mutatingadmissionpolicybinding", "mutatingadmissionpolicy"] {
            let _ = kubectl(&["delete", kind, &self.name, "--ignore-not-found"]);
        }
    }
}

/// The pods of the Jobs of the resource `name`.
fn job_pods(ns: &devcluster::cluster::TestNamespace, name: &str) -> Vec<Value> {
    let pods = get(ns, "pods").unwrap();
    pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["labels"]["db.atlasgo.io/name"] == name)
        .cloned()
        .collect()
}

fn names(pod: &Value, field: &str) -> Vec<String> {
    pod["spec"][field]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|c| c["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The operator's default opt-out keeps the proxy out; with the mesh let in (`{}`), a proxy
/// injected as an ordinary container keeps the pod running after the runner, yet the resource
/// is Ready as soon as the runner is done and stays Ready when the Job ends at its deadline.
#[test]
fn an_ordinary_proxy_container_does_not_hold_the_apply() {
    let (ns, _db) = namespace_with_database("mesh-plain");
    let _injector = Injector::new(&ns.name, false);
    migration_dir(&ns, seed_files());

    // By default the opt-out annotation keeps the injector away.
    let operator = start_operator(&ns.name);
    apply_json(&ns.name, &seed_migration());
    wait_ready(&ns, SEED_MIGRATION, &operator);
    let pods = job_pods(&ns, "atlasmigration-sample");
    assert_eq!(names(&pods[0], "containers"), ["runner"], "{:#}", pods[0]);
    drop(operator);

    // Let the mesh in: the proxy is injected and outlives the runner.
    let operator = start_operator_with(
        &ns.name,
        &[
            "--job-pod-annotations",
            "{}",
            "--job-deadline-seconds",
            "20",
        ],
    );
    let mut second = seed_migration();
    second["metadata"]["name"] = json!("meshed");
    apply_json(&ns.name, &second);
    let started = Instant::now();
    let done = wait_ready(&ns, "atlasmigration/meshed", &operator);
    eprintln!(
        "Ready {:.1}s after apply with a proxy",
        started.elapsed().as_secs_f64()
    );
    let pods = job_pods(&ns, "meshed");
    assert_eq!(
        names(&pods[0], "containers"),
        ["runner", "istio-proxy"],
        "the injector added its proxy: {:#}",
        pods[0]["spec"]
    );
    let applied_at = done["status"]["lastApplied"].clone();
    // The Job's deadline stops the proxy; the apply stands.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let jobs = get(&ns, "jobs").unwrap();
        let failed = jobs["items"].as_array().unwrap().iter().any(|job| {
            job["metadata"]["labels"]["db.atlasgo.io/name"] == "meshed"
                && job["status"]["conditions"].as_array().is_some_and(|all| {
                    all.iter()
                        .any(|c| c["type"] == "Failed" && c["status"] == "True")
                })
        });
        if failed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Job never reached its deadline: {jobs:#}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Give the operator a few reconciles of the failed Job.
    std::thread::sleep(Duration::from_secs(5));
    let after = get(&ns, "atlasmigration/meshed").unwrap();
    let ready = ready(&after).unwrap();
    assert_eq!(ready["status"], "True", "{ready}");
    assert_eq!(ready["reason"], "Applied", "{ready}");
    assert_eq!(after["status"]["lastApplied"], applied_at);
    drop(operator);
}

/// A mesh that injects its proxy as a native sidecar: the Job completes once the runner exits,
/// the proxy stopped with it.
#[test]
fn a_native_sidecar_proxy_stops_with_the_runner() {
    let (ns, _db) = namespace_with_database("mesh-native");
    let _injector = Injector::new(&ns.name, true);
    migration_dir(&ns, seed_files());
    let operator = start_operator_with(&ns.name, &["--job-pod-annotations", "{}"]);
    apply_json(&ns.name, &seed_migration());
    wait_ready(&ns, SEED_MIGRATION, &operator);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let jobs = get(&ns, "jobs").unwrap();
        let complete = jobs["items"].as_array().unwrap().iter().any(|job| {
            job["status"]["conditions"].as_array().is_some_and(|all| {
                all.iter()
                    .any(|c| c["type"] == "Complete" && c["status"] == "True")
            })
        });
        if complete {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Job never completed: {jobs:#}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let pods = job_pods(&ns, "atlasmigration-sample");
    assert_eq!(
        names(&pods[0], "initContainers"),
        ["istio-proxy"],
        "{:#}",
        pods[0]["spec"]
    );
}
