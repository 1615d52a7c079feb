//! Which kind of resource a Job applies, and everything that follows from the kind alone: its
//! Kubernetes kind, the label value and the runner's subcommand, and the reasons its failures are
//! reported under. One place, so the controller, the Job's labels and the runner cannot disagree.

use serde::{Deserialize, Serialize};

use crate::Reason;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An `AtlasMigration`: `atlas migrate apply` over a migration directory.
    Migration,
    /// An `AtlasSchema`: `atlas schema apply` of a desired schema.
    Schema,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Migration, Kind::Schema];

    /// The Kubernetes kind of the resource.
    pub fn resource_kind(self) -> &'static str {
        match self {
            Kind::Migration => "AtlasMigration",
            Kind::Schema => "AtlasSchema",
        }
    }

    /// The value of the kind label on the resource's Jobs, pods and ConfigMaps (the kind in
    /// lowercase, as `kubectl get atlasmigration` spells it).
    pub fn label(self) -> &'static str {
        match self {
            Kind::Migration => "atlasmigration",
            Kind::Schema => "atlasschema",
        }
    }

    /// The runner's subcommand for this kind.
    pub fn command(self) -> &'static str {
        match self {
            Kind::Migration => "migrate",
            Kind::Schema => "schema",
        }
    }

    /// The reason a problem with the resource's inputs (a missing ConfigMap or Secret, a spec
    /// that cannot be turned into a Job) is reported under.
    pub fn input_reason(self) -> Reason {
        match self {
            Kind::Migration => Reason::ReadingMigrationData,
            Kind::Schema => Reason::ReadSchema,
        }
    }

    /// The reason an apply that failed without saying why (no result) is reported under.
    pub fn failure_reason(self) -> Reason {
        match self {
            Kind::Migration => Reason::Migrating,
            Kind::Schema => Reason::ApplyingSchema,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_serializes_in_lowercase() {
        assert_eq!(
            serde_json::to_string(&Kind::Migration).unwrap(),
            "\"migration\""
        );
        assert_eq!(
            serde_json::from_str::<Kind>("\"schema\"").unwrap(),
            Kind::Schema
        );
    }

    #[test]
    fn names_follow_from_the_kind() {
        assert_eq!(Kind::Schema.resource_kind(), "AtlasSchema");
        for kind in Kind::ALL {
            assert_eq!(kind.label(), kind.resource_kind().to_lowercase());
        }
        assert_eq!(Kind::Migration.command(), "migrate");
        assert_eq!(Kind::Schema.input_reason(), Reason::ReadSchema);
        assert_eq!(Kind::Migration.failure_reason(), Reason::Migrating);
    }
}
