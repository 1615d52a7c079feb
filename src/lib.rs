//! atlas-operator: a Kubernetes operator that manages database schemas with Atlas, running each
//! apply as a Job in the resource's namespace.

pub mod api;
pub mod cache;
pub mod controller;
pub mod job;
pub mod metrics;
pub mod observe;
pub mod plan;
pub mod reconcile;
pub mod run;
pub mod server;
pub mod status;
