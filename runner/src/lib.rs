//! The `runner` crate: the binary that runs in every atlas-operator Job pod, next to the Atlas CLI,
//! and the contract between it and the controller.
//!
//! The controller depends on this library for [`contract`] and [`reason`]; the rest is the
//! runner's own: [`migrate`] and [`schema`] drive one Atlas apply each, through [`atlas`] (the
//! CLI), [`config`] (the `atlas.hcl` it reads), [`inputs`] (the mounted files), [`target`] (the
//! database URLs) and [`redact`] (keeping secrets out of every output).

pub mod atlas;
pub mod config;
pub mod contract;
pub mod custom;
pub mod inputs;
pub mod lint;
pub mod migrate;
pub mod reason;
pub mod redact;
pub mod run;
pub mod schema;
pub mod sum;
pub mod target;
pub mod url;
pub mod wait;

pub use contract::{CONTRACT_VERSION, Kind, TERMINATION_MESSAGE_LIMIT};
pub use reason::Reason;
