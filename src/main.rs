//! The `atlas-operator` binary: `run` starts the controllers; `crds` prints the CRDs.

use std::process::ExitCode;
use std::sync::Arc;

use atlas_operator::controller::{self, Options};
use atlas_operator::job::JobSettings;
use atlas_operator::reconcile::Context;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "atlas-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML, ready for `kubectl apply -f -`.
    Crds,
    /// Run the controllers (in-cluster config, or the kubeconfig of KUBECONFIG).
    Run {
        /// Namespaces to watch (repeat, or comma-separated); none watches all.
        #[arg(long = "namespace", env = "WATCH_NAMESPACES", value_delimiter = ',')]
        namespaces: Vec<String>,
        #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
        log_format: LogFormat,
        /// The runner's image, used by every Job.
        #[arg(long, env = "RUNNER_IMAGE")]
        runner_image: Option<String>,
        /// The runner's image pull policy.
        #[arg(long, env = "RUNNER_IMAGE_PULL_POLICY")]
        runner_image_pull_policy: Option<String>,
        /// Image pull secrets for the Jobs' pods (repeat, or comma-separated).
        #[arg(
            long = "image-pull-secret",
            env = "RUNNER_IMAGE_PULL_SECRETS",
            value_delimiter = ','
        )]
        image_pull_secrets: Vec<String>,
        /// The service account the Jobs' pods run as (in the resource's namespace).
        #[arg(long, env = "JOB_SERVICE_ACCOUNT")]
        job_service_account: Option<String>,
        /// A Job is stopped after this many seconds.
        #[arg(long, env = "JOB_DEADLINE_SECONDS", default_value_t = 1800)]
        job_deadline_seconds: i64,
        /// A finished Job is deleted this many seconds after it ends (unset: kept until the next
        /// apply of its resource replaces it).
        #[arg(long, env = "JOB_TTL_SECONDS")]
        job_ttl_seconds: Option<i32>,
        /// Reconciles running at once, per kind and namespace.
        #[arg(long, env = "CONCURRENCY", default_value_t = 4)]
        concurrency: u16,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crds => match atlas_operator::api::crd_files() {
            Ok(files) => {
                for (_, yaml) in files {
                    print!("{yaml}");
                }
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("atlas-operator: {err}");
                ExitCode::FAILURE
            }
        },
        Command::Run {
            namespaces,
            log_format,
            runner_image,
            runner_image_pull_policy,
            image_pull_secrets,
            job_service_account,
            job_deadline_seconds,
            job_ttl_seconds,
            concurrency,
        } => {
            init_tracing(log_format);
            let defaults = JobSettings::default();
            let settings = JobSettings {
                runner_image: runner_image.unwrap_or(defaults.runner_image),
                image_pull_policy: runner_image_pull_policy,
                image_pull_secrets,
                service_account: job_service_account,
                active_deadline_seconds: Some(job_deadline_seconds),
                ttl_seconds_after_finished: job_ttl_seconds,
                resources: defaults.resources,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime starts");
            runtime.block_on(async move {
                let client = match kube::Client::try_default().await {
                    Ok(client) => client,
                    Err(err) => {
                        tracing::error!(error = %err, "no Kubernetes client configuration");
                        return ExitCode::FAILURE;
                    }
                };
                tracing::info!(
                    version = env!("CARGO_PKG_VERSION"),
                    namespaces = ?namespaces,
                    runner_image = %settings.runner_image,
                    "atlas-operator starting"
                );
                let ctx = Arc::new(Context::new(client.clone(), settings));
                controller::run(
                    client,
                    ctx,
                    Options {
                        namespaces,
                        concurrency,
                    },
                )
                .await;
                tracing::info!("atlas-operator stopped");
                ExitCode::SUCCESS
            })
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
