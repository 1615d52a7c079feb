//! `atlas-operator run`: the one place that wires the process together — the Kubernetes client,
//! the HTTP endpoints, leader election, and the controllers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::Client;

use crate::controller::{self, Options};
use crate::leader::Elector;
use crate::metrics::Metrics;
use crate::reconcile::Context;
use crate::reconcile::build::JobSettings;
use crate::server::{self, AppState};

/// Leader election: one operator of several acts; the others stand by, ready to take over.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub lease_name: String,
    pub lease_namespace: String,
    /// This process's identity in the Lease (the pod's name in a cluster).
    pub identity: String,
}

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub options: Options,
    pub settings: JobSettings,
    pub metrics_address: SocketAddr,
    /// None: act at once, alone (a single replica, or tests).
    pub leader_election: Option<LeaderElection>,
    pub allow_custom_config: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no Kubernetes client configuration: {0}")]
    Client(#[source] kube::Error),
    #[error("leader election: {0}")]
    Lease(String),
    #[error("lost the leadership; exiting so a fresh start can compete for it again")]
    LostLeadership,
}

pub async fn run(config: RunConfig) -> Result<(), RunError> {
    let client = Client::try_default().await.map_err(RunError::Client)?;
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let state = AppState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let address = config.metrics_address;
    tokio::spawn(async move {
        if let Err(err) = server::serve(address, state).await {
            tracing::error!(error = %err, %address, "the HTTP endpoints stopped");
        }
    });
    let mut ctx = Context::new(client.clone(), config.settings.clone(), metrics);
    ctx.allowed.custom_config = config.allow_custom_config;
    let ctx = Arc::new(ctx);

    let shutdown = controller::shutdown_on_signal();
    let Some(election) = config.leader_election else {
        ready.store(true, Ordering::Relaxed);
        controller::run(client, ctx, config.options, shutdown).await;
        return Ok(());
    };
    let elector = Elector::new(
        client.clone(),
        &election.lease_namespace,
        &election.lease_name,
        &election.identity,
        &lease_field_manager(&election.identity),
    );
    // A follower is ready too: it is healthy and will take over when the leader goes.
    ready.store(true, Ordering::Relaxed);
    tracing::info!(lease = %election.lease_name, identity = %election.identity, "waiting for the leadership");
    tokio::select! {
        led = elector.acquire() => led.map_err(|err| RunError::Lease(err.to_string()))?,
        // A standby asked to stop has nothing to finish.
        () = shutdown.clone() => {
            tracing::info!("stopped while standing by");
            return Ok(());
        }
    }
    tracing::info!("leading: starting the controllers");
    let result = tokio::select! {
        () = controller::run(client, ctx, config.options, shutdown) => Ok(()),
        lost = elector.hold() => {
            tracing::error!(error = %lost, "lost the leadership");
            Err(RunError::LostLeadership)
        }
    };
    // Releasing the Lease lets a standby lead at once instead of waiting for it to expire.
    match elector.release().await {
        Ok(()) if result.is_ok() => {
            tracing::info!("stopped: reconciles finished and the lease released");
        }
        Ok(()) => {}
        Err(err) => tracing::warn!(error = %err, "releasing the Lease"),
    }
    result
}

/// The field manager a replica writes the Lease with, unique per replica.
pub fn lease_field_manager(identity: &str) -> String {
    format!("{}-lease-{identity}", crate::reconcile::MANAGER)
}
