//! `atlas-operator run`: the one place that wires the process together — the Kubernetes client,
//! the HTTP endpoints, leader election, and the controllers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};

use crate::controller::{self, Options};
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
    let manager = lease_manager(client.clone(), &election).await?;
    let (mut leading, lease_task) = manager.watch().await;
    // A follower is ready too: it is healthy and will take over when the leader goes.
    ready.store(true, Ordering::Relaxed);
    tracing::info!(lease = %election.lease_name, identity = %election.identity, "waiting for the leadership");
    let standing_by = async {
        while !*leading.borrow_and_update() {
            if leading.changed().await.is_err() {
                return Err(RunError::Lease("the lease task ended".into()));
            }
        }
        Ok(())
    };
    let result = tokio::select! {
        led = standing_by => led,
        // A standby asked to stop has nothing to finish.
        () = shutdown.clone() => {
            drop(leading);
            let _ = lease_task.await;
            tracing::info!("stopped while standing by");
            return Ok(());
        }
    };
    result?;
    tracing::info!("leading: starting the controllers");
    let result = tokio::select! {
        _ = controller::run(client, ctx, config.options, shutdown) => Ok(()),
        lost = async {
            loop {
                if leading.changed().await.is_err() || !*leading.borrow() {
                    break;
                }
            }
        } => { let () = lost; Err(RunError::LostLeadership) }
    };
    // Dropping the receiver makes the lease task release the Lease, so a standby replica need
    // not wait for it to expire.
    drop(leading);
    let _ = lease_task.await;
    if result.is_ok() {
        tracing::info!("stopped: reconciles finished and the lease released");
    }
    result
}

/// This replica's handle on the Lease (created when missing).
pub async fn lease_manager(
    client: Client,
    election: &LeaderElection,
) -> Result<LeaseManager, RunError> {
    LeaseManagerBuilder::new(client, &election.lease_name)
        .with_namespace(&election.lease_namespace)
        .with_identity(&election.identity)
        // Locking relies on server-side apply conflicts between replicas, so each replica needs
        // a field manager of its own: a shared one lets two replicas both take the lease.
        .with_field_manager(lease_field_manager(&election.identity))
        .build()
        .await
        .map_err(|err| RunError::Lease(err.to_string()))
}

/// The field manager a replica writes the Lease with, unique per replica.
pub fn lease_field_manager(identity: &str) -> String {
    format!("{}-lease-{identity}", crate::reconcile::MANAGER)
}
