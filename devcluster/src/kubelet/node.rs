//! The Node: registered as the node itself (the Node authorizer and the NodeRestriction
//! admission plugin let a node create and update only its own Node and Lease), Ready at once,
//! with the loopback address as InternalIP and the logs endpoint's port in
//! `status.daemonEndpoints`. Heartbeats as a kubelet's: the Lease in `kube-node-lease` renewed
//! every 10 s, the Node's conditions every minute.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use super::{KubeletError, NODE_IP};

const LEASE_NAMESPACE: &str = "kube-node-lease";
/// A kubelet's defaults: the lease lasts 40 s and is renewed every quarter of that.
const LEASE_SECONDS: i32 = 40;
pub const LEASE_RENEW: Duration = Duration::from_secs(10);
/// The Node's conditions carry a heartbeat time too; a kubelet refreshes them at least this often.
pub const STATUS_REFRESH: Duration = Duration::from_secs(60);
const API_LIMIT: Duration = Duration::from_secs(20);

/// What the Node says about this node.
#[derive(Clone, Debug)]
pub struct NodeFacts {
    pub name: String,
    /// The logs endpoint's port.
    pub port: u16,
    pub max_pods: usize,
    /// The API server's version, reported as the kubelet's (`kubectl get nodes` shows it).
    pub version: String,
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_string())
        .unwrap_or_default()
}

fn memory_kib() -> u64 {
    read_trimmed("/proc/meminfo")
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn os_image() -> String {
    read_trimmed("/etc/os-release")
        .lines()
        .find_map(|line| line.strip_prefix("PRETTY_NAME="))
        .map(|name| name.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".to_string())
}

/// Kubernetes' names for the machine's architecture.
fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The Node object to create (its status is written separately: create ignores it).
pub fn node_object(facts: &NodeFacts) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": facts.name,
            "labels": {
                "kubernetes.io/hostname": facts.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": architecture(),
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": architecture(),
            },
        },
        "spec": {},
    }))
    .expect("a valid Node")
}

/// The Node's status, with `now` as the heartbeat time and `since` as the conditions'
/// transition time.
pub fn node_status(facts: &NodeFacts, now: jiff::Timestamp, since: jiff::Timestamp) -> Value {
    let now = now.to_string();
    let since = since.to_string();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let capacity = json!({
        "cpu": cpus.to_string(),
        "memory": format!("{}Ki", memory_kib()),
        "pods": facts.max_pods.to_string(),
    });
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": since,
        })
    };
    json!({
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": NODE_IP},
            {"type": "Hostname", "address": facts.name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": facts.port}},
        "nodeInfo": {
            "machineID": read_trimmed("/etc/machine-id"),
            "systemUUID": read_trimmed("/etc/machine-id"),
            "bootID": read_trimmed("/proc/sys/kernel/random/boot_id"),
            "kernelVersion": read_trimmed("/proc/sys/kernel/osrelease"),
            "osImage": os_image(),
            "containerRuntimeVersion": "devcluster://bwrap",
            "kubeletVersion": facts.version,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": architecture(),
        },
    })
}

async fn limited<T>(
    what: &str,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, KubeletError> {
    match tokio::time::timeout(API_LIMIT, call).await {
        Ok(result) => result.map_err(|source| KubeletError::Api {
            what: what.to_string(),
            source,
        }),
        Err(_) => Err(KubeletError::Timeout(what.to_string())),
    }
}

/// Creates the Node (or finds it from an earlier run) and marks it Ready.
pub async fn register(client: &Client, facts: &NodeFacts) -> Result<Node, KubeletError> {
    let nodes: Api<Node> = Api::all(client.clone());
    match limited(
        "creating the Node",
        nodes.create(&PostParams::default(), &node_object(facts)),
    )
    .await
    {
        Ok(_) => {}
        Err(KubeletError::Api {
            source: kube::Error::Api(status),
            ..
        }) if status.code == 409 => {}
        Err(err) => return Err(err),
    }
    let now = jiff::Timestamp::now();
    let status = json!({ "status": node_status(facts, now, now) });
    limited(
        "writing the Node's status",
        nodes.patch_status(&facts.name, &PatchParams::default(), &Patch::Merge(&status)),
    )
    .await
}

/// Renews the Lease (creating it the first time).
pub async fn renew_lease(client: &Client, node: &Node) -> Result<(), KubeletError> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let now = MicroTime(jiff::Timestamp::now());
    let existing = limited("reading the node's Lease", leases.get_opt(&name)).await?;
    if existing.is_none() {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                // Deleting the Node deletes its Lease, as on a real cluster.
                owner_references: Some(vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: name.clone(),
                    uid: node.metadata.uid.clone().unwrap_or_default(),
                    ..OwnerReference::default()
                }]),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(name.clone()),
                lease_duration_seconds: Some(LEASE_SECONDS),
                renew_time: Some(now),
                ..LeaseSpec::default()
            }),
        };
        limited(
            "creating the node's Lease",
            leases.create(&PostParams::default(), &lease),
        )
        .await?;
        return Ok(());
    }
    let patch = json!({ "spec": { "renewTime": now, "holderIdentity": name } });
    limited(
        "renewing the node's Lease",
        leases.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)),
    )
    .await?;
    Ok(())
}

/// Refreshes the conditions' heartbeat times.
pub async fn refresh_status(
    client: &Client,
    facts: &NodeFacts,
    since: jiff::Timestamp,
) -> Result<(), KubeletError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let status = json!({ "status": node_status(facts, jiff::Timestamp::now(), since) });
    limited(
        "refreshing the Node's status",
        nodes.patch_status(&facts.name, &PatchParams::default(), &Patch::Merge(&status)),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_is_ready_on_loopback_with_its_port() {
        let facts = NodeFacts {
            name: "devnode".into(),
            port: 10250,
            max_pods: 16,
            version: "v1.37.2".into(),
        };
        let node = node_object(&facts);
        assert_eq!(node.metadata.name.as_deref(), Some("devnode"));
        let now = jiff::Timestamp::now();
        let status: k8s_openapi::api::core::v1::NodeStatus =
            serde_json::from_value(node_status(&facts, now, now)).unwrap();
        let ready = status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(
            status
                .daemon_endpoints
                .unwrap()
                .kubelet_endpoint
                .unwrap()
                .port,
            10250
        );
        let addresses = status.addresses.unwrap();
        assert_eq!(addresses[0].type_, "InternalIP");
        assert_eq!(addresses[0].address, "127.0.0.1");
        assert_eq!(status.node_info.unwrap().kubelet_version, "v1.37.2");
        assert_eq!(status.capacity.unwrap()["pods"].0, "16");
    }
}
