//! The operator-made credentials Secret: what the spec wrote in plain text that may be a
//! credential (an inline `url` or `devURL`, `credentials.password`), which must not sit in a
//! ConfigMap that the built-in `view` role reads. It is owned by its Job, so the garbage collector
//! deletes it with the Job, and the operator needs no right on Secrets but `create`: it never
//! reads, changes or deletes one. The Job is created suspended and released once its Secret
//! exists, so its pod never starts without it.

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::*;
use crate::reconcile::validate::Plan;

/// The credentials Secret of the Job that applies `plan`.
pub fn credentials_name(plan: &Plan, owner: &Owner) -> String {
    format!("{}-credentials", super::plan_job_name(plan, owner))
}

/// The credentials Secret for `job` (as the API server returned it, with its uid), when the plan
/// has any: immutable, owned by the Job.
pub fn credentials_secret(plan: &Plan, owner: &Owner, job: &Job) -> Option<Secret> {
    if plan.credentials.is_empty() {
        return None;
    }
    let mut metadata = metadata(credentials_name(plan, owner), owner, plan);
    metadata.owner_references = Some(vec![OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: job.metadata.name.clone().unwrap_or_default(),
        uid: job.metadata.uid.clone().unwrap_or_default(),
        controller: Some(false),
        block_owner_deletion: None,
    }]);
    Some(Secret {
        metadata,
        data: Some(
            plan.credentials
                .iter()
                .map(|(key, value)| (key.clone(), ByteString(value.clone().into_bytes())))
                .collect(),
        ),
        immutable: Some(true),
        type_: Some("Opaque".into()),
        ..Default::default()
    })
}
