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
//! Like the databases of [`crate::db`], the cluster is shared by a whole test run: `up` is
//! idempotent and safe when several processes call it at once (a lock file), the processes
//! outlive the one that started them (their own process group), and their pids are recorded in
//! `target/devcluster/state.env` so `down` can stop them. Each test takes a fresh namespace
//! ([`Cluster::namespace`]).

use std::fs::{self, File};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::cmd::{self, CmdError};
use crate::lifecycle::{self, Found, Service, State};
use crate::packages::PackagesError;
use crate::process;
use crate::tools::ToolsError;

/// Services get their cluster IPs from here; the first address is the `kubernetes` Service.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The `kubernetes` Service's cluster IP (the first of [`SERVICE_CIDR`]): in the serving
/// certificate, so in-cluster clients that dial it by IP can verify the API server.
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// The `iss` of service-account tokens, and (by default) their audience: the usual in-cluster
/// name, so tokens look like a real cluster's.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The controllers a Job's life and an installed operator's need, by the names
/// `kube-controller-manager --help` lists (1.37 still takes the old short names, `job`, `podgc`,
/// …, as aliases, but lists only these; an unknown name stops it at start).
/// `clusterrole-aggregation-controller` fills the `admin`/`edit`/`view` roles, which RBAC tests
/// bind to; the deployment and replicaset controllers run a Helm chart's Deployment (and make it
/// `Available` once its pod is Ready), the disruption controller fills a PodDisruptionBudget's
/// status (without it the Eviction API refuses every eviction the budget covers).
pub const CONTROLLERS: &[&str] = &[
    "job-controller",
    "deployment-controller",
    "replicaset-controller",
    "disruption-controller",
    "garbage-collector-controller",
    "ttl-after-finished-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "namespace-controller",
    "pod-garbage-collector-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
];
/// The user name in the admin's client certificate (its group `system:masters` makes it admin).
pub const ADMIN_USER: &str = "devcluster-admin";
/// The cluster, context and user name in the kubeconfigs written here.
const CONTEXT: &str = "devcluster";

/// kube-apiserver needs about 5 s on 2 cores; a loaded CI machine may need many times that.
const START_LIMIT: Duration = Duration::from_secs(180);
/// Building `devcluster-kubelet` from a cold target directory (kube, k8s-openapi, rustls) takes
/// a few minutes on 2 cores; a fresh one is a no-op.
const KUBELET_BUILD_LIMIT: Duration = Duration::from_secs(30 * 60);
/// The variable naming a prebuilt `devcluster-kubelet` (otherwise `up` builds it with cargo).
pub const KUBELET_BIN_ENV: &str = "DEVCLUSTER_KUBELET_BIN";
/// A single `kubectl` or `openssl` call: none of them should take more than a few seconds.
const CALL_LIMIT: Duration = Duration::from_secs(60);
/// How long a process gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How much of a component's log an error shows.
const LOG_TAIL: usize = 20;
/// Certificates outlive any test run or demo (nothing renews them).
const CERT_DAYS: &str = "365";

/// Every request at `Metadata` level (who did what to which object; no bodies, so no Secret
/// values), one event per request: `RequestReceived` would double every line. A fixed text, not
/// built from any value.
const AUDIT_POLICY: &str = "\
# Written by devcluster (src/cluster.rs).
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages:
  - RequestReceived
rules:
  - level: Metadata
";

/// `openssl req` wants a config file with a `distinguished_name` section even when `-subj` gives
/// the whole subject; ours is empty so the system's defaults (which would mark every certificate
/// a CA) never apply. Extensions come from `-addext`.
const OPENSSL_CONFIG: &str = "\
# Written by devcluster (src/cluster.rs).
[req]
distinguished_name = dn
prompt = no
[dn]
";

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
    #[error("`{0}` cannot go into a certificate subject (use letters, digits and `:-._@`)")]
    BadName(String),
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

/// A process of the control plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Etcd,
    ApiServer,
    ControllerManager,
    /// The process-kubelet ([`crate::kubelet`]).
    Kubelet,
}

impl Component {
    /// In start order (`down` stops them in reverse: the kubelet first, and its containers die
    /// with it).
    pub const ALL: [Component; 4] = [
        Component::Etcd,
        Component::ApiServer,
        Component::ControllerManager,
        Component::Kubelet,
    ];

    /// The binary's name, as in `target/tools.env`.
    pub fn binary(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::ApiServer => "kube-apiserver",
            Component::ControllerManager => "kube-controller-manager",
            Component::Kubelet => "devcluster-kubelet",
        }
    }

    fn pid_key(self) -> String {
        format!("{}_PID", self.binary().to_uppercase().replace('-', "_"))
    }
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

/// A certificate and its private key, PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What a certificate issued by the cluster's CA is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Usage {
    /// Client authentication: the API server reads the user from the common name and the groups
    /// from the organizations.
    Client,
    /// Serving TLS under these names and addresses.
    Server {
        dns_names: Vec<String>,
        ips: Vec<IpAddr>,
    },
}

/// A running (or recorded) control plane, as written to `target/devcluster/state.env`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// The temporary directory holding etcd's data, the certificates, the logs and the audit log.
    pub dir: PathBuf,
    pub ports: Ports,
    /// The processes started, in start order.
    pub processes: Vec<(Component, u32)>,
}

impl Cluster {
    /// The admin's kubeconfig, `target/devcluster/kubeconfig` (certificates embedded, so it can
    /// be copied).
    pub fn kubeconfig(&self) -> PathBuf {
        kubeconfig_file()
    }

    /// The API server's URL.
    pub fn server(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports.apiserver)
    }

    /// The audit log: one JSON event per request, at `Metadata` level.
    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("audit.log")
    }

    /// The log file of one component (its stdout and stderr).
    pub fn log(&self, component: Component) -> PathBuf {
        self.dir.join(format!("{}.log", component.binary()))
    }

    /// The cluster's certificate authority: it signs the serving and client certificates, and the
    /// API server trusts client certificates it signed (so the process-kubelet can issue its own
    /// with [`Cluster::issue_cert`]).
    pub fn ca(&self) -> CertPair {
        self.pki_pair("ca")
    }

    /// The RSA key pair that signs and verifies service-account tokens (`cert` is the public
    /// key, PEM).
    pub fn service_account_key(&self) -> CertPair {
        CertPair {
            cert: self.pki().join("sa.pub"),
            key: self.pki().join("sa.key"),
        }
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

    /// A fresh namespace for one test, deleted when the value is dropped. Returns once its
    /// `default` service account exists (pods cannot be created before it does).
    pub fn namespace(&self, hint: &str) -> Result<TestNamespace, ClusterError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = namespace_name(
            hint,
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
        );
        self.kubectl_output(&["create", "namespace", &name])?;
        let namespace = TestNamespace {
            name,
            cluster: self.clone(),
        };
        let timeout = format!("--timeout={}s", CALL_LIMIT.as_secs() / 2);
        self.kubectl_output(&[
            "wait",
            "--for=create",
            "serviceaccount/default",
            "-n",
            &namespace.name,
            &timeout,
        ])?;
        Ok(namespace)
    }

    /// Issues a certificate signed by the cluster's CA into the cluster's directory
    /// (`pki/<file_stem>.crt` and `.key`, an EC P-256 key).
    pub fn issue_cert(
        &self,
        file_stem: &str,
        common_name: &str,
        organizations: &[&str],
        usage: &Usage,
    ) -> Result<CertPair, ClusterError> {
        let pair = self.pki_pair(subject_part(file_stem)?);
        let ca = self.ca();
        let mut subject = format!("/CN={}", subject_part(common_name)?);
        for organization in organizations {
            subject.push_str(&format!("/O={}", subject_part(organization)?));
        }
        let mut openssl = self.openssl_req(&pair, &subject);
        openssl
            .arg("-CA")
            .arg(&ca.cert)
            .arg("-CAkey")
            .arg(&ca.key)
            .args(["-addext", "basicConstraints=critical,CA:FALSE"]);
        match usage {
            Usage::Client => {
                openssl.args([
                    "-addext",
                    "keyUsage=critical,digitalSignature",
                    "-addext",
                    "extendedKeyUsage=clientAuth",
                ]);
            }
            Usage::Server { dns_names, ips } => {
                let mut names: Vec<String> = Vec::new();
                for name in dns_names {
                    names.push(format!("DNS:{}", subject_part(name)?));
                }
                names.extend(ips.iter().map(|ip| format!("IP:{ip}")));
                openssl.args([
                    "-addext",
                    "keyUsage=critical,digitalSignature",
                    "-addext",
                    "extendedKeyUsage=serverAuth",
                ]);
                if !names.is_empty() {
                    openssl.args(["-addext", &format!("subjectAltName={}", names.join(","))]);
                }
            }
        }
        cmd::output(&mut openssl, CALL_LIMIT).map_err(command_error(format!(
            "issuing the certificate {file_stem}"
        )))?;
        Ok(pair)
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

    fn pki(&self) -> PathBuf {
        self.dir.join("pki")
    }

    fn pki_pair(&self, stem: &str) -> CertPair {
        CertPair {
            cert: self.pki().join(format!("{stem}.crt")),
            key: self.pki().join(format!("{stem}.key")),
        }
    }

    /// `openssl req` making a new EC key and a certificate for it.
    fn openssl_req(&self, pair: &CertPair, subject: &str) -> Command {
        let mut openssl = Command::new("openssl");
        openssl
            .arg("req")
            .arg("-config")
            .arg(self.pki().join("openssl.cnf"))
            .args(["-x509", "-new", "-nodes", "-days", CERT_DAYS])
            .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])
            .arg("-keyout")
            .arg(&pair.key)
            .arg("-out")
            .arg(&pair.cert)
            .args(["-subj", subject]);
        openssl
    }

    fn state_text(&self) -> String {
        let mut text = format!(
            "# Written by `cargo xtask cluster up`; removed by `cargo xtask cluster down`.\n\
             DEVCLUSTER_DIR={}\nSERVER={}\nKUBECONFIG={}\nAUDIT_LOG={}\n\
             ETCD_PORT={}\nETCD_PEER_PORT={}\nAPISERVER_PORT={}\nCONTROLLER_MANAGER_PORT={}\n\
             KUBELET_PORT={}\n",
            self.dir.display(),
            self.server(),
            self.kubeconfig().display(),
            self.audit_log().display(),
            self.ports.etcd,
            self.ports.etcd_peer,
            self.ports.apiserver,
            self.ports.controller_manager,
            self.ports.kubelet,
        );
        for (component, pid) in &self.processes {
            text.push_str(&format!("{}={pid}\n", component.pid_key()));
        }
        text
    }

    /// Records the processes started so far: a failed or killed `up` leaves enough behind for
    /// the next `up` or `down` to stop them.
    fn save(&self) -> Result<(), ClusterError> {
        Ok(lifecycle::write_state(&state_file(), &self.state_text())?)
    }

    /// Whether `pid` is a live process of this cluster (its command line names our directory):
    /// after a reboot a recorded pid may belong to someone else, who must not be signalled.
    fn owns(&self, pid: u32) -> bool {
        process::runs_in(pid, &self.dir)
    }
}

impl Service for Cluster {
    type Error = ClusterError;
    const RESTARTING: &'static str = "devcluster: restarting the local cluster";

    fn state_dir() -> PathBuf {
        state_dir()
    }

    fn state_file() -> PathBuf {
        state_file()
    }

    fn files() -> Vec<PathBuf> {
        vec![state_file(), kubeconfig_file()]
    }

    fn from_state(state: &State) -> Option<Cluster> {
        let port = |key: &str| state.parse::<u16>(key);
        Some(Cluster {
            dir: PathBuf::from(state.get("DEVCLUSTER_DIR")?),
            ports: Ports {
                etcd: port("ETCD_PORT")?,
                etcd_peer: port("ETCD_PEER_PORT")?,
                apiserver: port("APISERVER_PORT")?,
                controller_manager: port("CONTROLLER_MANAGER_PORT")?,
                kubelet: port("KUBELET_PORT")?,
            },
            processes: Component::ALL
                .into_iter()
                .filter_map(|component| Some((component, state.parse(&component.pid_key())?)))
                .collect(),
        })
    }

    fn check(&self) -> Result<(), String> {
        check(self)
    }

    fn stop(&self) {
        stop(self)
    }

    /// Processes of a cluster whose state file was lost still hold its directory.
    fn clean_up() -> Result<(), ClusterError> {
        let dir = cluster_dir();
        stop_strays(&dir);
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io(format!("removing {}", dir.display())))?;
        }
        Ok(())
    }
}

/// A namespace of its own for one test; deleted (without waiting) when dropped.
#[derive(Debug)]
pub struct TestNamespace {
    pub name: String,
    cluster: Cluster,
}

impl TestNamespace {
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// `kubectl -n <namespace>` as the admin.
    pub fn kubectl(&self) -> Command {
        let mut kubectl = self.cluster.kubectl();
        kubectl.args(["-n", &self.name]);
        kubectl
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Best effort: the namespace controller deletes what is in it; `down` removes all anyway.
        let _ = self.cluster.kubectl_output(&[
            "delete",
            "namespace",
            &self.name,
            "--wait=false",
            "--ignore-not-found",
        ]);
    }
}

/// A DNS label: `t-<hint>-<pid>-<n>`, at most 63 characters.
fn namespace_name(hint: &str, pid: u32, n: u64) -> String {
    let suffix = format!("-{pid}-{n}");
    let mut hint: String = hint
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(63 - 2 - suffix.len())
        .collect();
    while hint.contains("--") {
        hint = hint.replace("--", "-");
    }
    match hint.trim_matches('-') {
        "" => format!("t{suffix}"),
        hint => format!("t-{hint}{suffix}"),
    }
}

fn subject_part(text: &str) -> Result<&str, ClusterError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || ":-._@".contains(c);
    if text.is_empty() || !text.chars().all(allowed) {
        return Err(ClusterError::BadName(text.to_string()));
    }
    Ok(text)
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

fn check(cluster: &Cluster) -> Result<(), String> {
    for component in Component::ALL {
        match cluster.processes.iter().find(|(c, _)| *c == component) {
            None => return Err(format!("{} was never started", component.binary())),
            Some((_, pid)) if !cluster.owns(*pid) => {
                return Err(format!("{} (pid {pid}) is not running", component.binary()));
            }
            Some(_) => {}
        }
    }
    crate::tools::path("kubectl").map_err(|err| err.to_string())?;
    readyz(cluster)
}

/// The API server's own verdict: etcd reachable, every post-start hook (RBAC bootstrap roles,
/// CRD informers, …) done.
fn readyz(cluster: &Cluster) -> Result<(), String> {
    let mut kubectl = cluster.kubectl();
    kubectl.args(["get", "--raw", "/readyz", "--request-timeout=5s"]);
    match cmd::output(&mut kubectl, Duration::from_secs(15)) {
        Ok(out) if out.trim() == "ok" => Ok(()),
        Ok(out) => Err(format!("/readyz answered {}", out.trim())),
        Err(err) => Err(format!("/readyz: {err}")),
    }
}

/// Starts the control plane unless it already runs; returns it.
pub fn up() -> Result<Cluster, ClusterError> {
    lifecycle::up(start_new)
}

fn start_new() -> Result<Cluster, ClusterError> {
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
    let cluster = match status() {
        Status::Up(cluster) => cluster,
        _ => up()?,
    };
    *shared = Some(cluster.clone());
    Ok(cluster)
}

/// `$TMPDIR/atlas-operator-devcluster-<hash of the target dir>`: one cluster per checkout.
fn cluster_dir() -> PathBuf {
    lifecycle::scratch_dir("devcluster", &crate::target_dir())
}

fn start(cluster: &mut Cluster) -> Result<(), ClusterError> {
    let etcd = crate::tools::path("etcd")?;
    let apiserver = crate::tools::path("kube-apiserver")?;
    let controller_manager = crate::tools::path("kube-controller-manager")?;
    crate::tools::path("kubectl")?;
    // bubblewrap, for the kubelet's sandboxes.
    crate::packages::ensure()?;
    let kubelet = kubelet_binary()?;
    make_pki(cluster)?;
    let audit_policy = cluster.dir.join("audit-policy.yaml");
    fs::write(&audit_policy, AUDIT_POLICY).map_err(io("writing the audit policy"))?;
    let admin = cluster.pki_pair("admin");
    cluster.write_kubeconfig(&kubeconfig_file(), &admin)?;
    let controller_manager_kubeconfig = cluster.dir.join("controller-manager.kubeconfig");
    cluster.write_kubeconfig(
        &controller_manager_kubeconfig,
        &cluster.pki_pair("controller-manager"),
    )?;

    // etcd and the API server start together: the API server retries etcd until it answers.
    let data = cluster.dir.join("etcd");
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&data)
        .map_err(io("creating etcd's data directory"))?;
    let client_url = format!("http://127.0.0.1:{}", cluster.ports.etcd);
    let peer_url = format!("http://127.0.0.1:{}", cluster.ports.etcd_peer);
    let mut command = Command::new(&etcd);
    command
        .arg("--name=devcluster")
        .arg(format!("--data-dir={}", data.display()))
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=devcluster={peer_url}"))
        // A test cluster's data is thrown away: durability only costs time.
        .arg("--unsafe-no-fsync")
        .arg("--log-level=warn");
    spawn(cluster, Component::Etcd, &mut command)?;

    let pki = cluster.pki();
    let sa = cluster.service_account_key();
    let mut command = Command::new(&apiserver);
    command
        .arg(format!("--etcd-servers={client_url}"))
        .arg("--bind-address=127.0.0.1")
        .arg("--advertise-address=127.0.0.1")
        .arg(format!("--secure-port={}", cluster.ports.apiserver))
        .arg(format!(
            "--tls-cert-file={}",
            pki.join("apiserver.crt").display()
        ))
        .arg(format!(
            "--tls-private-key-file={}",
            pki.join("apiserver.key").display()
        ))
        // Users (the admin, the controller manager, later the kubelet) are client certificates
        // signed by our CA: user from the CN, groups from the O's.
        .arg(format!("--client-ca-file={}", cluster.ca().cert.display()))
        .arg("--authorization-mode=Node,RBAC")
        .arg(format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"))
        .arg(format!("--service-account-key-file={}", sa.cert.display()))
        .arg(format!(
            "--service-account-signing-key-file={}",
            sa.key.display()
        ))
        .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
        // One API server on loopback: nothing to reconcile into the `kubernetes` Endpoints.
        .arg("--endpoint-reconciler-type=none")
        .arg(format!("--audit-policy-file={}", audit_policy.display()))
        .arg(format!(
            "--audit-log-path={}",
            cluster.audit_log().display()
        ))
        // Never rotated: benchmarks count lines in one file, and the directory goes with `down`.
        .arg("--audit-log-maxsize=0")
        // For `kubectl logs`: the API server calls the kubelet as a client of our CA and checks
        // the kubelet's serving certificate against the same CA; the node's InternalIP is the
        // loopback address (its host name need not resolve).
        .arg(format!(
            "--kubelet-client-certificate={}",
            pki.join("apiserver-kubelet-client.crt").display()
        ))
        .arg(format!(
            "--kubelet-client-key={}",
            pki.join("apiserver-kubelet-client.key").display()
        ))
        .arg(format!(
            "--kubelet-certificate-authority={}",
            cluster.ca().cert.display()
        ))
        .arg("--kubelet-preferred-address-types=InternalIP,Hostname");
    spawn(cluster, Component::ApiServer, &mut command)?;
    wait_for(
        cluster,
        "the API server was not ready",
        Component::ApiServer,
        || readyz(cluster),
    )?;

    let mut command = Command::new(&controller_manager);
    let config = controller_manager_kubeconfig.display();
    command
        .arg(format!("--kubeconfig={config}"))
        .arg(format!("--authentication-kubeconfig={config}"))
        .arg(format!("--authorization-kubeconfig={config}"))
        // Its own port is only for /healthz and /metrics: it need not read the front-proxy CA
        // from the cluster (we run no aggregated API servers, and without that CA it logs an
        // error every few seconds).
        .arg("--authentication-skip-lookup=true")
        .arg("--bind-address=127.0.0.1")
        .arg(format!(
            "--secure-port={}",
            cluster.ports.controller_manager
        ))
        .arg("--leader-elect=false")
        .arg(format!("--controllers={}", CONTROLLERS.join(",")))
        // Each controller acts as its own service account in kube-system, as on kubeadm
        // clusters: the audit log names the job controller, the garbage collector, …
        .arg("--use-service-account-credentials=true")
        .arg(format!(
            "--service-account-private-key-file={}",
            sa.key.display()
        ))
        .arg(format!("--root-ca-file={}", cluster.ca().cert.display()));
    spawn(cluster, Component::ControllerManager, &mut command)?;
    // The kubelet starts meanwhile: it needs only the API server.
    start_kubelet(cluster, &kubelet)?;
    // Ready for tests when namespaces get their `default` service account (the serviceaccount
    // controller runs) and `kube-root-ca.crt` (the publisher runs): pods need both.
    wait_for(
        cluster,
        "the controller manager did not set up the default namespace",
        Component::ControllerManager,
        || {
            for object in ["serviceaccount/default", "configmap/kube-root-ca.crt"] {
                let mut kubectl = cluster.kubectl();
                kubectl.args(["get", object, "-n", "default", "-o", "name"]);
                cmd::output(&mut kubectl, Duration::from_secs(15))
                    .map_err(|err| format!("{object}: {err}"))?;
            }
            Ok(())
        },
    )?;
    wait_for(
        cluster,
        "the node did not become Ready",
        Component::Kubelet,
        || {
            let mut kubectl = cluster.kubectl();
            kubectl.args([
                "get",
                "node",
                crate::kubelet::NODE_NAME,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            match cmd::output(&mut kubectl, Duration::from_secs(15)) {
                Ok(out) if out.trim() == "True" => Ok(()),
                Ok(out) => Err(format!("Ready is {:?}", out.trim())),
                Err(err) => Err(err.to_string()),
            }
        },
    )
}

/// `devcluster-kubelet`: from `DEVCLUSTER_KUBELET_BIN`, or built by cargo into this target
/// directory (a no-op when it is fresh, so a changed kubelet is picked up by the next `up`).
/// Cargo releases its build lock while tests run, so this works from inside `cargo test` too.
fn kubelet_binary() -> Result<PathBuf, ClusterError> {
    if let Some(path) = std::env::var_os(KUBELET_BIN_ENV) {
        return Ok(PathBuf::from(path));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(crate::workspace_root())
        .env("CARGO_TARGET_DIR", crate::target_dir())
        .args(["build", "--quiet", "-p", "devcluster", "--bin"])
        .arg(Component::Kubelet.binary());
    cmd::output(&mut build, KUBELET_BUILD_LIMIT)
        .map_err(command_error("building devcluster-kubelet"))?;
    Ok(crate::target_dir()
        .join("debug")
        .join(Component::Kubelet.binary()))
}

/// Starts the process-kubelet as the node `devnode`, binding pods as the scheduler.
fn start_kubelet(cluster: &mut Cluster, kubelet: &Path) -> Result<(), ClusterError> {
    let node_kubeconfig = cluster.dir.join("kubelet.kubeconfig");
    cluster.write_kubeconfig(&node_kubeconfig, &cluster.pki_pair("kubelet"))?;
    let scheduler_kubeconfig = cluster.dir.join("scheduler.kubeconfig");
    cluster.write_kubeconfig(&scheduler_kubeconfig, &cluster.pki_pair("scheduler"))?;
    let serving = cluster.pki_pair("kubelet-serving");
    // The runner and the operator are other crates' binaries, built by whoever runs their pods;
    // the kubelet looks for them at each container start.
    let built = |variable: &str, name: &str| {
        std::env::var_os(variable)
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::target_dir().join("debug").join(name))
    };
    let runner = built("RUNNER_BIN", "runner");
    let operator = built("OPERATOR_BIN", "atlas-operator");
    let mut command = Command::new(kubelet);
    command
        .arg(format!("--node-name={}", crate::kubelet::NODE_NAME))
        .arg(format!("--kubeconfig={}", node_kubeconfig.display()))
        .arg(format!(
            "--scheduler-kubeconfig={}",
            scheduler_kubeconfig.display()
        ))
        .arg(format!("--dir={}", cluster.dir.join("kubelet").display()))
        .arg(format!("--port={}", cluster.ports.kubelet))
        .arg(format!("--tls-cert={}", serving.cert.display()))
        .arg(format!("--tls-key={}", serving.key.display()))
        .arg(format!("--client-ca={}", cluster.ca().cert.display()))
        .arg("--bwrap=/usr/bin/bwrap")
        .arg(format!("--runner={}", runner.display()))
        .arg(format!("--operator={}", operator.display()));
    for tool in ["atlas", "kubectl"] {
        if let Ok(path) = crate::tools::path(tool) {
            command.arg(format!("--{tool}={}", path.display()));
        }
    }
    spawn(cluster, Component::Kubelet, &mut command)
}

/// The CA, the serving certificate, the client certificates and the service-account key.
fn make_pki(cluster: &Cluster) -> Result<(), ClusterError> {
    let pki = cluster.pki();
    fs::create_dir_all(&pki).map_err(io(format!("creating {}", pki.display())))?;
    fs::write(pki.join("openssl.cnf"), OPENSSL_CONFIG).map_err(io("writing openssl.cnf"))?;

    let ca = cluster.ca();
    let mut openssl = cluster.openssl_req(&ca, "/CN=devcluster-ca");
    openssl.args([
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    ]);
    cmd::output(&mut openssl, CALL_LIMIT).map_err(command_error("making the cluster's CA"))?;

    cluster.issue_cert(
        "apiserver",
        "kube-apiserver",
        &[],
        &Usage::Server {
            dns_names: [
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ]
            .map(String::from)
            .to_vec(),
            ips: vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V4(KUBERNETES_SERVICE_IP),
            ],
        },
    )?;
    cluster.issue_cert("admin", ADMIN_USER, &["system:masters"], &Usage::Client)?;
    // The user the bootstrap RBAC policy grants the controller manager's own rights to.
    cluster.issue_cert(
        "controller-manager",
        "system:kube-controller-manager",
        &[],
        &Usage::Client,
    )?;
    // The process-kubelet: the node's own identity (the Node authorizer and NodeRestriction
    // confine it to its node and its pods), and the scheduler's for binding pods, which the Node
    // authorizer never allows a node (the bootstrap role `system:kube-scheduler` does).
    let node_user = format!("system:node:{}", crate::kubelet::NODE_NAME);
    cluster.issue_cert("kubelet", &node_user, &["system:nodes"], &Usage::Client)?;
    cluster.issue_cert("scheduler", "system:kube-scheduler", &[], &Usage::Client)?;
    // The kubelet's logs endpoint, which the API server reaches at the node's InternalIP.
    cluster.issue_cert(
        "kubelet-serving",
        crate::kubelet::NODE_NAME,
        &[],
        &Usage::Server {
            dns_names: vec![
                crate::kubelet::NODE_NAME.to_string(),
                "localhost".to_string(),
            ],
            ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        },
    )?;
    // What the API server shows the kubelet when it proxies logs and exec.
    cluster.issue_cert(
        "apiserver-kubelet-client",
        "kube-apiserver-kubelet-client",
        &["system:masters"],
        &Usage::Client,
    )?;

    // Service-account tokens: RSA, the key type every client of the tokens' JWKS understands.
    let sa = cluster.service_account_key();
    let mut genpkey = Command::new("openssl");
    genpkey
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&sa.key);
    cmd::output(&mut genpkey, CALL_LIMIT)
        .map_err(command_error("making the service-account key"))?;
    let mut public = Command::new("openssl");
    public
        .args(["pkey", "-pubout", "-in"])
        .arg(&sa.key)
        .arg("-out")
        .arg(&sa.cert);
    cmd::output(&mut public, CALL_LIMIT)
        .map_err(command_error("extracting the service-account public key"))?;
    Ok(())
}

/// Starts a component detached (it outlives `cargo xtask cluster up`), output to its log file,
/// and records its pid.
fn spawn(
    cluster: &mut Cluster,
    component: Component,
    command: &mut Command,
) -> Result<(), ClusterError> {
    let log_path = cluster.log(component);
    let log = File::create(&log_path).map_err(io(format!("creating {}", log_path.display())))?;
    process::detach(command, log).map_err(io(format!("{}", log_path.display())))?;
    let child = command
        .spawn()
        .map_err(io(format!("starting {}", component.binary())))?;
    cluster.processes.push((component, child.id()));
    cluster.save()
}

/// Polls `check` until it passes; fails at once when a process has exited (it would never pass).
fn wait_for(
    cluster: &Cluster,
    what: &'static str,
    component: Component,
    mut check: impl FnMut() -> Result<(), String>,
) -> Result<(), ClusterError> {
    let deadline = Instant::now() + START_LIMIT;
    loop {
        let problem = match check() {
            Ok(()) => return Ok(()),
            Err(problem) => problem,
        };
        for (exited, pid) in &cluster.processes {
            if !cmd::process_alive(*pid) {
                return Err(ClusterError::Exited {
                    component: exited.binary(),
                    log: process::tail(&cluster.log(*exited), LOG_TAIL),
                });
            }
        }
        if Instant::now() >= deadline {
            return Err(ClusterError::NotReady {
                what,
                component: component.binary(),
                limit: START_LIMIT,
                problem,
                log: process::tail(&cluster.log(component), LOG_TAIL),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Stops the cluster's processes one at a time, newest first (SIGTERM, then SIGKILL after
/// [`STOP_GRACE`]), then removes its directory. One at a time because the API server shuts down
/// in about a second while etcd answers, but hangs until killed when etcd went first.
fn stop(cluster: &Cluster) {
    for (_, pid) in cluster.processes.iter().rev() {
        if cluster.owns(*pid) {
            process::terminate(&[*pid], STOP_GRACE);
        }
    }
    let _ = fs::remove_dir_all(&cluster.dir);
}

/// Our components still running from `dir` without a state file saying so (an `up` killed before
/// it recorded them): found by their binary's name *and* our directory in their command line,
/// and stopped newest component first, as [`stop`] does.
fn stop_strays(dir: &Path) {
    let names = Component::ALL.map(Component::binary);
    let strays = process::find_in(&names, dir);
    for component in Component::ALL.into_iter().rev() {
        let pids: Vec<u32> = strays
            .iter()
            .filter(|(name, _)| *name == component.binary())
            .map(|(_, pid)| *pid)
            .collect();
        process::terminate(&pids, STOP_GRACE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Cluster {
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
        }
    }

    #[test]
    fn state_file_round_trips() {
        let cluster = sample();
        let dir = std::env::temp_dir().join(format!("devcluster-state-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.env");
        fs::write(&path, cluster.state_text()).unwrap();
        let state = State::read(&path).unwrap();
        assert_eq!(Cluster::from_state(&state), Some(cluster));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn urls_and_paths() {
        let cluster = sample();
        assert_eq!(cluster.server(), "https://127.0.0.1:40003");
        assert_eq!(
            cluster.audit_log(),
            Path::new("/tmp/atlas-operator-devcluster-1234/audit.log")
        );
        assert_eq!(
            Component::ControllerManager.pid_key(),
            "KUBE_CONTROLLER_MANAGER_PID"
        );
    }

    #[test]
    fn namespace_names_are_dns_labels() {
        assert_eq!(
            namespace_name("My_Test::case", 42, 7),
            "t-my-test-case-42-7"
        );
        let long = namespace_name(&"x".repeat(200), 4_194_304, 123_456);
        assert!(long.len() <= 63, "{long}");
        assert!(long.ends_with("-4194304-123456"));
        assert_eq!(namespace_name("--", 1, 2), "t-1-2");
    }

    #[test]
    fn subjects_refuse_separators() {
        assert!(subject_part("system:node:devnode").is_ok());
        assert!(subject_part("a/O=system:masters").is_err());
        assert!(subject_part("a,b").is_err());
        assert!(subject_part("").is_err());
    }
}
