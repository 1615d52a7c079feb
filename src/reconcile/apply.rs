//! The pipeline's apply step: the Job for the plan's hash (and its inputs ConfigMap) created if
//! the cache does not have it, and the Jobs of older hashes deleted. The name is a function of
//! the resource and the hash, so a second reconcile of the same hash finds the same Job.

use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};

use kube::{Api, ResourceExt};

use super::build::{self, Owner};
use super::events::{EventType, publish};
use super::validate::Plan;
use super::{AtlasResource, Context, ControllerContext, Error};
use crate::metrics::KindLabels;

/// What the apply step left in place.
pub(super) enum Applied {
    /// The plan's Job, as the cache has it or as it was just created.
    Job(Arc<Job>),
    /// The Job exists but the cache has not seen it yet (another reconcile, or a previous
    /// operator, made it): its watch event wakes the resource again.
    NotYetCached,
    /// The API server refused to create the Job (an admission policy, a quota, Pod Security):
    /// its message, for the status. Something outside the spec may change (a quota frees up, a
    /// policy is fixed), so it is looked at again.
    Refused(String),
}

pub(super) async fn apply<K: AtlasResource>(
    ctx: &ControllerContext,
    resource: &K,
    plan: &Plan,
    owner: &Owner,
) -> Result<Applied, Error> {
    let job_name = build::plan_job_name(plan, owner);
    let mut created_now = false;
    let job = match ctx.cache.job(&owner.namespace, &job_name) {
        Some(job) => job,
        None => {
            if let Some(inputs) = build::inputs_configmap(plan, owner) {
                let configmaps: Api<ConfigMap> =
                    Api::namespaced(ctx.client.clone(), &owner.namespace);
                match configmaps.create(&PostParams::default(), &inputs).await {
                    Ok(_) => {}
                    // Immutable and named by the hash: an existing one holds the same data.
                    Err(kube::Error::Api(status)) if status.code == 409 => {}
                    Err(err) => return Err(err.into()),
                }
            }
            let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &owner.namespace);
            let rendered = build::render(plan, owner, &ctx.settings);
            let created = match jobs.create(&PostParams::default(), &rendered).await {
                Ok(created) => created,
                // The same hash, the same Job: counted and announced where it was made.
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    return Ok(Applied::NotYetCached);
                }
                Err(kube::Error::Api(status)) if matches!(status.code, 403 | 422) => {
                    return Ok(Applied::Refused(format!(
                        "the API server refused Job {job_name}: {}",
                        status.message
                    )));
                }
                Err(err) => return Err(err.into()),
            };
            created_now = true;
            tracing::info!(
                kind = K::KIND.resource_kind(),
                resource = %format!("{}/{}", owner.namespace, owner.name),
                hash = plan.short_hash(),
                job = %job_name,
                "Job created"
            );
            ctx.metrics
                .jobs_created
                .get_or_create(&KindLabels {
                    kind: K::KIND.resource_kind().into(),
                })
                .inc();
            // No event for the Job itself: one event per apply outcome (the API write an event
            // costs is paid per resource); the Reconciling condition and the log name the Job.
            // Once per hash: what the spec asks for that this Job will not do.
            for notice in &plan.notices {
                publish(
                    ctx,
                    resource,
                    EventType::Warning,
                    "PolicyNotApplied",
                    notice,
                )
                .await;
            }
            Arc::new(created)
        }
    };
    // A Job made suspended for its credentials Secret, here or by a reconcile cut short (the
    // Job controller marks it Suspended; the cache keeps no spec): the Secret, then the release.
    if !plan.credentials.is_empty() && (created_now || is_suspended(&job)) {
        match release(ctx, plan, owner, &job).await {
            Ok(()) => {}
            Err(Error::Kube(kube::Error::Api(status))) if status.code == 403 => {
                return Ok(Applied::Refused(format!(
                    "the credentials Secret of Job {job_name} cannot be created: {} (the \
                     operator needs create on secrets, as the chart's RBAC grants; or use \
                     urlFrom/passwordFrom)",
                    status.message
                )));
            }
            Err(err) => return Err(err),
        }
    }
    let older = ctx.cache.older_jobs(owner, plan.short_hash());
    if created_now || !older.is_empty() {
        delete_older(ctx, owner, plan.short_hash(), &older).await?;
    }
    Ok(Applied::Job(job))
}

fn is_suspended(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|all| {
            all.iter()
                .any(|c| c.type_ == "Suspended" && c.status == "True")
        })
}

/// Creates the credentials Secret of `job` (owned by it) and lets the Job start.
async fn release(ctx: &Context, plan: &Plan, owner: &Owner, job: &Job) -> Result<(), Error> {
    if let Some(secret) = build::credentials_secret(plan, owner, job) {
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &owner.namespace);
        match secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => {}
            // Immutable and named by the Job: an existing one holds the same data.
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(err) => return Err(err.into()),
        }
    }
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let release = serde_json::json!({"spec": {"suspend": false}});
    jobs.patch(
        &job.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&release),
    )
    .await?;
    Ok(())
}

/// Deletes the Job `name` (its pods and inputs go with it, by the garbage collector); one
/// already gone is fine.
pub(super) async fn delete_job(ctx: &Context, namespace: &str, name: &str) -> Result<(), Error> {
    let background = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    match jobs.delete(name, &background).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Deletes the `older` Jobs and the inputs ConfigMaps of other hashes: the latest Job stays for
/// `kubectl logs`. Called when a new hash got its Job or older Jobs are still there, so a
/// reconcile that finds nothing to clean up lists nothing.
async fn delete_older(
    ctx: &Context,
    owner: &Owner,
    short_hash: &str,
    older: &[String],
) -> Result<(), Error> {
    let background = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    for name in older {
        match jobs.delete(name, &background).await {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(err) => return Err(err.into()),
        }
    }
    let selector = build::owner_labels(owner.kind, &owner.name)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .chain(std::iter::once(format!(
            "{}!={short_hash}",
            build::LABEL_HASH
        )))
        .collect::<Vec<_>>()
        .join(",");
    let params = ListParams::default().labels(&selector);
    let configmaps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    for old in configmaps.list_metadata(&params).await?.items {
        if old.owner_references().iter().any(|o| o.uid == owner.uid) {
            match configmaps
                .delete(&old.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) | Err(kube::Error::Api(_)) => {}
                Err(err) => return Err(err.into()),
            }
        }
    }
    Ok(())
}
