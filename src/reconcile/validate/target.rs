//! Where the target and dev databases are, as the Job's pod will learn it: a Secret's value only
//! ever through `secretKeyRef`, a URL or password written in the spec in plain text through the
//! operator-made credentials Secret (never a ConfigMap, which `view` can read), so neither is in
//! the Job's spec.

use std::collections::BTreeMap;

use contract::{Credentials, Reason, Target, Value};
use k8s_openapi::api::core::v1::{ConfigMapKeySelector, EnvVar, EnvVarSource, SecretKeySelector};

use super::{
    CREDENTIALS_PLACEHOLDER, ENV_DEV_URL, ENV_HOST, ENV_PASSWORD, ENV_URL, ENV_USER,
    INLINE_PLACEHOLDER, KEY_DEV_URL, KEY_PASSWORD, KEY_URL, PlanError,
};
use crate::api::common::{SecretRef, TargetSpec};

pub(super) fn secret_env(
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
pub(super) fn inline_env(name: &str, key: &str) -> EnvVar {
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

/// An env var read from the operator-made credentials Secret (named at render time).
fn credential_env(name: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: CREDENTIALS_PLACEHOLDER.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The refusal of a resource that names no target database.
pub const TARGET_REQUIRED: &str = "set one of url, urlFrom or credentials to name the target \
     database, or a custom config (config or configFrom) whose env names it";

pub(super) struct Targeted {
    pub target: Target,
    pub env: Vec<EnvVar>,
    /// For the credentials Secret.
    pub credentials: BTreeMap<String, String>,
}

/// `custom_config`: the resource brings its own project file, which may name the target (and
/// the dev database) itself, as upstream's users write it.
pub(super) fn target(
    spec: &TargetSpec,
    custom_config: bool,
    reason: Reason,
) -> Result<Targeted, PlanError> {
    let mut env = Vec::new();
    let mut secret = BTreeMap::new();
    let target = match (&spec.url, &spec.url_from, &spec.credentials) {
        (Some(url), None, None) => {
            secret.insert(KEY_URL.to_string(), url.clone());
            env.push(credential_env(ENV_URL, KEY_URL));
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
                    secret.insert(KEY_PASSWORD.to_string(), password.clone());
                    env.push(credential_env(ENV_PASSWORD, KEY_PASSWORD));
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
        (None, None, None) if custom_config => Target::FromConfig,
        (None, None, None) => {
            return Err(PlanError::spec(reason, TARGET_REQUIRED));
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
        credentials: secret,
    })
}

pub(super) fn dev_url(
    dev: &crate::api::DevDatabaseSpec,
    env: &mut Vec<EnvVar>,
    credentials: &mut BTreeMap<String, String>,
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
            credentials.insert(KEY_DEV_URL.to_string(), url.clone());
            env.push(credential_env(ENV_DEV_URL, KEY_DEV_URL));
            Ok(Some(ENV_DEV_URL.into()))
        }
        _ => Ok(None),
    }
}
