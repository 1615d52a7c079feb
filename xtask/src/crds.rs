//! `cargo xtask crds`: writes crds/*.yaml from the Rust types (the one source of truth), and the
//! same files into the Helm chart, which ships them as templates gated by `crds.create`.

use std::fs;

use anyhow::{Context, Result, bail};
use atlas_operator::api;

use crate::workspace_root;

/// Where the CRD files go: the repository's copy and the chart's.
const DIRS: &[&str] = &["crds", "charts/atlas-operator/files/crds"];

pub fn run(check: bool) -> Result<()> {
    let files = api::crd_files()?;
    let mut stale = Vec::new();
    for dir in DIRS.iter().map(|dir| workspace_root().join(dir)) {
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for (file, yaml) in &files {
            let path = dir.join(file);
            let current = fs::read_to_string(&path).unwrap_or_default();
            if current == *yaml {
                continue;
            }
            if check {
                stale.push(path.display().to_string());
            } else {
                fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    if !stale.is_empty() {
        bail!(
            "the checked-in CRDs differ from the Rust types: {}; run `cargo xtask crds` and commit",
            stale.join(", ")
        );
    }
    if check {
        eprintln!("==> crds: up to date");
    }
    Ok(())
}
