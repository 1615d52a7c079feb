//! Wiring: one `kube::runtime::Controller` per kind (and per watched namespace), woken by the
//! resources, the Jobs they own, the Jobs' pods, and the ConfigMaps they refer to.

use std::sync::Arc;

use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
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

/// A future every controller can await: it resolves once, when the process is asked to stop.
pub type Shutdown = Shared<BoxFuture<'static, ()>>;

/// Resolves on the first SIGTERM (what Kubernetes sends when it deletes the pod) or SIGINT.
/// The handlers are installed at once, so a signal that comes before anything awaits it counts.
pub fn shutdown_on_signal() -> Shutdown {
    let next = next_signal();
    async move {
        let name = next.await;
        tracing::info!("{name}: finishing the running reconciles (again to stop at once)");
    }
    .boxed()
    .shared()
}

/// The next SIGTERM or SIGINT, by name; the handlers are installed before this returns.
fn next_signal() -> impl std::future::Future<Output = &'static str> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("a SIGTERM handler installs");
    let mut interrupt = signal(SignalKind::interrupt()).expect("a SIGINT handler installs");
    async move {
        tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        }
    }
}

async fn run_kind<K: AtlasResource>(
    client: Client,
    namespace: Option<String>,
    ctx: Arc<Context>,
    options: Options,
    shutdown: Shutdown,
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
    let started = store.clone();
    // The kind label keeps each controller's cache to its own kind's Jobs and pods.
    let (cache, feeds) = crate::cache::watch(
        api_of::<Job>(&client, ns),
        api_of::<Pod>(&client, ns),
        api_of::<PartialObjectMeta<ConfigMap>>(&client, ns),
        &managed,
    );
    let ctx = Arc::new(ControllerContext {
        shared: ctx,
        cache: cache.clone(),
    });
    let cached = store.clone();
    ctx.metrics
        .add_workers(K::KIND.resource_kind(), options.concurrency);
    ctx.metrics.count_ready(K::KIND.resource_kind(), move || {
        cached
            .state()
            .iter()
            .map(|resource| {
                let status = resource.common_status();
                crate::metrics::Counted {
                    ready: ready_status(&status),
                    reconciling: status
                        .conditions
                        .iter()
                        .any(|c| c.type_ == "Reconciling" && c.status == "True"),
                }
            })
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
        .watches_stream(feeds.configmaps, move |cm| {
            let namespace = cm.namespace();
            let name = cm.name_any();
            store
                .state()
                .into_iter()
                .filter(|resource| {
                    resource.namespace() == namespace && resource.configmap_names().contains(&name)
                })
                .map(|resource| ObjectRef::from_obj(&*resource))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile::reconcile::<K>, reconcile::error_policy::<K>, ctx)
        .take_until(cannot_end_gracefully(shutdown, started))
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

/// Resolves when a controller asked to stop cannot end gracefully: at once if it had not listed
/// its resources when `shutdown` came, or on a second signal.
///
/// kube's graceful shutdown alone hangs for good in the first case: its runner holds every
/// request until the resources' store is ready, the store only fills by polling the watches, and
/// the shutdown stops polling them, so the runner waits on a store that can no longer fill. A
/// controller that never listed has no reconcile running, so ending it at once loses nothing.
async fn cannot_end_gracefully<K: AtlasResource>(shutdown: Shutdown, store: Store<K>) {
    shutdown.await;
    let again = next_signal();
    // Let a list that completed as the signal came reach the store before it is judged.
    tokio::task::yield_now().await;
    if matches!(store.wait_until_ready().now_or_never(), Some(Ok(()))) {
        let name = again.await;
        tracing::warn!("{name} again: stopping without waiting for the running reconciles");
    }
}

/// Runs every controller until `shutdown` resolves and the running reconciles have finished.
pub async fn run(client: Client, ctx: Arc<Context>, options: Options, shutdown: Shutdown) {
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
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(run_kind::<AtlasSchema>(
            client.clone(),
            namespace,
            ctx.clone(),
            options.clone(),
            shutdown.clone(),
        )));
    }
    for task in tasks {
        let _ = task.await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{Request, Response};
    use kube::client::Body;

    use super::*;
    use crate::metrics::Metrics;
    use crate::reconcile::build::JobSettings;

    /// A stop asked for before the first list came back ends the controllers at once. The API
    /// server here never answers (a mock: a list that is slow for exactly the length of a signal
    /// is a race on a real one); kube's graceful shutdown alone waited on it for good, which is
    /// how CI once saw an operator still running 20 s after SIGTERM.
    #[tokio::test]
    async fn a_stop_before_the_first_list_ends_the_controllers() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let unanswered = tokio::spawn(async move {
            let mut pending = Vec::new();
            while let Some(request) = handle.next_request().await {
                pending.push(request);
            }
        });
        let client = Client::new(service, "default");
        let ctx = Arc::new(Context::new(
            client.clone(),
            JobSettings::default(),
            Arc::new(Metrics::default()),
        ));
        let options = Options {
            namespaces: vec!["tenant".into()],
            concurrency: 1,
            label_selector: None,
        };
        let (stop, stopped) = futures::channel::oneshot::channel::<()>();
        let shutdown: Shutdown = async move {
            let _ = stopped.await;
        }
        .boxed()
        .shared();
        let running = tokio::spawn(run(client, ctx, options, shutdown));
        // The watches have sent their lists by now, and none will be answered.
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("the controllers end within 5 s of the stop")
            .unwrap();
        unanswered.abort();
    }
}
