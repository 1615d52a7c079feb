//! `AtlasMigration`: a directory of versioned migrations applied in order (`atlas migrate apply`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::LocalObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DevDatabaseSpec, ProjectConfigSpec, TargetSpec, TokenFrom};
use super::schema::CheckConfig;

/// A migration directory to apply to a database. The operator applies the pending files in a
/// Job and reports the version the database is at.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "db.atlasgo.io",
    version = "v1alpha1",
    kind = "AtlasMigration",
    namespaced,
    doc = "AtlasMigration: a directory of versioned migrations that atlas-operator applies in order (`atlas migrate apply` in a Job).",
    status = "AtlasMigrationStatus",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.lastAppliedVersion"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new("[has(self.url), has(self.urlFrom), has(self.credentials)].filter(x, x).size() <= 1")
        .message("set only one of url, urlFrom or credentials"),
    validation = Rule::new("has(self.url) || has(self.urlFrom) || has(self.credentials) || has(self.config) || has(self.configFrom)")
        .message("set one of url, urlFrom or credentials to name the target database, or a custom config (config or configFrom) whose env names it"),
    validation = Rule::new("has(self.dir.configMapRef) || has(self.dir.local) || has(self.dir.remote) || has(self.config) || has(self.configFrom)")
        .message("dir needs one of configMapRef, local or remote"),
)]
#[serde(rename_all = "camelCase")]
pub struct AtlasMigrationSpec {
    #[serde(flatten)]
    pub target: TargetSpec,
    #[serde(flatten)]
    pub project: ProjectConfigSpec,
    #[serde(flatten)]
    pub dev: DevDatabaseSpec,
    /// The migration directory: exactly one of `configMapRef`, `local` or `remote`.
    pub dir: Dir,
    /// This operator's extension: the Job pod's scheduling, labels, annotations, resources,
    /// service account and extra environment (see `JobPodSpec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_pod: Option<super::common::JobPodSpec>,
    /// Atlas Cloud: the project, and the token to reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<MigrationCloud>,
    /// The schema that holds Atlas's revisions table (`atlas_schema_revisions`). By default the
    /// connected schema (PostgreSQL: `public`) or database (MySQL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revisions_schema: Option<String>,
    /// The version the database is taken to be at on the first apply, for a database that
    /// existed before its migrations were managed; files up to it are not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    /// How pending files are ordered: `linear` (the default: a file older than the database's
    /// version is an error), `linear-skip` (such files are skipped) or `non-linear` (they run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "linear"))]
    pub exec_order: Option<ExecOrder>,
    /// Flows that need explicit permission, such as migrating down to an older version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected_flows: Option<ProtectedFlows>,
    /// Policies applied when migrating: the lint of the pending files, Atlas Cloud's drift
    /// check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<MigrationPolicy>,
    /// How many failed attempts are retried before the resource is marked failed (`status.failed`
    /// counts them); 0 means no limit but the Job's deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 20))]
    pub backoff_limit: Option<i32>,
}

/// Where the migration files come from: exactly one source.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[x_kube(
    validation = Rule::new("[has(self.configMapRef), has(self.local), has(self.remote)].filter(x, x).size() <= 1")
        .message("set only one of configMapRef, local or remote"),
)]
#[serde(rename_all = "camelCase")]
pub struct Dir {
    /// A ConfigMap in the resource's namespace whose keys are the directory's files (the
    /// `.sql` files and `atlas.sum`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<LocalObjectReference>,
    /// The directory's files inline, file name to content (the `.sql` files and `atlas.sum`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<BTreeMap<String, String>>,
    /// A migration directory on Atlas Cloud (needs `cloud.tokenFrom`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<Remote>,
}

/// A migration directory on Atlas Cloud.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Remote {
    /// The directory's name in the Atlas Cloud project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The tag (for example a commit hash) of the directory's version to apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// Atlas Cloud settings of an AtlasMigration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationCloud {
    /// The Atlas Cloud URL, for a self-hosted Atlas Cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The Atlas Cloud token, read from a key of a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_from: Option<TokenFrom>,
    /// The Atlas Cloud project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

/// How Atlas orders and runs pending migration files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ExecOrder {
    /// Files run in order; a pending file older than the database's version is an error.
    #[default]
    Linear,
    /// Files run in order; pending files older than the database's version are skipped.
    LinearSkip,
    /// Every pending file runs, older ones included.
    NonLinear,
}

impl From<ExecOrder> for contract::ExecOrder {
    fn from(order: ExecOrder) -> Self {
        match order {
            ExecOrder::Linear => contract::ExecOrder::Linear,
            ExecOrder::LinearSkip => contract::ExecOrder::LinearSkip,
            ExecOrder::NonLinear => contract::ExecOrder::NonLinear,
        }
    }
}

/// Flows of a deployment that need explicit permission.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProtectedFlows {
    /// Migrating the database down to an older version than it is at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrate_down: Option<DeploymentFlow>,
}

/// Permission for a protected flow.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentFlow {
    /// Whether the flow may run at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = false))]
    pub allow: Option<bool>,
    /// Whether the flow runs without a review (needed for local directories).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = false))]
    pub auto_approve: Option<bool>,
}

/// Policies applied when migrating.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MigrationPolicy {
    /// The pre-apply drift check (Atlas Cloud only): before pending files are applied, the
    /// database is compared with the state Atlas Cloud holds for its current version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftPolicy>,
    /// The lint of the pending migration files, before any of them is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lint: Option<MigrationLint>,
}

/// The checks run on the pending migration files: they are replayed on the dev database
/// (`spec.devURL`, or a sidecar the operator adds) after the files the database has applied,
/// and the two states compared.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MigrationLint {
    /// The destructive-change check: with `error: true`, pending files that drop a schema,
    /// table or column are not applied (none of them) and the resource reports
    /// `LintPolicyError`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destructive: Option<CheckConfig>,
    /// The data-dependent check (this operator's, as AtlasSchema's `policy.lint.dataDepend`):
    /// with `error: true`, pending files that narrow a type, change a type's family, set `NOT
    /// NULL` or add a `NOT NULL` column without a default, remove enum values or add a unique
    /// index over existing columns are not applied (none of them) and the resource reports
    /// `LintPolicyError`. Refused whatever the rows hold now.
    #[serde(
        rename = "dataDepend",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub data_depend: Option<CheckConfig>,
}

/// The pre-apply drift check.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftPolicy {
    /// What happens when drift is found: `FAIL` (the default) stops the migration, `CONTINUE`
    /// applies it anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<DriftOnError>,
    /// Glob patterns of database objects the drift check ignores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Vec<String>>,
}

/// What happens when the pre-apply drift check finds drift.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum DriftOnError {
    /// Stop the migration and report the drift.
    Fail,
    /// Apply anyway.
    Continue,
}

/// What the operator last observed and did for an AtlasMigration. The names mix cases as the Go
/// operator's do (`observed_hash`, `lastApplied`, `approvalUrl`), so tools written for it still
/// read them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("default" = {"observedGeneration": -1}))]
pub struct AtlasMigrationStatus {
    /// The latest observations of the resource's state. `Ready` says whether every migration
    /// is applied; its reason says why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<Condition>>,
    /// The `metadata.generation` the status describes.
    #[serde(
        rename = "observedGeneration",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub observed_generation: Option<i64>,
    /// The hash of the inputs (spec and migration files) last applied.
    #[serde(
        rename = "observed_hash",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub observed_hash: Option<String>,
    /// When migrations were last applied, in unix seconds.
    #[serde(
        rename = "lastApplied",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_applied: Option<i64>,
    /// The version the database was migrated to by the last successful apply.
    #[serde(
        rename = "lastAppliedVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_applied_version: Option<String>,
    /// The deployment on Atlas Cloud of the last successful apply (Atlas Cloud only).
    #[serde(
        rename = "lastDeploymentUrl",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_deployment_url: Option<String>,
    /// Where to approve a pending migration on Atlas Cloud (Atlas Cloud only).
    #[serde(
        rename = "approvalUrl",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub approval_url: Option<String>,
    /// How many times in a row the apply has failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 0))]
    pub failed: Option<i32>,
}
