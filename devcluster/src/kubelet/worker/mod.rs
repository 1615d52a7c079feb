//! One pod's life on the node, driven by one task: volumes, then the init containers in order
//! (native sidecars, `restartPolicy: Always`, started and left running), then the main
//! containers; their probes ([`super::probe`]: readiness makes a container ready, a failed
//! liveness or startup probe kills it); the pod's status written back whenever it changes;
//! `activeDeadlineSeconds`; deletion with the grace period (`SIGTERM`, then `SIGKILL`) ending in
//! the pod object's removal.
//!
//! The task reacts to four things: a newer version of the pod (from the node's watch), a
//! container's exit, a probe's verdict, and time (retries, back-off, the grace period's end, the
//! deadline). After each it runs [`Worker::sync`], which moves the pod as far as it can go and
//! writes the status ([`super::pod_status`]) when it differs from what was last written.
//!
//! `run` is a container's record and its restart rules, `containers` starts the containers and
//! takes in their exits and probes, `ending` stops the pod and removes it.

mod containers;
mod ending;
mod run;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tokio::time::Instant;

use super::Context;
use super::env::Lookup;
use super::pod_status::{self, Conditions, Phase, PodView, State};
use super::probe::Event as ProbeEvent;
use super::volumes::{self, Prepared};
use super::{ports, sandbox};
use run::{Restart, Run, restart_policy};

/// A kubelet's default when the pod gives none.
const DEFAULT_GRACE_SECONDS: i64 = 30;
/// The longest the task sleeps without looking at the pod again.
const TICK: Duration = Duration::from_secs(1);
/// How long a finished pod's task sleeps when nothing tells it its pod changed.
const SETTLED_WAKE: Duration = Duration::from_secs(3600);
const API_LIMIT: Duration = Duration::from_secs(20);
const DEADLINE_REASON: &str = "DeadlineExceeded";
const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

/// Why a running pod is being stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// The pod object was deleted (it has a deletion timestamp).
    Deleted,
    /// `activeDeadlineSeconds` passed.
    Deadline,
    /// The main containers ended; the sidecars are being stopped.
    Completed,
    /// An init container failed and the pod does not restart it.
    InitFailed,
}

/// A container's exit, sent by the task that waits for it.
struct Exit {
    init: bool,
    index: usize,
    attempt: u32,
    code: i32,
}

/// A probe's verdict on one run of a container, sent by its prober task.
struct Probed {
    init: bool,
    index: usize,
    attempt: u32,
    event: ProbeEvent,
}

pub struct Worker {
    ctx: Arc<Context>,
    pod: Arc<Pod>,
    namespace: String,
    name: String,
    uid: String,
    dir: PathBuf,
    restart: Restart,
    slot: Option<OwnedSemaphorePermit>,
    volumes: Option<HashMap<String, Prepared>>,
    volume_error: Option<String>,
    volume_retry: Option<Instant>,
    start_time: Option<jiff::Timestamp>,
    init: Vec<Run>,
    main: Vec<Run>,
    ending: Option<Ending>,
    /// When the containers still running get `SIGKILL`.
    kill_at: Option<Instant>,
    phase: Option<(Phase, Option<&'static str>, Option<&'static str>)>,
    conditions: Conditions,
    written: Option<Value>,
    /// A finished pod found at start: its status is the earlier kubelet's and stays.
    frozen: bool,
    /// The finished pod's emptyDirs are removed.
    emptied: bool,
    delete_sent: bool,
    /// The last status write failed: it is tried again at the next tick.
    status_unwritten: bool,
    exits_tx: mpsc::UnboundedSender<Exit>,
    exits_rx: mpsc::UnboundedReceiver<Exit>,
    probes_tx: mpsc::UnboundedSender<Probed>,
    probes_rx: mpsc::UnboundedReceiver<Probed>,
}

impl Worker {
    pub fn new(ctx: Arc<Context>, pod: Pod) -> Worker {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let init: Vec<Run> = spec
            .init_containers
            .unwrap_or_default()
            .into_iter()
            .map(|c| {
                let sidecar = c.restart_policy.as_deref() == Some("Always");
                Run::new(c, sidecar, "PodInitializing")
            })
            .collect();
        let waiting = if init.is_empty() {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        let main = spec
            .containers
            .into_iter()
            .map(|c| Run::new(c, false, waiting))
            .collect();
        let (exits_tx, exits_rx) = mpsc::unbounded_channel();
        let (probes_tx, probes_rx) = mpsc::unbounded_channel();
        let dir = ctx.pods_dir.join(&uid);
        let mut worker = Worker {
            restart: restart_policy(&pod),
            ctx,
            namespace,
            name,
            uid,
            dir,
            slot: None,
            volumes: None,
            volume_error: None,
            volume_retry: None,
            start_time: None,
            init,
            main,
            ending: None,
            kill_at: None,
            phase: None,
            conditions: Conditions::default(),
            written: None,
            frozen: false,
            emptied: false,
            delete_sent: false,
            status_unwritten: false,
            exits_tx,
            exits_rx,
            probes_tx,
            probes_rx,
            pod: Arc::new(pod),
        };
        worker.adopt();
        worker
    }

    /// A pod this node ran before the kubelet restarted: finished pods stay as they are; pods
    /// whose containers ran cannot be taken over (their processes died with the old kubelet)
    /// and end as failed, as a real node's would if its runtime had lost them.
    fn adopt(&mut self) {
        let status = self.pod.status.clone().unwrap_or_default();
        self.start_time = status.start_time.as_ref().map(|t| t.0);
        let phase = status.phase.as_deref().and_then(Phase::parse);
        let ran = status
            .container_statuses
            .iter()
            .chain(status.init_container_statuses.iter())
            .flatten()
            .any(|c| c.state.as_ref().is_some_and(|s| s.waiting.is_none()));
        match phase {
            Some(phase) if phase.is_terminal() => {
                self.phase = Some((phase, None, None));
                self.frozen = true;
            }
            _ if ran => {
                let lost = State::Terminated {
                    exit_code: 137,
                    reason: "ContainerStatusUnknown".into(),
                    message: "The process-kubelet restarted while the container ran".into(),
                    started: None,
                    finished: jiff::Timestamp::now(),
                    container_id: String::new(),
                };
                for run in self.init.iter_mut().chain(self.main.iter_mut()) {
                    run.state = lost.clone();
                }
                self.phase = Some((Phase::Failed, None, None));
            }
            _ => {}
        }
    }

    /// Runs the pod until its object is gone from the API server (the sender is dropped).
    pub async fn run(mut self, mut updates: watch::Receiver<Arc<Pod>>) {
        tracing::info!(pod = %self.key(), "pod assigned");
        loop {
            self.sync().await;
            let wake = self.next_wake();
            tokio::select! {
                changed = updates.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.pod = updates.borrow_and_update().clone();
                }
                Some(exit) = self.exits_rx.recv() => self.exited(exit),
                Some(probed) = self.probes_rx.recv() => self.probed(probed),
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
        self.cleanup().await;
    }

    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn runs(&self) -> impl Iterator<Item = &Run> {
        self.init.iter().chain(self.main.iter())
    }

    fn next_wake(&self) -> Instant {
        if self.settled() {
            // Only a change to the pod (its deletion) can give it more to do. Ticking every
            // finished pod each second made a node with 1,000 of them spend its time building
            // statuses that had not changed, and starved its pod watch (docs/performance.md).
            return Instant::now() + SETTLED_WAKE;
        }
        let mut wake = Instant::now() + TICK;
        let candidates = self
            .runs()
            .flat_map(|run| [run.not_before, run.kill_at])
            .flatten()
            .chain(self.kill_at)
            .chain(self.volume_retry);
        for at in candidates {
            wake = wake.min(at);
        }
        wake.max(Instant::now() + Duration::from_millis(20))
    }

    /// Finished, cleaned up and reported: nothing left to do until the pod object changes.
    fn settled(&self) -> bool {
        self.phase.is_some_and(|(phase, ..)| phase.is_terminal())
            && !matches!(self.ending, Some(Ending::Deleted))
            && self.pod.metadata.deletion_timestamp.is_none()
            && !self.any_running()
            && self.emptied
            && !self.status_unwritten
    }

    fn any_running(&self) -> bool {
        self.runs().any(|run| run.pid.is_some())
    }

    /// Moves the pod along, then writes its status if it changed.
    async fn sync(&mut self) {
        let now = Instant::now();
        for run in self.runs() {
            if let (Some(pid), Some(at)) = (run.pid, run.kill_at)
                && now >= at
            {
                sandbox::kill(pid);
            }
        }
        let deleting = self.pod.metadata.deletion_timestamp.is_some();
        let terminal = self.phase.is_some_and(|(phase, ..)| phase.is_terminal());
        if deleting && !matches!(self.ending, Some(Ending::Deleted)) {
            let grace = self
                .pod
                .metadata
                .deletion_grace_period_seconds
                .unwrap_or(DEFAULT_GRACE_SECONDS);
            self.stop_all(Ending::Deleted, grace);
        } else if !terminal && self.ending.is_none() && self.deadline_passed() {
            tracing::info!(pod = %self.key(), "activeDeadlineSeconds passed");
            let grace = self.grace();
            self.stop_all(Ending::Deadline, grace);
        }

        if self.ending.is_some() || terminal {
            self.finish(now).await;
            return;
        }
        if self.slot.is_none() {
            if let Err(message) = self.claim_ports() {
                // Pods share the node's loopback: the pod waits for the port, as a real
                // scheduler would keep it off a node where the host port is taken.
                for run in self.init.iter_mut().chain(self.main.iter_mut()) {
                    if let State::Waiting { message: m, .. } = &mut run.state {
                        *m = Some(message.clone());
                    }
                }
                self.write_status().await;
                return;
            }
            match self.ctx.slots.clone().try_acquire_owned() {
                Ok(permit) => self.slot = Some(permit),
                Err(_) => {
                    // The node is full: the pod waits, as it would for a real node's capacity.
                    self.write_status().await;
                    return;
                }
            }
        }
        if self.start_time.is_none() {
            self.start_time = Some(jiff::Timestamp::now());
        }
        if self.volumes.is_none() && self.volume_retry.is_none_or(|at| now >= at) {
            self.prepare_volumes().await;
        }
        if self.volumes.is_none() {
            self.write_status().await;
            return;
        }

        if self.run_init_containers(now).await {
            self.run_main_containers(now).await;
        }
        self.write_status().await;
    }

    /// Takes the pod's `containerPort`s, all or none; says which pod holds one that is taken.
    fn claim_ports(&self) -> Result<(), String> {
        let wanted = self
            .runs()
            .flat_map(|run| ports::wanted(&run.spec))
            .collect();
        self.ctx.ports.claim(&self.uid, wanted)
    }

    fn release_ports(&self) {
        self.ctx.ports.release(&self.uid);
    }

    fn grace(&self) -> i64 {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(DEFAULT_GRACE_SECONDS)
    }

    fn deadline_passed(&self) -> bool {
        let Some(seconds) = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.active_deadline_seconds)
        else {
            return false;
        };
        let Some(start) = self.start_time else {
            return false;
        };
        let elapsed = jiff::Timestamp::now().duration_since(start);
        elapsed.as_secs() >= seconds
    }

    async fn prepare_volumes(&mut self) {
        let mut lookup = Lookup::new(self.ctx.client.clone(), &self.namespace);
        match volumes::prepare(&self.pod, &self.dir, &self.ctx.client, &mut lookup).await {
            Ok(prepared) => {
                self.volumes = Some(prepared);
                if self.volume_error.take().is_some() {
                    for run in self.init.iter_mut().chain(self.main.iter_mut()) {
                        if let State::Waiting { message, .. } = &mut run.state {
                            *message = None;
                        }
                    }
                }
                self.volume_retry = None;
            }
            Err(err) => {
                let message = err.to_string();
                if self.volume_error.as_deref() != Some(&message) {
                    tracing::warn!(pod = %self.key(), %err, "volume not ready");
                }
                // A kubelet says this in an event (FailedMount); we have no events, so the
                // waiting containers carry it.
                for run in self.init.iter_mut().chain(self.main.iter_mut()) {
                    if let State::Waiting { message: m, .. } = &mut run.state {
                        *m = Some(message.clone());
                    }
                }
                self.volume_error = Some(message);
                self.volume_retry = Some(Instant::now() + Duration::from_secs(2));
            }
        }
    }

    fn current_phase(&self) -> Phase {
        if let Some((phase, ..)) = self.phase {
            // A kubelet reports the end only once every container, sidecars too, has stopped.
            if phase.is_terminal() && self.any_running() {
                return Phase::Running;
            }
            return phase;
        }
        let initialized = self.initialized();
        let started = self.main.iter().any(|run| run.ran);
        if initialized && started {
            Phase::Running
        } else {
            Phase::Pending
        }
    }

    fn initialized(&self) -> bool {
        self.init.iter().all(|run| {
            if run.sidecar {
                run.ever_started
            } else {
                run.state.exit_code() == Some(0)
            }
        })
    }

    fn status(&mut self) -> Value {
        let phase = self.current_phase();
        let uid = &self.uid;
        let pod = PodView {
            phase,
            initialized: self.initialized(),
            sandbox_ready: self.volumes.is_some() && !phase.is_terminal(),
            // Readiness covers the main containers and the sidecars: running, and ready by their
            // readiness probes if they have any.
            unready: self
                .main
                .iter()
                .chain(self.init.iter().filter(|run| run.sidecar))
                .filter(|run| !run.is_ready())
                .map(|run| run.spec.name.as_str())
                .collect(),
            uninitialized: self
                .init
                .iter()
                .filter(|run| {
                    !(run.state.exit_code() == Some(0) || (run.sidecar && run.ever_started))
                })
                .map(|run| run.spec.name.as_str())
                .collect(),
            init: self.init.iter().map(|run| run.view(uid)).collect(),
            main: self.main.iter().map(|run| run.view(uid)).collect(),
            start_time: self.start_time,
            reason: match self.phase {
                Some((_, Some(reason), message)) => Some((reason, message)),
                _ => None,
            },
        };
        pod_status::pod_status(&pod, &mut self.conditions, jiff::Timestamp::now())
    }

    /// Writes the status when it differs from the last one written.
    async fn write_status(&mut self) {
        if self.frozen {
            return;
        }
        let status = self.status();
        if self.written.as_ref() == Some(&status) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let body = json!({ "status": status });
        let params = PatchParams::default();
        let patch = Patch::Strategic(&body);
        let call = api.patch_status(&self.name, &params, &patch);
        self.status_unwritten = true;
        match tokio::time::timeout(API_LIMIT, call).await {
            Ok(Ok(_)) => self.written = Some(status),
            // Gone already: the watch will say so.
            Ok(Err(kube::Error::Api(err))) if err.code == 404 => self.written = Some(status),
            Ok(Err(err)) => {
                tracing::warn!(pod = %self.key(), %err, "writing the pod's status");
                return;
            }
            Err(_) => {
                tracing::warn!(pod = %self.key(), "writing the pod's status timed out");
                return;
            }
        }
        self.status_unwritten = false;
    }
}
