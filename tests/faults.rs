//! Faults the operator survives (issue 18 item 6), each on the local cluster with the
//! process-kubelet while migrations apply: the kube-apiserver restarted, the operator cut off
//! from the API server for 30 s, etcd killed and restarted, a Job's pod deleted while it runs
//! (with its 30 s grace period, and with 1 s), the kubelet killed and restarted. Everything is real (etcd, kube-apiserver, the Job
//! controller, the kubelet running the runner, Atlas, PostgreSQL); the faults are
//! `devcluster::cluster::restart` and the TCP relay of `support::relay`.
//!
//! Every migration file inserts a row into a `runs` table and sleeps a second, so a fault lands
//! mid-apply and a file applied twice shows twice. After each fault every resource must end
//! Ready with the last version, each database must hold each file's row exactly once, and its
//! `atlas_schema_revisions` each version once, whole and without error.
//!
//! **The tests run one at a time** (the `SERIAL` lock): a fault hits the whole shared cluster, so
//! two at once would disturb each other's timings and checks. Cargo runs test binaries one after
//! another, so no other binary's tests run during a fault either.
//!
//! The operator runs under a supervisor here, as its pod's `restartPolicy: Always` would: a
//! leader that cannot renew its Lease for 10 s exits 1 by design (docs/operations.md, "Leader
//! election"), so an API server away for longer ends the process, and the new one leads once the
//! old Lease expires.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use devcluster::cluster::{self, Component, Stop, TestNamespace};
use devcluster::db::{Engine, TestDatabase};
use devcluster::operator::OperatorProcess;
use serde_json::{Value, json};
use support::e2e::{apply_json, cluster, configmap, hashed, is_ready, kubectl};
use support::relay::{self, Relay};

/// Migration files per directory: each holds its Job a second longer.
const FILES: usize = 3;
/// From the fault's end to every resource Ready, at most.
const RECOVERY_LIMIT: Duration = Duration::from_secs(150);

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    // A failed test poisons the lock; the next one still runs on its own.
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The migration directory: file `k` inserts `k` into `runs` (the first creates it), then sleeps.
fn directory() -> Value {
    let files: Vec<(String, String)> = (1..=FILES)
        .map(|k| {
            let create = if k == 1 {
                "create table runs (file int not null, at timestamptz not null default now());\n"
            } else {
                ""
            };
            (
                format!("{k}_run.sql"),
                format!("{create}insert into runs (file) values ({k});\nselect pg_sleep(1);\n"),
            )
        })
        .collect();
    let borrowed: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_str()))
        .collect();
    hashed(&borrowed)
}

/// `count` AtlasMigrations `m-0`… in a namespace of their own, each on a database of its own.
struct Fleet {
    ns: TestNamespace,
    dbs: Vec<TestDatabase>,
}

impl Fleet {
    fn new(hint: &str, count: usize) -> Fleet {
        let ns = cluster()
            .namespace(hint)
            .unwrap_or_else(|err| panic!("namespace {hint}: {err}"));
        let dbs: Vec<TestDatabase> = (0..count)
            .map(|i| {
                TestDatabase::create(Engine::Postgres, &format!("{}_{i}", hint.replace('-', "_")))
                    .unwrap_or_else(|err| panic!("database {i}: {err}"))
            })
            .collect();
        configmap(&ns, "migrationdir", directory());
        let secrets: Vec<Value> = dbs
            .iter()
            .enumerate()
            .map(|(i, db)| {
                json!({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": format!("db-{i}")}, "stringData": {"url": db.url}})
            })
            .collect();
        apply_json(
            &ns.name,
            &json!({"apiVersion": "v1", "kind": "List", "items": secrets}),
        );
        Fleet { ns, dbs }
    }

    /// Applies every AtlasMigration at once (one `kubectl apply`).
    fn apply(&self) {
        let migrations: Vec<Value> = (0..self.dbs.len())
            .map(|i| {
                json!({"apiVersion": "db.atlasgo.io/v1alpha1", "kind": "AtlasMigration",
                       "metadata": {"name": format!("m-{i}")},
                       "spec": {"urlFrom": {"secretKeyRef": {"key": "url", "name": format!("db-{i}")}},
                                "dir": {"configMapRef": {"name": "migrationdir"}}}})
            })
            .collect();
        apply_json(
            &self.ns.name,
            &json!({"apiVersion": "v1", "kind": "List", "items": migrations}),
        );
    }

    /// Waits until some database has a file applied and not every one has them all: the fault
    /// then lands while Jobs apply.
    fn wait_until_applying(&self, operator: &Supervised) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let rows: Vec<usize> = self.dbs.iter().map(runs).collect();
            if rows.iter().any(|n| *n > 0) && rows.iter().any(|n| *n < FILES) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no apply in progress within 2 minutes (rows: {rows:?})\n{}",
                operator.log_tail()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until every resource is Ready at the last version; how long that took.
    fn wait_all_ready(&self, operator: &Supervised) -> Duration {
        let started = Instant::now();
        let last = FILES.to_string();
        let mut seen = Value::Null;
        while started.elapsed() < RECOVERY_LIMIT {
            // A failed call is the fault's echo (an API server coming back): poll again.
            if let Ok(text) =
                kubectl(&["-n", &self.ns.name, "get", "atlasmigrations", "-o", "json"])
                && let Ok(list) = serde_json::from_str::<Value>(&text)
            {
                let items = list["items"].as_array().cloned().unwrap_or_default();
                if items.len() == self.dbs.len()
                    && items
                        .iter()
                        .all(|m| is_ready(m) && m["status"]["lastAppliedVersion"] == last.as_str())
                {
                    return started.elapsed();
                }
                seen = Value::Array(items);
            }
            thread::sleep(Duration::from_millis(250));
        }
        let statuses: Vec<String> = seen
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| format!("{}: {}", m["metadata"]["name"], m["status"]))
            .collect();
        panic!(
            "not every resource Ready at version {last} within {RECOVERY_LIMIT:?}:\n{}\n{}\n{}",
            statuses.join("\n"),
            kubectl(&["-n", &self.ns.name, "get", "jobs,pods", "-o", "wide"]).unwrap_or_default(),
            operator.log_tail()
        );
    }

    /// Each file's row once in every database, each version once in its revisions table, whole
    /// and without error, and every resource Applied without a failure on the way.
    fn check_exactly_once(&self) {
        let expected_runs: String = (1..=FILES).map(|k| format!("{k}\t1\n")).collect();
        let expected_versions: String = (1..=FILES).map(|k| format!("{k}\t1\n")).collect();
        for (i, db) in self.dbs.iter().enumerate() {
            let runs = db
                .query("select file, count(*) from runs group by file order by file")
                .unwrap();
            assert_eq!(runs, expected_runs, "m-{i}: rows per file in runs");
            let versions = db
                .query(
                    "select version, count(*) from atlas_schema_revisions.atlas_schema_revisions \
                     where applied = total and coalesce(error, '') = '' \
                     group by version order by version",
                )
                .unwrap();
            assert_eq!(
                versions, expected_versions,
                "m-{i}: whole revisions per version"
            );
            let all = db
                .query("select count(*) from atlas_schema_revisions.atlas_schema_revisions")
                .unwrap();
            assert_eq!(all.trim(), FILES.to_string(), "m-{i}: revisions");
        }
    }
}

/// Rows in `runs`; 0 before the first file made the table.
fn runs(db: &TestDatabase) -> usize {
    db.query("select count(*) from runs")
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// The operator, started again (after a second, as a kubelet's first back-off) whenever it
/// exits, as its pod's `restartPolicy: Always` would; stopped when dropped.
struct Supervised {
    state: Arc<Mutex<Runs>>,
    stop: Arc<AtomicBool>,
    watcher: Option<thread::JoinHandle<()>>,
}

struct Runs {
    current: OperatorProcess,
    /// The logs of the processes that exited, with how they ended.
    earlier: String,
    restarts: usize,
}

impl Supervised {
    fn start(namespace: &str, server: Option<String>) -> Supervised {
        let namespace = namespace.to_string();
        let launch = move || {
            OperatorProcess::start_through(
                &cluster(),
                Path::new(env!("CARGO_BIN_EXE_atlas-operator")),
                &[&namespace],
                &[],
                server.as_deref(),
            )
            .unwrap_or_else(|err| panic!("starting the operator: {err}"))
        };
        let state = Arc::new(Mutex::new(Runs {
            current: launch(),
            earlier: String::new(),
            restarts: 0,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (state, stop) = (state.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(200));
                    let mut runs = state.lock().unwrap();
                    if let Some(status) = runs.current.exited() {
                        let log = runs.current.log();
                        runs.earlier
                            .push_str(&format!("{log}--- the operator exited: {status}\n"));
                        eprintln!("the operator exited ({status}); starting it again");
                        drop(runs);
                        thread::sleep(Duration::from_secs(1));
                        let next = launch();
                        let mut runs = state.lock().unwrap();
                        runs.current = next;
                        runs.restarts += 1;
                    }
                }
            })
        };
        Supervised {
            state,
            stop,
            watcher: Some(watcher),
        }
    }

    fn restarts(&self) -> usize {
        self.state.lock().unwrap().restarts
    }

    /// The end of every run's log: enough to see what happened around the fault.
    fn log_tail(&self) -> String {
        let runs = self.state.lock().unwrap();
        let all = format!("{}{}", runs.earlier, runs.current.log());
        let start = all.len().saturating_sub(30_000);
        let start = (start..all.len())
            .find(|at| all.is_char_boundary(*at))
            .unwrap_or(0);
        format!("operator log (end):\n{}", &all[start..])
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(watcher) = self.watcher.take() {
            let _ = watcher.join();
        }
    }
}

/// Runs `fault` on a fleet of `count` migrations mid-apply (the operator reaching the API server
/// at `server` when given); then every one must end Ready and
/// applied exactly once. Prints how long the fault took and the recovery after it.
fn survives(hint: &str, count: usize, server: Option<String>, fault: impl FnOnce(&Fleet)) {
    let _serial = serial();
    let fleet = Fleet::new(hint, count);
    let operator = Supervised::start(&fleet.ns.name, server);
    let started = Instant::now();
    fleet.apply();
    fleet.wait_until_applying(&operator);
    let fault_at = Instant::now();
    fault(&fleet);
    let fault_took = fault_at.elapsed();
    let recovery = fleet.wait_all_ready(&operator);
    fleet.check_exactly_once();
    eprintln!(
        "{hint}: {count} resources; fault {fault_took:.1?} (from {:.1?} after the apply); \
         all Ready {recovery:.1?} after it; operator restarts: {}; total {:.1?}",
        fault_at - started,
        operator.restarts(),
        started.elapsed()
    );
}

#[test]
fn the_api_server_restarted_during_twenty_applies() {
    survives("fault-apiserver", 20, None, |_| {
        let restarted = cluster::restart(Component::ApiServer, Stop::Term)
            .unwrap_or_else(|err| panic!("restarting the API server: {err}"));
        eprintln!("kube-apiserver back in {:.1?}", restarted.down_for);
    });
}

#[test]
fn the_operator_cut_off_from_the_api_server_for_thirty_seconds() {
    let api: SocketAddr = {
        let cluster = cluster();
        SocketAddr::new(cluster.api_address().into(), cluster.ports.apiserver)
    };
    let relay = Relay::start(api).unwrap();
    let url = format!("https://{}", relay.address());
    survives("fault-cutoff", 6, Some(url), |_| {
        relay.cut();
        assert!(relay::refuses(relay.address(), Duration::from_secs(5)));
        thread::sleep(Duration::from_secs(30));
        relay.resume();
    });
}

#[test]
fn etcd_killed_and_restarted_during_applies() {
    survives("fault-etcd", 6, None, |_| {
        let restarted = cluster::restart(Component::Etcd, Stop::Kill)
            .unwrap_or_else(|err| panic!("restarting etcd: {err}"));
        eprintln!(
            "etcd (and the API server's /readyz) back in {:.1?}",
            restarted.down_for
        );
    });
}

/// Deletes a running Job pod of `fleet` with `grace` (None: the pod's own, 30 s).
fn delete_a_running_pod(fleet: &Fleet, grace: Option<u32>) {
    let text = kubectl(&["-n", &fleet.ns.name, "get", "pods", "-o", "json"]).unwrap();
    let pods: Value = serde_json::from_str(&text).unwrap();
    let running: Vec<&str> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["status"]["phase"] == "Running")
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    let victim = running
        .first()
        .unwrap_or_else(|| panic!("no Job pod running: {text}"));
    let grace = grace.map(|seconds| format!("--grace-period={seconds}"));
    let mut args = vec![
        "-n",
        &fleet.ns.name,
        "delete",
        "pod",
        victim,
        "--wait=false",
    ];
    args.extend(grace.as_deref());
    kubectl(&args).unwrap();
    eprintln!(
        "deleted pod {victim} ({})",
        grace.as_deref().unwrap_or("its grace period")
    );
}

/// As a person would: `kubectl delete pod` with the pod's grace period (30 s), longer than
/// the apply, so the runner finishes it meanwhile.
#[test]
fn a_jobs_pod_deleted_while_it_runs() {
    survives("fault-pod", 4, None, |fleet| {
        delete_a_running_pod(fleet, None)
    });
}

/// A grace period shorter than the apply (a drain with a short grace, `--grace-period=1`): the
/// runner is stopped mid-apply. It passes SIGTERM on to Atlas and fails transiently, so the Job's
/// next pod applies the rest (before, the runner, PID 1 without a handler, ignored SIGTERM and
/// the SIGKILL after the grace period failed the Job as an OOM kill).
#[test]
fn a_jobs_pod_deleted_with_a_short_grace_period_while_it_runs() {
    survives("fault-pod-short", 4, None, |fleet| {
        delete_a_running_pod(fleet, Some(1))
    });
}

#[test]
fn the_kubelet_killed_and_restarted_mid_apply() {
    survives("fault-kubelet", 6, None, |_| {
        let restarted = cluster::restart(Component::Kubelet, Stop::Kill)
            .unwrap_or_else(|err| panic!("restarting the kubelet: {err}"));
        eprintln!(
            "the kubelet back (a fresh heartbeat) in {:.1?}",
            restarted.down_for
        );
    });
}
