//! The cluster's certificates: a CA of its own, made with the `openssl` CLI, and the serving and
//! client certificates it signs (users are client certificates: the API server reads the user
//! from the common name and the groups from the organizations), plus the RSA key pair of
//! service-account tokens. All of it lives in `<cluster dir>/pki`.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;

use super::control_plane::KUBERNETES_SERVICE_IP;
use super::{CALL_LIMIT, Cluster, ClusterError, command_error, io};
use crate::cmd;

/// The user name in the admin's client certificate (its group `system:masters` makes it admin).
pub const ADMIN_USER: &str = "devcluster-admin";
/// Certificates outlive any test run or demo (nothing renews them).
const CERT_DAYS: &str = "365";

/// `openssl req` wants a config file with a `distinguished_name` section even when `-subj` gives
/// the whole subject; ours is empty so the system's defaults (which would mark every certificate
/// a CA) never apply. Extensions come from `-addext`.
const OPENSSL_CONFIG: &str = "\
# Written by devcluster (src/cluster/pki.rs).
[req]
distinguished_name = dn
prompt = no
[dn]
";

/// A certificate and its private key, PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What a certificate issued by the cluster's CA is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Usage {
    /// Client authentication: the API server reads the user from the common name and the groups
    /// from the organizations.
    Client,
    /// Serving TLS under these names and addresses.
    Server {
        dns_names: Vec<String>,
        ips: Vec<IpAddr>,
    },
}

impl Cluster {
    /// The cluster's certificate authority: it signs the serving and client certificates, and the
    /// API server trusts client certificates it signed (so the process-kubelet can issue its own
    /// with [`Cluster::issue_cert`]).
    pub fn ca(&self) -> CertPair {
        self.pki_pair("ca")
    }

    /// The RSA key pair that signs and verifies service-account tokens (`cert` is the public
    /// key, PEM).
    pub fn service_account_key(&self) -> CertPair {
        CertPair {
            cert: self.pki().join("sa.pub"),
            key: self.pki().join("sa.key"),
        }
    }

    /// Issues a certificate signed by the cluster's CA into the cluster's directory
    /// (`pki/<file_stem>.crt` and `.key`, an EC P-256 key).
    pub fn issue_cert(
        &self,
        file_stem: &str,
        common_name: &str,
        organizations: &[&str],
        usage: &Usage,
    ) -> Result<CertPair, ClusterError> {
        let pair = self.pki_pair(subject_part(file_stem)?);
        let ca = self.ca();
        let mut subject = format!("/CN={}", subject_part(common_name)?);
        for organization in organizations {
            subject.push_str(&format!("/O={}", subject_part(organization)?));
        }
        let mut openssl = self.openssl_req(&pair, &subject);
        openssl
            .arg("-CA")
            .arg(&ca.cert)
            .arg("-CAkey")
            .arg(&ca.key)
            .args(["-addext", "basicConstraints=critical,CA:FALSE"]);
        match usage {
            Usage::Client => {
                openssl.args([
                    "-addext",
                    "keyUsage=critical,digitalSignature",
                    "-addext",
                    "extendedKeyUsage=clientAuth",
                ]);
            }
            Usage::Server { dns_names, ips } => {
                let mut names: Vec<String> = Vec::new();
                for name in dns_names {
                    names.push(format!("DNS:{}", subject_part(name)?));
                }
                names.extend(ips.iter().map(|ip| format!("IP:{ip}")));
                openssl.args([
                    "-addext",
                    "keyUsage=critical,digitalSignature",
                    "-addext",
                    "extendedKeyUsage=serverAuth",
                ]);
                if !names.is_empty() {
                    openssl.args(["-addext", &format!("subjectAltName={}", names.join(","))]);
                }
            }
        }
        cmd::output(&mut openssl, CALL_LIMIT).map_err(command_error(format!(
            "issuing the certificate {file_stem}"
        )))?;
        Ok(pair)
    }

    pub(super) fn pki(&self) -> PathBuf {
        self.dir.join("pki")
    }

    pub(super) fn pki_pair(&self, stem: &str) -> CertPair {
        CertPair {
            cert: self.pki().join(format!("{stem}.crt")),
            key: self.pki().join(format!("{stem}.key")),
        }
    }

    /// `openssl req` making a new EC key and a certificate for it.
    fn openssl_req(&self, pair: &CertPair, subject: &str) -> Command {
        let mut openssl = Command::new("openssl");
        openssl
            .arg("req")
            .arg("-config")
            .arg(self.pki().join("openssl.cnf"))
            .args(["-x509", "-new", "-nodes", "-days", CERT_DAYS])
            .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])
            .arg("-keyout")
            .arg(&pair.key)
            .arg("-out")
            .arg(&pair.cert)
            .args(["-subj", subject]);
        openssl
    }
}

/// The CA, the serving certificate, the client certificates and the service-account key.
pub(super) fn make_pki(cluster: &Cluster) -> Result<(), ClusterError> {
    let pki = cluster.pki();
    fs::create_dir_all(&pki).map_err(io(format!("creating {}", pki.display())))?;
    fs::write(pki.join("openssl.cnf"), OPENSSL_CONFIG).map_err(io("writing openssl.cnf"))?;

    let ca = cluster.ca();
    let mut openssl = cluster.openssl_req(&ca, "/CN=devcluster-ca");
    openssl.args([
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    ]);
    cmd::output(&mut openssl, CALL_LIMIT).map_err(command_error("making the cluster's CA"))?;

    cluster.issue_cert(
        "apiserver",
        "kube-apiserver",
        &[],
        &Usage::Server {
            dns_names: [
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ]
            .map(String::from)
            .to_vec(),
            // The bridge address: where the real node's pods (and, then, everyone) reach it.
            ips: vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V4(KUBERNETES_SERVICE_IP),
                IpAddr::V4(super::real_node::POD_GATEWAY),
            ],
        },
    )?;
    cluster.issue_cert("admin", ADMIN_USER, &["system:masters"], &Usage::Client)?;
    // The user the bootstrap RBAC policy grants the controller manager's own rights to.
    cluster.issue_cert(
        "controller-manager",
        "system:kube-controller-manager",
        &[],
        &Usage::Client,
    )?;
    // The process-kubelet: the node's own identity (the Node authorizer and NodeRestriction
    // confine it to its node and its pods), and the scheduler's for binding pods, which the Node
    // authorizer never allows a node (the bootstrap role `system:kube-scheduler` does).
    let node_user = format!("system:node:{}", crate::kubelet::NODE_NAME);
    cluster.issue_cert("kubelet", &node_user, &["system:nodes"], &Usage::Client)?;
    cluster.issue_cert("scheduler", "system:kube-scheduler", &[], &Usage::Client)?;
    // The kubelet's logs endpoint, which the API server reaches at the node's InternalIP.
    cluster.issue_cert(
        "kubelet-serving",
        crate::kubelet::NODE_NAME,
        &[],
        &Usage::Server {
            dns_names: vec![
                crate::kubelet::NODE_NAME.to_string(),
                "localhost".to_string(),
            ],
            ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        },
    )?;
    // What the API server shows the kubelet when it proxies logs and exec.
    cluster.issue_cert(
        "apiserver-kubelet-client",
        "kube-apiserver-kubelet-client",
        &["system:masters"],
        &Usage::Client,
    )?;

    // Service-account tokens: RSA, the key type every client of the tokens' JWKS understands.
    let sa = cluster.service_account_key();
    let mut genpkey = Command::new("openssl");
    genpkey
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&sa.key);
    cmd::output(&mut genpkey, CALL_LIMIT)
        .map_err(command_error("making the service-account key"))?;
    let mut public = Command::new("openssl");
    public
        .args(["pkey", "-pubout", "-in"])
        .arg(&sa.key)
        .arg("-out")
        .arg(&sa.cert);
    cmd::output(&mut public, CALL_LIMIT)
        .map_err(command_error("extracting the service-account public key"))?;
    Ok(())
}

fn subject_part(text: &str) -> Result<&str, ClusterError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || ":-._@".contains(c);
    if text.is_empty() || !text.chars().all(allowed) {
        return Err(ClusterError::BadName(text.to_string()));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_refuse_separators() {
        assert!(subject_part("system:node:devnode").is_ok());
        assert!(subject_part("a/O=system:masters").is_err());
        assert!(subject_part("a,b").is_err());
        assert!(subject_part("").is_err());
    }
}
