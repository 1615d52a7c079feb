//! The reconcile pipeline, the same for both kinds: dereference (fetch the ConfigMaps the spec
//! names) → validate ([`crate::plan`]) → build ([`crate::job`]) → apply (create the Job for the
//! desired hash, delete older ones) → observe ([`crate::observe`]) → status
//! ([`crate::status`]), written only when it changed.
//!
//! The controller never reads a Secret and never opens a database connection.

mod migration;
mod schema;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use contract::Kind;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache::Cache;
use crate::job::{self, JobSettings, Owner};
use crate::metrics::{KindLabels, Metrics, OutcomeLabels, ReasonLabels};
use crate::plan::{ConfigMaps, DevNeed, Plan, PlanError};
use crate::status::{Computed, Observation};

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
    /// Whether resources may bring their own `atlas.hcl` (`--allow-custom-config`).
    pub allow_custom_config: bool,
}

impl Context {
    pub fn new(client: Client, settings: JobSettings, metrics: Arc<Metrics>) -> Context {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            metrics,
            allow_custom_config: false,
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

/// What the pipeline needs of a kind; implemented by [`crate::api::AtlasMigration`] and
/// [`crate::api::AtlasSchema`].
pub trait Applyable:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    const KIND: Kind;
    fn configmap_names(&self) -> Vec<String>;
    fn plan(&self, configmaps: &ConfigMaps) -> Result<Plan, PlanError>;
    fn computed_status(&self) -> Computed;
    /// The status to write, as JSON for a merge patch of `/status`.
    fn status_json(&self, computed: Computed) -> serde_json::Value;
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// One reconcile of one resource, measured.
pub async fn reconcile<K: Applyable>(
    resource: Arc<K>,
    ctx: Arc<ControllerContext>,
) -> Result<Action, Error> {
    let kind = K::KIND.resource_kind();
    let _measure = ctx.metrics.measure(kind);
    let result = reconcile_resource(resource, ctx.clone()).await;
    let outcome = if result.is_ok() { "ok" } else { "error" };
    ctx.metrics
        .reconciles
        .get_or_create(&OutcomeLabels {
            kind: kind.into(),
            outcome: outcome.into(),
        })
        .inc();
    result
}

async fn reconcile_resource<K: Applyable>(
    resource: Arc<K>,
    ctx: Arc<ControllerContext>,
) -> Result<Action, Error> {
    if !ctx.cache.is_ready() {
        // The Job and pod watches are still listing (the controller polls them meanwhile).
        return Ok(Action::requeue(CACHE_NOT_READY));
    }
    let namespace = resource.namespace().ok_or(Error::Incomplete("namespace"))?;
    let name = resource.name_any();
    let uid = resource.uid().ok_or(Error::Incomplete("uid"))?;
    if resource.meta().deletion_timestamp.is_some() {
        // Garbage collection removes the Jobs and ConfigMaps it owns.
        return Ok(Action::await_change());
    }
    let owner = Owner {
        kind: K::KIND,
        namespace: namespace.clone(),
        name: name.clone(),
        uid,
    };
    let generation = resource.meta().generation;
    let previous = resource.computed_status();

    // Dereference.
    let configmaps_api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut configmaps = BTreeMap::new();
    for cm_name in resource.configmap_names() {
        if let Some(cm) = configmaps_api.get_opt(&cm_name).await? {
            configmaps.insert(cm_name, cm);
        }
    }

    // Validate.
    let plan = resource.plan(&configmaps).and_then(|plan| {
        if plan.task.custom_config_env.is_some() && !ctx.allow_custom_config {
            return Err(PlanError {
                reason: plan.input_reason(),
                message: crate::plan::CUSTOM_CONFIG_REFUSED.into(),
                waits_for_object: false,
            });
        }
        Ok(plan)
    });
    let plan = match plan {
        Ok(plan) => plan,
        Err(err) => {
            let observation = Observation::Failed {
                reason: err.reason,
                message: err.message.clone(),
                stalled: !err.waits_for_object,
            };
            write_status(&*resource, &ctx, &previous, generation, &observation).await?;
            return Ok(if err.waits_for_object {
                Action::requeue(RESYNC_WAITING)
            } else {
                Action::await_change()
            });
        }
    };

    // Nothing to do: the desired hash is applied and Ready. No API write at all.
    let ready = previous
        .conditions
        .iter()
        .any(|c| c.type_ == crate::status::READY && c.status == "True");
    if ready
        && previous.observed_hash.as_deref() == Some(plan.hash.as_str())
        && previous.observed_generation == generation
    {
        return Ok(Action::await_change());
    }

    // Build and apply. The Jobs and pods are read from the cache the watches keep.
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut plan = plan;
    if plan.dev == DevNeed::Unknown {
        // The target's driver is in a Secret we do not read: the first Job (no sidecar) reports
        // it, and the Job after it brings a dev database of that driver.
        let probe = job::job_name(K::KIND, &name, plan.short_hash());
        if let Some(driver) = ctx
            .cache
            .pods_of(&namespace, &probe)
            .iter()
            .filter_map(crate::observe::result_of)
            .find_map(|result| result.dev_driver)
        {
            plan.dev = DevNeed::Found(driver);
        }
    }
    let job_name = job::plan_job_name(&plan, &owner);
    let mut created_now = false;
    let job = match ctx.cache.job(&namespace, &job_name) {
        Some(job) => job,
        None => {
            if let Some(inputs) = job::inputs_configmap(&plan, &owner) {
                match configmaps_api.create(&PostParams::default(), &inputs).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.code == 409 => {}
                    Err(err) => return Err(err.into()),
                }
            }
            let rendered = job::render(&plan, &owner, &ctx.settings);
            let created = match jobs.create(&PostParams::default(), &rendered).await {
                Ok(created) => created,
                // Another reconcile (or a previous operator) made it, or the cache has not seen
                // it yet: the same hash, the same Job, counted and announced where it was made.
                // Its watch event wakes this resource again.
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    return Ok(Action::requeue(Duration::from_secs(1)));
                }
                Err(err) => return Err(err.into()),
            };
            created_now = true;
            ctx.metrics
                .jobs_created
                .get_or_create(&KindLabels {
                    kind: K::KIND.resource_kind().into(),
                })
                .inc();
            publish(
                &ctx,
                &*resource,
                EventType::Normal,
                "JobCreated",
                &format!("Created Job {job_name} to apply hash {}", plan.short_hash()),
            )
            .await;
            Arc::new(created)
        }
    };
    let older = ctx.cache.older_jobs(&owner, plan.short_hash());
    if created_now || !older.is_empty() {
        delete_older(&ctx, &owner, plan.short_hash(), &older).await?;
    }

    // Observe.
    let observation = crate::observe::observe(
        K::KIND,
        &plan.hash,
        &job,
        &ctx.cache.pods_of(&namespace, &job_name),
        jiff::Timestamp::now().as_second(),
    );
    write_status(&*resource, &ctx, &previous, generation, &observation).await?;
    Ok(match observation {
        Observation::InProgress { .. } => Action::requeue(RESYNC_IN_PROGRESS),
        Observation::Failed { stalled: false, .. } => Action::requeue(RESYNC_IN_PROGRESS),
        _ => Action::await_change(),
    })
}

/// Writes the status when it differs from the current one, with an event for each transition.
async fn write_status<K: Applyable>(
    resource: &K,
    ctx: &Context,
    previous: &Computed,
    generation: Option<i64>,
    observation: &Observation,
) -> Result<(), Error> {
    let next = crate::status::compute(previous, generation, observation, now());
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
        .find(|c| c.type_ == crate::status::READY)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()));
    let ready_after = next
        .conditions
        .iter()
        .find(|c| c.type_ == crate::status::READY)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()));
    if ready_before != ready_after {
        match observation {
            Observation::Applied { message, .. } => {
                publish(ctx, resource, EventType::Normal, "Applied", message).await
            }
            Observation::Failed {
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
    Ok(())
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
    let selector = job::owner_labels(owner.kind, &owner.name)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .chain(std::iter::once(format!(
            "{}!={short_hash}",
            job::LABEL_HASH
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

async fn publish<K: Applyable>(
    ctx: &Context,
    resource: &K,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let mut note = note.to_string();
    if note.len() > 1000 {
        note = contract::cut_with_marker(&note, 1000);
    }
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(err) = ctx
        .recorder
        .publish(&event, &resource.object_ref(&()))
        .await
    {
        // An event is a courtesy: failing to record one must not fail the reconcile.
        tracing::warn!(error = %err, "recording an event failed");
    }
}

/// What happens after a failed reconcile: back off and try again.
pub fn error_policy<K: Applyable>(
    _resource: Arc<K>,
    error: &Error,
    _ctx: Arc<ControllerContext>,
) -> Action {
    tracing::warn!(%error, "reconcile failed");
    Action::requeue(Duration::from_secs(15))
}
