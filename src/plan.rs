//! The pipeline's validate step: a resource and the ConfigMaps it refers to, turned into a
//! [`Plan`] of everything its Job needs (the runner's task, the pod's environment,
//! the mounted inputs) and the desired hash. Pure: no API call, so every rule is unit-tested.
//!
//! Secret values are never read: a Secret reaches the pod as an environment variable from
//! `secretKeyRef`. Values the user wrote in plain text in the spec (a literal `url`, `password` or
//! `devURL`) go into the operator-made inputs ConfigMap and reach the pod from there, so they stay
//! out of the Job's spec; `urlFrom`/`passwordFrom` keep them out of both.

use std::collections::BTreeMap;

use contract::Reason;
use contract::{
    self, CONTRACT_VERSION, Credentials, Desired, Kind, MigrateApply, SchemaApply, Target, Value,
    Work,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapKeySelector, EnvVar, EnvVarSource, ResourceRequirements, SecretKeySelector,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::api::common::{DevDb, SecretRef, TargetSpec};
use crate::api::{AtlasMigration, AtlasSchema};

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
const KEY_URL: &str = "atlas-operator.target-url";
const KEY_PASSWORD: &str = "atlas-operator.target-password";
const KEY_DEV_URL: &str = "atlas-operator.dev-url";
const KEY_CONFIG: &str = "atlas-operator.config.hcl";
/// A user's own `atlas.hcl`, when the spec gives one.
pub const ENV_CUSTOM_CONFIG: &str = "ATLAS_CUSTOM_CONFIG";
/// `spec.vars` values read from Secrets and ConfigMaps: `ATLAS_VAR_<index>`.
pub const ENV_VAR_PREFIX: &str = "ATLAS_VAR_";

/// The ConfigMaps a resource refers to, as the dereference step found them.
pub type ConfigMaps = BTreeMap<String, ConfigMap>;

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
    fn spec(reason: Reason, message: impl Into<String>) -> PlanError {
        PlanError {
            reason,
            message: message.into(),
            waits_for_object: false,
        }
    }

    fn missing(reason: Reason, message: impl Into<String>) -> PlanError {
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
    /// The mounted inputs, if any.
    pub inputs: Option<InputSource>,
    /// `spec.backoffLimit`.
    pub backoff_limit: i32,
    /// The apply needs a dev database and the spec gives none: the Job gets one as a sidecar.
    pub dev: DevNeed,
    /// What `spec.devDB` changes about that sidecar.
    pub dev_override: DevOverride,
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
    /// `devDB.metadata`: added to the Job's pod (for example a service mesh's opt-out), never
    /// replacing the operator's own labels.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// Reads `spec.devDB`; a spec that is not a pod spec is refused, naming what is wrong.
fn dev_override(dev_db: Option<&DevDb>) -> Result<DevOverride, PlanError> {
    let Some(dev_db) = dev_db else {
        return Ok(DevOverride::default());
    };
    let container = match dev_db.pod_spec() {
        None => None,
        Some(Ok(pod)) => pod.containers.into_iter().next(),
        Some(Err(err)) => {
            return Err(PlanError::spec(
                Reason::GettingDevDb,
                format!("spec.devDB.spec is not a pod spec: {err}"),
            ));
        }
    };
    let metadata = dev_db.metadata.clone().unwrap_or_default();
    Ok(DevOverride {
        image: container.as_ref().and_then(|c| c.image.clone()),
        image_pull_policy: container.as_ref().and_then(|c| c.image_pull_policy.clone()),
        resources: container.and_then(|c| c.resources),
        labels: metadata.labels.unwrap_or_default(),
        annotations: metadata.annotations.unwrap_or_default(),
    })
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
}

impl DevNeed {
    /// The driver of the sidecar the Job brings, if it brings one.
    pub fn sidecar(&self) -> Option<&str> {
        match self {
            DevNeed::Sidecar(driver) | DevNeed::Found(driver) => Some(driver),
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

/// An annotation whose value is part of the desired hash: changing it re-applies a resource
/// whose spec did not change (after a Secret's URL now points at another database, say).
pub const REAPPLY_ANNOTATION: &str = "db.atlasgo.io/reapply";

#[derive(Serialize)]
struct HashInput<'a, S: Serialize> {
    kind: Kind,
    namespace: &'a str,
    name: &'a str,
    reapply: Option<&'a str>,
    spec: &'a S,
    configmaps: BTreeMap<&'a str, ConfigMapContent<'a>>,
}

/// What of a ConfigMap the hash covers: its data, and its binary data as hex.
#[derive(Serialize)]
struct ConfigMapContent<'a> {
    data: &'a BTreeMap<String, String>,
    binary_data: BTreeMap<&'a str, String>,
}

fn hash<S: Serialize>(
    kind: Kind,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    spec: &S,
    configmaps: &ConfigMaps,
) -> String {
    let empty = BTreeMap::new();
    let input = HashInput {
        kind,
        namespace: meta.namespace.as_deref().unwrap_or_default(),
        name: meta.name.as_deref().unwrap_or_default(),
        reapply: meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(REAPPLY_ANNOTATION))
            .map(String::as_str),
        spec,
        configmaps: configmaps
            .iter()
            .map(|(cm_name, cm)| {
                let binary = cm
                    .binary_data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.as_str(), hex(&v.0)))
                    .collect();
                (
                    cm_name.as_str(),
                    ConfigMapContent {
                        data: cm.data.as_ref().unwrap_or(&empty),
                        binary_data: binary,
                    },
                )
            })
            .collect(),
    };
    // serde_json writes struct fields in declaration order and BTreeMaps sorted: canonical.
    let bytes = serde_json::to_vec(&input).expect("a spec serializes");
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn secret_env(
    name: &str,
    reference: &SecretRef,
    field: &str,
    reason: Reason,
) -> Result<EnvVar, PlanError> {
    let selector = reference
        .secret_key_ref
        .clone()
        .ok_or_else(|| PlanError::spec(reason, format!("{field}.secretKeyRef is required")))?;
    Ok(EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                optional: Some(false),
                ..selector
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// An env var read from the operator-made inputs ConfigMap (named at render time).
fn inline_env(name: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: INLINE_PLACEHOLDER.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Stands for the inputs ConfigMap's name in a [`Plan`]; [`crate::job`] puts the real name in.
pub const INLINE_PLACEHOLDER: &str = "$(inputs)";

struct Targeted {
    target: Target,
    env: Vec<EnvVar>,
    inline: BTreeMap<String, String>,
}

fn target(spec: &TargetSpec, reason: Reason) -> Result<Targeted, PlanError> {
    let mut env = Vec::new();
    let mut inline = BTreeMap::new();
    let target = match (&spec.url, &spec.url_from, &spec.credentials) {
        (Some(url), None, None) => {
            inline.insert(KEY_URL.to_string(), url.clone());
            env.push(inline_env(ENV_URL, KEY_URL));
            Target::UrlEnv(ENV_URL.into())
        }
        (None, Some(from), None) => {
            env.push(secret_env(ENV_URL, from, "urlFrom", reason)?);
            Target::UrlEnv(ENV_URL.into())
        }
        (None, None, Some(credentials)) => {
            let scheme = credentials
                .scheme
                .clone()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| PlanError::spec(reason, "credentials.scheme is required"))?;
            let user = match (&credentials.user, &credentials.user_from) {
                (_, Some(from)) => {
                    env.push(secret_env(ENV_USER, from, "credentials.userFrom", reason)?);
                    Some(Value::Env(ENV_USER.into()))
                }
                (Some(user), None) => Some(Value::Literal(user.clone())),
                (None, None) => None,
            };
            let password_env = match (&credentials.password, &credentials.password_from) {
                (_, Some(from)) => {
                    env.push(secret_env(
                        ENV_PASSWORD,
                        from,
                        "credentials.passwordFrom",
                        reason,
                    )?);
                    Some(ENV_PASSWORD.to_string())
                }
                (Some(password), None) => {
                    inline.insert(KEY_PASSWORD.to_string(), password.clone());
                    env.push(inline_env(ENV_PASSWORD, KEY_PASSWORD));
                    Some(ENV_PASSWORD.to_string())
                }
                (None, None) => None,
            };
            let host = match (&credentials.host, &credentials.host_from) {
                (_, Some(from)) => {
                    env.push(secret_env(ENV_HOST, from, "credentials.hostFrom", reason)?);
                    Value::Env(ENV_HOST.into())
                }
                (Some(host), None) => Value::Literal(host.clone()),
                (None, None) => {
                    return Err(PlanError::spec(reason, "credentials need host or hostFrom"));
                }
            };
            Target::Credentials(Credentials {
                scheme,
                user,
                password_env,
                host,
                port: credentials.port,
                database: credentials.database.clone(),
                parameters: credentials.parameters.clone().unwrap_or_default(),
            })
        }
        (None, None, None) => {
            return Err(PlanError::spec(
                reason,
                "set one of url, urlFrom or credentials to name the target database",
            ));
        }
        _ => {
            return Err(PlanError::spec(
                reason,
                "set only one of url, urlFrom or credentials",
            ));
        }
    };
    Ok(Targeted {
        target,
        env,
        inline,
    })
}

/// A user's own project file and its variables, as the Job hands them to the runner: the file
/// in [`ENV_CUSTOM_CONFIG`], each variable's value in an environment variable or, when written
/// in plain text in the spec, in the contract.
struct ProjectConfig {
    custom_config_env: Option<String>,
    vars: Vec<contract::Var>,
}

fn project_config(
    project: &crate::api::ProjectConfigSpec,
    reason: Reason,
    env: &mut Vec<EnvVar>,
    inline: &mut BTreeMap<String, String>,
) -> Result<ProjectConfig, PlanError> {
    let config = project.config.as_ref().filter(|c| !c.trim().is_empty());
    let custom_config_env = match (config, &project.config_from) {
        (Some(_), Some(_)) => {
            return Err(PlanError::spec(
                reason,
                "set only one of config and configFrom",
            ));
        }
        (Some(config), None) => {
            inline.insert(KEY_CONFIG.into(), config.clone());
            env.push(inline_env(ENV_CUSTOM_CONFIG, KEY_CONFIG));
            Some(ENV_CUSTOM_CONFIG.to_string())
        }
        (None, Some(from)) => {
            env.push(secret_env(ENV_CUSTOM_CONFIG, from, "configFrom", reason)?);
            Some(ENV_CUSTOM_CONFIG.to_string())
        }
        (None, None) => None,
    };
    let mut vars = Vec::new();
    for (index, var) in project.vars.iter().flatten().enumerate() {
        let key = var
            .key
            .clone()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| PlanError::spec(reason, format!("vars[{index}].key is required")))?;
        let from = var.value_from.as_ref();
        let value = match (
            &var.value,
            from.and_then(|f| f.secret_key_ref.as_ref()),
            from.and_then(|f| f.config_map_key_ref.as_ref()),
        ) {
            (Some(value), None, None) => contract::Value::Literal(value.clone()),
            (None, Some(secret), None) => {
                let name = format!("{ENV_VAR_PREFIX}{index}");
                env.push(EnvVar {
                    name: name.clone(),
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            optional: Some(false),
                            ..secret.clone()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                contract::Value::Env(name)
            }
            (None, None, Some(configmap)) => {
                let name = format!("{ENV_VAR_PREFIX}{index}");
                env.push(EnvVar {
                    name: name.clone(),
                    value_from: Some(EnvVarSource {
                        config_map_key_ref: Some(ConfigMapKeySelector {
                            optional: Some(false),
                            ..configmap.clone()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                contract::Value::Env(name)
            }
            _ => {
                return Err(PlanError::spec(
                    reason,
                    format!(
                        "vars[{index}] ({key}) needs exactly one of value, \
                         valueFrom.secretKeyRef or valueFrom.configMapKeyRef"
                    ),
                ));
            }
        };
        vars.push(contract::Var { key, value });
    }
    if !vars.is_empty() && custom_config_env.is_none() {
        return Err(PlanError::spec(
            reason,
            "vars are input variables of a custom Atlas config: set config or configFrom with \
             the `variable` blocks they fill",
        ));
    }
    Ok(ProjectConfig {
        custom_config_env,
        vars,
    })
}

/// The message when a resource brings its own `atlas.hcl` and the operator does not allow it.
pub const CUSTOM_CONFIG_REFUSED: &str = "this operator does not run custom Atlas configs \
     (spec.config, spec.configFrom): an atlas.hcl can read external data and run programs. The \
     platform team can allow them with --allow-custom-config (Helm value allowCustomConfig: true)";

fn dev_url(
    dev: &crate::api::DevDatabaseSpec,
    env: &mut Vec<EnvVar>,
    inline: &mut BTreeMap<String, String>,
) -> Result<Option<String>, PlanError> {
    match (&dev.dev_url, &dev.dev_url_from) {
        (_, Some(from)) => {
            env.push(secret_env(
                ENV_DEV_URL,
                from,
                "devURLFrom",
                Reason::GettingDevDb,
            )?);
            Ok(Some(ENV_DEV_URL.into()))
        }
        (Some(url), None) if !url.is_empty() => {
            inline.insert(KEY_DEV_URL.to_string(), url.clone());
            env.push(inline_env(ENV_DEV_URL, KEY_DEV_URL));
            Ok(Some(ENV_DEV_URL.into()))
        }
        _ => Ok(None),
    }
}

fn identity(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// The plan of an AtlasMigration.
pub fn migration(resource: &AtlasMigration, configmaps: &ConfigMaps) -> Result<Plan, PlanError> {
    let reason = Reason::ReadingMigrationData;
    let spec = &resource.spec;
    let (namespace, name) = identity(&resource.metadata);
    let Targeted {
        target,
        mut env,
        mut inline,
    } = target(&spec.target, reason)?;
    let dev_url_env = dev_url(&spec.dev, &mut env, &mut inline)?;
    let project = project_config(&spec.project, reason, &mut env, &mut inline)?;

    let dir = &spec.dir;
    let (inputs, files): (InputSource, BTreeMap<String, String>) =
        match (&dir.config_map_ref, &dir.local, &dir.remote) {
            (Some(reference), None, None) => {
                let cm = configmaps.get(&reference.name).ok_or_else(|| {
                    PlanError::missing(reason, format!("ConfigMap {} not found", reference.name))
                })?;
                let data = cm.data.clone().unwrap_or_default();
                if data.is_empty() {
                    return Err(PlanError::spec(
                        reason,
                        format!("ConfigMap {} holds no migration files", reference.name),
                    ));
                }
                (
                    InputSource::ConfigMap {
                        name: reference.name.clone(),
                        keys: None,
                    },
                    data,
                )
            }
            (None, Some(local), None) => {
                if local.is_empty() {
                    return Err(PlanError::spec(
                        reason,
                        "dir.local holds no migration files",
                    ));
                }
                for (file, content) in local {
                    inline.insert(file.clone(), content.clone());
                }
                (
                    InputSource::Inline {
                        files: local.keys().cloned().collect(),
                    },
                    local.clone(),
                )
            }
            (None, None, Some(_)) => {
                return Err(PlanError::spec(
                    reason,
                    "dir.remote reads the directory from Atlas Cloud, which this operator's \
                     Atlas build cannot reach: use dir.configMapRef or dir.local",
                ));
            }
            (None, None, None) => {
                return Err(PlanError::spec(
                    reason,
                    "dir needs one of configMapRef, local or remote",
                ));
            }
            _ => {
                return Err(PlanError::spec(
                    reason,
                    "set only one of configMapRef, local or remote",
                ));
            }
        };
    let inputs_digest =
        contract::digest_files(files.iter().map(|(n, c)| (n.as_str(), c.as_bytes())));
    let protected = spec
        .protected_flows
        .as_ref()
        .and_then(|p| p.migrate_down.as_ref());
    let task = contract::Task {
        version: CONTRACT_VERSION,
        resource: format!("{namespace}/{name}"),
        target,
        dev_url_env,
        dev_wait_seconds: None,
        env_name: spec
            .project
            .env_name
            .clone()
            .unwrap_or_else(|| "k8s".into()),
        vars: project.vars,
        custom_config_env: project.custom_config_env,
        inputs_digest,
        work: Work::Migration(MigrateApply {
            dir: INPUTS_DIR.into(),
            revisions_schema: spec.revisions_schema.clone(),
            baseline: spec.baseline.clone(),
            exec_order: spec.exec_order.map(Into::into),
            tx_mode: None,
            allow_migrate_down: protected.and_then(|m| m.allow).unwrap_or(false),
        }),
    };
    Ok(Plan {
        kind: Kind::Migration,
        hash: hash(Kind::Migration, &resource.metadata, spec, configmaps),
        task,
        env,
        inline,
        inputs: Some(inputs),
        backoff_limit: spec.backoff_limit.unwrap_or(20),
        dev: DevNeed::None,
        dev_override: DevOverride::default(),
    })
}

/// The plan of an AtlasSchema.
pub fn schema(resource: &AtlasSchema, configmaps: &ConfigMaps) -> Result<Plan, PlanError> {
    let reason = Reason::ReadSchema;
    let spec = &resource.spec;
    let (namespace, name) = identity(&resource.metadata);
    let Targeted {
        target,
        mut env,
        mut inline,
    } = target(&spec.target, reason)?;
    let dev_url_env = dev_url(&spec.dev, &mut env, &mut inline)?;
    let project = project_config(&spec.project, reason, &mut env, &mut inline)?;

    let source = spec.schema.as_ref().ok_or_else(|| {
        PlanError::spec(
            reason,
            "schema needs one of sql, hcl, url or configMapKeyRef",
        )
    })?;
    let (inputs, file, content) = match (
        &source.sql,
        &source.hcl,
        &source.url,
        &source.config_map_key_ref,
    ) {
        (Some(sql), None, None, None) => {
            inline.insert("schema.sql".into(), sql.clone());
            (
                InputSource::Inline {
                    files: vec!["schema.sql".into()],
                },
                "schema.sql".to_string(),
                sql.clone(),
            )
        }
        (None, Some(hcl), None, None) => {
            inline.insert("schema.hcl".into(), hcl.clone());
            (
                InputSource::Inline {
                    files: vec!["schema.hcl".into()],
                },
                "schema.hcl".to_string(),
                hcl.clone(),
            )
        }
        (None, None, Some(url), None) => {
            return Err(PlanError::spec(
                reason,
                format!(
                    "schema.url {url} is read from Atlas Cloud, which this operator's Atlas build \
                     cannot reach: give the schema as sql, hcl or configMapKeyRef"
                ),
            ));
        }
        (None, None, None, Some(selector)) => {
            if !(selector.key.ends_with(".sql") || selector.key.ends_with(".hcl")) {
                return Err(PlanError::spec(
                    reason,
                    format!(
                        "schema.configMapKeyRef.key {} must end in .sql or .hcl, which says its language",
                        selector.key
                    ),
                ));
            }
            let cm = configmaps.get(&selector.name).ok_or_else(|| {
                PlanError::missing(reason, format!("ConfigMap {} not found", selector.name))
            })?;
            let content = cm
                .data
                .as_ref()
                .and_then(|d| d.get(&selector.key))
                .cloned()
                .ok_or_else(|| {
                    PlanError::missing(
                        reason,
                        format!("ConfigMap {} has no key {}", selector.name, selector.key),
                    )
                })?;
            (
                InputSource::ConfigMap {
                    name: selector.name.clone(),
                    keys: Some(vec![selector.key.clone()]),
                },
                selector.key.clone(),
                content,
            )
        }
        _ => {
            return Err(PlanError::spec(
                reason,
                "schema needs exactly one of sql, hcl, url or configMapKeyRef",
            ));
        }
    };
    let policy = spec.policy.as_ref();
    let diff = policy.and_then(|p| p.diff.as_ref());
    let skip = diff
        .and_then(|d| d.skip.as_ref())
        .map(|skip| {
            serde_json::to_value(skip)
                .ok()
                .and_then(|v| v.as_object().cloned())
                .unwrap_or_default()
                .into_iter()
                .filter(|(_, on)| on.as_bool() == Some(true))
                .map(|(name, _)| name)
                .collect()
        })
        .unwrap_or_default();
    let concurrent = diff.and_then(|d| d.concurrent_index.as_ref());
    let task = contract::Task {
        version: CONTRACT_VERSION,
        resource: format!("{namespace}/{name}"),
        target,
        dev_url_env,
        dev_wait_seconds: None,
        env_name: spec
            .project
            .env_name
            .clone()
            .unwrap_or_else(|| "k8s".into()),
        vars: project.vars,
        custom_config_env: project.custom_config_env,
        inputs_digest: contract::digest_files([(file.as_str(), content.as_bytes())]),
        work: Work::Schema(SchemaApply {
            desired: Desired::File(format!("{INPUTS_DIR}/{file}")),
            exclude: spec.exclude.clone().unwrap_or_default(),
            schemas: spec.schemas.clone().unwrap_or_default(),
            tx_mode: spec.tx_mode.map(Into::into),
            lint_destructive: policy
                .and_then(|p| p.lint.as_ref())
                .and_then(|l| l.destructive.as_ref())
                .and_then(|d| d.error)
                .unwrap_or(false),
            skip,
            concurrent_index_create: concurrent.and_then(|c| c.create),
            concurrent_index_drop: concurrent.and_then(|c| c.drop),
        }),
    };
    let dev = if task.dev_url_env.is_some() {
        DevNeed::None
    } else {
        let scheme = match (&spec.target.url, &spec.target.credentials) {
            (Some(url), _) => url.split_once("://").map(|(scheme, _)| scheme.to_string()),
            (None, Some(credentials)) => credentials.scheme.clone(),
            _ => None,
        };
        match scheme {
            Some(scheme) if scheme.starts_with("sqlite") || scheme.starts_with("libsql") => {
                DevNeed::None
            }
            Some(scheme) => match driver_of_scheme(&scheme) {
                Some(driver) => DevNeed::Sidecar(driver.into()),
                None => DevNeed::None,
            },
            None => DevNeed::Unknown,
        }
    };
    Ok(Plan {
        kind: Kind::Schema,
        hash: hash(Kind::Schema, &resource.metadata, spec, configmaps),
        task,
        env,
        inline,
        inputs: Some(inputs),
        backoff_limit: spec.backoff_limit.unwrap_or(20),
        dev,
        dev_override: dev_override(spec.dev.dev_db.as_ref())?,
    })
}

/// The names of the ConfigMaps a resource refers to: what the dereference step fetches, and
/// what the controller's reverse index maps back to the resource.
pub fn migration_configmaps(resource: &AtlasMigration) -> Vec<String> {
    resource
        .spec
        .dir
        .config_map_ref
        .iter()
        .map(|r| r.name.clone())
        .collect()
}

pub fn schema_configmaps(resource: &AtlasSchema) -> Vec<String> {
    resource
        .spec
        .schema
        .iter()
        .flat_map(|s| s.config_map_key_ref.iter())
        .map(|r| r.name.clone())
        .collect()
}
