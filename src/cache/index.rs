//! A secondary index of a watched kind, kept in step with its watch's events: which objects have
//! a key (the pods of a Job, the Jobs of a resource), found without scanning every cached object
//! (a reconcile used to scan them all, which at 10,000 resources is 10,000 objects per
//! reconcile).

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

/// The key of an object, from fields that never change over its life (a pod's `job-name`
/// label, a Job's owner): an update need not move it.
pub type KeyOf<K> = fn(&K) -> Option<(String, String)>;

/// Object references by key.
type ByKey<K> = HashMap<(String, String), HashSet<ObjectRef<K>>>;

struct State<K: Resource<DynamicType = ()>> {
    by_key: ByKey<K>,
    /// The objects of a relist (`Init` … `InitDone`), which replace the index when it ends.
    relisting: Option<ByKey<K>>,
}

/// Object references by key. Cloning shares the index.
pub struct Index<K: Resource<DynamicType = ()>> {
    key_of: KeyOf<K>,
    state: Arc<Mutex<State<K>>>,
}

impl<K: Resource<DynamicType = ()>> Clone for Index<K> {
    fn clone(&self) -> Self {
        Index {
            key_of: self.key_of,
            state: self.state.clone(),
        }
    }
}

impl<K> Index<K>
where
    K: Resource<DynamicType = ()>,
    ObjectRef<K>: Hash + Eq,
{
    pub fn new(key_of: KeyOf<K>) -> Index<K> {
        Index {
            key_of,
            state: Arc::new(Mutex::new(State {
                by_key: HashMap::new(),
                relisting: None,
            })),
        }
    }

    /// Follows one watch event (after the reflector has applied it).
    pub fn apply(&self, event: &watcher::Event<K>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let entry = |object: &K| Some(((self.key_of)(object)?, ObjectRef::from_obj(object)));
        match event {
            watcher::Event::Apply(object) => {
                if let Some((key, reference)) = entry(object) {
                    state.by_key.entry(key).or_default().insert(reference);
                }
            }
            watcher::Event::Delete(object) => {
                if let Some((key, reference)) = entry(object)
                    && let Some(set) = state.by_key.get_mut(&key)
                {
                    set.remove(&reference);
                    if set.is_empty() {
                        state.by_key.remove(&key);
                    }
                }
            }
            watcher::Event::Init => state.relisting = Some(HashMap::new()),
            watcher::Event::InitApply(object) => {
                if let Some((key, reference)) = entry(object) {
                    let relisting = state.relisting.get_or_insert_with(HashMap::new);
                    relisting.entry(key).or_default().insert(reference);
                }
            }
            watcher::Event::InitDone => {
                if let Some(listed) = state.relisting.take() {
                    state.by_key = listed;
                }
            }
        }
    }

    /// The objects with `key`, in no particular order.
    pub fn get(&self, key: &(String, String)) -> Vec<ObjectRef<K>> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .by_key
            .get(key)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use kube::ResourceExt;

    fn pod(name: &str, job: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "a", "labels": {"job-name": job}}}))
        .unwrap()
    }

    fn of_job(pod: &Pod) -> Option<(String, String)> {
        Some((pod.namespace()?, pod.labels().get("job-name")?.clone()))
    }

    fn names(index: &Index<Pod>, job: &str) -> Vec<String> {
        let mut names: Vec<String> = index
            .get(&("a".into(), job.into()))
            .into_iter()
            .map(|r| r.name)
            .collect();
        names.sort();
        names
    }

    /// Applies, deletes and a relist that drops what is gone while it was not watched.
    #[test]
    fn the_index_follows_the_watch() {
        let index = Index::new(of_job as KeyOf<Pod>);
        index.apply(&watcher::Event::Apply(pod("p1", "j1")));
        index.apply(&watcher::Event::Apply(pod("p2", "j1")));
        index.apply(&watcher::Event::Apply(pod("p2", "j1")));
        index.apply(&watcher::Event::Apply(pod("q1", "j2")));
        assert_eq!(names(&index, "j1"), ["p1", "p2"]);
        index.apply(&watcher::Event::Delete(pod("p1", "j1")));
        assert_eq!(names(&index, "j1"), ["p2"]);
        // A relist: until it is done the old index answers; then only what was listed.
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(pod("p3", "j1")));
        assert_eq!(names(&index, "j1"), ["p2"]);
        index.apply(&watcher::Event::InitDone);
        assert_eq!(names(&index, "j1"), ["p3"]);
        assert!(names(&index, "j2").is_empty());
        // An object without a key is not indexed.
        let mut keyless = pod("x", "j3");
        keyless.labels_mut().clear();
        index.apply(&watcher::Event::Apply(keyless));
        assert!(names(&index, "j3").is_empty());
    }
}
