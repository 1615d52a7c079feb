//! The API server's audit log (one JSON event per request, `Metadata` level), read from where the
//! last read stopped. Other agents' tests write to the same log at the same time, with operators
//! of the same service account, so every count made from it (`timeline`) is narrowed to this
//! run's namespaces and Lease.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

pub mod timeline;

/// One request, as the audit log records it.
#[derive(Clone, Debug)]
pub struct Request {
    pub verb: String,
    pub resource: String,
    /// Empty when the request was not on a subresource.
    pub subresource: String,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    /// Empty for lists and watches.
    pub name: String,
    /// Who acted: the impersonated user when there was one (the operator's kubeconfig
    /// impersonates its service account).
    pub user: String,
    pub code: i64,
    /// When the API server finished answering (for a watch: when it started answering).
    pub at: jiff::Timestamp,
}

impl Request {
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }

    /// `verb resource[/subresource] namespace/name`, for a report.
    pub fn describe(&self) -> String {
        let resource = if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        };
        format!(
            "{} {resource} {}/{} at {}",
            self.verb, self.namespace, self.name, self.at
        )
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    stage: String,
    verb: String,
    #[serde(default)]
    user: Option<User>,
    #[serde(default)]
    impersonated_user: Option<User>,
    #[serde(default)]
    object_ref: Option<ObjectRef>,
    #[serde(default)]
    response_status: Option<ResponseStatus>,
    stage_timestamp: String,
}

#[derive(Deserialize)]
struct User {
    #[serde(default)]
    username: String,
}

#[derive(Deserialize)]
struct ObjectRef {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    subresource: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct ResponseStatus {
    #[serde(default)]
    code: i64,
}

/// A reader of the audit log that remembers how far it got.
pub struct AuditLog {
    path: PathBuf,
    offset: u64,
}

impl AuditLog {
    /// Starts at the log's current end: only requests made from now on are read.
    pub fn from_now(path: &Path) -> Result<AuditLog> {
        let offset = std::fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        Ok(AuditLog {
            path: path.to_path_buf(),
            offset,
        })
    }

    /// The requests logged since the last read whose line mentions `needle` (a cheap filter
    /// before parsing: every name of this run holds it). A line still being written is left for
    /// the next read.
    pub fn read_new(&mut self, needle: &str) -> Result<Vec<Request>> {
        let mut file =
            File::open(&self.path).with_context(|| format!("opening {}", self.path.display()))?;
        file.seek(SeekFrom::Start(self.offset))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut requests = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            let read = reader.read_line(&mut line)?;
            if read == 0 || !line.ends_with('\n') {
                break;
            }
            self.offset += read as u64;
            if line.contains(needle)
                && let Some(request) = parse(&line)
            {
                requests.push(request);
            }
        }
        Ok(requests)
    }
}

fn parse(line: &str) -> Option<Request> {
    let event: Event = serde_json::from_str(line).ok()?;
    // Each request is logged at ResponseComplete; a watch also at ResponseStarted, which is when
    // it began (its ResponseComplete comes when it ends, minutes later).
    let counted = if event.verb == "watch" {
        "ResponseStarted"
    } else {
        "ResponseComplete"
    };
    if event.stage != counted {
        return None;
    }
    let object = event.object_ref?;
    let user = event
        .impersonated_user
        .or(event.user)
        .map(|user| user.username)
        .unwrap_or_default();
    Some(Request {
        verb: event.verb,
        resource: object.resource,
        subresource: object.subresource,
        namespace: object.namespace,
        name: object.name,
        user,
        code: event.response_status.map_or(0, |status| status.code),
        at: event.stage_timestamp.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB_CREATE: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"2eb1f82d","stage":"ResponseComplete","requestURI":"/apis/batch/v1/namespaces/bench-1-10-0/jobs?","verb":"create","user":{"username":"devcluster-admin","groups":["system:masters"]},"impersonatedUser":{"username":"system:serviceaccount:atlas-operator-system:atlas-operator"},"sourceIPs":["127.0.0.1"],"objectRef":{"resource":"jobs","namespace":"bench-1-10-0","name":"atlasmigration-m-0000-f6ed89e0","apiGroup":"batch","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":201},"requestReceivedTimestamp":"2026-11-23T19:14:51.033514Z","stageTimestamp":"2026-11-23T19:14:51.045944Z"}"#;

    #[test]
    fn an_impersonated_request_is_the_impersonated_users() {
        let request = parse(JOB_CREATE).unwrap();
        assert_eq!(
            request.user,
            "system:serviceaccount:atlas-operator-system:atlas-operator"
        );
        assert_eq!(request.verb, "create");
        assert_eq!(request.resource, "jobs");
        assert_eq!(request.namespace, "bench-1-10-0");
        assert_eq!(request.name, "atlasmigration-m-0000-f6ed89e0");
        assert_eq!(request.code, 201);
        assert!(request.is_write());
        assert_eq!(
            request.at,
            "2026-11-23T19:14:51.045944Z"
                .parse::<jiff::Timestamp>()
                .unwrap()
        );
    }

    #[test]
    fn a_watch_counts_when_it_starts_and_other_stages_not_at_all() {
        let started = JOB_CREATE
            .replace("\"create\"", "\"watch\"")
            .replace("ResponseComplete", "ResponseStarted");
        assert_eq!(parse(&started).unwrap().verb, "watch");
        let ended = JOB_CREATE.replace("\"create\"", "\"watch\"");
        assert!(parse(&ended).is_none());
        let started_create = JOB_CREATE.replace("ResponseComplete", "ResponseStarted");
        assert!(parse(&started_create).is_none());
    }

    #[test]
    fn reads_resume_where_they_stopped_and_skip_a_half_written_line() {
        let dir = std::env::temp_dir().join(format!("bench-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.log");
        std::fs::write(&path, format!("{JOB_CREATE}\n")).unwrap();
        let mut log = AuditLog::from_now(&path).unwrap();
        let other = JOB_CREATE.replace("bench-1-10-0", "t-other-1");
        let half = &JOB_CREATE[..100];
        std::fs::write(
            &path,
            format!("{JOB_CREATE}\n{JOB_CREATE}\n{other}\n{half}"),
        )
        .unwrap();
        assert_eq!(log.read_new("bench-1-").unwrap().len(), 1);
        std::fs::write(
            &path,
            format!("{JOB_CREATE}\n{JOB_CREATE}\n{other}\n{JOB_CREATE}\n"),
        )
        .unwrap();
        assert_eq!(log.read_new("bench-1-").unwrap().len(), 1);
        assert!(log.read_new("bench-1-").unwrap().is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
