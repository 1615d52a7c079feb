//! The pipeline's kind-specific parts for AtlasMigration.

use contract::Kind;

use super::Applyable;
use crate::api::AtlasMigration;
use crate::plan::{self, ConfigMaps, Plan, PlanError};
use crate::status::Computed;

impl Applyable for AtlasMigration {
    const KIND: Kind = Kind::Migration;

    fn configmap_names(&self) -> Vec<String> {
        plan::migration_configmaps(self)
    }

    fn plan(&self, configmaps: &ConfigMaps) -> Result<Plan, PlanError> {
        plan::migration(self, configmaps)
    }

    fn computed_status(&self) -> Computed {
        self.status.as_ref().map(Computed::from).unwrap_or_default()
    }

    fn status_json(&self, computed: Computed) -> serde_json::Value {
        let previous = self.status.clone().unwrap_or_default();
        serde_json::to_value(computed.into_migration(&previous)).expect("a status serializes")
    }
}
