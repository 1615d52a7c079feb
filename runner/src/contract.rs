//! The controller↔runner contract: one versioned definition shared by both binaries.
//!
//! The controller renders a [`Job`] into the Job's pod as the `RUNNER_JOB` environment variable
//! (JSON); the runner answers with a [`RunResult`] in the termination message. Neither carries a
//! secret value: secrets reach the pod as environment variables from `secretKeyRef`, and the
//! contract names those variables ([`Value::Env`]). Large inputs (a migration directory, a
//! desired schema) are mounted files, named here by path, never inlined: Linux caps one
//! environment string at 128 KiB.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::reason::Reason;

/// Bumped whenever a change to the contract would make an older runner misread a newer
/// controller's job description (or the other way round). Both sides refuse a version they do not
/// know instead of guessing.
pub const CONTRACT_VERSION: u32 = 1;

/// The environment variable that holds the [`Job`] as JSON.
pub const JOB_ENV: &str = "RUNNER_JOB";

/// The kubelet keeps at most this many bytes of a container's termination message (it reads the
/// tail of the file), so the runner's result must fit in it whole.
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;

/// Exit codes. The Job's `podFailurePolicy` fails the Job at once on [`EXIT_DEFINITIVE`] (bad SQL,
/// a lint violation, a checksum mismatch: retrying cannot help) and lets the Job's backoff retry
/// [`EXIT_TRANSIENT`] (connection refused, a lock held by another apply).
pub const EXIT_OK: u8 = 0;
pub const EXIT_DEFINITIVE: u8 = 3;
pub const EXIT_TRANSIENT: u8 = 4;

/// Which kind of resource a Job applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An `AtlasMigration`: `atlas migrate apply` over a migration directory.
    Migration,
    /// An `AtlasSchema`: `atlas schema apply` of a desired schema.
    Schema,
}

impl Kind {
    /// The Kubernetes kind of the resource this Job belongs to.
    pub fn resource_kind(self) -> &'static str {
        match self {
            Kind::Migration => "AtlasMigration",
            Kind::Schema => "AtlasSchema",
        }
    }
}

/// A value the runner reads: given in the contract (not secret), or from an environment variable
/// of the pod (set from a Secret or ConfigMap key by the Job's spec).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Value {
    Literal(String),
    Env(String),
}

/// Where the target database is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Target {
    /// A whole Atlas URL, in an environment variable (it may hold a password).
    UrlEnv(String),
    /// URL parts, assembled by the runner with correct percent-encoding.
    Credentials(Credentials),
}

/// The parts of a database URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    pub scheme: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Value>,
    /// Only ever an environment variable: a password is never written into a Job's spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    pub host: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
}

/// An input variable of the project configuration (`--var key=value`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Var {
    pub key: String,
    pub value: Value,
}

/// What the controller asks one Job's runner to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// [`CONTRACT_VERSION`] of the controller that rendered the Job.
    pub version: u32,
    pub kind: Kind,
    /// `namespace/name` of the resource, for logs and messages.
    pub resource: String,
    pub target: Target,
    /// The dev database's URL, in an environment variable. None: the runner needs none (a
    /// migration) or uses an in-memory SQLite database (a SQLite target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_url_env: Option<String>,
    /// The dev database is the pod's own sidecar, which may still be starting: wait this long
    /// for it to accept connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_wait_seconds: Option<u64>,
    /// The env of the Atlas project file the runner writes (`k8s` unless the spec names one).
    pub env_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vars: Vec<Var>,
    /// The environment variable holding a user's own `atlas.hcl` (`spec.config` or
    /// `spec.configFrom`), merged with the generated one; set only when the operator allows
    /// custom configurations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_config_env: Option<String>,
    /// [`digest_files`] of the mounted inputs, as the controller hashed them: the runner refuses
    /// inputs that changed since (a ConfigMap edited after the Job was made).
    pub inputs_digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationJob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<SchemaJob>,
}

/// The options of `atlas migrate apply`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationJob {
    /// The mounted migration directory (a ConfigMap volume: its files are symlinks into `..data/`).
    pub dir: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revisions_schema: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    /// `linear`, `linear-skip` or `non-linear`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_order: Option<String>,
    /// `file`, `all` or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_mode: Option<String>,
    /// `protectedFlows.migrateDown.allow`.
    #[serde(default)]
    pub allow_migrate_down: bool,
}

/// The options of `atlas schema apply`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaJob {
    /// The desired schema: a mounted file (`….sql` or `….hcl`) or, for `schema.url`, a URL.
    pub desired: Desired,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schemas: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_mode: Option<String>,
    /// `policy.lint.destructive.error`: refuse a plan that drops a schema, table or column.
    #[serde(default)]
    pub lint_destructive: bool,
    /// `policy.diff.skip`: the kinds of change left out of the plan (`drop_index`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip: Vec<String>,
    /// `policy.diff.concurrent_index`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_index_create: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_index_drop: Option<bool>,
}

/// Where the desired schema of an AtlasSchema is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Desired {
    /// A mounted file; its extension (`.sql` or `.hcl`) says its language.
    File(String),
    /// A URL Atlas reads (`atlas://…`).
    Url(String),
}

impl Default for Desired {
    fn default() -> Self {
        Desired::File(String::new())
    }
}

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
}

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

/// The digest of a set of input files: sha256 over each file's name and content, in name order.
/// The controller computes it from the ConfigMap data it mounts; the runner from the mounted files.
pub fn digest_files<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut files: Vec<_> = files.into_iter().collect();
    files.sort_by_key(|(name, _)| *name);
    let mut hasher = Sha256::new();
    for (name, content) in files {
        hasher.update((name.len() as u64).to_be_bytes());
        hasher.update(name.as_bytes());
        hasher.update((content.len() as u64).to_be_bytes());
        hasher.update(content);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        }
    }

    #[test]
    fn kind_serializes_in_lowercase() {
        assert_eq!(
            serde_json::to_string(&Kind::Migration).unwrap(),
            "\"migration\""
        );
        assert_eq!(
            serde_json::from_str::<Kind>("\"schema\"").unwrap(),
            Kind::Schema
        );
        assert_eq!(Kind::Schema.resource_kind(), "AtlasSchema");
    }

    #[test]
    fn a_short_result_is_written_whole() {
        let r = result("executing statement \"create tabel\"".into());
        let json = r.encode();
        assert_eq!(serde_json::from_str::<RunResult>(&json).unwrap(), r);
    }

    #[test]
    fn a_200_kib_message_is_cut_to_fit_with_a_marker() {
        let message = format!("start {} the cause at the end", "x".repeat(200 * 1024));
        let json = result(message).encode();
        assert!(json.len() <= TERMINATION_MESSAGE_LIMIT, "{}", json.len());
        let back: RunResult = serde_json::from_str(&json).unwrap();
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
        serde_json::from_str::<RunResult>(&json).unwrap();
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

    #[test]
    fn digest_depends_on_names_and_contents_not_order() {
        let a = digest_files([("1.sql", &b"a"[..]), ("atlas.sum", &b"b"[..])]);
        let b = digest_files([("atlas.sum", &b"b"[..]), ("1.sql", &b"a"[..])]);
        assert_eq!(a, b);
        assert_ne!(
            a,
            digest_files([("1.sql", &b"a"[..]), ("atlas.sum", &b"c"[..])])
        );
        // Moving bytes between name and content changes the digest.
        assert_ne!(
            digest_files([("ab", &b""[..])]),
            digest_files([("a", &b"b"[..])])
        );
    }

    #[test]
    fn job_round_trips_and_names_no_secret_value() {
        let job = Job {
            version: CONTRACT_VERSION,
            kind: Kind::Migration,
            resource: "default/atlasmigration-sample".into(),
            target: Target::Credentials(Credentials {
                scheme: "postgres".into(),
                user: Some(Value::Literal("root".into())),
                password_env: Some("ATLAS_PASSWORD".into()),
                host: Value::Env("ATLAS_HOST".into()),
                port: Some(5432),
                database: Some("postgres".into()),
                parameters: [("sslmode".to_string(), "disable".to_string())].into(),
            }),
            dev_url_env: None,
            dev_wait_seconds: None,
            env_name: "k8s".into(),
            vars: vec![],
            custom_config_env: None,
            inputs_digest: "abc".into(),
            migration: Some(MigrationJob {
                dir: "/migrations".into(),
                ..Default::default()
            }),
            schema: None,
        };
        let json = serde_json::to_string(&job).unwrap();
        assert_eq!(serde_json::from_str::<Job>(&json).unwrap(), job);
        assert!(
            json.contains("\"passwordEnv\":\"ATLAS_PASSWORD\""),
            "{json}"
        );
    }
}
