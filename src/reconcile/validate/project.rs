//! A user's own `atlas.hcl` (`spec.config`/`configFrom`) and its input variables (`spec.vars`),
//! as the Job hands them to the runner.

use std::collections::BTreeMap;

use contract::Reason;
use k8s_openapi::api::core::v1::{ConfigMapKeySelector, EnvVar, EnvVarSource, SecretKeySelector};

use super::target::{inline_env, secret_env};
use super::{ENV_CUSTOM_CONFIG, ENV_VAR_PREFIX, KEY_CONFIG, PlanError};

/// A user's own project file and its variables, as the Job hands them to the runner: the file
/// in [`ENV_CUSTOM_CONFIG`], each variable's value in an environment variable or, when written
/// in plain text in the spec, in the contract.
pub(super) struct ProjectConfig {
    pub custom_config_env: Option<String>,
    pub vars: Vec<contract::Var>,
}

pub(super) fn project_config(
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
