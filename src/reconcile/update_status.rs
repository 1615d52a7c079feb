//! The pipeline's status step, its write: the status [`super::status::compute`] gives is
//! patched only when it differs from the current one, with an event for each change of `Ready`.
//! So a reconcile that finds nothing new writes nothing.

use kube::api::{Patch, PatchParams};

use kube::{Api, ResourceExt};

use super::events::{EventType, publish};
use super::status::{self, CommonStatus, Observation};
use super::{AtlasResource, Context, Error, MANAGER};
use crate::metrics::ReasonLabels;

/// Writes the status when it differs from the current one, with an event for each transition;
/// `desired` is the short hash of the plan the observation is of (None: no plan was made),
/// `attempts` the failed attempts of its Job (None: no Job).
pub(super) async fn write_status<K: AtlasResource>(
    resource: &K,
    ctx: &Context,
    previous: &CommonStatus,
    generation: Option<i64>,
    desired: Option<&str>,
    attempts: Option<i32>,
    observation: &Observation,
) -> Result<(), Error> {
    let next = status::compute(previous, generation, observation, attempts, super::now());
    if next == *previous {
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(
        ctx.client.clone(),
        &resource.namespace().unwrap_or_default(),
    );
    let patch = serde_json::json!({ "status": resource.status_json(next.clone()) });
    api.patch_status(
        &resource.name_any(),
        &PatchParams::apply(MANAGER),
        &Patch::Merge(&patch),
    )
    .await?;
    let ready_before = previous
        .conditions
        .iter()
        .find(|c| c.type_ == status::READY)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()));
    let ready_after = next
        .conditions
        .iter()
        .find(|c| c.type_ == status::READY)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()));
    if ready_before != ready_after {
        let (ready, reason, message) = ready_after.unwrap_or_default();
        // One line per transition at the default level, so the operator's log says which
        // resources it handled and how each ended (JSON fields with --log-format json).
        tracing::info!(
            kind = K::KIND.resource_kind(),
            resource = %format!("{}/{}", resource.namespace().unwrap_or_default(), resource.name_any()),
            desired_hash = desired.unwrap_or("none"),
            ready = %ready,
            %reason,
            // Not `message`: that is the line's own.
            detail = %message,
            "Ready changed"
        );
        match observation {
            Observation::Applied { message, .. } => {
                publish(ctx, resource, EventType::Normal, "Applied", message).await
            }
            Observation::Failed {
                reason, message, ..
            }
            | Observation::Retrying {
                reason, message, ..
            } => {
                ctx.metrics
                    .failures
                    .get_or_create(&ReasonLabels {
                        kind: K::KIND.resource_kind().into(),
                        reason: reason.as_str().into(),
                    })
                    .inc();
                publish(ctx, resource, EventType::Warning, reason.as_str(), message).await
            }
            Observation::InProgress { .. } => {}
        }
    }
    // The warning of an apply (objects it left out) is an event when it appears or changes.
    let warning = |status: &CommonStatus| {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == status::WARNING && c.status == "True")
            .map(|c| c.message.clone())
    };
    if let Some(message) = warning(&next)
        && warning(previous).as_ref() != Some(&message)
    {
        publish(
            ctx,
            resource,
            EventType::Warning,
            status::UNMANAGED_OBJECTS,
            &message,
        )
        .await;
    }
    Ok(())
}
