//! The cluster as a shared service of [`crate::lifecycle`]: what `target/devcluster/state.env`
//! records (the directory, the ports, a pid per component, as each starts), how `status`
//! checks it, and how `down` stops it.

use std::fs;
use std::path::PathBuf;

use super::components::{Component, stop, stop_strays};
use super::control_plane::readyz;
use super::{
    Cluster, ClusterError, NodeKind, Ports, cluster_dir, io, kubeconfig_file, state_dir, state_file,
};
use crate::lifecycle::{self, Service, State};

impl Cluster {
    pub(super) fn state_text(&self) -> String {
        let mut text = format!(
            "# Written by `cargo xtask cluster up`; removed by `cargo xtask cluster down`.\n\
             DEVCLUSTER_DIR={}\nSERVER={}\nKUBECONFIG={}\nAUDIT_LOG={}\n\
             ETCD_PORT={}\nETCD_PEER_PORT={}\nAPISERVER_PORT={}\nCONTROLLER_MANAGER_PORT={}\n\
             KUBELET_PORT={}\nNODE={}\n",
            self.dir.display(),
            self.server(),
            self.kubeconfig().display(),
            self.audit_log().display(),
            self.ports.etcd,
            self.ports.etcd_peer,
            self.ports.apiserver,
            self.ports.controller_manager,
            self.ports.kubelet,
            self.node.name(),
        );
        for (component, pid) in &self.processes {
            text.push_str(&format!("{}={pid}\n", component.pid_key()));
        }
        text
    }

    /// Records the processes started so far: a failed or killed `up` leaves enough behind for
    /// the next `up` or `down` to stop them.
    pub(super) fn save(&self) -> Result<(), ClusterError> {
        Ok(lifecycle::write_state(&state_file(), &self.state_text())?)
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
            // State files from before the real node had only the process-kubelet.
            node: match state.get("NODE") {
                None => NodeKind::Process,
                Some(name) => NodeKind::parse(name)?,
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

fn check(cluster: &Cluster) -> Result<(), String> {
    for &component in Component::of(cluster.node) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::tests::sample;

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
}
