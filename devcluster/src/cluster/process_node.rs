//! The cluster's node: the process-kubelet `devcluster-kubelet` ([`crate::kubelet`]), which
//! registers the Node `devnode` and runs its pods as local processes. The control plane
//! ([`super::control_plane`]) does not depend on the node's kind; this module is the one place
//! that knows it is a process-kubelet.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::components::{spawn, wait_for};
use super::{Cluster, ClusterError, Component, command_error};
use crate::cmd;

/// Building `devcluster-kubelet` from a cold target directory (kube, k8s-openapi, rustls) takes
/// a few minutes on 2 cores; a fresh one is a no-op.
const KUBELET_BUILD_LIMIT: Duration = Duration::from_secs(30 * 60);
/// The variable naming a prebuilt `devcluster-kubelet` (otherwise `up` builds it with cargo).
pub const KUBELET_BIN_ENV: &str = "DEVCLUSTER_KUBELET_BIN";

/// What the node needs before the cluster starts: the host's packages (bubblewrap, for the
/// kubelet's sandboxes) and the kubelet's binary.
pub(super) fn prepare() -> Result<PathBuf, ClusterError> {
    crate::packages::ensure()?;
    kubelet_binary()
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
pub(super) fn start(cluster: &mut Cluster, kubelet: &Path) -> Result<(), ClusterError> {
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

/// Returns once the node reports itself Ready.
pub(super) fn wait_until_ready(cluster: &Cluster) -> Result<(), ClusterError> {
    wait_for_node(cluster, crate::kubelet::NODE_NAME, Component::Kubelet)
}

/// Returns once the Node `name` reports itself Ready; `kubelet` is whose log an error shows.
pub(super) fn wait_for_node(
    cluster: &Cluster,
    name: &str,
    kubelet: Component,
) -> Result<(), ClusterError> {
    wait_for(cluster, "the node did not become Ready", kubelet, || {
        let mut kubectl = cluster.kubectl();
        kubectl.args([
            "get",
            "node",
            name,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        match cmd::output(&mut kubectl, Duration::from_secs(15)) {
            Ok(out) if out.trim() == "True" => Ok(()),
            Ok(out) => Err(format!("Ready is {:?}", out.trim())),
            Err(err) => Err(err.to_string()),
        }
    })
}
