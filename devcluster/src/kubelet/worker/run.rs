//! A container of the pod and what happened to it so far, and the pod's rules for running it
//! again.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use tokio::time::Instant;

use crate::kubelet::pod_status::{ContainerView, State};

/// A restarted container waits this long, doubled per restart up to [`BACKOFF_MAX`]. Shorter
/// than a kubelet's 10 s … 5 min: tests wait for these.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Restart {
    Never,
    OnFailure,
    Always,
}

pub(super) fn restart_policy(pod: &Pod) -> Restart {
    match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
        Some("Never") => Restart::Never,
        Some("OnFailure") => Restart::OnFailure,
        _ => Restart::Always,
    }
}

pub(super) fn backoff(restarts: i32) -> Duration {
    let factor = 1u32 << restarts.clamp(0, 10);
    (BACKOFF_START * factor).min(BACKOFF_MAX)
}

/// A container of the pod and what happened to it so far.
pub(super) struct Run {
    pub(super) spec: Container,
    /// An init container with `restartPolicy: Always`.
    pub(super) sidecar: bool,
    pub(super) state: State,
    pub(super) last_state: Option<State>,
    pub(super) restarts: i32,
    /// Starts so far; names the run's log and termination-message files.
    pub(super) attempt: u32,
    /// `bwrap`'s pid while the container runs.
    pub(super) pid: Option<u32>,
    /// Whether it ever started.
    pub(super) ran: bool,
    /// Not (re)started before this.
    pub(super) not_before: Option<Instant>,
    pub(super) program: String,
    /// This run's startup probe passed (or it has none).
    pub(super) started: bool,
    /// This run's readiness probe says ready (or it has none), once started.
    pub(super) ready: bool,
    /// Some run was `started`: a native sidecar no longer holds back the containers after it.
    pub(super) ever_started: bool,
    /// This run's probes.
    pub(super) prober: Option<tokio::task::AbortHandle>,
    /// A failed liveness or startup probe ended this run: it is restarted unless the pod's
    /// restart policy is `Never`, whatever its exit code.
    pub(super) probe_killed: bool,
    /// When this run gets `SIGKILL`, after a probe had it stopped.
    pub(super) kill_at: Option<Instant>,
}

impl Run {
    pub(super) fn new(spec: Container, sidecar: bool, waiting_reason: &str) -> Run {
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

    pub(super) fn is_ready(&self) -> bool {
        self.state.is_running() && self.ready
    }

    pub(super) fn container_id(&self, uid: &str) -> String {
        format!("devcluster://{uid}/{}/{}", self.spec.name, self.attempt)
    }

    pub(super) fn due(&self, now: Instant) -> bool {
        self.not_before.is_none_or(|at| now >= at)
    }

    /// This container's entry in the pod's status; `uid` is the pod's.
    pub(super) fn view(&self, uid: &str) -> ContainerView<'_> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
