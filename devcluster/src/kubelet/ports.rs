//! The node's ports. Every pod shares the host's network, so a pod runs only once no other pod
//! on the node holds one of its `containerPort`s, as a real scheduler would keep it off a node
//! where the host port is taken.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Container;

use super::database::Flavour;

/// A port and its protocol (`TCP` unless the container says otherwise).
pub type Port = (i32, String);

/// The ports taken by running pods, and by which pod (uid).
#[derive(Debug, Default)]
pub struct HostPorts(Mutex<HashMap<Port, String>>);

impl HostPorts {
    /// Takes `wanted` for the pod `uid`, all or none; says which pod holds one that is taken.
    pub fn claim(&self, uid: &str, wanted: Vec<Port>) -> Result<(), String> {
        let mut ports = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for port in &wanted {
            if let Some(holder) = ports.get(port).filter(|holder| *holder != uid) {
                return Err(format!(
                    "containerPort {}/{} is in use by another pod on the node (uid {holder})",
                    port.0, port.1
                ));
            }
        }
        for port in wanted {
            ports.insert(port, uid.to_string());
        }
        Ok(())
    }

    /// Frees the ports of the pod `uid`.
    pub fn release(&self, uid: &str) {
        let mut ports = self.0.lock().unwrap_or_else(|p| p.into_inner());
        ports.retain(|_, holder| holder != uid);
    }
}

/// The ports a container takes on the node.
pub fn wanted(container: &Container) -> Vec<Port> {
    let mut ports: Vec<Port> = container
        .ports
        .iter()
        .flatten()
        .map(|port| {
            let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".to_string());
            (port.container_port, protocol)
        })
        .collect();
    // A database image's server declaring no port still listens on its default one (not a
    // `command` such as `psql` run from the image).
    let image = container.image.as_deref().unwrap_or_default();
    let entrypoint = container.command.as_ref().is_none_or(|c| c.is_empty());
    if ports.is_empty()
        && entrypoint
        && let Some(flavour) = Flavour::of(image)
    {
        ports.push((flavour.default_port(), "TCP".to_string()));
    }
    ports
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(value: serde_json::Value) -> Container {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn declared_ports_and_a_database_servers_default() {
        let web = container(serde_json::json!({
            "name": "web",
            "ports": [{"containerPort": 8080}, {"containerPort": 53, "protocol": "UDP"}],
        }));
        assert_eq!(
            wanted(&web),
            vec![(8080, "TCP".to_string()), (53, "UDP".to_string())]
        );
        let server = container(serde_json::json!({"name": "db", "image": "postgres:16"}));
        assert_eq!(wanted(&server), vec![(5432, "TCP".to_string())]);
        let client = container(serde_json::json!({
            "name": "psql", "image": "postgres:16", "command": ["psql"],
        }));
        assert!(wanted(&client).is_empty());
    }

    #[test]
    fn a_port_is_one_pods_until_released() {
        let ports = HostPorts::default();
        let http = || vec![(8080, "TCP".to_string())];
        ports.claim("a", http()).unwrap();
        // The same pod claims again at every sync while it waits.
        ports.claim("a", http()).unwrap();
        let taken = ports.claim("b", http()).unwrap_err();
        assert!(taken.contains("uid a"), "{taken}");
        // All or none: b's free port is not taken either.
        let both = vec![(9090, "TCP".to_string()), (8080, "TCP".to_string())];
        assert!(ports.claim("b", both).is_err());
        ports.claim("c", vec![(9090, "TCP".to_string())]).unwrap();
        ports.release("a");
        ports.claim("b", http()).unwrap();
    }
}
