//! `cargo xtask cluster up | down | status`: the local Kubernetes control plane.

use anyhow::{Result, bail};
use clap::Subcommand;
use devcluster::cluster::{self, Cluster, NodeKind, Status};

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Start etcd, kube-apiserver and kube-controller-manager on free loopback ports (does
    /// nothing if they run).
    Up {
        /// `process`: the process-kubelet (the default, what the tests use); `real`: the
        /// upstream kubelet on containerd and runc, with kube-scheduler (root only).
        #[arg(long, default_value = "process", value_parser = ["process", "real"])]
        node: String,
    },
    /// Stop them and remove their data, certificates and logs.
    Down,
    /// Say whether they run, and where.
    Status,
}

pub fn run(command: ClusterCommand) -> Result<()> {
    match command {
        ClusterCommand::Up { node } => {
            let node = NodeKind::parse(&node).unwrap_or_default();
            let cluster = cluster::up_with(node)?;
            describe(&cluster);
            println!(
                "use it with: export KUBECONFIG={}",
                cluster.kubeconfig().display()
            );
        }
        ClusterCommand::Down => {
            cluster::down()?;
            println!("local cluster stopped");
        }
        ClusterCommand::Status => match cluster::status() {
            Status::Down => println!("local cluster: down"),
            Status::Up(cluster) => {
                println!("local cluster: up");
                describe(&cluster);
            }
            Status::Broken { problem, .. } => {
                bail!(
                    "local cluster: broken ({problem}); run `cargo xtask cluster up` to restart it"
                )
            }
        },
    }
    Ok(())
}

fn describe(cluster: &Cluster) {
    println!(
        "NODE={} ({})",
        cluster.node.name(),
        cluster.node.node_name()
    );
    println!("SERVER={}", cluster.server());
    println!("KUBECONFIG={}", cluster.kubeconfig().display());
    println!("AUDIT_LOG={}", cluster.audit_log().display());
    for (component, pid) in &cluster.processes {
        println!(
            "{} pid {pid}, log {}",
            component.binary(),
            cluster.log(*component).display()
        );
    }
}
