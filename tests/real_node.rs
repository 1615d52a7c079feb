//! The real-node tier: the operator as users run it, on the upstream kubelet with containerd
//! and runc (`cluster up --node real`), from the images `cargo xtask images` builds out of the
//! Dockerfiles. `helm install` of the chart with those images; the seed's Getting Started, both
//! flows, from the unchanged example manifests in a namespace that enforces the `restricted`
//! Pod Security Standard; what the real kubelet wrote (logs, termination message) and what the
//! kernel says of the runner's confinement; a dev-database sidecar that stops with the runner.
//!
//! Ignored unless asked for: it replaces the shared cluster of the test run (which has the
//! process-kubelet). `cargo xtask test` runs it after the other tests
//! (`cargo test --test real_node -- --ignored`) where the machine can run containers, and
//! counts it as skipped where it cannot.

mod support;

use std::time::{Duration, Instant};

use devcluster::cluster::{self, Cluster, NodeKind, TestNamespace, real_node};
use devcluster::db::{Engine, TestDatabase};
use devcluster::images::{self, workspace};
use devcluster::operator;
use serde_json::{Value, json};
use support::repo_path;

const RELEASE: &str = "atlas-operator";
const HELM_LIMIT: Duration = Duration::from_secs(200);
const SEED_VERSION: &str = "20230316085611";

fn kubectl(cluster: &Cluster, args: &[&str]) -> String {
    cluster
        .kubectl_output(args)
        .unwrap_or_else(|err| panic!("kubectl {}: {err}", args.join(" ")))
}

fn get(ns: &TestNamespace, what: &str) -> Value {
    serde_json::from_str(&kubectl(
        ns.cluster(),
        &["-n", &ns.name, "get", what, "-o", "json"],
    ))
    .unwrap()
}

fn ready_condition(object: &Value) -> Option<&Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
}

fn reconciling_condition(object: &Value) -> Option<&Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Reconciling")
}

/// A taint on the real node for as long as it lives.
struct Taint<'a> {
    cluster: &'a Cluster,
    key_effect: String,
}

impl<'a> Taint<'a> {
    /// `taint`: `key=value:Effect`.
    fn new(cluster: &'a Cluster, taint: &str) -> Taint<'a> {
        kubectl(cluster, &["taint", "node", real_node::NODE_NAME, taint]);
        let (key, rest) = taint.split_once('=').expect("key=value:Effect");
        let effect = rest.split_once(':').expect("key=value:Effect").1;
        Taint {
            cluster,
            key_effect: format!("{key}:{effect}-"),
        }
    }
}

impl Drop for Taint<'_> {
    fn drop(&mut self) {
        let _ =
            self.cluster
                .kubectl_output(&["taint", "node", real_node::NODE_NAME, &self.key_effect]);
    }
}

/// Polls `what` until `done` holds, for at most `limit`; panics with the operator's log.
fn wait_for(
    ns: &TestNamespace,
    what: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let object = get(ns, what);
        if done(&object) {
            return object;
        }
        if Instant::now() > deadline {
            let logs = ns
                .cluster()
                .kubectl_output(&[
                    "-n",
                    operator::NAMESPACE,
                    "logs",
                    &format!("deployment/{RELEASE}"),
                ])
                .unwrap_or_default();
            panic!(
                "{what} not done within {}s: {}\nthe operator's log:\n{logs}",
                limit.as_secs(),
                object["status"]
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn is_ready(object: &Value) -> bool {
    ready_condition(object).is_some_and(|c| c["status"] == "True")
        && object["status"]["observedGeneration"] == object["metadata"]["generation"]
}

/// `helm` on the real cluster, in the operator's namespace, with `values`.
fn helm(cluster: &Cluster, args: &[&str], values: &Value) -> Result<String, String> {
    let values_file =
        std::env::temp_dir().join(format!("real-node-values-{}.json", std::process::id()));
    std::fs::write(&values_file, values.to_string()).unwrap();
    let helm = devcluster::tools::path("helm").expect("`cargo xtask tools` builds helm");
    let mut command = std::process::Command::new(helm);
    command
        .args(args)
        .arg(format!("--kubeconfig={}", cluster.kubeconfig().display()))
        .args(["--namespace", operator::NAMESPACE, "--create-namespace"])
        .arg("--values")
        .arg(&values_file)
        .env("KUBECACHEDIR", cluster.dir.join("kubectl-cache"));
    let result = devcluster::cmd::output(&mut command, HELM_LIMIT).map_err(|e| e.to_string());
    let _ = std::fs::remove_file(values_file);
    result
}

/// A namespace that refuses any pod short of the `restricted` Pod Security Standard.
fn restricted_namespace(cluster: &Cluster, hint: &str) -> TestNamespace {
    let ns = cluster.namespace(hint).unwrap();
    kubectl(
        cluster,
        &[
            "label",
            "namespace",
            &ns.name,
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/enforce-version=latest",
        ],
    );
    ns
}

/// A database of the test's own, its URL as pods reach it (the host's loopback listener at the
/// bridge's address), in the Secret the seed's manifests name.
fn database(ns: &TestNamespace, engine: Engine, secret: &str) -> TestDatabase {
    let db = TestDatabase::create(engine, &ns.name.replace('-', "_")).unwrap();
    let url = db
        .url
        .replace("127.0.0.1", &real_node::POD_GATEWAY.to_string());
    kubectl(
        ns.cluster(),
        &[
            "-n",
            &ns.name,
            "create",
            "secret",
            "generic",
            secret,
            &format!("--from-literal=url={url}"),
        ],
    );
    db
}

fn apply_example(ns: &TestNamespace, file: &str) {
    let path = repo_path(file);
    kubectl(
        ns.cluster(),
        &["-n", &ns.name, "apply", "-f", path.to_str().unwrap()],
    );
}

/// The one Job in the namespace and its one pod.
/// The newest Job once it has finished (Ready comes from the runner's result, so the Job
/// controller may mark the Job complete a moment later), and its pod.
fn job_and_pod(ns: &TestNamespace) -> (Value, Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = loop {
        let jobs = get(ns, "jobs");
        let job = jobs["items"]
            .as_array()
            .unwrap()
            .last()
            .expect("a Job")
            .clone();
        let finished = job["status"]["conditions"].as_array().is_some_and(|all| {
            all.iter().any(|c| {
                (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True"
            })
        });
        if finished {
            break job;
        }
        assert!(Instant::now() < deadline, "the Job never finished: {job}");
        std::thread::sleep(Duration::from_millis(250));
    };
    let name = job["metadata"]["name"].as_str().unwrap();
    let pods = get(ns, "pods");
    let pod = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|pod| pod["metadata"]["labels"]["job-name"] == name)
        .expect("the Job's pod")
        .clone();
    (job, pod)
}

fn container_status<'a>(pod: &'a Value, field: &str, name: &str) -> &'a Value {
    pod["status"][field]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in {field}: {}", pod["status"]))
}

fn seconds(timestamp: &Value) -> i64 {
    timestamp
        .as_str()
        .unwrap_or_default()
        .parse::<jiff::Timestamp>()
        .map(|t| t.as_second())
        .unwrap_or_else(|err| panic!("{timestamp}: {err}"))
}

/// Returns once the Lease names the newest operator pod (after a rollout), and how long that took.
fn wait_for_new_leader(cluster: &Cluster) -> Duration {
    let started = Instant::now();
    loop {
        let pods: Value = serde_json::from_str(&kubectl(
            cluster,
            &["-n", operator::NAMESPACE, "get", "pods", "-o", "json"],
        ))
        .unwrap();
        let newest = pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .max_by_key(|pod| seconds(&pod["metadata"]["creationTimestamp"]))
            .map(|pod| pod["metadata"]["name"].clone());
        let lease: Value = serde_json::from_str(&kubectl(
            cluster,
            &[
                "-n",
                operator::NAMESPACE,
                "get",
                "lease",
                RELEASE,
                "-o",
                "json",
            ],
        ))
        .unwrap();
        if newest.is_some_and(|name| lease["spec"]["holderIdentity"] == name) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the new operator pod never took the Lease: {}",
            lease["spec"]
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
#[ignore = "replaces the shared cluster with a real node: cargo xtask test runs it alone"]
fn the_chart_and_the_seed_flows_run_in_real_containers() {
    if let Err(reason) = real_node::can_run_containers() {
        eprintln!("skipped: {reason}");
        return;
    }
    let started = Instant::now();
    let cluster = cluster::up_with(NodeKind::Real).expect("the real node");
    eprintln!("real node Ready in {:.1}s", started.elapsed().as_secs_f64());
    let built = Instant::now();
    let images = images::build_all().expect("building the images");
    let dev_image = |repository: &str| {
        images
            .iter()
            .map(|image| image.name.clone())
            .find(|name| name.starts_with(&format!("{}/{repository}:", images::LOCAL_REGISTRY)))
            .unwrap_or_else(|| panic!("no {repository} image was built"))
    };
    real_node::import(&cluster, &images).expect("importing the images");
    eprintln!(
        "images built and imported in {:.1}s",
        built.elapsed().as_secs_f64()
    );

    // The chart as users install it, but for the images' names.
    let values = json!({
        "image": {"repository": workspace::OPERATOR_REPOSITORY, "tag": workspace::TAG,
                  "pullPolicy": "Never"},
        "runner": {"image": {"repository": workspace::RUNNER_REPOSITORY, "tag": workspace::TAG,
                             "pullPolicy": "Never"}},
        // The dev databases Debian's servers make here, for MySQL too: MariaDB answers the
        // `mysql` driver's sidecar environment as well.
        "devDatabase": {"images": {"postgres": dev_image("postgres"),
                                   "mysql": dev_image("mariadb"),
                                   "mariadb": dev_image("mariadb")}},
    });
    let installing = Instant::now();
    let chart = repo_path("charts/atlas-operator");
    if let Err(err) = helm(
        &cluster,
        &[
            "upgrade",
            "--install",
            RELEASE,
            chart.to_str().unwrap(),
            "--wait",
            "--timeout",
            "180s",
        ],
        &values,
    ) {
        let pods = cluster
            .kubectl_output(&["-n", operator::NAMESPACE, "get", "pods", "-o", "yaml"])
            .unwrap_or_default();
        panic!("helm install: {err}\n{pods}");
    }
    eprintln!(
        "helm install --wait: Available in {:.1}s",
        installing.elapsed().as_secs_f64()
    );
    // A cluster kept from an earlier run had a release: its old pod may still lead a while.
    wait_for_new_leader(&cluster);
    let operator_pods: Value = serde_json::from_str(&kubectl(
        &cluster,
        &["-n", operator::NAMESPACE, "get", "pods", "-o", "json"],
    ))
    .unwrap();
    let operator_pod = &operator_pods["items"][0];
    assert_eq!(operator_pod["spec"]["nodeName"], real_node::NODE_NAME);
    assert!(
        container_status(operator_pod, "containerStatuses", "operator")["imageID"]
            .as_str()
            .is_some_and(|id| id.starts_with("sha256:")),
        "{}",
        operator_pod["status"]
    );

    // The seed's PostgreSQL flow: a migration directory in a ConfigMap.
    let ns = restricted_namespace(&cluster, "real-pg");
    let _db = database(&ns, Engine::Postgres, "postgres-credentials");
    let applied = Instant::now();
    apply_example(&ns, "examples/postgres-migration/migrationdir.yaml");
    apply_example(&ns, "examples/postgres-migration/atlasmigration.yaml");
    let migration = wait_for(
        &ns,
        "atlasmigration/atlasmigration-sample",
        Duration::from_secs(120),
        is_ready,
    );
    eprintln!(
        "seed migration Ready {:.1}s after apply",
        applied.elapsed().as_secs_f64()
    );
    assert_eq!(migration["status"]["lastAppliedVersion"], SEED_VERSION);
    let (job, pod) = job_and_pod(&ns);
    assert_eq!(pod["spec"]["nodeName"], real_node::NODE_NAME);
    let runner = container_status(&pod, "containerStatuses", "runner");
    let terminated = &runner["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 0, "{runner}");
    // What the real kubelet wrote as the termination message is what the operator read.
    let result = contract::RunResult::decode(terminated["message"].as_str().unwrap())
        .expect("the termination message is the runner's result");
    assert_eq!(result.current_version.as_deref(), Some(SEED_VERSION));
    assert_eq!(
        ready_condition(&migration).unwrap()["message"],
        result.message
    );
    let job_name = job["metadata"]["name"].as_str().unwrap();
    let logs = kubectl(
        &cluster,
        &["-n", &ns.name, "logs", &format!("job/{job_name}")],
    );
    assert!(
        logs.contains("-> create table users ("),
        "the applied statements:\n{logs}"
    );
    // The confinement the kernel reports inside the runner's container, not what the spec asked.
    assert!(
        logs.contains(
            "confinement: uid 65532 gid 65532, capabilities none, no_new_privs on, \
             seccomp filter, root filesystem read-only"
        ),
        "{logs}"
    );
    let pod_started = seconds(&pod["status"]["startTime"]);
    let runner_ended = seconds(&terminated["finishedAt"]);
    eprintln!("pod start → runner exit: {} s", runner_ended - pod_started);

    // The seed's MySQL flow: a desired schema, planned against a dev database that runs as a
    // native sidecar of the Job's pod.
    let ns = restricted_namespace(&cluster, "real-mysql");
    let _db = database(&ns, Engine::MariaDb, "mysql-credentials");
    let applied = Instant::now();
    apply_example(&ns, "examples/mysql-schema/schema.yaml");
    wait_for(
        &ns,
        "atlasschema/atlasschema-mysql",
        Duration::from_secs(180),
        is_ready,
    );
    eprintln!(
        "seed schema Ready {:.1}s after apply",
        applied.elapsed().as_secs_f64()
    );
    let (job, pod) = job_and_pod(&ns);
    let dev = container_status(&pod, "initContainerStatuses", "dev-db");
    assert!(
        dev["state"]["terminated"].is_object(),
        "the dev database stopped with the runner: {dev}"
    );
    let runner_ended = seconds(
        &container_status(&pod, "containerStatuses", "runner")["state"]["terminated"]["finishedAt"],
    );
    let completed = seconds(&job["status"]["completionTime"]);
    assert!(
        completed - runner_ended <= 10,
        "the Job completed {} s after its runner exited",
        completed - runner_ended
    );

    // A node pool of its own: with the node tainted, a Job without the toleration waits for a
    // node (said in the status in the scheduler's words) and lands once spec.jobPod tolerates
    // the taint. The taint goes when this part ends, passed or not.
    let taint = Taint::new(&cluster, "atlas-test/pool=db:NoSchedule");
    let ns = restricted_namespace(&cluster, "real-taint");
    let _db = database(&ns, Engine::Postgres, "postgres-credentials");
    apply_example(&ns, "examples/postgres-migration/migrationdir.yaml");
    apply_example(&ns, "examples/postgres-migration/atlasmigration.yaml");
    let waiting = wait_for(
        &ns,
        "atlasmigration/atlasmigration-sample",
        Duration::from_secs(60),
        |m| {
            reconciling_condition(m).is_some_and(|c| {
                c["status"] == "True"
                    && c["message"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("pod is waiting for a node")
            })
        },
    );
    assert_eq!(ready_condition(&waiting).unwrap()["message"], "Reconciling");
    let message = reconciling_condition(&waiting).unwrap()["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("untolerated taint"), "{message}");
    let pods = get(&ns, "pods");
    assert!(
        pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|pod| pod["spec"]["nodeName"].is_null()),
        "{pods}"
    );
    kubectl(
        &cluster,
        &[
            "-n",
            &ns.name,
            "patch",
            "atlasmigration/atlasmigration-sample",
            "--type=merge",
            "-p",
            r#"{"spec":{"jobPod":{"tolerations":[{"key":"atlas-test/pool","operator":"Equal","value":"db","effect":"NoSchedule"}]}}}"#,
        ],
    );
    let tolerated = Instant::now();
    wait_for(
        &ns,
        "atlasmigration/atlasmigration-sample",
        Duration::from_secs(120),
        is_ready,
    );
    eprintln!(
        "with the toleration Ready {:.1}s after the patch",
        tolerated.elapsed().as_secs_f64()
    );
    let pods = get(&ns, "pods");
    let tolerating = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|pod| {
            pod["spec"]["tolerations"]
                .as_array()
                .is_some_and(|all| all.iter().any(|t| t["key"] == "atlas-test/pool"))
        })
        .unwrap_or_else(|| panic!("no pod with the toleration: {pods}"));
    assert_eq!(tolerating["spec"]["nodeName"], real_node::NODE_NAME);
    drop(taint);

    // A Job that exceeds its memory limit: the kernel's OOM killer, the runtime's `OOMKilled`,
    // and a Ready=False that says so. The limit is below the 12.5 MiB Atlas peaks at for the
    // seed migration (measured in a memory cgroup of its own).
    let mut tight = values.clone();
    tight["jobs"] = json!({"resources": {"requests": {"memory": "10Mi"},
                                         "limits": {"memory": "10Mi"}}});
    helm(
        &cluster,
        &[
            "upgrade",
            RELEASE,
            chart.to_str().unwrap(),
            "--wait",
            "--timeout",
            "180s",
        ],
        &tight,
    )
    .unwrap_or_else(|err| panic!("helm upgrade: {err}"));
    // Until the new pod leads, the old one (with the old limit) may still make the Job.
    let took_over = wait_for_new_leader(&cluster);
    eprintln!(
        "the upgraded operator leads {:.1}s after helm returned",
        took_over.as_secs_f64()
    );
    let ns = restricted_namespace(&cluster, "real-oom");
    let _db = database(&ns, Engine::Postgres, "postgres-credentials");
    let applied = Instant::now();
    apply_example(&ns, "examples/postgres-migration/migrationdir.yaml");
    apply_example(&ns, "examples/postgres-migration/atlasmigration.yaml");
    let failed = wait_for(
        &ns,
        "atlasmigration/atlasmigration-sample",
        Duration::from_secs(120),
        |m| {
            ready_condition(m).is_some_and(|c| {
                c["status"] == "False"
                    && c["reason"] == "Migrating"
                    && c["message"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("ran out of memory")
            })
        },
    );
    eprintln!(
        "out of memory reported {:.1}s after apply: {}",
        applied.elapsed().as_secs_f64(),
        ready_condition(&failed).unwrap()["message"]
    );
    let (_, pod) = job_and_pod(&ns);
    assert_eq!(
        container_status(&pod, "containerStatuses", "runner")["state"]["terminated"]["reason"],
        "OOMKilled"
    );
}
