//! What the runner reports back, in the termination message.

use serde::{Deserialize, Serialize};

use crate::{EXIT_DEFINITIVE, EXIT_OK, EXIT_TRANSIENT, Reason, TERMINATION_MESSAGE_LIMIT};

/// How an apply ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Changes were applied.
    Applied,
    /// The database was already as desired.
    NoOp,
    /// Nothing was done: the apply needs a dev database, and this Job found which one
    /// ([`RunResult::dev_driver`]); the controller's next Job brings it. Not a failure, so the
    /// Job completes rather than showing `Failed` in `kubectl get jobs`.
    NeedsDevDatabase,
    Failed,
}

/// What the runner reports back, in the termination message (at most
/// [`TERMINATION_MESSAGE_LIMIT`] bytes once encoded).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunResult {
    pub version: u32,
    pub outcome: Outcome,
    /// `Applied`, or why it failed (the seed README's reasons).
    pub reason: Reason,
    /// For a person: what happened or what to fix. Redacted, and cut to fit.
    pub message: String,
    /// Whether retrying may help (a connection refused, a lock held elsewhere).
    #[serde(default)]
    pub transient: bool,
    /// Migrations: the database's version before and after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<String>,
    #[serde(default)]
    pub files_applied: u32,
    #[serde(default)]
    pub statements_applied: u32,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub atlas_version: Option<String>,
    /// Set with `GettingDevDB` when the apply needs a dev database and none was given: the
    /// target's driver (`postgres`, `mysql`, `maria`), so the controller can add one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_driver: Option<String>,
    /// Objects of the desired schema that this Atlas build did not apply because it does not
    /// manage their kind (the community build's views, sequences, functions, triggers, …; an
    /// Atlas Pro feature upstream), each as `<kind> <schema>.<name>`; at most
    /// [`UNMANAGED_LISTED`], the last then saying how many more. Empty otherwise, and from a
    /// runner that predates it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmanaged: Vec<String>,
}

/// How many unmanaged objects a result names, so that it fits a termination message.
pub const UNMANAGED_LISTED: usize = 20;

impl RunResult {
    pub fn exit_code(&self) -> u8 {
        match (self.outcome, self.transient) {
            (Outcome::Failed, true) => EXIT_TRANSIENT,
            (Outcome::Failed, false) => EXIT_DEFINITIVE,
            _ => EXIT_OK,
        }
    }

    /// The JSON written to the termination message: the message is cut (with a visible marker)
    /// until the whole fits in [`TERMINATION_MESSAGE_LIMIT`] bytes, so it is always valid JSON.
    pub fn encode(&self) -> String {
        let json = serde_json::to_string(self).expect("a result serializes");
        if json.len() <= TERMINATION_MESSAGE_LIMIT {
            return json;
        }
        let overhead = json.len() - serde_json::to_string(&self.message).unwrap().len();
        let mut budget = TERMINATION_MESSAGE_LIMIT.saturating_sub(overhead + 64);
        loop {
            let mut cut = self.clone();
            cut.message = cut_with_marker(&self.message, budget);
            let json = serde_json::to_string(&cut).expect("a result serializes");
            if json.len() <= TERMINATION_MESSAGE_LIMIT || budget == 0 {
                return json;
            }
            // JSON escapes made the text longer than its bytes: cut harder.
            budget = budget.saturating_sub(json.len() - TERMINATION_MESSAGE_LIMIT + 16);
        }
    }
}

/// Keeps the start and the end of `text` (where Atlas puts the cause) within about `budget`
/// bytes, with a marker saying how much was cut.
pub fn cut_with_marker(text: &str, budget: usize) -> String {
    if text.len() <= budget {
        return text.to_string();
    }
    let marker_room = 40;
    let keep = budget.saturating_sub(marker_room);
    let head_len = floor_char_boundary(text, keep / 2);
    let tail_start = ceil_char_boundary(text, text.len() - (keep - keep / 2));
    let cut = tail_start - head_len;
    format!(
        "{}… [{cut} bytes cut] …{}",
        &text[..head_len],
        &text[tail_start..]
    )
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    index = index.min(text.len());
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

fn ceil_char_boundary(text: &str, mut index: usize) -> usize {
    while index < text.len() && !text.is_char_boundary(index) {
        index += 1;
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CONTRACT_VERSION;

    fn result(message: String) -> RunResult {
        RunResult {
            version: CONTRACT_VERSION,
            outcome: Outcome::Failed,
            reason: Reason::Migrating,
            message,
            transient: false,
            current_version: Some("20230316085611".into()),
            target_version: Some("20230316085612".into()),
            files_applied: 1,
            statements_applied: 2,
            duration_ms: 1234,
            atlas_version: Some("v0.13.1".into()),
            dev_driver: None,
            unmanaged: vec![],
        }
    }

    #[test]
    fn a_short_result_is_written_whole() {
        let r = result("executing statement \"create tabel\"".into());
        let json = r.encode();
        assert_eq!(RunResult::decode(&json).unwrap(), r);
    }

    #[test]
    fn unmanaged_objects_travel_and_are_absent_when_there_are_none() {
        let mut r = result("applied".into());
        assert!(!r.encode().contains("unmanaged"), "{}", r.encode());
        r.unmanaged = vec!["view app.active_users".into()];
        let json = r.encode();
        assert!(
            json.contains(r#""unmanaged":["view app.active_users"]"#),
            "{json}"
        );
        assert_eq!(RunResult::decode(&json).unwrap(), r);
    }

    #[test]
    fn a_200_kib_message_is_cut_to_fit_with_a_marker() {
        let message = format!("start {} the cause at the end", "x".repeat(200 * 1024));
        let json = result(message).encode();
        assert!(json.len() <= TERMINATION_MESSAGE_LIMIT, "{}", json.len());
        let back = RunResult::decode(&json).unwrap();
        assert!(back.message.starts_with("start "));
        assert!(back.message.ends_with("the cause at the end"));
        assert!(back.message.contains("bytes cut]"));
        assert_eq!(back.files_applied, 1);
    }

    #[test]
    fn escapes_and_multibyte_text_still_fit() {
        // Quotes and control characters double in JSON; multibyte characters must not be split.
        let message = "\"\n\u{1}é✓".repeat(5000);
        let json = result(message).encode();
        assert!(json.len() <= TERMINATION_MESSAGE_LIMIT, "{}", json.len());
        RunResult::decode(&json).unwrap();
    }

    #[test]
    fn exit_codes_separate_definitive_from_transient() {
        let mut r = result(String::new());
        assert_eq!(r.exit_code(), EXIT_DEFINITIVE);
        r.transient = true;
        assert_eq!(r.exit_code(), EXIT_TRANSIENT);
        r.outcome = Outcome::NoOp;
        assert_eq!(r.exit_code(), EXIT_OK);
    }
}
