//! The `atlas-operator` binary: `run` starts the controllers; `crds` prints the CRDs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;

use atlas_operator::controller::Options;
use atlas_operator::reconcile::build::{JobSettings, SecretKey};
use atlas_operator::runtime::{self, LeaderElection, RunConfig};
use clap::{Parser, Subcommand, ValueEnum};
use k8s_openapi::api::core::v1::{Affinity, EnvVar, ResourceRequirements, Toleration};

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

#[derive(clap::Args)]
struct RunArgs {
    /// Namespaces to watch (repeat, or comma-separated); none watches all.
    #[arg(long = "namespace", env = "WATCH_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, env = "METRICS_ADDRESS", default_value = "0.0.0.0:8080")]
    metrics_address: SocketAddr,
    /// Elect one active operator among replicas through a Lease.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    #[arg(long, env = "LEASE_NAME", default_value = "atlas-operator")]
    lease_name: String,
    /// The Lease's namespace: the operator's own (POD_NAMESPACE in a pod).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
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
    /// The Jobs' runner container's resources, as a Kubernetes ResourceRequirements in JSON
    /// (`{"limits":{"memory":"512Mi"}}`); unset: requests 50m CPU and 64Mi, limit 256Mi.
    #[arg(long, env = "JOB_RESOURCES", value_parser = parse_resources)]
    job_resources: Option<ResourceRequirements>,
    /// Annotations on every Job's pod, a JSON object (`{}` for none); unset: the Istio and
    /// Linkerd injection opt-outs, so a mesh's proxy never keeps a Job's pod running.
    #[arg(long, env = "JOB_POD_ANNOTATIONS", value_parser = parse_annotations)]
    job_pod_annotations: Option<BTreeMap<String, String>>,
    /// Tolerations of every Job's pod, a JSON list of Kubernetes tolerations.
    #[arg(long, env = "JOB_TOLERATIONS", value_parser = parse_json::<Vec<Toleration>>)]
    job_tolerations: Option<Json<Vec<Toleration>>>,
    /// The node labels every Job's pod must run on, a JSON object.
    #[arg(long, env = "JOB_NODE_SELECTOR", value_parser = parse_annotations)]
    job_node_selector: Option<BTreeMap<String, String>>,
    /// The affinity of every Job's pod, a Kubernetes Affinity in JSON.
    #[arg(long, env = "JOB_AFFINITY", value_parser = parse_json::<Affinity>)]
    job_affinity: Option<Json<Affinity>>,
    /// The PriorityClass of every Job's pod.
    #[arg(long, env = "JOB_PRIORITY_CLASS_NAME")]
    job_priority_class_name: Option<String>,
    /// Labels on every Job's pod, a JSON object (never replacing the operator's own).
    #[arg(long, env = "JOB_POD_LABELS", value_parser = parse_annotations)]
    job_pod_labels: Option<BTreeMap<String, String>>,
    /// More environment variables of every Job's runner, a JSON list of Kubernetes EnvVars
    /// (values, or keys of Secrets and ConfigMaps in each resource's namespace).
    #[arg(long, env = "JOB_ENV", value_parser = parse_json::<Vec<EnvVar>>)]
    job_env: Option<Json<Vec<EnvVar>>>,
    /// The install-wide Atlas Cloud token: a Secret of this name in each resource's namespace,
    /// read by the Jobs' pods (never by the operator); a resource's `cloud.tokenFrom` wins.
    #[arg(long, env = "ATLAS_TOKEN_SECRET")]
    atlas_token_secret: Option<String>,
    /// The key of the token in that Secret.
    #[arg(long, env = "ATLAS_TOKEN_SECRET_KEY", default_value = "ATLAS_TOKEN")]
    atlas_token_secret_key: String,
    /// Reconciles running at once, per kind and namespace.
    #[arg(long, env = "CONCURRENCY", default_value_t = 4)]
    concurrency: u16,
    /// The dev database image for PostgreSQL targets (match the server's major version).
    #[arg(long, env = "DEV_IMAGE_POSTGRES")]
    dev_image_postgres: Option<String>,
    /// The dev database image for MySQL targets.
    #[arg(long, env = "DEV_IMAGE_MYSQL")]
    dev_image_mysql: Option<String>,
    /// The dev database image for MariaDB targets.
    #[arg(long, env = "DEV_IMAGE_MARIA")]
    dev_image_maria: Option<String>,
    /// Run resources that bring their own atlas.hcl (spec.config, spec.configFrom). Off by
    /// default: a project file can read external data sources and run programs in the Job.
    #[arg(long, env = "ALLOW_CUSTOM_CONFIG", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    allow_custom_config: bool,
    /// Reconcile only the resources matching this label selector (e.g. `team=payments`).
    #[arg(long, env = "WATCH_LABEL_SELECTOR")]
    label_selector: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML, ready for `kubectl apply -f -`.
    Crds,
    /// Run the controllers (in-cluster config, or the kubeconfig of KUBECONFIG).
    Run(Box<RunArgs>),
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
        Command::Run(args) => {
            init_tracing(args.log_format);
            let config = config(*args);
            tracing::info!(
                version = env!("CARGO_PKG_VERSION"),
                namespaces = ?config.options.namespaces,
                runner_image = %config.settings.runner_image,
                leader_election = config.leader_election.is_some(),
                "atlas-operator starting"
            );
            let executor = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime starts");
            match executor.block_on(runtime::run(config)) {
                Ok(()) => {
                    tracing::info!("atlas-operator stopped");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    tracing::error!(error = %err, "atlas-operator stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn config(args: RunArgs) -> RunConfig {
    let defaults = JobSettings::default();
    let mut dev_images = defaults.dev_images;
    for (driver, image) in [
        ("postgres", args.dev_image_postgres),
        ("mysql", args.dev_image_mysql),
        ("maria", args.dev_image_maria),
    ] {
        if let Some(image) = image {
            dev_images.insert(driver.into(), image);
        }
    }
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    RunConfig {
        options: Options {
            namespaces: args.namespaces,
            concurrency: args.concurrency,
            label_selector: args.label_selector.filter(|s| !s.is_empty()),
        },
        allow_custom_config: args.allow_custom_config,
        settings: JobSettings {
            runner_image: args.runner_image.unwrap_or(defaults.runner_image),
            image_pull_policy: args.runner_image_pull_policy,
            image_pull_secrets: args.image_pull_secrets,
            service_account: args.job_service_account,
            active_deadline_seconds: Some(args.job_deadline_seconds),
            ttl_seconds_after_finished: args.job_ttl_seconds,
            resources: args.job_resources.or(defaults.resources),
            dev_images,
            pod_annotations: args.job_pod_annotations.unwrap_or(defaults.pod_annotations),
            tolerations: args.job_tolerations.map(|t| t.0).filter(|t| !t.is_empty()),
            node_selector: args.job_node_selector.unwrap_or_default(),
            affinity: args.job_affinity.map(|a| a.0),
            priority_class_name: args.job_priority_class_name.filter(|p| !p.is_empty()),
            pod_labels: args.job_pod_labels.unwrap_or_default(),
            env: args.job_env.map(|e| e.0).unwrap_or_default(),
            atlas_token: args
                .atlas_token_secret
                .filter(|name| !name.is_empty())
                .map(|name| SecretKey {
                    name,
                    key: args.atlas_token_secret_key,
                }),
        },
        metrics_address: args.metrics_address,
        leader_election: args.leader_election.then_some(LeaderElection {
            lease_name: args.lease_name,
            lease_namespace: args.lease_namespace,
            identity,
        }),
    }
}

fn parse_resources(text: &str) -> Result<ResourceRequirements, String> {
    serde_json::from_str(text)
        .map_err(|err| format!("not a ResourceRequirements in JSON ({err}): {text}"))
}

/// A flag's value given as JSON (one value: clap would read a `Vec` field as repeated flags).
#[derive(Clone, Debug)]
struct Json<T>(T);

fn parse_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<Json<T>, String> {
    serde_json::from_str(text)
        .map(Json)
        .map_err(|err| format!("not the Kubernetes JSON this flag takes ({err}): {text}"))
}

fn parse_annotations(text: &str) -> Result<BTreeMap<String, String>, String> {
    serde_json::from_str(text)
        .map_err(|err| format!("not a JSON object of strings ({err}): {text}"))
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    // Colour codes only for a person at a terminal: `kubectl logs` and log collectors get text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
