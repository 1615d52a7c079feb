//! The chart as users install it: `helm install` on the local cluster, in both RBAC modes. The
//! chart's Deployment runs as a pod on the process-kubelet (its image maps to the operator this
//! test run built), acts with exactly the chart's RBAC through its projected service-account
//! token, turns Available by its probes, and the seed AtlasMigration then reaches Ready through
//! it. Cluster-wide, `helm upgrade` rolls a changed value out and `helm uninstall` removes the
//! release but not the CRDs; namespace-scoped, the release makes Roles only and leaves a resource
//! in an unlisted namespace alone. In neither mode may the operator read a Secret. The chart's
//! admission policies (on by default, so every release here runs with them): `kubectl apply` of
//! a password in plain text warns without showing it, and the operator's service account may
//! create only Jobs of the shape the operator renders, while the admin may create any.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use atlas_operator::api::AtlasSchema;
use atlas_operator::reconcile::build::{self, JobSettings, Owner};
use atlas_operator::reconcile::dereference::ConfigMaps;
use contract::Kind;
use devcluster::cluster::{Cluster, TestNamespace};
use devcluster::db::{Engine, TestDatabase};
use devcluster::operator;
use devcluster::seed;
use serde_json::{Value, json};
use support::e2e::{
    SEED_MIGRATION, apply_json, cluster, condition, eventually, get, hashed, is_ready, kubectl,
    migration_dir, ready, secret, seed_files, seed_migration,
};
use support::{repo_path, yaml_documents};

/// Any image repository ending in `atlas-operator` runs the built operator on the kubelet.
const IMAGE_REPOSITORY: &str = "ghcr.io/atlas-operator/atlas-operator";
/// What the cluster-wide release selects its resources by. Without a selector, an operator
/// watching every namespace would reconcile every other test's resources on the shared cluster.
const SELECTOR_LABEL: &str = "helm-install.test/release";
/// helm is told `--timeout 120s`; the process gets a little longer to report that.
const HELM_LIMIT: Duration = Duration::from_secs(150);
const SEED_VERSION: &str = "20230316085611";

/// A port no one listens on: pods share the host's network with every other test's operator.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The objects `kubectl get … -o name` lists, one `kind.group/name` each.
fn names(args: &[&str]) -> BTreeSet<String> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "name", "--ignore-not-found"]);
    kubectl(&all)
        .unwrap_or_else(|err| panic!("kubectl {}: {err}", all.join(" ")))
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(String::from)
        .collect()
}

/// `kubectl auth can-i` as `user`; it answers on stdout and exits 1 for `no`.
fn can_i(cluster: &Cluster, user: &str, verb: &str, resource: &str, namespace: &str) -> bool {
    let output = cluster
        .kubectl()
        .args([
            "auth", "can-i", verb, resource, "--as", user, "-n", namespace,
        ])
        .output()
        .expect("kubectl starts");
    match String::from_utf8_lossy(&output.stdout).trim() {
        "yes" => true,
        "no" => false,
        other => panic!(
            "kubectl auth can-i {verb} {resource} -n {namespace}: {other:?} {}",
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// Every request `user` made with its own credentials (not impersonated by the admin's
/// `can-i`), from the API server's audit log.
fn requests_of(cluster: &Cluster, user: &str) -> Vec<Value> {
    let audit = std::fs::read_to_string(cluster.audit_log()).unwrap();
    audit
        .lines()
        .filter(|line| line.contains(user))
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["user"]["username"] == user)
        .collect()
}

/// The literal value of the operator container's variable `name`.
fn env_value(pod: &Value, name: &str) -> Option<String> {
    pod["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|var| var["name"] == name)?["value"]
        .as_str()
        .map(String::from)
}

/// The chart's values for this cluster: the operator's image, CRDs left to `kubectl apply`
/// (helm cannot adopt the ones the tests already applied), one replica on its own port. The
/// Lease keeps its default name: it lives in the release's own namespace.
fn values(port: u16, more: Value) -> Value {
    let mut values = json!({
        "crds": {"create": false},
        "image": {"repository": IMAGE_REPOSITORY, "tag": "dev"},
        "replicaCount": 1,
        "metrics": {"port": port},
        "extraEnvs": [{"name": "RUST_LOG", "value": "info,atlas_operator=debug"}],
    });
    for (key, value) in more.as_object().unwrap() {
        values[key] = value.clone();
    }
    values
}

/// A release of the chart on the local cluster, named after its own namespace (so its
/// cluster-scoped objects are its own too); uninstalled when dropped, so a failing test leaves no
/// ClusterRole or running operator behind.
struct Release {
    cluster: Cluster,
    name: String,
    namespace: String,
    installed: bool,
}

impl Release {
    fn new(ns: &TestNamespace) -> Release {
        Release {
            cluster: ns.cluster().clone(),
            name: ns.name.clone(),
            namespace: ns.name.clone(),
            installed: false,
        }
    }

    /// The chart's `fullname`: the release's name does not contain the chart's.
    fn fullname(&self) -> String {
        format!("{}-atlas-operator", self.name)
    }

    fn service_account(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace,
            self.fullname()
        )
    }

    fn instance_label(&self) -> String {
        format!("app.kubernetes.io/instance={}", self.name)
    }

    fn helm(&self, args: &[&str], values: Option<&Value>) -> Result<String, String> {
        static FILES: AtomicU64 = AtomicU64::new(0);
        let helm = devcluster::tools::path("helm")
            .unwrap_or_else(|err| panic!("{err} (`cargo xtask tools` builds helm)"));
        let mut command = Command::new(helm);
        command
            .args(args)
            .arg(format!(
                "--kubeconfig={}",
                self.cluster.kubeconfig().display()
            ))
            .args(["--namespace", &self.namespace])
            // client-go's discovery cache, kept with the cluster's as kubectl's is: a cluster
            // started later on the same port must not read this one's.
            .env("KUBECACHEDIR", self.cluster.dir.join("kubectl-cache"));
        let file = values.map(|values| {
            let path = std::env::temp_dir().join(format!(
                "helm-values-{}-{}.json",
                self.name,
                FILES.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&path, values.to_string()).unwrap();
            command.arg("--values").arg(&path);
            path
        });
        let result = devcluster::cmd::output(&mut command, HELM_LIMIT).map_err(|e| e.to_string());
        if let Some(path) = file {
            let _ = std::fs::remove_file(path);
        }
        result
    }

    /// `helm install --wait`: returns once the Deployment is Available by its probes.
    fn install(&mut self, values: &Value) -> Duration {
        self.installed = true;
        self.deploy("install", values)
    }

    /// `helm upgrade --wait`: returns once the new ReplicaSet's pod is Available.
    fn upgrade(&self, values: &Value) -> Duration {
        self.deploy("upgrade", values)
    }

    fn deploy(&self, verb: &str, values: &Value) -> Duration {
        let chart = repo_path("charts/atlas-operator");
        let started = Instant::now();
        let args = [verb, &self.name, chart.to_str().unwrap()];
        let wait = ["--wait", "--timeout", "120s"];
        if let Err(err) = self.helm(&[&args[..], &wait].concat(), Some(values)) {
            panic!("helm {verb}: {err}\n{}", self.describe());
        }
        started.elapsed()
    }

    fn uninstall(&mut self) -> Duration {
        let started = Instant::now();
        let result = self.helm(
            &["uninstall", &self.name, "--wait", "--timeout", "120s"],
            None,
        );
        self.installed = false;
        result.unwrap_or_else(|err| panic!("helm uninstall: {err}"));
        started.elapsed()
    }

    fn deployment(&self) -> Option<Value> {
        let text = self
            .cluster
            .kubectl_output(&[
                "-n",
                &self.namespace,
                "get",
                "deployment",
                &self.fullname(),
                "-o",
                "json",
            ])
            .ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The operator's pods (the release namespace holds nothing else that runs).
    fn pods(&self) -> Vec<Value> {
        let text = kubectl(&[
            "-n",
            &self.namespace,
            "get",
            "pods",
            "-l",
            &self.instance_label(),
            "-o",
            "json",
        ])
        .unwrap_or_else(|err| panic!("listing the operator's pods: {err}"));
        let list: Value = serde_json::from_str(&text).unwrap();
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// The one operator pod, once it is the only one and Ready.
    fn ready_pod(&self) -> Value {
        eventually(
            "one Ready operator pod",
            Duration::from_secs(60),
            || match self.pods().as_slice() {
                [pod] if condition(pod, "Ready").is_some_and(|c| c["status"] == "True") => {
                    Some(pod.clone())
                }
                _ => None,
            },
            || self.describe(),
        )
    }

    fn logs(&self, pod: &str) -> String {
        self.cluster
            .kubectl_output(&["-n", &self.namespace, "logs", pod])
            .unwrap_or_else(|err| format!("(no log: {err})"))
    }

    fn lease_holder(&self) -> String {
        self.cluster
            .kubectl_output(&[
                "-n",
                &self.namespace,
                "get",
                "lease",
                &self.fullname(),
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ])
            .unwrap_or_default()
    }

    /// What a failure message needs: the operator's pods and their logs.
    fn describe(&self) -> String {
        let mut text = String::new();
        for pod in self.pods() {
            let name = pod["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            text.push_str(&format!(
                "pod {name}: {}\nlog:\n{}\n",
                serde_json::to_string_pretty(&pod["status"]).unwrap(),
                self.logs(&name)
            ));
        }
        if text.is_empty() {
            text.push_str("(no operator pod)");
        }
        text
    }

    /// Checks the pod helm waited for: the built operator, Ready by its probes, leading through
    /// the release's Lease. Returns its name.
    fn check_running(&self) -> String {
        let deployment = self.deployment().expect("the release's Deployment");
        assert_eq!(
            condition(&deployment, "Available").map(|c| c["status"].clone()),
            Some(json!("True")),
            "{deployment:#}"
        );
        let pod = self.ready_pod();
        let name = pod["metadata"]["name"].as_str().unwrap().to_string();
        let status = &pod["status"]["containerStatuses"][0];
        assert_eq!(status["started"], true, "{pod:#}");
        assert_eq!(
            status["imageID"], "devcluster:///usr/local/bin/atlas-operator",
            "{pod:#}"
        );
        assert_eq!(
            pod["spec"]["serviceAccountName"],
            self.fullname(),
            "{pod:#}"
        );
        // A standby looks at the Lease again only when the holder it saw would expire (the
        // Lease lasts 30 s), even when that holder released it on its way out.
        eventually(
            "the operator to hold the release's Lease",
            Duration::from_secs(60),
            || (self.lease_holder() == name).then_some(()),
            || format!("holder {:?}\n{}", self.lease_holder(), self.describe()),
        );
        name
    }

    /// Its service account may run Jobs in `watched` and read, change or delete no Secret
    /// there, nor in its own namespace (it may only create one: a Job's credentials Secret).
    fn check_rights(&self, watched: &[&str]) {
        let user = self.service_account();
        for namespace in watched.iter().copied().chain([self.namespace.as_str()]) {
            for verb in ["get", "list", "watch", "update", "patch", "delete"] {
                assert!(
                    !can_i(&self.cluster, &user, verb, "secrets", namespace),
                    "{user} can {verb} secrets in {namespace}"
                );
            }
        }
        for namespace in watched {
            assert!(
                can_i(&self.cluster, &user, "create", "jobs", namespace),
                "{user} cannot create jobs in {namespace}: the Secret checks would mean nothing"
            );
        }
    }

    /// The operator's own requests, from the audit log: made with its pods' bound tokens (the
    /// in-cluster config of the chart's pod), creating a Job in `job_namespace`, and all allowed
    /// (the chart's rules are enough for what it does).
    fn checked_requests(&self, job_namespace: &str) -> Vec<Value> {
        let requests = requests_of(&self.cluster, &self.service_account());
        assert!(
            requests.iter().any(|e| e["objectRef"]["resource"] == "jobs"
                && e["objectRef"]["namespace"] == job_namespace
                && e["verb"] == "create"
                && e["responseStatus"]["code"] == 201),
            "the release's service account created no Job in {job_namespace}"
        );
        for event in &requests {
            let pod = &event["user"]["extra"]["authentication.kubernetes.io/pod-name"][0];
            assert!(
                pod.as_str()
                    .is_some_and(|pod| pod.starts_with(&self.fullname())),
                "a request without the token of a release's pod: {event}"
            );
            assert_ne!(
                event["responseStatus"]["code"], 403,
                "a forbidden request: {event}"
            );
        }
        requests
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if self.installed {
            let _ = self.helm(
                &["uninstall", &self.name, "--wait", "--timeout", "60s"],
                None,
            );
        }
    }
}

/// The seed's Secret and ConfigMap in `ns`, for `db`.
fn seed_inputs(ns: &TestNamespace, db: &TestDatabase) {
    secret(ns, "postgres-credentials", json!({"url": db.url}));
    migration_dir(ns, seed_files());
}

/// The seed's AtlasMigration named `name`, with `labels`.
fn migration(name: &str, labels: Value) -> Value {
    let mut migration = seed_migration();
    migration["metadata"] = json!({"name": name, "labels": labels});
    migration
}

fn wait_ready(ns: &TestNamespace, name: &str, release: &Release, version: &str) -> Value {
    let what = format!("atlasmigration/{name}");
    eventually(
        &format!("{what} to be Ready at {version}"),
        Duration::from_secs(120),
        || {
            get(ns, &what).filter(|migration| {
                is_ready(migration) && migration["status"]["lastAppliedVersion"] == version
            })
        },
        || {
            format!(
                "{what}: {:#}\n{}",
                get(ns, &what).unwrap_or_default()["status"],
                release.describe()
            )
        },
    )
}

/// `name` in `ns` was never reconciled: no condition, no Job.
fn assert_left_alone(ns: &TestNamespace, name: &str) {
    let migration = get(ns, &format!("atlasmigration/{name}")).expect("the resource exists");
    assert!(
        migration["status"]["conditions"]
            .as_array()
            .is_none_or(|c| c.is_empty()),
        "{name} in {} was reconciled: {:#}",
        ns.name,
        migration["status"]
    );
    let jobs = names(&[
        "jobs",
        "-n",
        &ns.name,
        "-l",
        &format!("db.atlasgo.io/name={name}"),
    ]);
    assert!(jobs.is_empty(), "Jobs for {name} in {}: {jobs:?}", ns.name);
}

fn users_table_exists(db: &TestDatabase) -> bool {
    let count = db
        .query("select count(*) from information_schema.tables where table_name = 'users'")
        .unwrap();
    count.trim() == "1"
}

#[test]
fn a_cluster_wide_release_applies_the_seed_upgrades_and_uninstalls() {
    let cluster = cluster();
    // The CRDs: the release does not own them (crds.create=false), as on a cluster where
    // another release or `kubectl apply` put them.
    operator::install(&cluster).unwrap_or_else(|err| panic!("installing the CRDs: {err}"));
    let target = cluster.namespace("helm-cw-target").unwrap();
    let release_ns = cluster.namespace("helm-cw").unwrap();
    let db = TestDatabase::create(Engine::Postgres, "helm_cw").unwrap();
    let mut release = Release::new(&release_ns);
    let selector = format!("{SELECTOR_LABEL}={}", release.name);
    let selected = json!({SELECTOR_LABEL: release.name});
    let fullname = release.fullname();

    let took = release.install(&values(free_port(), json!({"labelSelector": [selector]})));
    eprintln!(
        "timing: cluster-wide helm install --wait (Deployment Available) took {:.1}s",
        took.as_secs_f64()
    );
    let first_pod = release.check_running();
    let pod = &release.pods()[0];
    assert_eq!(
        env_value(pod, "WATCH_LABEL_SELECTOR"),
        Some(selector.clone())
    );
    assert_eq!(env_value(pod, "WATCH_NAMESPACES"), None);
    assert_eq!(
        names(&[
            "clusterroles,clusterrolebindings",
            "-l",
            &release.instance_label()
        ]),
        BTreeSet::from([
            format!("clusterrole.rbac.authorization.k8s.io/{fullname}"),
            format!("clusterrolebinding.rbac.authorization.k8s.io/{fullname}"),
        ])
    );
    release.check_rights(&[&target.name]);

    // An unselected resource in the same namespace, applied first: the selector, not timing,
    // keeps the operator off it.
    seed_inputs(&target, &db);
    apply_json(&target.name, &migration("unselected", json!({})));
    let applied = Instant::now();
    apply_json(
        &target.name,
        &migration("atlasmigration-sample", selected.clone()),
    );
    let done = wait_ready(&target, "atlasmigration-sample", &release, SEED_VERSION);
    eprintln!(
        "timing: cluster-wide, the seed AtlasMigration Ready {:.1}s after apply",
        applied.elapsed().as_secs_f64()
    );
    assert_eq!(ready(&done).unwrap()["reason"], "Applied");
    assert!(users_table_exists(&db));
    std::thread::sleep(Duration::from_secs(3));
    assert_left_alone(&target, "unselected");

    // A changed value rolls out. The port changes too: pods share this node's network, so a new
    // pod declaring the old one's port would wait for it to end, while the rolling update (one
    // replica: none may be unavailable) keeps the old one until the new one is Available.
    let port = free_port();
    let took = release.upgrade(&values(
        port,
        json!({"labelSelector": [selector], "logFormat": "json", "concurrency": 2}),
    ));
    eprintln!(
        "timing: helm upgrade --wait (new pod Available) took {:.1}s",
        took.as_secs_f64()
    );
    let upgraded = Instant::now();
    let second_pod = release.check_running();
    eprintln!(
        "timing: the new pod alone and leading {:.1}s after helm upgrade returned",
        upgraded.elapsed().as_secs_f64()
    );
    assert_ne!(second_pod, first_pod, "the upgrade did not roll the pod");
    let pod = &release.pods()[0];
    assert_eq!(env_value(pod, "LOG_FORMAT").as_deref(), Some("json"));
    assert_eq!(env_value(pod, "CONCURRENCY").as_deref(), Some("2"));
    assert_eq!(
        env_value(pod, "METRICS_ADDRESS"),
        Some(format!("0.0.0.0:{port}"))
    );
    let log = release.logs(&second_pod);
    let lines: Vec<Value> = log
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"))
        })
        .collect();
    assert!(
        lines
            .iter()
            .any(|line| line["fields"]["message"] == "leading: starting the controllers"),
        "{log}"
    );

    // The upgraded operator reconciles: a second migration in the directory gets applied.
    let changed = Instant::now();
    migration_dir(
        &target,
        hashed(&[
            (seed::MIGRATION_FILE, seed::MIGRATION_SQL),
            (
                "20230401000000.sql",
                "alter table users add column nickname varchar(255);\n",
            ),
        ]),
    );
    wait_ready(&target, "atlasmigration-sample", &release, "20230401000000");
    eprintln!(
        "timing: after the upgrade, a second migration applied {:.1}s after the ConfigMap changed",
        changed.elapsed().as_secs_f64()
    );
    let column = db
        .query("select count(*) from information_schema.columns where table_name = 'users' and column_name = 'nickname'")
        .unwrap();
    assert_eq!(column.trim(), "1");
    assert_left_alone(&target, "unselected");
    release.checked_requests(&target.name);

    let took = release.uninstall();
    eprintln!(
        "timing: helm uninstall --wait took {:.1}s",
        took.as_secs_f64()
    );
    let mut left = names(&[
        "-n",
        &release.namespace,
        &format!("deployment/{fullname}"),
        &format!("serviceaccount/{fullname}"),
        &format!("service/{fullname}-metrics"),
    ]);
    left.extend(names(&[
        &format!("clusterrole/{fullname}"),
        &format!("clusterrolebinding/{fullname}"),
    ]));
    for policy in ["inline-credentials", "job-shape"] {
        left.extend(names(&[
            &format!("validatingadmissionpolicy/{fullname}-{policy}"),
            &format!("validatingadmissionpolicybinding/{fullname}-{policy}"),
        ]));
    }
    assert!(left.is_empty(), "left after helm uninstall: {left:?}");
    eventually(
        "the operator's pod to be gone",
        Duration::from_secs(30),
        || release.pods().is_empty().then_some(()),
        || release.describe(),
    );
    assert!(!can_i(
        &cluster,
        &release.service_account(),
        "create",
        "jobs",
        &target.name
    ));
    // The CRDs stay, and so does every resource.
    assert_eq!(
        names(&[
            "crd/atlasmigrations.db.atlasgo.io",
            "crd/atlasschemas.db.atlasgo.io"
        ])
        .len(),
        2
    );
    assert!(get(&target, SEED_MIGRATION).is_some_and(|m| is_ready(&m)));
}

#[test]
fn a_namespaced_release_sees_only_its_namespaces() {
    let cluster = cluster();
    operator::install(&cluster).unwrap_or_else(|err| panic!("installing the CRDs: {err}"));
    let a = cluster.namespace("helm-ns-a").unwrap();
    let b = cluster.namespace("helm-ns-b").unwrap();
    let c = cluster.namespace("helm-ns-unlisted").unwrap();
    let release_ns = cluster.namespace("helm-ns").unwrap();
    let db_a = TestDatabase::create(Engine::Postgres, "helm_ns_a").unwrap();
    let db_c = TestDatabase::create(Engine::Postgres, "helm_ns_c").unwrap();
    let mut release = Release::new(&release_ns);
    let fullname = release.fullname();
    let instance = release.instance_label();

    let took = release.install(&values(
        free_port(),
        json!({"watchNamespaces": [a.name, b.name]}),
    ));
    eprintln!(
        "timing: namespaced helm install --wait (Deployment Available) took {:.1}s",
        took.as_secs_f64()
    );
    release.check_running();
    let pod = &release.pods()[0];
    assert_eq!(
        env_value(pod, "WATCH_NAMESPACES"),
        Some(format!("{},{}", a.name, b.name))
    );

    // Roles where the operator works and for its Lease; nothing cluster-wide.
    let rbac = |namespace: &str| names(&["-n", namespace, "roles,rolebindings", "-l", &instance]);
    let role = |name: &str| {
        BTreeSet::from([
            format!("role.rbac.authorization.k8s.io/{name}"),
            format!("rolebinding.rbac.authorization.k8s.io/{name}"),
        ])
    };
    assert_eq!(rbac(&a.name), role(&fullname));
    assert_eq!(rbac(&b.name), role(&fullname));
    assert_eq!(
        rbac(&release.namespace),
        role(&format!("{fullname}-leader-election"))
    );
    assert_eq!(rbac(&c.name), BTreeSet::new());
    assert_eq!(
        names(&["clusterroles,clusterrolebindings", "-l", &instance]),
        BTreeSet::new()
    );
    release.check_rights(&[&a.name, &b.name]);
    let user = release.service_account();
    for (verb, resource) in [("create", "jobs"), ("list", "atlasmigrations")] {
        assert!(
            !can_i(&cluster, &user, verb, resource, &c.name),
            "{user} can {verb} {resource} in the unlisted {}",
            c.name
        );
    }

    // The same resource in the unlisted namespace first, then in a listed one.
    seed_inputs(&c, &db_c);
    apply_json(&c.name, &seed_migration());
    seed_inputs(&a, &db_a);
    let applied = Instant::now();
    apply_json(&a.name, &seed_migration());
    let done = wait_ready(&a, "atlasmigration-sample", &release, SEED_VERSION);
    eprintln!(
        "timing: namespaced, the seed AtlasMigration Ready {:.1}s after apply",
        applied.elapsed().as_secs_f64()
    );
    assert_eq!(ready(&done).unwrap()["reason"], "Applied");
    assert!(users_table_exists(&db_a));
    std::thread::sleep(Duration::from_secs(5));
    assert_left_alone(&c, "atlasmigration-sample");
    assert!(!users_table_exists(&db_c));
    // Not even a look: the operator sent no request about the unlisted namespace.
    let into_c: Vec<Value> = release
        .checked_requests(&a.name)
        .into_iter()
        .filter(|event| event["objectRef"]["namespace"] == c.name.as_str())
        .collect();
    assert!(into_c.is_empty(), "requests into {}: {into_c:#?}", c.name);

    release.uninstall();
    for namespace in [&a.name, &b.name, &release.namespace] {
        assert_eq!(rbac(namespace), BTreeSet::new(), "left in {namespace}");
    }
}

/// A Job `as_user` (impersonated by the admin; `None`: the admin) creates in `namespace`,
/// server-side dry run: every admission check runs, no pod starts. Ok or Err holds kubectl's
/// output.
fn create_job(
    cluster: &Cluster,
    as_user: Option<&str>,
    namespace: &str,
    job: &Value,
) -> Result<String, String> {
    static FILES: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "job-{}-{}.json",
        std::process::id(),
        FILES.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, job.to_string()).unwrap();
    let mut command = cluster.kubectl();
    command.args(["-n", namespace, "create", "--dry-run=server", "-f"]);
    command.arg(&path);
    if let Some(user) = as_user {
        command.args(["--as", user]);
    }
    let result = devcluster::cmd::output(&mut command, Duration::from_secs(30))
        .map_err(|err| err.to_string());
    let _ = std::fs::remove_file(path);
    result
}

/// The operator's Job as a manifest to create again: a new name, without what the API server
/// and the job controller added (the selector and its labels, the owner, the status).
fn resubmittable(job: &Value) -> Value {
    let mut job = job.clone();
    let name = format!("{}-again", job["metadata"]["name"].as_str().unwrap());
    job["metadata"] = json!({"name": name});
    job.as_object_mut().unwrap().remove("status");
    let spec = job["spec"].as_object_mut().unwrap();
    spec.remove("selector");
    spec.remove("manualSelector");
    let labels = job["spec"]["template"]["metadata"]["labels"]
        .as_object_mut()
        .unwrap();
    for label in [
        "controller-uid",
        "batch.kubernetes.io/controller-uid",
        "job-name",
        "batch.kubernetes.io/job-name",
    ] {
        labels.remove(label);
    }
    job
}

#[test]
fn the_admission_policies_warn_of_inline_passwords_and_hold_the_operator_to_its_jobs() {
    let cluster = cluster();
    operator::install(&cluster).unwrap_or_else(|err| panic!("installing the CRDs: {err}"));
    let target = cluster.namespace("helm-vap-target").unwrap();
    let release_ns = cluster.namespace("helm-vap").unwrap();
    let db = TestDatabase::create(Engine::Postgres, "helm_vap").unwrap();
    let mut release = Release::new(&release_ns);
    let fullname = release.fullname();
    let user = release.service_account();
    // Only labelled resources are reconciled: the ones with inline passwords are only applied.
    let selector = format!("{SELECTOR_LABEL}={}", release.name);
    let selected = json!({SELECTOR_LABEL: release.name});
    release.install(&values(
        free_port(),
        json!({"watchNamespaces": [target.name], "labelSelector": [selector]}),
    ));
    release.check_running();
    assert_eq!(
        names(&[
            "validatingadmissionpolicies,validatingadmissionpolicybindings",
            "-l",
            &release.instance_label()
        ]),
        ["inline-credentials", "job-shape"]
            .into_iter()
            .flat_map(|policy| {
                [
                    format!(
                        "validatingadmissionpolicy.admissionregistration.k8s.io/{fullname}-{policy}"
                    ),
                    format!(
                        "validatingadmissionpolicybinding.admissionregistration.k8s.io/{fullname}-{policy}"
                    ),
                ]
            })
            .collect::<BTreeSet<_>>()
    );

    // (1) A password in the resource is applied, with a warning that names the way out and not
    // the password.
    let warning = format!(
        "Warning: Validation failed for ValidatingAdmissionPolicy '{fullname}-inline-credentials'"
    );
    let mut inline = migration("inline-url", json!({}));
    inline["spec"] = json!({"url": "postgres://u:s3cret@db:5432/x",
                            "dir": {"configMapRef": {"name": "migrationdir"}}});
    let said = cluster
        .apply(Some(&target.name), &inline.to_string())
        .unwrap_or_else(|err| panic!("applying {inline}: {err}"));
    assert!(said.contains(&warning), "{said}");
    assert!(said.contains("spec.urlFrom"), "{said}");
    assert!(
        !said.contains("s3cret"),
        "the warning shows the password: {said}"
    );
    assert!(get(&target, "atlasmigration/inline-url").is_some());
    let credentials = json!({"apiVersion": "db.atlasgo.io/v1alpha1", "kind": "AtlasSchema",
        "metadata": {"name": "inline-password"},
        "spec": {"credentials": {"scheme": "postgres", "host": "db", "user": "u",
                                 "password": "hunter2", "database": "x"},
                 "schema": {"sql": "create table t (id int);"}}});
    let said = cluster
        .apply(Some(&target.name), &credentials.to_string())
        .unwrap_or_else(|err| panic!("applying {credentials}: {err}"));
    assert!(
        said.contains(&warning) && said.contains("spec.credentials.passwordFrom"),
        "{said}"
    );
    assert!(
        !said.contains("hunter2"),
        "the warning shows the password: {said}"
    );

    // With urlFrom, no warning; and the operator's own Job passes the Job-shape policy: the
    // seed reaches Ready through it. Its pod is admitted by the Pod Security Standards'
    // `restricted` level too (enforced on pods; `warn` also checks the Jobs' templates).
    kubectl(&[
        "label",
        "namespace",
        &target.name,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    ])
    .unwrap();
    seed_inputs(&target, &db);
    let said = cluster
        .apply(
            Some(&target.name),
            &migration("atlasmigration-sample", selected).to_string(),
        )
        .unwrap();
    assert!(!said.contains("Warning"), "{said}");
    wait_ready(&target, "atlasmigration-sample", &release, SEED_VERSION);
    assert!(users_table_exists(&db));
    release.checked_requests(&target.name);

    // (2) The Job the operator made, created again as its service account, is allowed.
    let jobs: Value = serde_json::from_str(
        &kubectl(&[
            "-n",
            &target.name,
            "get",
            "jobs",
            "-l",
            "db.atlasgo.io/name=atlasmigration-sample",
            "-o",
            "json",
        ])
        .unwrap(),
    )
    .unwrap();
    let job = resubmittable(&jobs["items"][0]);
    let said = create_job(&cluster, Some(&user), &target.name, &job)
        .unwrap_or_else(|err| panic!("the operator's own Job, as {user}: {err}\n{job:#}"));
    assert!(!said.contains("PodSecurity"), "{said}");
    let denied = format!(
        "ValidatingAdmissionPolicy '{fullname}-job-shape' with binding '{fullname}-job-shape' \
         denied request"
    );

    // A Job with a dev database sidecar, as the operator renders it (with the chart's default
    // settings) for an AtlasSchema whose driver is known: allowed, with any tag of the
    // configured image's repository too (spec.devDB may pick the server's version), but not
    // with an image of another repository.
    let mut schema: AtlasSchema = serde_json::from_value(
        yaml_documents(&repo_path("examples/mysql-schema/schema.yaml"))
            .into_iter()
            .find(|doc| doc["kind"] == "AtlasSchema")
            .unwrap(),
    )
    .unwrap();
    schema.spec.target.url_from = None;
    schema.spec.target.url = Some("mysql://root:pass@mysql:3306/myapp".into());
    let plan = support::plan(&schema, &ConfigMaps::new()).unwrap();
    let owner = Owner {
        kind: Kind::Schema,
        namespace: target.name.clone(),
        name: "atlasschema-mysql".into(),
        uid: "0b9f6a52-1c1e-4d4e-9a43-5f0c1f7f0001".into(),
    };
    let mut sidecar =
        serde_json::to_value(build::render(&plan, &owner, &JobSettings::default())).unwrap();
    sidecar["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("ownerReferences");
    assert_eq!(
        sidecar["spec"]["template"]["spec"]["initContainers"][0]["name"],
        "dev-db"
    );
    let said = create_job(&cluster, Some(&user), &target.name, &sidecar)
        .unwrap_or_else(|err| panic!("a Job with a dev-db sidecar, as {user}: {err}"));
    assert!(!said.contains("PodSecurity"), "{said}");
    sidecar["spec"]["template"]["spec"]["initContainers"][0]["image"] = json!("mysql:8.0.36");
    create_job(&cluster, Some(&user), &target.name, &sidecar)
        .unwrap_or_else(|err| panic!("a dev-db sidecar of another tag, as {user}: {err}"));
    sidecar["spec"]["template"]["spec"]["initContainers"][0]["image"] =
        json!("example.com/mysql:8.4");
    let err = create_job(&cluster, Some(&user), &target.name, &sidecar).unwrap_err();
    assert!(
        err.contains(&denied)
            && err.contains("an image of mariadb, mysql, postgres")
            && err.contains("admissionPolicies.jobShape.extraDevDatabaseImages"),
        "{err}"
    );

    // What spec.jobPod and the chart's jobs.* set on a Job's pod is allowed: scheduling and
    // extra labels, annotations and env from a Secret's key.
    let mut scheduled = job.clone();
    let pod = &mut scheduled["spec"]["template"]["spec"];
    pod["tolerations"] = json!([{"key": "pool", "operator": "Equal", "value": "db",
                                 "effect": "NoSchedule"}]);
    pod["nodeSelector"] = json!({"kubernetes.io/os": "linux"});
    pod["containers"][0]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "EXTRA", "valueFrom": {"secretKeyRef":
            {"name": "postgres-credentials", "key": "url"}}}));
    scheduled["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"] =
        json!("true");
    create_job(&cluster, Some(&user), &target.name, &scheduled)
        .unwrap_or_else(|err| panic!("a Job with jobPod settings, as {user}: {err}"));

    // Any other shape is refused for the operator, with the policy's message, and allowed for
    // the admin: the policy binds nobody else.
    type Change = fn(&mut Value);
    let cases: [(&str, Change, &str); 10] = [
        (
            "a hostPath volume",
            |pod| {
                pod["volumes"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "host", "hostPath": {"path": "/"}}))
            },
            "no secret, projected, hostPath or other volume",
        ),
        (
            "a secret volume",
            |pod| {
                pod["volumes"].as_array_mut().unwrap().push(
                    json!({"name": "creds", "secret": {"secretName": "postgres-credentials"}}),
                )
            },
            "no secret, projected, hostPath or other volume",
        ),
        (
            "hostNetwork",
            |pod| pod["hostNetwork"] = json!(true),
            "no host network, PID or IPC namespace",
        ),
        (
            "another image",
            |pod| pod["containers"][0]["image"] = json!("busybox:1"),
            "one container, runner, with the image ghcr.io/atlas-operator/runner:",
        ),
        (
            "envFrom a Secret",
            |pod| {
                pod["containers"][0]["envFrom"] =
                    json!([{"secretRef": {"name": "postgres-credentials"}}])
            },
            "no envFrom",
        ),
        (
            "another command",
            |pod| pod["containers"][0]["command"] = json!(["/bin/sh"]),
            "(no command)",
        ),
        (
            "privilege escalation",
            |pod| pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = json!(true),
            "no privilege escalation",
        ),
        (
            "an added capability",
            |pod| {
                pod["containers"][0]["securityContext"]["capabilities"]["add"] =
                    json!(["NET_ADMIN"])
            },
            "no added capabilities",
        ),
        (
            "the service account's token",
            |pod| pod["automountServiceAccountToken"] = json!(true),
            "without its token",
        ),
        (
            "a service account the values do not list",
            |pod| pod["serviceAccountName"] = json!("someone-else"),
            "admissionPolicies.jobShape.serviceAccounts",
        ),
    ];
    for (what, change, message) in cases {
        let mut bad = job.clone();
        change(&mut bad["spec"]["template"]["spec"]);
        let err = create_job(&cluster, Some(&user), &target.name, &bad)
            .err()
            .unwrap_or_else(|| panic!("a Job with {what} was allowed for {user}"));
        assert!(
            err.contains("(Forbidden)") && err.contains(&denied) && err.contains(message),
            "a Job with {what}, as {user}: {err}"
        );
        create_job(&cluster, None, &target.name, &bad)
            .unwrap_or_else(|err| panic!("a Job with {what}, as the admin: {err}"));
    }
    // A privileged container is refused by this API server itself (--allow-privileged is
    // false), for everyone; for the operator it would be refused by the policy too.
    let mut privileged = job.clone();
    privileged["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] =
        json!(true);
    let err = create_job(&cluster, Some(&user), &target.name, &privileged).unwrap_err();
    assert!(err.contains("privileged"), "{err}");

    release.uninstall();
    assert_eq!(
        names(&[
            "validatingadmissionpolicies,validatingadmissionpolicybindings",
            "-l",
            &release.instance_label()
        ]),
        BTreeSet::new()
    );
}
