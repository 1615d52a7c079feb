//! The operator's view of its own Jobs and their pods, kept by the watches that wake the
//! reconciler, so that a reconcile reads them from memory instead of getting and listing them
//! from the API server each time (the benchmark counted about 40 lists per resource before;
//! docs/performance.md).
//!
//! Only what the status is computed from is kept: metadata without managed fields, and the
//! status. The pod spec and Job template are dropped as they arrive, so the cache costs about a
//! kilobyte per Job and pod.
//!
//! ConfigMaps are watched by metadata only (the watch wakes the resources that name one); the
//! content of those a resource refers to is kept from the last GET, with its resourceVersion,
//! and read again only once the watch has seen a newer one, so an unchanged ConfigMap costs no
//! request however often its resources are reconciled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, ContainerStatus, Pod, PodCondition, PodStatus};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};

use crate::reconcile::build::{LABEL_HASH, Owner};

mod index;
use index::{Index, KeyOf};

/// The label the Job controller puts on every pod of a Job.
const JOB_NAME_LABEL: &str = "job-name";

/// The Jobs and pods the operator made, in the namespaces one controller watches.
#[derive(Clone)]
pub struct Cache {
    jobs: Store<Job>,
    pods: Store<Pod>,
    /// Pods by namespace and Job name; Jobs by namespace and owner uid.
    pods_by_job: Index<Pod>,
    jobs_by_owner: Index<Job>,
    configmaps: Store<PartialObjectMeta<ConfigMap>>,
    /// The content of the ConfigMaps resources refer to, as last read.
    contents: Arc<Mutex<Contents>>,
}

/// ConfigMaps' content by namespace and name.
type Contents = HashMap<(String, String), Arc<ConfigMap>>;

/// The watch streams that fill a [`Cache`]; the controller polls them (and is woken by them).
pub struct Feeds {
    pub jobs: BoxStream<'static, Result<Job, watcher::Error>>,
    pub pods: BoxStream<'static, Result<Pod, watcher::Error>>,
    pub configmaps: BoxStream<'static, Result<PartialObjectMeta<ConfigMap>, watcher::Error>>,
}

/// A cache and the streams that fill it: `selector` picks the operator's own Jobs and pods;
/// every ConfigMap's metadata is watched.
pub fn watch(
    jobs: Api<Job>,
    pods: Api<Pod>,
    configmaps: Api<PartialObjectMeta<ConfigMap>>,
    selector: &str,
) -> (Cache, Feeds) {
    let (job_store, job_writer) = reflector::store();
    let (pod_store, pod_writer) = reflector::store();
    let (configmap_store, configmap_writer) = reflector::store();
    let config = watcher::Config::default().labels(selector);
    let jobs_by_owner = Index::new(owner_of_job as KeyOf<Job>);
    let pods_by_job = Index::new(job_of_pod as KeyOf<Pod>);
    let job_index = jobs_by_owner.clone();
    let jobs = watcher(jobs, config.clone())
        .default_backoff()
        .modify(keep_what_is_read_of_a_job)
        .reflect(job_writer)
        .inspect_ok(move |event| job_index.apply(event))
        .touched_objects()
        .boxed();
    let pod_index = pods_by_job.clone();
    let pods = watcher(pods, config)
        .default_backoff()
        .modify(keep_what_is_read_of_a_pod)
        .reflect(pod_writer)
        .inspect_ok(move |event| pod_index.apply(event))
        .touched_objects()
        .boxed();
    let configmaps = watcher(configmaps, watcher::Config::default())
        .default_backoff()
        .modify(|cm: &mut PartialObjectMeta<ConfigMap>| cm.managed_fields_mut().clear())
        .reflect(configmap_writer)
        .touched_objects()
        .boxed();
    (
        Cache {
            jobs: job_store,
            pods: pod_store,
            pods_by_job,
            jobs_by_owner,
            configmaps: configmap_store,
            contents: Arc::default(),
        },
        Feeds {
            jobs,
            pods,
            configmaps,
        },
    )
}

/// The key of a pod in [`Cache::pods_by_job`]: its Job's namespace and name.
fn job_of_pod(pod: &Pod) -> Option<(String, String)> {
    Some((pod.namespace()?, pod.labels().get(JOB_NAME_LABEL)?.clone()))
}

/// The key of a Job in [`Cache::jobs_by_owner`]: its namespace and its controller's uid.
fn owner_of_job(job: &Job) -> Option<(String, String)> {
    let owner = job
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .or_else(|| job.owner_references().first())?;
    Some((job.namespace()?, owner.uid.clone()))
}

/// A Job as the cache keeps it: its name, labels, owner and status (the hash annotation and the
/// pod template are never read from it).
fn keep_what_is_read_of_a_job(job: &mut Job) {
    job.managed_fields_mut().clear();
    job.annotations_mut().clear();
    job.spec = None;
}

/// A pod as the cache keeps it: its name, labels, owner and creation time, and of its status only
/// each container's name and state (the termination message is in the state) and a `PodScheduled`
/// condition that is not true (why the pod waits for a node). The rest of a pod's status
/// (addresses, other conditions, images, mounts, resources) is most of its size.
fn keep_what_is_read_of_a_pod(pod: &mut Pod) {
    pod.managed_fields_mut().clear();
    pod.annotations_mut().clear();
    pod.spec = None;
    if let Some(status) = pod.status.take() {
        let keep = |statuses: Option<Vec<ContainerStatus>>| {
            statuses.map(|all| {
                all.into_iter()
                    .map(|c| ContainerStatus {
                        name: c.name,
                        state: c.state,
                        ..Default::default()
                    })
                    .collect()
            })
        };
        let unscheduled: Vec<_> = status
            .conditions
            .into_iter()
            .flatten()
            .filter(|c| c.type_ == "PodScheduled" && c.status != "True")
            .map(|c| PodCondition {
                type_: c.type_,
                status: c.status,
                reason: c.reason,
                message: c.message,
                ..Default::default()
            })
            .collect();
        pod.status = Some(PodStatus {
            container_statuses: keep(status.container_statuses),
            init_container_statuses: keep(status.init_container_statuses),
            conditions: (!unscheduled.is_empty()).then_some(unscheduled),
            ..Default::default()
        });
    }
}

impl Cache {
    /// Whether both watches have listed once: before that, a missing Job may only be missing
    /// from memory, and creating it would be a needless write.
    ///
    /// It does not wait: `Store::wait_until_ready` wakes only the last of several tasks waiting
    /// on it (a oneshot channel keeps one waker), so concurrent reconciles awaiting it hung for
    /// good (the benchmark's restart with 1,000 resources found 3 of every 4 first reconciles
    /// stuck). A reconcile that finds the cache unready looks again shortly instead.
    pub fn is_ready(&self) -> bool {
        // An error means the watch was dropped, which only happens at shutdown.
        matches!(self.jobs.wait_until_ready().now_or_never(), Some(Ok(())))
            && matches!(self.pods.wait_until_ready().now_or_never(), Some(Ok(())))
    }

    /// The ConfigMap's content as last read, if the watch has seen no newer version since (and
    /// has seen it at all: one it has not may have just been created, or deleted).
    pub fn configmap(&self, namespace: &str, name: &str) -> Option<Arc<ConfigMap>> {
        let key = (namespace.to_string(), name.to_string());
        let mut contents = self.contents.lock().unwrap();
        let watched = self.configmaps.get(&ObjectRef::new(name).within(namespace));
        let Some(watched) = watched else {
            contents.remove(&key);
            return None;
        };
        let content = contents.get(&key)?;
        (content.metadata.resource_version == watched.metadata.resource_version)
            .then(|| content.clone())
    }

    /// Keeps a ConfigMap's content as read, for [`Cache::configmap`].
    pub fn remember_configmap(&self, configmap: &ConfigMap) {
        let key = (
            configmap.namespace().unwrap_or_default(),
            configmap.name_any(),
        );
        let mut content = configmap.clone();
        content.managed_fields_mut().clear();
        self.contents.lock().unwrap().insert(key, Arc::new(content));
    }

    pub fn job(&self, namespace: &str, name: &str) -> Option<Arc<Job>> {
        self.jobs.get(&ObjectRef::new(name).within(namespace))
    }

    /// The pods of one Job, in no particular order.
    pub fn pods_of(&self, namespace: &str, job_name: &str) -> Vec<Pod> {
        self.pods_by_job
            .get(&(namespace.to_string(), job_name.to_string()))
            .iter()
            .filter_map(|reference| self.pods.get(reference))
            .map(|pod| (*pod).clone())
            .collect()
    }

    /// The names of the owner's Jobs for other hashes than `short_hash`.
    pub fn older_jobs(&self, owner: &Owner, short_hash: &str) -> Vec<String> {
        self.jobs_by_owner
            .get(&(owner.namespace.clone(), owner.uid.clone()))
            .iter()
            .filter_map(|reference| self.jobs.get(reference))
            .filter(|job| job.labels().get(LABEL_HASH).map(String::as_str) != Some(short_hash))
            .map(|job| job.name_any())
            .collect()
    }

    /// The resource of kind `K` a pod's Job belongs to, when that Job is known.
    pub fn owner_of_pod<K>(&self, pod: &Pod) -> Option<ObjectRef<K>>
    where
        K: Resource<DynamicType = ()>,
    {
        let namespace = pod.namespace()?;
        let job_name = pod.labels().get(JOB_NAME_LABEL)?;
        let job = self.job(&namespace, job_name)?;
        let owner = job
            .owner_references()
            .iter()
            .find(|o| o.kind == K::kind(&()) && o.controller == Some(true))?;
        Some(ObjectRef::new(&owner.name).within(&namespace))
    }
}

#[cfg(test)]
impl Cache {
    /// [`Cache::listed`], with these ConfigMaps' metadata watched too.
    pub(crate) fn listed_with(jobs: &[Job], pods: &[Pod], configmaps: &[ConfigMap]) -> Cache {
        use kube::runtime::reflector::store::Writer;
        let mut writer = Writer::default();
        writer.apply_watcher_event(&watcher::Event::Init);
        for cm in configmaps {
            let meta = PartialObjectMeta::<ConfigMap> {
                types: None,
                metadata: cm.metadata.clone(),
                _phantom: std::marker::PhantomData,
            };
            writer.apply_watcher_event(&watcher::Event::InitApply(meta));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        Cache {
            configmaps: writer.as_reader(),
            ..Cache::listed(jobs, pods)
        }
    }

    /// A cache as the watches leave it after their first list of these objects.
    pub(crate) fn listed(jobs: &[Job], pods: &[Pod]) -> Cache {
        use kube::runtime::reflector::store::Writer;
        /// The store and index (if any) as a first list of `objects` leaves them.
        fn listed<K>(objects: &[K], index: Option<&Index<K>>) -> Writer<K>
        where
            K: Resource<DynamicType = ()> + Clone + 'static,
        {
            let mut writer = Writer::default();
            let mut events = vec![watcher::Event::Init];
            events.extend(objects.iter().cloned().map(watcher::Event::InitApply));
            events.push(watcher::Event::InitDone);
            for event in &events {
                writer.apply_watcher_event(event);
                if let Some(index) = index {
                    index.apply(event);
                }
            }
            writer
        }
        let pods_by_job = Index::new(job_of_pod as KeyOf<Pod>);
        let jobs_by_owner = Index::new(owner_of_job as KeyOf<Job>);
        Cache {
            jobs: listed(jobs, Some(&jobs_by_owner)).as_reader(),
            pods: listed(pods, Some(&pods_by_job)).as_reader(),
            pods_by_job,
            jobs_by_owner,
            configmaps: listed::<PartialObjectMeta<ConfigMap>>(&[], None).as_reader(),
            contents: Arc::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::Kind;
    use kube::runtime::reflector::store::Writer;
    use serde_json::json;

    fn owner() -> Owner {
        Owner {
            kind: Kind::Migration,
            namespace: "team-a".into(),
            name: "app".into(),
            uid: "uid-app".into(),
        }
    }

    fn job(namespace: &str, name: &str, hash: &str, owner_uid: &str) -> Job {
        serde_json::from_value(json!({
            "metadata": {
                "name": name, "namespace": namespace,
                "labels": { LABEL_HASH: hash },
                "ownerReferences": [{
                    "apiVersion": "db.atlasgo.io/v1alpha1", "kind": "AtlasMigration",
                    "name": "app", "uid": owner_uid, "controller": true,
                }],
            },
        }))
        .unwrap()
    }

    fn pod(namespace: &str, name: &str, job_name: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": name, "namespace": namespace, "labels": { JOB_NAME_LABEL: job_name } },
        }))
        .unwrap()
    }

    fn cache(jobs: &[Job], pods: &[Pod]) -> Cache {
        let cache = Cache::listed(jobs, pods);
        assert!(cache.is_ready());
        cache
    }

    #[test]
    fn the_cache_is_ready_once_both_watches_have_listed_and_asking_never_waits() {
        let mut job_writer: Writer<Job> = Writer::default();
        let mut pod_writer: Writer<Pod> = Writer::default();
        let cache = Cache {
            jobs: job_writer.as_reader(),
            pods: pod_writer.as_reader(),
            pods_by_job: Index::new(job_of_pod as KeyOf<Pod>),
            jobs_by_owner: Index::new(owner_of_job as KeyOf<Job>),
            configmaps: Writer::default().as_reader(),
            contents: Arc::default(),
        };
        assert!(!cache.is_ready());
        job_writer.apply_watcher_event(&watcher::Event::InitDone);
        assert!(!cache.is_ready(), "the pods have not been listed yet");
        pod_writer.apply_watcher_event(&watcher::Event::InitDone);
        assert!(cache.is_ready());
        assert!(cache.is_ready(), "asking again gives the same answer");
    }

    /// Why a pod waits for a node is read (observe says it); a scheduled pod's conditions are not.
    #[test]
    fn a_cached_pod_keeps_why_it_is_not_scheduled() {
        let mut pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/1 nodes are available", "lastTransitionTime": "2026-12-01T00:00:00Z"}]}}))
        .unwrap();
        keep_what_is_read_of_a_pod(&mut pod);
        let kept = pod.status.unwrap().conditions.unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].reason.as_deref(), Some("Unschedulable"));
        assert_eq!(kept[0].message.as_deref(), Some("0/1 nodes are available"));
    }

    /// What observe reads survives the trimming (the runner's termination message, a waiting
    /// reason, the dev database's state), and under two thirds of what was kept before (as JSON;
    /// a real pod has more of what is dropped: more conditions, mounts, resources).
    #[test]
    fn a_cached_pod_keeps_what_is_read_and_little_else() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "a", "creationTimestamp": "2026-12-01T00:00:00Z",
                         "labels": {"job-name": "j"}, "annotations": {"sidecar.istio.io/inject": "false"},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u"}]},
            "spec": {"containers": [{"name": "runner", "image": "runner:1"}]},
            "status": {
                "phase": "Succeeded", "hostIP": "10.0.0.1", "podIP": "10.0.0.2",
                "podIPs": [{"ip": "10.0.0.2"}], "qosClass": "Burstable",
                "startTime": "2026-12-01T00:00:00Z",
                "conditions": [{"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}],
                "containerStatuses": [{
                    "name": "runner", "image": "ghcr.io/atlas-operator/runner:0.1.0",
                    "imageID": "ghcr.io/atlas-operator/runner@sha256:0123456789abcdef0123456789abcdef",
                    "containerID": "containerd://0123456789abcdef", "ready": false, "restartCount": 0,
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "inputs", "mountPath": "/atlas/inputs"}],
                    "state": {"terminated": {"exitCode": 0, "message": "{\"version\":3}",
                              "finishedAt": "2026-12-01T00:00:05Z", "reason": "Completed"}}}],
                "initContainerStatuses": [{
                    "name": "dev-db", "image": "mysql:8", "imageID": "", "ready": true, "restartCount": 0,
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}}}]
            }
        }))
        .unwrap();
        let original = pod.clone();
        // What the cache kept before: all but the spec.
        let mut before = pod.clone();
        before.spec = None;
        let before = serde_json::to_vec(&before).unwrap().len();
        keep_what_is_read_of_a_pod(&mut pod);
        let after = serde_json::to_vec(&pod).unwrap().len();
        let status = pod.status.as_ref().unwrap();
        let runner = &status.container_statuses.as_ref().unwrap()[0];
        let was = &original
            .status
            .as_ref()
            .unwrap()
            .container_statuses
            .as_ref()
            .unwrap()[0];
        assert_eq!(
            (runner.name.as_str(), &runner.state),
            ("runner", &was.state)
        );
        let dev = &status.init_container_statuses.as_ref().unwrap()[0];
        assert_eq!(
            dev.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("ImagePullBackOff")
        );
        assert_eq!(pod.metadata.labels, original.metadata.labels);
        assert_eq!(
            pod.metadata.owner_references,
            original.metadata.owner_references
        );
        assert_eq!(
            pod.metadata.creation_timestamp,
            original.metadata.creation_timestamp
        );
        let kept = serde_json::to_string(&pod).unwrap();
        for gone in [
            "10.0.0.2",
            "PodScheduled",
            "sha256:",
            "containerd://",
            "/atlas/inputs",
            "istio",
        ] {
            assert!(!kept.contains(gone), "{gone} kept: {kept}");
        }
        assert!(after * 3 < before * 2, "{after} of {before} bytes kept");
    }

    #[test]
    fn a_configmap_is_read_again_only_once_the_watch_saw_a_newer_version() {
        let mut writer: Writer<PartialObjectMeta<ConfigMap>> = Writer::default();
        let meta = |version: &str| -> PartialObjectMeta<ConfigMap> {
            serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "dir", "namespace": "a", "resourceVersion": version}}))
            .unwrap()
        };
        let cache = Cache {
            configmaps: writer.as_reader(),
            ..Cache::listed(&[], &[])
        };
        let content: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "dir", "namespace": "a", "resourceVersion": "1"},
            "data": {"1.sql": "create table t (id int);"}}))
        .unwrap();
        // Not watched yet: nothing to trust, read it.
        cache.remember_configmap(&content);
        assert!(cache.configmap("a", "dir").is_none());
        writer.apply_watcher_event(&watcher::Event::Apply(meta("1")));
        cache.remember_configmap(&content);
        assert_eq!(cache.configmap("a", "dir").unwrap().data, content.data);
        // Edited: read again.
        writer.apply_watcher_event(&watcher::Event::Apply(meta("2")));
        assert!(cache.configmap("a", "dir").is_none());
        // Deleted: forgotten.
        writer.apply_watcher_event(&watcher::Event::Delete(meta("2")));
        assert!(cache.configmap("a", "dir").is_none());
        assert!(cache.contents.lock().unwrap().is_empty());
    }

    #[test]
    fn older_jobs_are_the_owners_jobs_of_other_hashes() {
        let cache = cache(
            &[
                job("team-a", "atlasmigration-app-aaaa", "aaaa", "uid-app"),
                job("team-a", "atlasmigration-app-bbbb", "bbbb", "uid-app"),
                // A resource of the same name, deleted and made again: not ours to clean up.
                job("team-a", "atlasmigration-app-cccc", "cccc", "uid-earlier"),
                // The same uid cannot be in another namespace, but a lookalike must not match.
                job("team-b", "atlasmigration-app-dddd", "dddd", "uid-app"),
            ],
            &[],
        );
        assert_eq!(
            cache.older_jobs(&owner(), "bbbb"),
            vec!["atlasmigration-app-aaaa".to_string()]
        );
        assert!(
            cache
                .older_jobs(&owner(), "aaaa")
                .contains(&"atlasmigration-app-bbbb".into())
        );
    }

    #[test]
    fn pods_are_found_by_their_job_and_lead_back_to_the_resource() {
        let cache = cache(
            &[job("team-a", "atlasmigration-app-aaaa", "aaaa", "uid-app")],
            &[
                pod("team-a", "p1", "atlasmigration-app-aaaa"),
                pod("team-a", "p2", "atlasmigration-app-aaaa"),
                pod("team-a", "p3", "atlasmigration-other-ffff"),
                pod("team-b", "p4", "atlasmigration-app-aaaa"),
            ],
        );
        let mut names: Vec<String> = cache
            .pods_of("team-a", "atlasmigration-app-aaaa")
            .iter()
            .map(|p| p.name_any())
            .collect();
        names.sort();
        assert_eq!(names, ["p1", "p2"]);
        assert!(cache.job("team-a", "atlasmigration-app-aaaa").is_some());
        assert!(cache.job("team-b", "atlasmigration-app-aaaa").is_none());

        let owner = cache
            .owner_of_pod::<crate::api::AtlasMigration>(&pod(
                "team-a",
                "p1",
                "atlasmigration-app-aaaa",
            ))
            .unwrap();
        assert_eq!(
            (owner.name.as_str(), owner.namespace.as_deref()),
            ("app", Some("team-a"))
        );
        // A schema controller does not take a migration's pod for one of its own.
        assert!(
            cache
                .owner_of_pod::<crate::api::AtlasSchema>(&pod(
                    "team-a",
                    "p1",
                    "atlasmigration-app-aaaa"
                ))
                .is_none()
        );
        // A pod whose Job the cache has not seen yet names no one.
        assert!(
            cache
                .owner_of_pod::<crate::api::AtlasMigration>(&pod(
                    "team-a",
                    "p3",
                    "atlasmigration-other-ffff"
                ))
                .is_none()
        );
    }
}
