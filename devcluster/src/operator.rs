//! The operator on the local cluster, as the tests and the demo run it: the CRDs from `crds/`,
//! the shipped RBAC (`rbac/operator-clusterrole.yaml`) bound to a service account, and the
//! operator binary as a process whose kubeconfig impersonates that service account, so a missing
//! or extra permission shows as it would in a real install.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::{Cluster, ClusterError};

pub const NAMESPACE: &str = "atlas-operator-system";
pub const SERVICE_ACCOUNT: &str = "atlas-operator";
/// The runner image the Jobs ask for; the process-kubelet maps it to the built `runner`.
pub const RUNNER_IMAGE: &str = "ghcr.io/atlas-operator/runner:dev";

/// The user the operator acts as (in the audit log too).
pub fn user() -> String {
    format!("system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}")
}

fn apply(cluster: &Cluster, manifest: &Value) -> Result<(), ClusterError> {
    cluster.apply(None, &manifest.to_string()).map(|_| ())
}

/// Installs the CRDs and the operator's RBAC (idempotent; once per process is enough) and returns
/// a kubeconfig that impersonates the operator's service account.
pub fn install(cluster: &Cluster) -> Result<PathBuf, ClusterError> {
    static INSTALLED: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = installed.as_ref().filter(|p| p.exists()) {
        return Ok(path.clone());
    }
    let root = crate::workspace_root();
    let path_arg = |p: &Path| p.to_string_lossy().into_owned();
    cluster.kubectl_output(&[
        "apply",
        "--server-side",
        "-f",
        &path_arg(&root.join("crds")),
    ])?;
    cluster.kubectl_output(&[
        "wait",
        "--for=condition=established",
        "--timeout=50s",
        "crd/atlasmigrations.db.atlasgo.io",
        "crd/atlasschemas.db.atlasgo.io",
    ])?;
    cluster.kubectl_output(&[
        "apply",
        "-f",
        &path_arg(&root.join("rbac/operator-clusterrole.yaml")),
    ])?;
    apply(
        cluster,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
    )?;
    apply(
        cluster,
        &json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE}}),
    )?;
    apply(
        cluster,
        &json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "atlas-operator-devcluster"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "atlas-operator"},
            "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT,
                          "namespace": NAMESPACE}]
        }),
    )?;
    let view = cluster.kubectl_output(&["config", "view", "--raw", "-o", "json"])?;
    let mut config: Value = serde_json::from_str(&view).map_err(|err| ClusterError::Io {
        what: "reading the admin kubeconfig".into(),
        source: std::io::Error::other(err),
    })?;
    if let Some(users) = config["users"].as_array_mut() {
        for entry in users {
            entry["user"]["as"] = json!(user());
        }
    }
    let path = crate::target_dir().join("devcluster/operator-kubeconfig");
    std::fs::write(&path, config.to_string()).map_err(|source| ClusterError::Io {
        what: format!("writing {}", path.display()),
        source,
    })?;
    *installed = Some(path.clone());
    Ok(path)
}

/// The operator's kubeconfig ([`install`]'s) with `server` as the API server's URL, in a file of
/// its own per server.
pub fn kubeconfig_through(cluster: &Cluster, server: &str) -> Result<PathBuf, ClusterError> {
    let installed = install(cluster)?;
    let bad = |what: String| {
        move |err: serde_json::Error| ClusterError::Io {
            what,
            source: std::io::Error::other(err),
        }
    };
    let text = std::fs::read_to_string(&installed).map_err(|source| ClusterError::Io {
        what: format!("reading {}", installed.display()),
        source,
    })?;
    let mut config: Value =
        serde_json::from_str(&text).map_err(bad(format!("parsing {}", installed.display())))?;
    if let Some(clusters) = config["clusters"].as_array_mut() {
        for entry in clusters {
            entry["cluster"]["server"] = json!(server);
        }
    }
    let port = server.rsplit(':').next().unwrap_or("relay");
    let path = crate::target_dir().join(format!("devcluster/operator-kubeconfig-via-{port}"));
    std::fs::write(&path, config.to_string()).map_err(|source| ClusterError::Io {
        what: format!("writing {}", path.display()),
        source,
    })?;
    Ok(path)
}

/// The operator binary running against the local cluster; stopped when dropped.
pub struct OperatorProcess {
    child: Child,
    log: PathBuf,
}

impl OperatorProcess {
    /// Starts `binary run` watching `namespaces` (empty: all), as the operator's service account.
    pub fn start(
        cluster: &Cluster,
        binary: &Path,
        namespaces: &[&str],
    ) -> Result<OperatorProcess, ClusterError> {
        Self::start_with(cluster, binary, namespaces, &[])
    }

    /// [`OperatorProcess::start`] with more flags (`--metrics-address` replaces the default).
    pub fn start_with(
        cluster: &Cluster,
        binary: &Path,
        namespaces: &[&str],
        extra: &[&str],
    ) -> Result<OperatorProcess, ClusterError> {
        Self::start_through(cluster, binary, namespaces, extra, None)
    }

    /// [`OperatorProcess::start_with`] reaching the API server at `server` when given (a relay
    /// on the API server's address and another port: its certificate names the address, not
    /// the port), so a test can cut the operator off from it.
    pub fn start_through(
        cluster: &Cluster,
        binary: &Path,
        namespaces: &[&str],
        extra: &[&str],
        server: Option<&str>,
    ) -> Result<OperatorProcess, ClusterError> {
        let kubeconfig = match server {
            None => install(cluster)?,
            Some(server) => kubeconfig_through(cluster, server)?,
        };
        static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let log = crate::target_dir().join(format!(
            "devcluster/operator-{}-{}-{}.log",
            std::process::id(),
            STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            namespaces.join("-")
        ));
        let file = File::create(&log).map_err(|source| ClusterError::Io {
            what: format!("creating {}", log.display()),
            source,
        })?;
        let err_file = file.try_clone().map_err(|source| ClusterError::Io {
            what: "the operator's log".into(),
            source,
        })?;
        let mut command = Command::new(binary);
        let lease = lease_name(namespaces);
        command.args(["run", "--runner-image", RUNNER_IMAGE]);
        if !extra.contains(&"--metrics-address") {
            command.args(["--metrics-address", "127.0.0.1:0"]);
        }
        command.args(["--lease-namespace", NAMESPACE, "--lease-name", &lease]);
        for namespace in namespaces {
            command.args(["--namespace", namespace]);
        }
        command.args(extra);
        let child = command
            .env("KUBECONFIG", &kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,atlas_operator=debug".into()),
            )
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err_file)
            .spawn()
            .map_err(|source| ClusterError::Io {
                what: format!("starting {}", binary.display()),
                source,
            })?;
        Ok(OperatorProcess { child, log })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The process's id, to read its `/proc` figures (the benchmarks do).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status once the process has exited (reaped), None while it runs.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends `SIGKILL`, as a crash or a lost node would end it: nothing is released.
    pub fn kill(&mut self) -> std::process::ExitStatus {
        let _ = self.child.kill();
        self.child.wait().expect("waiting for the killed operator")
    }

    /// Sends `SIGTERM`, as the kubelet does to a pod being deleted, and waits up to `limit` for
    /// the process to exit; its exit status, or None if it is still running then.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        // SAFETY: kill(2) on our own child's pid, which `wait` has not reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// The Lease (in [`NAMESPACE`]) of an operator started for `namespaces`: one per namespace set,
/// so operators of different tests never wait for each other.
pub fn lease_name(namespaces: &[&str]) -> String {
    format!("atlas-operator-{}", namespaces.join("-"))
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
