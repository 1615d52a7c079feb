//! Reading a Job and its pods back into an [`Observation`]: the runner's result from the
//! termination message, the Job's own verdict, and the kubelet's complaints (a missing Secret
//! leaves the container waiting with `CreateContainerConfigError`, which we report within
//! seconds instead of at the Job's deadline). Pure.

use contract::Reason;
use contract::{DecodeError, Kind, Outcome, RunResult};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use crate::reconcile::build::RUNNER_CONTAINER;
use crate::reconcile::status::Observation;

/// Kubelet waiting reasons that mean the pod cannot start until an object or key appears.
const CONFIG_ERRORS: &[&str] = &["CreateContainerConfigError"];
/// The terminated reason of a container whose process the kernel's OOM killer ended.
const OOM_KILLED: &str = "OOMKilled";
/// The terminated reason a kubelet gives a container its runtime lost (the node rebooted, the
/// runtime's state is gone; the process-kubelet says it after a restart), with exit code 137.
const CONTAINER_LOST: &str = "ContainerStatusUnknown";
/// Waiting reasons that mean the image cannot be had.
const IMAGE_ERRORS: &[&str] = &["ErrImagePull", "ImagePullBackOff", "InvalidImageName"];

fn runner_status(pod: &Pod) -> Option<&ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == RUNNER_CONTAINER)
}

/// The runner's result in a pod's termination message, if it wrote one.
pub fn result_of(pod: &Pod) -> Option<RunResult> {
    decoded_result(pod)?.ok()
}

/// The termination message read as a result; None when the runner has not finished or left
/// nothing there.
fn decoded_result(pod: &Pod) -> Option<Result<RunResult, DecodeError>> {
    let terminated = runner_status(pod)?.state.as_ref()?.terminated.as_ref()?;
    Some(RunResult::decode(terminated.message.as_deref()?))
}

/// What the termination message says when it is not a result (FallbackToLogsOnError puts the
/// log's tail there when the runner died before writing one).
fn raw_message(pod: &Pod) -> Option<String> {
    let terminated = runner_status(pod)?.state.as_ref()?.terminated.as_ref()?;
    terminated
        .message
        .clone()
        .filter(|m| !m.trim().is_empty())
        .or_else(|| terminated.reason.clone())
}

/// Whether the runtime OOM-killed a process of the runner's container (the runner, or the Atlas
/// it ran): the container's terminated reason says so, whatever the runner managed to report.
fn ran_out_of_memory(pod: &Pod) -> bool {
    runner_status(pod).and_then(|status| {
        status
            .state
            .as_ref()?
            .terminated
            .as_ref()?
            .reason
            .as_deref()
    }) == Some(OOM_KILLED)
}

/// The pod of a failed Job whose last attempt the node lost, not the apply: the runner's
/// container ended `ContainerStatusUnknown` without a result. Its exit code, 137, is the one the
/// pod failure policy reads as the OOM killer (`FailJob`), so the Job fails for good though
/// nothing went wrong with the migration; the caller deletes it so that it runs again.
pub fn lost_by_node(job: &Job, pods: &[Pod]) -> Option<String> {
    job_condition(job, "Failed")?;
    let newest = pods
        .iter()
        .max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0))?;
    let terminated = runner_status(newest)?.state.as_ref()?.terminated.as_ref()?;
    (terminated.reason.as_deref() == Some(CONTAINER_LOST) && result_of(newest).is_none())
        .then(|| newest.metadata.name.clone().unwrap_or_default())
}

fn runner_exit_code(pod: &Pod) -> Option<i32> {
    let terminated = runner_status(pod)?.state.as_ref()?.terminated.as_ref()?;
    Some(terminated.exit_code)
}

fn finished_at(pod: &Pod) -> Option<i64> {
    let terminated = runner_status(pod)?.state.as_ref()?.terminated.as_ref()?;
    terminated.finished_at.as_ref().map(|t| t.0.as_second())
}

fn job_condition<'a>(
    job: &'a Job,
    type_: &str,
) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// How long a started Job may be without a pod before its events are read for why: the Job
/// controller makes the pod within a second when nothing refuses it.
pub const POD_CREATE_GRACE_SECONDS: i64 = 5;

/// Whether the Job has been running for [`POD_CREATE_GRACE_SECONDS`] without any pod (the
/// API server refuses them: an admission policy or webhook, a pod quota). `startTime` is set
/// when the Job is released (it is made suspended until its credentials exist).
pub fn has_no_pod_yet(job: &Job, pods: &[Pod], now_unix: i64) -> bool {
    let status = job.status.as_ref();
    let started = status.and_then(|s| s.start_time.as_ref());
    pods.is_empty()
        && status.and_then(|s| s.active).unwrap_or(0) == 0
        && started.is_some_and(|t| now_unix - t.0.as_second() >= POD_CREATE_GRACE_SECONDS)
}

/// Why the Job controller cannot create the Job's pod, from its newest `FailedCreate` event
/// (the only place it says so). None if it said nothing, or the operator may not read events
/// (an install whose RBAC predates the rule): the status then stays in progress.
pub async fn pod_creation_refused(
    client: &kube::Client,
    namespace: &str,
    job_name: &str,
) -> Option<String> {
    use k8s_openapi::api::core::v1::Event;
    let events: kube::Api<Event> = kube::Api::namespaced(client.clone(), namespace);
    let selector =
        format!("involvedObject.kind=Job,involvedObject.name={job_name},reason=FailedCreate");
    let listed = match events
        .list(&kube::api::ListParams::default().fields(&selector))
        .await
    {
        Ok(listed) => listed,
        Err(err) => {
            tracing::debug!(%err, job = job_name, "reading the Job's events");
            return None;
        }
    };
    listed
        .items
        .into_iter()
        .max_by_key(|e| {
            e.last_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
                .or_else(|| e.event_time.as_ref().map(|t| t.0.as_second()))
                .unwrap_or_default()
        })
        .and_then(|e| e.message)
}

/// The observation of the Job for `hash` and its pods (newest last is not required).
pub fn observe(kind: Kind, hash: &str, job: &Job, pods: &[Pod], now_unix: i64) -> Observation {
    let name = job.metadata.name.clone().unwrap_or_default();
    let mut pods: Vec<&Pod> = pods.iter().collect();
    pods.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let newest_result = pods
        .iter()
        .rev()
        .find_map(|p| result_of(p).map(|r| (r, *p)));

    // A runner of another contract version (the images are out of step): its result cannot
    // be trusted field by field, and another attempt of the same Job cannot help.
    if newest_result.is_none()
        && let Some(err) = pods.iter().rev().find_map(|p| match decoded_result(p) {
            Some(Err(err @ DecodeError::UnknownVersion { .. })) => Some(err),
            _ => None,
        })
    {
        return Observation::Failed {
            reason: kind.failure_reason(),
            message: format!("the result of Job {name} cannot be read: {err}"),
            stalled: true,
        };
    }

    if job_condition(job, "Complete").is_some() {
        return match newest_result {
            // The first Job of a schema found which dev database it needs: the next Job brings
            // one, so this is progress.
            Some((result, _)) if result.outcome == Outcome::NeedsDevDatabase => {
                Observation::InProgress {
                    detail: format!(
                        "Job {name} found a {} target: adding a dev database",
                        result.dev_driver.unwrap_or_default()
                    ),
                }
            }
            Some((result, pod)) if result.outcome != Outcome::Failed => Observation::Applied {
                hash: hash.into(),
                message: result.message,
                applied_at: finished_at(pod).unwrap_or(now_unix),
                version: result.current_version,
                unmanaged: result.unmanaged,
            },
            // A successful Job whose pod is gone (garbage-collected): the apply happened.
            _ => Observation::Applied {
                hash: hash.into(),
                message: format!("Job {name} completed"),
                applied_at: now_unix,
                version: None,
                unmanaged: Vec::new(),
            },
        };
    }
    // The runner's success is final once its container has exited 0 with the result: the Job
    // controller's Complete comes later (0.7 s on the local cluster) and adds nothing to it. And
    // a Job that failed after that (a mesh proxy injected as an ordinary container kept its pod
    // running to the deadline) failed after the apply: the apply stands.
    if let Some((result, pod)) = &newest_result
        && matches!(result.outcome, Outcome::Applied | Outcome::NoOp)
        && runner_exit_code(pod) == Some(0)
    {
        return Observation::Applied {
            hash: hash.into(),
            message: result.message.clone(),
            applied_at: finished_at(pod).unwrap_or(now_unix),
            version: result.current_version.clone(),
            unmanaged: result.unmanaged.clone(),
        };
    }

    if let Some(failed) = job_condition(job, "Failed") {
        if let Some(pod) = pods.iter().rev().find(|pod| ran_out_of_memory(pod)) {
            let said = result_of(pod)
                .map(|result| format!(" ({})", result.message))
                .unwrap_or_default();
            return Observation::Failed {
                reason: kind.failure_reason(),
                message: format!(
                    "Job {name} ran out of memory: its runner container was OOM-killed at its \
                     memory limit{said}; raise the Jobs' memory limit (the chart's \
                     jobs.resources, the operator's --job-resources)"
                ),
                stalled: true,
            };
        }
        return match newest_result {
            Some((result, _)) => Observation::Failed {
                reason: result.reason,
                message: result.message,
                stalled: true,
            },
            None => {
                let detail = pods
                    .iter()
                    .rev()
                    .find_map(|p| raw_message(p))
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default();
                Observation::Failed {
                    reason: kind.failure_reason(),
                    message: format!(
                        "Job {name} failed ({}{}){detail}",
                        failed.reason.as_deref().unwrap_or("Failed"),
                        failed
                            .message
                            .as_deref()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    ),
                    stalled: true,
                }
            }
        };
    }

    // Still running: a pod that cannot start says why now, not at the deadline.
    for pod in pods.iter().rev() {
        // No node fits the pod (a taint it does not tolerate, a selector no node matches): in
        // progress, since a node may come (an autoscaler), with the scheduler's own words.
        if let Some(unscheduled) = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|all| {
                all.iter()
                    .find(|c| c.type_ == "PodScheduled" && c.status == "False")
            })
        {
            return Observation::InProgress {
                detail: format!(
                    "Job {name}'s pod is waiting for a node ({}: {}); it starts once a node fits \
                     it (the pod's tolerations, nodeSelector and affinity: spec.jobPod or the \
                     install's jobs.*)",
                    unscheduled.reason.as_deref().unwrap_or("Unschedulable"),
                    unscheduled.message.as_deref().unwrap_or_default()
                ),
            };
        }
        // The dev database sidecar: its image, or its start, fails the apply's dev database.
        let dev = pod
            .status
            .as_ref()
            .and_then(|s| s.init_container_statuses.as_ref())
            .and_then(|all| {
                all.iter()
                    .find(|c| c.name == crate::reconcile::build::DEV_CONTAINER)
            })
            .and_then(|c| c.state.as_ref());
        if let Some(state) = dev {
            let problem = match (&state.waiting, &state.terminated) {
                (Some(waiting), _)
                    if IMAGE_ERRORS.contains(&waiting.reason.as_deref().unwrap_or_default())
                        || CONFIG_ERRORS
                            .contains(&waiting.reason.as_deref().unwrap_or_default()) =>
                {
                    Some(format!(
                        "{}: {}",
                        waiting.reason.as_deref().unwrap_or_default(),
                        waiting.message.as_deref().unwrap_or_default()
                    ))
                }
                (_, Some(terminated)) if terminated.exit_code != 0 => Some(format!(
                    "it exited with code {}{}",
                    terminated.exit_code,
                    terminated
                        .message
                        .as_deref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                )),
                _ => None,
            };
            if let Some(problem) = problem {
                return Observation::Failed {
                    reason: Reason::GettingDevDb,
                    message: format!("the dev database sidecar did not come up: {problem}"),
                    stalled: false,
                };
            }
        }
        let Some(waiting) = runner_status(pod)
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.waiting.as_ref())
        else {
            continue;
        };
        let reason = waiting.reason.as_deref().unwrap_or_default();
        let message = waiting.message.clone().unwrap_or_default();
        if CONFIG_ERRORS.contains(&reason) {
            return Observation::Failed {
                reason: kind.input_reason(),
                message: format!(
                    "the Job's pod cannot start: {message} (create it, or fix the reference; \
                     the Job starts by itself once it exists)"
                ),
                stalled: false,
            };
        }
        if IMAGE_ERRORS.contains(&reason) {
            return Observation::Failed {
                reason: kind.failure_reason(),
                message: format!("the runner image cannot be pulled ({reason}): {message}"),
                stalled: false,
            };
        }
    }
    let attempts = job.status.as_ref().and_then(|s| s.failed).unwrap_or(0);
    match newest_result {
        // Shown at once, not at the Job's deadline: the database (or a name) may come back, and
        // the Job tries again meanwhile.
        Some((result, _))
            if attempts > 0 && result.outcome == Outcome::Failed && result.transient =>
        {
            Observation::Retrying {
                reason: result.reason,
                message: result.message,
                detail: format!(
                    "Job {name}: attempt {attempts} failed; the Job tries again with backoff"
                ),
            }
        }
        Some((result, _)) if attempts > 0 => Observation::InProgress {
            detail: format!(
                "Job {name}: attempt {attempts} failed ({}: {}); retrying",
                result.reason, result.message
            ),
        },
        _ => Observation::InProgress {
            detail: format!("Job {name} is applying the change"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A started Job is looked at for refused pods only once it has had a few seconds to make
    /// one; a suspended one (no startTime) never.
    #[test]
    fn a_job_without_a_pod_is_suspect_after_a_few_seconds() {
        let job = |status: serde_json::Value| -> Job {
            serde_json::from_value(json!({"metadata": {"name": "j"}, "status": status})).unwrap()
        };
        let started = job(json!({"startTime": "2026-12-01T00:00:00Z"}));
        let at = "2026-12-01T00:00:00Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_second();
        assert!(!has_no_pod_yet(&started, &[], at + 2));
        assert!(has_no_pod_yet(&started, &[], at + POD_CREATE_GRACE_SECONDS));
        let active = job(json!({"startTime": "2026-12-01T00:00:00Z", "active": 1}));
        assert!(!has_no_pod_yet(&active, &[], at + 60));
        assert!(!has_no_pod_yet(&job(json!({})), &[], at + 60), "suspended");
        let with_pod = pod(json!({"running": {}}));
        assert!(!has_no_pod_yet(&started, &[with_pod], at + 60));
    }

    /// The scheduler's condition of a pod no node fits, as kube-scheduler writes it.
    #[test]
    fn a_pod_no_node_fits_is_in_progress_with_the_schedulers_words() {
        let job: Job = serde_json::from_value(json!({"metadata": {"name": "j"},
            "status": {"active": 1}}))
        .unwrap();
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p",
            "creationTimestamp": "2026-12-01T00:00:00Z"},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled",
                "status": "False", "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 node(s) had untolerated taint {pool: db}."}]}}))
        .unwrap();
        let obs = observe(Kind::Migration, "h", &job, &[pod], 0);
        let Observation::InProgress { detail } = obs else {
            panic!("{obs:?}");
        };
        assert!(
            detail.starts_with(
                "Job j's pod is waiting for a node (Unschedulable: 0/1 nodes are \
                                available: 1 node(s) had untolerated taint {pool: db}.)"
            ),
            "{detail}"
        );
    }

    fn job(conditions: serde_json::Value, failed: i32) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "atlasmigration-m-0123abcd"},
            "status": {"conditions": conditions, "failed": failed}
        }))
        .unwrap()
    }

    fn pod(state: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "creationTimestamp": "2026-11-23T10:00:00Z"},
            "status": {"containerStatuses": [{
                "name": "runner", "image": "runner", "imageID": "", "ready": false,
                "restartCount": 0, "state": state
            }]}
        }))
        .unwrap()
    }

    fn terminated(message: &str, code: i32) -> serde_json::Value {
        json!({"terminated": {"exitCode": code, "message": message,
                "finishedAt": "2026-11-23T10:00:05Z"}})
    }

    fn result(outcome: &str, reason: &str, message: &str) -> String {
        json!({"version": contract::CONTRACT_VERSION, "outcome": outcome, "reason": reason, "message": message,
               "currentVersion": "20230316085611", "durationMs": 10})
        .to_string()
    }

    #[test]
    fn a_complete_job_is_applied_with_the_runners_version() {
        let obs = observe(
            Kind::Migration,
            "h",
            &job(json!([{"type": "Complete", "status": "True"}]), 0),
            &[pod(terminated(
                &result("applied", "Applied", "migrated"),
                0,
            ))],
            0,
        );
        assert_eq!(
            obs,
            Observation::Applied {
                hash: "h".into(),
                message: "migrated".into(),
                applied_at: "2026-11-23T10:00:05Z"
                    .parse::<jiff::Timestamp>()
                    .unwrap()
                    .as_second(),
                version: Some("20230316085611".into()),
                unmanaged: vec![],
            }
        );
    }

    /// A Job that failed after its runner succeeded (an ordinary mesh proxy kept the pod running
    /// to the Job's deadline) applied all the same.
    #[test]
    fn a_job_failed_after_the_runner_succeeded_is_applied() {
        let obs = observe(
            Kind::Migration,
            "h",
            &job(
                json!([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]),
                1,
            ),
            &[pod(terminated(
                &result("applied", "Applied", "migrated"),
                0,
            ))],
            0,
        );
        assert!(
            matches!(&obs, Observation::Applied { message, .. } if message == "migrated"),
            "{obs:?}"
        );
    }

    /// The first Job of a schema whose driver sits in a Secret completes having found it: the
    /// resource is still on its way (the next Job brings the dev database), not applied.
    #[test]
    fn a_job_that_found_the_dev_driver_is_progress() {
        let found = json!({"version": contract::CONTRACT_VERSION, "outcome": "needs-dev-database", "reason": "GettingDevDB",
            "message": "no dev database", "devDriver": "mysql", "durationMs": 10});
        let obs = observe(
            Kind::Schema,
            "h",
            &job(json!([{"type": "Complete", "status": "True"}]), 0),
            &[pod(terminated(&found.to_string(), 0))],
            0,
        );
        assert!(
            matches!(&obs, Observation::InProgress { detail } if detail.contains("mysql")),
            "{obs:?}"
        );
    }

    #[test]
    fn a_failed_job_reports_the_runners_reason() {
        let obs = observe(
            Kind::Migration,
            "h",
            &job(
                json!([{"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}]),
                1,
            ),
            &[pod(terminated(
                &result("failed", "Migrating", "file 2.sql failed"),
                3,
            ))],
            0,
        );
        assert_eq!(
            obs,
            Observation::Failed {
                reason: Reason::Migrating,
                message: "file 2.sql failed".into(),
                stalled: true
            }
        );
    }

    /// The runtime's verdict wins over the runner's: the OOM killer took Atlas, the runner said
    /// only that Atlas was killed, the container's terminated reason names the memory limit.
    #[test]
    fn an_oom_killed_runner_says_it_ran_out_of_memory() {
        let killed = "Atlas was killed by signal 9 (SIGKILL)";
        let mut state = terminated(&result("failed", "Migrating", killed), 3);
        state["terminated"]["reason"] = json!("OOMKilled");
        let obs = observe(
            Kind::Migration,
            "h",
            &job(
                json!([{"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}]),
                1,
            ),
            &[pod(state)],
            0,
        );
        let Observation::Failed {
            reason,
            message,
            stalled,
        } = obs
        else {
            panic!("{obs:?}")
        };
        assert_eq!(reason, Reason::Migrating);
        assert!(stalled);
        assert!(message.contains("ran out of memory"), "{message}");
        assert!(message.contains(killed), "{message}");
        assert!(message.contains("jobs.resources"), "{message}");
    }

    #[test]
    fn a_result_of_another_contract_version_is_refused() {
        // An older runner image next to this operator: its result parses, but is not trusted.
        let old = json!({"version": contract::CONTRACT_VERSION - 1, "outcome": "applied",
                         "reason": "Applied", "message": "", "durationMs": 10})
        .to_string();
        let obs = observe(
            Kind::Migration,
            "h",
            &job(json!([{"type": "Complete", "status": "True"}]), 0),
            &[pod(terminated(&old, 0))],
            0,
        );
        let Observation::Failed {
            reason,
            message,
            stalled,
        } = obs
        else {
            panic!("{obs:?}")
        };
        assert_eq!(reason, Reason::Migrating);
        assert!(stalled);
        assert!(message.contains("out of step"), "{message}");
    }

    #[test]
    fn a_job_that_died_without_a_result_says_what_it_knows() {
        let obs = observe(
            Kind::Schema,
            "h",
            &job(
                json!([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                         "message": "Job was active longer than specified deadline"}]),
                1,
            ),
            &[pod(terminated("panic: out of memory", 137))],
            0,
        );
        let Observation::Failed {
            reason, message, ..
        } = obs
        else {
            panic!("{obs:?}")
        };
        assert_eq!(reason, Reason::ApplyingSchema);
        assert!(message.contains("DeadlineExceeded"), "{message}");
        assert!(message.contains("panic: out of memory"), "{message}");
    }

    #[test]
    fn a_failed_job_whose_container_the_node_lost_is_to_run_again() {
        let failed = job(json!([{"type": "Failed", "status": "True"}]), 1);
        let mut state = terminated("The process-kubelet restarted while the container ran", 137);
        state["terminated"]["reason"] = json!("ContainerStatusUnknown");
        assert!(lost_by_node(&failed, &[pod(state.clone())]).is_some());
        // Still running (the Job has not failed), or ended by the apply: not lost.
        let running = job(json!([]), 0);
        assert!(lost_by_node(&running, &[pod(state)]).is_none());
        let oom = terminated("Atlas was killed by signal 9 (SIGKILL)", 137);
        assert!(lost_by_node(&failed, &[pod(oom)]).is_none());
    }

    #[test]
    fn a_missing_secret_is_reported_at_once() {
        let obs = observe(
            Kind::Migration,
            "h",
            &job(json!([]), 0),
            &[pod(
                json!({"waiting": {"reason": "CreateContainerConfigError",
                                      "message": "secret \"postgres-credentials\" not found"}}),
            )],
            0,
        );
        let Observation::Failed {
            reason,
            message,
            stalled,
        } = obs
        else {
            panic!("{obs:?}")
        };
        assert_eq!(reason, Reason::ReadingMigrationData);
        assert!(
            message.contains("secret \"postgres-credentials\" not found"),
            "{message}"
        );
        assert!(!stalled);
    }

    #[test]
    fn a_dev_database_that_cannot_start_is_getting_dev_db() {
        let mut waiting = pod(json!({"waiting": {"reason": "PodInitializing"}}));
        waiting.status.as_mut().unwrap().init_container_statuses = Some(vec![
            serde_json::from_value(json!({
                "name": "dev-db", "image": "mysql:8.4", "imageID": "", "ready": false,
                "restartCount": 0,
                "state": {"waiting": {"reason": "ErrImagePull", "message": "not found"}}
            }))
            .unwrap(),
        ]);
        let obs = observe(Kind::Schema, "h", &job(json!([]), 0), &[waiting], 0);
        let Observation::Failed {
            reason, message, ..
        } = obs
        else {
            panic!("{obs:?}")
        };
        assert_eq!(reason, Reason::GettingDevDb);
        assert!(message.contains("ErrImagePull"), "{message}");
    }

    #[test]
    fn a_retry_after_a_transient_failure_is_still_in_progress() {
        let obs = observe(
            Kind::Migration,
            "h",
            &job(json!([]), 1),
            &[pod(terminated(
                &result("failed", "Migrating", "connection refused"),
                4,
            ))],
            0,
        );
        let Observation::InProgress { detail } = obs else {
            panic!("{obs:?}")
        };
        assert!(detail.contains("attempt 1 failed"), "{detail}");
        assert!(detail.contains("connection refused"), "{detail}");
    }
    #[test]
    fn a_runner_that_succeeded_is_applied_before_the_job_controller_says_complete() {
        let obs = observe(
            Kind::Migration,
            "h",
            &job(json!([]), 0),
            &[pod(terminated(
                &result("applied", "Applied", "migrated"),
                0,
            ))],
            0,
        );
        assert!(
            matches!(&obs, Observation::Applied { message, .. } if message == "migrated"),
            "{obs:?}"
        );
        // Not a failure that exited 0, nor a dev database to add.
        let obs = observe(
            Kind::Schema,
            "h",
            &job(json!([]), 0),
            &[pod(terminated(
                &result("needs-dev-database", "Applied", "mysql"),
                0,
            ))],
            0,
        );
        assert!(matches!(obs, Observation::InProgress { .. }), "{obs:?}");
    }

    #[test]
    fn a_transient_failure_is_shown_at_once_while_the_job_retries() {
        let transient = json!({"version": contract::CONTRACT_VERSION, "outcome": "failed",
            "reason": "Migrating", "transient": true, "durationMs": 10,
            "message": "cannot reach the database at no-such-host.invalid:5432: the name does not resolve"})
        .to_string();
        let obs = observe(
            Kind::Migration,
            "h",
            &job(json!([]), 2),
            &[pod(terminated(&transient, 3))],
            0,
        );
        let Observation::Retrying {
            reason,
            message,
            detail,
        } = obs
        else {
            panic!("{obs:?}")
        };
        assert_eq!(reason, Reason::Migrating);
        assert!(message.contains("no-such-host.invalid"), "{message}");
        assert!(detail.contains("attempt 2 failed"), "{detail}");
    }
}
