//! The pipeline's dereference step: fetch what the spec refers to. That is the ConfigMaps it
//! names, and, for a schema whose database URL is in a Secret, what an earlier Job of the same
//! desired hash found out about the target (its driver, so the next Job brings a dev database of
//! that kind). Secrets are never fetched: they reach the Job's pod through `secretKeyRef`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, ResourceExt};

use super::AtlasResource;
use super::hash::desired_hash;
use crate::api::{AtlasMigration, AtlasSchema};
use crate::cache::Cache;

/// The ConfigMaps a resource refers to, by name, as they were found (a missing one is absent).
pub type ConfigMaps = BTreeMap<String, ConfigMap>;

/// What the dereference step found: everything the validate step reads besides the resource.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dereferenced {
    pub configmaps: ConfigMaps,
    /// The desired hash of the resource and these ConfigMaps.
    pub hash: String,
    /// The target's driver, as the runner of an earlier Job for this hash reported it.
    pub dev_driver: Option<String>,
}

impl Dereferenced {
    /// What a resource and its ConfigMaps give, before any Job has run for them.
    pub fn new<K: AtlasResource>(resource: &K, configmaps: ConfigMaps) -> Dereferenced {
        Dereferenced {
            hash: desired_hash(K::KIND, resource.meta(), resource.spec(), &configmaps),
            configmaps,
            dev_driver: None,
        }
    }
}

/// Reads the ConfigMaps (from the cache while the watch has seen no newer version, else from the
/// API server) and the earlier Job's finding from the Job and pod caches.
pub async fn dereference<K: AtlasResource>(
    resource: &K,
    configmaps_api: &Api<ConfigMap>,
    cache: &Cache,
) -> Result<Dereferenced, kube::Error> {
    let namespace = resource.namespace().unwrap_or_default();
    let mut configmaps = BTreeMap::new();
    for name in resource.configmap_names() {
        if let Some(cm) = cache.configmap(&namespace, &name) {
            configmaps.insert(name, (*cm).clone());
        } else if let Some(cm) = configmaps_api.get_opt(&name).await? {
            cache.remember_configmap(&cm);
            configmaps.insert(name, cm);
        }
    }
    let mut found = Dereferenced::new(resource, configmaps);
    // The first Job of a hash is named without a suffix; it reports a driver when it needed a
    // dev database it had not (a schema's plan, a migration's migrate down).
    let first = super::build::job_name(K::KIND, &resource.name_any(), &found.hash[..8]);
    found.dev_driver = cache
        .pods_of(&resource.namespace().unwrap_or_default(), &first)
        .iter()
        .filter_map(super::observe::result_of)
        .find_map(|result| result.dev_driver);
    Ok(found)
}

/// The ConfigMap an AtlasMigration's directory is in, if it is in one.
pub fn migration_configmaps(resource: &AtlasMigration) -> Vec<String> {
    resource
        .spec
        .dir
        .config_map_ref
        .iter()
        .map(|r| r.name.clone())
        .collect()
}

/// The ConfigMap an AtlasSchema's desired schema is in, if it is in one.
pub fn schema_configmaps(resource: &AtlasSchema) -> Vec<String> {
    resource
        .spec
        .schema
        .iter()
        .flat_map(|s| s.config_map_key_ref.iter())
        .map(|r| r.name.clone())
        .collect()
}
