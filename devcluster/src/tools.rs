//! The Go-built tools (Atlas, etcd, Kubernetes, Helm, containerd), pinned by the Go modules under `tools/`
//! and built into a cache outside the clone.
//!
//! Each group (one Go module under `tools/`) is cached under a key that hashes its `go.mod`,
//! `go.sum` and build recipe, so upgrading one group rebuilds that group only, and a second run
//! finds everything in place. A lock file per group makes concurrent runs wait for each other
//! instead of building twice; a build goes to a temporary directory that is renamed into place
//! only when complete, so a killed build never leaves a half-filled cache.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::cmd::{self, CmdError};

/// Network steps (module downloads) get this long before they are called hung.
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(15 * 60);
/// A cold build of kube-apiserver takes about 10 minutes on 2 cores; allow for a slow machine.
const BUILD_LIMIT: Duration = Duration::from_secs(45 * 60);

/// One binary of a tool group.
pub struct Binary {
    /// The file name, and the `*_BIN` variable in `tools.env` (upper-cased, `-` → `_`).
    pub name: &'static str,
    /// The Go package to build.
    pub package: &'static str,
    /// Arguments that make it print its version.
    pub version_args: &'static [&'static str],
}

/// A Go module under `tools/` and the binaries built from it.
pub struct Group {
    /// The directory under `tools/`.
    pub dir: &'static str,
    /// The module whose version `-X` flags stamp into the binaries.
    pub main_module: &'static str,
    /// Atlas needs cgo for its SQLite driver; the others are built without.
    pub cgo: bool,
    /// `-X` assignments; `{version}` is replaced by the main module's version from `go.mod`,
    /// `{major}` and `{minor}` by its parts.
    pub stamps: &'static [&'static str],
    /// Go build tags.
    pub tags: &'static [&'static str],
    pub binaries: &'static [Binary],
}

pub const GROUPS: &[Group] = &[
    Group {
        dir: "atlas",
        main_module: "ariga.io/atlas/cmd/atlas",
        cgo: true,
        stamps: &[
            "ariga.io/atlas/cmd/atlas/internal/cmdapi.version={version}",
            "ariga.io/atlas/cmd/atlas/internal/cmdapi.flavor=community",
        ],
        tags: &[],
        binaries: &[Binary {
            name: "atlas",
            package: "ariga.io/atlas/cmd/atlas",
            version_args: &["version"],
        }],
    },
    Group {
        dir: "etcd",
        main_module: "go.etcd.io/etcd/server/v3",
        cgo: false,
        stamps: &[],
        tags: &[],
        binaries: &[Binary {
            name: "etcd",
            package: "go.etcd.io/etcd/server/v3",
            version_args: &["--version"],
        }],
    },
    Group {
        dir: "kubernetes",
        main_module: "k8s.io/kubernetes",
        cgo: false,
        stamps: &[
            "k8s.io/component-base/version.gitVersion={version}",
            "k8s.io/component-base/version.gitMajor={major}",
            "k8s.io/component-base/version.gitMinor={minor}",
            "k8s.io/component-base/version.gitTreeState=clean",
            "k8s.io/client-go/pkg/version.gitVersion={version}",
            "k8s.io/client-go/pkg/version.gitMajor={major}",
            "k8s.io/client-go/pkg/version.gitMinor={minor}",
            "k8s.io/client-go/pkg/version.gitTreeState=clean",
        ],
        tags: &[],
        binaries: &[
            Binary {
                name: "kube-apiserver",
                package: "k8s.io/kubernetes/cmd/kube-apiserver",
                version_args: &["--version"],
            },
            Binary {
                name: "kube-controller-manager",
                package: "k8s.io/kubernetes/cmd/kube-controller-manager",
                version_args: &["--version"],
            },
            Binary {
                name: "kubectl",
                package: "k8s.io/kubernetes/cmd/kubectl",
                version_args: &["version", "--client"],
            },
            // The real node: a kubelet, the scheduler that places pods on it, and the proxy
            // that gives pods ClusterIP services (`kubernetes.default.svc` among them).
            Binary {
                name: "kubelet",
                package: "k8s.io/kubernetes/cmd/kubelet",
                version_args: &["--version"],
            },
            Binary {
                name: "kube-scheduler",
                package: "k8s.io/kubernetes/cmd/kube-scheduler",
                version_args: &["--version"],
            },
            Binary {
                name: "kube-proxy",
                package: "k8s.io/kubernetes/cmd/kube-proxy",
                version_args: &["--version"],
            },
        ],
    },
    Group {
        dir: "helm",
        main_module: "helm.sh/helm/v3",
        cgo: false,
        // Without the Kubernetes version, `helm template` and `helm lint` assume v1.20 and refuse
        // charts that ask for a newer one; keep it in step with tools/kubernetes.
        stamps: &[
            "helm.sh/helm/v3/internal/version.version={version}",
            "helm.sh/helm/v3/internal/version.gitTreeState=clean",
            "helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1",
            "helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37",
            "helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1",
            "helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=37",
        ],
        tags: &[],
        binaries: &[Binary {
            name: "helm",
            package: "helm.sh/helm/v3/cmd/helm",
            version_args: &["version", "--short"],
        }],
    },
    Group {
        dir: "containerd",
        main_module: "github.com/containerd/containerd/v2",
        cgo: false,
        stamps: &["github.com/containerd/containerd/v2/version.Version={version}"],
        // The snapshotters that need cgo or kernel features the real node does not use:
        // overlayfs and native are what it runs on.
        tags: &["no_btrfs", "no_devmapper", "no_zfs"],
        binaries: &[
            Binary {
                name: "containerd",
                package: "github.com/containerd/containerd/v2/cmd/containerd",
                version_args: &["--version"],
            },
            Binary {
                name: "ctr",
                package: "github.com/containerd/containerd/v2/cmd/ctr",
                version_args: &["--version"],
            },
            // containerd starts one per pod sandbox; it runs the pod's containers with runc.
            Binary {
                name: "containerd-shim-runc-v2",
                package: "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2",
                version_args: &["-v"],
            },
        ],
    },
];

#[derive(Debug, thiserror::Error)]
pub enum ToolsError {
    #[error("`go` was not found on PATH: install Go 1.26 or newer, then rerun `cargo xtask tools`")]
    NoGo,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tools/{group}/go.mod does not require {module}")]
    NoVersion { group: String, module: String },
    #[error(
        "building tool group `{group}` failed at `{step}`: {source}\n\
         Fix the cause and rerun `cargo xtask tools` (a module the proxy refuses names itself above)."
    )]
    Build {
        group: String,
        step: &'static str,
        #[source]
        source: CmdError,
    },
    #[error("{0} is not in target/tools.env: run `cargo xtask tools` first")]
    NotBuilt(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ToolsError {
    let what = what.into();
    move |source| ToolsError::Io { what, source }
}

/// `$XDG_CACHE_HOME/atlas-operator/tools` (or `~/.cache/…`): outside the clone, so a fresh clone
/// on the same machine reuses it.
pub fn cache_root() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("atlas-operator").join("tools")
}

/// `target/tools.env`: `ATLAS_BIN=…` and the like, for tests.
pub fn env_file() -> PathBuf {
    crate::target_dir().join("tools.env")
}

fn tools_dir() -> PathBuf {
    crate::workspace_root().join("tools")
}

impl Group {
    /// The version of the main module, as `go.mod` requires it.
    pub fn version(&self) -> Result<String, ToolsError> {
        let go_mod = tools_dir().join(self.dir).join("go.mod");
        let text =
            fs::read_to_string(&go_mod).map_err(io(format!("reading {}", go_mod.display())))?;
        text.lines()
            .map(|line| line.trim().trim_start_matches("require").trim())
            .find_map(|line| {
                let mut words = line.split_whitespace();
                (words.next() == Some(self.main_module))
                    .then(|| words.next().map(str::to_string))
                    .flatten()
            })
            .ok_or_else(|| ToolsError::NoVersion {
                group: self.dir.into(),
                module: self.main_module.into(),
            })
    }

    fn ldflags(&self) -> Result<String, ToolsError> {
        let version = self.version()?;
        let mut parts = version.trim_start_matches('v').split('.');
        let major = parts.next().unwrap_or("0").to_string();
        let minor = parts.next().unwrap_or("0").to_string();
        let mut flags = vec!["-s".to_string(), "-w".to_string()];
        for stamp in self.stamps {
            let stamp = stamp
                .replace("{version}", &version)
                .replace("{major}", &major)
                .replace("{minor}", &minor);
            flags.push(format!("-X {stamp}"));
        }
        Ok(flags.join(" "))
    }

    /// The cache key: the module files and the recipe, so any change to either rebuilds.
    fn key(&self) -> Result<String, ToolsError> {
        let mut hasher = Sha256::new();
        for file in ["go.mod", "go.sum"] {
            let path = tools_dir().join(self.dir).join(file);
            hasher.update(fs::read(&path).map_err(io(format!("reading {}", path.display())))?);
        }
        hasher.update(self.ldflags()?);
        hasher.update([self.cgo as u8]);
        // Only when set, so that the groups without tags keep the keys they had.
        if !self.tags.is_empty() {
            hasher.update(self.tags.join(","));
        }
        for binary in self.binaries {
            hasher.update(binary.name);
            hasher.update(binary.package);
        }
        let digest = hasher.finalize();
        Ok(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Where this group's binaries are (or will be) cached.
    pub fn bin_dir(&self) -> Result<PathBuf, ToolsError> {
        Ok(cache_root()
            .join(format!("{}-{}", self.dir, self.key()?))
            .join("bin"))
    }

    fn complete(&self, bin: &Path) -> bool {
        self.binaries.iter().all(|b| bin.join(b.name).is_file())
    }

    /// Builds the group unless its cache entry is complete; returns its bin directory.
    pub fn ensure(&self) -> Result<PathBuf, ToolsError> {
        let bin = self.bin_dir()?;
        if self.complete(&bin) {
            return Ok(bin);
        }
        let entry = bin.parent().expect("bin has a parent").to_path_buf();
        fs::create_dir_all(cache_root()).map_err(io("creating the tools cache"))?;
        let lock_path = entry.with_extension("lock");
        let lock =
            File::create(&lock_path).map_err(io(format!("creating {}", lock_path.display())))?;
        lock.lock()
            .map_err(io(format!("locking {}", lock_path.display())))?;
        // Another process may have finished the build while we waited for the lock.
        if self.complete(&bin) {
            return Ok(bin);
        }
        let staging = entry.with_extension(format!("tmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&staging);
        let staging_bin = staging.join("bin");
        fs::create_dir_all(&staging_bin).map_err(io(format!("creating {}", staging.display())))?;

        let module_dir = tools_dir().join(self.dir);
        let started = Instant::now();
        eprintln!(
            "==> tools: building {} ({} {}) into {}",
            self.dir,
            self.main_module,
            self.version()?,
            bin.display()
        );
        let mut download = self.go(&module_dir);
        download.args(["mod", "download"]);
        cmd::run_inherit(&mut download, DOWNLOAD_LIMIT)
            .map_err(|source| self.failed("go mod download", source))?;

        let ldflags = self.ldflags()?;
        for binary in self.binaries {
            let mut build = self.go(&module_dir);
            build.args(["build", "-trimpath", "-ldflags", &ldflags]);
            if !self.tags.is_empty() {
                build.arg("-tags").arg(self.tags.join(","));
            }
            build
                .arg("-o")
                .arg(staging_bin.join(binary.name))
                .arg(binary.package);
            cmd::run_inherit(&mut build, BUILD_LIMIT)
                .map_err(|source| self.failed("go build", source))?;
        }
        let _ = fs::remove_dir_all(&entry);
        fs::rename(&staging, &entry)
            .map_err(io(format!("moving the build into {}", entry.display())))?;
        self.prune_other_entries(&entry);
        eprintln!(
            "    tools: {} built in {:.0}s",
            self.dir,
            started.elapsed().as_secs_f64()
        );
        Ok(bin)
    }

    /// Older builds of this group (an earlier pin) are a few hundred MB each; Go's build cache
    /// makes rebuilding one cheap, so only the current entry is kept.
    fn prune_other_entries(&self, keep: &Path) {
        let Ok(entries) = fs::read_dir(cache_root()) else {
            return;
        };
        let prefix = format!("{}-", self.dir);
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if path != keep && path.is_dir() && name.starts_with(&prefix) && !name.contains(".tmp-")
            {
                let _ = fs::remove_dir_all(&path);
            }
        }
    }

    fn go(&self, module_dir: &Path) -> Command {
        let mut go = Command::new("go");
        go.current_dir(module_dir)
            .env("CGO_ENABLED", if self.cgo { "1" } else { "0" })
            // The committed go.sum is the pin: never rewrite it during a build.
            .env("GOFLAGS", "-mod=readonly")
            // Never download another Go toolchain: there is no network for it here.
            .env("GOTOOLCHAIN", "local");
        go
    }

    fn failed(&self, step: &'static str, source: CmdError) -> ToolsError {
        ToolsError::Build {
            group: self.dir.into(),
            step,
            source,
        }
    }
}

/// The variable name of a binary in `tools.env`: `kube-apiserver` → `KUBE_APISERVER_BIN`.
pub fn env_name(binary: &str) -> String {
    format!("{}_BIN", binary.to_uppercase().replace('-', "_"))
}

/// Builds what is missing, writes `target/tools.env`, and returns each binary's path.
pub fn ensure_all() -> Result<Vec<(&'static Binary, PathBuf)>, ToolsError> {
    if Command::new("go").arg("version").output().is_err() {
        return Err(ToolsError::NoGo);
    }
    let mut built = Vec::new();
    for group in GROUPS {
        let bin = group.ensure()?;
        for binary in group.binaries {
            built.push((binary, bin.join(binary.name)));
        }
    }
    let mut env = String::from("# Written by `cargo xtask tools`.\n");
    for (binary, path) in &built {
        env.push_str(&format!("{}={}\n", env_name(binary.name), path.display()));
    }
    let path = env_file();
    fs::create_dir_all(crate::target_dir()).map_err(io("creating the target directory"))?;
    fs::write(&path, env).map_err(io(format!("writing {}", path.display())))?;
    Ok(built)
}

/// The path of a built tool, from `target/tools.env` (for tests: `cargo xtask test` builds the
/// tools first).
pub fn path(binary: &str) -> Result<PathBuf, ToolsError> {
    let name = env_name(binary);
    // The switch to run everything against another build (`ATLAS_BIN=/path/to/atlas cargo
    // xtask test`): the environment wins over what `cargo xtask tools` built.
    if let Some(path) = std::env::var_os(&name).map(PathBuf::from)
        && path.is_file()
    {
        return Ok(path);
    }
    crate::read_env_file(&env_file())
        .ok()
        .and_then(|pairs| pairs.into_iter().find(|(key, _)| *key == name))
        .map(|(_, value)| PathBuf::from(value))
        .filter(|path| path.is_file())
        .ok_or(ToolsError::NotBuilt(name))
}

/// A command for the built Atlas CLI, with its network checks off (there is no network for them
/// here, and a test must not wait on one).
pub fn atlas() -> Result<Command, ToolsError> {
    let mut atlas = Command::new(path("atlas")?);
    atlas
        .env("ATLAS_NO_UPDATE_NOTIFIER", "1")
        .env("ATLAS_NO_UPGRADE_SUGGESTIONS", "1")
        .env("ATLAS_NO_ANON_TELEMETRY", "true");
    Ok(atlas)
}

/// The version the Atlas CLI the tests run reports (`v0.13.1`), as the runner reads it: what a
/// test compares with, so no test pins one Atlas.
pub fn atlas_version() -> Result<String, ToolsError> {
    let mut atlas = atlas()?;
    atlas.arg("version");
    let out = cmd::output(&mut atlas, Duration::from_secs(30)).unwrap_or_default();
    out.split_whitespace()
        .find(|word| word.starts_with('v') && word[1..].starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_string)
        .ok_or_else(|| {
            ToolsError::NotBuilt(format!("{} (no version in {out:?})", env_name("atlas")))
        })
}

/// What a tool prints as its version (first line), for the `cargo xtask tools` report.
pub fn version_of(binary: &Binary, path: &Path) -> String {
    let mut command = Command::new(path);
    command
        .args(binary.version_args)
        .env("ATLAS_NO_UPDATE_NOTIFIER", "1")
        .env("ATLAS_NO_UPGRADE_SUGGESTIONS", "1");
    match cmd::output(&mut command, Duration::from_secs(30)) {
        Ok(text) => text.lines().next().unwrap_or("").trim().to_string(),
        Err(err) => format!("(no version: {err})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_pins_its_main_module() {
        for group in GROUPS {
            let version = group.version().unwrap();
            assert!(version.starts_with('v'), "{}: {version}", group.dir);
            let sum = tools_dir().join(group.dir).join("go.sum");
            assert!(sum.is_file(), "{} has no committed go.sum", group.dir);
        }
    }

    #[test]
    fn env_names() {
        assert_eq!(env_name("kube-apiserver"), "KUBE_APISERVER_BIN");
        assert_eq!(env_name("atlas"), "ATLAS_BIN");
    }

    #[test]
    fn the_cache_key_changes_with_the_recipe_only() {
        let atlas = &GROUPS[0];
        assert_eq!(atlas.key().unwrap(), atlas.key().unwrap());
        assert_ne!(atlas.key().unwrap(), GROUPS[1].key().unwrap());
    }
}
