//! A pod's volumes, materialised as directories under the pod's own directory before its first
//! container starts; the sandbox then mounts them at each container's `mountPath`.
//!
//! ConfigMap, Secret, downward-API and projected volumes get a kubelet's layout (its "atomic
//! writer"): the files live in a timestamped directory `..<time>/`, a symlink `..data` points at
//! it, and each top-level name is a symlink into `..data/`. Programs that watch for the `..data`
//! swap (and tools that follow the symlinks) see what they would see on a real node. Content is
//! written once: later edits to the ConfigMap or Secret do not reach a running pod.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    DownwardAPIVolumeFile, KeyToPath, Pod, ServiceAccount, Volume, VolumeProjection,
};
use kube::api::PostParams;
use kube::{Api, Client};

use super::env::{self, Lookup};

/// A kubelet's default file mode for these volumes (`defaultMode: 420`).
const DEFAULT_MODE: i32 = 0o644;
/// The lifetime a kubelet asks for when a projected token gives none.
const DEFAULT_TOKEN_SECONDS: i64 = 3600;
const API_LIMIT: Duration = Duration::from_secs(20);

/// Why a volume could not be set up (the pod stays in `ContainerCreating` and it is retried).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("MountVolume.SetUp failed for volume {volume:?} : {message}")]
pub struct VolumeError {
    pub volume: String,
    pub message: String,
}

/// A volume ready to mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// The directory (or, for `hostPath`, the path) to mount.
    pub host: PathBuf,
    /// Whether it is always mounted read-only, whatever the mount says (as a kubelet does for
    /// ConfigMap, Secret, downward-API and projected volumes).
    pub always_read_only: bool,
}

/// One file of a volume: its path relative to the volume, content and mode.
type Files = BTreeMap<String, (Vec<u8>, u32)>;

/// Sets up every volume of `pod` under `dir/volumes/`.
pub async fn prepare(
    pod: &Pod,
    dir: &Path,
    client: &Client,
    lookup: &mut Lookup,
) -> Result<HashMap<String, Prepared>, VolumeError> {
    let mut prepared = HashMap::new();
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.clone());
    for volume in volumes.iter().flatten() {
        let error = |message: String| VolumeError {
            volume: volume.name.clone(),
            message,
        };
        let target = dir.join("volumes").join(&volume.name);
        let result = prepare_one(pod, volume, &target, client, lookup)
            .await
            .map_err(error)?;
        prepared.insert(volume.name.clone(), result);
    }
    Ok(prepared)
}

async fn prepare_one(
    pod: &Pod,
    volume: &Volume,
    target: &Path,
    client: &Client,
    lookup: &mut Lookup,
) -> Result<Prepared, String> {
    let written = |files: Files| -> Result<Prepared, String> {
        write_atomic(target, &files)
            .map_err(|err| format!("writing {}: {err}", target.display()))?;
        Ok(Prepared {
            host: target.to_path_buf(),
            always_read_only: true,
        })
    };
    if volume.empty_dir.is_some() {
        fs::create_dir_all(target).map_err(|err| format!("{}: {err}", target.display()))?;
        // Containers may run as any user: an emptyDir is world-writable, as on a node.
        fs::set_permissions(target, fs::Permissions::from_mode(0o777))
            .map_err(|err| format!("{}: {err}", target.display()))?;
        return Ok(Prepared {
            host: target.to_path_buf(),
            always_read_only: false,
        });
    }
    if let Some(host_path) = &volume.host_path {
        return Ok(Prepared {
            host: PathBuf::from(&host_path.path),
            always_read_only: false,
        });
    }
    if let Some(source) = &volume.config_map {
        let default = source.default_mode.unwrap_or(DEFAULT_MODE);
        let mut files = Files::new();
        match lookup.config_map(&source.name).await.map_err(|e| e.0)? {
            Some(data) => add_keys(
                &mut files,
                "configmap",
                &source.name,
                &data,
                source.items.as_deref(),
                default,
                source.optional == Some(true),
            )?,
            None if source.optional == Some(true) => {}
            None => return Err(format!("configmap {:?} not found", source.name)),
        }
        return written(files);
    }
    if let Some(source) = &volume.secret {
        let name = source.secret_name.clone().unwrap_or_default();
        let default = source.default_mode.unwrap_or(DEFAULT_MODE);
        let mut files = Files::new();
        match lookup.secret(&name).await.map_err(|e| e.0)? {
            Some(data) => add_keys(
                &mut files,
                "secret",
                &name,
                &data,
                source.items.as_deref(),
                default,
                source.optional == Some(true),
            )?,
            None if source.optional == Some(true) => {}
            None => return Err(format!("secret {name:?} not found")),
        }
        return written(files);
    }
    if let Some(source) = &volume.downward_api {
        let default = source.default_mode.unwrap_or(DEFAULT_MODE);
        let mut files = Files::new();
        add_downward(&mut files, pod, source.items.as_deref(), default)?;
        return written(files);
    }
    if let Some(source) = &volume.projected {
        let default = source.default_mode.unwrap_or(DEFAULT_MODE);
        let mut files = Files::new();
        for projection in source.sources.iter().flatten() {
            add_projection(&mut files, pod, projection, default, client, lookup).await?;
        }
        return written(files);
    }
    Err("devcluster-kubelet supports only emptyDir, hostPath, configMap, secret, downwardAPI and projected volumes".to_string())
}

async fn add_projection(
    files: &mut Files,
    pod: &Pod,
    projection: &VolumeProjection,
    default: i32,
    client: &Client,
    lookup: &mut Lookup,
) -> Result<(), String> {
    if let Some(source) = &projection.config_map {
        let optional = source.optional == Some(true);
        match lookup.config_map(&source.name).await.map_err(|e| e.0)? {
            Some(data) => add_keys(
                files,
                "configmap",
                &source.name,
                &data,
                source.items.as_deref(),
                default,
                optional,
            )?,
            None if optional => {}
            None => return Err(format!("configmap {:?} not found", source.name)),
        }
    }
    if let Some(source) = &projection.secret {
        let optional = source.optional == Some(true);
        match lookup.secret(&source.name).await.map_err(|e| e.0)? {
            Some(data) => add_keys(
                files,
                "secret",
                &source.name,
                &data,
                source.items.as_deref(),
                default,
                optional,
            )?,
            None if optional => {}
            None => return Err(format!("secret {:?} not found", source.name)),
        }
    }
    if let Some(source) = &projection.downward_api {
        add_downward(files, pod, source.items.as_deref(), default)?;
    }
    if let Some(source) = &projection.service_account_token {
        let token = request_token(
            pod,
            client,
            source.audience.as_deref(),
            source.expiration_seconds,
        )
        .await?;
        insert(files, &source.path, token.into_bytes(), default)?;
    }
    if projection.cluster_trust_bundle.is_some() {
        return Err(
            "clusterTrustBundle projections are not supported by devcluster-kubelet".to_string(),
        );
    }
    Ok(())
}

/// A token for the pod's service account, bound to the pod (the NodeRestriction admission
/// plugin lets a node ask only for tokens bound to its own pods), as a kubelet asks for it.
async fn request_token(
    pod: &Pod,
    client: &Client,
    audience: Option<&str>,
    expiration: Option<i64>,
) -> Result<String, String> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".to_string());
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.map(|a| vec![a.to_string()]).unwrap_or_default(),
            expiration_seconds: Some(expiration.unwrap_or(DEFAULT_TOKEN_SECONDS)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".to_string()),
                kind: Some("Pod".to_string()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..TokenRequest::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    let params = PostParams::default();
    let started = tokio::time::Instant::now();
    let answer = loop {
        let call = api.create_token_request(&account, &params, &request);
        match tokio::time::timeout(API_LIMIT, call).await {
            Ok(Ok(answer)) => break answer,
            // The Node authorizer links a pod to its node a moment after the binding.
            Ok(Err(kube::Error::Api(status)))
                if status.code == 403 && started.elapsed() < env::FORBIDDEN_GRACE =>
            {
                tokio::time::sleep(env::FORBIDDEN_RETRY).await;
            }
            Ok(Err(err)) => {
                return Err(format!(
                    "requesting a token for service account {account:?}: {err}"
                ));
            }
            Err(_) => {
                return Err(format!(
                    "requesting a token for service account {account:?}: no answer"
                ));
            }
        }
    };
    answer
        .status
        .map(|status| status.token)
        .ok_or_else(|| format!("the token request for {account:?} returned no token"))
}

fn add_keys(
    files: &mut Files,
    kind: &str,
    name: &str,
    data: &HashMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default: i32,
    optional: bool,
) -> Result<(), String> {
    match items {
        None => {
            for (key, value) in data {
                insert(files, key, value.clone(), default)?;
            }
        }
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(value) => insert(
                        files,
                        &item.path,
                        value.clone(),
                        item.mode.unwrap_or(default),
                    )?,
                    None if optional => {}
                    None => {
                        return Err(format!(
                            "{kind} {name:?} has no key {:?} (named in the volume's items)",
                            item.key
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

fn add_downward(
    files: &mut Files,
    pod: &Pod,
    items: Option<&[DownwardAPIVolumeFile]>,
    default: i32,
) -> Result<(), String> {
    for item in items.unwrap_or_default() {
        let value = match (&item.field_ref, &item.resource_field_ref) {
            (Some(field), _) => env::field_value(pod, &field.field_path).map_err(|e| e.0)?,
            (None, Some(resource)) => {
                return Err(format!(
                    "resourceFieldRef {:?} is not supported by devcluster-kubelet",
                    resource.resource
                ));
            }
            (None, None) => String::new(),
        };
        insert(
            files,
            &item.path,
            value.into_bytes(),
            item.mode.unwrap_or(default),
        )?;
    }
    Ok(())
}

/// Adds a file, refusing paths that would leave the volume (as the API server's validation
/// does; checked again here because the files are written on the host).
fn insert(files: &mut Files, path: &str, content: Vec<u8>, mode: i32) -> Result<(), String> {
    let relative = Path::new(path);
    let clean = !path.is_empty()
        && relative
            .components()
            .all(|component| matches!(component, Component::Normal(_)))
        && !path.starts_with("..");
    if !clean {
        return Err(format!("invalid path {path:?} in a volume"));
    }
    files.insert(path.to_string(), (content, (mode & 0o777) as u32));
    Ok(())
}

/// Writes `files` into `dir` with a kubelet's layout: `..<time>/` holds them, `..data` links to
/// it, and each top-level entry links into `..data/`.
pub fn write_atomic(dir: &Path, files: &Files) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let now = jiff::Timestamp::now();
    let stamp = now.strftime("..%Y_%m_%d_%H_%M_%S.%f").to_string();
    let data_dir = dir.join(&stamp);
    fs::create_dir_all(&data_dir)?;
    let mut top_level = std::collections::BTreeSet::new();
    for (path, (content, mode)) in files {
        let file = data_dir.join(path);
        if let Some(parent) = file.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&file, content)?;
        fs::set_permissions(&file, fs::Permissions::from_mode(*mode))?;
        if let Some(Component::Normal(first)) = Path::new(path).components().next() {
            top_level.insert(first.to_os_string());
        }
    }
    let staging = dir.join("..data_tmp");
    let _ = fs::remove_file(&staging);
    symlink(&stamp, &staging)?;
    fs::rename(&staging, dir.join("..data"))?;
    for name in top_level {
        let link = dir.join(&name);
        let _ = fs::remove_file(&link);
        symlink(Path::new("..data").join(&name), &link)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_a_kubelets() {
        let dir = std::env::temp_dir().join(format!("devcluster-volume-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut files = Files::new();
        insert(&mut files, "a.sql", b"create table a;".to_vec(), 0o644).unwrap();
        insert(&mut files, "sub/b.txt", b"b".to_vec(), 0o600).unwrap();
        write_atomic(&dir, &files).unwrap();

        let data = fs::read_link(dir.join("..data")).unwrap();
        assert!(data.to_string_lossy().starts_with("..20"), "{data:?}");
        assert_eq!(
            fs::read_link(dir.join("a.sql")).unwrap(),
            Path::new("..data/a.sql")
        );
        assert_eq!(
            fs::read_link(dir.join("sub")).unwrap(),
            Path::new("..data/sub")
        );
        assert_eq!(
            fs::read_to_string(dir.join("a.sql")).unwrap(),
            "create table a;"
        );
        assert_eq!(fs::read_to_string(dir.join("sub/b.txt")).unwrap(), "b");
        let mode = fs::metadata(dir.join("sub/b.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn paths_stay_inside_the_volume() {
        let mut files = Files::new();
        assert!(insert(&mut files, "../etc/passwd", vec![], 0o644).is_err());
        assert!(insert(&mut files, "/abs", vec![], 0o644).is_err());
        assert!(insert(&mut files, "..data", vec![], 0o644).is_err());
        assert!(insert(&mut files, "", vec![], 0o644).is_err());
        assert!(insert(&mut files, "ok/file", vec![], 0o644).is_ok());
    }
}
