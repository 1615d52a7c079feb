//! The dev database sidecar: a throwaway server next to the runner, on the pod's loopback.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, ResourceRequirements, SecurityContext,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::reconcile::validate::DevOverride;

/// How long the runner waits for its dev database sidecar to accept connections.
pub const DEV_WAIT_SECONDS: u64 = 120;

/// The dev database sidecar of a driver: its container and the URL the runner reaches it at.
/// Credentials never leave the pod: the server listens on the pod's loopback only and trusts it.
/// `described`: the user's `devURL` names it, so its environment and ports are `devDB`'s (the
/// user's credentials), and the URL returned is unused.
pub(super) fn dev_sidecar(
    driver: &str,
    image: &str,
    over: &DevOverride,
    described: bool,
) -> (Container, Vec<Volume>, String) {
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
        env: Some(if described {
            over.env.clone()
        } else {
            env.into_iter()
                .map(|(name, value)| EnvVar {
                    name: name.into(),
                    value: Some(value.into()),
                    ..Default::default()
                })
                .collect()
        }),
        ports: Some(if described && !over.ports.is_empty() {
            over.ports.clone()
        } else {
            vec![k8s_openapi::api::core::v1::ContainerPort {
                container_port: port,
                name: Some("dev-db".into()),
                ..Default::default()
            }]
        }),
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
