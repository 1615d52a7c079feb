//! The reconcile pipeline, the same for both kinds, one file per step:
//!
//! 1. [`dereference`]: fetch the ConfigMaps the spec names (and what an earlier Job found);
//! 2. [`validate`]: turn the resource into a complete [`validate::Plan`], or a reason the user
//!    can act on; pure;
//! 3. [`build`]: render the plan's Job and inputs ConfigMap; pure;
//! 4. [`apply`](mod@apply): create the Job for the desired hash, delete older ones;
//! 5. [`observe`]: read the Job and its pods back into an observation; pure;
//! 6. [`status`]: map the observation to the status ([`update_status`] writes it, only when it
//!    changed, with an event).
//!
//! A resource whose desired hash is applied and Ready stops after step 2: no API write at all.
//! The controller never reads a Secret and never opens a database connection. What differs
//! between the kinds is in [`kind`] and in `validate/{migration,schema}.rs`.

mod apply;
pub mod build;
pub mod dereference;
mod events;
pub use events::Recorder;
pub mod hash;
mod kind;
pub mod observe;
pub mod status;
#[cfg(test)]
mod tests;
mod update_status;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};

pub use kind::AtlasResource;

use crate::cache::Cache;
use crate::metrics::Metrics;
use apply::Applied;
use build::{JobSettings, Owner};
use status::Observation;
use validate::Allowed;

/// The field manager of everything the operator writes.
pub const MANAGER: &str = "atlas-operator";

/// How often a resource is looked at again while nothing tells us to: a safety net, since the
/// Job, pod and ConfigMap watches wake the reconciler on every change that matters.
const RESYNC_IN_PROGRESS: Duration = Duration::from_secs(30);
const RESYNC_WAITING: Duration = Duration::from_secs(60);
/// How soon a resource is looked at again when the caches had not listed yet at its reconcile.
const CACHE_NOT_READY: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the resource has no {0}")]
    Incomplete(&'static str),
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub settings: JobSettings,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// What the operator's flags allow of a resource (`--allow-custom-config`).
    pub allowed: Allowed,
}

impl Context {
    pub fn new(client: Client, settings: JobSettings, metrics: Arc<Metrics>) -> Context {
        Context {
            recorder: Recorder::new(client.clone(), std::env::var("POD_NAME").ok()),
            client,
            settings,
            metrics,
            allowed: Allowed::default(),
        }
    }
}

/// What the reconciles of one controller (a kind in a namespace, or in all) share: the
/// operator's [`Context`] and the cache of that controller's Jobs and pods.
pub struct ControllerContext {
    pub shared: Arc<Context>,
    pub cache: Cache,
}

impl std::ops::Deref for ControllerContext {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.shared
    }
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// One reconcile of one resource, measured.
pub async fn reconcile<K: AtlasResource>(
    resource: Arc<K>,
    ctx: Arc<ControllerContext>,
) -> Result<Action, Error> {
    let kind = K::KIND.resource_kind();
    let _measure = ctx.metrics.measure(kind);
    let result = reconcile_resource(&*resource, &ctx).await;
    ctx.metrics.count_reconcile(kind, result.is_ok());
    result
}

async fn reconcile_resource<K: AtlasResource>(
    resource: &K,
    ctx: &ControllerContext,
) -> Result<Action, Error> {
    if !ctx.cache.is_ready() {
        // The Job and pod watches are still listing (the controller polls them meanwhile).
        return Ok(Action::requeue(CACHE_NOT_READY));
    }
    let namespace = resource.namespace().ok_or(Error::Incomplete("namespace"))?;
    if resource.meta().deletion_timestamp.is_some() {
        // Garbage collection removes the Jobs and ConfigMaps it owns.
        return Ok(Action::await_change());
    }
    let owner = Owner {
        kind: K::KIND,
        namespace: namespace.clone(),
        name: resource.name_any(),
        uid: resource.uid().ok_or(Error::Incomplete("uid"))?,
    };
    let generation = resource.meta().generation;
    let previous = resource.common_status();

    let configmaps = Api::namespaced(ctx.client.clone(), &namespace);
    let found = dereference::dereference(resource, &configmaps, &ctx.cache).await?;

    let plan = match validate::validate(resource, &found, ctx.allowed) {
        Ok(plan) => plan,
        Err(err) => {
            let observation = Observation::Failed {
                reason: err.reason,
                message: err.message.clone(),
                stalled: !err.waits_for_object,
            };
            let (desired, attempts) = (None, None);
            update_status::write_status(
                resource,
                ctx,
                &previous,
                generation,
                desired,
                attempts,
                &observation,
            )
            .await?;
            return Ok(if err.waits_for_object {
                Action::requeue(RESYNC_WAITING)
            } else {
                Action::await_change()
            });
        }
    };

    if status::is_current(&previous, &plan.hash, generation) {
        return Ok(Action::await_change());
    }

    // Build and apply; the Jobs and pods are read from the cache the watches keep.
    let job = match apply::apply(ctx, resource, &plan, &owner).await? {
        Applied::Job(job) => job,
        Applied::NotYetCached => return Ok(Action::requeue(Duration::from_secs(1))),
        Applied::Refused(message) => {
            let observation = Observation::Failed {
                reason: K::KIND.failure_reason(),
                message,
                stalled: false,
            };
            let desired = Some(plan.short_hash());
            update_status::write_status(
                resource,
                ctx,
                &previous,
                generation,
                desired,
                None,
                &observation,
            )
            .await?;
            return Ok(Action::requeue(RESYNC_WAITING));
        }
    };

    let job_name = job.name_any();
    let pods = ctx.cache.pods_of(&namespace, &job_name);
    // The node lost the Job's last pod (its containers gone with a restarted kubelet or a
    // rebooted node): not the apply's failure. The Job goes, and the next reconcile makes it
    // again under the same name; Atlas's revisions table (and its lock, should the lost
    // process still run) keeps each version applied once.
    if let Some(pod) = observe::lost_by_node(&job, &pods) {
        apply::delete_job(ctx, &namespace, &job_name).await?;
        tracing::info!(
            kind = K::KIND.resource_kind(),
            resource = %format!("{namespace}/{}", owner.name),
            job = %job_name,
            %pod,
            "the node lost the Job's pod; running the Job again"
        );
        let observation = Observation::InProgress {
            detail: format!(
                "Job {job_name} failed as its node lost pod {pod} (ContainerStatusUnknown): \
                 running it again"
            ),
        };
        let desired = Some(plan.short_hash());
        update_status::write_status(
            resource,
            ctx,
            &previous,
            generation,
            desired,
            None,
            &observation,
        )
        .await?;
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let mut observation = observe::observe(
        K::KIND,
        &plan.hash,
        &job,
        &pods,
        jiff::Timestamp::now().as_second(),
    );
    // A Job that makes no pod: the API server refuses them, and only the Job controller's
    // events say why. Said as a retried failure: the Job controller keeps trying, and a quota
    // freed or a policy fixed lets it through.
    let now = jiff::Timestamp::now().as_second();
    let podless = matches!(observation, Observation::InProgress { .. })
        && observe::has_no_pod_yet(&job, &pods, now);
    if podless
        && let Some(refusal) =
            observe::pod_creation_refused(&ctx.client, &namespace, &job_name).await
    {
        observation = Observation::Retrying {
            reason: K::KIND.failure_reason(),
            message: format!(
                "Job {job_name} cannot create its pod: {refusal} (the Job controller tries again; \
                 see `kubectl describe job {job_name}`)"
            ),
            detail: format!("Job {job_name}: the API server refuses its pod"),
        };
    }
    // What the spec asked for and did not get is part of what the apply did.
    if let Observation::Applied { message, .. } = &mut observation {
        for notice in &plan.notices {
            message.push_str("; ");
            message.push_str(notice);
        }
    }
    let desired = Some(plan.short_hash());
    let attempts = job.status.as_ref().map(|s| s.failed.unwrap_or(0));
    update_status::write_status(
        resource,
        ctx,
        &previous,
        generation,
        desired,
        attempts,
        &observation,
    )
    .await?;
    Ok(match observation {
        // Nothing else wakes a reconcile while the Job makes no pod: look again soon.
        Observation::InProgress { .. } if pods.is_empty() => Action::requeue(Duration::from_secs(
            observe::POD_CREATE_GRACE_SECONDS as u64,
        )),
        Observation::InProgress { .. } | Observation::Retrying { .. } => {
            Action::requeue(RESYNC_IN_PROGRESS)
        }
        Observation::Failed { stalled: false, .. } => Action::requeue(RESYNC_IN_PROGRESS),
        _ => Action::await_change(),
    })
}

/// What happens after a failed reconcile: back off and try again.
pub fn error_policy<K: AtlasResource>(
    _resource: Arc<K>,
    error: &Error,
    _ctx: Arc<ControllerContext>,
) -> Action {
    tracing::warn!(%error, "reconcile failed");
    Action::requeue(Duration::from_secs(15))
}
