//! Faults for the tests that prove the operator survives them: one component of the running
//! cluster stopped (SIGTERM, or SIGKILL where a crash is the point) and started again exactly as
//! it ran, as a supervisor (systemd, a static pod's kubelet) would restart it.
//!
//! The command is read back from `/proc/<pid>/` (program and arguments from `cmdline`, the
//! environment from `environ`, the working directory from `cwd`) rather than rebuilt, so it is
//! the one that ran even when another process (`cargo xtask cluster up`, another test binary)
//! started it. The new process is detached like the first, appends to the same log, and its pid
//! replaces the old one in the state file at once, so `status` and `down` know it.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::components::{STOP_GRACE, wait_for};
use super::control_plane::readyz;
use super::{Cluster, ClusterError, Component, NodeKind, io, state_dir};
use crate::{cmd, lifecycle, process};

/// How a component is stopped before it starts again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// `SIGTERM`, `SIGKILL` after the grace period: a planned restart.
    Term,
    /// `SIGKILL`: a crash; nothing is flushed or handed over.
    Kill,
}

/// What [`restart`] did.
#[derive(Clone, Copy, Debug)]
pub struct Restarted {
    pub old_pid: u32,
    pub new_pid: u32,
    /// From the stop signal to the component being ready again (see [`restart`]).
    pub down_for: Duration,
}

/// What it takes to start a process again as it ran.
struct Launch {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cwd: PathBuf,
}

impl Launch {
    fn of(pid: u32) -> std::io::Result<Launch> {
        let fields = |file: &str| -> std::io::Result<Vec<OsString>> {
            let bytes = std::fs::read(format!("/proc/{pid}/{file}"))?;
            Ok(bytes
                .split(|b| *b == 0)
                .filter(|field| !field.is_empty())
                .map(|field| OsString::from_vec(field.to_vec()))
                .collect())
        };
        let mut cmdline = fields("cmdline")?.into_iter();
        let program = cmdline
            .next()
            .ok_or_else(|| std::io::Error::other("an empty command line"))?;
        let env = fields("environ")?
            .into_iter()
            .filter_map(|pair| {
                let pair = pair.into_vec();
                let at = pair.iter().position(|b| *b == b'=')?;
                Some((
                    OsString::from_vec(pair[..at].to_vec()),
                    OsString::from_vec(pair[at + 1..].to_vec()),
                ))
            })
            .collect();
        Ok(Launch {
            program,
            args: cmdline.collect(),
            env,
            cwd: std::fs::read_link(format!("/proc/{pid}/cwd"))?,
        })
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd);
        command
    }
}

/// Stops `component` of the recorded cluster and starts it again with the same program,
/// arguments, environment and working directory; returns once it is ready again: the API
/// server's `/readyz` for etcd (the API server's verdict on its store) and the API server, a
/// heartbeat newer than the restart in the Node's `Ready` for a kubelet (the old one's `Ready`
/// stays `True`: nothing here turns a silent node `NotReady`), the process alive for the others.
///
/// Holds the cluster's lock throughout, so a concurrent `up` (which would find the cluster
/// broken and start a new one) waits for the restart instead.
pub fn restart(component: Component, stop: Stop) -> Result<Restarted, ClusterError> {
    let restart_error = |why: String| ClusterError::Restart {
        component: component.binary(),
        why,
    };
    let _lock = lifecycle::lock(&state_dir())?;
    let mut cluster = lifecycle::recorded::<Cluster>()
        .ok_or_else(|| restart_error("no cluster is recorded".into()))?;
    let old_pid = cluster
        .processes
        .iter()
        .find(|(c, _)| *c == component)
        .map(|(_, pid)| *pid)
        .ok_or_else(|| restart_error("this cluster does not run it".into()))?;
    if !cluster.owns(old_pid) {
        return Err(restart_error(format!("pid {old_pid} is not running")));
    }
    let launch = Launch::of(old_pid).map_err(io(format!("reading /proc/{old_pid}")))?;

    let stopped = Instant::now();
    match stop {
        Stop::Term => process::terminate(&[old_pid], STOP_GRACE),
        Stop::Kill => process::kill(&[old_pid]),
    }
    if cmd::process_alive(old_pid) {
        return Err(restart_error(format!("pid {old_pid} did not stop")));
    }
    let log_path = cluster.log(component);
    let log = OpenOptions::new()
        .append(true)
        .create(true)
        .open(&log_path)
        .map_err(io(format!("opening {}", log_path.display())))?;
    let mut command = launch.command();
    process::detach(&mut command, log).map_err(io(log_path.display().to_string()))?;
    // Seconds, as the API server writes heartbeat times.
    let started = jiff::Timestamp::now().as_second();
    let child = command
        .spawn()
        .map_err(io(format!("starting {}", component.binary())))?;
    let new_pid = child.id();
    for entry in cluster
        .processes
        .iter_mut()
        .filter(|(c, _)| *c == component)
    {
        entry.1 = new_pid;
    }
    cluster.save()?;

    match component {
        Component::Etcd | Component::ApiServer => wait_for(
            &cluster,
            "the API server was not ready after the restart",
            component,
            || readyz(&cluster),
        )?,
        Component::Kubelet | Component::NodeKubelet => {
            let node = match component {
                Component::Kubelet => NodeKind::Process,
                _ => NodeKind::Real,
            }
            .node_name();
            wait_for(
                &cluster,
                "the node sent no heartbeat after the restart",
                component,
                || heartbeat_since(&cluster, node, started),
            )?
        }
        _ => wait_for(
            &cluster,
            "the process did not stay up",
            component,
            || Ok(()),
        )?,
    }
    Ok(Restarted {
        old_pid,
        new_pid,
        down_for: stopped.elapsed(),
    })
}

/// Whether the Node's `Ready` is `True` with a heartbeat at or after `since` (Unix seconds).
fn heartbeat_since(cluster: &Cluster, node: &str, since: i64) -> Result<(), String> {
    let mut kubectl = cluster.kubectl();
    kubectl.args([
        "get",
        "node",
        node,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} \
         {.status.conditions[?(@.type==\"Ready\")].lastHeartbeatTime}",
    ]);
    let out = cmd::output(&mut kubectl, Duration::from_secs(15)).map_err(|err| err.to_string())?;
    let mut words = out.split_whitespace();
    let (status, time) = (words.next(), words.next());
    let heartbeat = time
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_second());
    match (status, heartbeat) {
        (Some("True"), Some(at)) if at >= since => Ok(()),
        _ => Err(format!("Ready and its heartbeat: {:?}", out.trim())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process's command line, environment and working directory read back as they were given.
    #[test]
    fn a_process_is_read_back_as_it_was_started() {
        let dir = std::env::temp_dir();
        let mut sh = Command::new("sh");
        sh.args(["-c", "sleep 30", "a b"])
            .env_clear()
            .env("DEVCLUSTER_FAULTS_TEST", "x=y")
            .current_dir(&dir);
        let mut child = sh.spawn().unwrap();
        let launch = Launch::of(child.id()).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(launch.program.to_string_lossy().ends_with("sh"));
        assert_eq!(launch.args, ["-c", "sleep 30", "a b"]);
        assert_eq!(
            launch.env,
            [("DEVCLUSTER_FAULTS_TEST".into(), "x=y".into())]
        );
        assert_eq!(launch.cwd, dir.canonicalize().unwrap());
        let again = launch.command();
        assert_eq!(
            again.get_args().collect::<Vec<_>>(),
            ["-c", "sleep 30", "a b"]
        );
    }
}
