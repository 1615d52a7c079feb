//! `devcluster-kubelet`: the process-kubelet of the local cluster (see `devcluster::kubelet`).
//! `devcluster::cluster::up` starts it with the control plane; it is not meant to be run by hand,
//! but can be, against any cluster whose CA it has certificates from.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use devcluster::kubelet::{self, Config, image::Programs};

#[derive(Parser, Debug)]
#[command(about = "The process-kubelet of devcluster: runs pods as local processes")]
struct Args {
    #[arg(long, default_value = kubelet::NODE_NAME)]
    node_name: String,
    /// Authenticates as the node (system:node:<name> in group system:nodes).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Authenticates as system:kube-scheduler, for binding pending pods to the node.
    #[arg(long)]
    scheduler_kubeconfig: PathBuf,
    /// The pods' volumes, logs and termination messages go under <dir>/pods.
    #[arg(long)]
    dir: PathBuf,
    /// The logs endpoint's port on 127.0.0.1.
    #[arg(long)]
    port: u16,
    #[arg(long)]
    tls_cert: PathBuf,
    #[arg(long)]
    tls_key: PathBuf,
    /// Client certificates of this CA may read logs.
    #[arg(long)]
    client_ca: PathBuf,
    #[arg(long, default_value = "bwrap")]
    bwrap: PathBuf,
    /// The runner binary for `atlas-operator/runner` images.
    #[arg(long, env = "RUNNER_BIN")]
    runner: PathBuf,
    /// The operator binary for images whose repository ends with `atlas-operator`.
    #[arg(long, env = "OPERATOR_BIN")]
    operator: PathBuf,
    #[arg(long)]
    atlas: Option<PathBuf>,
    #[arg(long)]
    kubectl: Option<PathBuf>,
    #[arg(long, default_value_t = kubelet::DEFAULT_MAX_PODS)]
    max_pods: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .with_ansi(false)
        .init();
    let config = Config {
        node_name: args.node_name,
        kubeconfig: args.kubeconfig,
        scheduler_kubeconfig: args.scheduler_kubeconfig,
        dir: args.dir,
        port: args.port,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        client_ca: args.client_ca,
        bwrap: args.bwrap,
        programs: Programs {
            runner: args.runner,
            operator: args.operator,
            atlas: args.atlas,
            kubectl: args.kubectl,
        },
        max_pods: args.max_pods,
    };
    // One thread: containers are tied to the thread that started them (bwrap's
    // --die-with-parent is the parent-death signal, sent when that thread ends), and this
    // thread lives as long as the process.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("devcluster-kubelet: starting the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(kubelet::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            eprintln!("devcluster-kubelet: {err}");
            ExitCode::FAILURE
        }
    }
}
