//! The end of a pod: its containers stopped with the grace period, its final status, its
//! `emptyDir`s removed, and, once it is deleted, the pod object's removal and the node's
//! clean-up.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, Preconditions};
use tokio::time::Instant;

use super::{API_LIMIT, DEADLINE_MESSAGE, DEADLINE_REASON, Ending, Worker};
use crate::kubelet::pod_status::{self, Phase, State};
use crate::kubelet::sandbox;

impl Worker {
    /// Asks every running container to stop (`SIGTERM` now, `SIGKILL` after `grace` seconds);
    /// containers not started yet never will be.
    pub(super) fn stop_all(&mut self, ending: Ending, grace: i64) {
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
    pub(super) async fn finish(&mut self, now: Instant) {
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
                    pod_status::terminal_phase(self.main.iter().map(|run| &run.state)),
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
    pub(super) async fn cleanup(&mut self) {
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
}
