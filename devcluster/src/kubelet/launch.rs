//! What a container's start needs, put together: the program for its image, its environment,
//! its mounts (volumes and the termination-message file) and its per-run files. A container that
//! cannot start yet gets the waiting reason and message a kubelet would show.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};

use super::Context;
use super::database::{self, Flavour};
use super::env::{self, Lookup};
use super::image::ImageError;
use super::sandbox::{Launch, Mount, Source};
use super::volumes::Prepared;

const DEFAULT_TERMINATION_PATH: &str = "/dev/termination-log";

/// Why a container waits: its reason (`CreateContainerConfigError`, `ErrImagePull`, …) and
/// message.
pub type Waiting = (&'static str, String);

/// The files of one run of a container, under the pod's directory.
pub struct Files {
    dir: PathBuf,
    /// Bind-mounted at the container's `terminationMessagePath`.
    pub termination_message: PathBuf,
    /// stdout and stderr.
    pub log: PathBuf,
    /// A database image's data directory when no volume holds it; removed when the run ends.
    pub data: PathBuf,
}

impl Files {
    pub fn new(pod_dir: &Path, container: &str, attempt: u32) -> Files {
        let dir = pod_dir
            .join("containers")
            .join(container)
            .join(attempt.to_string());
        Files {
            termination_message: dir.join("termination-log"),
            log: pod_dir
                .join("logs")
                .join(container)
                .join(format!("{attempt}.log")),
            data: dir.join("data"),
            dir,
        }
    }

    fn create(&self) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        if let Some(parent) = self.log.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&self.termination_message, b"")
    }
}

/// The launch of `spec` (a container of `pod`) and the program it runs, or why it must wait.
pub async fn build(
    ctx: &Context,
    pod: &Pod,
    spec: &Container,
    volumes: &HashMap<String, Prepared>,
    files: &Files,
) -> Result<(Launch, String), Waiting> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let image = spec.image.clone().unwrap_or_default();
    let process = ctx
        .programs
        .resolve(
            &image,
            spec.command.as_deref().unwrap_or_default(),
            spec.args.as_deref().unwrap_or_default(),
        )
        .map_err(|err| match err {
            ImageError::NoCommand(_) => ("CreateContainerError", err.to_string()),
            _ => ("ErrImagePull", err.to_string()),
        })?;

    let mut base = vec![
        ("PATH".to_string(), process.path.clone()),
        ("HOSTNAME".to_string(), pod_name.clone()),
        // The sandbox's fresh root: a host's dotfiles (~/.kube/config) never leak in.
        ("HOME".to_string(), "/".to_string()),
    ];
    base.extend(process.image_env.clone());
    if let Some(flavour) = process.database {
        // The server's port: pods share the host's network, so it is the declared one.
        let declared: Vec<i32> = spec
            .ports
            .iter()
            .flatten()
            .map(|port| port.container_port)
            .collect();
        let port = database::port(flavour, &declared);
        base.push((flavour.port_variable().to_string(), port.to_string()));
    }
    base.extend(service_env(ctx.apiserver_port));
    let mut lookup = Lookup::new(ctx.client.clone(), &namespace);
    let vars = env::resolve(pod, spec, &mut lookup, base)
        .await
        .map_err(|err| ("CreateContainerConfigError", err.0))?;
    let value = |name: &str| {
        vars.iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    // `$(VAR)` in `command` and `args`, against the container's final environment.
    let argv: Vec<String> = process
        .argv
        .iter()
        .map(|arg| env::expand(arg, value))
        .collect();

    let io = |err: std::io::Error| ("CreateContainerError", err.to_string());
    files.create().map_err(io)?;

    let mut mounts = vec![Mount {
        target: PathBuf::from(
            spec.termination_message_path
                .as_deref()
                .unwrap_or(DEFAULT_TERMINATION_PATH),
        ),
        source: Source::Bind {
            host: files.termination_message.clone(),
            read_only: false,
        },
    }];
    // The programs the image carries, at their paths in the image.
    for (host, target) in &process.files {
        mounts.push(Mount {
            target: target.clone(),
            source: Source::Bind {
                host: host.clone(),
                read_only: true,
            },
        });
    }
    for mount in spec.volume_mounts.iter().flatten() {
        let Some(volume) = volumes.get(&mount.name) else {
            return Err((
                "CreateContainerConfigError",
                format!("volume {:?} is not a volume of the pod", mount.name),
            ));
        };
        let sub = match (&mount.sub_path, &mount.sub_path_expr) {
            (Some(sub), _) if !sub.is_empty() => sub.clone(),
            (_, Some(expr)) if !expr.is_empty() => env::expand(expr, value),
            _ => String::new(),
        };
        if sub.split('/').any(|part| part == "..") || sub.starts_with('/') {
            return Err((
                "CreateContainerConfigError",
                format!("subPath {sub:?} must stay inside the volume"),
            ));
        }
        let mut host = volume.host.clone();
        if !sub.is_empty() {
            host = host.join(&sub);
            if !host.exists() {
                // A kubelet creates a missing subPath as a directory.
                std::fs::create_dir_all(&host).map_err(io)?;
            }
        }
        mounts.push(Mount {
            target: PathBuf::from(&mount.mount_path),
            source: Source::Bind {
                host,
                read_only: mount.read_only == Some(true) || volume.always_read_only,
            },
        });
    }
    if let Some(flavour) = process.database {
        let template = match flavour {
            Flavour::MySql | Flavour::MariaDb => ctx.templates.mariadb().await,
            Flavour::Postgres => None,
        };
        database_mounts(flavour, &mut mounts, files, template, value).map_err(io)?;
    }
    let working_dir = spec.working_dir.clone().unwrap_or_else(|| "/".to_string());
    let inside_a_mount = mounts
        .iter()
        .any(|m| Path::new(&working_dir).starts_with(&m.target));
    if !Path::new(&working_dir).exists() && !inside_a_mount {
        // A runtime creates the working directory; here it is made in the sandbox only.
        mounts.push(Mount {
            target: PathBuf::from(&working_dir),
            source: Source::Dir,
        });
    }
    let program = argv.first().cloned().unwrap_or_default();
    Ok((
        Launch {
            argv,
            env: vars,
            working_dir,
            hostname: pod_name.chars().take(63).collect(),
            mounts,
            log: files.log.clone(),
        },
        program,
    ))
}

/// A database image's own files: its entrypoint; its data directory (fresh for this run unless a
/// volume holds it), socket directory and `/tmp` (the sandbox's own unless a volume is there);
/// the kubelet's fresh data directory to copy, if any.
fn database_mounts(
    flavour: Flavour,
    mounts: &mut Vec<Mount>,
    files: &Files,
    template: Option<PathBuf>,
    env: impl Fn(&str) -> Option<String>,
) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let script = files.dir.join("docker-entrypoint.sh");
    std::fs::write(&script, flavour.entrypoint())?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    mounts.push(Mount {
        target: PathBuf::from(database::ENTRYPOINT),
        source: Source::Bind {
            host: script,
            read_only: true,
        },
    });
    let covered =
        |mounts: &[Mount], path: &Path| mounts.iter().any(|m| path.starts_with(&m.target));
    let data = flavour.data_dir(env);
    if !covered(mounts, &data) {
        std::fs::create_dir_all(&files.data)?;
        mounts.push(Mount {
            target: data,
            source: Source::Bind {
                host: files.data.clone(),
                read_only: false,
            },
        });
    }
    if let Some(template) = template {
        mounts.push(Mount {
            target: PathBuf::from(database::MARIADB_TEMPLATE),
            source: Source::Bind {
                host: template,
                read_only: true,
            },
        });
    }
    for dir in [flavour.socket_dir(), "/tmp"] {
        if !covered(mounts, Path::new(dir)) {
            mounts.push(Mount {
                target: PathBuf::from(dir),
                source: Source::Dir,
            });
        }
    }
    Ok(())
}

/// What a kubelet gives every container for the `kubernetes` Service; here the API server on
/// loopback (its certificate is valid for 127.0.0.1).
pub fn service_env(port: u16) -> Vec<(String, String)> {
    let ip = super::NODE_IP;
    [
        ("KUBERNETES_SERVICE_HOST", ip.to_string()),
        ("KUBERNETES_SERVICE_PORT", port.to_string()),
        ("KUBERNETES_SERVICE_PORT_HTTPS", port.to_string()),
        ("KUBERNETES_PORT", format!("tcp://{ip}:{port}")),
        ("KUBERNETES_PORT_443_TCP", format!("tcp://{ip}:{port}")),
        ("KUBERNETES_PORT_443_TCP_PROTO", "tcp".to_string()),
        ("KUBERNETES_PORT_443_TCP_PORT", port.to_string()),
        ("KUBERNETES_PORT_443_TCP_ADDR", ip.to_string()),
    ]
    .map(|(k, v)| (k.to_string(), v))
    .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_variables_point_at_the_api_server() {
        let vars = service_env(6443);
        assert!(vars.contains(&("KUBERNETES_SERVICE_HOST".into(), "127.0.0.1".into())));
        assert!(vars.contains(&("KUBERNETES_SERVICE_PORT".into(), "6443".into())));
    }
}
