//! The pipeline's status step: what the controller observed, mapped to the status users and tools
//! read (docs/design.md, "Status, as tools read it"). Pure: the reconciler compares the result with
//! the current status and writes only when they differ, so a reconcile with nothing to do writes
//! nothing.
//!
//! - While a Job is pending or running: `Ready=False` with reason **and** message `Reconciling`
//!   (ArgoCD's health checks read exactly that as Progressing, for both kinds); which Job and why
//!   go in the `Reconciling` condition.
//! - Applied: `Ready=True`/`Applied`, with `observed_hash` and the time of the apply.
//! - Retrying (an attempt failed on something that may pass, and the Job tries again):
//!   `Ready=False` with the runner's reason and message at once, `Reconciling=True` (kstatus: in
//!   progress; ArgoCD: Degraded with that message, Healthy by itself once an attempt succeeds).
//! - Failed: `Ready=False` with the runner's reason and message; `Stalled=True` when retrying
//!   cannot help until the spec (or a ConfigMap) changes.

use contract::Reason;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{AtlasMigrationStatus, AtlasSchemaStatus};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
/// Set (`True`) alongside `Ready=True` when the apply succeeded but left part of the desired
/// schema unapplied; absent otherwise. Neither ArgoCD (Ready only) nor kstatus (Reconciling and
/// Stalled only) reads it, so the resource stays Healthy and Current: the tables were applied.
pub const WARNING: &str = "Warning";
/// [`WARNING`]'s reason: objects of kinds the Job's Atlas build does not manage.
pub const UNMANAGED_OBJECTS: &str = "UnmanagedObjects";

/// What the controller found for the resource's current desired hash.
#[derive(Clone, Debug, PartialEq)]
pub enum Observation {
    /// A Job for the hash is pending or running (or about to be created).
    InProgress { detail: String },
    /// Applied (or found already in place) by the Job for `hash`.
    Applied {
        hash: String,
        message: String,
        /// Unix seconds of the apply.
        applied_at: i64,
        /// Migrations: the version the database is at.
        version: Option<String>,
        /// Objects of the desired schema the Job's Atlas build did not apply, as the runner
        /// named them ([`contract::RunResult::unmanaged`]): the [`WARNING`] condition.
        unmanaged: Vec<String>,
    },
    /// An attempt failed on something that may pass (the database unreachable, busy, or a name
    /// that does not resolve yet) and the Job is trying again with backoff: the failure is shown
    /// at once with its own reason and message, while `Reconciling=True` says retries go on.
    Retrying {
        reason: Reason,
        message: String,
        /// Which Job, which attempt.
        detail: String,
    },
    /// It cannot be applied as it is. `stalled`: nothing but a change to the spec or its inputs
    /// can fix it (as opposed to waiting for an object to appear).
    Failed {
        reason: Reason,
        message: String,
        stalled: bool,
    },
}

/// The status fields both kinds share, computed from an observation.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct CommonStatus {
    pub conditions: Vec<Condition>,
    pub observed_generation: Option<i64>,
    pub observed_hash: Option<String>,
    pub last_applied: Option<i64>,
    pub last_applied_version: Option<String>,
    pub failed: Option<i32>,
}

/// Sets `type_` in `conditions`, keeping `lastTransitionTime` when the status did not change.
fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if status { "True" } else { "False" };
    let previous = conditions.iter().position(|c| c.type_ == type_);
    let last_transition_time = match previous.map(|i| &conditions[i]) {
        Some(existing) if existing.status == status => existing.last_transition_time.clone(),
        _ => now.clone(),
    };
    let condition = Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    };
    match previous {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

/// The [`WARNING`] condition's message for `unmanaged` objects (None: there are none).
pub fn unmanaged_message(unmanaged: &[String]) -> Option<String> {
    if unmanaged.is_empty() {
        return None;
    }
    let more = unmanaged
        .last()
        .is_some_and(|last| last.starts_with("… and "));
    let count = if more {
        format!("more than {}", unmanaged.len() - 1)
    } else {
        unmanaged.len().to_string()
    };
    Some(format!(
        "the desired schema has {count} object(s) that the Job's Atlas build does not manage, \
         so they were not applied (the community build manages tables, not views, sequences, \
         functions or triggers: an Atlas Pro feature upstream): {}",
        unmanaged.join(", ")
    ))
}

/// Whether `status` already says that `hash` is applied, for this generation, and Ready: then
/// the reconcile has nothing to do and writes nothing.
pub fn is_current(status: &CommonStatus, hash: &str, generation: Option<i64>) -> bool {
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == READY && c.status == "True");
    ready
        && status.observed_hash.as_deref() == Some(hash)
        && status.observed_generation == generation
}

/// The next status, from the previous one and what was observed.
/// `attempts` is how many attempts of the observed Job have failed (its `status.failed`; None
/// when the observation is of no Job): `status.failed` shows it while retries go on, as the Go
/// operator's does, and it is 0 again once the resource is applied.
pub fn compute(
    previous: &CommonStatus,
    generation: Option<i64>,
    observation: &Observation,
    attempts: Option<i32>,
    now: Time,
) -> CommonStatus {
    let mut next = previous.clone();
    next.observed_generation = generation;
    let conditions = &mut next.conditions;
    match observation {
        Observation::InProgress { detail } => {
            set(
                conditions,
                READY,
                false,
                RECONCILING,
                RECONCILING,
                generation,
                &now,
            );
            set(
                conditions,
                RECONCILING,
                true,
                RECONCILING,
                detail,
                generation,
                &now,
            );
            set(
                conditions,
                STALLED,
                false,
                RECONCILING,
                "",
                generation,
                &now,
            );
            // Retries going on: the failed attempts so far.
            if let Some(attempts) = attempts.filter(|n| *n > 0) {
                next.failed = Some(attempts);
            }
        }
        Observation::Retrying {
            reason,
            message,
            detail,
        } => {
            let reason = reason.as_str();
            set(conditions, READY, false, reason, message, generation, &now);
            set(
                conditions,
                RECONCILING,
                true,
                reason,
                detail,
                generation,
                &now,
            );
            set(conditions, STALLED, false, reason, "", generation, &now);
            if let Some(attempts) = attempts.filter(|n| *n > 0) {
                next.failed = Some(attempts);
            }
        }
        Observation::Applied {
            hash,
            message,
            applied_at,
            version,
            unmanaged,
        } => {
            let applied = Reason::Applied.as_str();
            set(conditions, READY, true, applied, message, generation, &now);
            match unmanaged_message(unmanaged) {
                Some(warning) => set(
                    conditions,
                    WARNING,
                    true,
                    UNMANAGED_OBJECTS,
                    &warning,
                    generation,
                    &now,
                ),
                // An apply with nothing left out: the warning of an earlier one is gone.
                None => conditions.retain(|c| c.type_ != WARNING),
            }
            set(
                conditions,
                RECONCILING,
                false,
                applied,
                "",
                generation,
                &now,
            );
            set(conditions, STALLED, false, applied, "", generation, &now);
            // The time of the apply changes only with a new apply, not with each observation.
            if next.observed_hash.as_deref() != Some(hash.as_str()) || next.last_applied.is_none() {
                next.last_applied = Some(*applied_at);
            }
            next.observed_hash = Some(hash.clone());
            if version.is_some() {
                next.last_applied_version = version.clone();
            }
            next.failed = Some(0);
        }
        Observation::Failed {
            reason,
            message,
            stalled,
        } => {
            let was_failed = previous
                .conditions
                .iter()
                .any(|c| c.type_ == READY && c.status == "False" && c.reason == reason.as_str());
            set(
                conditions,
                READY,
                false,
                reason.as_str(),
                message,
                generation,
                &now,
            );
            // Waiting for an object (a Secret, a ConfigMap) that may appear: still at work, as
            // kstatus must read it (Reconciling=False and Stalled=False would read as done).
            set(
                conditions,
                RECONCILING,
                !*stalled,
                reason.as_str(),
                if *stalled { "" } else { message },
                generation,
                &now,
            );
            set(
                conditions,
                STALLED,
                *stalled,
                reason.as_str(),
                if *stalled { message } else { "" },
                generation,
                &now,
            );
            // The Job's failed attempts; with no Job (a spec or input the operator refused),
            // one per failure in a row, not one per reconcile.
            match attempts.filter(|n| *n > 0) {
                Some(attempts) => next.failed = Some(attempts),
                None if !was_failed => next.failed = Some(previous.failed.unwrap_or(0) + 1),
                None => {}
            }
        }
    }
    next
}

impl From<&AtlasMigrationStatus> for CommonStatus {
    fn from(status: &AtlasMigrationStatus) -> Self {
        CommonStatus {
            conditions: status.conditions.clone().unwrap_or_default(),
            observed_generation: status.observed_generation,
            observed_hash: status.observed_hash.clone(),
            last_applied: status.last_applied,
            last_applied_version: status.last_applied_version.clone(),
            failed: status.failed,
        }
    }
}

impl From<&AtlasSchemaStatus> for CommonStatus {
    fn from(status: &AtlasSchemaStatus) -> Self {
        CommonStatus {
            conditions: status.conditions.clone().unwrap_or_default(),
            observed_generation: status.observed_generation,
            observed_hash: status.observed_hash.clone(),
            last_applied: status.last_applied,
            last_applied_version: None,
            failed: status.failed,
        }
    }
}

impl CommonStatus {
    /// Into an AtlasMigration's status, keeping the fields the controller does not compute.
    pub fn into_migration(self, previous: &AtlasMigrationStatus) -> AtlasMigrationStatus {
        AtlasMigrationStatus {
            conditions: Some(self.conditions),
            observed_generation: self.observed_generation,
            observed_hash: self.observed_hash,
            last_applied: self.last_applied,
            last_applied_version: self.last_applied_version,
            last_deployment_url: previous.last_deployment_url.clone(),
            approval_url: previous.approval_url.clone(),
            failed: self.failed,
        }
    }

    /// Into an AtlasSchema's status, keeping the fields the controller does not compute.
    pub fn into_schema(self, previous: &AtlasSchemaStatus) -> AtlasSchemaStatus {
        AtlasSchemaStatus {
            conditions: Some(self.conditions),
            observed_generation: self.observed_generation,
            observed_hash: self.observed_hash,
            last_applied: self.last_applied,
            plan_url: previous.plan_url.clone(),
            plan_link: previous.plan_link.clone(),
            failed: self.failed,
        }
    }
}

/// ArgoCD's built-in health assessment for `db.atlasgo.io` kinds, as docs/design.md states it: used
/// by the tests to hold the status to what ArgoCD will conclude.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgoHealth {
    Progressing,
    Healthy,
    Degraded,
}

pub fn argo_health(kind: contract::Kind, conditions: &[Condition]) -> ArgoHealth {
    let Some(ready) = conditions.iter().find(|c| c.type_ == READY) else {
        return ArgoHealth::Progressing;
    };
    if ready.status == "True" {
        return ArgoHealth::Healthy;
    }
    let progressing = match kind {
        contract::Kind::Migration => ready.reason == RECONCILING,
        contract::Kind::Schema => ready.message == RECONCILING || ready.message == "GettingDevDB",
    };
    if progressing {
        ArgoHealth::Progressing
    } else {
        ArgoHealth::Degraded
    }
}

/// How kstatus (Helm 4's `--wait`, Flux, kpt; sigs.k8s.io/cli-utils `pkg/kstatus`) reads a custom
/// resource, restated for the tests: an older `observedGeneration` or `Reconciling=True` is in
/// progress, `Stalled=True` failed, anything else current (kstatus does not read `Ready`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KStatus {
    InProgress,
    Failed,
    Current,
}

pub fn kstatus(generation: Option<i64>, status: &CommonStatus) -> KStatus {
    let is_true = |type_: &str| {
        status
            .conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    };
    let outdated = generation.is_some() && status.observed_generation < generation;
    if outdated || is_true(RECONCILING) {
        KStatus::InProgress
    } else if is_true(STALLED) {
        KStatus::Failed
    } else {
        KStatus::Current
    }
}

#[cfg(test)]
mod tests;
