//! The desired hash: sha256 over the canonical spec, the referenced ConfigMaps' data and the
//! resource's identity. A change to any of them is a new Job; the same inputs are the same Job
//! (its name carries the hash), which is what makes a reconcile idempotent.

use std::collections::BTreeMap;

use contract::Kind;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::dereference::ConfigMaps;

/// An annotation whose value is part of the desired hash: changing it re-applies a resource
/// whose spec did not change (after a Secret's URL now points at another database, say).
pub const REAPPLY_ANNOTATION: &str = "db.atlasgo.io/reapply";

#[derive(Serialize)]
struct HashInput<'a, S: Serialize> {
    kind: Kind,
    namespace: &'a str,
    name: &'a str,
    reapply: Option<&'a str>,
    spec: &'a S,
    configmaps: BTreeMap<&'a str, ConfigMapContent<'a>>,
}

/// What of a ConfigMap the hash covers: its data, and its binary data as hex.
#[derive(Serialize)]
struct ConfigMapContent<'a> {
    data: &'a BTreeMap<String, String>,
    binary_data: BTreeMap<&'a str, String>,
}

pub fn desired_hash<S: Serialize>(
    kind: Kind,
    meta: &ObjectMeta,
    spec: &S,
    configmaps: &ConfigMaps,
) -> String {
    let empty = BTreeMap::new();
    let input = HashInput {
        kind,
        namespace: meta.namespace.as_deref().unwrap_or_default(),
        name: meta.name.as_deref().unwrap_or_default(),
        reapply: meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(REAPPLY_ANNOTATION))
            .map(String::as_str),
        spec,
        configmaps: configmaps
            .iter()
            .map(|(cm_name, cm)| {
                let binary = cm
                    .binary_data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.as_str(), hex(&v.0)))
                    .collect();
                (
                    cm_name.as_str(),
                    ConfigMapContent {
                        data: cm.data.as_ref().unwrap_or(&empty),
                        binary_data: binary,
                    },
                )
            })
            .collect(),
    };
    // serde_json writes struct fields in declaration order and BTreeMaps sorted: canonical.
    let bytes = serde_json::to_vec(&input).expect("a spec serializes");
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
