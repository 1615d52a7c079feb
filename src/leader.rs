//! Leader election over a `coordination.k8s.io` Lease: one replica acts, the others stand by.
//!
//! Our own, not a crate's: kube-lease-manager's standby slept until the expiry it had last read,
//! so it led 15–27 s after the leader had gone, even after a leader that released the Lease on
//! SIGTERM (tests/controller.rs measures both). Here a standby watches the Lease and takes it the
//! moment it is free (released or deleted), or once nobody has renewed it for its duration. That
//! duration is timed by this replica's own clock from the last change it saw, never by comparing
//! the holder's `renewTime` with our clock, because the nodes' clocks may disagree (client-go does
//! the same). Every write is a replace at the resourceVersion read, so of two replicas racing for
//! a free Lease the API server refuses the second (409) and only one leads.

use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::time::Instant;

/// How long a Lease nobody renews stays with its holder.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the leader renews.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// A leader that could not renew for this long stops acting: before a standby may take over
/// (after [`LEASE_DURATION`]), so two never act at once.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How soon a failed write is tried again.
const RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("the watch of Lease {0} ended")]
    WatchEnded(String),
    #[error("lost Lease {name}: {why}")]
    Lost { name: String, why: String },
}

/// One replica's side of the election for one Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    field_manager: String,
    /// The Lease as this replica last wrote it while leading: what renewals and the release
    /// replace (their resourceVersion is the lock).
    held: Mutex<Option<Lease>>,
}

impl Elector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        field_manager: &str,
    ) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            field_manager: field_manager.into(),
            held: Mutex::new(None),
        }
    }

    /// Waits until this replica holds the Lease (creating it when missing).
    pub async fn acquire(&self) -> Result<(), LeaderError> {
        let config = watcher::Config::default().fields(&format!("metadata.name={}", self.name));
        let mut events = watcher(self.api.clone(), config).default_backoff().boxed();
        // None until the watch has listed once.
        let mut seen: Option<Observed> = None;
        let mut listing: Option<Option<Lease>> = None;
        let mut retry_at: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if let Some(observed) = &seen
                && retry_at.is_none_or(|at| now >= at)
                && observed.free_for(&self.identity, now)
            {
                match self.take(observed.lease.as_ref()).await {
                    Ok(lease) => {
                        *self.held.lock().unwrap() = Some(lease);
                        return Ok(());
                    }
                    // Taken by another replica (409), or the API failed: the watch tells who
                    // holds it now; try again later either way.
                    Err(err) => {
                        tracing::debug!(lease = %self.name, error = %err, "did not take the Lease");
                        retry_at = Some(now + RETRY);
                    }
                }
            }
            let wake = [seen.as_ref().and_then(Observed::expires), retry_at]
                .into_iter()
                .flatten()
                .min();
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(event)) => {
                        let now = Instant::now();
                        match event {
                            watcher::Event::Init => listing = Some(None),
                            watcher::Event::InitApply(lease) => listing = Some(Some(lease)),
                            watcher::Event::InitDone => {
                                let lease = listing.take().flatten();
                                seen = Some(Observed::after(seen.take(), lease, now));
                            }
                            watcher::Event::Apply(lease) => {
                                seen = Some(Observed::after(seen.take(), Some(lease), now));
                            }
                            watcher::Event::Delete(_) => {
                                seen = Some(Observed::after(seen.take(), None, now));
                            }
                        }
                        // Something changed: worth another try at once.
                        retry_at = None;
                    }
                    Some(Err(err)) => {
                        tracing::warn!(lease = %self.name, error = %err, "watching the Lease");
                    }
                    None => return Err(LeaderError::WatchEnded(self.name.clone())),
                },
                () = sleep_until(wake) => {}
            }
        }
    }

    /// Renews the Lease for as long as this replica holds it; returns when it no longer does
    /// (taken by another replica, or not renewed for [`RENEW_DEADLINE`]).
    pub async fn hold(&self) -> LeaderError {
        let mut renewed = Instant::now();
        let mut next = renewed + RENEW_EVERY;
        loop {
            tokio::time::sleep_until(next).await;
            match self.renew().await {
                Ok(()) => {
                    renewed = Instant::now();
                    next = renewed + RENEW_EVERY;
                }
                Err(Renewal::Taken(by)) => {
                    return self.lost(format!("taken by {by}"));
                }
                Err(Renewal::Failed(err)) => {
                    if renewed.elapsed() >= RENEW_DEADLINE {
                        return self.lost(format!(
                            "not renewed for {} s: {err}",
                            RENEW_DEADLINE.as_secs()
                        ));
                    }
                    tracing::warn!(lease = %self.name, error = %err, "renewing the Lease; trying again");
                    next = Instant::now() + RETRY;
                }
            }
        }
    }

    /// Gives the Lease up, so a standby leads at once instead of waiting for it to expire.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.held.lock().unwrap().take() else {
            return Ok(());
        };
        let now = MicroTime(jiff::Timestamp::now());
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now);
        match self.replace(&lease).await {
            Ok(_) => Ok(()),
            // Written since by someone else: it is no longer ours to release.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(err) => Err(err),
        }
    }

    fn lost(&self, why: String) -> LeaderError {
        self.held.lock().unwrap().take();
        LeaderError::Lost {
            name: self.name.clone(),
            why,
        }
    }

    /// Writes this replica in as holder of `current` (None: create the Lease).
    async fn take(&self, current: Option<&Lease>) -> Result<Lease, kube::Error> {
        let now = MicroTime(jiff::Timestamp::now());
        let Some(current) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return self.api.create(&self.post_params(), &lease).await;
        };
        let mut lease = current.clone();
        lease.metadata.managed_fields = None;
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(LEASE_DURATION.as_secs() as i32);
        spec.acquire_time = Some(now.clone());
        spec.renew_time = Some(now);
        self.replace(&lease).await
    }

    async fn renew(&self) -> Result<(), Renewal> {
        let held = self.held.lock().unwrap().clone();
        let Some(mut lease) = held else {
            return Err(Renewal::Taken("nobody (released)".into()));
        };
        for _ in 0..2 {
            lease.spec.get_or_insert_with(Default::default).renew_time =
                Some(MicroTime(jiff::Timestamp::now()));
            match self.replace(&lease).await {
                Ok(written) => {
                    *self.held.lock().unwrap() = Some(written);
                    return Ok(());
                }
                // Someone wrote it since: still ours if they only touched other fields.
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    let current = self.api.get(&self.name).await.map_err(Renewal::Failed)?;
                    let holder = holder(&current).unwrap_or("nobody").to_string();
                    if holder != self.identity {
                        return Err(Renewal::Taken(holder));
                    }
                    lease = current;
                }
                Err(err) => return Err(Renewal::Failed(err)),
            }
        }
        Err(Renewal::Failed(kube::Error::Service(
            "the Lease keeps changing under its renewals".into(),
        )))
    }

    async fn replace(&self, lease: &Lease) -> Result<Lease, kube::Error> {
        let mut lease = lease.clone();
        lease.metadata.managed_fields = None;
        self.api
            .replace(&self.name, &self.post_params(), &lease)
            .await
    }

    /// Each replica writes under a field manager of its own, so the Lease's managed fields say
    /// who wrote it last.
    fn post_params(&self) -> PostParams {
        PostParams {
            field_manager: Some(self.field_manager.clone()),
            ..Default::default()
        }
    }
}

enum Renewal {
    Taken(String),
    Failed(kube::Error),
}

fn holder(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()
        .and_then(|spec| spec.holder_identity.as_deref())
        .filter(|holder| !holder.is_empty())
}

/// The Lease as a standby last saw it, and since when it has not changed.
#[derive(Debug)]
struct Observed {
    lease: Option<Lease>,
    since: Instant,
}

impl Observed {
    /// What `lease` seen at `now` says, after `before`: a Lease whose resourceVersion did not
    /// change keeps the time it was first seen, as nobody renewed it.
    fn after(before: Option<Observed>, lease: Option<Lease>, now: Instant) -> Observed {
        let version = |lease: &Option<Lease>| {
            lease
                .as_ref()
                .and_then(|l| l.metadata.resource_version.clone())
        };
        match before {
            Some(before) if version(&before.lease) == version(&lease) => Observed {
                lease,
                since: before.since,
            },
            _ => Observed { lease, since: now },
        }
    }

    /// When a held Lease, unrenewed, becomes free to take (None: it is free, or there is none).
    fn expires(&self) -> Option<Instant> {
        let lease = self.lease.as_ref()?;
        holder(lease)?;
        let seconds = lease
            .spec
            .as_ref()
            .and_then(|spec| spec.lease_duration_seconds)
            .map_or(LEASE_DURATION, |s| Duration::from_secs(s.max(0) as u64));
        Some(self.since + seconds)
    }

    /// Whether `identity` may take the Lease at `now`: there is none, nobody holds it, it holds
    /// it already (a restart under the same name), or its holder stopped renewing it.
    fn free_for(&self, identity: &str, now: Instant) -> bool {
        let Some(lease) = &self.lease else {
            return true;
        };
        match holder(lease) {
            None => true,
            Some(holder) if holder == identity => true,
            Some(_) => self.expires().is_some_and(|at| now >= at),
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, version: &str, seconds: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("l".into()),
                resource_version: Some(version.into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                lease_duration_seconds: Some(seconds),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_missing_released_or_own_lease_is_free_at_once() {
        let now = Instant::now();
        let seen = |l: Option<Lease>| Observed::after(None, l, now);
        assert!(seen(None).free_for("b", now));
        assert!(seen(Some(lease(None, "1", 15))).free_for("b", now));
        assert!(seen(Some(lease(Some(""), "1", 15))).free_for("b", now));
        assert!(seen(Some(lease(Some("b"), "1", 15))).free_for("b", now));
        assert!(!seen(Some(lease(Some("a"), "1", 15))).free_for("b", now));
    }

    #[test]
    fn a_held_lease_is_free_once_unchanged_for_its_duration_by_our_clock() {
        let start = Instant::now();
        let first = Observed::after(None, Some(lease(Some("a"), "1", 15)), start);
        assert_eq!(first.expires(), Some(start + Duration::from_secs(15)));
        // Seen again unchanged (a re-list): the clock keeps running from the first sight.
        let later = start + Duration::from_secs(10);
        let again = Observed::after(Some(first), Some(lease(Some("a"), "1", 15)), later);
        assert!(!again.free_for("b", later));
        assert!(again.free_for("b", start + Duration::from_secs(15)));
        // A renewal (new resourceVersion) starts it again.
        let renewed = Observed::after(Some(again), Some(lease(Some("a"), "2", 15)), later);
        assert!(!renewed.free_for("b", start + Duration::from_secs(15)));
        assert!(renewed.free_for("b", later + Duration::from_secs(15)));
    }
}
