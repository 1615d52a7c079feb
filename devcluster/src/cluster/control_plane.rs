//! The control plane: etcd, kube-apiserver and kube-controller-manager, the real binaries from
//! `tools/`, started one after the other on the cluster's loopback ports with the certificates
//! of [`super::pki`]. What kind of node joins them is [`super::process_node`]'s business.

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::components::{spawn, wait_for};
use super::{Cluster, ClusterError, Component, NodeKind, io, kubeconfig_file};
use crate::cmd;

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
/// status (without it the Eviction API refuses every eviction the budget covers), the
/// resource quota controller computes a ResourceQuota's usage (without it quota admission does
/// not hold a namespace to its quota as a real cluster does).
pub const CONTROLLERS: &[&str] = &[
    "resourcequota-controller",
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

/// [`CONTROLLERS`], and for the real node the node lifecycle controller: the real kubelet
/// registers its Node with the `node.kubernetes.io/not-ready` taint, which only that controller
/// lifts once the node is Ready (the process-kubelet binds its pods itself, taints or not).
fn controllers(node: NodeKind) -> String {
    let mut all = CONTROLLERS.to_vec();
    if node == NodeKind::Real {
        // And kube-proxy routes a Service only to the endpoints in its EndpointSlices.
        all.extend(["node-lifecycle-controller", "endpointslice-controller"]);
    }
    all.join(",")
}

/// Every request at `Metadata` level (who did what to which object; no bodies, so no Secret
/// values), one event per request: `RequestReceived` would double every line. A fixed text, not
/// built from any value.
const AUDIT_POLICY: &str = "\
# Written by devcluster (src/cluster/control_plane.rs).
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages:
  - RequestReceived
rules:
  - level: Metadata
";

/// The control plane's programs, found before anything starts.
pub(super) struct Binaries {
    etcd: PathBuf,
    apiserver: PathBuf,
    controller_manager: PathBuf,
}

impl Binaries {
    /// The built tools (and `kubectl`, which every check uses): a missing one fails `up` before
    /// anything runs.
    pub(super) fn find() -> Result<Binaries, ClusterError> {
        let binaries = Binaries {
            etcd: crate::tools::path("etcd")?,
            apiserver: crate::tools::path("kube-apiserver")?,
            controller_manager: crate::tools::path("kube-controller-manager")?,
        };
        crate::tools::path("kubectl")?;
        Ok(binaries)
    }
}

/// Starts etcd, the API server (returning once it is ready) and the controller manager, and
/// writes the admin's kubeconfig.
pub(super) fn start(cluster: &mut Cluster, binaries: &Binaries) -> Result<(), ClusterError> {
    let Binaries {
        etcd,
        apiserver,
        controller_manager,
    } = binaries;
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
    let mut command = Command::new(etcd);
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
    let mut command = Command::new(apiserver);
    command
        .arg(format!("--etcd-servers={client_url}"))
        .arg(format!("--bind-address={}", cluster.api_address()))
        .arg(format!("--advertise-address={}", cluster.api_address()))
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
        // On loopback nothing can reach the `kubernetes` Service's endpoint; on the real node's
        // bridge its pods can (through kube-proxy), so the API server keeps the endpoint.
        .arg(match cluster.node {
            NodeKind::Process => "--endpoint-reconciler-type=none",
            NodeKind::Real => "--endpoint-reconciler-type=lease",
        })
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

    let mut command = Command::new(controller_manager);
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
        .arg(format!("--controllers={}", controllers(cluster.node)))
        // Each controller acts as its own service account in kube-system, as on kubeadm
        // clusters: the audit log names the job controller, the garbage collector, …
        .arg("--use-service-account-credentials=true")
        .arg(format!(
            "--service-account-private-key-file={}",
            sa.key.display()
        ))
        .arg(format!("--root-ca-file={}", cluster.ca().cert.display()));
    spawn(cluster, Component::ControllerManager, &mut command)?;
    Ok(())
}

/// Ready for tests when namespaces get their `default` service account (the serviceaccount
/// controller runs) and `kube-root-ca.crt` (the publisher runs): pods need both.
pub(super) fn wait_until_set_up(cluster: &Cluster) -> Result<(), ClusterError> {
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
    )
}

/// The API server's own verdict: etcd reachable, every post-start hook (RBAC bootstrap roles,
/// CRD informers, …) done.
pub(super) fn readyz(cluster: &Cluster) -> Result<(), String> {
    let mut kubectl = cluster.kubectl();
    kubectl.args(["get", "--raw", "/readyz", "--request-timeout=5s"]);
    match cmd::output(&mut kubectl, Duration::from_secs(15)) {
        Ok(out) if out.trim() == "ok" => Ok(()),
        Ok(out) => Err(format!("/readyz answered {}", out.trim())),
        Err(err) => Err(format!("/readyz: {err}")),
    }
}
