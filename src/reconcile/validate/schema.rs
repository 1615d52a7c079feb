//! The rules of an AtlasSchema: its desired schema, its policies, and the dev database its plan
//! needs.

use contract::{Desired, Kind, Reason, SchemaApply, Work};

use super::{
    Common, DevNeed, DevOverride, INPUTS_DIR, InputSource, Plan, PlanError, TaskParts,
    driver_of_scheme,
};
use crate::api::common::DevDb;
use crate::api::{AtlasSchema, AtlasSchemaSpec};
use crate::reconcile::dereference::Dereferenced;

/// The refusal of `policy.lint.review`: Atlas Cloud's review flow, which this operator lacks.
pub const LINT_REVIEW_REFUSED: &str = "policy.lint.review asks for Atlas Cloud's review of \
     each change, which this operator cannot do; nothing was applied. Remove policy.lint.review \
     to apply without a review (policy.lint.destructive still guards against data loss)";

/// The refusal of `txMode: all`, which `atlas schema apply` does not take (a resource stored
/// before the CRD left it out).
pub const TX_MODE_ALL_REFUSED: &str = "txMode: all is a mode of `atlas migrate apply`, not of \
     `atlas schema apply` (which takes file or none); nothing was applied. Use txMode: file, one \
     transaction for the whole change";

/// The plan of an AtlasSchema.
pub fn schema(resource: &AtlasSchema, found: &Dereferenced) -> Result<Plan, PlanError> {
    let configmaps = &found.configmaps;
    let reason = Kind::Schema.input_reason();
    let spec = &resource.spec;
    let mut common = Common::read(
        &resource.metadata,
        &spec.target,
        &spec.dev,
        &spec.project,
        reason,
    )?;

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
            common.inline.insert("schema.sql".into(), sql.clone());
            (
                InputSource::Inline {
                    files: vec!["schema.sql".into()],
                },
                "schema.sql".to_string(),
                sql.clone(),
            )
        }
        (None, Some(hcl), None, None) => {
            common.inline.insert("schema.hcl".into(), hcl.clone());
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
    // A review asked for is a promise that no change runs unreviewed: never applied without one.
    if policy
        .and_then(|p| p.lint.as_ref())
        .is_some_and(|lint| lint.review.is_some())
    {
        return Err(PlanError::spec(reason, LINT_REVIEW_REFUSED));
    }
    if spec.tx_mode == Some(crate::api::TxMode::All) {
        return Err(PlanError::spec(reason, TX_MODE_ALL_REFUSED));
    }
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
    let has_token = super::cloud_token(
        spec.cloud.as_ref().and_then(|c| c.token_from.as_ref()),
        reason,
        &mut common.env,
    )?;
    let TaskParts {
        task,
        env,
        inline,
        credentials,
    } = common.task(
        contract::digest_files([(file.as_str(), content.as_bytes())]),
        Work::Schema(SchemaApply {
            desired: Desired::File(format!("{INPUTS_DIR}/{file}")),
            exclude: spec.exclude.clone().unwrap_or_default(),
            schemas: spec.schemas.clone().unwrap_or_default(),
            tx_mode: spec.tx_mode.map(Into::into),
            lint_destructive: policy
                .and_then(|p| p.lint.as_ref())
                .and_then(|l| l.destructive.as_ref())
                .and_then(|d| d.error)
                .unwrap_or(false),
            lint_data_depend: policy
                .and_then(|p| p.lint.as_ref())
                .and_then(|l| l.data_depend.as_ref())
                .and_then(|d| d.error)
                .unwrap_or(false),
            skip,
            concurrent_index_create: concurrent.and_then(|c| c.create),
            concurrent_index_drop: concurrent.and_then(|c| c.drop),
        }),
    );
    let dev_override = dev_override(spec.dev.dev_db.as_ref())?;
    let dev = if task.dev_url_env.is_some() {
        match &dev_override.image {
            // devURL names the server devDB runs: it runs next to the runner.
            Some(image) => DevNeed::Described(described_driver(spec, image)?.into()),
            None => DevNeed::None,
        }
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
            // The driver is in a Secret the operator does not read: an earlier Job of this
            // hash may have found it.
            None => match &found.dev_driver {
                Some(driver) => DevNeed::Found(driver.clone()),
                None => DevNeed::Unknown,
            },
        }
    };
    let job_pod = super::job_pod(spec.job_pod.as_ref(), reason, &env)?;
    Ok(Plan {
        kind: Kind::Schema,
        hash: found.hash.clone(),
        task,
        env,
        inline,
        credentials,
        inputs: Some(inputs),
        backoff_limit: super::job_backoff_limit(spec.backoff_limit),
        dev,
        dev_override,
        notices: spec
            .cloud
            .as_ref()
            .filter(|_| !has_token)
            .map(|_| super::CLOUD_WITHOUT_TOKEN.to_string())
            .into_iter()
            .collect(),
        job_pod,
    })
}

/// The driver of the server `devDB` describes and `devURL` names: the URL's scheme when the
/// spec has it, else the image's name (`devURLFrom` is a Secret the operator does not read).
fn described_driver(spec: &AtlasSchemaSpec, image: &str) -> Result<&'static str, PlanError> {
    let from_url = spec
        .dev
        .dev_url
        .as_deref()
        .and_then(|url| url.split_once("://"))
        .and_then(|(scheme, _)| driver_of_scheme(scheme));
    let repository = image.rsplit('/').next().unwrap_or(image);
    let from_image = ["postgres", "mariadb", "mysql"]
        .into_iter()
        .find(|name| repository.starts_with(name))
        .and_then(driver_of_scheme);
    from_url.or(from_image).ok_or_else(|| {
        PlanError::spec(
            Reason::GettingDevDb,
            format!(
                "spec.devDB runs {image}, which is not a PostgreSQL, MySQL or MariaDB image the \
                 operator knows, and devURL's scheme does not say which: give devURL as a \
                 postgres://, mysql:// or maria:// URL"
            ),
        )
    })
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
        env: container
            .as_ref()
            .and_then(|c| c.env.clone())
            .unwrap_or_default(),
        ports: container
            .as_ref()
            .and_then(|c| c.ports.clone())
            .unwrap_or_default(),
        resources: container.and_then(|c| c.resources),
        labels: metadata.labels.unwrap_or_default(),
        annotations: metadata.annotations.unwrap_or_default(),
    })
}
