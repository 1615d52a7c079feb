//! The local test bed of atlas-operator, as a library used by `cargo xtask` and by the
//! integration tests: the pinned Go tools ([`tools`]), Debian's database servers
//! ([`packages`]), local PostgreSQL and MariaDB servers with a fresh database per test
//! ([`db`]), and a local Kubernetes with a namespace per test ([`cluster`]) whose node is the
//! process-kubelet ([`kubelet`]). Everything here is real; nothing is mocked.

pub mod cluster;
pub mod cmd;
pub mod db;
pub mod images;
pub mod kubelet;
pub(crate) mod lifecycle;
pub mod operator;
pub mod packages;
pub mod process;
pub mod seed;
pub mod tools;

use std::path::PathBuf;

/// The workspace root (this crate lives one level below it).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("devcluster lives one level below the workspace root")
        .to_path_buf()
}

/// Cargo's target directory, where run-time state (`tools.env`, `devdb/`) is written.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_relative() {
                workspace_root().join(dir)
            } else {
                dir
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Reads a `KEY=value` file as written by this crate (no quoting, one pair per line).
pub fn read_env_file(path: &std::path::Path) -> std::io::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_string(), value.to_string()))
        .collect())
}
