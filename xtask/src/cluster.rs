//! `cargo xtask cluster up | down | status`: the local Kubernetes control plane.

use anyhow::{Result, bail};
use clap::Subcommand;
use devcluster::cluster::{self, Cluster, Status};

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Start etcd, kube-apiserver and kube-controller-manager on free loopback ports (does
    /// nothing if they run).
    Up,
    /// Stop them and remove their data, certificates and logs.
    Down,
    /// Say whether they run, and where.
    Status,
}

pub fn run(command: ClusterCommand) -> Result<()> {
    match command {
        ClusterCommand::Up => {
            let cluster = cluster::up()?;
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
