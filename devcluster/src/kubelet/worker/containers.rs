//! Starting the pod's containers in their order, taking in their exits and their probes'
//! verdicts, and restarting them after back-off.

use std::time::Duration;

use tokio::time::Instant;

use super::run::{Restart, backoff};
use super::{Ending, Exit, Probed, Worker};
use crate::kubelet::pod_status::{self, Phase, State};
use crate::kubelet::probe::{self, Event as ProbeEvent};
use crate::kubelet::{NODE_IP, launch, logs, sandbox};

/// How soon a container that could not be configured (a missing Secret, …) is tried again.
const CONFIG_RETRY: Duration = Duration::from_secs(1);

impl Worker {
    /// Runs the init containers in order; true once every one has completed (or, for a
    /// sidecar, started).
    pub(super) async fn run_init_containers(&mut self, now: Instant) -> bool {
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

    pub(super) async fn run_main_containers(&mut self, now: Instant) {
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
            let phase = pod_status::terminal_phase(self.main.iter().map(|run| &run.state));
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
        let prepared = match probe::specs(&run.spec, NODE_IP) {
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
    pub(super) fn exited(&mut self, exit: Exit) {
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
    pub(super) fn probed(&mut self, probed: Probed) {
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
}

/// The container's exit code as a runtime reports it: 128 + the signal when one ended it.
fn status_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(128 + libc::SIGKILL)
}
