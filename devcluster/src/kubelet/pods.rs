//! The node's pods: one watch on the pods bound to this node (the field selector the Node
//! authorizer requires of a node), one [`Worker`] task per pod, fed every newer version of its
//! pod, and told (by its channel closing) when the pod object is gone.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Context;
use super::worker::Worker;

struct Handle {
    updates: watch::Sender<Arc<Pod>>,
    task: JoinHandle<()>,
}

/// Runs the pods bound to this node until the task is dropped.
pub async fn run(ctx: Arc<Context>) {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.node));
    let mut events = std::pin::pin!(watcher::watcher(pods, config).default_backoff());
    let mut workers: HashMap<String, Handle> = HashMap::new();
    // The uids listed since the watch (re)started: the others were deleted while it was down.
    let mut listed: Option<HashSet<String>> = None;
    loop {
        let event = match events.try_next().await {
            Ok(Some(event)) => event,
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(%err, "watching the node's pods");
                continue;
            }
        };
        match event {
            Event::Init => listed = Some(HashSet::new()),
            Event::InitApply(pod) | Event::Apply(pod) => {
                let Some(uid) = pod.metadata.uid.clone() else {
                    continue;
                };
                if let Some(listed) = &mut listed {
                    listed.insert(uid.clone());
                }
                match workers.get(&uid) {
                    Some(handle) => {
                        handle.updates.send_replace(Arc::new(pod));
                    }
                    None => {
                        let (updates, receiver) = watch::channel(Arc::new(pod.clone()));
                        let worker = Worker::new(ctx.clone(), pod);
                        let task = tokio::spawn(worker.run(receiver));
                        workers.insert(uid, Handle { updates, task });
                    }
                }
            }
            Event::Delete(pod) => {
                if let Some(uid) = &pod.metadata.uid {
                    // Dropping the sender tells the worker its pod is gone.
                    workers.remove(uid);
                }
            }
            Event::InitDone => {
                if let Some(listed) = listed.take() {
                    workers.retain(|uid, _| listed.contains(uid));
                }
            }
        }
        workers.retain(|_, handle| !handle.task.is_finished());
    }
}
