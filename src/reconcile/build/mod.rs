//! The pipeline's build step: a [`Plan`] rendered into the Job (and the inputs ConfigMap) that
//! applies it. Pure, and snapshot-tested: what is rendered here is exactly what runs. This module
//! holds what every object the operator makes shares (names, labels, owner); [`job`] renders the
//! Job, [`inputs`] the inputs ConfigMap, [`credentials`] the credentials Secret, [`dev_database`]
//! the dev database sidecar.

mod credentials;
mod dev_database;
mod inputs;
mod job;

use std::collections::BTreeMap;

use contract::Kind;
use k8s_openapi::api::core::v1::{Affinity, EnvVar, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

pub use credentials::{credentials_name, credentials_secret};
pub use dev_database::{DEV_CONTAINER, DEV_WAIT_SECONDS};
pub use inputs::inputs_configmap;
pub use job::{plan_job_name, render};

use crate::reconcile::validate::Plan;

/// Labels on every object the operator makes; the controller finds a resource's Jobs by them.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "atlas-operator";
pub const LABEL_KIND: &str = "db.atlasgo.io/kind";
pub const LABEL_NAME: &str = "db.atlasgo.io/name";
pub const LABEL_HASH: &str = "db.atlasgo.io/hash";
/// The full desired hash (a label value holds at most 63 characters).
pub const ANNOTATION_HASH: &str = "db.atlasgo.io/desired-hash";

/// The name of the runner's container, which `podFailurePolicy` and the status read.
pub const RUNNER_CONTAINER: &str = "runner";

/// Operator settings that shape every Job (from flags, later Helm values).
#[derive(Clone, Debug, PartialEq)]
pub struct JobSettings {
    pub runner_image: String,
    pub image_pull_policy: Option<String>,
    pub image_pull_secrets: Vec<String>,
    pub service_account: Option<String>,
    pub active_deadline_seconds: Option<i64>,
    pub ttl_seconds_after_finished: Option<i32>,
    pub resources: Option<ResourceRequirements>,
    /// The dev database sidecar's image per driver (`postgres`, `mysql`, `maria`).
    pub dev_images: BTreeMap<String, String>,
    /// Annotations on every Job's pod: by default [`MESH_OPT_OUT`].
    pub pod_annotations: BTreeMap<String, String>,
    /// The install-wide Atlas Cloud token: a Secret of this name and key in each resource's
    /// namespace (`--atlas-token-secret`), optional there; a resource's `cloud.tokenFrom` wins.
    pub atlas_token: Option<SecretKey>,
    /// Every Job pod's scheduling (`--job-tolerations`, `--job-node-selector`,
    /// `--job-affinity`, `--job-priority-class-name`), extra labels (`--job-pod-labels`) and
    /// extra runner env (`--job-env`); a resource's `spec.jobPod` is laid over them.
    pub tolerations: Option<Vec<Toleration>>,
    pub node_selector: BTreeMap<String, String>,
    pub affinity: Option<Affinity>,
    pub priority_class_name: Option<String>,
    pub pod_labels: BTreeMap<String, String>,
    pub env: Vec<EnvVar>,
}

/// A key of a Secret in the Job's own namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretKey {
    pub name: String,
    pub key: String,
}

/// The service meshes' injection opt-outs: a proxy injected as an ordinary container keeps a
/// Job's pod running for ever once the runner is done (istio/istio#11045), and the runner needs
/// no proxy to reach a database. Replaced by `--job-pod-annotations` (the chart's
/// `jobs.podAnnotations`) for a mesh whose proxy the database connection needs.
pub const MESH_OPT_OUT: &[(&str, &str)] = &[
    ("sidecar.istio.io/inject", "false"),
    ("linkerd.io/inject", "disabled"),
];

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings {
            runner_image: format!(
                "ghcr.io/atlas-operator/runner:{}",
                env!("CARGO_PKG_VERSION")
            ),
            image_pull_policy: None,
            image_pull_secrets: Vec::new(),
            service_account: None,
            active_deadline_seconds: Some(30 * 60),
            ttl_seconds_after_finished: None,
            resources: Some(ResourceRequirements {
                requests: Some(BTreeMap::from([
                    ("cpu".to_string(), Quantity("50m".into())),
                    ("memory".to_string(), Quantity("64Mi".into())),
                ])),
                limits: Some(BTreeMap::from([(
                    "memory".to_string(),
                    Quantity("256Mi".into()),
                )])),
                ..Default::default()
            }),
            // Pick the target server's major version: Atlas plans against the dev database.
            dev_images: BTreeMap::from([
                ("postgres".to_string(), "postgres:16".to_string()),
                ("mysql".to_string(), "mysql:8.4".to_string()),
                ("maria".to_string(), "mariadb:11".to_string()),
            ]),
            pod_annotations: MESH_OPT_OUT
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
            atlas_token: None,
            tolerations: None,
            node_selector: BTreeMap::new(),
            affinity: None,
            priority_class_name: None,
            pod_labels: BTreeMap::new(),
            env: Vec::new(),
        }
    }
}

/// The resource a Job belongs to.
#[derive(Clone, Debug)]
pub struct Owner {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// `<kind>-<name>-<hash8>`, at most 63 characters (a Job's name goes into its pods' labels).
/// A long name is cut; the hash, which covers the full name, keeps Jobs apart.
pub fn job_name(kind: Kind, name: &str, short_hash: &str) -> String {
    let prefix = kind.label();
    let room = 63 - prefix.len() - short_hash.len() - 2;
    let mut cut: String = name.chars().take(room).collect();
    while cut.ends_with(['-', '.']) {
        cut.pop();
    }
    format!("{prefix}-{cut}-{short_hash}")
}

/// A label value (at most 63 characters): long names are cut and marked with a hash of the whole.
pub fn label_value(text: &str) -> String {
    if text.len() <= 63 {
        return text.to_string();
    }
    use sha2::{Digest, Sha256};
    let digest: String = Sha256::digest(text.as_bytes())[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut cut: String = text.chars().take(54).collect();
    while cut.ends_with(['-', '.', '_']) {
        cut.pop();
    }
    format!("{cut}-{digest}")
}

/// The labels that find a resource's Jobs (all hashes).
pub fn owner_labels(kind: Kind, name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (LABEL_KIND.to_string(), kind.label().to_string()),
        (LABEL_NAME.to_string(), label_value(name)),
    ])
}

fn owner_reference(owner: &Owner) -> OwnerReference {
    OwnerReference {
        api_version: "db.atlasgo.io/v1alpha1".into(),
        kind: owner.kind.resource_kind().into(),
        name: owner.name.clone(),
        uid: owner.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn metadata(name: String, owner: &Owner, plan: &Plan) -> ObjectMeta {
    let mut labels = owner_labels(owner.kind, &owner.name);
    labels.insert(LABEL_HASH.into(), plan.short_hash().into());
    ObjectMeta {
        name: Some(name),
        namespace: Some(owner.namespace.clone()),
        labels: Some(labels),
        annotations: Some(BTreeMap::from([(
            ANNOTATION_HASH.to_string(),
            plan.hash.clone(),
        )])),
        owner_references: Some(vec![owner_reference(owner)]),
        ..Default::default()
    }
}
