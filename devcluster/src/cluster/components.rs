//! The cluster's processes: which there are, starting one so that it outlives `up` and is
//! recorded at once, waiting for it to be ready, and stopping them all.

use std::fs::{self, File};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{Cluster, ClusterError, NodeKind, io, real_node};
use crate::{cmd, process};

/// kube-apiserver needs about 5 s on 2 cores; a loaded CI machine may need many times that.
const START_LIMIT: Duration = Duration::from_secs(180);
/// How long a process gets to exit after SIGTERM before it is killed.
pub(super) const STOP_GRACE: Duration = Duration::from_secs(15);
/// How much of a component's log an error shows.
const LOG_TAIL: usize = 20;

/// A process of the control plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Etcd,
    ApiServer,
    ControllerManager,
    /// The process-kubelet ([`crate::kubelet`]).
    Kubelet,
    /// The real node's ([`super::real_node`]): containerd, the upstream kubelet, kube-scheduler.
    Containerd,
    NodeKubelet,
    Scheduler,
    Proxy,
}

impl Component {
    /// Every component of either kind of node, in start order (`down` stops them in reverse:
    /// the node first).
    pub const ALL: [Component; 8] = [
        Component::Etcd,
        Component::ApiServer,
        Component::ControllerManager,
        Component::Kubelet,
        Component::Containerd,
        Component::NodeKubelet,
        Component::Scheduler,
        Component::Proxy,
    ];

    /// The components a cluster with this kind of node runs.
    pub fn of(node: NodeKind) -> &'static [Component] {
        match node {
            NodeKind::Process => &Component::ALL[..4],
            NodeKind::Real => &[
                Component::Etcd,
                Component::ApiServer,
                Component::ControllerManager,
                Component::Containerd,
                Component::NodeKubelet,
                Component::Scheduler,
                Component::Proxy,
            ],
        }
    }

    /// The binary's name, as in `target/tools.env`.
    pub fn binary(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::ApiServer => "kube-apiserver",
            Component::ControllerManager => "kube-controller-manager",
            Component::Kubelet => "devcluster-kubelet",
            Component::Containerd => "containerd",
            Component::NodeKubelet => "kubelet",
            Component::Scheduler => "kube-scheduler",
            Component::Proxy => "kube-proxy",
        }
    }

    pub(super) fn pid_key(self) -> String {
        format!("{}_PID", self.binary().to_uppercase().replace('-', "_"))
    }
}

impl Cluster {
    /// Whether `pid` is a live process of this cluster (its command line names our directory):
    /// after a reboot a recorded pid may belong to someone else, who must not be signalled.
    pub(super) fn owns(&self, pid: u32) -> bool {
        process::runs_in(pid, &self.dir)
    }
}

/// Starts a component detached (it outlives `cargo xtask cluster up`), output to its log file,
/// and records its pid.
pub(super) fn spawn(
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
pub(super) fn wait_for(
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
///
/// The real kubelet leaves its pods running when it stops: they are killed before containerd,
/// and what they left on the host (mounts, cgroups, the bridge) is removed after it.
pub(super) fn stop(cluster: &Cluster) {
    for (component, pid) in cluster.processes.iter().rev() {
        if *component == Component::Containerd {
            real_node::tear_down_pods();
        }
        if cluster.owns(*pid) {
            process::terminate(&[*pid], STOP_GRACE);
        }
    }
    if cluster.node == NodeKind::Real || real_node::was_here(&cluster.dir) {
        real_node::clean_host(&cluster.dir);
    }
    let _ = fs::remove_dir_all(&cluster.dir);
}

/// Our components still running from `dir` without a state file saying so (an `up` killed before
/// it recorded them): found by their binary's name *and* our directory in their command line,
/// and stopped newest component first, as [`stop`] does.
pub(super) fn stop_strays(dir: &Path) {
    let names = Component::ALL.map(Component::binary);
    let strays = process::find_in(&names, dir);
    for component in Component::ALL.into_iter().rev() {
        let pids: Vec<u32> = strays
            .iter()
            .filter(|(name, _)| *name == component.binary())
            .map(|(_, pid)| *pid)
            .collect();
        if component == Component::Containerd {
            real_node::tear_down_pods();
        }
        process::terminate(&pids, STOP_GRACE);
    }
    if real_node::was_here(dir) {
        real_node::clean_host(dir);
    }
}
