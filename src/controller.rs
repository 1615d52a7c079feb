//! Wiring: one `kube::runtime::Controller` per kind (and per watched namespace), woken by the
//! resources, the Jobs they own, the Jobs' pods, and the ConfigMaps they refer to.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use crate::api::{AtlasMigration, AtlasSchema};
use crate::reconcile::build::{LABEL_KIND, LABEL_MANAGED_BY, LABEL_NAME, MANAGED_BY};
use crate::reconcile::{self, AtlasResource, Context, ControllerContext};

/// How the controllers run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The namespaces to watch; empty watches all.
    pub namespaces: Vec<String>,
    /// Reconciles running at once, per kind and namespace.
    pub concurrency: u16,
    /// Only resources matching this label selector are reconciled (None: all).
    pub label_selector: Option<String>,
}

fn api<K: AtlasResource>(client: &Client, namespace: Option<&str>) -> Api<K> {
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

async fn run_kind<K: AtlasResource>(
    client: Client,
    namespace: Option<String>,
    ctx: Arc<Context>,
    options: Options,
) {
    let ns = namespace.as_deref();
    let managed = format!(
        "{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_KIND}={}",
        K::KIND.label()
    );
    let mut resources = watcher::Config::default().any_semantic();
    if let Some(selector) = &options.label_selector {
        resources = resources.labels(selector);
    }
    let controller = Controller::new(api::<K>(&client, ns), resources)
        .with_config(controller::Config::default().concurrency(options.concurrency));
    let store = controller.store();
    // The kind label keeps each controller's cache to its own kind's Jobs and pods.
    let (cache, feeds) = crate::cache::watch(
        api_of::<Job>(&client, ns),
        api_of::<Pod>(&client, ns),
        &managed,
    );
    let ctx = Arc::new(ControllerContext {
        shared: ctx,
        cache: cache.clone(),
    });
    let cached = store.clone();
    ctx.metrics.count_ready(K::KIND.resource_kind(), move || {
        cached
            .state()
            .iter()
            .map(|resource| ready_status(&resource.common_status()))
            .collect()
    });
    controller
        .owns_stream(feeds.jobs)
        // A pod that cannot start (a missing Secret) changes nothing on its Job: watch pods too.
        // A pod's Job names the resource; the name label is only a fallback, as it is cut when
        // the name is longer than a label value.
        .watches_stream(feeds.pods, move |pod| {
            cache.owner_of_pod::<K>(&pod).or_else(|| {
                let name = pod.labels().get(LABEL_NAME)?.clone();
                Some(ObjectRef::<K>::new(&name).within(&pod.namespace()?))
            })
        })
        // The reverse index: a ConfigMap event wakes the resources of its namespace that name it.
        // Its metadata is enough (an edit changes the resourceVersion), so no ConfigMap's data
        // is sent to the operator or decoded only to be dropped.
        .watches_stream(
            watcher(
                api_of::<PartialObjectMeta<ConfigMap>>(&client, ns),
                watcher::Config::default(),
            )
            .default_backoff()
            .touched_objects(),
            move |cm| {
                let namespace = cm.namespace();
                let name = cm.name_any();
                store
                    .state()
                    .into_iter()
                    .filter(|resource| {
                        resource.namespace() == namespace
                            && resource.configmap_names().contains(&name)
                    })
                    .map(|resource| ObjectRef::from_obj(&*resource))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(reconcile::reconcile::<K>, reconcile::error_policy::<K>, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                Err(err) => tracing::debug!(error = %err, "reconcile error"),
            }
        })
        .await;
}

fn ready_status(status: &crate::reconcile::status::CommonStatus) -> String {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map_or_else(|| "Unknown".to_string(), |c| c.status.clone())
}

fn api_of<T>(client: &Client, namespace: Option<&str>) -> Api<T>
where
    T: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// Runs every controller until SIGTERM or SIGINT.
pub async fn run(client: Client, ctx: Arc<Context>, options: Options) {
    let namespaces: Vec<Option<String>> = if options.namespaces.is_empty() {
        vec![None]
    } else {
        options.namespaces.iter().cloned().map(Some).collect()
    };
    let mut tasks = Vec::new();
    for namespace in namespaces {
        tasks.push(tokio::spawn(run_kind::<AtlasMigration>(
            client.clone(),
            namespace.clone(),
            ctx.clone(),
            options.clone(),
        )));
        tasks.push(tokio::spawn(run_kind::<AtlasSchema>(
            client.clone(),
            namespace,
            ctx.clone(),
            options.clone(),
        )));
    }
    for task in tasks {
        let _ = task.await;
    }
}
