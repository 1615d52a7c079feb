//! Condition reasons, shared by the runner (which reports why an apply failed) and the controller
//! (which writes them into `status.conditions`).
//!
//! The names are the Go operator's, so dashboards, alerts and ArgoCD health checks written for it
//! keep working: ArgoCD treats `Ready=False` as Progressing only for `Reconciling` (AtlasMigration)
//! or the message `Reconciling`/`GettingDevDB` (AtlasSchema), and as Degraded otherwise.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    /// A Job is pending or running; the outcome is not known yet.
    Reconciling,
    /// The desired state was applied (or was already in place).
    Applied,
    /// AtlasSchema: the desired schema or the database credentials could not be read.
    ReadSchema,
    /// A dev database, needed to normalise the schema or plan the change, is not available.
    #[serde(rename = "GettingDevDB")]
    GettingDevDb,
    /// AtlasSchema: the first apply to a database would make destructive changes.
    VerifyingFirstRun,
    /// AtlasSchema: the planned change violates the lint policy (for example it drops a table).
    LintPolicyError,
    /// AtlasSchema: applying the planned change to the database failed.
    ApplyingSchema,
    /// AtlasMigration: the migration directory or the database credentials could not be read.
    ReadingMigrationData,
    /// AtlasMigration: a protected flow (migrating down) was refused.
    ProtectedFlowError,
    /// AtlasMigration: the apply waits for an approval on Atlas Cloud.
    ApprovalPending,
    /// AtlasMigration: applying a migration file failed.
    Migrating,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Reason::Reconciling,
        Reason::Applied,
        Reason::ReadSchema,
        Reason::GettingDevDb,
        Reason::VerifyingFirstRun,
        Reason::LintPolicyError,
        Reason::ApplyingSchema,
        Reason::ReadingMigrationData,
        Reason::ProtectedFlowError,
        Reason::ApprovalPending,
        Reason::Migrating,
    ];

    /// The reason as written in a condition (CamelCase, as the Go operator spells it).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Reconciling => "Reconciling",
            Reason::Applied => "Applied",
            Reason::ReadSchema => "ReadSchema",
            Reason::GettingDevDb => "GettingDevDB",
            Reason::VerifyingFirstRun => "VerifyingFirstRun",
            Reason::LintPolicyError => "LintPolicyError",
            Reason::ApplyingSchema => "ApplyingSchema",
            Reason::ReadingMigrationData => "ReadingMigrationData",
            Reason::ProtectedFlowError => "ProtectedFlowError",
            Reason::ApprovalPending => "ApprovalPending",
            Reason::Migrating => "Migrating",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_names_match_condition_names() {
        for reason in Reason::ALL {
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(json, format!("\"{}\"", reason.as_str()));
            assert_eq!(serde_json::from_str::<Reason>(&json).unwrap(), reason);
        }
    }

    #[test]
    fn reasons_are_the_go_operators_names() {
        // The seed README's tables; a rename here silently breaks users' alerts.
        let names: Vec<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        for expected in [
            "Reconciling",
            "ReadSchema",
            "GettingDevDB",
            "VerifyingFirstRun",
            "LintPolicyError",
            "ApplyingSchema",
            "ReadingMigrationData",
            "ProtectedFlowError",
            "ApprovalPending",
            "Migrating",
        ] {
            assert!(names.contains(&expected), "missing reason {expected}");
        }
    }
}
