//! A local Kubernetes control plane: the real etcd, kube-apiserver and kube-controller-manager,
//! built from `tools/kubernetes` and `tools/etcd`, on free loopback ports in a temporary
//! directory.
//!
//! Everything a test or the demo talks to is the real thing: TLS with a certificate authority of
//! our own (made with the `openssl` CLI), client-certificate authentication, `Node,RBAC`
//! authorization, the default admission plugins, service-account tokens signed with an RSA key,
//! and an audit log at `Metadata` level that benchmarks count the operator's writes from. The
//! controller manager runs the controllers a Job's life needs (job, garbage collector,
//! ttl-after-finished, service accounts and their tokens, namespace deletion, pod GC, the root CA
//! publisher) and those an installed operator's Deployment needs (deployment, replicaset,
//! disruption). The one node is the process-kubelet of [`crate::kubelet`] (`devcluster-kubelet`,
//! built from this crate by `up`): it registers the Node `devnode`, binds the pending pods to it
//! and runs them as local processes.
//!
//! Like the databases of [`crate::db`], the cluster is shared by a whole test run
//! (`crate::lifecycle`): `up` is idempotent and safe when several processes call it at once (a
//! lock file), the processes outlive the one that started them (their own process group), and
//! their pids are recorded in `target/devcluster/state.env` so `down` can stop them. Each test
//! takes a fresh namespace ([`Cluster::namespace`]).
//!
//! `up` reads in the order things happen: `pki` makes the certificates, `control_plane` starts
//! etcd, the API server and the controller manager, `process_node` the node; `components`
//! starts, waits for and stops each process, `state` records them for `status` and `down`;
//! `faults` restarts one of them for the tests of the faults the operator survives.
//!
//! [`up_with`]`(`[`NodeKind::Real`]`)` (`cargo xtask cluster up --node real`) joins the same
//! control plane to a real node instead ([`real_node`]): the upstream kubelet on containerd and
//! runc, with kube-scheduler placing the pods.

mod components;
mod control_plane;
mod faults;
mod namespace;
mod pki;
mod process_node;
pub mod real_node;
mod state;

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cmd::{self, CmdError};
use crate::lifecycle::{self, Found, Service};
use crate::packages::PackagesError;
use crate::tools::ToolsError;
use components::stop;

pub use components::Component;
pub use control_plane::{CONTROLLERS, KUBERNETES_SERVICE_IP, SERVICE_ACCOUNT_ISSUER, SERVICE_CIDR};
pub use faults::{Restarted, Stop, restart};
pub use namespace::TestNamespace;
pub use pki::{ADMIN_USER, CertPair, Usage};
pub use process_node::KUBELET_BIN_ENV;

/// The cluster, context and user name in the kubeconfigs written here.
const CONTEXT: &str = "devcluster";
/// A single `kubectl` or `openssl` call: none of them should take more than a few seconds.
const CALL_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Tools(#[from] ToolsError),
    #[error(transparent)]
    Packages(#[from] PackagesError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Command {
        what: String,
        #[source]
        source: CmdError,
    },
    #[error("{component} exited while the cluster was starting; the end of its log:\n{log}")]
    Exited {
        component: &'static str,
        log: String,
    },
    #[error(
        "{what} within {}s (last problem: {problem}); the end of {component}'s log:\n{log}",
        limit.as_secs()
    )]
    NotReady {
        what: &'static str,
        component: &'static str,
        limit: Duration,
        problem: String,
        log: String,
    },
    #[error("cannot restart {component}: {why}")]
    Restart {
        component: &'static str,
        why: String,
    },
    #[error("`{0}` cannot go into a certificate subject (use letters, digits and `:-._@`)")]
    BadName(String),
    #[error(transparent)]
    Image(#[from] crate::images::ImageError),
    #[error("this machine cannot run the real node's containers: {0}")]
    CannotRunContainers(String),
}

/// Which node joins the control plane.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NodeKind {
    /// The process-kubelet `devnode` ([`crate::kubelet`]): pods as local processes.
    #[default]
    Process,
    /// The upstream kubelet `realnode` on containerd and runc, and kube-scheduler
    /// ([`real_node`]).
    Real,
}

impl NodeKind {
    /// As in the state file's `NODE` and `cluster up --node`.
    pub fn name(self) -> &'static str {
        match self {
            NodeKind::Process => "process",
            NodeKind::Real => "real",
        }
    }

    pub fn parse(name: &str) -> Option<NodeKind> {
        match name {
            "process" => Some(NodeKind::Process),
            "real" => Some(NodeKind::Real),
            _ => None,
        }
    }

    /// The Node's name.
    pub fn node_name(self) -> &'static str {
        match self {
            NodeKind::Process => crate::kubelet::NODE_NAME,
            NodeKind::Real => real_node::NODE_NAME,
        }
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

impl From<lifecycle::IoError> for ClusterError {
    fn from(err: lifecycle::IoError) -> ClusterError {
        ClusterError::Io {
            what: err.what,
            source: err.source,
        }
    }
}

fn command_error(what: impl Into<String>) -> impl FnOnce(CmdError) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Command { what, source }
}

/// The loopback ports the control plane listens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    pub etcd: u16,
    pub etcd_peer: u16,
    pub apiserver: u16,
    pub controller_manager: u16,
    /// The kubelet's logs endpoint (the Node's `daemonEndpoints.kubeletEndpoint.Port`).
    pub kubelet: u16,
}

/// A running (or recorded) control plane, as written to `target/devcluster/state.env`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// The temporary directory holding etcd's data, the certificates, the logs and the audit log.
    pub dir: PathBuf,
    pub ports: Ports,
    /// The processes started, in start order.
    pub processes: Vec<(Component, u32)>,
    pub node: NodeKind,
}

impl Cluster {
    /// The admin's kubeconfig, `target/devcluster/kubeconfig` (certificates embedded, so it can
    /// be copied).
    pub fn kubeconfig(&self) -> PathBuf {
        kubeconfig_file()
    }

    /// The API server's URL.
    pub fn server(&self) -> String {
        format!("https://{}:{}", self.api_address(), self.ports.apiserver)
    }

    /// Where the API server listens: loopback, or with a real node the pods' bridge, which is
    /// an address of this machine too, so nothing outside it can reach the API server either
    /// way.
    pub fn api_address(&self) -> std::net::Ipv4Addr {
        match self.node {
            NodeKind::Process => std::net::Ipv4Addr::LOCALHOST,
            NodeKind::Real => real_node::POD_GATEWAY,
        }
    }

    /// The audit log: one JSON event per request, at `Metadata` level.
    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("audit.log")
    }

    /// The log file of one component (its stdout and stderr).
    pub fn log(&self, component: Component) -> PathBuf {
        self.dir.join(format!("{}.log", component.binary()))
    }

    /// `kubectl` (the built one) set up for this cluster as the admin. Its discovery cache is in
    /// the cluster's directory: never shared with another cluster that had the same port, and
    /// gone with `down`.
    pub fn kubectl(&self) -> Command {
        // A missing kubectl shows up when the command runs; `status` reports it by name.
        let program = crate::tools::path("kubectl").unwrap_or_else(|_| PathBuf::from("kubectl"));
        let mut kubectl = Command::new(program);
        kubectl
            .arg(format!("--kubeconfig={}", self.kubeconfig().display()))
            .arg(format!(
                "--cache-dir={}",
                self.dir.join("kubectl-cache").display()
            ));
        kubectl
    }

    /// Runs `kubectl` with `args` as the admin, within a time limit; returns what it printed.
    pub fn kubectl_output(&self, args: &[&str]) -> Result<String, ClusterError> {
        let mut kubectl = self.kubectl();
        kubectl.args(args);
        cmd::output(&mut kubectl, CALL_LIMIT).map_err(command_error("kubectl"))
    }

    /// `kubectl apply` of a manifest (YAML, or JSON, which is YAML) as the admin, in `namespace`
    /// when given; returns what kubectl printed. The manifest goes through a file of its own, so
    /// a refusal names it and concurrent callers never share one.
    pub fn apply(&self, namespace: Option<&str>, manifest: &str) -> Result<String, ClusterError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("devcluster-apply-{}-{n}.yaml", std::process::id()));
        fs::write(&path, manifest).map_err(io(format!("writing {}", path.display())))?;
        let mut args = vec!["apply", "-f", path.to_str().unwrap_or_default()];
        if let Some(namespace) = namespace {
            args.extend(["-n", namespace]);
        }
        let result = self.kubectl_output(&args);
        let _ = fs::remove_file(&path);
        result
    }

    /// Writes a kubeconfig for this cluster that authenticates with `credentials` (a client
    /// certificate from [`Cluster::issue_cert`]). Written by `kubectl config` itself, with the
    /// certificates embedded, and moved into place whole.
    pub fn write_kubeconfig(
        &self,
        path: &Path,
        credentials: &CertPair,
    ) -> Result<(), ClusterError> {
        let staging = path.with_extension("tmp");
        let _ = fs::remove_file(&staging);
        let kubectl = crate::tools::path("kubectl")?;
        let config = format!("--kubeconfig={}", staging.display());
        let steps: [Vec<String>; 4] = [
            vec![
                "set-cluster".into(),
                CONTEXT.into(),
                format!("--server={}", self.server()),
                format!("--certificate-authority={}", self.ca().cert.display()),
                "--embed-certs=true".into(),
            ],
            vec![
                "set-credentials".into(),
                CONTEXT.into(),
                format!("--client-certificate={}", credentials.cert.display()),
                format!("--client-key={}", credentials.key.display()),
                "--embed-certs=true".into(),
            ],
            vec![
                "set-context".into(),
                CONTEXT.into(),
                format!("--cluster={CONTEXT}"),
                format!("--user={CONTEXT}"),
            ],
            vec!["use-context".into(), CONTEXT.into()],
        ];
        for step in steps {
            let mut command = Command::new(&kubectl);
            command.arg("config").args(&step).arg(&config);
            cmd::output(&mut command, CALL_LIMIT)
                .map_err(command_error(format!("writing {}", path.display())))?;
        }
        fs::rename(&staging, path).map_err(io(format!("writing {}", path.display())))
    }
}

/// `target/devcluster`: the state file, the kubeconfig and the lock.
pub fn state_dir() -> PathBuf {
    crate::target_dir().join("devcluster")
}

pub fn state_file() -> PathBuf {
    state_dir().join("state.env")
}

/// `target/devcluster/kubeconfig`, the admin's.
pub fn kubeconfig_file() -> PathBuf {
    state_dir().join("kubeconfig")
}

/// The audit log of the recorded cluster, if one is recorded (running or not).
pub fn audit_log() -> Option<PathBuf> {
    lifecycle::recorded::<Cluster>().map(|cluster| cluster.audit_log())
}

/// What `status` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Status {
    Down,
    Up(Cluster),
    /// The state file exists but a process is gone or the API server is not ready (killed, or the
    /// machine rebooted).
    Broken {
        cluster: Cluster,
        problem: String,
    },
}

/// Whether the cluster recorded in `target/devcluster/state.env` runs and is ready.
pub fn status() -> Status {
    match lifecycle::status::<Cluster>() {
        Found::Down => Status::Down,
        Found::Up(cluster) => Status::Up(cluster),
        Found::Broken { service, problem } => Status::Broken {
            cluster: service,
            problem,
        },
    }
}

/// Starts the control plane with the process-kubelet unless it already runs; returns it.
pub fn up() -> Result<Cluster, ClusterError> {
    up_with(NodeKind::Process)
}

/// Starts the control plane with a node of this kind unless a cluster with one runs; a running
/// cluster with the other kind of node is stopped first.
pub fn up_with(node: NodeKind) -> Result<Cluster, ClusterError> {
    if let Status::Up(cluster) | Status::Broken { cluster, .. } = status()
        && cluster.node != node
    {
        eprintln!(
            "devcluster: the local cluster runs a {} node; restarting it with a {} node",
            cluster.node.name(),
            node.name()
        );
        down()?;
    }
    lifecycle::up(|| start_new(node))
}

fn start_new(node: NodeKind) -> Result<Cluster, ClusterError> {
    Cluster::clean_up()?;
    let dir = cluster_dir();
    // Private: it holds the CA's key and the admin's.
    fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&dir)
        .map_err(io(format!("creating {}", dir.display())))?;
    let ports = lifecycle::free_ports(5)?;
    let mut cluster = Cluster {
        dir,
        ports: Ports {
            etcd: ports[0],
            etcd_peer: ports[1],
            apiserver: ports[2],
            controller_manager: ports[3],
            kubelet: ports[4],
        },
        processes: Vec::new(),
        node,
    };
    let started = Instant::now();
    match start(&mut cluster) {
        Ok(()) => {
            eprintln!(
                "devcluster: Kubernetes API server on {} started in {:.1}s",
                cluster.server(),
                started.elapsed().as_secs_f64()
            );
            Ok(cluster)
        }
        Err(err) => {
            stop(&cluster);
            let _ = fs::remove_file(state_file());
            let _ = fs::remove_file(kubeconfig_file());
            Err(err)
        }
    }
}

/// Stops the control plane and removes its directory, the state file and the kubeconfig.
pub fn down() -> Result<(), ClusterError> {
    lifecycle::down::<Cluster>()
}

/// The shared cluster of this test run, started on first use (then remembered by this process, so
/// a test pays for no check after the first).
pub fn shared() -> Result<Cluster, ClusterError> {
    static SHARED: Mutex<Option<Cluster>> = Mutex::new(None);
    let mut shared = SHARED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(cluster) = &*shared {
        return Ok(cluster.clone());
    }
    // The tests are written for the process-kubelet (its image table, `devnode`): a running real
    // node is replaced by it.
    let cluster = match status() {
        Status::Up(cluster) if cluster.node == NodeKind::Process => cluster,
        _ => up()?,
    };
    *shared = Some(cluster.clone());
    Ok(cluster)
}

/// `$TMPDIR/atlas-operator-devcluster-<hash of the target dir>`: one cluster per checkout.
fn cluster_dir() -> PathBuf {
    lifecycle::scratch_dir("devcluster", &crate::target_dir())
}

/// Starts the control plane and the node in the cluster's new directory, recording each process
/// as it starts; the cluster is ready for tests when this returns.
fn start(cluster: &mut Cluster) -> Result<(), ClusterError> {
    let binaries = control_plane::Binaries::find()?;
    match cluster.node {
        NodeKind::Process => {
            let kubelet = process_node::prepare()?;
            pki::make_pki(cluster)?;
            control_plane::start(cluster, &binaries)?;
            // The kubelet starts meanwhile: it needs only the API server.
            process_node::start(cluster, &kubelet)?;
            control_plane::wait_until_set_up(cluster)?;
            process_node::wait_until_ready(cluster)
        }
        NodeKind::Real => {
            let node = real_node::prepare()?;
            pki::make_pki(cluster)?;
            // The API server listens on the bridge: it must exist first.
            real_node::make_network(cluster)?;
            control_plane::start(cluster, &binaries)?;
            real_node::start(cluster, &node)?;
            control_plane::wait_until_set_up(cluster)?;
            real_node::wait_until_ready(cluster)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn sample() -> Cluster {
        Cluster {
            dir: PathBuf::from("/tmp/atlas-operator-devcluster-1234"),
            ports: Ports {
                etcd: 40001,
                etcd_peer: 40002,
                apiserver: 40003,
                controller_manager: 40004,
                kubelet: 40005,
            },
            processes: vec![(Component::Etcd, 11), (Component::ApiServer, 12)],
            node: NodeKind::Real,
        }
    }

    #[test]
    fn urls_and_paths() {
        let cluster = sample();
        // A real node's pods reach the API server on their bridge.
        assert_eq!(cluster.server(), "https://10.88.0.1:40003");
        let process = Cluster {
            node: NodeKind::Process,
            ..cluster.clone()
        };
        assert_eq!(process.server(), "https://127.0.0.1:40003");
        assert_eq!(
            cluster.audit_log(),
            Path::new("/tmp/atlas-operator-devcluster-1234/audit.log")
        );
        assert_eq!(
            Component::ControllerManager.pid_key(),
            "KUBE_CONTROLLER_MANAGER_PID"
        );
    }
}
