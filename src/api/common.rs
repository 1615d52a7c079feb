//! Spec fields that both kinds share: where the target database is, how the Atlas project is
//! configured, and which dev database Atlas may use.
//!
//! The JSON names are the Go operator's, letter for letter, so its users' manifests apply
//! unchanged. The groups are flattened into each kind's spec, as Go's inline structs are.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMapKeySelector, PodSpec, SecretKeySelector};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to one key of a Secret in the resource's namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// The Secret and key that hold the value. Only the Job's pod reads it (as an environment
    /// variable): the operator itself never reads Secret values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeySelector>,
}

/// Where the target database is: exactly one of `url`, `urlFrom` or `credentials`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetSpec {
    /// URL of the target database, as Atlas reads it (for example
    /// `postgres://user:pass@host:5432/db?sslmode=disable`). Prefer `urlFrom` or `credentials`
    /// with `passwordFrom`: a URL written here is stored in plain text in the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The URL of the target database, read from a key of a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_from: Option<SecretRef>,
    /// The parts of the target database's URL, given one by one (used instead of `url` or
    /// `urlFrom`); user, password and host may each come from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,
}

/// The parts of a database URL, assembled as `scheme://user:password@host:port/database?parameters`.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[x_kube(
    validation = Rule::new("has(self.scheme) && self.scheme != ''")
        .message("credentials.scheme is required (postgres, mysql, maria, sqlite, …)"),
    validation = Rule::new("has(self.host) || has(self.hostFrom)")
        .message("credentials need host or hostFrom"),
)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    /// The driver, as the URL scheme Atlas knows: `postgres`, `mysql`, `maria`, `sqlite`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// The database user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The database user, read from a key of a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_from: Option<SecretRef>,
    /// The password in plain text. Prefer `passwordFrom`: this value is stored in the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// The password, read from a key of a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_from: Option<SecretRef>,
    /// The database server's host name or address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The host, read from a key of a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_from: Option<SecretRef>,
    /// The database server's port; the driver's default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// The database (or, for SQLite, the file) to connect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Query parameters of the URL, such as `sslmode: disable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<BTreeMap<String, String>>,
}

/// How the Atlas project around the apply is configured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectConfigSpec {
    /// A custom Atlas project configuration (`atlas.hcl` content). Used only when the operator
    /// is started with custom configs allowed (Helm value `allowCustomConfig`), since a project
    /// file can read external data sources; `envName` then names the env to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// The custom Atlas project configuration, read from a key of a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_from: Option<SecretRef>,
    /// The env of the project configuration to use. Defaults to `k8s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_name: Option<String>,
    /// Input variables of the project configuration, passed to Atlas as `--var key=value`.
    /// Several entries with the same key make a list variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vars: Option<Vec<Variable>>,
}

impl ProjectConfigSpec {
    /// Whether the resource brings its own project file (`config` not blank, or `configFrom`).
    pub fn has_config(&self) -> bool {
        self.config.as_ref().is_some_and(|c| !c.trim().is_empty()) || self.config_from.is_some()
    }
}

/// One input variable of the project configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Variable {
    /// The variable's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The variable's value, in plain text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The variable's value, read from a Secret or a ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<ValueFrom>,
}

/// Where a variable's value is read from: a Secret key or a ConfigMap key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValueFrom {
    /// A key of a Secret in the resource's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeySelector>,
    /// A key of a ConfigMap in the resource's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<ConfigMapKeySelector>,
}

/// The dev database: an empty database of the same kind as the target, which Atlas uses to
/// normalise the desired schema and to check a plan before it touches the target.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DevDatabaseSpec {
    /// URL of the dev database. When neither this nor `devURLFrom` is set, each Job gets a
    /// throwaway dev database of its own, which stops with the Job.
    #[serde(rename = "devURL", default, skip_serializing_if = "Option::is_none")]
    pub dev_url: Option<String>,
    /// URL of the dev database, read from a key of a Secret.
    #[serde(
        rename = "devURLFrom",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub dev_url_from: Option<SecretRef>,
    /// The Go operator's dev database pod. Here the dev database is a sidecar of each Job's pod:
    /// the first container's `image`, `imagePullPolicy` and `resources` shape it, and
    /// `metadata` is added to the Job's pod; the rest has no effect.
    #[serde(rename = "devDB", default, skip_serializing_if = "Option::is_none")]
    pub dev_db: Option<DevDb>,
    /// The Go operator's (v0.8) per-resource switch to keep its dev database running between
    /// applies. Accepted so its manifests apply unchanged; here each Job brings a throwaway dev
    /// database of its own, so there is nothing to keep warm and it has no effect.
    #[serde(
        rename = "prewarmDevDB",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub prewarm_dev_db: Option<bool>,
}

/// The dev database's pod, as the Go operator accepts it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DevDb {
    /// Labels and annotations for the dev database's pod: added to the Job's pod that runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<DevDbMetadata>,
    /// A Kubernetes pod spec for the dev database; its first container's image,
    /// imagePullPolicy and resources are used. Stored as given (the API server does not check
    /// it against the pod schema, which would make the CRD hundreds of kilobytes); a value that
    /// is not a pod spec fails the apply with reason GettingDevDB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved_object")]
    pub spec: Option<serde_json::Map<String, serde_json::Value>>,
}

impl DevDb {
    /// The pod spec override, read as a pod spec.
    pub fn pod_spec(&self) -> Option<Result<PodSpec, serde_json::Error>> {
        self.spec
            .as_ref()
            .map(|spec| serde_json::from_value(serde_json::Value::Object(spec.clone())))
    }
}

/// Labels and annotations added to the dev database's pod.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DevDbMetadata {
    /// Extra labels for the dev database's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Extra annotations for the dev database's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// An object the API server stores as given, without a schema for its fields.
fn preserved_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// The Atlas Cloud token, read from a key of a Secret.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenFrom {
    /// The Secret and key that hold the Atlas Cloud token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeySelector>,
}

/// `spec.jobPod`, an extension of this operator's (the Go operator has no such field): how this
/// resource's Job pods are scheduled and what they carry, over the install-wide settings (the
/// chart's `jobs.*`). Maps (labels, annotations, nodeSelector) are merged key by key with this
/// resource's values winning; the others replace the install's. The operator's own labels are
/// never overridden.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobPodSpec {
    /// Tolerations of the Job's pod (replace the install's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<k8s_openapi::api::core::v1::Toleration>>,
    /// Node labels the Job's pod must run on (merged over the install's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Affinity of the Job's pod (replaces the install's), a Kubernetes `Affinity`. Kept as
    /// given in the CRD (its full schema would triple the CRD's size); the API server checks it
    /// when the Job is made, and a refusal is shown in the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved_object")]
    pub affinity: Option<k8s_openapi::api::core::v1::Affinity>,
    /// The PriorityClass of the Job's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// The runner container's resources (replace the install's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
    /// Labels added to the Job's pod (for example a workload identity's); never replacing the
    /// operator's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations added to the Job's pod (merged over the install's, such as the service mesh
    /// opt-outs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// The service account the Job's pod runs as (its token is never mounted). The chart's Job
    /// admission policy allows only the install's and those in
    /// `admissionPolicies.jobShape.serviceAccounts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Secrets to pull the runner's image with (replace the install's). The chart's Job
    /// admission policy allows only the install's and those in
    /// `admissionPolicies.jobShape.imagePullSecrets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<k8s_openapi::api::core::v1::LocalObjectReference>>,
    /// More environment variables of the runner: a literal `value`, or `valueFrom` a Secret's or
    /// ConfigMap's key in the resource's namespace. Names the operator sets are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<k8s_openapi::api::core::v1::EnvVar>>,
}
