//! The rules of an AtlasMigration: its migration directory and the options of `migrate apply`.

use std::collections::BTreeMap;

use contract::{Kind, MigrateApply, Work};

use super::{Common, DevNeed, DevOverride, INPUTS_DIR, InputSource, Plan, PlanError, TaskParts};
use crate::api::AtlasMigration;
use crate::api::migration::MigrationLint;
use crate::api::schema::CheckConfig;
use crate::reconcile::dereference::Dereferenced;

/// Said of a resource that asks for Atlas Cloud's pre-apply drift check.
pub const DRIFT_NOT_CHECKED: &str = "policy.drift was not applied: this operator has no \
     pre-apply drift check (Atlas Cloud's), so the migration ran without one";

/// The plan of an AtlasMigration.
pub fn migration(resource: &AtlasMigration, found: &Dereferenced) -> Result<Plan, PlanError> {
    let configmaps = &found.configmaps;
    let reason = Kind::Migration.input_reason();
    let spec = &resource.spec;
    let mut common = Common::read(
        &resource.metadata,
        &spec.target,
        &spec.dev,
        &spec.project,
        reason,
    )?;

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
                    common.inline.insert(file.clone(), content.clone());
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
    // `policy.lint.<check>.error`, off unless set.
    let lint_error = |check: fn(&MigrationLint) -> Option<&CheckConfig>| {
        spec.policy
            .as_ref()
            .and_then(|policy| policy.lint.as_ref())
            .and_then(check)
            .and_then(|config| config.error)
            .unwrap_or(false)
    };
    let cloud = spec.cloud.as_ref();
    let has_token = super::cloud_token(
        cloud.and_then(|c| c.token_from.as_ref()),
        reason,
        &mut common.env,
    )?;
    let TaskParts {
        mut task,
        env,
        inline,
        credentials,
    } = common.task(
        inputs_digest,
        Work::Migration(MigrateApply {
            dir: INPUTS_DIR.into(),
            revisions_schema: spec.revisions_schema.clone(),
            baseline: spec.baseline.clone(),
            exec_order: spec.exec_order.map(Into::into),
            tx_mode: None,
            allow_migrate_down: protected.and_then(|m| m.allow).unwrap_or(false),
            lint_destructive: lint_error(|lint| lint.destructive.as_ref()),
            lint_data_depend: lint_error(|lint| lint.data_depend.as_ref()),
        }),
    );
    task.cloud = cloud.map(|c| contract::Cloud {
        url: c.url.clone(),
        project: c.project.clone(),
    });
    // Only `migrate down` and the lint of pending files need a dev database: without a devURL,
    // a first Job that needs one says so (with the target's driver), and the next Job of this
    // hash brings a sidecar.
    let dev = match &found.dev_driver {
        Some(driver) if task.dev_url_env.is_none() => DevNeed::Found(driver.clone()),
        _ => DevNeed::None,
    };
    let job_pod = super::job_pod(spec.job_pod.as_ref(), reason, &env)?;
    Ok(Plan {
        kind: Kind::Migration,
        hash: found.hash.clone(),
        task,
        env,
        inline,
        credentials,
        inputs: Some(inputs),
        backoff_limit: super::job_backoff_limit(spec.backoff_limit),
        dev,
        dev_override: DevOverride::default(),
        notices: [
            spec.policy
                .as_ref()
                .and_then(|policy| policy.drift.as_ref())
                .map(|_| DRIFT_NOT_CHECKED),
            cloud
                .filter(|_| !has_token)
                .map(|_| super::CLOUD_WITHOUT_TOKEN),
        ]
        .into_iter()
        .flatten()
        .map(str::to_string)
        .collect(),
        job_pod,
    })
}
