//! The scheduler's one job, done for the single node: every pending pod that asks for the
//! default scheduler is bound to this node. Done with the `system:kube-scheduler` identity, not
//! the node's: the Node authorizer never lets a node bind pods, and the bootstrap RBAC policy
//! gives the scheduler exactly the rights this needs (watch pods, create `pods/binding`), so the
//! audit log shows the binding as a real cluster's would. No filters or scores: node selectors,
//! affinities, taints and resource requests are not looked at.

use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};

const DEFAULT_SCHEDULER: &str = "default-scheduler";
const ATTEMPTS: u32 = 5;
const API_LIMIT: Duration = Duration::from_secs(20);

fn wants_us(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let unbound = spec
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
        .is_empty();
    let scheduler = spec
        .and_then(|s| s.scheduler_name.as_deref())
        .unwrap_or(DEFAULT_SCHEDULER);
    unbound && scheduler == DEFAULT_SCHEDULER && pod.metadata.deletion_timestamp.is_none()
}

async fn bind(client: &Client, pod: &Pod, node: &str) {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            uid: pod.metadata.uid.clone(),
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_string()),
            ..ObjectReference::default()
        },
    };
    let params = PostParams::default();
    for attempt in 1..=ATTEMPTS {
        let call =
            api.create_subresource::<_, serde_json::Value>("binding", &name, &params, &binding);
        match tokio::time::timeout(API_LIMIT, call).await {
            Ok(Ok(_)) => {
                tracing::info!(pod = %format!("{namespace}/{name}"), node, "bound");
                return;
            }
            // Bound already (a second event for the same pod), or gone: nothing to do.
            Ok(Err(kube::Error::Api(status))) if status.code == 409 || status.code == 404 => {
                return;
            }
            Ok(Err(err)) => {
                tracing::warn!(pod = %format!("{namespace}/{name}"), attempt, %err, "binding failed");
            }
            Err(_) => {
                tracing::warn!(pod = %format!("{namespace}/{name}"), attempt, "binding timed out")
            }
        }
        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
    }
}

/// Binds pending pods to `node` until the task is dropped.
pub async fn run(client: Client, node: String) {
    let pods: Api<Pod> = Api::all(client.clone());
    // The scheduler's own selector: unbound and not finished.
    let config = watcher::Config::default()
        .fields("spec.nodeName=,status.phase!=Succeeded,status.phase!=Failed");
    let mut events = std::pin::pin!(watcher::watcher(pods, config).default_backoff());
    loop {
        match events.try_next().await {
            Ok(Some(Event::Apply(pod) | Event::InitApply(pod))) if wants_us(&pod) => {
                let client = client.clone();
                let node = node.clone();
                tokio::spawn(async move { bind(&client, &pod, &node).await });
            }
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(err) => tracing::warn!(%err, "watching unscheduled pods"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unbound_pods_of_the_default_scheduler() {
        let pod = |spec: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": spec}))
                .unwrap()
        };
        assert!(wants_us(&pod(serde_json::json!({"containers": []}))));
        assert!(!wants_us(&pod(
            serde_json::json!({"containers": [], "nodeName": "x"})
        )));
        assert!(!wants_us(&pod(
            serde_json::json!({"containers": [], "schedulerName": "other"})
        )));
        assert!(wants_us(&pod(
            serde_json::json!({"containers": [], "schedulerName": "default-scheduler"})
        )));
    }
}
