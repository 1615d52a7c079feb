//! Container states and the pod's status built from them, as a kubelet reports them: pure
//! functions, so the rules are tested without a cluster. The pod's worker ([`super::worker`])
//! decides what happened; this module says how a kubelet writes it down.

use std::collections::HashMap;

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
    pub image_id: String,
    /// Once it has run.
    pub container_id: Option<String>,
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
    if let Some(id) = &view.container_id {
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

/// Each condition's status and since when it has had it: a condition's transition time stays
/// while its status does.
#[derive(Debug, Default)]
pub struct Conditions(HashMap<&'static str, (bool, jiff::Timestamp)>);

impl Conditions {
    /// Sets a condition's status (at `now` if it changes); returns since when it has it.
    pub fn set(
        &mut self,
        kind: &'static str,
        status: bool,
        now: jiff::Timestamp,
    ) -> jiff::Timestamp {
        let entry = self.0.entry(kind).or_insert((status, now));
        if entry.0 != status {
            *entry = (status, now);
        }
        entry.1
    }
}

/// What a pod's status is written from.
pub struct PodView<'a> {
    pub phase: Phase,
    /// Every init container has completed (a sidecar: started).
    pub initialized: bool,
    /// The pod's volumes are ready and it has not ended.
    pub sandbox_ready: bool,
    /// The containers that hold back the pod's readiness, by name.
    pub unready: Vec<&'a str>,
    /// The init containers that hold back its initialization, by name.
    pub uninitialized: Vec<&'a str>,
    pub init: Vec<ContainerView<'a>>,
    pub main: Vec<ContainerView<'a>>,
    pub start_time: Option<jiff::Timestamp>,
    /// Why the node ended the pod, when it did (`DeadlineExceeded` and its message).
    pub reason: Option<(&'a str, Option<&'a str>)>,
}

/// The pod's `status`, its conditions' transition times kept in `conditions`.
pub fn pod_status(pod: &PodView<'_>, conditions: &mut Conditions, now: jiff::Timestamp) -> Value {
    let phase = pod.phase;
    let initialized = pod.initialized;
    let sandbox_ready = pod.sandbox_ready;
    let ready = phase == Phase::Running && pod.unready.is_empty();
    let (ready_reason, ready_message) = if ready {
        (None, None)
    } else if phase.is_terminal() {
        (Some("PodCompleted"), None)
    } else {
        (
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                pod.unready.join(" ")
            )),
        )
    };
    let init_reason = (!initialized).then_some("ContainersNotInitialized");
    let init_message = (!initialized).then(|| {
        format!(
            "containers with incomplete status: [{}]",
            pod.uninitialized.join(" ")
        )
    });

    let since_sandbox = conditions.set("PodReadyToStartContainers", sandbox_ready, now);
    let since_init = conditions.set("Initialized", initialized, now);
    let since_containers = conditions.set("ContainersReady", ready, now);
    let since_ready = conditions.set("Ready", ready, now);
    let conditions = vec![
        condition(
            "PodReadyToStartContainers",
            sandbox_ready,
            None,
            None,
            since_sandbox,
        ),
        condition(
            "Initialized",
            initialized,
            init_reason,
            init_message,
            since_init,
        ),
        condition(
            "Ready",
            ready,
            ready_reason,
            ready_message.clone(),
            since_ready,
        ),
        condition(
            "ContainersReady",
            ready,
            ready_reason,
            ready_message,
            since_containers,
        ),
    ];

    let init: Vec<Value> = pod.init.iter().map(container_status).collect();
    let main: Vec<Value> = pod.main.iter().map(container_status).collect();
    let ip = super::NODE_IP;
    let mut status = json!({
        "phase": phase.as_str(),
        "conditions": conditions,
        "hostIP": ip,
        "hostIPs": [{"ip": ip}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "containerStatuses": main,
    });
    if !init.is_empty() {
        status["initContainerStatuses"] = json!(init);
    }
    if let Some(start) = pod.start_time {
        status["startTime"] = json!(time(start));
    }
    if let Some((reason, message)) = pod.reason {
        status["reason"] = json!(reason);
        status["message"] = json!(message);
    }
    status
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
            image_id: "devcluster://sh".into(),
            container_id: Some("devcluster://c".into()),
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

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().unwrap()
    }

    fn running<'a>(name: &'a str, ready: bool, state: &'a State) -> ContainerView<'a> {
        ContainerView {
            name,
            image: "busybox",
            image_id: "devcluster://sh".into(),
            container_id: Some(format!("devcluster://uid/{name}/1")),
            ready,
            started: true,
            restart_count: 0,
            state,
            last_state: None,
        }
    }

    fn condition_of<'v>(status: &'v Value, kind: &str) -> &'v Value {
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == kind)
            .unwrap()
    }

    #[test]
    fn a_running_ready_pod() {
        let state = State::Running {
            started: at("2024-05-06T07:08:00Z"),
        };
        let pod = PodView {
            phase: Phase::Running,
            initialized: true,
            sandbox_ready: true,
            unready: vec![],
            uninitialized: vec![],
            init: vec![],
            main: vec![running("app", true, &state)],
            start_time: Some(at("2024-05-06T07:07:59.5Z")),
            reason: None,
        };
        let status = pod_status(&pod, &mut Conditions::default(), at("2024-05-06T07:08:01Z"));
        assert_eq!(status["phase"], "Running");
        assert_eq!(status["podIP"], "127.0.0.1");
        assert_eq!(status["startTime"], "2024-05-06T07:07:59Z");
        assert!(status.get("initContainerStatuses").is_none());
        assert!(status.get("reason").is_none());
        let kinds: Vec<&Value> = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| &c["type"])
            .collect();
        assert_eq!(
            kinds,
            [
                "PodReadyToStartContainers",
                "Initialized",
                "Ready",
                "ContainersReady"
            ]
        );
        for condition in status["conditions"].as_array().unwrap() {
            assert_eq!(condition["status"], "True", "{condition}");
            assert!(condition.get("reason").is_none(), "{condition}");
        }
        let parsed: k8s_openapi::api::core::v1::PodStatus = serde_json::from_value(status).unwrap();
        assert!(parsed.container_statuses.unwrap()[0].ready);
    }

    #[test]
    fn an_initializing_pod_names_what_holds_it_back() {
        let init_state = State::waiting("PodInitializing", None);
        let pod = PodView {
            phase: Phase::Pending,
            initialized: false,
            sandbox_ready: true,
            unready: vec!["app", "proxy"],
            uninitialized: vec!["migrate"],
            init: vec![ContainerView {
                name: "migrate",
                image: "busybox",
                image_id: String::new(),
                container_id: None,
                ready: false,
                started: false,
                restart_count: 0,
                state: &init_state,
                last_state: None,
            }],
            main: vec![],
            start_time: None,
            reason: None,
        };
        let status = pod_status(&pod, &mut Conditions::default(), at("2024-05-06T07:08:01Z"));
        assert_eq!(status["phase"], "Pending");
        let initialized = condition_of(&status, "Initialized");
        assert_eq!(initialized["status"], "False");
        assert_eq!(initialized["reason"], "ContainersNotInitialized");
        assert_eq!(
            initialized["message"],
            "containers with incomplete status: [migrate]"
        );
        let ready = condition_of(&status, "Ready");
        assert_eq!(ready["reason"], "ContainersNotReady");
        assert_eq!(
            ready["message"],
            "containers with unready status: [app proxy]"
        );
        assert_eq!(status["initContainerStatuses"][0]["name"], "migrate");
        assert!(
            status["initContainerStatuses"][0]
                .get("containerID")
                .is_none()
        );
        assert!(status.get("startTime").is_none());
    }

    #[test]
    fn an_ended_pod_says_why() {
        let pod = PodView {
            phase: Phase::Failed,
            initialized: true,
            sandbox_ready: false,
            unready: vec!["app"],
            uninitialized: vec![],
            init: vec![],
            main: vec![],
            start_time: None,
            reason: Some(("DeadlineExceeded", Some("too long"))),
        };
        let status = pod_status(&pod, &mut Conditions::default(), at("2024-05-06T07:08:01Z"));
        assert_eq!(status["reason"], "DeadlineExceeded");
        assert_eq!(status["message"], "too long");
        let ready = condition_of(&status, "Ready");
        assert_eq!(ready["reason"], "PodCompleted");
        assert!(ready.get("message").is_none());
        assert_eq!(
            condition_of(&status, "PodReadyToStartContainers")["status"],
            "False"
        );
    }

    #[test]
    fn transition_times_stay_while_the_status_does() {
        let mut conditions = Conditions::default();
        let (t1, t2, t3) = (
            at("2024-05-06T07:00:00Z"),
            at("2024-05-06T07:01:00Z"),
            at("2024-05-06T07:02:00Z"),
        );
        assert_eq!(conditions.set("Ready", false, t1), t1);
        assert_eq!(conditions.set("Ready", false, t2), t1);
        assert_eq!(conditions.set("Ready", true, t3), t3);
        assert_eq!(conditions.set("Initialized", true, t3), t3);
    }

    #[test]
    fn times_are_whole_seconds() {
        let at: jiff::Timestamp = "2024-05-06T07:08:09.123456Z".parse().unwrap();
        assert_eq!(time(at), "2024-05-06T07:08:09Z");
    }
}
