//! The process-kubelet under the real control plane: Jobs run by the real Job controller, pods
//! bound and run by `devcluster-kubelet`, garbage collection and TTLs by the real controllers,
//! `kubectl logs` through the real API server.
//!
//! The cluster is shared by the test run (`cargo xtask test` brings it up and down; a plain
//! `cargo test` starts it on first use and leaves it running). Each test works in a namespace of
//! its own, so they run in parallel. Pods use `busybox`, which the kubelet maps to the host's
//! shell (see docs/devcluster.md).

use std::time::{Duration, Instant};

use devcluster::cluster::{self, Cluster, ClusterError, TestNamespace};
use serde_json::{Value, json};

/// `kubectl wait` stays under the 60 s limit of one kubectl call.
const WAIT: &str = "--timeout=50s";

fn cluster() -> Cluster {
    cluster::shared().unwrap_or_else(|err| panic!("starting the local cluster: {err}"))
}

fn namespace(hint: &str) -> TestNamespace {
    cluster()
        .namespace(hint)
        .unwrap_or_else(|err| panic!("creating a namespace: {err}"))
}

fn kubectl(ns: &TestNamespace, args: &[&str]) -> Result<String, ClusterError> {
    let mut all = vec!["-n", ns.name.as_str()];
    all.extend_from_slice(args);
    ns.cluster().kubectl_output(&all)
}

fn ok(ns: &TestNamespace, args: &[&str]) -> String {
    kubectl(ns, args).unwrap_or_else(|err| panic!("kubectl {}: {err}", args.join(" ")))
}

fn apply(ns: &TestNamespace, manifest: &Value) {
    ns.cluster()
        .apply(Some(&ns.name), &manifest.to_string())
        .unwrap_or_else(|err| panic!("applying {manifest}: {err}"));
}

/// A Job of one busybox container running `script` with `sh -c`; `extra` is merged into the
/// Job's spec and `pod` into its pod spec.
fn job(name: &str, script: &str, extra: Value, pod: Value) -> Value {
    let mut pod_spec = json!({
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 2,
        "containers": [{
            "name": "main",
            "image": "busybox:1.36",
            "command": ["sh", "-c", script],
        }],
    });
    merge(&mut pod_spec, pod);
    let mut spec = json!({
        "backoffLimit": 0,
        "template": { "spec": pod_spec },
    });
    merge(&mut spec, extra);
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": { "name": name },
        "spec": spec,
    })
}

fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(target.entry(key).or_insert(Value::Null), value);
            }
        }
        (target, patch) => *target = patch,
    }
}

fn job_pods(ns: &TestNamespace, job: &str) -> Vec<Value> {
    let out = ok(
        ns,
        &[
            "get",
            "pods",
            "-l",
            &format!("job-name={job}"),
            "-o",
            "json",
        ],
    );
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"].as_array().cloned().unwrap_or_default()
}

fn get(ns: &TestNamespace, object: &str) -> Value {
    serde_json::from_str(&ok(ns, &["get", object, "-o", "json"])).unwrap()
}

/// Polls `check` every 100 ms until it returns a value, for at most `limit`.
fn eventually<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn condition(object: &Value, kind: &str) -> Option<Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind && c["status"] == "True")
        .cloned()
}

fn terminated(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]["state"]["terminated"]
}

#[test]
fn the_node_is_ready_and_heartbeats() {
    let ns = namespace("node");
    let nodes = ok(&ns, &["get", "nodes", "--no-headers"]);
    assert!(
        nodes.lines().any(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            words.first() == Some(&"devnode") && words.get(1) == Some(&"Ready")
        }),
        "{nodes}"
    );
    let node = get(&ns, "node/devnode");
    assert_eq!(node["status"]["addresses"][0]["address"], "127.0.0.1");
    assert!(node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64() > Some(0));
    let lease = ok(
        &ns,
        &[
            "get",
            "lease",
            "devnode",
            "-n",
            "kube-node-lease",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
    );
    assert_eq!(lease, "devnode");
}

#[test]
fn a_job_whose_pod_exits_0_completes() {
    let ns = namespace("complete");
    let created = Instant::now();
    apply(
        &ns,
        &job("ok", "echo hello; sleep 1; exit 0", json!({}), json!({})),
    );
    let running = eventually("the pod to run", Duration::from_secs(30), || {
        job_pods(&ns, "ok")
            .iter()
            .any(|pod| pod["status"]["phase"] == "Running" || pod["status"]["phase"] == "Succeeded")
            .then(Instant::now)
    });
    ok(&ns, &["wait", "--for=condition=complete", "job/ok", WAIT]);
    let complete = Instant::now();
    eprintln!(
        "timing: Job created → pod running {:.2}s, → Job Complete {:.2}s",
        (running - created).as_secs_f64(),
        (complete - created).as_secs_f64()
    );
    let pods = job_pods(&ns, "ok");
    assert_eq!(pods.len(), 1);
    let pod = &pods[0];
    assert_eq!(pod["status"]["phase"], "Succeeded");
    assert_eq!(terminated(pod)["exitCode"], 0);
    assert_eq!(terminated(pod)["reason"], "Completed");
    assert_eq!(pod["spec"]["nodeName"], "devnode");
    for kind in ["Initialized", "PodScheduled"] {
        assert!(condition(pod, kind).is_some(), "{kind}: {pod:#}");
    }
}

#[test]
fn exit_1_with_backoff_limit_1_retries_then_fails() {
    let ns = namespace("backoff");
    apply(
        &ns,
        &job(
            "fails",
            "echo failing; exit 1",
            json!({"backoffLimit": 1}),
            json!({}),
        ),
    );
    ok(&ns, &["wait", "--for=condition=failed", "job/fails", WAIT]);
    let job = get(&ns, "job/fails");
    assert_eq!(job["status"]["failed"], 2, "{job:#}");
    assert_eq!(
        condition(&job, "Failed").unwrap()["reason"],
        "BackoffLimitExceeded"
    );
    let pods = job_pods(&ns, "fails");
    assert_eq!(pods.len(), 2);
    for pod in &pods {
        assert_eq!(pod["status"]["phase"], "Failed");
        assert_eq!(terminated(pod)["exitCode"], 1);
        assert_eq!(terminated(pod)["reason"], "Error");
    }
}

#[test]
fn a_pod_failure_policy_fails_the_job_at_once_on_an_exit_code() {
    let ns = namespace("podfailurepolicy");
    let policy = json!({
        "backoffLimit": 6,
        "podFailurePolicy": {"rules": [{
            "action": "FailJob",
            "onExitCodes": {"containerName": "main", "operator": "In", "values": [3]},
        }]},
    });
    apply(
        &ns,
        &job("definitive", "echo bad input; exit 3", policy, json!({})),
    );
    ok(
        &ns,
        &["wait", "--for=condition=failed", "job/definitive", WAIT],
    );
    let job = get(&ns, "job/definitive");
    assert_eq!(
        condition(&job, "Failed").unwrap()["reason"],
        "PodFailurePolicy"
    );
    assert_eq!(job_pods(&ns, "definitive").len(), 1, "no retry: {job:#}");
}

#[test]
fn a_long_termination_message_keeps_its_last_4096_bytes() {
    let ns = namespace("termination");
    // 904 × "a" then 4096 × "b": only the b's survive. One container writes to the default
    // path, one to a path of its own (in a directory that does not exist on the host).
    let script = "head -c 904 /dev/zero | tr '\\0' a > \"$MSG\"; \
                  head -c 4096 /dev/zero | tr '\\0' b >> \"$MSG\"";
    let pod = json!({"containers": [
        {
            "name": "main",
            "image": "busybox",
            "command": ["sh", "-c", script],
            "env": [{"name": "MSG", "value": "/dev/termination-log"}],
        },
        {
            "name": "custom",
            "image": "busybox",
            "command": ["sh", "-c", script],
            "env": [{"name": "MSG", "value": "/results/message"}],
            "terminationMessagePath": "/results/message",
        },
    ]});
    apply(&ns, &job("long", "", json!({}), pod));
    ok(&ns, &["wait", "--for=condition=complete", "job/long", WAIT]);
    assert!(
        !std::path::Path::new("/results").exists(),
        "a mount point was made on the host"
    );
    let pods = job_pods(&ns, "long");
    for status in pods[0]["status"]["containerStatuses"].as_array().unwrap() {
        let message = status["state"]["terminated"]["message"].as_str().unwrap();
        assert_eq!(message.len(), 4096, "{}", status["name"]);
        assert!(message.bytes().all(|b| b == b'b'), "{}", status["name"]);
    }
}

#[test]
fn fallback_to_logs_on_error_reports_the_log_tail() {
    let ns = namespace("fallback");
    let pod = json!({"containers": [{
        "name": "main",
        "image": "busybox",
        "command": ["sh", "-c", "echo first; echo 'connection refused' >&2; exit 4"],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }]});
    apply(&ns, &job("fallback", "", json!({}), pod));
    ok(
        &ns,
        &["wait", "--for=condition=failed", "job/fallback", WAIT],
    );
    let pods = job_pods(&ns, "fallback");
    assert_eq!(terminated(&pods[0])["exitCode"], 4);
    assert_eq!(
        terminated(&pods[0])["message"],
        "first\nconnection refused\n"
    );
}

#[test]
fn a_missing_secret_waits_with_create_container_config_error_then_starts() {
    let ns = namespace("missing-secret");
    let pod = json!({"containers": [{
        "name": "main",
        "image": "busybox",
        "command": ["sh", "-c", "echo \"password is $PASSWORD\""],
        "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "late", "key": "password"}}}],
    }]});
    apply(&ns, &job("waits", "", json!({}), pod));
    let message = eventually(
        "CreateContainerConfigError",
        Duration::from_secs(30),
        || {
            job_pods(&ns, "waits").iter().find_map(|pod| {
                let waiting = &pod["status"]["containerStatuses"][0]["state"]["waiting"];
                (waiting["reason"] == "CreateContainerConfigError")
                    .then(|| waiting["message"].as_str().unwrap_or("").to_string())
            })
        },
    );
    assert_eq!(message, "secret \"late\" not found");
    let pods = job_pods(&ns, "waits");
    assert_eq!(pods[0]["status"]["phase"], "Pending");
    ok(
        &ns,
        &[
            "create",
            "secret",
            "generic",
            "late",
            "--from-literal=password=s3cret",
        ],
    );
    ok(
        &ns,
        &["wait", "--for=condition=complete", "job/waits", WAIT],
    );
    assert_eq!(ok(&ns, &["logs", "job/waits"]), "password is s3cret\n");
}

#[test]
fn kubectl_logs_of_a_job_go_through_the_api_server() {
    let ns = namespace("logs");
    apply(
        &ns,
        &job(
            "talks",
            "for i in 1 2 3; do echo line $i; sleep 0.3; done; echo oops >&2",
            json!({}),
            json!({}),
        ),
    );
    eventually("the pod to run", Duration::from_secs(30), || {
        job_pods(&ns, "talks")
            .iter()
            .any(|pod| pod["status"]["phase"] != "Pending")
            .then_some(())
    });
    // Following from the start: the stream ends when the container does.
    let followed = ok(&ns, &["logs", "-f", "job/talks"]);
    assert_eq!(followed, "line 1\nline 2\nline 3\noops\n");
    ok(
        &ns,
        &["wait", "--for=condition=complete", "job/talks", WAIT],
    );
    assert_eq!(
        ok(&ns, &["logs", "job/talks"]),
        "line 1\nline 2\nline 3\noops\n"
    );
    assert_eq!(ok(&ns, &["logs", "job/talks", "--tail=1"]), "oops\n");
}

#[test]
fn deleting_an_owner_garbage_collects_its_jobs_and_pods() {
    let ns = namespace("gc");
    ok(&ns, &["create", "configmap", "owner"]);
    let uid = ok(
        &ns,
        &[
            "get",
            "configmap",
            "owner",
            "-o",
            "jsonpath={.metadata.uid}",
        ],
    );
    let mut manifest = job("owned", "sleep 3600", json!({}), json!({}));
    manifest["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid,
    }]);
    apply(&ns, &manifest);
    eventually("the pod to run", Duration::from_secs(30), || {
        job_pods(&ns, "owned")
            .iter()
            .any(|pod| pod["status"]["phase"] == "Running")
            .then_some(())
    });
    ok(&ns, &["delete", "configmap", "owner", "--wait=false"]);
    // `sleep` is PID 1 and ignores SIGTERM, as in a container: the 2 s grace period ends in
    // SIGKILL, then the kubelet removes the pod object.
    ok(&ns, &["wait", "--for=delete", "job/owned", WAIT]);
    eventually("the pods to go", Duration::from_secs(40), || {
        job_pods(&ns, "owned").is_empty().then_some(())
    });
}

#[test]
fn ttl_seconds_after_finished_removes_a_finished_job() {
    let ns = namespace("ttl");
    apply(
        &ns,
        &job(
            "brief",
            "exit 0",
            json!({"ttlSecondsAfterFinished": 0}),
            json!({}),
        ),
    );
    eventually("the Job to be removed", Duration::from_secs(50), || {
        kubectl(&ns, &["get", "job", "brief", "-o", "name"])
            .is_err_and(|err| err.to_string().contains("NotFound"))
            .then_some(())
    });
}

#[test]
fn active_deadline_seconds_fails_the_pod() {
    let ns = namespace("deadline");
    apply(
        &ns,
        &job(
            "slow",
            "sleep 3600",
            json!({}),
            json!({"activeDeadlineSeconds": 2}),
        ),
    );
    ok(&ns, &["wait", "--for=condition=failed", "job/slow", WAIT]);
    let pods = job_pods(&ns, "slow");
    let status = &pods[0]["status"];
    assert_eq!(status["phase"], "Failed");
    assert_eq!(status["reason"], "DeadlineExceeded");
}

#[test]
fn init_containers_sidecars_and_volumes() {
    let ns = namespace("init");
    ok(
        &ns,
        &[
            "create",
            "configmap",
            "migrations",
            "--from-literal=1_init.sql=create table t (id int);",
        ],
    );
    let pod = json!({
        "initContainers": [
            {
                "name": "prepare",
                "image": "busybox",
                "command": ["sh", "-c", "echo prepared > /work/state"],
                "volumeMounts": [{"name": "work", "mountPath": "/work"}],
            },
            {
                // A native sidecar: runs beside the main container, stopped when it ends.
                "name": "sidecar",
                "image": "busybox",
                "restartPolicy": "Always",
                "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"],
            },
        ],
        "containers": [{
            "name": "main",
            "image": "busybox",
            "command": ["sh", "-c", "cat /work/state; cat /migrations/1_init.sql; echo; \
                readlink /migrations/1_init.sql; readlink /migrations/..data; \
                touch /migrations/x 2>/dev/null && echo writable || echo read-only"],
            "volumeMounts": [
                {"name": "work", "mountPath": "/work"},
                {"name": "migrations", "mountPath": "/migrations"},
            ],
        }],
        "volumes": [
            {"name": "work", "emptyDir": {}},
            {"name": "migrations", "configMap": {"name": "migrations"}},
        ],
    });
    apply(&ns, &job("layered", "", json!({}), pod));
    ok(
        &ns,
        &["wait", "--for=condition=complete", "job/layered", WAIT],
    );
    let logs = ok(&ns, &["logs", "job/layered", "-c", "main"]);
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines[0], "prepared");
    assert_eq!(lines[1], "create table t (id int);");
    assert_eq!(lines[2], "..data/1_init.sql");
    assert!(lines[3].starts_with("..20"), "{logs}");
    assert_eq!(lines[4], "read-only");
    let pod = &job_pods(&ns, "layered")[0];
    let init = pod["status"]["initContainerStatuses"].as_array().unwrap();
    assert_eq!(init[0]["state"]["terminated"]["exitCode"], 0);
    assert_eq!(init[1]["state"]["terminated"]["exitCode"], 0, "{pod:#}");
}

#[test]
fn a_pod_with_in_cluster_config_gets_what_its_role_allows() {
    let ns = namespace("incluster");
    let kubectl_bin = devcluster::tools::path("kubectl").expect("run `cargo xtask tools` first");
    ok(&ns, &["create", "serviceaccount", "reader"]);
    ok(
        &ns,
        &[
            "create",
            "role",
            "reader",
            "--verb=get,list",
            "--resource=configmaps",
        ],
    );
    ok(
        &ns,
        &[
            "create",
            "rolebinding",
            "reader",
            "--role=reader",
            &format!("--serviceaccount={}:reader", ns.name),
        ],
    );
    let script = "\"$KUBECTL\" get configmaps -o name; \
                  if \"$KUBECTL\" get secrets 2>/tmp/err; then echo 'secrets: allowed'; \
                  else echo 'secrets: refused'; fi; \
                  \"$KUBECTL\" auth whoami -o jsonpath='{.status.userInfo.username}'";
    let pod = json!({
        "serviceAccountName": "reader",
        "containers": [{
            "name": "main",
            "image": "busybox",
            "command": ["sh", "-c", script],
            "env": [{"name": "KUBECTL", "value": kubectl_bin.display().to_string()}],
        }],
    });
    apply(&ns, &job("client", "", json!({}), pod));
    ok(
        &ns,
        &["wait", "--for=condition=complete", "job/client", WAIT],
    );
    let logs = ok(&ns, &["logs", "job/client"]);
    assert!(logs.contains("configmap/kube-root-ca.crt"), "{logs}");
    assert!(logs.contains("secrets: refused"), "{logs}");
    assert!(
        logs.contains(&format!("system:serviceaccount:{}:reader", ns.name)),
        "{logs}"
    );
}

#[test]
fn an_image_without_a_local_program_waits_with_err_image_pull() {
    let ns = namespace("image");
    let pod = json!({"containers": [{"name": "main", "image": "nginx:1.27"}]});
    apply(&ns, &job("nginx", "", json!({}), pod));
    let reason = eventually("a waiting reason", Duration::from_secs(30), || {
        job_pods(&ns, "nginx").iter().find_map(|pod| {
            pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
                .as_str()
                .filter(|reason| *reason != "ContainerCreating")
                .map(str::to_string)
        })
    });
    assert_eq!(reason, "ErrImagePull");
}

#[test]
fn pods_sharing_a_container_port_never_run_together() {
    let ns = namespace("ports");
    let pod = |script: &str| {
        json!({"containers": [{
            "name": "main",
            "image": "busybox",
            "command": ["sh", "-c", script],
            "ports": [{"containerPort": 39917}],
        }]})
    };
    apply(&ns, &job("first", "", json!({}), pod("sleep 3")));
    eventually("the first pod to run", Duration::from_secs(30), || {
        job_pods(&ns, "first")
            .iter()
            .any(|pod| pod["status"]["phase"] == "Running")
            .then_some(())
    });
    apply(&ns, &job("second", "", json!({}), pod("exit 0")));
    std::thread::sleep(Duration::from_secs(1));
    let second = &job_pods(&ns, "second")[0];
    assert_eq!(second["status"]["phase"], "Pending", "{second:#}");
    let waiting = &second["status"]["containerStatuses"][0]["state"]["waiting"];
    assert!(
        waiting["message"]
            .as_str()
            .is_some_and(|m| m.contains("containerPort 39917/TCP is in use")),
        "{second:#}"
    );
    ok(
        &ns,
        &["wait", "--for=condition=complete", "job/first", WAIT],
    );
    ok(
        &ns,
        &["wait", "--for=condition=complete", "job/second", WAIT],
    );
}

#[test]
fn the_runner_image_has_the_pinned_atlas() {
    let ns = namespace("runner-image");
    ok(
        &ns,
        &[
            "create",
            "configmap",
            "inputs",
            "--from-literal=1.sql=select 1;",
        ],
    );
    // Shaped like the operator's Job: a private /tmp, the inputs read-only at /atlas/inputs,
    // a hardened security context (which this kubelet does not enforce).
    let pod = json!({
        "containers": [{
            "name": "main",
            "image": "ghcr.io/atlas-operator/runner:dev",
            "command": ["sh", "-c", "atlas version; ls /atlas/inputs; touch /tmp/scratch && echo tmp-ok; \
                test -e /tmp/scratch-from-host || echo tmp-private"],
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "securityContext": {"readOnlyRootFilesystem": true, "runAsNonRoot": true,
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [
                {"name": "tmp", "mountPath": "/tmp"},
                {"name": "inputs", "mountPath": "/atlas/inputs", "readOnly": true},
            ],
        }],
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
            {"name": "inputs", "configMap": {"name": "inputs"}},
        ],
    });
    // A file of the host's /tmp, which the pod's private /tmp must not show.
    std::fs::write("/tmp/scratch-from-host", "").unwrap();
    apply(&ns, &job("atlas", "", json!({}), pod));
    ok(
        &ns,
        &["wait", "--for=condition=complete", "job/atlas", WAIT],
    );
    let logs = ok(&ns, &["logs", "job/atlas"]);
    let version = devcluster::tools::atlas_version().unwrap();
    assert!(logs.contains(&version), "{version} not in {logs}");
    assert!(logs.contains("1.sql\ntmp-ok\ntmp-private\n"), "{logs}");
    assert!(
        !std::path::Path::new("/atlas").exists(),
        "a mount point was made on the host"
    );
}

/// A shell loop, run in the main container, that waits until something listens on `port` of
/// the loopback (as the runner waits for its dev database), then prints how long that took.
fn wait_for_port(port: u16) -> String {
    format!(
        "start=$(date +%s%N); \
         until bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' 2>/dev/null; do \
           [ $(( $(date +%s%N) - start )) -lt 60000000000 ] || {{ echo 'port {port} never opened'; exit 9; }}; \
           sleep 0.05; \
         done; \
         echo \"port {port} open after $(( ($(date +%s%N) - start) / 1000000 )) ms\"; "
    )
}

/// Runs `command` until it succeeds, for at most 5 s: PostgreSQL opens its port a few
/// milliseconds before it accepts sessions ("the database system is starting up"), as the
/// official image's server does.
fn retried(command: &str) -> String {
    format!(
        "start=$(date +%s%N); \
         until {command}; do \
           [ $(( $(date +%s%N) - start )) -lt 5000000000 ] || exit 8; sleep 0.1; \
         done; \
         echo \"accepted after $(( ($(date +%s%N) - start) / 1000000 )) ms more\"; "
    )
}

/// The host processes still running for `pod` (the kubelet gives every container
/// `HOSTNAME=<pod>`; the servers keep it).
fn processes_of(pod: &str) -> Vec<String> {
    let wanted = format!("HOSTNAME={pod}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ
            .split(|b| *b == 0)
            .any(|var| var == wanted.as_bytes())
        {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push(String::from_utf8_lossy(&cmdline).replace('\0', " "));
        }
    }
    found
}

/// Runs a Job whose main container waits for a database sidecar's `port` then runs `client`;
/// checks that the Job completes, that the sidecar stopped cleanly, and that neither a process
/// nor a data directory of the pod is left. Returns the main container's log.
fn job_with_database(
    ns: &TestNamespace,
    name: &str,
    sidecars: Value,
    client: &str,
    env: Value,
) -> String {
    let ports: Vec<u16> = sidecars
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["ports"][0]["containerPort"].as_u64().unwrap() as u16)
        .collect();
    let mut script: String = ports.iter().map(|port| wait_for_port(*port)).collect();
    script.push_str(client);
    let volumes: Vec<Value> = sidecars
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["volumeMounts"].as_array().cloned().unwrap_or_default())
        .map(|mount| json!({"name": mount["name"], "emptyDir": {}}))
        .collect();
    let pod = json!({
        "initContainers": sidecars,
        "containers": [{
            "name": "main",
            "image": "busybox",
            "command": ["sh", "-c", script],
            "env": env,
        }],
        "volumes": &volumes,
        "terminationGracePeriodSeconds": 10,
    });
    let applied = Instant::now();
    apply(ns, &job(name, "", json!({}), pod));
    ok(
        ns,
        &[
            "wait",
            "--for=condition=complete",
            &format!("job/{name}"),
            WAIT,
        ],
    );
    let complete = applied.elapsed();
    let logs = ok(ns, &["logs", &format!("job/{name}"), "-c", "main"]);
    eprintln!(
        "timing: {name}: Job Complete {:.1}s after apply; main container: {}",
        complete.as_secs_f64(),
        logs.lines()
            .filter(|l| l.contains(" after "))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let pod = &job_pods(ns, name)[0];
    let pod_name = pod["metadata"]["name"].as_str().unwrap().to_string();
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    for status in pod["status"]["initContainerStatuses"].as_array().unwrap() {
        // Stopped by SIGTERM, the server shut down cleanly (not SIGKILLed at the grace's end).
        assert_eq!(status["state"]["terminated"]["exitCode"], 0, "{pod:#}");
    }
    assert!(
        processes_of(&pod_name).is_empty(),
        "{:?}",
        processes_of(&pod_name)
    );
    // The runs' fresh data directories and the pod's emptyDirs go as soon as the pod ends.
    let pod_dir = ns.cluster().dir.join("kubelet/pods").join(uid);
    let empty_dirs: Vec<std::path::PathBuf> = volumes
        .iter()
        .map(|v| pod_dir.join("volumes").join(v["name"].as_str().unwrap()))
        .collect();
    let left = || -> Vec<std::path::PathBuf> {
        walk(&pod_dir)
            .into_iter()
            .filter(|path| path.ends_with("data") || empty_dirs.contains(path))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !left().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(left().is_empty(), "left behind: {:?}", left());
    logs
}

/// Every directory under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.push(entry.path());
            found.extend(walk(&entry.path()));
        }
    }
    found
}

#[test]
fn a_postgres_sidecar_serves_the_job_and_leaves_nothing_behind() {
    let ns = namespace("postgres-sidecar");
    // As the operator's dev database: a native sidecar on an emptyDir, trust on the loopback.
    let sidecar = json!([{
        "name": "devdb",
        "image": "postgres:16",
        "restartPolicy": "Always",
        "env": [{"name": "POSTGRES_HOST_AUTH_METHOD", "value": "trust"}],
        "ports": [{"containerPort": 5432}],
        "volumeMounts": [{"name": "devdb", "mountPath": "/var/lib/postgresql/data"}],
    }]);
    let client = retried(
        "psql postgres://postgres@127.0.0.1:5432/postgres -v ON_ERROR_STOP=1 \
         -c 'create table t(id int)'",
    );
    let logs = job_with_database(&ns, "pg", sidecar, &client, json!([]));
    assert!(logs.contains("CREATE TABLE"), "{logs}");
}

#[test]
fn a_mariadb_sidecar_serves_the_job_and_leaves_nothing_behind() {
    let ns = namespace("mariadb-sidecar");
    // No volume: the data directory is a fresh one of the kubelet's.
    let sidecar = json!([{
        "name": "devdb",
        "image": "mariadb:11",
        "restartPolicy": "Always",
        "env": [{"name": "MARIADB_ALLOW_EMPTY_ROOT_PASSWORD", "value": "1"}],
        "ports": [{"containerPort": 3306}],
    }]);
    let logs = job_with_database(
        &ns,
        "maria",
        sidecar,
        "mariadb -h127.0.0.1 -P3306 -uroot -N -e 'select 40 + 2'",
        json!([]),
    );
    assert!(logs.lines().any(|line| line == "42"), "{logs}");
}

#[test]
fn database_images_take_credentials_databases_and_ports_from_the_container() {
    let ns = namespace("database-env");
    // A password that needs quoting in SQL and in the shell, from a Secret.
    let password = r#"p'a\ss"w $x"#;
    ok(
        &ns,
        &[
            "create",
            "secret",
            "generic",
            "db",
            &format!("--from-literal=password={password}"),
        ],
    );
    let secret = |name: &str| json!({"name": name, "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}});
    let sidecars = json!([
        {
            "name": "pg",
            "image": "docker.io/library/postgres:17-bookworm",
            "restartPolicy": "Always",
            "env": [
                secret("POSTGRES_PASSWORD"),
                {"name": "POSTGRES_USER", "value": "atlas"},
                {"name": "POSTGRES_DB", "value": "dev"},
            ],
            "ports": [{"containerPort": 15432}],
        },
        {
            "name": "mysql",
            "image": "mysql:8.4",
            "restartPolicy": "Always",
            "env": [
                secret("MYSQL_ROOT_PASSWORD"),
                {"name": "MYSQL_DATABASE", "value": "dev"},
                // Not the mysql image's variable: ignored.
                {"name": "MARIADB_DATABASE", "value": "other"},
            ],
            "args": ["--character-set-server=utf8mb4"],
            "ports": [{"containerPort": 13306}],
            "volumeMounts": [{"name": "mysql", "mountPath": "/var/lib/mysql"}],
        },
    ]);
    let client = format!(
        "export PGPASSWORD=\"$DB_PASSWORD\" MYSQL_PWD=\"$DB_PASSWORD\"; {} \
         psql -h 127.0.0.1 -p 15432 -U atlas -d dev -v ON_ERROR_STOP=1 -At \
           -c 'select current_user, current_database()'; \
         PGPASSWORD=wrong psql -h 127.0.0.1 -p 15432 -U atlas -d dev -c 'select 1' \
           && exit 7; \
         mariadb -h127.0.0.1 -P13306 -uroot -N -e 'show databases; select @@character_set_server'; \
         MYSQL_PWD= mariadb -h127.0.0.1 -P13306 -uroot -e 'select 1' && exit 6; \
         echo done",
        retried("psql -h 127.0.0.1 -p 15432 -U atlas -d dev -c 'select 1' >/dev/null")
    );
    // The main container gets the password too, for its clients.
    let logs = job_with_database(
        &ns,
        "env",
        sidecars,
        &client,
        json!([secret("DB_PASSWORD")]),
    );
    let lines: Vec<&str> = logs.lines().collect();
    assert!(lines.contains(&"atlas|dev"), "{logs}");
    assert!(lines.contains(&"dev"), "{logs}");
    assert!(!lines.contains(&"other"), "{logs}");
    assert!(lines.contains(&"utf8mb4"), "{logs}");
    assert_eq!(lines.last(), Some(&"done"), "{logs}");
}

/// A tiny HTTP server on `$PORT` (Perl's core modules, as Debian's `perl-base` has them): `GET
/// /<name>` answers 200 when the file `/data/<name>` exists and 503 otherwise, so a test steers
/// the probes by touching files in the pod's hostPath volume. As PID 1 it ignores `SIGTERM`.
const PROBED_SERVER: &str = r#"
$SIG{PIPE} = "IGNORE";
my $server = IO::Socket::INET->new(LocalAddr => "127.0.0.1:$ENV{PORT}", Listen => 16,
    ReuseAddr => 1) or die "listen: $!";
while (my $client = $server->accept) {
    my ($path) = (<$client> // "") =~ m{^GET (/\w*)};
    while (defined(my $line = <$client>)) { last if $line =~ /^\r?$/ }
    if (defined $path) {
        print $client -e "/data$path"
            ? "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
            : "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
    }
    close $client;
}
"#;

/// A free loopback port (nothing else on the machine holds it right now).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The files the probed server answers from: a host directory of the test, removed when
/// dropped.
struct ProbeFiles(std::path::PathBuf);

impl ProbeFiles {
    fn new(ns: &TestNamespace) -> ProbeFiles {
        let dir = std::env::temp_dir().join(format!("{}-probes", ns.name));
        std::fs::create_dir_all(&dir).unwrap();
        ProbeFiles(dir)
    }

    fn touch(&self, name: &str) {
        std::fs::write(self.0.join(name), "").unwrap();
    }

    fn remove(&self, name: &str) {
        std::fs::remove_file(self.0.join(name)).unwrap();
    }

    fn volume(&self) -> Value {
        json!({"name": "data", "hostPath": {"path": self.0.display().to_string(), "type": "Directory"}})
    }
}

impl Drop for ProbeFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A container running [`PROBED_SERVER`] on `port`, with the probes of `probes` merged in.
fn probed_container(name: &str, port: u16, probes: Value) -> Value {
    let mut container = json!({
        "name": name,
        "image": "busybox",
        "command": ["perl", "-MIO::Socket::INET", "-e", PROBED_SERVER],
        "env": [{"name": "PORT", "value": port.to_string()}],
        "ports": [{"name": "http", "containerPort": port}],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    });
    merge(&mut container, probes);
    container
}

fn pod_manifest(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
}

fn pod_condition(pod: &Value, kind: &str) -> String {
    pod["status"]["conditions"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["type"] == kind))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
        .to_string()
}

#[test]
fn startup_and_readiness_probes_decide_when_a_deployment_is_available() {
    let ns = namespace("probes-ready");
    let files = ProbeFiles::new(&ns);
    let port = free_port();
    let container = probed_container(
        "web",
        port,
        json!({
            "startupProbe": {"httpGet": {"path": "/started", "port": "http"},
                             "periodSeconds": 1, "failureThreshold": 120},
            "livenessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1},
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": port},
                               "periodSeconds": 1, "failureThreshold": 1},
        }),
    );
    apply(
        &ns,
        &json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [container], "volumes": [files.volume()],
                             "terminationGracePeriodSeconds": 1},
                },
            },
        }),
    );
    let pod = || -> Option<Value> {
        let out = ok(&ns, &["get", "pods", "-l", "app=web", "-o", "json"]);
        let list: Value = serde_json::from_str(&out).unwrap();
        list["items"].as_array()?.first().cloned()
    };
    let container = |pod: &Value| pod["status"]["containerStatuses"][0].clone();
    let running = eventually("the pod to run", Duration::from_secs(30), || {
        pod().filter(|p| container(p)["state"]["running"].is_object())
    });
    // Started by a kubelet's rules only once its startup probe passes; never ready before.
    std::thread::sleep(Duration::from_millis(1500));
    let waiting = pod().unwrap();
    assert_eq!(container(&waiting)["started"], false, "{waiting:#}");
    assert_eq!(container(&waiting)["ready"], false, "{waiting:#}");
    assert_eq!(pod_condition(&waiting, "Ready"), "False", "{waiting:#}");
    let deployment = get(&ns, "deployment/web");
    assert!(
        condition(&deployment, "Available").is_none(),
        "{deployment:#}"
    );

    files.touch("started");
    let started = eventually("the startup probe to pass", Duration::from_secs(10), || {
        pod().filter(|p| container(p)["started"] == true)
    });
    assert_eq!(container(&started)["ready"], false, "{started:#}");

    files.touch("readyz");
    let since = Instant::now();
    ok(
        &ns,
        &["wait", "--for=condition=available", "deployment/web", WAIT],
    );
    eprintln!(
        "timing: Deployment Available {:.1}s after the readiness file appeared",
        since.elapsed().as_secs_f64()
    );
    let ready = pod().unwrap();
    assert_eq!(pod_condition(&ready, "Ready"), "True", "{ready:#}");
    assert_eq!(container(&ready)["ready"], true);

    // One failure (failureThreshold 1) makes it unready; the liveness probe (TCP) still passes.
    files.remove("readyz");
    let unready = eventually("the pod to turn unready", Duration::from_secs(10), || {
        pod().filter(|p| pod_condition(p, "Ready") == "False")
    });
    let ready_condition = unready["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready_condition["reason"], "ContainersNotReady");
    assert_eq!(container(&unready)["restartCount"], 0, "{unready:#}");
    assert_eq!(
        container(&unready)["state"]["running"],
        container(&running)["state"]["running"],
        "the container kept running"
    );
    eventually(
        "the Deployment to count no ready replica",
        Duration::from_secs(10),
        || {
            let deployment = get(&ns, "deployment/web");
            (deployment["status"]["readyReplicas"].as_u64().unwrap_or(0) == 0).then_some(())
        },
    );
}

#[test]
fn a_failing_liveness_probe_restarts_the_container() {
    let ns = namespace("probes-live");
    let files = ProbeFiles::new(&ns);
    let container = probed_container(
        "web",
        free_port(),
        json!({
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                              "periodSeconds": 1, "failureThreshold": 2,
                              "terminationGracePeriodSeconds": 1},
        }),
    );
    apply(
        &ns,
        &pod_manifest(
            "live",
            json!({"containers": [container], "volumes": [files.volume()],
                   "terminationGracePeriodSeconds": 1}),
        ),
    );
    // Two failures, SIGTERM (ignored by PID 1), SIGKILL a second later: exit code 137.
    let restarted = eventually("a restart", Duration::from_secs(30), || {
        let pod = get(&ns, "pod/live");
        (pod["status"]["containerStatuses"][0]["restartCount"].as_u64() >= Some(1)).then_some(pod)
    });
    let status = &restarted["status"]["containerStatuses"][0];
    assert_eq!(
        status["lastState"]["terminated"]["exitCode"], 137,
        "{restarted:#}"
    );

    files.touch("healthz");
    let healthy = eventually(
        "the container to run again",
        Duration::from_secs(30),
        || {
            let pod = get(&ns, "pod/live");
            let status = &pod["status"]["containerStatuses"][0];
            status["state"]["running"]
                .is_object()
                .then(|| status["restartCount"].clone())
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    let pod = get(&ns, "pod/live");
    let status = &pod["status"]["containerStatuses"][0];
    assert_eq!(status["restartCount"], healthy, "{pod:#}");
    assert!(status["state"]["running"].is_object(), "{pod:#}");
    // Without a readiness probe, running (and started) is ready.
    assert_eq!(status["ready"], true);
    assert_eq!(pod_condition(&pod, "Ready"), "True");
}

#[test]
fn a_sidecars_startup_probe_holds_back_the_main_container() {
    let ns = namespace("probes-sidecar");
    let files = ProbeFiles::new(&ns);
    let mut sidecar = probed_container(
        "server",
        free_port(),
        json!({"startupProbe": {"httpGet": {"path": "/started", "port": "http"},
                                "periodSeconds": 1, "failureThreshold": 120}}),
    );
    sidecar["restartPolicy"] = json!("Always");
    apply(
        &ns,
        &pod_manifest(
            "layered",
            json!({
                "initContainers": [sidecar],
                "containers": [{"name": "main", "image": "busybox",
                                "command": ["sh", "-c", "echo main ran; sleep 30"]}],
                "volumes": [files.volume()],
                "terminationGracePeriodSeconds": 1,
            }),
        ),
    );
    eventually("the sidecar to run", Duration::from_secs(30), || {
        let pod = get(&ns, "pod/layered");
        pod["status"]["initContainerStatuses"][0]["state"]["running"]
            .is_object()
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(1500));
    let pod = get(&ns, "pod/layered");
    assert_eq!(pod_condition(&pod, "Initialized"), "False", "{pod:#}");
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"], "PodInitializing",
        "{pod:#}"
    );
    files.touch("started");
    let pod = eventually("the main container to run", Duration::from_secs(10), || {
        let pod = get(&ns, "pod/layered");
        pod["status"]["containerStatuses"][0]["state"]["running"]
            .is_object()
            .then_some(pod)
    });
    assert_eq!(pod_condition(&pod, "Initialized"), "True", "{pod:#}");
    assert_eq!(pod["status"]["initContainerStatuses"][0]["started"], true);
}

#[test]
fn probes_this_kubelet_cannot_run_keep_the_container_from_starting() {
    let ns = namespace("probes-exec");
    apply(
        &ns,
        &pod_manifest(
            "exec",
            json!({"containers": [{
                "name": "main", "image": "busybox", "command": ["sleep", "30"],
                "readinessProbe": {"exec": {"command": ["true"]}},
            }]}),
        ),
    );
    let waiting = eventually("a waiting reason", Duration::from_secs(30), || {
        let pod = get(&ns, "pod/exec");
        let waiting = pod["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        (waiting["reason"] == "CreateContainerConfigError").then_some(waiting)
    });
    let message = waiting["message"].as_str().unwrap();
    assert!(
        message.contains("exec probes are not supported by devcluster-kubelet"),
        "{message}"
    );
}
