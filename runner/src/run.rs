//! What every apply shares: the Atlas CLI, the redactor, the working directory, the clock, and
//! turning an outcome into the [`RunResult`] the controller reads.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;
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
    /// `atlas version`, when the binary's build information does not say it: asked in the
    /// background while the apply's own Atlas runs. It is only for the result and for messages.
    version: Mutex<Option<JoinHandle<Option<String>>>>,
    version_read: OnceLock<Option<String>>,
}

impl Run {
    pub fn new(atlas: Atlas, tmp: PathBuf) -> Run {
        Run {
            atlas,
            redactor: Redactor::default(),
            tmp,
            started: Instant::now(),
            version: Mutex::new(None),
            version_read: OnceLock::new(),
        }
    }

    /// The Atlas CLI's version, for [`Run::atlas_version`]: read from the binary, else asked of
    /// it in the background.
    pub fn ask_atlas_version(&mut self) {
        if let Some(version) = self
            .atlas
            .resolved()
            .and_then(|p| crate::buildinfo::version(&p))
        {
            let _ = self.version_read.set(Some(version));
            return;
        }
        let atlas = self.atlas.clone();
        *self.version.get_mut().unwrap() = Some(std::thread::spawn(move || atlas.version()));
    }

    /// The Atlas CLI's version (`v0.13.1`), once [`Run::ask_atlas_version`] has it; None if it
    /// was never asked or Atlas did not say.
    pub fn atlas_version(&self) -> Option<String> {
        self.version_read
            .get_or_init(|| {
                let asked = self.version.lock().unwrap().take();
                asked.and_then(|thread| thread.join().ok().flatten())
            })
            .clone()
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
            atlas_version: self.atlas_version(),
            dev_driver: None,
            unmanaged: vec![],
        }
    }

    pub fn failed(&self, reason: Reason, message: &str, transient: bool) -> RunResult {
        let mut result = self.result(Outcome::Failed, reason, message);
        result.transient = transient;
        result
    }
}
