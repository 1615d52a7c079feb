//! `cargo xtask demo`: the operator's main job end to end, as far as this build goes.
//!
//! Today that is: the CRDs match the Rust types, and every seed manifest in examples/ reads into
//! the API types. The steps after it (tools, databases, local cluster, controller) are named at
//! the end, with the issue that brings each, so nobody mistakes this for the full flow.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use atlas_operator::api::{AtlasMigration, AtlasSchema};
use serde_json::Value;

use crate::workspace_root;

pub fn run(_keep: bool) -> Result<()> {
    eprintln!("==> step 1: the CRDs match the Rust types");
    crate::crds::run(true)?;

    eprintln!("==> step 2: the seed manifests in examples/ read into the API types");
    let mut files = Vec::new();
    collect_yaml(&workspace_root().join("examples"), &mut files)?;
    files.sort();
    let mut resources = 0;
    for path in &files {
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .with_context(|| format!("parsing {}", path.display()))?;
        for doc in docs {
            let shown = path
                .strip_prefix(workspace_root())
                .unwrap_or(path)
                .display();
            let name = doc["metadata"]["name"].as_str().unwrap_or("?").to_string();
            let summary = match doc["kind"].as_str() {
                Some("AtlasSchema") => {
                    let schema: AtlasSchema = serde_json::from_value(doc)
                        .with_context(|| format!("{shown}: AtlasSchema {name}"))?;
                    let source = schema.spec.schema.as_ref().map_or("config", |s| {
                        if s.sql.is_some() {
                            "sql"
                        } else if s.hcl.is_some() {
                            "hcl"
                        } else if s.url.is_some() {
                            "url"
                        } else {
                            "configMapKeyRef"
                        }
                    });
                    format!("AtlasSchema {name}: desired schema from {source}")
                }
                Some("AtlasMigration") => {
                    let migration: AtlasMigration = serde_json::from_value(doc)
                        .with_context(|| format!("{shown}: AtlasMigration {name}"))?;
                    let dir = &migration.spec.dir;
                    let source = if let Some(cm) = &dir.config_map_ref {
                        format!("ConfigMap {}", cm.name)
                    } else if let Some(local) = &dir.local {
                        format!("{} inline files", local.len())
                    } else if let Some(remote) = &dir.remote {
                        format!(
                            "Atlas Cloud directory {}",
                            remote.name.as_deref().unwrap_or("?")
                        )
                    } else {
                        "the custom config".to_string()
                    };
                    format!("AtlasMigration {name}: migrations from {source}")
                }
                Some(kind) => format!("{kind} {name}"),
                None => bail!("{shown}: a document without a kind"),
            };
            resources += 1;
            println!("    {shown:<50} {summary}");
        }
    }
    eprintln!("    {resources} manifests from {} files read", files.len());

    println!(
        "\nThe demo stops here: this build has no controller yet.\n\
         Still missing for the full flow (a database gets its schema, the resource turns Ready):\n\
         - the pinned Go tools and local databases (issue 4)\n\
         - the runner that applies with Atlas in a Job pod (issue 5)\n\
         - the local Kubernetes cluster (issue 6)\n\
         - the controller (issue 7) and dev databases (issue 8)"
    );
    Ok(())
}

fn collect_yaml(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_yaml(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "yaml") {
            out.push(path);
        }
    }
    Ok(())
}
