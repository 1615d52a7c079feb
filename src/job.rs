//! The pipeline's build step: a [`Plan`] rendered into the Job (and the inputs ConfigMap) that
//! applies it. Pure, and snapshot-tested: what is rendered here is exactly what runs.

use std::collections::BTreeMap;

use contract::{self, EXIT_DEFINITIVE, Kind};
use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar,
    KeyToPath, LocalObjectReference, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::plan::{DevOverride, INLINE_PLACEHOLDER, INPUTS_DIR, InputSource, Plan};

/// Labels on every object the operator makes; the controller finds a resource's Jobs by them.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "atlas-operator";
pub const LABEL_KIND: &str = "db.atlasgo.io/kind";
pub const LABEL_NAME: &str = "db.atlasgo.io/name";
pub const LABEL_HASH: &str = "db.atlasgo.io/hash";
/// The full desired hash (a label value holds at most 63 characters).
pub const ANNOTATION_HASH: &str = "db.atlasgo.io/desired-hash";

/// The name of the runner's container, which `podFailurePolicy` and the status read.
pub const RUNNER_CONTAINER: &str = "runner";

/// Operator settings that shape every Job (from flags, later Helm values).
#[derive(Clone, Debug, PartialEq)]
pub struct JobSettings {
    pub runner_image: String,
    pub image_pull_policy: Option<String>,
    pub image_pull_secrets: Vec<String>,
    pub service_account: Option<String>,
    pub active_deadline_seconds: Option<i64>,
    pub ttl_seconds_after_finished: Option<i32>,
    pub resources: Option<ResourceRequirements>,
    /// The dev database sidecar's image per driver (`postgres`, `mysql`, `maria`).
    pub dev_images: BTreeMap<String, String>,
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings {
            runner_image: format!(
                "ghcr.io/atlas-operator/runner:{}",
                env!("CARGO_PKG_VERSION")
            ),
            image_pull_policy: None,
            image_pull_secrets: Vec::new(),
            service_account: None,
            active_deadline_seconds: Some(30 * 60),
            ttl_seconds_after_finished: None,
            resources: Some(ResourceRequirements {
                requests: Some(BTreeMap::from([
                    ("cpu".to_string(), Quantity("50m".into())),
                    ("memory".to_string(), Quantity("64Mi".into())),
                ])),
                limits: Some(BTreeMap::from([(
                    "memory".to_string(),
                    Quantity("256Mi".into()),
                )])),
                ..Default::default()
            }),
            // Pick the target server's major version: Atlas plans against the dev database.
            dev_images: BTreeMap::from([
                ("postgres".to_string(), "postgres:16".to_string()),
                ("mysql".to_string(), "mysql:8.4".to_string()),
                ("maria".to_string(), "mariadb:11".to_string()),
            ]),
        }
    }
}

/// How long the runner waits for its dev database sidecar to accept connections.
pub const DEV_WAIT_SECONDS: u64 = 120;

/// The dev database sidecar of a driver: its container and the URL the runner reaches it at.
/// Credentials never leave the pod: the server listens on the pod's loopback only and trusts it.
fn dev_sidecar(driver: &str, image: &str, over: &DevOverride) -> (Container, Vec<Volume>, String) {
    let (port, data_path, run_path, env, url) = match driver {
        "postgres" => (
            5432,
            "/var/lib/postgresql/data",
            "/var/run/postgresql",
            vec![
                ("POSTGRES_HOST_AUTH_METHOD", "trust"),
                ("POSTGRES_DB", "dev"),
            ],
            "postgres://postgres@127.0.0.1:5432/dev?sslmode=disable",
        ),
        "maria" => (
            3306,
            "/var/lib/mysql",
            "/run/mysqld",
            vec![
                ("MARIADB_ALLOW_EMPTY_ROOT_PASSWORD", "1"),
                ("MARIADB_DATABASE", "dev"),
            ],
            "maria://root@127.0.0.1:3306/dev",
        ),
        _ => (
            3306,
            "/var/lib/mysql",
            "/var/run/mysqld",
            vec![
                ("MYSQL_ALLOW_EMPTY_PASSWORD", "yes"),
                ("MYSQL_DATABASE", "dev"),
            ],
            "mysql://root@127.0.0.1:3306/dev",
        ),
    };
    let container = Container {
        name: DEV_CONTAINER.into(),
        image: Some(over.image.clone().unwrap_or_else(|| image.into())),
        image_pull_policy: over.image_pull_policy.clone(),
        // A native sidecar: started before the runner, stopped after it.
        restart_policy: Some("Always".into()),
        env: Some(
            env.into_iter()
                .map(|(name, value)| EnvVar {
                    name: name.into(),
                    value: Some(value.into()),
                    ..Default::default()
                })
                .collect(),
        ),
        ports: Some(vec![k8s_openapi::api::core::v1::ContainerPort {
            container_port: port,
            name: Some("dev-db".into()),
            ..Default::default()
        }]),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "dev-data".into(),
                mount_path: data_path.into(),
                ..Default::default()
            },
            VolumeMount {
                name: "dev-run".into(),
                mount_path: run_path.into(),
                ..Default::default()
            },
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..Default::default()
            },
        ]),
        resources: Some(
            over.resources
                .clone()
                .unwrap_or_else(|| ResourceRequirements {
                    requests: Some(BTreeMap::from([
                        ("cpu".to_string(), Quantity("100m".into())),
                        ("memory".to_string(), Quantity("256Mi".into())),
                    ])),
                    limits: Some(BTreeMap::from([(
                        "memory".to_string(),
                        Quantity("1Gi".into()),
                    )])),
                    ..Default::default()
                }),
        ),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            // The official images' server users.
            run_as_user: Some(999),
            run_as_group: Some(999),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let volumes = ["dev-data", "dev-run"]
        .into_iter()
        .map(|name| Volume {
            name: name.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        })
        .collect();
    (container, volumes, url.into())
}

/// The dev database sidecar's container name.
pub const DEV_CONTAINER: &str = "dev-db";

/// The resource a Job belongs to.
#[derive(Clone, Debug)]
pub struct Owner {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// `<kind>-<name>-<hash8>`, at most 63 characters (a Job's name goes into its pods' labels).
/// A long name is cut; the hash, which covers the full name, keeps Jobs apart.
pub fn job_name(kind: Kind, name: &str, short_hash: &str) -> String {
    let prefix = kind.label();
    let room = 63 - prefix.len() - short_hash.len() - 2;
    let mut cut: String = name.chars().take(room).collect();
    while cut.ends_with(['-', '.']) {
        cut.pop();
    }
    format!("{prefix}-{cut}-{short_hash}")
}

/// A label value (at most 63 characters): long names are cut and marked with a hash of the whole.
pub fn label_value(text: &str) -> String {
    if text.len() <= 63 {
        return text.to_string();
    }
    use sha2::{Digest, Sha256};
    let digest: String = Sha256::digest(text.as_bytes())[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut cut: String = text.chars().take(54).collect();
    while cut.ends_with(['-', '.', '_']) {
        cut.pop();
    }
    format!("{cut}-{digest}")
}

/// The labels that find a resource's Jobs (all hashes).
pub fn owner_labels(kind: Kind, name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (LABEL_KIND.to_string(), kind.label().to_string()),
        (LABEL_NAME.to_string(), label_value(name)),
    ])
}

fn owner_reference(owner: &Owner) -> OwnerReference {
    OwnerReference {
        api_version: "db.atlasgo.io/v1alpha1".into(),
        kind: owner.kind.resource_kind().into(),
        name: owner.name.clone(),
        uid: owner.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn metadata(name: String, owner: &Owner, plan: &Plan) -> ObjectMeta {
    let mut labels = owner_labels(owner.kind, &owner.name);
    labels.insert(LABEL_HASH.into(), plan.short_hash().into());
    ObjectMeta {
        name: Some(name),
        namespace: Some(owner.namespace.clone()),
        labels: Some(labels),
        annotations: Some(BTreeMap::from([(
            ANNOTATION_HASH.to_string(),
            plan.hash.clone(),
        )])),
        owner_references: Some(vec![owner_reference(owner)]),
        ..Default::default()
    }
}

/// The operator-made ConfigMap of inline inputs, when the plan has any: immutable, named by the
/// hash, owned by the resource.
pub fn inputs_configmap(plan: &Plan, owner: &Owner) -> Option<ConfigMap> {
    if plan.inline.is_empty() {
        return None;
    }
    Some(ConfigMap {
        metadata: metadata(inputs_name(plan, owner), owner, plan),
        data: Some(plan.inline.clone()),
        immutable: Some(true),
        ..Default::default()
    })
}

fn inputs_name(plan: &Plan, owner: &Owner) -> String {
    format!(
        "{}-inputs",
        job_name(owner.kind, &owner.name, plan.short_hash())
    )
}

fn items(keys: &[String]) -> Vec<KeyToPath> {
    keys.iter()
        .map(|key| KeyToPath {
            key: key.clone(),
            path: key.clone(),
            mode: None,
        })
        .collect()
}

/// The name of the Job that applies `plan`: `…-dev` for the second Job, which brings the dev
/// database the first one found it needs.
pub fn plan_job_name(plan: &Plan, owner: &Owner) -> String {
    match plan.dev {
        crate::plan::DevNeed::Found(_) => {
            let base = job_name(owner.kind, &owner.name, plan.short_hash());
            let hash_at = base.len() - plan.short_hash().len() - 1;
            let (head, tail) = base.split_at(hash_at);
            let mut head = head.to_string();
            while head.len() + tail.len() + 4 > 63 {
                head.pop();
            }
            while head.ends_with(['-', '.']) {
                head.pop();
            }
            format!("{head}{tail}-dev")
        }
        _ => job_name(owner.kind, &owner.name, plan.short_hash()),
    }
}

/// The Job that applies `plan`.
pub fn render(plan: &Plan, owner: &Owner, settings: &JobSettings) -> Job {
    let name = plan_job_name(plan, owner);
    let sidecar = plan.dev.sidecar().map(|driver| {
        let image = settings
            .dev_images
            .get(driver)
            .cloned()
            .unwrap_or_else(|| format!("{driver}:latest"));
        dev_sidecar(driver, &image, &plan.dev_override)
    });
    let mut task = plan.task.clone();
    if sidecar.is_some() {
        task.dev_url_env = Some(crate::plan::ENV_DEV_URL.into());
        task.dev_wait_seconds = Some(DEV_WAIT_SECONDS);
    }
    let inline_name = inputs_name(plan, owner);
    let mut env = vec![
        EnvVar {
            name: contract::TASK_ENV.into(),
            value: Some(task.encode()),
            ..Default::default()
        },
        EnvVar {
            name: "TMPDIR".into(),
            value: Some("/tmp".into()),
            ..Default::default()
        },
    ];
    if let Some((_, _, url)) = &sidecar {
        // Not a secret: the sidecar trusts connections from its own pod's loopback only.
        env.push(EnvVar {
            name: crate::plan::ENV_DEV_URL.into(),
            value: Some(url.clone()),
            ..Default::default()
        });
    }
    env.extend(plan.env.iter().cloned().map(|mut var| {
        if let Some(selector) = var
            .value_from
            .as_mut()
            .and_then(|from| from.config_map_key_ref.as_mut())
            .filter(|selector| selector.name == INLINE_PLACEHOLDER)
        {
            selector.name = inline_name.clone();
        }
        var
    }));

    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity("256Mi".into())),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..Default::default()
    }];
    if let Some(inputs) = &plan.inputs {
        let source = match inputs {
            // Only the files: the inline ConfigMap may also hold plain-text values for env vars.
            InputSource::Inline { files } => ConfigMapVolumeSource {
                name: inline_name.clone(),
                items: Some(items(files)),
                ..Default::default()
            },
            InputSource::ConfigMap { name, keys } => ConfigMapVolumeSource {
                name: name.clone(),
                items: keys.as_deref().map(items),
                ..Default::default()
            },
        };
        volumes.push(Volume {
            name: "inputs".into(),
            config_map: Some(source),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "inputs".into(),
            mount_path: INPUTS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }

    let (init_containers, dev_volumes) = match sidecar {
        Some((container, volumes, _)) => (Some(vec![container]), volumes),
        None => (None, Vec::new()),
    };
    volumes.extend(dev_volumes);
    let command = owner.kind.command();
    let container = Container {
        name: RUNNER_CONTAINER.into(),
        image: Some(settings.runner_image.clone()),
        image_pull_policy: settings.image_pull_policy.clone(),
        args: Some(vec![command.into()]),
        env: Some(env),
        volume_mounts: Some(mounts),
        resources: settings.resources.clone(),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut pod_labels = owner_labels(owner.kind, &owner.name);
    pod_labels.insert(LABEL_HASH.into(), plan.short_hash().into());
    // `spec.devDB.metadata` was for the dev database's pod, which is this pod when it brings one.
    let mut pod_annotations = BTreeMap::new();
    if init_containers.is_some() {
        for (key, value) in &plan.dev_override.labels {
            pod_labels
                .entry(key.clone())
                .or_insert_with(|| value.clone());
        }
        pod_annotations.extend(plan.dev_override.annotations.clone());
    }
    Job {
        metadata: metadata(name, owner, plan),
        spec: Some(JobSpec {
            backoff_limit: Some(plan.backoff_limit),
            active_deadline_seconds: settings.active_deadline_seconds,
            ttl_seconds_after_finished: settings.ttl_seconds_after_finished,
            pod_replacement_policy: Some("Failed".into()),
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![
                    // Retrying cannot fix bad SQL, a lint violation or a checksum.
                    PodFailurePolicyRule {
                        action: "FailJob".into(),
                        on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                            container_name: Some(RUNNER_CONTAINER.into()),
                            operator: "In".into(),
                            values: vec![i32::from(EXIT_DEFINITIVE)],
                        }),
                        on_pod_conditions: None,
                    },
                    // A node drained under the pod is not the apply's fault.
                    PodFailurePolicyRule {
                        action: "Ignore".into(),
                        on_exit_codes: None,
                        on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                            type_: "DisruptionTarget".into(),
                            status: "True".into(),
                        }]),
                    },
                ],
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: (!pod_annotations.is_empty()).then_some(pod_annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: settings.service_account.clone(),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    image_pull_secrets: (!settings.image_pull_secrets.is_empty()).then(|| {
                        settings
                            .image_pull_secrets
                            .iter()
                            .map(|name| LocalObjectReference { name: name.clone() })
                            .collect()
                    }),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        fs_group: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    init_containers,
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}
