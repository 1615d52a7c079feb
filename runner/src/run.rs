//! What every apply shares: the Atlas CLI, the redactor, the working directory, the clock, and
//! turning an outcome into the [`RunResult`] the controller reads.

use std::path::PathBuf;
use std::time::Instant;

use crate::atlas::Atlas;
use crate::redact::Redactor;
use contract::Reason;
use contract::{CONTRACT_VERSION, Outcome, RunResult};

pub struct Run {
    pub atlas: Atlas,
    pub redactor: Redactor,
    /// Where the private working directory is made (the pod's `emptyDir` at /tmp).
    pub tmp: PathBuf,
    pub started: Instant,
    pub atlas_version: Option<String>,
}

impl Run {
    pub fn new(atlas: Atlas, tmp: PathBuf) -> Run {
        Run {
            atlas,
            redactor: Redactor::default(),
            tmp,
            started: Instant::now(),
            atlas_version: None,
        }
    }

    /// Prints a line for `kubectl logs`, redacted.
    pub fn log(&self, line: &str) {
        println!("{}", self.redactor.redact(line));
    }

    pub fn result(&self, outcome: Outcome, reason: Reason, message: &str) -> RunResult {
        RunResult {
            version: CONTRACT_VERSION,
            outcome,
            reason,
            message: self.redactor.redact(message),
            transient: false,
            current_version: None,
            target_version: None,
            files_applied: 0,
            statements_applied: 0,
            duration_ms: self.started.elapsed().as_millis() as u64,
            atlas_version: self.atlas_version.clone(),
            dev_driver: None,
        }
    }

    pub fn failed(&self, reason: Reason, message: &str, transient: bool) -> RunResult {
        let mut result = self.result(Outcome::Failed, reason, message);
        result.transient = transient;
        result
    }
}
