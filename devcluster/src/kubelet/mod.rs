//! The process-kubelet: the stand-in node of the local cluster. It registers a Node that is
//! Ready, binds the pending pods to it (there is no scheduler), and runs each pod's containers
//! as local processes, each in a sandbox of its own ([`sandbox`]) with its env ([`env`]) and
//! volumes ([`volumes`]) materialised; it probes them ([`probe`]), writes the pods' status back
//! as a kubelet would ([`worker`], [`status`]) and serves their logs to the API server ([`logs`]).
//!
//! It runs as its own process, `devcluster-kubelet` (`src/bin/`), started and stopped with the
//! control plane by [`crate::cluster`]. Images map to local programs by the table in [`image`].
//! What it does not do is listed in `docs/devcluster.md`.

pub mod database;
pub mod env;
pub mod image;
pub mod launch;
pub mod logs;
pub mod node;
pub mod pod_status;
pub mod pods;
pub mod ports;
pub mod probe;
pub mod reference;
pub mod sandbox;
pub mod scheduler;
pub mod volumes;
pub mod worker;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use tokio::sync::Semaphore;

/// The node's name (its client certificate says `system:node:devnode`).
pub const NODE_NAME: &str = "devnode";
/// The node's only address, and so every pod's.
pub const NODE_IP: &str = "127.0.0.1";
/// Pods run at once by default; more wait in `Pending`. Two cores run a few Atlas processes
/// at a time comfortably.
pub const DEFAULT_MAX_PODS: usize = 16;
/// How long the kubelet tries to reach the API server at start.
const REGISTER_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("reading the kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    #[error("making a client from {path}: {source}")]
    Client {
        path: PathBuf,
        #[source]
        source: kube::Error,
    },
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}: the API server did not answer in time")]
    Timeout(String),
    #[error(transparent)]
    Logs(#[from] logs::LogsError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the {0} task ended")]
    TaskEnded(&'static str),
}

/// How the kubelet is run (the binary's flags).
#[derive(Clone, Debug)]
pub struct Config {
    pub node_name: String,
    /// Authenticates as the node (`system:node:<name>`, group `system:nodes`).
    pub kubeconfig: PathBuf,
    /// Authenticates as `system:kube-scheduler`, for binding pods.
    pub scheduler_kubeconfig: PathBuf,
    /// Where the pods' volumes, logs and termination messages go.
    pub dir: PathBuf,
    /// The logs endpoint's port on 127.0.0.1.
    pub port: u16,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// Client certificates of this CA may read logs (the API server's kubelet client has one).
    pub client_ca: PathBuf,
    pub bwrap: PathBuf,
    pub programs: image::Programs,
    pub max_pods: usize,
}

/// What every pod worker shares.
pub struct Context {
    /// The node's client.
    pub client: Client,
    pub node: String,
    pub pods_dir: PathBuf,
    pub programs: image::Programs,
    pub bwrap: PathBuf,
    /// Fresh database data directories, made once and copied at each start.
    pub templates: database::Templates,
    /// The API server's port, for the pods' `KUBERNETES_SERVICE_PORT`.
    pub apiserver_port: u16,
    /// What HTTP probes send as `User-Agent` (`kube-probe/1.37`).
    pub probe_user_agent: String,
    pub logs: logs::Registry,
    /// One permit per pod that may run at once.
    pub slots: Arc<Semaphore>,
    /// `containerPort`s taken by running pods.
    pub ports: ports::HostPorts,
}

async fn make_client(path: &PathBuf) -> Result<(Client, kube::Config), KubeletError> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|source| KubeletError::Kubeconfig {
        path: path.clone(),
        source,
    })?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|source| KubeletError::Kubeconfig {
            path: path.clone(),
            source,
        })?;
    let client = Client::try_from(config.clone()).map_err(|source| KubeletError::Client {
        path: path.clone(),
        source,
    })?;
    Ok((client, config))
}

/// The API server's version, asked until it answers (the kubelet may start with it).
async fn apiserver_version(client: &Client) -> Result<String, KubeletError> {
    let deadline = tokio::time::Instant::now() + REGISTER_LIMIT;
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(10), client.apiserver_version());
        match attempt.await {
            Ok(Ok(info)) => return Ok(info.git_version),
            Ok(Err(source)) if tokio::time::Instant::now() >= deadline => {
                return Err(KubeletError::Api {
                    what: "asking the API server's version".into(),
                    source,
                });
            }
            Err(_) if tokio::time::Instant::now() >= deadline => {
                return Err(KubeletError::Timeout(
                    "asking the API server's version".into(),
                ));
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Runs the kubelet until `SIGTERM` or `SIGINT` (its containers die with it: see
/// [`sandbox`]).
pub async fn run(config: Config) -> Result<(), KubeletError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (client, kube_config) = make_client(&config.kubeconfig).await?;
    let (scheduler_client, _) = make_client(&config.scheduler_kubeconfig).await?;
    let apiserver_port = kube_config.cluster_url.port_u16().unwrap_or(443);
    let version = apiserver_version(&client).await?;

    let pods_dir = config.dir.join("pods");
    std::fs::create_dir_all(&pods_dir).map_err(|source| KubeletError::Io {
        what: format!("creating {}", pods_dir.display()),
        source,
    })?;
    let registry = logs::Registry::default();
    let tls = logs::tls_config(&config.tls_cert, &config.tls_key, &config.client_ca)?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, config.port));
    let mut log_server = tokio::spawn(logs::serve(addr, tls, registry.clone()));

    let probe_user_agent = probe::user_agent(&version);
    let facts = node::NodeFacts {
        name: config.node_name.clone(),
        port: config.port,
        max_pods: config.max_pods,
        version,
    };
    let node = node::register(&client, &facts).await?;
    let registered = jiff::Timestamp::now();
    tracing::info!(node = %facts.name, port = config.port, "node registered and Ready");

    let heartbeat_client = client.clone();
    let mut heartbeat = tokio::spawn(async move {
        let mut last_status = tokio::time::Instant::now();
        loop {
            if let Err(err) = node::renew_lease(&heartbeat_client, &node).await {
                tracing::warn!(%err, "renewing the node's lease");
            }
            if last_status.elapsed() >= node::STATUS_REFRESH {
                if let Err(err) = node::refresh_status(&heartbeat_client, &facts, registered).await
                {
                    tracing::warn!(%err, "refreshing the node's status");
                }
                last_status = tokio::time::Instant::now();
            }
            tokio::time::sleep(node::LEASE_RENEW).await;
        }
    });
    let mut scheduler = tokio::spawn(scheduler::run(scheduler_client, config.node_name.clone()));
    let ctx = Arc::new(Context {
        client,
        node: config.node_name.clone(),
        pods_dir,
        programs: config.programs.clone(),
        bwrap: config.bwrap.clone(),
        templates: database::Templates::new(config.dir.join("images"), config.bwrap.clone()),
        apiserver_port,
        probe_user_agent,
        logs: registry,
        slots: Arc::new(Semaphore::new(config.max_pods.max(1))),
        ports: ports::HostPorts::default(),
    });
    let mut pods = tokio::spawn(pods::run(ctx));

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| KubeletError::Io {
        what: "handling SIGTERM".into(),
        source,
    })?;
    let result = tokio::select! {
        _ = terminate.recv() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
        ended = &mut log_server => match ended {
            Ok(Err(err)) => Err(err.into()),
            _ => Err(KubeletError::TaskEnded("logs endpoint")),
        },
        _ = &mut heartbeat => Err(KubeletError::TaskEnded("heartbeat")),
        _ = &mut scheduler => Err(KubeletError::TaskEnded("scheduler")),
        _ = &mut pods => Err(KubeletError::TaskEnded("pods")),
    };
    tracing::info!("stopping");
    result
}
