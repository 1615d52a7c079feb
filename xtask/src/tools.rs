//! `cargo xtask tools`: builds (or reuses) the pinned Go tools and reports their versions.

use std::time::Instant;

use anyhow::Result;
use devcluster::tools;

pub fn run() -> Result<()> {
    let started = Instant::now();
    let built = tools::ensure_all()?;
    println!("tools cache: {}", tools::cache_root().display());
    for (binary, path) in &built {
        println!(
            "  {:<24} {:<40} {}",
            binary.name,
            tools::version_of(binary, path),
            path.display()
        );
    }
    println!(
        "wrote {} in {:.1}s",
        tools::env_file().display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
