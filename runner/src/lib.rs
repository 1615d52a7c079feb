//! The `runner` crate: the binary that runs in every atlas-operator Job pod, next to the Atlas CLI.
//!
//! It speaks the `contract` crate's task and result, which is all it shares with the controller:
//! [`migrate`] and [`schema`] drive one Atlas apply each, through [`atlas`] (the CLI),
//! [`classify`] (what its errors come to), [`config`] (the `atlas.hcl` it reads), [`inputs`]
//! (the mounted files), [`target`] (the database URLs), [`cloud`] (the Atlas Cloud token) and
//! [`redact`] (keeping secrets out of every output).

pub mod atlas;
pub mod buildinfo;
pub mod classify;
pub mod cloud;
pub mod config;
pub mod confinement;
pub mod custom;
pub mod devdb;
pub mod inputs;
pub mod lint;
pub mod migrate;
pub mod plain;
pub mod redact;
pub mod revisions;
pub mod run;
pub mod schema;
pub mod sum;
pub mod target;
pub mod url;
pub mod wait;
