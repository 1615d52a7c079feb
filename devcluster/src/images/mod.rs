//! Container images built on this machine with buildah, for the real node: nothing is ever
//! pulled (no image registry is reachable), so every image starts `from scratch` or from another
//! image built here, and reaches containerd as an archive `ctr images import` reads.
//!
//! buildah keeps its storage under `target/images/buildah` on the `vfs` driver, so it mounts
//! nothing that could be left behind; the archives are `target/images/*.tar`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::cmd::{self, CmdError};

pub mod dev_database;
pub mod workspace;

/// The registry part of every image name built here: never one that could be pulled.
pub const LOCAL_REGISTRY: &str = "devcluster.local";
/// A single buildah step (a copy of a few hundred MiB on vfs, a commit) takes seconds.
const STEP_LIMIT: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{what}: {source}")]
    Command {
        what: String,
        #[source]
        source: CmdError,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Missing(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
    let what = what.into();
    move |source| ImageError::Io { what, source }
}

/// An image built here, and the archive containerd imports it from.
#[derive(Clone, Debug)]
pub struct Built {
    pub name: String,
    pub archive: PathBuf,
}

/// Every image the real node's operator tests run: the operator's and the runner's, and the
/// dev databases' (PostgreSQL, and MariaDB for the `mysql` and `maria` drivers).
pub fn build_all() -> Result<Vec<Built>, ImageError> {
    let mut images = workspace::build()?;
    let buildah = Buildah::shared();
    for name in [
        dev_database::postgres(&buildah)?,
        dev_database::mariadb(&buildah)?,
    ] {
        let archive = buildah.archive(&name, &images_dir())?;
        images.push(Built { name, archive });
    }
    Ok(images)
}

/// `target/images`: buildah's storage and the archives.
pub fn images_dir() -> PathBuf {
    crate::target_dir().join("images")
}

/// The file name of `name`'s archive: `devcluster.local/runner:dev` → `runner-dev.tar`.
pub(crate) fn archive_name(name: &str) -> String {
    let stem = name.rsplit('/').next().unwrap_or(name).replace(':', "-");
    format!("{stem}.tar")
}

/// buildah with its storage in one directory of ours.
#[derive(Clone, Debug)]
pub struct Buildah {
    storage: PathBuf,
}

impl Buildah {
    /// The storage of `cargo xtask images` and the real node: `target/images/buildah`.
    pub fn shared() -> Buildah {
        Buildah::at(&images_dir().join("buildah"))
    }

    pub fn at(storage: &Path) -> Buildah {
        Buildah {
            storage: storage.to_path_buf(),
        }
    }

    pub fn command(&self) -> Command {
        let mut buildah = Command::new("buildah");
        buildah
            .arg(format!("--root={}", self.storage.join("root").display()))
            .arg(format!("--runroot={}", self.storage.join("run").display()))
            .arg("--storage-driver=vfs");
        buildah
    }

    /// Runs `buildah args…`; returns what it printed, trimmed.
    pub fn run(&self, what: &str, args: &[&str]) -> Result<String, ImageError> {
        let mut command = self.command();
        command.args(args);
        cmd::output(&mut command, STEP_LIMIT)
            .map(|out| out.trim().to_string())
            .map_err(|source| ImageError::Command {
                what: what.to_string(),
                source,
            })
    }

    /// An image named `name` of `files` (host path, path in the image) on `base` (`scratch`
    /// for none), configured by `config` (`buildah config` flags such as `--entrypoint`).
    pub fn from_files(
        &self,
        name: &str,
        base: &str,
        files: &[(&Path, &str)],
        config: &[&str],
    ) -> Result<(), ImageError> {
        let what = format!("building the image {name}");
        let container = self.run(&what, &["from", "--pull=never", base])?;
        let built = (|| {
            for (host, inside) in files {
                self.run(
                    &what,
                    &["copy", &container, &host.to_string_lossy(), inside],
                )?;
            }
            if !config.is_empty() {
                let mut args = vec!["config"];
                args.extend_from_slice(config);
                args.push(&container);
                self.run(&what, &args)?;
            }
            self.run(&what, &["commit", "-q", &container, name])
        })();
        let _ = self.run(&what, &["rm", &container]);
        built.map(drop)
    }

    /// Writes the image `name` as a docker archive in `dir` that `ctr images import` names
    /// `name`; returns its path.
    pub fn archive(&self, name: &str, dir: &Path) -> Result<PathBuf, ImageError> {
        fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let archive = dir.join(archive_name(name));
        let _ = fs::remove_file(&archive);
        self.run(
            &format!("writing {name} to {}", archive.display()),
            &[
                "push",
                "-q",
                name,
                &format!("docker-archive:{}:{name}", archive.display()),
            ],
        )?;
        Ok(archive)
    }

    /// The image's config as `buildah inspect` prints it (`.OCIv1.config` holds user,
    /// entrypoint, env).
    pub fn inspect(&self, name: &str) -> Result<serde_json::Value, ImageError> {
        let text = self.run(
            &format!("inspecting {name}"),
            &["inspect", "--type=image", name],
        )?;
        serde_json::from_str(&text).map_err(|err| {
            ImageError::Missing(format!("buildah inspect {name} printed no JSON: {err}"))
        })
    }
}

/// The libraries in `ldd`'s output for several objects; a library it could not find is an error
/// (the server would not start in the image either).
pub(crate) fn parse_ldd(out: &str) -> Result<BTreeSet<PathBuf>, ImageError> {
    let mut libraries = BTreeSet::new();
    for line in out.lines().filter(|line| line.starts_with('\t')) {
        let line = line.trim();
        if line.contains("not found") {
            return Err(ImageError::Missing(format!("ldd: {line}")));
        }
        let path = match line.split_once("=>") {
            Some((_, resolved)) => resolved.trim(),
            None => line,
        };
        let path = path.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            libraries.insert(PathBuf::from(path));
        }
    }
    Ok(libraries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_resolved_paths_and_the_loader() {
        let out = "/usr/sbin/a:\n\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n\
                   /usr/lib/b.so:\n\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f)\n\
                   \tstatically linked\n";
        let libraries: Vec<PathBuf> = parse_ldd(out).unwrap().into_iter().collect();
        assert_eq!(
            libraries,
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libz.so.1"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
        assert!(parse_ldd("x:\n\tlibgone.so.3 => not found\n").is_err());
    }
}
