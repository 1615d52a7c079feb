//! What the pipeline needs of a kind, and the two kinds that have it. Everything else of the
//! pipeline is written once for both.

use contract::Kind;
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::dereference::{self, Dereferenced};
use super::status::CommonStatus;
use super::validate::{self, Plan, PlanError};
use crate::api::{AtlasMigration, AtlasSchema};

/// An `AtlasMigration` or an `AtlasSchema`, as the pipeline sees it.
pub trait AtlasResource:
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
    type Spec: Serialize;
    fn spec(&self) -> &Self::Spec;
    /// The ConfigMaps the spec names: what the dereference step fetches, and what the
    /// controller's reverse index maps back to the resource.
    fn configmap_names(&self) -> Vec<String>;
    /// The kind's own rules of the validate step.
    fn validate(&self, found: &Dereferenced) -> Result<Plan, PlanError>;
    /// The status fields both kinds share, as they are now.
    fn common_status(&self) -> CommonStatus;
    /// The status to write, as JSON for a merge patch of `/status`.
    fn status_json(&self, status: CommonStatus) -> serde_json::Value;
}

impl AtlasResource for AtlasMigration {
    const KIND: Kind = Kind::Migration;
    type Spec = crate::api::AtlasMigrationSpec;

    fn spec(&self) -> &Self::Spec {
        &self.spec
    }

    fn configmap_names(&self) -> Vec<String> {
        dereference::migration_configmaps(self)
    }

    fn validate(&self, found: &Dereferenced) -> Result<Plan, PlanError> {
        validate::migration(self, found)
    }

    fn common_status(&self) -> CommonStatus {
        self.status
            .as_ref()
            .map(CommonStatus::from)
            .unwrap_or_default()
    }

    fn status_json(&self, status: CommonStatus) -> serde_json::Value {
        let previous = self.status.clone().unwrap_or_default();
        serde_json::to_value(status.into_migration(&previous)).expect("a status serializes")
    }
}

impl AtlasResource for AtlasSchema {
    const KIND: Kind = Kind::Schema;
    type Spec = crate::api::AtlasSchemaSpec;

    fn spec(&self) -> &Self::Spec {
        &self.spec
    }

    fn configmap_names(&self) -> Vec<String> {
        dereference::schema_configmaps(self)
    }

    fn validate(&self, found: &Dereferenced) -> Result<Plan, PlanError> {
        validate::schema(self, found)
    }

    fn common_status(&self) -> CommonStatus {
        self.status
            .as_ref()
            .map(CommonStatus::from)
            .unwrap_or_default()
    }

    fn status_json(&self, status: CommonStatus) -> serde_json::Value {
        let previous = self.status.clone().unwrap_or_default();
        serde_json::to_value(status.into_schema(&previous)).expect("a status serializes")
    }
}
