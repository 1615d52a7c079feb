//! The pipeline's validate step: a resource and what the dereference step found for it, turned
//! into a [`Plan`] of everything its Job needs (the runner's task, the pod's environment, the
//! mounted inputs, the dev database it brings) or a [`PlanError`] the user can act on. Pure: no
//! API call, so every rule is unit-tested. The plan is complete here: the build step only
//! renders it.
//!
//! Secret values are never read: a Secret reaches the pod as an environment variable from
//! `secretKeyRef`. Values the user wrote in plain text in the spec (a literal `url`, `password` or
//! `devURL`) go into the operator-made inputs ConfigMap and reach the pod from there, so they stay
//! out of the Job's spec; `urlFrom`/`passwordFrom` keep them out of both.

pub mod migration;
mod project;
pub mod schema;
mod target;

use std::collections::BTreeMap;

use contract::{Kind, Reason};
use k8s_openapi::api::core::v1::{ContainerPort, EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub use migration::migration;
pub use schema::schema;
pub use target::TARGET_REQUIRED;

use super::AtlasResource;
use super::dereference::Dereferenced;

/// Where the inputs are mounted in the runner's container.
pub const INPUTS_DIR: &str = "/atlas/inputs";

/// Environment variables of the runner's container (secrets arrive through them).
pub const ENV_URL: &str = "ATLAS_TARGET_URL";
pub const ENV_USER: &str = "ATLAS_TARGET_USER";
pub const ENV_PASSWORD: &str = "ATLAS_TARGET_PASSWORD";
pub const ENV_HOST: &str = "ATLAS_TARGET_HOST";
pub const ENV_DEV_URL: &str = "ATLAS_DEV_URL";

/// Keys of the inputs ConfigMap for values the user wrote in the spec in plain text.
/// They cannot be mistaken for input files: the inputs volume mounts only the files' keys.
pub(crate) const KEY_URL: &str = "atlas-operator.target-url";
pub(crate) const KEY_PASSWORD: &str = "atlas-operator.target-password";
pub(crate) const KEY_DEV_URL: &str = "atlas-operator.dev-url";
pub(crate) const KEY_CONFIG: &str = "atlas-operator.config.hcl";
/// A user's own `atlas.hcl`, when the spec gives one.
pub const ENV_CUSTOM_CONFIG: &str = "ATLAS_CUSTOM_CONFIG";
/// `spec.vars` values read from Secrets and ConfigMaps: `ATLAS_VAR_<index>`.
pub const ENV_VAR_PREFIX: &str = "ATLAS_VAR_";

/// Said of a resource with `spec.cloud` but no token of its own.
pub const CLOUD_WITHOUT_TOKEN: &str = "spec.cloud has no tokenFrom: the Job's Atlas gets no \
     token of this resource's, only the install-wide one where the platform team set it \
     (the chart's atlasToken)";

/// `spec.cloud.tokenFrom` as the pod's [`contract::ATLAS_TOKEN_ENV`], straight from the Secret:
/// the operator never reads the token. Returns whether the resource gives one.
fn cloud_token(
    token_from: Option<&crate::api::TokenFrom>,
    reason: Reason,
    env: &mut Vec<EnvVar>,
) -> Result<bool, PlanError> {
    let Some(token_from) = token_from else {
        return Ok(false);
    };
    let Some(selector) = &token_from.secret_key_ref else {
        return Err(PlanError::spec(
            reason,
            "spec.cloud.tokenFrom needs a secretKeyRef (the Secret and key of the token)",
        ));
    };
    env.push(EnvVar {
        name: contract::ATLAS_TOKEN_ENV.into(),
        value_from: Some(k8s_openapi::api::core::v1::EnvVarSource {
            secret_key_ref: Some(selector.clone()),
            ..Default::default()
        }),
        ..Default::default()
    });
    Ok(true)
}

/// Stands for the inputs ConfigMap's name in a [`Plan`]; the build step puts the real name in.
pub const INLINE_PLACEHOLDER: &str = "$(inputs)";
/// Stands for the credentials Secret's name in a [`Plan`]; the build step puts the real name in.
pub const CREDENTIALS_PLACEHOLDER: &str = "$(credentials)";

/// What the operator's flags allow of a resource.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allowed {
    /// `--allow-custom-config`: resources may bring their own `atlas.hcl`.
    pub custom_config: bool,
}

/// The validate step: the rules of the resource's kind, then what the operator allows.
pub fn validate<K: AtlasResource>(
    resource: &K,
    found: &Dereferenced,
    allowed: Allowed,
) -> Result<Plan, PlanError> {
    let plan = resource.validate(found)?;
    if plan.task.custom_config_env.is_some() && !allowed.custom_config {
        return Err(PlanError::spec(plan.input_reason(), CUSTOM_CONFIG_REFUSED));
    }
    Ok(plan)
}

/// Why a resource cannot be turned into a Job: the user's to fix, shown as the Ready reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PlanError {
    pub reason: Reason,
    pub message: String,
    /// Whether waiting can fix it without a spec change (a ConfigMap not created yet).
    pub waits_for_object: bool,
}

impl PlanError {
    pub(super) fn spec(reason: Reason, message: impl Into<String>) -> PlanError {
        PlanError {
            reason,
            message: message.into(),
            waits_for_object: false,
        }
    }

    pub(super) fn missing(reason: Reason, message: impl Into<String>) -> PlanError {
        PlanError {
            reason,
            message: message.into(),
            waits_for_object: true,
        }
    }
}

/// Where the mounted inputs come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputSource {
    /// The operator-made inputs ConfigMap (inline `dir.local`, `schema.sql`/`hcl`): these keys.
    Inline { files: Vec<String> },
    /// A user's ConfigMap, whole or only some keys.
    ConfigMap {
        name: String,
        keys: Option<Vec<String>>,
    },
}

/// Everything one Job needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub kind: Kind,
    /// sha256 (hex) over the canonical spec, the referenced ConfigMaps' data and the resource's
    /// identity: a change to any of them is a new Job.
    pub hash: String,
    /// The runner's task.
    pub task: contract::Task,
    pub env: Vec<EnvVar>,
    /// The data of the operator-made inputs ConfigMap; empty when none is needed.
    pub inline: BTreeMap<String, String>,
    /// What the spec wrote in plain text that may be a credential (an inline `url` or `devURL`,
    /// `credentials.password`): the data of the operator-made credentials Secret, never of a
    /// ConfigMap, which the built-in `view` role can read. Empty when none is needed.
    pub credentials: BTreeMap<String, String>,
    /// The mounted inputs, if any.
    pub inputs: Option<InputSource>,
    /// The Job's `backoffLimit`, from `spec.backoffLimit` ([`job_backoff_limit`]).
    pub backoff_limit: i32,
    /// The apply needs a dev database and the spec gives none: the Job gets one as a sidecar.
    pub dev: DevNeed,
    /// What `spec.devDB` changes about that sidecar.
    pub dev_override: DevOverride,
    /// What the spec asks for that this operator cannot do, while the apply can go on without
    /// it: never silently ignored, each is said in the status and a Warning event.
    pub notices: Vec<String>,
    /// `spec.jobPod`, checked ([`job_pod`]): over the install's Job pod settings.
    pub job_pod: crate::api::JobPodSpec,
}

/// Environment variables `spec.jobPod.env` may not set: the operator's own (the task, the
/// runner's working directory, which Atlas runs, the token of `cloud.tokenFrom`).
const RESERVED_ENV: &[&str] = &[contract::TASK_ENV, "TMPDIR", "PATH", "ATLAS_BIN", "HOME"];

/// `spec.jobPod`, checked: its env only literal values or keys of Secrets and ConfigMaps (as
/// every other input of the runner), under names the operator does not set itself (`taken`: the
/// plan's own variables).
pub(super) fn job_pod(
    spec: Option<&crate::api::JobPodSpec>,
    reason: Reason,
    taken: &[EnvVar],
) -> Result<crate::api::JobPodSpec, PlanError> {
    let Some(spec) = spec else {
        return Ok(Default::default());
    };
    for var in spec.env.iter().flatten() {
        let name = var.name.as_str();
        if RESERVED_ENV.contains(&name)
            || name.starts_with("ATLAS_RUNNER_")
            || name == contract::ATLAS_TOKEN_ENV
            || taken.iter().any(|t| t.name == name)
        {
            return Err(PlanError::spec(
                reason,
                format!(
                    "spec.jobPod.env: {name} is set by the operator{}; choose another name",
                    if name == contract::ATLAS_TOKEN_ENV {
                        " (give an Atlas Cloud token with spec.cloud.tokenFrom)"
                    } else {
                        ""
                    }
                ),
            ));
        }
        let from_ok = var.value_from.as_ref().is_none_or(|from| {
            (from.secret_key_ref.is_some() || from.config_map_key_ref.is_some())
                && from.field_ref.is_none()
                && from.resource_field_ref.is_none()
        });
        if !from_ok {
            return Err(PlanError::spec(
                reason,
                format!(
                    "spec.jobPod.env: {name} may have a value or come from a Secret's or \
                     ConfigMap's key (secretKeyRef, configMapKeyRef), nothing else"
                ),
            ));
        }
    }
    Ok(spec.clone())
}

/// The parts of `spec.devDB` (the Go operator's dev database pod) that apply to a dev database
/// running as a sidecar of the Job's pod. The rest of that pod spec (its own containers' env,
/// volumes, scheduling) described a Deployment this operator never makes: the sidecar's
/// credentials and storage are the operator's, so the runner can reach it on the pod's loopback.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DevOverride {
    /// The first container's image: pick the target server's version.
    pub image: Option<String>,
    pub image_pull_policy: Option<String>,
    /// The first container's resources, instead of the operator's defaults.
    pub resources: Option<ResourceRequirements>,
    /// The first container's environment and ports: used when `devURL` names the server
    /// ([`DevNeed::Described`]), whose credentials are then the user's.
    pub env: Vec<EnvVar>,
    pub ports: Vec<ContainerPort>,
    /// `devDB.metadata`: added to the Job's pod (for example a service mesh's opt-out), never
    /// replacing the operator's own labels.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

impl Plan {
    /// The reason a problem with the resource's inputs is reported under.
    pub fn input_reason(&self) -> Reason {
        self.kind.input_reason()
    }
}

/// Whether the Job must bring its own dev database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DevNeed {
    /// Given (`devURL`/`devURLFrom`), or not needed (migrations; SQLite uses memory).
    None,
    /// A sidecar of this driver (`postgres`, `mysql`, `maria`), known from the spec.
    Sidecar(String),
    /// Needed, but the driver is in a Secret the operator does not read: a first Job without a
    /// sidecar finds it (the runner reports it), and the next Job brings the sidecar.
    Unknown,
    /// The driver the first Job found: the second Job (named `…-dev`) brings the sidecar.
    Found(String),
    /// `devURL` names a server that `devDB` describes (upstream's pattern: `devURL:
    /// mysql://root:pass@localhost/dev` with a `devDB` pod of that image and environment): a
    /// sidecar of this driver from `devDB`'s container, reached at the given URL.
    Described(String),
}

impl DevNeed {
    /// The driver of the sidecar the Job brings, if it brings one.
    pub fn sidecar(&self) -> Option<&str> {
        match self {
            DevNeed::Sidecar(driver) | DevNeed::Found(driver) | DevNeed::Described(driver) => {
                Some(driver)
            }
            DevNeed::None | DevNeed::Unknown => None,
        }
    }
}

/// The driver of a URL or scheme, for a dev database; None for SQLite and unknown schemes.
pub fn driver_of_scheme(scheme: &str) -> Option<&'static str> {
    match scheme.split('+').next().unwrap_or_default() {
        "postgres" | "postgresql" => Some("postgres"),
        "mysql" => Some("mysql"),
        "maria" | "mariadb" => Some("maria"),
        _ => None,
    }
}

impl Plan {
    /// The first 8 characters of the hash: in the Job's name.
    pub fn short_hash(&self) -> &str {
        &self.hash[..8]
    }
}

/// The message when a resource brings its own `atlas.hcl` and the operator does not allow it.
pub const CUSTOM_CONFIG_REFUSED: &str = "this operator does not run custom Atlas configs \
     (spec.config, spec.configFrom): an atlas.hcl can read external data and run programs. The \
     platform team can allow them with --allow-custom-config (Helm value allowCustomConfig: true)";

/// What every kind's task has, read from the spec parts every kind has (the target, the dev
/// URL, the project file and its vars), with the pod environment and inline values they need.
struct Common {
    resource: String,
    target: contract::Target,
    dev_url_env: Option<String>,
    env_name: String,
    project: project::ProjectConfig,
    env: Vec<EnvVar>,
    inline: BTreeMap<String, String>,
    credentials: BTreeMap<String, String>,
}

/// A kind's task with what its pod needs: its environment, the inputs ConfigMap's data and the
/// credentials Secret's.
struct TaskParts {
    task: contract::Task,
    env: Vec<EnvVar>,
    inline: BTreeMap<String, String>,
    credentials: BTreeMap<String, String>,
}

impl Common {
    fn read(
        meta: &ObjectMeta,
        target_spec: &crate::api::common::TargetSpec,
        dev: &crate::api::DevDatabaseSpec,
        project_spec: &crate::api::ProjectConfigSpec,
        reason: Reason,
    ) -> Result<Common, PlanError> {
        let target::Targeted {
            target,
            mut env,
            mut credentials,
        } = target::target(target_spec, project_spec.has_config(), reason)?;
        let mut inline = BTreeMap::new();
        let dev_url_env = target::dev_url(dev, &mut env, &mut credentials)?;
        let project = project::project_config(project_spec, reason, &mut env, &mut inline)?;
        Ok(Common {
            resource: format!(
                "{}/{}",
                meta.namespace.as_deref().unwrap_or_default(),
                meta.name.as_deref().unwrap_or_default()
            ),
            target,
            dev_url_env,
            // The env of the project file the runner writes, unless the spec names one.
            env_name: project_spec
                .env_name
                .clone()
                .unwrap_or_else(|| "k8s".into()),
            project,
            env,
            inline,
            credentials,
        })
    }

    /// The task of `work` over inputs of `inputs_digest`, and the pod environment and inline
    /// values it needs.
    fn task(self, inputs_digest: String, work: contract::Work) -> TaskParts {
        let task = contract::Task {
            version: contract::CONTRACT_VERSION,
            resource: self.resource,
            target: self.target,
            dev_url_env: self.dev_url_env,
            dev_wait_seconds: None,
            env_name: self.env_name,
            vars: self.project.vars,
            custom_config_env: self.project.custom_config_env,
            inputs_digest,
            cloud: None,
            work,
        };
        TaskParts {
            task,
            env: self.env,
            inline: self.inline,
            credentials: self.credentials,
        }
    }
}

/// The Job's `backoffLimit` for `spec.backoffLimit`: the failed attempts retried before the
/// resource is failed, 20 when unset, as upstream's. Upstream's 0 means no limit (a Job's 0 would
/// mean no retry): the Job's deadline (`jobs.activeDeadlineSeconds`) then bounds the retries.
pub fn job_backoff_limit(spec: Option<i32>) -> i32 {
    match spec.unwrap_or(DEFAULT_BACKOFF_LIMIT) {
        0 => i32::MAX,
        // Meaningless, and a Job refuses it: no retry.
        limit if limit < 0 => 0,
        limit => limit,
    }
}

const DEFAULT_BACKOFF_LIMIT: i32 = 20;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::{AtlasMigration, AtlasSchema};

    fn resource<K: serde::de::DeserializeOwned>(kind: &str, spec: serde_json::Value) -> K {
        serde_json::from_value(json!({
            "apiVersion": "db.atlasgo.io/v1alpha1", "kind": kind,
            "metadata": {"name": "app", "namespace": "team-a"}, "spec": spec
        }))
        .unwrap()
    }

    #[test]
    fn a_custom_config_is_refused_unless_the_operator_allows_it() {
        let migration: AtlasMigration = resource(
            "AtlasMigration",
            json!({"url": "sqlite://app.db", "config": "env \"k8s\" {}\n",
                   "dir": {"local": {"1.sql": "create table t (id int);\n"}}}),
        );
        let found = Dereferenced::new(&migration, Default::default());
        let err = validate(&migration, &found, Allowed::default()).unwrap_err();
        assert_eq!(err.reason, Reason::ReadingMigrationData);
        assert_eq!(err.message, CUSTOM_CONFIG_REFUSED);
        assert!(!err.waits_for_object, "only a flag change helps: Stalled");
        let allowed = validate(
            &migration,
            &found,
            Allowed {
                custom_config: true,
            },
        )
        .unwrap();
        assert_eq!(
            allowed.task.custom_config_env.as_deref(),
            Some(ENV_CUSTOM_CONFIG)
        );
    }

    #[test]
    fn the_dev_database_a_schema_needs_is_decided_here() {
        let secret_url: AtlasSchema = resource(
            "AtlasSchema",
            json!({"urlFrom": {"secretKeyRef": {"name": "db", "key": "url"}},
                   "schema": {"sql": "create table t (id int);\n"}}),
        );
        let mut found = Dereferenced::new(&secret_url, Default::default());
        let plan = validate(&secret_url, &found, Allowed::default()).unwrap();
        assert_eq!(plan.dev, DevNeed::Unknown, "the driver is in the Secret");
        found.dev_driver = Some("maria".into());
        let plan = validate(&secret_url, &found, Allowed::default()).unwrap();
        assert_eq!(plan.dev, DevNeed::Found("maria".into()));

        let literal: AtlasSchema = resource(
            "AtlasSchema",
            json!({"url": "postgres://app@db/app", "schema": {"sql": "create table t (id int);\n"}}),
        );
        let found = Dereferenced::new(&literal, Default::default());
        let plan = validate(&literal, &found, Allowed::default()).unwrap();
        assert_eq!(plan.dev, DevNeed::Sidecar("postgres".into()));
        let sqlite: AtlasSchema = resource(
            "AtlasSchema",
            json!({"url": "sqlite://app.db", "schema": {"sql": "create table t (id int);\n"}}),
        );
        let found = Dereferenced::new(&sqlite, Default::default());
        assert_eq!(
            validate(&sqlite, &found, Allowed::default()).unwrap().dev,
            DevNeed::None,
            "SQLite plans in memory"
        );
    }

    /// A migration brings a dev database only when its first Job had to migrate down without
    /// one (the runner reports the driver); a devURL is used as given.
    #[test]
    fn a_migration_gets_a_dev_database_only_to_migrate_down() {
        let spec = json!({"url": "postgres://app@db/app",
                          "protectedFlows": {"migrateDown": {"allow": true}},
                          "dir": {"local": {"1.sql": "create table t (id int);\n"}}});
        let migration: AtlasMigration = resource("AtlasMigration", spec.clone());
        let mut found = Dereferenced::new(&migration, Default::default());
        let plan = validate(&migration, &found, Allowed::default()).unwrap();
        assert_eq!(plan.dev, DevNeed::None);
        found.dev_driver = Some("postgres".into());
        let plan = validate(&migration, &found, Allowed::default()).unwrap();
        assert_eq!(plan.dev, DevNeed::Found("postgres".into()));

        let mut with_dev = spec;
        with_dev["devURL"] = json!("postgres://dev@devdb/dev");
        let migration: AtlasMigration = resource("AtlasMigration", with_dev);
        let plan = validate(&migration, &found, Allowed::default()).unwrap();
        assert_eq!(plan.dev, DevNeed::None, "the devURL is used as given");
        assert!(plan.task.dev_url_env.is_some());
    }

    /// `policy.lint.destructive.error` reaches the runner's task; its dev database comes the way
    /// a migrate down's does: none planned until the first Job reports the driver.
    #[test]
    fn a_migration_lint_policy_reaches_the_task_and_brings_no_dev_database_up_front() {
        let lint = |error: serde_json::Value| -> AtlasMigration {
            resource(
                "AtlasMigration",
                json!({"url": "postgres://app@db/app",
                       "policy": {"lint": {"destructive": {"error": error}}},
                       "dir": {"local": {"1.sql": "create table t (id int);\n"}}}),
            )
        };
        let options = |plan: &Plan| match &plan.task.work {
            contract::Work::Migration(options) => options.clone(),
            other => panic!("{other:?}"),
        };
        let on = lint(json!(true));
        let mut found = Dereferenced::new(&on, Default::default());
        let plan = validate(&on, &found, Allowed::default()).unwrap();
        assert!(options(&plan).lint_destructive);
        assert_eq!(plan.dev, DevNeed::None);
        found.dev_driver = Some("postgres".into());
        let plan = validate(&on, &found, Allowed::default()).unwrap();
        assert_eq!(plan.dev, DevNeed::Found("postgres".into()));
        let off = lint(json!(false));
        let found = Dereferenced::new(&off, Default::default());
        let plan = validate(&off, &found, Allowed::default()).unwrap();
        assert!(!options(&plan).lint_destructive);
    }
}
