//! One pod's life on the node, driven by one task: volumes, then the init containers in order
//! (native sidecars, `restartPolicy: Always`, started and left running), then the main
//! containers; their probes ([`probe`]: readiness makes a container ready, a failed liveness or
//! startup probe kills it); the pod's status written back whenever it changes;
//! `activeDeadlineSeconds`; deletion with the grace period (`SIGTERM`, then `SIGKILL`) ending in
//! the pod object's removal.
//!
//! The task reacts to four things: a newer version of the pod (from the node's watch), a
//! container's exit, a probe's verdict, and time (retries, back-off, the grace period's end, the
//! deadline). After each it runs [`Worker::sync`], which moves the pod as far as it can go and
//! writes the status when it differs from what was last written.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tokio::time::Instant;

use super::Context;
use super::env::Lookup;
use super::probe::{self, Event as ProbeEvent};
use super::status::{self, Conditions, ContainerView, Phase, PodView, State};
use super::volumes::{self, Prepared};
use super::{launch, logs, ports, sandbox};

/// A kubelet's default when the pod gives none.
const DEFAULT_GRACE_SECONDS: i64 = 30;
/// How soon a container that could not be configured (a missing Secret, …) is tried again.
const CONFIG_RETRY: Duration = Duration::from_secs(1);
/// A restarted container waits this long, doubled per restart up to [`BACKOFF_MAX`]. Shorter
/// than a kubelet's 10 s … 5 min: tests wait for these.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The longest the task sleeps without looking at the pod again.
const TICK: Duration = Duration::from_secs(1);
/// How long a finished pod's task sleeps when nothing tells it its pod changed.
const SETTLED_WAKE: Duration = Duration::from_secs(3600);
const API_LIMIT: Duration = Duration::from_secs(20);
const DEADLINE_REASON: &str = "DeadlineExceeded";
const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Restart {
    Never,
    OnFailure,
    Always,
}

/// A container of the pod and what happened to it so far.
struct Run {
    spec: Container,
    /// An init container with `restartPolicy: Always`.
    sidecar: bool,
    state: State,
    last_state: Option<State>,
    restarts: i32,
    /// Starts so far; names the run's log and termination-message files.
    attempt: u32,
    /// `bwrap`'s pid while the container runs.
    pid: Option<u32>,
    /// Whether it ever started.
    ran: bool,
    /// Not (re)started before this.
    not_before: Option<Instant>,
    program: String,
    /// This run's startup probe passed (or it has none).
    started: bool,
    /// This run's readiness probe says ready (or it has none), once started.
    ready: bool,
    /// Some run was `started`: a native sidecar no longer holds back the containers after it.
    ever_started: bool,
    /// This run's probes.
    prober: Option<tokio::task::AbortHandle>,
    /// A failed liveness or startup probe ended this run: it is restarted unless the pod's
    /// restart policy is `Never`, whatever its exit code.
    probe_killed: bool,
    /// When this run gets `SIGKILL`, after a probe had it stopped.
    kill_at: Option<Instant>,
}

impl Run {
    fn new(spec: Container, sidecar: bool, waiting_reason: &str) -> Run {
        Run {
            spec,
            sidecar,
            state: State::waiting(waiting_reason, None),
            last_state: None,
            restarts: 0,
            attempt: 0,
            pid: None,
            ran: false,
            not_before: None,
            program: String::new(),
            started: false,
            ready: false,
            ever_started: false,
            prober: None,
            probe_killed: false,
            kill_at: None,
        }
    }

    fn is_ready(&self) -> bool {
        self.state.is_running() && self.ready
    }

    fn container_id(&self, uid: &str) -> String {
        format!("devcluster://{uid}/{}/{}", self.spec.name, self.attempt)
    }

    fn due(&self, now: Instant) -> bool {
        self.not_before.is_none_or(|at| now >= at)
    }

    /// This container's entry in the pod's status; `uid` is the pod's.
    fn view(&self, uid: &str) -> ContainerView<'_> {
        ContainerView {
            name: &self.spec.name,
            image: self.spec.image.as_deref().unwrap_or(""),
            image_id: if self.program.is_empty() {
                String::new()
            } else {
                format!("devcluster://{}", self.program)
            },
            container_id: self.ran.then(|| self.container_id(uid)),
            ready: self.is_ready(),
            started: self.state.is_running() && self.started,
            restart_count: self.restarts,
            state: &self.state,
            last_state: self.last_state.as_ref(),
        }
    }
}

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

fn restart_policy(pod: &Pod) -> Restart {
    match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
        Some("Never") => Restart::Never,
        Some("OnFailure") => Restart::OnFailure,
        _ => Restart::Always,
    }
}

fn backoff(restarts: i32) -> Duration {
    let factor = 1u32 << restarts.clamp(0, 10);
    (BACKOFF_START * factor).min(BACKOFF_MAX)
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

    /// Runs the init containers in order; true once every one has completed (or, for a
    /// sidecar, started).
    async fn run_init_containers(&mut self, now: Instant) -> bool {
        for index in 0..self.init.len() {
            let run = &self.init[index];
            if run.sidecar {
                match run.state {
                    State::Running { .. } => {}
                    // An exited sidecar runs again after back-off, whatever its exit code.
                    State::Terminated { .. } => self.schedule_restart(true, index, now),
                    State::Waiting { .. } => {
                        if run.due(now) {
                            self.start(true, index).await;
                        }
                    }
                }
                // Once started (its startup probe passed), a sidecar no longer holds back the
                // containers after it.
                if !self.init[index].ever_started {
                    return false;
                }
                continue;
            }
            match run.state {
                State::Terminated { exit_code: 0, .. } => continue,
                State::Running { .. } => return false,
                State::Terminated { .. } if self.restart == Restart::Never => {
                    tracing::info!(pod = %self.key(), container = %run.spec.name, "init container failed");
                    self.phase = Some((Phase::Failed, None, None));
                    let grace = self.grace();
                    self.stop_all(Ending::InitFailed, grace);
                    return false;
                }
                State::Terminated { .. } => {
                    self.schedule_restart(true, index, now);
                    return false;
                }
                State::Waiting { .. } => {
                    if run.due(now) {
                        self.start(true, index).await;
                    }
                    return false;
                }
            }
        }
        true
    }

    async fn run_main_containers(&mut self, now: Instant) {
        for index in 0..self.main.len() {
            let run = &self.main[index];
            match &run.state {
                State::Waiting { .. } if run.due(now) => self.start(false, index).await,
                State::Terminated { exit_code, .. } => {
                    let again = match self.restart {
                        Restart::Always => true,
                        Restart::OnFailure => *exit_code != 0 || run.probe_killed,
                        Restart::Never => false,
                    };
                    if again {
                        self.schedule_restart(false, index, now);
                    }
                }
                _ => {}
            }
        }
        let all_done = self.main.iter().all(|run| match run.state.exit_code() {
            Some(code) => match self.restart {
                Restart::Never => true,
                Restart::OnFailure => code == 0 && !run.probe_killed,
                Restart::Always => false,
            },
            None => false,
        });
        if all_done {
            let phase = status::terminal_phase(self.main.iter().map(|run| &run.state));
            tracing::info!(pod = %self.key(), phase = phase.as_str(), "main containers ended");
            self.phase = Some((phase, None, None));
            // Sidecars are stopped now that the containers they served are done.
            let grace = self.grace();
            self.stop_all(Ending::Completed, grace);
        }
    }

    /// A terminated container that will run again: `CrashLoopBackOff` until its back-off ends.
    fn schedule_restart(&mut self, init: bool, index: usize, now: Instant) {
        let run = if init {
            &mut self.init[index]
        } else {
            &mut self.main[index]
        };
        let delay = backoff(run.restarts);
        let message = format!(
            "back-off {}s restarting failed container={} pod={}_{}({})",
            delay.as_secs(),
            run.spec.name,
            self.name,
            self.namespace,
            self.uid
        );
        run.last_state = Some(std::mem::replace(
            &mut run.state,
            State::waiting("CrashLoopBackOff", Some(message)),
        ));
        run.restarts += 1;
        run.not_before = Some(now + delay);
    }

    /// Starts a container, or leaves it waiting with the reason it cannot start.
    async fn start(&mut self, init: bool, index: usize) {
        let pod = self.pod.clone();
        let volumes = self.volumes.clone().unwrap_or_default();
        let run = if init {
            &mut self.init[index]
        } else {
            &mut self.main[index]
        };
        let attempt = run.attempt + 1;
        let files = launch::Files::new(&self.dir, &run.spec.name, attempt);
        let prepared = match probe::specs(&run.spec, super::NODE_IP) {
            Ok(probes) => launch::build(&self.ctx, &pod, &run.spec, &volumes, &files)
                .await
                .map(|(launch, program)| (launch, program, probes)),
            Err(message) => Err(("CreateContainerConfigError", message)),
        };
        if prepared.is_ok() {
            run.attempt = attempt;
        }
        let (launch, program, probes) = match prepared {
            Ok(ready) => ready,
            Err((reason, message)) => {
                if !matches!(&run.state, State::Waiting { reason: r, message: Some(m) } if *r == reason && *m == message)
                {
                    tracing::info!(pod = %format!("{}/{}", self.namespace, self.name), container = %run.spec.name, reason, message, "container cannot start");
                }
                run.state = State::waiting(reason, Some(message));
                run.not_before = Some(Instant::now() + CONFIG_RETRY);
                return;
            }
        };
        match sandbox::spawn(&self.ctx.bwrap, &launch) {
            Ok(mut child) => {
                let pid = child.id().unwrap_or(0);
                run.pid = Some(pid);
                run.ran = true;
                run.program = program;
                run.state = State::Running {
                    started: jiff::Timestamp::now(),
                };
                run.not_before = None;
                let has = |kind| probes.iter().any(|p: &probe::Spec| p.kind == kind);
                run.started = !has(probe::Kind::Startup);
                run.ever_started |= run.started;
                run.ready = run.started && !has(probe::Kind::Readiness);
                run.probe_killed = false;
                run.kill_at = None;
                if !probes.is_empty() {
                    let probed = self.probes_tx.clone();
                    let attempt = run.attempt;
                    let report = move |event| {
                        let _ = probed.send(Probed {
                            init,
                            index,
                            attempt,
                            event,
                        });
                    };
                    let user_agent = self.ctx.probe_user_agent.clone();
                    let task = tokio::spawn(probe::run(probes, Instant::now(), user_agent, report));
                    run.prober = Some(task.abort_handle());
                }
                self.ctx.logs.started(
                    &self.namespace,
                    &self.name,
                    &run.spec.name,
                    launch.log.clone(),
                );
                tracing::info!(pod = %format!("{}/{}", self.namespace, self.name), container = %run.spec.name, attempt = run.attempt, pid, "container started");
                let exits = self.exits_tx.clone();
                let attempt = run.attempt;
                tokio::spawn(async move {
                    let code = match child.wait().await {
                        Ok(status) => status_code(status),
                        Err(_) => 128 + libc::SIGKILL,
                    };
                    let _ = exits.send(Exit {
                        init,
                        index,
                        attempt,
                        code,
                    });
                });
            }
            Err(err) => {
                run.state = State::waiting(
                    "RunContainerError",
                    Some(format!("starting {}: {err}", self.ctx.bwrap.display())),
                );
                run.not_before = Some(Instant::now() + CONFIG_RETRY);
            }
        }
    }

    /// Records a container's exit with its termination message.
    fn exited(&mut self, exit: Exit) {
        let uid = self.uid.clone();
        let run = if exit.init {
            &mut self.init[exit.index]
        } else {
            &mut self.main[exit.index]
        };
        if run.attempt != exit.attempt || run.pid.is_none() {
            return;
        }
        run.pid = None;
        if let Some(prober) = run.prober.take() {
            prober.abort();
        }
        run.started = false;
        run.ready = false;
        run.kill_at = None;
        self.ctx
            .logs
            .ended(&self.namespace, &self.name, &run.spec.name);
        let files = launch::Files::new(&self.dir, &run.spec.name, run.attempt);
        // A database's data directory of this run: nothing reads it again.
        let data = files.data.clone();
        tokio::spawn(async move {
            if tokio::fs::try_exists(&data).await.unwrap_or(false) {
                let _ = tokio::fs::remove_dir_all(&data).await;
            }
        });
        let fallback =
            run.spec.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
        let message = logs::termination_message(
            &files.termination_message,
            &files.log,
            fallback,
            exit.code != 0,
        );
        let started = match &run.state {
            State::Running { started } => Some(*started),
            _ => None,
        };
        tracing::info!(pod = %format!("{}/{}", self.namespace, self.name), container = %run.spec.name, code = exit.code, "container exited");
        run.state = State::exited(exit.code, message, started, run.container_id(&uid));
    }

    /// Takes in a probe's verdict on a run that still runs; a failed liveness or startup probe
    /// stops the container (`SIGTERM`, `SIGKILL` after the probe's or the pod's grace period).
    fn probed(&mut self, probed: Probed) {
        let key = self.key();
        let pod_grace = self.grace();
        let ending = self.ending.is_some();
        let run = if probed.init {
            &mut self.init[probed.index]
        } else {
            &mut self.main[probed.index]
        };
        let Some(pid) = run.pid.filter(|_| run.attempt == probed.attempt) else {
            return;
        };
        match probed.event {
            ProbeEvent::Started => {
                run.started = true;
                run.ever_started = true;
                run.ready = run.spec.readiness_probe.is_none();
            }
            ProbeEvent::Ready(ready, failure) => {
                let failure = failure.unwrap_or_default();
                tracing::info!(pod = %key, container = %run.spec.name, ready, failure = %failure, "readiness changed");
                run.ready = ready && run.started;
            }
            // The pod is stopping anyway, with its own grace period.
            ProbeEvent::Failed { .. } if ending => {}
            ProbeEvent::Failed {
                kind,
                message,
                termination_grace,
            } => {
                // A kubelet says this in an event (Unhealthy, Killing); we have no events.
                tracing::info!(pod = %key, container = %run.spec.name, probe = %kind.as_str(), failure = %message, "probe failed, killing the container");
                run.probe_killed = true;
                run.ready = false;
                let grace = termination_grace.unwrap_or(pod_grace).max(0) as u64;
                if grace == 0 {
                    sandbox::kill(pid);
                } else {
                    sandbox::terminate(pid);
                    run.kill_at = Some(Instant::now() + Duration::from_secs(grace));
                }
            }
        }
    }

    /// Asks every running container to stop (`SIGTERM` now, `SIGKILL` after `grace` seconds);
    /// containers not started yet never will be.
    fn stop_all(&mut self, ending: Ending, grace: i64) {
        let grace = Duration::from_secs(grace.max(0) as u64);
        // A deletion overrides the other endings (its grace period may be shorter).
        if self.ending.is_some() && ending != Ending::Deleted {
            return;
        }
        self.ending = Some(ending);
        let kill_at = Instant::now() + grace;
        self.kill_at = Some(self.kill_at.map_or(kill_at, |at| at.min(kill_at)));
        for run in self.init.iter_mut().chain(self.main.iter_mut()) {
            if let Some(pid) = run.pid {
                if grace.is_zero() {
                    sandbox::kill(pid);
                } else {
                    sandbox::terminate(pid);
                }
            }
            run.not_before = None;
        }
    }

    /// The pod is ending: `SIGKILL` once the grace period is over; when nothing runs any more,
    /// the final status, and for a deleted pod the object's removal.
    async fn finish(&mut self, now: Instant) {
        if self.any_running() {
            if self.kill_at.is_some_and(|at| now >= at) {
                for run in self.runs() {
                    if let Some(pid) = run.pid {
                        sandbox::kill(pid);
                    }
                }
            }
            self.write_status().await;
            return;
        }
        if self.phase.is_none_or(|(phase, ..)| !phase.is_terminal()) {
            // Stopped before its containers ended: never-started containers are lost.
            for run in self.init.iter_mut().chain(self.main.iter_mut()) {
                if let State::Waiting { .. } = run.state {
                    run.state = State::Terminated {
                        exit_code: 137,
                        reason: "ContainerStatusUnknown".into(),
                        message: "The container could not be located when the pod was terminated"
                            .into(),
                        started: None,
                        finished: jiff::Timestamp::now(),
                        container_id: String::new(),
                    };
                }
            }
            self.phase = Some(match self.ending {
                Some(Ending::Deadline) => {
                    (Phase::Failed, Some(DEADLINE_REASON), Some(DEADLINE_MESSAGE))
                }
                _ => (
                    status::terminal_phase(self.main.iter().map(|run| &run.state)),
                    None,
                    None,
                ),
            });
        }
        self.write_status().await;
        // A finished pod no longer takes a place on the node, nor its ports.
        self.slot = None;
        self.release_ports();
        if !self.emptied {
            self.emptied = true;
            self.remove_empty_dirs().await;
        }
        if self.pod.metadata.deletion_timestamp.is_some() && !self.delete_sent {
            self.delete_pod().await;
        }
    }

    /// A finished pod's `emptyDir`s (a dev database's data, say): no container of the pod
    /// runs again to read them, so they go now rather than with the pod object as on a node.
    async fn remove_empty_dirs(&self) {
        let volumes = self.pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
        for volume in volumes.into_iter().flatten() {
            if volume.empty_dir.is_some() {
                let dir = self.dir.join("volumes").join(&volume.name);
                if let Err(err) = tokio::fs::remove_dir_all(&dir).await
                    && err.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(pod = %self.key(), dir = %dir.display(), %err, "removing an emptyDir");
                }
            }
        }
    }

    /// Removes the pod object once its containers are gone (grace period 0: nothing runs), only
    /// if it is still the same pod.
    async fn delete_pod(&mut self) {
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match tokio::time::timeout(API_LIMIT, api.delete(&self.name, &params)).await {
            Ok(Ok(_)) => self.delete_sent = true,
            Ok(Err(kube::Error::Api(status))) if status.code == 404 || status.code == 409 => {
                self.delete_sent = true;
            }
            Ok(Err(err)) => tracing::warn!(pod = %self.key(), %err, "deleting the pod"),
            Err(_) => tracing::warn!(pod = %self.key(), "deleting the pod timed out"),
        }
    }

    /// The pod object is gone: kill what still runs, forget its logs, remove its files.
    async fn cleanup(&mut self) {
        for run in self.runs() {
            if let Some(pid) = run.pid {
                sandbox::kill(pid);
            }
            if let Some(prober) = &run.prober {
                prober.abort();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.any_running() && Instant::now() < deadline {
            match tokio::time::timeout_at(deadline, self.exits_rx.recv()).await {
                Ok(Some(exit)) => self.exited(exit),
                _ => break,
            }
        }
        self.release_ports();
        self.ctx.logs.forget_pod(&self.namespace, &self.name);
        let _ = tokio::fs::remove_dir_all(&self.dir).await;
        tracing::info!(pod = %self.key(), "pod removed");
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
        status::pod_status(&pod, &mut self.conditions, jiff::Timestamp::now())
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

/// The container's exit code as a runtime reports it: 128 + the signal when one ended it.
fn status_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(128 + libc::SIGKILL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(20), BACKOFF_MAX);
    }

    #[test]
    fn restart_policies() {
        let pod = |policy: &str| -> Pod {
            serde_json::from_value(json!({"spec": {"containers": [], "restartPolicy": policy}}))
                .unwrap()
        };
        assert_eq!(restart_policy(&pod("Never")), Restart::Never);
        assert_eq!(restart_policy(&pod("OnFailure")), Restart::OnFailure);
        assert_eq!(restart_policy(&pod("Always")), Restart::Always);
    }
}
