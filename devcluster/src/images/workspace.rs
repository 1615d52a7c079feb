//! The operator's and the runner's images, built from `Dockerfile.operator` and
//! `Dockerfile.runner` themselves, with the images they start from assembled here and passed as
//! build arguments:
//!
//! - `BASE_IMAGE`, in place of distroless/static: `/etc/passwd` and `/etc/group` with the
//!   `nonroot` user 65532, the CA certificates, `/tmp`, and the shared libraries the binaries
//!   need (this toolchain cannot build for musl, so they are the host's glibc builds);
//! - `BINARIES`, in place of the build stage (which needs the rust image and the musl target):
//!   `/out/atlas-operator` and `/out/runner` from `target/debug`;
//! - `ATLAS_IMAGE`, in place of the official Atlas image: `/atlas`, the Atlas the tools built
//!   (community v0.13.1; the runner decides by what the binary offers, never by its version).
//!
//! So the final stages, what users run, are the Dockerfiles' own: paths, user, entrypoint, env.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{Buildah, Built, ImageError, LOCAL_REGISTRY, archive_name, images_dir, io, parse_ldd};
use crate::cmd;

/// How the chart and the operator are told to name them (`image.repository`, `--runner-image`).
pub const OPERATOR_REPOSITORY: &str = "devcluster.local/atlas-operator";
pub const RUNNER_REPOSITORY: &str = "devcluster.local/runner";
pub const TAG: &str = "dev";
/// A `cargo build` of two binaries that are usually built already.
const BUILD_LIMIT: Duration = Duration::from_secs(1800);

/// The binaries the images carry.
struct Binaries {
    operator: PathBuf,
    runner: PathBuf,
    atlas: PathBuf,
}

/// Builds the operator's and the runner's images (again only when a binary or a Dockerfile
/// changed); returns them with their archives.
pub fn build() -> Result<Vec<Built>, ImageError> {
    let binaries = cargo_build()?;
    let buildah = Buildah::shared();
    let dir = images_dir();
    let digest = inputs_digest(&binaries)?;
    let operator = format!("{OPERATOR_REPOSITORY}:{TAG}");
    let runner = format!("{RUNNER_REPOSITORY}:{TAG}");
    let built = [&operator, &runner].map(|name| Built {
        name: name.clone(),
        archive: dir.join(archive_name(name)),
    });
    let stamp = dir.join("workspace.digest");
    if fs::read_to_string(&stamp).ok().as_deref() == Some(digest.as_str())
        && built.iter().all(|image| image.archive.exists())
    {
        return Ok(built.to_vec());
    }
    let _ = fs::remove_file(&stamp);
    let staging = dir.join("staging");
    let _ = fs::remove_dir_all(&staging);

    let base = format!("{LOCAL_REGISTRY}/base:{TAG}");
    let tree = staging.join("base");
    base_tree(
        &tree,
        &[&binaries.operator, &binaries.runner, &binaries.atlas],
    )?;
    buildah.from_files(
        &base,
        "scratch",
        &[(&tree, "/")],
        &["--user", "65532:65532", "--workingdir", "/home/nonroot"],
    )?;
    let outside = format!("{LOCAL_REGISTRY}/binaries:{TAG}");
    buildah.from_files(
        &outside,
        "scratch",
        &[
            (&binaries.operator, "/out/atlas-operator"),
            (&binaries.runner, "/out/runner"),
        ],
        &[],
    )?;
    let atlas = format!("{LOCAL_REGISTRY}/atlas:{TAG}");
    buildah.from_files(&atlas, "scratch", &[(&binaries.atlas, "/atlas")], &[])?;

    for (dockerfile, name, extra) in [
        ("Dockerfile.operator", &operator, None),
        ("Dockerfile.runner", &runner, Some(&atlas)),
    ] {
        let mut args = vec![
            "bud".to_string(),
            "--pull=never".into(),
            "--layers=false".into(),
            "-q".into(),
            format!("--file={dockerfile}"),
            format!("--build-arg=BASE_IMAGE={base}"),
            format!("--build-arg=BINARIES={outside}"),
            format!("--tag={name}"),
        ];
        if let Some(atlas) = extra {
            args.push(format!("--build-arg=ATLAS_IMAGE={atlas}"));
        }
        args.push(crate::workspace_root().to_string_lossy().into_owned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        buildah.run(&format!("building {dockerfile}"), &args)?;
        buildah.archive(name, &dir)?;
    }
    let _ = fs::remove_dir_all(&staging);
    fs::write(&stamp, &digest).map_err(io(format!("writing {}", stamp.display())))?;
    Ok(built.to_vec())
}

/// `cargo build` of the operator and the runner (a no-op when the tests built them); the Atlas
/// the tools built.
fn cargo_build() -> Result<Binaries, ImageError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(crate::workspace_root())
        .env("CARGO_TARGET_DIR", crate::target_dir())
        .args([
            "build",
            "--quiet",
            "-p",
            "atlas-operator",
            "--bin",
            "atlas-operator",
            "-p",
            "atlas-runner",
            "--bin",
            "runner",
        ]);
    cmd::output(&mut build, BUILD_LIMIT).map_err(|source| ImageError::Command {
        what: "building the operator and the runner".into(),
        source,
    })?;
    let debug = crate::target_dir().join("debug");
    let atlas = crate::tools::path("atlas").map_err(|err| ImageError::Missing(err.to_string()))?;
    Ok(Binaries {
        operator: debug.join("atlas-operator"),
        runner: debug.join("runner"),
        atlas,
    })
}

/// What the images are made of: the binaries, the Dockerfiles, and this file's recipe.
fn inputs_digest(binaries: &Binaries) -> Result<String, ImageError> {
    let mut hash = Sha256::new();
    let root = crate::workspace_root();
    for path in [
        binaries.operator.clone(),
        binaries.runner.clone(),
        binaries.atlas.clone(),
        root.join("Dockerfile.operator"),
        root.join("Dockerfile.runner"),
    ] {
        let bytes = fs::read(&path).map_err(io(format!("reading {}", path.display())))?;
        hash.update(path.to_string_lossy().as_bytes());
        hash.update(Sha256::digest(&bytes));
    }
    hash.update(include_str!("workspace.rs").as_bytes());
    Ok(format!("{:x}", hash.finalize()))
}

/// The base image's files under `tree`: what distroless/static has, and the shared libraries
/// `binaries` load (each where the dynamic loader looks for it).
fn base_tree(tree: &Path, binaries: &[&Path]) -> Result<(), ImageError> {
    let write = |relative: &str, text: &str| -> Result<(), ImageError> {
        let path = tree.join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
        }
        fs::write(&path, text).map_err(io(format!("writing {}", path.display())))
    };
    write(
        "etc/passwd",
        "root:x:0:0:root:/root:/sbin/nologin\n\
         nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
    )?;
    write("etc/group", "root:x:0:\nnonroot:x:65532:\n")?;
    // glibc reads it for host names; without it `files dns` is its default anyway.
    write("etc/nsswitch.conf", "hosts: files dns\n")?;
    let certificates = Path::new("/etc/ssl/certs/ca-certificates.crt");
    let target = tree.join("etc/ssl/certs/ca-certificates.crt");
    fs::create_dir_all(target.parent().expect("a parent"))
        .map_err(io("creating the certificates' directory"))?;
    fs::copy(certificates, &target).map_err(io(format!(
        "copying {} (Debian's ca-certificates)",
        certificates.display()
    )))?;
    // The root filesystem is read-only in a pod: /tmp and the home are there for programs that
    // look for them, and an emptyDir goes over /tmp where something writes.
    for (dir, mode) in [("tmp", 0o1777), ("home/nonroot", 0o755)] {
        let path = tree.join(dir);
        fs::create_dir_all(&path).map_err(io(format!("creating {}", path.display())))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(io(format!("setting the mode of {}", path.display())))?;
    }
    for library in shared_libraries(binaries)? {
        let inside = tree.join(library.strip_prefix("/").unwrap_or(&library));
        fs::create_dir_all(inside.parent().expect("a library has a directory")).map_err(io(
            format!("creating the directory of {}", inside.display()),
        ))?;
        // fs::copy follows links: the image gets the file under the name the loader asks for.
        fs::copy(&library, &inside).map_err(io(format!("copying {}", library.display())))?;
    }
    Ok(())
}

/// Every shared library (and the dynamic loader) the binaries load, by the paths `ldd` reports.
fn shared_libraries(binaries: &[&Path]) -> Result<BTreeSet<PathBuf>, ImageError> {
    let mut libraries = BTreeSet::new();
    for binary in binaries {
        let mut ldd = Command::new("ldd");
        ldd.arg(binary);
        let Ok(out) = cmd::output(&mut ldd, Duration::from_secs(30)) else {
            // `ldd` fails on a static binary ("not a dynamic executable"): it needs nothing.
            continue;
        };
        libraries.extend(parse_ldd(&out)?);
    }
    Ok(libraries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_are_named_after_the_image() {
        assert_eq!(
            archive_name("devcluster.local/runner:dev"),
            "runner-dev.tar"
        );
    }
}
