//! Reading the other side's JSON. The version is read first, on its own, so that a task or
//! result of a contract version this side does not know is refused as such ("the images are out
//! of step") rather than half-read into today's fields or reported as a parse error.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::{CONTRACT_VERSION, RunResult, Task};

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a contract document: {0}")]
    NotContract(String),
    #[error(
        "it is for contract v{found}, this side speaks v{CONTRACT_VERSION}: the operator and \
         runner images are out of step"
    )]
    UnknownVersion { found: u32 },
    #[error("a contract v{CONTRACT_VERSION} document that does not fit it: {0}")]
    Malformed(String),
}

#[derive(Deserialize)]
struct Versioned {
    version: u32,
}

fn decode<T: DeserializeOwned>(text: &str) -> Result<T, DecodeError> {
    let Versioned { version } = serde_json::from_str(text.trim())
        .map_err(|err| DecodeError::NotContract(err.to_string()))?;
    if version != CONTRACT_VERSION {
        return Err(DecodeError::UnknownVersion { found: version });
    }
    serde_json::from_str(text.trim()).map_err(|err| DecodeError::Malformed(err.to_string()))
}

impl Task {
    /// The task from the JSON of [`crate::TASK_ENV`].
    pub fn decode(text: &str) -> Result<Task, DecodeError> {
        decode(text)
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a task serializes")
    }
}

impl RunResult {
    /// The result from a termination message.
    pub fn decode(text: &str) -> Result<RunResult, DecodeError> {
        decode(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Outcome, Reason};

    fn task_json() -> serde_json::Value {
        serde_json::json!({
            "version": CONTRACT_VERSION,
            "resource": "default/m",
            "target": {"urlEnv": "ATLAS_TARGET_URL"},
            "envName": "k8s",
            "inputsDigest": "abc",
            "work": {"kind": "migration", "dir": "/atlas/inputs"}
        })
    }

    #[test]
    fn a_task_of_this_version_decodes() {
        let task = Task::decode(&task_json().to_string()).unwrap();
        assert_eq!(task.resource, "default/m");
        assert_eq!(Task::decode(&task.encode()).unwrap(), task);
    }

    #[test]
    fn a_task_field_this_side_does_not_know_is_refused_not_ignored() {
        // A newer controller's policy at this contract version (a bump forgotten): skipping
        // it would apply what the policy refuses, so the task is refused instead. Fields off
        // by default are not written, so only a task that uses a new setting meets this.
        for (place, field) in [
            ("work", "lintSomethingNew"),
            ("task", "approvePlan"),
            ("target", "sslRootCert"),
        ] {
            let mut json = task_json();
            match place {
                "work" => json["work"][field] = true.into(),
                "task" => json[field] = true.into(),
                _ => {
                    json["target"] = serde_json::json!({"credentials": {
                        "scheme": "postgres", "host": {"literal": "db"}, field: "x"}})
                }
            }
            let err = Task::decode(&json.to_string()).unwrap_err();
            assert!(
                matches!(&err, DecodeError::Malformed(text) if text.contains(field)),
                "{place}: {err}"
            );
        }
        // The known fields of each kind still read.
        let mut json = task_json();
        json["work"] = serde_json::json!({"kind": "schema", "desired": {"file": "/s.sql"},
            "lintDestructive": true, "lintDataDepend": true});
        assert!(Task::decode(&json.to_string()).is_ok());
    }

    #[test]
    fn an_unknown_version_is_refused_before_its_fields_are_read() {
        // A newer controller's task whose fields this runner would misread.
        let mut json = task_json();
        json["version"] = (CONTRACT_VERSION + 1).into();
        json["work"] = serde_json::json!({"kind": "driftcheck", "every": "1h"});
        let err = Task::decode(&json.to_string()).unwrap_err();
        assert_eq!(
            err,
            DecodeError::UnknownVersion {
                found: CONTRACT_VERSION + 1
            }
        );
        assert!(err.to_string().contains("out of step"), "{err}");

        // An older runner's result is refused the same way, even when it would parse.
        let result = RunResult {
            version: 1,
            outcome: Outcome::Applied,
            reason: Reason::Applied,
            message: String::new(),
            transient: false,
            current_version: None,
            target_version: None,
            files_applied: 0,
            statements_applied: 0,
            duration_ms: 1,
            atlas_version: None,
            dev_driver: None,
            unmanaged: vec![],
        };
        let json = serde_json::to_string(&result).unwrap();
        assert_eq!(
            RunResult::decode(&json).unwrap_err(),
            DecodeError::UnknownVersion { found: 1 }
        );
    }

    #[test]
    fn text_that_is_not_a_contract_document_says_so() {
        // FallbackToLogsOnError puts the log's tail in the termination message.
        let err = RunResult::decode("panicked at src/main.rs:1").unwrap_err();
        assert!(matches!(err, DecodeError::NotContract(_)), "{err:?}");
        let mut json = task_json();
        json["work"]["kind"] = "driftcheck".into();
        let err = Task::decode(&json.to_string()).unwrap_err();
        assert!(matches!(err, DecodeError::Malformed(_)), "{err:?}");
    }
}
