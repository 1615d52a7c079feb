//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses its own subset

pub mod e2e;
pub mod relay;

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Every YAML document of a file, as JSON values (what the API server would store).
pub fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|err| panic!("parsing {}: {err}", path.display()))
        .into_iter()
        .filter(|doc| !doc.is_null())
        .collect()
}

/// Every `*.yaml` file below `dir`, sorted, so failures name the same file on every run.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path
                .extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
            {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Deserializes `original` into `T`, serializes it back, and returns every JSON path where the two
/// differ: a field that the types dropped, renamed or changed shows up here.
pub fn round_trip_differences<T: DeserializeOwned + Serialize>(original: &Value) -> Vec<String> {
    let typed: T = serde_json::from_value(original.clone())
        .unwrap_or_else(|err| panic!("does not deserialize: {err}\n{original:#}"));
    let back = serde_json::to_value(&typed).unwrap();
    let mut differences = Vec::new();
    compare("", original, &back, &mut differences);
    differences
}

fn compare(path: &str, original: &Value, back: &Value, out: &mut Vec<String>) {
    match (original, back) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let child = format!("{path}.{key}");
                match b.get(key) {
                    Some(other) => compare(&child, value, other, out),
                    None => out.push(format!("{child}: dropped")),
                }
            }
            for key in b.keys().filter(|key| !a.contains_key(*key)) {
                out.push(format!("{path}.{key}: added"));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                compare(&format!("{path}[{i}]"), x, y, out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path}: {a} became {b}")),
    }
}

/// kustomize's own files below `dir`, which are not Kubernetes objects: each
/// `kustomization.yaml` and the transformer configurations it lists under `configurations`.
pub fn kustomize_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in yaml_files(dir) {
        if path.file_stem().is_some_and(|stem| stem == "kustomization") {
            let folder = path.parent().unwrap().to_path_buf();
            for doc in yaml_documents(&path) {
                for listed in doc["configurations"].as_array().into_iter().flatten() {
                    files.push(folder.join(listed.as_str().unwrap_or_default()));
                }
            }
            files.push(path);
        }
    }
    files
}

/// The validate step for a resource and the ConfigMaps a dereference would have found (no Job
/// has run for it yet), with custom configs allowed.
pub fn plan<K: atlas_operator::reconcile::AtlasResource>(
    resource: &K,
    configmaps: &atlas_operator::reconcile::dereference::ConfigMaps,
) -> Result<atlas_operator::reconcile::validate::Plan, atlas_operator::reconcile::validate::PlanError>
{
    use atlas_operator::reconcile::dereference::Dereferenced;
    use atlas_operator::reconcile::validate::{self, Allowed};
    let found = Dereferenced::new(resource, configmaps.clone());
    validate::validate(
        resource,
        &found,
        Allowed {
            custom_config: true,
        },
    )
}
