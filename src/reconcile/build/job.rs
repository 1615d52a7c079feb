//! The Job that applies a plan: the runner's container, its inputs, its hardening, and how it fails.

use contract::{self, EXIT_DEFINITIVE};
use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    LocalObjectReference, PodSecurityContext, PodSpec, PodTemplateSpec, SeccompProfile,
    SecretKeySelector, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::credentials::credentials_name;
use super::dev_database::dev_sidecar;
use super::inputs::{inputs_name, items};
use super::*;
use crate::reconcile::validate::{
    CREDENTIALS_PLACEHOLDER, DevNeed, INLINE_PLACEHOLDER, INPUTS_DIR, InputSource, Plan,
};

/// A container's exit code when its process died of SIGKILL (128 + 9), as the kubelet reports it.
const EXIT_SIGKILL: i32 = 128 + 9;

/// The name of the Job that applies `plan`: `…-dev` for the second Job, which brings the dev
/// database the first one found it needs.
pub fn plan_job_name(plan: &Plan, owner: &Owner) -> String {
    match plan.dev {
        DevNeed::Found(_) => {
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
    // Described: the user's devURL reaches the sidecar with the user's credentials.
    let described = matches!(plan.dev, DevNeed::Described(_));
    let sidecar = plan.dev.sidecar().map(|driver| {
        let image = settings
            .dev_images
            .get(driver)
            .cloned()
            .unwrap_or_else(|| format!("{driver}:latest"));
        dev_sidecar(driver, &image, &plan.dev_override, described)
    });
    let mut task = plan.task.clone();
    if sidecar.is_some() {
        if !described {
            task.dev_url_env = Some(crate::reconcile::validate::ENV_DEV_URL.into());
        }
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
    if let Some((_, _, url)) = sidecar.as_ref().filter(|_| !described) {
        // Not a secret: the sidecar trusts connections from its own pod's loopback only.
        env.push(EnvVar {
            name: crate::reconcile::validate::ENV_DEV_URL.into(),
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
        if let Some(selector) = var
            .value_from
            .as_mut()
            .and_then(|from| from.secret_key_ref.as_mut())
            .filter(|selector| selector.name == CREDENTIALS_PLACEHOLDER)
        {
            selector.name = credentials_name(plan, owner);
        }
        var
    }));
    // More env of the install's and the resource's (checked in validate); the resource's wins
    // for a name both set.
    let extra = &plan.job_pod.env;
    env.extend(
        settings
            .env
            .iter()
            .filter(|var| extra.iter().flatten().all(|own| own.name != var.name))
            .cloned(),
    );
    env.extend(extra.iter().flatten().cloned());
    // The install-wide token, where the resource gives none: optional, so a namespace without
    // the Secret runs without a token (the runner's log says so) instead of never starting.
    if let Some(token) = &settings.atlas_token
        && !env.iter().any(|var| var.name == contract::ATLAS_TOKEN_ENV)
    {
        env.push(EnvVar {
            name: contract::ATLAS_TOKEN_ENV.into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: token.name.clone(),
                    key: token.key.clone(),
                    optional: Some(true),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }

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
    let pod = &plan.job_pod;
    let container = Container {
        name: RUNNER_CONTAINER.into(),
        image: Some(settings.runner_image.clone()),
        image_pull_policy: settings.image_pull_policy.clone(),
        args: Some(vec![command.into()]),
        env: Some(env),
        volume_mounts: Some(mounts),
        resources: pod.resources.clone().or_else(|| settings.resources.clone()),
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
    // Labels: the install's, the resource's over them, and the operator's own over all (its
    // selectors and the hash label must hold).
    let mut pod_labels = settings.pod_labels.clone();
    pod_labels.extend(pod.labels.clone().unwrap_or_default());
    // `spec.devDB.metadata` was for the dev database's pod, which is this pod when it brings one;
    // the resource's annotations win over the install's.
    let mut pod_annotations = settings.pod_annotations.clone();
    if init_containers.is_some() {
        pod_labels.extend(plan.dev_override.labels.clone());
        pod_annotations.extend(plan.dev_override.annotations.clone());
    }
    pod_labels.extend(owner_labels(owner.kind, &owner.name));
    pod_labels.insert(LABEL_HASH.into(), plan.short_hash().into());
    pod_annotations.extend(pod.annotations.clone().unwrap_or_default());
    let mut node_selector = settings.node_selector.clone();
    node_selector.extend(pod.node_selector.clone().unwrap_or_default());
    let image_pull_secrets: Vec<LocalObjectReference> = match &pod.image_pull_secrets {
        Some(own) => own.clone(),
        None => settings
            .image_pull_secrets
            .iter()
            .map(|name| LocalObjectReference { name: name.clone() })
            .collect(),
    };
    Job {
        metadata: metadata(name, owner, plan),
        spec: Some(JobSpec {
            // Released once its credentials Secret exists (the apply step makes it, owned by
            // this Job), so the pod never starts without it.
            suspend: (!plan.credentials.is_empty()).then_some(true),
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
                    // The runner SIGKILLed by anything but a drain (ignored above) is the OOM
                    // killer at the container's memory limit: the same limit kills it again.
                    PodFailurePolicyRule {
                        action: "FailJob".into(),
                        on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                            container_name: Some(RUNNER_CONTAINER.into()),
                            operator: "In".into(),
                            values: vec![EXIT_SIGKILL],
                        }),
                        on_pod_conditions: None,
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
                    service_account_name: pod
                        .service_account_name
                        .clone()
                        .or_else(|| settings.service_account.clone()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    image_pull_secrets: (!image_pull_secrets.is_empty())
                        .then_some(image_pull_secrets),
                    tolerations: pod
                        .tolerations
                        .clone()
                        .or_else(|| settings.tolerations.clone()),
                    node_selector: (!node_selector.is_empty()).then_some(node_selector),
                    affinity: pod.affinity.clone().or_else(|| settings.affinity.clone()),
                    priority_class_name: pod
                        .priority_class_name
                        .clone()
                        .or_else(|| settings.priority_class_name.clone()),
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
