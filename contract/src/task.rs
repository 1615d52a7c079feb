//! What the controller asks one Job's runner to do: a [`Task`], whose [`Work`] is one of the
//! kinds of apply, so a task cannot ask for a migration and a schema at once or for neither.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Kind;

/// One Job's task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Task {
    /// [`crate::CONTRACT_VERSION`] of the controller that rendered the Job.
    pub version: u32,
    /// `namespace/name` of the resource, for logs and messages.
    pub resource: String,
    pub target: Target,
    /// The dev database's URL, in an environment variable. None: the runner needs none (a
    /// migration) or uses an in-memory SQLite database (a SQLite target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_url_env: Option<String>,
    /// The dev database is the pod's own sidecar, which may still be starting: wait this long
    /// for it to accept connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_wait_seconds: Option<u64>,
    /// The env of the Atlas project file the runner writes (`k8s` unless the spec names one).
    pub env_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vars: Vec<Var>,
    /// The environment variable holding a user's own `atlas.hcl` (`spec.config` or
    /// `spec.configFrom`), merged with the generated one; set only when the operator allows
    /// custom configurations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_config_env: Option<String>,
    /// [`crate::digest_files`] of the mounted inputs, as the controller hashed them: the runner
    /// refuses inputs that changed since (a ConfigMap edited after the Job was made).
    pub inputs_digest: String,
    /// `spec.cloud` of an AtlasMigration: where Atlas Cloud is and the project, for the
    /// project file's `atlas { cloud { … } }` when the pod has a token ([`ATLAS_TOKEN_ENV`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<Cloud>,
    pub work: Work,
}

/// The pod environment variable holding the Atlas Cloud token, from a Secret (`spec.cloud.
/// tokenFrom`, or the install-wide token Secret): never in the task or the Job's spec.
pub const ATLAS_TOKEN_ENV: &str = "ATLAS_TOKEN";

/// Atlas Cloud's address and project (`spec.cloud.url`, `spec.cloud.project`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cloud {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

impl Task {
    pub fn kind(&self) -> Kind {
        self.work.kind()
    }
}

/// The apply a task asks for, with the options of that apply only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Work {
    /// An AtlasMigration: `atlas migrate apply`.
    Migration(MigrateApply),
    /// An AtlasSchema: `atlas schema apply`.
    Schema(SchemaApply),
}

impl Work {
    pub fn kind(&self) -> Kind {
        match self {
            Work::Migration(_) => Kind::Migration,
            Work::Schema(_) => Kind::Schema,
        }
    }
}

/// A value the runner reads: given in the contract (not secret), or from an environment variable
/// of the pod (set from a Secret or ConfigMap key by the Job's spec).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Value {
    Literal(String),
    Env(String),
}

/// Where the target database is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Target {
    /// A whole Atlas URL, in an environment variable (it may hold a password).
    UrlEnv(String),
    /// URL parts, assembled by the runner with correct percent-encoding.
    Credentials(Credentials),
    /// Named by the resource's own project file (`env "<envName>" { url = … }` in `spec.config`
    /// or `spec.configFrom`), which the runner leaves as it is: neither side knows the URL.
    FromConfig,
}

/// The parts of a database URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Credentials {
    pub scheme: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Value>,
    /// Only ever an environment variable: a password is never written into a Job's spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    pub host: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
}

/// An input variable of the project configuration (`--var key=value`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Var {
    pub key: String,
    pub value: Value,
}

/// The order `atlas migrate apply --exec-order` runs files in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExecOrder {
    /// Atlas's default: files in order, refusing one older than the database's version.
    #[default]
    Linear,
    LinearSkip,
    NonLinear,
}

impl ExecOrder {
    /// The flag's value, as Atlas spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecOrder::Linear => "linear",
            ExecOrder::LinearSkip => "linear-skip",
            ExecOrder::NonLinear => "non-linear",
        }
    }
}

/// `--tx-mode`: one transaction per file, one for all, or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TxMode {
    File,
    All,
    None,
}

impl TxMode {
    /// The flag's value, as Atlas spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            TxMode::File => "file",
            TxMode::All => "all",
            TxMode::None => "none",
        }
    }
}

/// The options of `atlas migrate apply`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MigrateApply {
    /// The mounted migration directory (a ConfigMap volume: its files are symlinks into `..data/`).
    pub dir: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revisions_schema: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    /// None: Atlas's default ([`ExecOrder::Linear`]), and no flag is passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_order: Option<ExecOrder>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_mode: Option<TxMode>,
    /// `protectedFlows.migrateDown.allow`.
    #[serde(default)]
    pub allow_migrate_down: bool,
    /// `policy.lint.destructive.error`: refuse pending files that drop a schema, table or
    /// column (found by replaying the directory on the dev database), applying none of them.
    /// A custom project file's `lint { destructive { error = true } }` turns it on too.
    #[serde(default)]
    pub lint_destructive: bool,
    /// `policy.lint.dataDepend.error`: refuse pending files whose outcome depends on the rows
    /// (the schema lint's data-dependent changes, between the same two replayed states). A
    /// custom project file's `lint { data_depend { error = true } }` turns it on too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lint_data_depend: bool,
}

/// The options of `atlas schema apply`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SchemaApply {
    /// The desired schema: a mounted file (`….sql` or `….hcl`) or, for `schema.url`, a URL.
    pub desired: Desired,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schemas: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_mode: Option<TxMode>,
    /// `policy.lint.destructive.error`: refuse a plan that drops a schema, table or column.
    #[serde(default)]
    pub lint_destructive: bool,
    /// `policy.lint.dataDepend.error`: refuse a plan whose outcome depends on the rows (a
    /// narrowed type, `NOT NULL` added, enum values removed, a unique index over existing
    /// columns). Absent in the tasks of an older controller, which had no such policy.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lint_data_depend: bool,
    /// `policy.diff.skip`: the kinds of change left out of the plan (`drop_index`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip: Vec<String>,
    /// `policy.diff.concurrent_index`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_index_create: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_index_drop: Option<bool>,
}

/// Where the desired schema of an AtlasSchema is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Desired {
    /// A mounted file; its extension (`.sql` or `.hcl`) says its language.
    File(String),
    /// A URL Atlas reads (`atlas://…`).
    Url(String),
}

impl Default for Desired {
    fn default() -> Self {
        Desired::File(String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CONTRACT_VERSION;

    fn seed_task() -> Task {
        Task {
            version: CONTRACT_VERSION,
            resource: "default/atlasmigration-sample".into(),
            target: Target::Credentials(Credentials {
                scheme: "postgres".into(),
                user: Some(Value::Literal("root".into())),
                password_env: Some("ATLAS_PASSWORD".into()),
                host: Value::Env("ATLAS_HOST".into()),
                port: Some(5432),
                database: Some("postgres".into()),
                parameters: [("sslmode".to_string(), "disable".to_string())].into(),
            }),
            dev_url_env: None,
            dev_wait_seconds: None,
            env_name: "k8s".into(),
            vars: vec![],
            custom_config_env: None,
            inputs_digest: "abc".into(),
            cloud: None,
            work: Work::Migration(MigrateApply {
                dir: "/migrations".into(),
                exec_order: Some(ExecOrder::LinearSkip),
                tx_mode: Some(TxMode::None),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_task_round_trips_and_names_no_secret_value() {
        let task = seed_task();
        let json = serde_json::to_string(&task).unwrap();
        assert_eq!(serde_json::from_str::<Task>(&json).unwrap(), task);
        assert!(
            json.contains("\"passwordEnv\":\"ATLAS_PASSWORD\""),
            "{json}"
        );
        assert!(
            json.contains(r#""work":{"kind":"migration","dir":"/migrations","#),
            "{json}"
        );
        assert!(json.contains(r#""execOrder":"linear-skip""#), "{json}");
        assert_eq!(task.kind(), Kind::Migration);
    }

    #[test]
    fn enums_are_spelled_as_atlas_flags() {
        for order in [
            ExecOrder::Linear,
            ExecOrder::LinearSkip,
            ExecOrder::NonLinear,
        ] {
            let json = serde_json::to_string(&order).unwrap();
            assert_eq!(json, format!("\"{}\"", order.as_str()));
        }
        for mode in [TxMode::File, TxMode::All, TxMode::None] {
            let json = serde_json::to_string(&mode).unwrap();
            assert_eq!(json, format!("\"{}\"", mode.as_str()));
        }
    }

    /// A task of a controller that had no data-dependent lint still reads: the policy is off.
    #[test]
    fn a_schema_task_without_the_data_dependent_lint_reads_as_off() {
        let json = r#"{"desired":{"file":"/atlas/inputs/schema.sql"},"lintDestructive":true}"#;
        let options: SchemaApply = serde_json::from_str(json).unwrap();
        assert!(options.lint_destructive);
        assert!(!options.lint_data_depend);
        let on = SchemaApply {
            lint_data_depend: true,
            ..options
        };
        let json = serde_json::to_string(&on).unwrap();
        assert!(json.contains(r#""lintDataDepend":true"#), "{json}");
        assert_eq!(serde_json::from_str::<SchemaApply>(&json).unwrap(), on);
    }

    #[test]
    fn a_task_of_an_unknown_kind_is_refused() {
        let mut json = serde_json::to_value(seed_task()).unwrap();
        json["work"]["kind"] = "driftcheck".into();
        assert!(serde_json::from_value::<Task>(json).is_err());
    }
}
