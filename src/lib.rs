//! atlas-operator: a Kubernetes operator that manages database schemas with Atlas, running each
//! apply as a Job in the resource's namespace.

pub mod api;
pub mod cache;
pub mod controller;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod runtime;
pub mod server;
