//! The load put on the operator: N AtlasMigrations across 10 namespaces of this run, each with
//! its own migration directory (a ConfigMap) and its own SQLite file; and the `kubectl` calls that
//! apply and delete them. Everything carries a label with the run and size: `kubectl get` picks
//! one size's resources by it, and a later run finds namespaces still being deleted by it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use devcluster::cluster::Cluster;
use devcluster::cmd;
use devcluster::operator;
use serde_json::{Value, json};

pub const NAMESPACES: usize = 10;
const SECRET: &str = "bench-dbs";
const LABEL: &str = "atlas-operator-bench";

/// One size's resources and where they live.
pub struct Workload {
    pub run: String,
    pub size: usize,
    pub namespaces: Vec<String>,
    sqlite_dir: PathBuf,
    /// Where the `kubectl apply` files are written.
    pub scratch: PathBuf,
    cluster: Cluster,
}

impl Workload {
    pub fn new(run: &str, size: usize, scratch: &Path, cluster: &Cluster) -> Result<Workload> {
        let sqlite_dir = scratch.join(format!("sqlite-{run}-{size}"));
        // A Job's pod gets an emptyDir at /tmp, which would hide a database file under it.
        if sqlite_dir.starts_with("/tmp") {
            bail!(
                "the SQLite files would be in {}, which a Job's pod cannot see (its /tmp is its \
                 own)",
                sqlite_dir.display()
            );
        }
        Ok(Workload {
            run: run.to_string(),
            size,
            namespaces: (0..NAMESPACES)
                .map(|i| format!("bench-{run}-{size}-{i}"))
                .collect(),
            sqlite_dir,
            scratch: scratch.to_path_buf(),
            cluster: cluster.clone(),
        })
    }

    /// What every object name and namespace of this size holds (the audit log's cheap filter).
    pub fn needle(&self) -> String {
        format!("bench-{}-{}-", self.run, self.size)
    }

    fn label(&self) -> String {
        format!("{}-{}", self.run, self.size)
    }

    pub fn selector(&self) -> String {
        format!("{LABEL}={}", self.label())
    }

    pub fn lease(&self) -> String {
        operator::lease_name(&self.namespace_refs())
    }

    pub fn namespace_refs(&self) -> Vec<&str> {
        self.namespaces.iter().map(String::as_str).collect()
    }

    pub fn namespace_of(&self, k: usize) -> &str {
        &self.namespaces[k % NAMESPACES]
    }

    pub fn name(k: usize) -> String {
        format!("m-{k:04}")
    }

    pub fn owns(&self, namespace: &str) -> bool {
        self.namespaces.iter().any(|ns| ns == namespace)
    }

    /// The namespaces, each with its `default` service account (a Job's pod needs it).
    pub fn create_namespaces(&self) -> Result<()> {
        let cluster = &self.cluster;
        let items: Vec<Value> = self
            .namespaces
            .iter()
            .map(|ns| {
                json!({"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": ns, "labels": {LABEL: self.label()}}})
            })
            .collect();
        apply(cluster, &self.scratch, "namespaces", items)?;
        for ns in &self.namespaces {
            kubectl(
                cluster,
                &[
                    "wait",
                    "--for=create",
                    "serviceaccount/default",
                    "-n",
                    ns,
                    "--timeout=60s",
                ],
                Duration::from_secs(70),
            )?;
        }
        Ok(())
    }

    /// Per namespace a Secret with each resource's database URL; per resource a ConfigMap with
    /// its migration directory.
    pub fn apply_inputs(&self) -> Result<()> {
        let mut urls: BTreeMap<&str, serde_json::Map<String, Value>> = BTreeMap::new();
        let mut items = Vec::new();
        for k in 0..self.size {
            let ns = self.namespace_of(k);
            let dir = self.sqlite_dir.join(ns);
            std::fs::create_dir_all(&dir)?;
            let url = format!(
                "sqlite://{}",
                dir.join(format!("{}.db", Self::name(k))).display()
            );
            urls.entry(ns)
                .or_default()
                .insert(Self::name(k), json!(url));
            items.push(self.configmap(k, false));
        }
        for (ns, data) in urls {
            items.push(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": SECRET, "namespace": ns, "labels": {LABEL: self.label()}},
                "stringData": data}));
        }
        // Set-up, not measured: one kubectl per namespace at once (kubectl applies one object
        // at a time).
        std::thread::scope(|scope| {
            let applies: Vec<_> = self
                .namespaces
                .iter()
                .map(|ns| {
                    let items: Vec<Value> = items
                        .iter()
                        .filter(|item| item["metadata"]["namespace"] == ns.as_str())
                        .cloned()
                        .collect();
                    scope.spawn(move || {
                        apply(&self.cluster, &self.scratch, &format!("inputs-{ns}"), items)
                    })
                })
                .collect();
            applies
                .into_iter()
                .try_for_each(|apply| apply.join().expect("no panic in apply"))
        })
    }

    /// Resource `k`'s migration directory: one file, or two after the change storm's edit.
    pub fn configmap(&self, k: usize, edited: bool) -> Value {
        let name = Self::name(k);
        let first = format!(
            "-- {}/{name}\ncreate table items (id integer primary key, name text not null);\n",
            self.namespace_of(k)
        );
        let mut files = vec![("1_items.sql", first.as_str())];
        let second = "alter table items add column note text;\n";
        if edited {
            files.push(("2_note.sql", second));
        }
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": self.namespace_of(k),
                         "labels": {LABEL: self.label()}},
            "data": super::hashed_dir(&files).into_iter().collect::<BTreeMap<_, _>>()})
    }

    pub fn migrations(&self) -> Vec<Value> {
        (0..self.size)
            .map(|k| {
                let name = Self::name(k);
                json!({"apiVersion": "db.atlasgo.io/v1alpha1", "kind": "AtlasMigration",
                    "metadata": {"name": name, "namespace": self.namespace_of(k),
                                 "labels": {LABEL: self.label()}},
                    "spec": {"urlFrom": {"secretKeyRef": {"name": SECRET, "key": name}},
                             "dir": {"configMapRef": {"name": name}}}})
            })
            .collect()
    }

    /// Deletes the namespaces (everything in them goes with them) and the SQLite files.
    pub fn delete(&self) {
        let mut args = vec!["delete", "namespace", "--wait=false", "--ignore-not-found"];
        args.extend(self.namespace_refs());
        let _ = kubectl(&self.cluster, &args, Duration::from_secs(60));
        let _ = std::fs::remove_dir_all(&self.sqlite_dir);
    }

    /// Waits until the namespaces are gone, so their clean-up does not load the next size.
    pub fn wait_deleted(&self, limit: Duration) {
        let cluster = &self.cluster;
        let mut args = vec!["wait".to_string(), "--for=delete".to_string()];
        args.extend(self.namespaces.iter().map(|ns| format!("namespace/{ns}")));
        args.push(format!("--timeout={}s", limit.as_secs()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let started = Instant::now();
        match kubectl(cluster, &args, limit + Duration::from_secs(10)) {
            Ok(_) => eprintln!(
                "    namespaces of size {} deleted in {:.0} s",
                self.size,
                started.elapsed().as_secs_f64()
            ),
            Err(err) => eprintln!("    (namespaces of size {} not gone yet: {err})", self.size),
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.delete();
    }
}

/// Waits until the namespaces of earlier runs are gone. The last size's are deleted without
/// waiting when a run ends, and the process-kubelet removes their finished pods one by one
/// (minutes for 1,000): pods of this run would wait behind them.
pub fn wait_for_earlier_runs(cluster: &Cluster, limit: Duration) -> Result<()> {
    let terminating = |cluster: &Cluster| -> Result<Vec<String>> {
        let out = kubectl(
            cluster,
            &[
                "get",
                "namespaces",
                "-l",
                LABEL,
                "-o",
                "jsonpath={range .items[?(@.status.phase==\"Terminating\")]}{.metadata.name}{\"\\n\"}{end}",
            ],
            Duration::from_secs(60),
        )?;
        Ok(out.lines().map(str::to_string).collect())
    };
    let started = Instant::now();
    let mut waiting = terminating(cluster)?;
    if waiting.is_empty() {
        return Ok(());
    }
    eprintln!(
        "==> waiting for {} namespaces of an earlier run to be deleted",
        waiting.len()
    );
    while !waiting.is_empty() {
        if started.elapsed() > limit {
            bail!(
                "namespaces of an earlier run are still being deleted after {limit:?}: {waiting:?}"
            );
        }
        std::thread::sleep(Duration::from_secs(5));
        waiting = terminating(cluster)?;
    }
    eprintln!("    gone after {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// `kubectl apply --server-side` of `items` as one List, written to a file first.
pub fn apply(cluster: &Cluster, scratch: &Path, what: &str, items: Vec<Value>) -> Result<()> {
    let path = scratch.join(format!("{what}.json"));
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    std::fs::write(&path, serde_json::to_vec(&list)?)?;
    let file = path.display().to_string();
    kubectl(
        cluster,
        &["apply", "--server-side", "-f", &file],
        Duration::from_secs(600),
    )?;
    Ok(())
}

pub fn kubectl(cluster: &Cluster, args: &[&str], limit: Duration) -> Result<String> {
    let mut command = cluster.kubectl();
    command.args(args);
    Ok(cmd::output(&mut command, limit)?)
}
