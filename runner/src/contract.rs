//! The controller↔runner contract: one versioned definition shared by both binaries.
//!
//! Only the parts both sides already agree on live here; the job description and the result
//! carried in the termination message are added with the runner's apply commands.

use serde::{Deserialize, Serialize};

/// Bumped whenever a change to the contract would make an older runner misread a newer
/// controller's job description (or the other way round). Both sides refuse a version they do not
/// know instead of guessing.
pub const CONTRACT_VERSION: u32 = 1;

/// The kubelet keeps at most this many bytes of a container's termination message (it reads the
/// tail of the file), so the runner's result must fit in it whole.
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;

/// Which kind of resource a Job applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An `AtlasMigration`: `atlas migrate apply` over a migration directory.
    Migration,
    /// An `AtlasSchema`: `atlas schema apply` of a desired schema.
    Schema,
}

impl Kind {
    /// The Kubernetes kind of the resource this Job belongs to.
    pub fn resource_kind(self) -> &'static str {
        match self {
            Kind::Migration => "AtlasMigration",
            Kind::Schema => "AtlasSchema",
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
        assert_eq!(Kind::Schema.resource_kind(), "AtlasSchema");
    }
}
