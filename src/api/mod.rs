//! The `db.atlasgo.io/v1alpha1` API: `AtlasSchema` and `AtlasMigration`, drop-in compatible with
//! the Go Atlas Operator's resources (same group, version, kinds and JSON field names).

pub mod common;
pub mod migration;
pub mod schema;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use common::{
    Credentials, DevDatabaseSpec, DevDb, DevDbMetadata, JobPodSpec, ProjectConfigSpec, SecretRef,
    TargetSpec, TokenFrom, ValueFrom, Variable,
};
pub use migration::{AtlasMigration, AtlasMigrationSpec, AtlasMigrationStatus, Dir, ExecOrder};
pub use schema::{AtlasSchema, AtlasSchemaSpec, AtlasSchemaStatus, Policy, Schema, TxMode};

/// The API group both kinds belong to.
pub const GROUP: &str = "db.atlasgo.io";

/// The CustomResourceDefinitions of every kind the operator serves.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        without_nullable(AtlasMigration::crd()),
        without_nullable(AtlasSchema::crd()),
    ]
}

/// kube-derive marks every `Option` field `nullable: true`. The Go operator's CRDs do not, and a
/// nullable field keeps an explicit `null` that the validation rules' `has()` then counts as set;
/// without it the API server prunes the null, so "absent" has one meaning for the rules, for
/// `kubectl explain` and for our `Option`s.
fn without_nullable(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                map.remove("nullable");
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(&crd).expect("a CRD serializes to JSON");
    strip(&mut value);
    serde_json::from_value(value).expect("a CRD without nullable is still a CRD")
}

/// Errors turning the CRDs into YAML.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    #[error("serializing CRD {name} to YAML: {source}")]
    Yaml {
        name: String,
        #[source]
        source: serde_saphyr::SerializeError,
    },
}

/// One YAML document per CRD, named as the Go operator names its files
/// (`db.atlasgo.io_<plural>.yaml`), in the order of [`crds`].
pub fn crd_files() -> Result<Vec<(String, String)>, CrdError> {
    crds()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let body = serde_saphyr::to_string(&crd).map_err(|source| CrdError::Yaml {
                name: name.clone(),
                source,
            })?;
            let file = format!("{GROUP}_{}.yaml", crd.spec.names.plural);
            let yaml = format!(
                "# Generated from the Rust types in src/api by `cargo xtask crds`; do not edit.\n\
                 ---\n{body}"
            );
            Ok((file, yaml))
        })
        .collect()
}
