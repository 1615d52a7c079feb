//! Container states and the pieces of a pod's status built from them, as a kubelet reports
//! them: pure functions, so the rules are tested without a cluster.

use serde_json::{Value, json};

/// The state of one container, as `containerStatuses[].state` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started: jiff::Timestamp,
    },
    Terminated {
        exit_code: i32,
        reason: String,
        message: String,
        started: Option<jiff::Timestamp>,
        finished: jiff::Timestamp,
        container_id: String,
    },
}

impl State {
    pub fn waiting(reason: &str, message: Option<String>) -> State {
        State::Waiting {
            reason: reason.to_string(),
            message,
        }
    }

    /// A kubelet's reason for an exit: `Completed` for 0, `Error` otherwise.
    pub fn exited(
        exit_code: i32,
        message: String,
        started: Option<jiff::Timestamp>,
        container_id: String,
    ) -> State {
        State::Terminated {
            exit_code,
            reason: if exit_code == 0 { "Completed" } else { "Error" }.to_string(),
            message,
            started,
            finished: jiff::Timestamp::now(),
            container_id,
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(self, State::Running { .. })
    }

    pub fn exit_code(&self) -> Option<i32> {
        match self {
            State::Terminated { exit_code, .. } => Some(*exit_code),
            _ => None,
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            State::Waiting { reason, message } => {
                let mut waiting = json!({ "reason": reason });
                if let Some(message) = message {
                    waiting["message"] = json!(message);
                }
                json!({ "waiting": waiting })
            }
            State::Running { started } => json!({ "running": { "startedAt": time(*started) } }),
            State::Terminated {
                exit_code,
                reason,
                message,
                started,
                finished,
                container_id,
            } => {
                let mut terminated = json!({
                    "exitCode": exit_code,
                    "reason": reason,
                    "finishedAt": time(*finished),
                    "containerID": container_id,
                });
                if let Some(started) = started {
                    terminated["startedAt"] = json!(time(*started));
                }
                if !message.is_empty() {
                    terminated["message"] = json!(message);
                }
                json!({ "terminated": terminated })
            }
        }
    }
}

/// Kubernetes' time format: RFC 3339 in whole seconds, UTC.
pub fn time(at: jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// One entry of `containerStatuses` / `initContainerStatuses`.
pub struct ContainerView<'a> {
    pub name: &'a str,
    pub image: &'a str,
    pub image_id: &'a str,
    pub container_id: Option<&'a str>,
    /// Running and passing its readiness probe (if it has one).
    pub ready: bool,
    /// Running and past its startup probe (if it has one).
    pub started: bool,
    pub restart_count: i32,
    pub state: &'a State,
    pub last_state: Option<&'a State>,
}

pub fn container_status(view: &ContainerView<'_>) -> Value {
    let mut status = json!({
        "name": view.name,
        "image": view.image,
        "imageID": view.image_id,
        "ready": view.ready,
        "started": view.started,
        "restartCount": view.restart_count,
        "state": view.state.to_json(),
        "lastState": view.last_state.map_or_else(|| json!({}), State::to_json),
    });
    if let Some(id) = view.container_id {
        status["containerID"] = json!(id);
    }
    status
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }

    pub fn parse(text: &str) -> Option<Phase> {
        match text {
            "Pending" => Some(Phase::Pending),
            "Running" => Some(Phase::Running),
            "Succeeded" => Some(Phase::Succeeded),
            "Failed" => Some(Phase::Failed),
            _ => None,
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// The phase of a pod whose main containers have all ended for good: `Succeeded` only if every
/// one of them exited 0 (a container that never ran counts as failed).
pub fn terminal_phase<'a>(main: impl IntoIterator<Item = &'a State>) -> Phase {
    if main.into_iter().all(|state| state.exit_code() == Some(0)) {
        Phase::Succeeded
    } else {
        Phase::Failed
    }
}

/// A pod condition with its transition time.
pub fn condition(
    kind: &str,
    status: bool,
    reason: Option<&str>,
    message: Option<String>,
    since: jiff::Timestamp,
) -> Value {
    let mut condition = json!({
        "type": kind,
        "status": if status { "True" } else { "False" },
        "lastProbeTime": null,
        "lastTransitionTime": time(since),
    });
    if let Some(reason) = reason {
        condition["reason"] = json!(reason);
    }
    if let Some(message) = message {
        condition["message"] = json!(message);
    }
    condition
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(code: i32) -> State {
        State::exited(code, String::new(), None, "devcluster://x".into())
    }

    #[test]
    fn exit_reasons_and_terminal_phases() {
        assert!(matches!(done(0), State::Terminated { ref reason, .. } if reason == "Completed"));
        assert!(matches!(done(3), State::Terminated { ref reason, .. } if reason == "Error"));
        assert_eq!(terminal_phase([&done(0), &done(0)]), Phase::Succeeded);
        assert_eq!(terminal_phase([&done(0), &done(1)]), Phase::Failed);
        assert_eq!(
            terminal_phase([&State::waiting("CreateContainerConfigError", None)]),
            Phase::Failed
        );
    }

    #[test]
    fn container_statuses_look_like_a_kubelets() {
        let state = State::exited(3, "{\"ok\":false}".into(), None, "devcluster://c".into());
        let status = container_status(&ContainerView {
            name: "runner",
            image: "busybox",
            image_id: "devcluster://sh",
            container_id: Some("devcluster://c"),
            ready: false,
            started: false,
            restart_count: 0,
            state: &state,
            last_state: None,
        });
        assert_eq!(status["state"]["terminated"]["exitCode"], 3);
        assert_eq!(status["state"]["terminated"]["message"], "{\"ok\":false}");
        assert_eq!(status["ready"], false);
        assert_eq!(status["lastState"], json!({}));
        let parsed: k8s_openapi::api::core::v1::ContainerStatus =
            serde_json::from_value(status).unwrap();
        assert_eq!(
            parsed.state.unwrap().terminated.unwrap().reason.as_deref(),
            Some("Error")
        );
    }

    #[test]
    fn times_are_whole_seconds() {
        let at: jiff::Timestamp = "2024-05-06T07:08:09.123456Z".parse().unwrap();
        assert_eq!(time(at), "2024-05-06T07:08:09Z");
    }
}
