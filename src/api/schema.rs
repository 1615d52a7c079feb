//! `AtlasSchema`: a database schema applied declaratively (`atlas schema apply`).

use k8s_openapi::api::core::v1::ConfigMapKeySelector;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DevDatabaseSpec, ProjectConfigSpec, TargetSpec, TokenFrom};

/// The desired schema of a database. The operator plans the change from the database's current
/// schema to this one and applies it in a Job, with the lint and diff policies given here.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "db.atlasgo.io",
    version = "v1alpha1",
    kind = "AtlasSchema",
    namespaced,
    doc = "AtlasSchema: the desired schema of a database, applied declaratively by atlas-operator (`atlas schema apply` in a Job).",
    status = "AtlasSchemaStatus",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new("[has(self.url), has(self.urlFrom), has(self.credentials)].filter(x, x).size() <= 1")
        .message("set only one of url, urlFrom or credentials"),
    validation = Rule::new("has(self.url) || has(self.urlFrom) || has(self.credentials) || has(self.config) || has(self.configFrom)")
        .message("set one of url, urlFrom or credentials to name the target database, or a custom config (config or configFrom) whose env names it"),
    validation = Rule::new("(has(self.schema) && (has(self.schema.sql) || has(self.schema.hcl) || has(self.schema.url) || has(self.schema.configMapKeyRef))) || has(self.config) || has(self.configFrom)")
        .message("schema needs one of sql, hcl, url or configMapKeyRef"),
)]
#[serde(rename_all = "camelCase")]
pub struct AtlasSchemaSpec {
    #[serde(flatten)]
    pub target: TargetSpec,
    #[serde(flatten)]
    pub project: ProjectConfigSpec,
    #[serde(flatten)]
    pub dev: DevDatabaseSpec,
    /// The desired schema: exactly one of `sql`, `hcl`, `url` or `configMapKeyRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Schema>,
    /// This operator's extension: the Job pod's scheduling, labels, annotations, resources,
    /// service account and extra environment (see `JobPodSpec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_pod: Option<super::common::JobPodSpec>,
    /// Atlas Cloud: the schema repository and the token to reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<SchemaCloud>,
    /// Glob patterns of database objects Atlas leaves alone (neither created, changed nor
    /// dropped): `ignore_me` or `audit_*` for tables of a URL bound to one schema (MySQL with a
    /// database, PostgreSQL with `search_path`); `public.ignore_me` otherwise, where a pattern
    /// without a dot would match schemas only and is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Vec<String>>,
    /// The schemas (named databases) of the target that Atlas manages; all of the URL's schema
    /// when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schemas: Option<Vec<String>>,
    /// How the change is wrapped in transactions: `file` (one for the whole change, the
    /// default) or `none`. (`all` is `atlas migrate apply`'s; `atlas schema apply` refuses it.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "tx_mode_schema", extend("default" = "file"))]
    pub tx_mode: Option<TxMode>,
    /// Policies for planning (`diff`) and checking (`lint`) the change before it is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    /// How many failed attempts are retried before the resource is marked failed (`status.failed`
    /// counts them); 0 means no limit but the Job's deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 20))]
    pub backoff_limit: Option<i32>,
}

/// Where the desired schema comes from: exactly one source.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[x_kube(
    validation = Rule::new("[has(self.sql), has(self.hcl), has(self.url), has(self.configMapKeyRef)].filter(x, x).size() <= 1")
        .message("set only one of sql, hcl, url or configMapKeyRef"),
)]
#[serde(rename_all = "camelCase")]
pub struct Schema {
    /// The desired schema as SQL statements (`CREATE TABLE …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// The desired schema in Atlas HCL (`table "users" { … }`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hcl: Option<String>,
    /// A URL Atlas reads the desired schema from, such as `atlas://repo?tag=…` on Atlas Cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A ConfigMap key holding the desired schema; the key must end in `.sql` or `.hcl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<ConfigMapKeySelector>,
}

/// Atlas Cloud settings of an AtlasSchema.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchemaCloud {
    /// The schema repository on Atlas Cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The Atlas Cloud token, read from a key of a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_from: Option<TokenFrom>,
}

/// How a schema change is wrapped in transactions.
// The CRD offers `file` and `none`, the modes `atlas schema apply --tx-mode` takes (v0.13.1:
// "[none, file]"); the Go operator's CRD also lets `all` in, which Atlas then refuses. `All`
// stays readable so a resource stored with it (before this CRD, or an unchanged old value the
// API server keeps) is still read and refused with a message, rather than failing the list of
// every AtlasSchema: hence the field's schema written by hand (`tx_mode_schema`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TxMode {
    /// One transaction for the whole change.
    #[default]
    File,
    /// `atlas migrate apply`'s one transaction for all files; not a mode of `schema apply`.
    All,
    /// No transaction.
    None,
}

/// The CRD schema of `txMode`: the modes of `atlas schema apply`, `All` left out.
fn tx_mode_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "enum": ["file", "none"],
    })
}

impl From<TxMode> for contract::TxMode {
    fn from(mode: TxMode) -> Self {
        match mode {
            TxMode::File => contract::TxMode::File,
            TxMode::All => contract::TxMode::All,
            TxMode::None => contract::TxMode::None,
        }
    }
}

/// Policies that direct how Atlas plans and checks a schema change.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Policy {
    /// Checks run on the planned change before it is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lint: Option<Lint>,
    /// Rules for planning the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<Diff>,
}

/// Checks run on the planned change before it is applied.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Lint {
    /// The destructive-change check: with `error: true`, a plan that drops a schema, table or
    /// column is not applied and the resource reports `LintPolicyError`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destructive: Option<CheckConfig>,
    /// The data-dependent-change check (this operator's; the Go operator has none): with
    /// `error: true`, a plan whose outcome depends on the rows the tables hold is not applied
    /// and the resource reports `LintPolicyError`: a narrowed type (a shorter length, a
    /// smaller integer, fewer decimal digits, a time type that loses its date, time of day,
    /// fractional seconds or zone), a type of another family, `NOT NULL` set on a column or a
    /// `NOT NULL` column without a default added to a table, enum values removed, and a unique
    /// index or primary key over columns that were not unique. Refused whatever the rows hold
    /// now. Named after the `data_depend` analyzer of Atlas's `lint` block (unique indexes
    /// over existing columns, `NOT NULL` columns added without a default, MySQL's enum
    /// changes), which `schema apply` never runs: the runner finds these and the narrowings
    /// by comparing Atlas's inspections, as it does for `destructive`.
    #[serde(
        rename = "dataDepend",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub data_depend: Option<CheckConfig>,
    /// When a lint report needs a review on Atlas Cloud (Atlas Cloud only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<LintReview>,
}

/// The configuration of one lint check.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CheckConfig {
    /// Whether a finding of this check fails the apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<bool>,
}

/// When a lint report needs a review on Atlas Cloud.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum LintReview {
    /// Every change is reviewed.
    Always,
    /// Changes with warnings or errors are reviewed.
    Warning,
    /// Changes with errors are reviewed.
    Error,
}

/// Rules for planning a schema change.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Diff {
    /// Create or drop indexes concurrently (PostgreSQL), so writes are not blocked meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_index: Option<ConcurrentIndex>,
    /// Kinds of change left out of the plan, such as `drop_index: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip: Option<SkipChanges>,
}

/// Whether indexes are created and dropped concurrently (PostgreSQL).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConcurrentIndex {
    /// `CREATE INDEX CONCURRENTLY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<bool>,
    /// `DROP INDEX CONCURRENTLY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop: Option<bool>,
}

/// Kinds of change left out of a plan. Each is a flag; `true` leaves that kind of change out.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SkipChanges {
    /// Leave out `CREATE SCHEMA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_schema: Option<bool>,
    /// Leave out `DROP SCHEMA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_schema: Option<bool>,
    /// Leave out changes to a schema's attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modify_schema: Option<bool>,
    /// Leave out `CREATE TABLE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_table: Option<bool>,
    /// Leave out `DROP TABLE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_table: Option<bool>,
    /// Leave out changes to a table's attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modify_table: Option<bool>,
    /// Leave out added columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_column: Option<bool>,
    /// Leave out dropped columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_column: Option<bool>,
    /// Leave out changed columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modify_column: Option<bool>,
    /// Leave out added indexes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_index: Option<bool>,
    /// Leave out dropped indexes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_index: Option<bool>,
    /// Leave out changed indexes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modify_index: Option<bool>,
    /// Leave out added foreign keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_foreign_key: Option<bool>,
    /// Leave out dropped foreign keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_foreign_key: Option<bool>,
    /// Leave out changed foreign keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modify_foreign_key: Option<bool>,
}

/// What the operator last observed and did for an AtlasSchema. The names mix cases as the Go
/// operator's do (`observed_hash`, `last_applied`, `planURL`), so tools written for it still read
/// them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("default" = {"observedGeneration": -1}))]
pub struct AtlasSchemaStatus {
    /// The latest observations of the resource's state. `Ready` says whether the desired
    /// schema is applied; its reason says why not.
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
    /// The hash of the inputs (spec and referenced ConfigMaps) last applied.
    #[serde(
        rename = "observed_hash",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub observed_hash: Option<String>,
    /// When the schema was last applied, in unix seconds.
    #[serde(
        rename = "last_applied",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_applied: Option<i64>,
    /// The URL of the schema plan on Atlas Cloud (Atlas Cloud only).
    #[serde(rename = "planURL", default, skip_serializing_if = "Option::is_none")]
    pub plan_url: Option<String>,
    /// A link to the schema plan on Atlas Cloud (Atlas Cloud only).
    #[serde(rename = "planLink", default, skip_serializing_if = "Option::is_none")]
    pub plan_link: Option<String>,
    /// How many times in a row the apply has failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 0))]
    pub failed: Option<i32>,
}
