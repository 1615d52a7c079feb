//! The controller↔runner contract: one versioned definition shared by both binaries, and by
//! nothing else of either.
//!
//! The controller renders a [`Task`] into the Job's pod as the `RUNNER_TASK` environment
//! variable (JSON); the runner answers with a [`RunResult`] in the termination message. Neither
//! carries a secret value: secrets reach the pod as environment variables from `secretKeyRef`,
//! and the contract names those variables ([`Value::Env`]). Large inputs (a migration directory,
//! a desired schema) are mounted files, named here by path, never inlined: Linux caps one
//! environment string at 128 KiB.
//!
//! Both sides read the other's JSON with [`Task::decode`] / [`RunResult::decode`], which refuse a
//! [`CONTRACT_VERSION`] they do not know instead of guessing at its fields.

mod decode;
mod digest;
mod kind;
mod reason;
mod result;
mod task;

pub use decode::DecodeError;
pub use digest::digest_files;
pub use kind::Kind;
pub use reason::Reason;
pub use result::{Outcome, RunResult, UNMANAGED_LISTED, cut_with_marker};
pub use task::{
    ATLAS_TOKEN_ENV, Cloud, Credentials, Desired, ExecOrder, MigrateApply, SchemaApply, Target,
    Task, TxMode, Value, Var, Work,
};

/// Bumped whenever a change to the contract would make an older runner misread a newer
/// controller's task (or the other way round). Both sides refuse a version they do not know.
///
/// v2: the work is one enum (`work.kind`), exec order and tx mode are enums.
/// v3: a target named only by a custom project file (`Target::FromConfig`).
/// v4: `lintDestructive` of a migration (a v3 runner would apply the pending files unchecked).
pub const CONTRACT_VERSION: u32 = 4;

/// The environment variable of the runner's container that holds the [`Task`] as JSON.
pub const TASK_ENV: &str = "RUNNER_TASK";

/// The kubelet keeps at most this many bytes of a container's termination message (it reads the
/// tail of the file), so the runner's result must fit in it whole.
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;

/// Exit codes. The Job's `podFailurePolicy` fails the Job at once on [`EXIT_DEFINITIVE`] (bad SQL,
/// a lint violation, a checksum mismatch: retrying cannot help) and lets the Job's backoff retry
/// [`EXIT_TRANSIENT`] (connection refused, a lock held by another apply).
pub const EXIT_OK: u8 = 0;
pub const EXIT_DEFINITIVE: u8 = 3;
pub const EXIT_TRANSIENT: u8 = 4;
