//! Events on the resource: what `kubectl describe` shows of each transition.

use kube::runtime::events::{Event, EventType};

use super::{AtlasResource, Context};

/// An event's note is cut to this many bytes: the message's start and end are what say why.
const NOTE_LIMIT: usize = 1000;

/// Records an event; failing to is logged, never a failed reconcile (an event is a courtesy).
pub(super) async fn publish<K: AtlasResource>(
    ctx: &Context,
    resource: &K,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let note = contract::cut_with_marker(note, NOTE_LIMIT);
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(err) = ctx
        .recorder
        .publish(&event, &resource.object_ref(&()))
        .await
    {
        tracing::warn!(error = %err, "recording an event failed");
    }
}
