//! `cargo xtask images`: the operator's and the runner's images, built here with buildah from
//! the Dockerfiles, and imported into the real node's containerd when one runs.

use std::time::Instant;

use anyhow::Result;
use devcluster::cluster::{self, NodeKind, Status, real_node};

pub fn run() -> Result<()> {
    let started = Instant::now();
    eprintln!("==> images: building with buildah (the binaries first, if they changed)");
    let images = devcluster::images::build_all()?;
    for image in &images {
        println!("{} ({})", image.name, image.archive.display());
    }
    eprintln!("    built in {:.1}s", started.elapsed().as_secs_f64());
    match cluster::status() {
        Status::Up(cluster) if cluster.node == NodeKind::Real => {
            real_node::import(&cluster, &images)?;
            println!("imported into the real node's containerd");
        }
        _ => println!(
            "no real node runs: after `cargo xtask cluster up --node real`, this imports them"
        ),
    }
    Ok(())
}
