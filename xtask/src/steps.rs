//! Running child commands with a readable trail: every step says what it runs, and a failure says
//! which command failed and how to rerun it.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::workspace_root;

/// Runs `program args…` in the workspace root, inheriting stdout/stderr.
pub fn step(title: &str, program: &str, args: &[&str]) -> Result<()> {
    let shown = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!("==> {title}: {shown}");
    let started = Instant::now();
    let status = Command::new(program)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("could not start `{program}` (is it installed?)"))?;
    if !status.success() {
        bail!("{title} failed ({status}); rerun with: {shown}");
    }
    eprintln!("    {title}: ok in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}
