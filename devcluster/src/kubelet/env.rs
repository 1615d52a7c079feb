//! A container's environment, as a kubelet builds it: the service variables first, then
//! `envFrom` in order, then `env` in order (later wins), with `$(VAR)` references expanded
//! against what is defined so far. A Secret, ConfigMap or key that does not exist (and is not
//! `optional`) is a [`ConfigError`], which the pod worker shows as `CreateContainerConfigError`
//! and retries, exactly as a kubelet does.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, Pod, Secret};
use kube::{Api, Client};

/// The API server answers 403 for a Secret of a pod the Node authorizer has not yet linked to
/// this node (its graph follows the binding a moment later): retried this long before it counts.
pub const FORBIDDEN_GRACE: Duration = Duration::from_secs(5);
/// How soon such a 403 is asked again.
pub const FORBIDDEN_RETRY: Duration = Duration::from_millis(100);
const API_LIMIT: Duration = Duration::from_secs(20);

/// Why a container cannot be configured yet; the message is the kubelet's.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Reads the namespace's Secrets and ConfigMaps as the node, each at most once per lookup.
pub struct Lookup {
    client: Client,
    namespace: String,
    secrets: HashMap<String, Option<Secret>>,
    config_maps: HashMap<String, Option<ConfigMap>>,
}

impl Lookup {
    pub fn new(client: Client, namespace: &str) -> Lookup {
        Lookup {
            client,
            namespace: namespace.to_string(),
            secrets: HashMap::new(),
            config_maps: HashMap::new(),
        }
    }

    /// A Secret's data (decoded), or `None` when it does not exist.
    pub async fn secret(
        &mut self,
        name: &str,
    ) -> Result<Option<HashMap<String, Vec<u8>>>, ConfigError> {
        if !self.secrets.contains_key(name) {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
            let found = get_opt(&api, "secret", name).await?;
            self.secrets.insert(name.to_string(), found);
        }
        Ok(self.secrets[name].as_ref().map(|secret| {
            let mut data: HashMap<String, Vec<u8>> = secret
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect();
            // `stringData` is write-only (the API server folds it into `data`); kept for safety.
            for (k, v) in secret.string_data.iter().flatten() {
                data.insert(k.clone(), v.clone().into_bytes());
            }
            data
        }))
    }

    /// A ConfigMap's `data` and `binaryData`, or `None` when it does not exist.
    pub async fn config_map(
        &mut self,
        name: &str,
    ) -> Result<Option<HashMap<String, Vec<u8>>>, ConfigError> {
        if !self.config_maps.contains_key(name) {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
            let found = get_opt(&api, "configmap", name).await?;
            self.config_maps.insert(name.to_string(), found);
        }
        Ok(self.config_maps[name].as_ref().map(|cm| {
            let mut data: HashMap<String, Vec<u8>> = cm
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
                .collect();
            for (k, v) in cm.binary_data.iter().flatten() {
                data.insert(k.clone(), v.0.clone());
            }
            data
        }))
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

async fn get_opt<K>(api: &Api<K>, kind: &str, name: &str) -> Result<Option<K>, ConfigError>
where
    K: kube::Resource + Clone + k8s_openapi::serde::de::DeserializeOwned + std::fmt::Debug,
{
    let started = tokio::time::Instant::now();
    loop {
        let result = tokio::time::timeout(API_LIMIT, api.get_opt(name)).await;
        match result {
            Ok(Ok(found)) => return Ok(found),
            Ok(Err(kube::Error::Api(status)))
                if status.code == 403 && started.elapsed() < FORBIDDEN_GRACE =>
            {
                tokio::time::sleep(FORBIDDEN_RETRY).await;
            }
            Ok(Err(err)) => return Err(ConfigError(format!("reading {kind} {name:?}: {err}"))),
            Err(_) => {
                return Err(ConfigError(format!(
                    "reading {kind} {name:?}: no answer within {}s",
                    API_LIMIT.as_secs()
                )));
            }
        }
    }
}

/// Whether a kubelet would export this key as a variable (it skips the others of `envFrom`).
fn is_env_name(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == '-' || c == '.')
        && chars.all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

/// The value of a `fieldRef` (the fields a kubelet offers to env variables).
pub fn field_value(pod: &Pod, field_path: &str) -> Result<String, ConfigError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let quoted = |prefix: &str| {
        field_path
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix("']"))
            .map(str::to_string)
    };
    let value = match field_path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        // Every pod has the node's one address.
        "status.hostIP" | "status.hostIPs" | "status.podIP" | "status.podIPs" => {
            Some(super::NODE_IP.to_string())
        }
        _ => {
            if let Some(key) = quoted("metadata.labels['") {
                Some(
                    meta.labels
                        .as_ref()
                        .and_then(|l| l.get(&key).cloned())
                        .unwrap_or_default(),
                )
            } else if let Some(key) = quoted("metadata.annotations['") {
                Some(
                    meta.annotations
                        .as_ref()
                        .and_then(|a| a.get(&key).cloned())
                        .unwrap_or_default(),
                )
            } else {
                return Err(ConfigError(format!(
                    "unsupported fieldRef {field_path:?} (devcluster-kubelet)"
                )));
            }
        }
    };
    Ok(value.unwrap_or_default())
}

fn utf8(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Builds the environment of `container`: `base` (the image's and the service variables) first,
/// then `envFrom`, then `env`. The order of first definition is kept, as a kubelet keeps it.
pub async fn resolve(
    pod: &Pod,
    container: &Container,
    lookup: &mut Lookup,
    base: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut vars = Vars::default();
    for (key, value) in base {
        vars.set(key, value);
    }
    let namespace = lookup.namespace().to_string();
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        if let Some(reference) = &source.config_map_ref {
            match lookup.config_map(&reference.name).await? {
                Some(data) => {
                    for (key, value) in sorted(data) {
                        let name = format!("{prefix}{key}");
                        if is_env_name(&name) {
                            vars.set(name, utf8(&value));
                        }
                    }
                }
                None if reference.optional == Some(true) => {}
                None => {
                    return Err(ConfigError(format!(
                        "configmap {:?} not found",
                        reference.name
                    )));
                }
            }
        }
        if let Some(reference) = &source.secret_ref {
            match lookup.secret(&reference.name).await? {
                Some(data) => {
                    for (key, value) in sorted(data) {
                        let name = format!("{prefix}{key}");
                        if is_env_name(&name) {
                            vars.set(name, utf8(&value));
                        }
                    }
                }
                None if reference.optional == Some(true) => {}
                None => {
                    return Err(ConfigError(format!(
                        "secret {:?} not found",
                        reference.name
                    )));
                }
            }
        }
    }
    for var in container.env.iter().flatten() {
        if let Some(value) = env_value(pod, var, lookup, &namespace, &vars).await? {
            vars.set(var.name.clone(), value);
        }
    }
    Ok(vars.into_pairs())
}

fn sorted(data: HashMap<String, Vec<u8>>) -> Vec<(String, Vec<u8>)> {
    let mut pairs: Vec<_> = data.into_iter().collect();
    pairs.sort();
    pairs
}

/// One `env` entry's value; `None` when an optional source is missing (the variable is unset).
async fn env_value(
    pod: &Pod,
    var: &EnvVar,
    lookup: &mut Lookup,
    namespace: &str,
    vars: &Vars,
) -> Result<Option<String>, ConfigError> {
    let Some(from) = &var.value_from else {
        return Ok(Some(expand(var.value.as_deref().unwrap_or(""), |name| {
            vars.get(name)
        })));
    };
    if let Some(key_ref) = &from.secret_key_ref {
        let optional = key_ref.optional == Some(true);
        return match lookup.secret(&key_ref.name).await? {
            Some(data) => match data.get(&key_ref.key) {
                Some(value) => Ok(Some(utf8(value))),
                None if optional => Ok(None),
                None => Err(ConfigError(format!(
                    "couldn't find key {} in Secret {namespace}/{}",
                    key_ref.key, key_ref.name
                ))),
            },
            None if optional => Ok(None),
            None => Err(ConfigError(format!("secret {:?} not found", key_ref.name))),
        };
    }
    if let Some(key_ref) = &from.config_map_key_ref {
        let optional = key_ref.optional == Some(true);
        return match lookup.config_map(&key_ref.name).await? {
            Some(data) => match data.get(&key_ref.key) {
                Some(value) => Ok(Some(utf8(value))),
                None if optional => Ok(None),
                None => Err(ConfigError(format!(
                    "couldn't find key {} in ConfigMap {namespace}/{}",
                    key_ref.key, key_ref.name
                ))),
            },
            None if optional => Ok(None),
            None => Err(ConfigError(format!(
                "configmap {:?} not found",
                key_ref.name
            ))),
        };
    }
    if let Some(field) = &from.field_ref {
        return field_value(pod, &field.field_path).map(Some);
    }
    if let Some(resource) = &from.resource_field_ref {
        return Err(ConfigError(format!(
            "resourceFieldRef {:?} is not supported by devcluster-kubelet",
            resource.resource
        )));
    }
    Ok(Some(String::new()))
}

/// Variables in order of first definition.
#[derive(Default)]
struct Vars {
    order: Vec<String>,
    values: HashMap<String, String>,
}

impl Vars {
    fn set(&mut self, key: String, value: String) {
        if !self.values.contains_key(&key) {
            self.order.push(key.clone());
        }
        self.values.insert(key, value);
    }

    fn get(&self, key: &str) -> Option<String> {
        self.values.get(key).cloned()
    }

    fn into_pairs(mut self) -> Vec<(String, String)> {
        self.order
            .into_iter()
            .map(|key| {
                let value = self.values.remove(&key).unwrap_or_default();
                (key, value)
            })
            .collect()
    }
}

/// Kubernetes' `$(VAR)` expansion: a defined variable is replaced, an undefined reference is
/// left as written, and `$$` is a literal `$`.
pub fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(close) => {
                    let name = &inner[..close];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[close + 1..];
                }
                None => {
                    out.push_str(&rest[at..]);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db".into()),
            "PORT" => Some("5432".into()),
            _ => None,
        }
    }

    #[test]
    fn expansion_follows_kubernetes_rules() {
        assert_eq!(expand("$(HOST):$(PORT)", lookup), "db:5432");
        assert_eq!(expand("$(NOPE)", lookup), "$(NOPE)");
        assert_eq!(expand("$$(HOST)", lookup), "$(HOST)");
        assert_eq!(expand("a$b", lookup), "a$b");
        assert_eq!(expand("tail $(HOST", lookup), "tail $(HOST");
        assert_eq!(expand("$", lookup), "$");
        assert_eq!(expand("€$(HOST)€", lookup), "€db€");
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("DB_URL"));
        assert!(is_env_name("my.key-1"));
        assert!(!is_env_name("1abc"));
        assert!(!is_env_name("a b"));
        assert!(!is_env_name(""));
    }

    #[test]
    fn field_refs() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"app": "x"}},
            "spec": {"containers": [], "nodeName": "devnode", "serviceAccountName": "sa"}
        }))
        .unwrap();
        assert_eq!(field_value(&pod, "metadata.name").unwrap(), "p");
        assert_eq!(field_value(&pod, "metadata.namespace").unwrap(), "ns");
        assert_eq!(field_value(&pod, "spec.nodeName").unwrap(), "devnode");
        assert_eq!(field_value(&pod, "metadata.labels['app']").unwrap(), "x");
        assert_eq!(field_value(&pod, "status.podIP").unwrap(), "127.0.0.1");
        assert!(field_value(&pod, "spec.nope").is_err());
    }
}
