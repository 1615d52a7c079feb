//! The operator-made inputs ConfigMap: what the spec wrote inline, immutable and named by the hash.

use k8s_openapi::api::core::v1::{ConfigMap, KeyToPath};

use super::*;
use crate::reconcile::validate::Plan;

/// The operator-made ConfigMap of inline inputs, when the plan has any: immutable, named by the
/// hash, owned by the resource.
pub fn inputs_configmap(plan: &Plan, owner: &Owner) -> Option<ConfigMap> {
    if plan.inline.is_empty() {
        return None;
    }
    Some(ConfigMap {
        metadata: metadata(inputs_name(plan, owner), owner, plan),
        data: Some(plan.inline.clone()),
        immutable: Some(true),
        ..Default::default()
    })
}

pub(super) fn inputs_name(plan: &Plan, owner: &Owner) -> String {
    format!(
        "{}-inputs",
        job_name(owner.kind, &owner.name, plan.short_hash())
    )
}

pub(super) fn items(keys: &[String]) -> Vec<KeyToPath> {
    keys.iter()
        .map(|key| KeyToPath {
            key: key.clone(),
            path: key.clone(),
            mode: None,
        })
        .collect()
}
