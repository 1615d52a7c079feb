//! Events on the resource: what `kubectl describe` shows of each transition.
//!
//! Our own recorder, not kube's: kube's counts an event onto an earlier one of the same reason
//! whatever its note says, so a second, different failure showed as "x2" of the first failure's
//! message. Here only the same note again (the same failure repeating) is counted onto its
//! event, as a series; a new message is an event of its own.

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};

use super::{AtlasResource, Context, MANAGER};

/// An event's note is cut to this many bytes: the message's start and end are what say why.
const NOTE_LIMIT: usize = 1000;
/// How long a repeat is counted onto its event rather than made a new one (kube's choice too).
const SERIES_TTL: SignedDuration = SignedDuration::from_mins(6);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// What makes two events the same: the same resource, type, reason and note.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    regarding: (Option<String>, Option<String>, Option<String>),
    type_: EventType,
    reason: String,
    note: String,
}

/// The event written for a [`Key`], to count repeats onto.
#[derive(Clone, Debug)]
struct Written {
    name: String,
    count: i32,
    last: Timestamp,
}

pub struct Recorder {
    client: Client,
    /// This replica (the pod's name), as `reportingInstance`.
    instance: String,
    written: Mutex<HashMap<Key, Written>>,
}

impl Recorder {
    pub fn new(client: Client, instance: Option<String>) -> Recorder {
        Recorder {
            client,
            instance: instance.unwrap_or_else(|| MANAGER.into()),
            written: Mutex::default(),
        }
    }

    /// Writes the event: a new one, or, for the same note about the same resource within
    /// [`SERIES_TTL`], one more of its series.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = Key {
            regarding: (
                regarding.namespace.clone(),
                regarding.name.clone(),
                regarding.uid.clone(),
            ),
            type_,
            reason: reason.into(),
            note: note.into(),
        };
        let repeat = {
            let mut written = self.written.lock().unwrap();
            written.retain(|_, w| w.last + SERIES_TTL > now);
            written.get(&key).cloned()
        };
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        let written = match repeat {
            Some(mut repeat) => {
                repeat.count += 1;
                repeat.last = now;
                let patch = serde_json::json!({"series": EventSeries {
                    count: repeat.count,
                    last_observed_time: MicroTime(now),
                }});
                let patched = events
                    .patch(&repeat.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
                match patched {
                    Ok(_) => repeat,
                    // Gone (expired, or deleted by someone): start again with a new one.
                    Err(kube::Error::Api(status)) if status.code == 404 => {
                        self.create(&events, regarding, &key, now).await?
                    }
                    Err(err) => return Err(err),
                }
            }
            None => self.create(&events, regarding, &key, now).await?,
        };
        self.written.lock().unwrap().insert(key, written);
        Ok(())
    }

    async fn create(
        &self,
        events: &Api<K8sEvent>,
        regarding: &ObjectReference,
        key: &Key,
        now: Timestamp,
    ) -> Result<Written, kube::Error> {
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or(MANAGER),
            now.as_nanosecond()
        );
        let event = K8sEvent {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: regarding.namespace.clone(),
                ..Default::default()
            },
            action: Some("Reconcile".into()),
            reason: Some(key.reason.clone()),
            note: Some(key.note.clone()),
            type_: Some(key.type_.as_str().into()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(MANAGER.into()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        events.create(&PostParams::default(), &event).await?;
        Ok(Written {
            name,
            count: 1,
            last: now,
        })
    }
}

/// Records an event; failing to is logged, never a failed reconcile (an event is a courtesy).
pub(super) async fn publish<K: AtlasResource>(
    ctx: &Context,
    resource: &K,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let note = contract::cut_with_marker(note, NOTE_LIMIT);
    if let Err(err) = ctx
        .recorder
        .publish(&resource.object_ref(&()), type_, reason, &note)
        .await
    {
        tracing::warn!(error = %err, "recording an event failed");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::{Value, json};

    use super::*;

    /// The requests a mock API server saw, answering every create and patch with success.
    async fn recorded(notes: &[(&str, &str)]) -> Vec<(String, String, Value)> {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let log: Arc<Mutex<Vec<(String, String, Value)>>> = Arc::default();
        let seen = log.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let body: Value =
                    serde_json::from_slice(&body.collect_bytes().await.unwrap()).unwrap();
                seen.lock().unwrap().push((
                    parts.method.to_string(),
                    parts.uri.path().to_string(),
                    body.clone(),
                ));
                send.send_response(
                    Response::builder()
                        .status(200)
                        .body(Body::from(serde_json::to_vec(&body).unwrap()))
                        .unwrap(),
                );
            }
        });
        let recorder = Recorder::new(Client::new(service, "default"), Some("pod-a".into()));
        let regarding = ObjectReference {
            namespace: Some("team".into()),
            name: Some("app".into()),
            uid: Some("u1".into()),
            ..Default::default()
        };
        for (reason, note) in notes {
            recorder
                .publish(&regarding, EventType::Warning, reason, note)
                .await
                .unwrap();
        }
        log.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn a_new_failure_of_the_same_reason_is_an_event_with_its_own_message() {
        let requests = recorded(&[
            ("Migrating", "file 1 failed: syntax error"),
            ("Migrating", "file 2 failed: table exists"),
        ])
        .await;
        let created: Vec<&Value> = requests
            .iter()
            .filter(|(method, _, _)| method == "POST")
            .map(|(_, _, body)| body)
            .collect();
        assert_eq!(created.len(), 2, "{requests:?}");
        assert_eq!(created[0]["note"], "file 1 failed: syntax error");
        assert_eq!(created[1]["note"], "file 2 failed: table exists");
        assert_eq!(created[1]["reason"], "Migrating");
        assert_eq!(created[1]["reportingInstance"], "pod-a");
        assert_eq!(created[1]["regarding"]["name"], "app");
    }

    #[tokio::test]
    async fn the_same_failure_again_is_counted_onto_its_event() {
        let requests = recorded(&[
            ("Migrating", "file 1 failed"),
            ("Migrating", "file 1 failed"),
            ("Migrating", "file 1 failed"),
        ])
        .await;
        assert_eq!(requests.len(), 3, "{requests:?}");
        assert_eq!(requests[0].0, "POST");
        let name = requests[0].2["metadata"]["name"].as_str().unwrap();
        for (count, (method, path, body)) in requests[1..].iter().enumerate() {
            assert_eq!(method, "PATCH");
            assert!(
                path.ends_with(&format!("/namespaces/team/events/{name}")),
                "{path}"
            );
            assert_eq!(body["series"]["count"], json!(count + 2));
        }
    }
}
