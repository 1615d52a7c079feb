//! The `runner` crate: the binary that runs in every atlas-operator Job pod, next to the Atlas CLI,
//! and the contract between it and the controller.
//!
//! The controller depends on this library for the contract alone, so it keeps few dependencies:
//! whatever is added here is compiled into the controller too.

pub mod contract;
pub mod reason;

pub use contract::{CONTRACT_VERSION, Kind, TERMINATION_MESSAGE_LIMIT};
pub use reason::Reason;
