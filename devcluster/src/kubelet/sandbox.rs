//! A container as a local process in a sandbox of its own, made by `bwrap` (bubblewrap):
//!
//! - a private mount namespace whose root is a fresh tmpfs. The host's top-level entries are
//!   bind-mounted into it, so the container sees the host's programs and libraries; each volume
//!   and the termination-message file are mounted at their paths. Where a mount goes into a host
//!   directory (`/etc/config`, `/var/run/secrets/…`), that directory is rebuilt on the tmpfs from
//!   binds of its entries, so no mount point is ever created on the host and two pods can mount
//!   different things at the same path;
//! - a fresh `/dev` and, in a private PID namespace, `/proc`; the container's program is PID 1
//!   (`--as-pid-1`), so as in a real container a `SIGTERM` it has no handler for is ignored and
//!   the grace period ends in `SIGKILL`, and every process it leaves behind dies with it;
//! - its own host name (the pod's name); the network is the host's (the node has one loopback).
//!
//! `--die-with-parent` ties every container to the kubelet: when the kubelet dies, so do they.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;

/// What is mounted at a path inside the sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A host file or directory.
    Bind { host: PathBuf, read_only: bool },
    /// An empty directory (on the sandbox's tmpfs).
    Dir,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// An absolute path inside the sandbox.
    pub target: PathBuf,
    pub source: Source,
}

/// Everything needed to start one container.
#[derive(Clone, Debug)]
pub struct Launch {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: String,
    pub hostname: String,
    pub mounts: Vec<Mount>,
    /// Where stdout and stderr go (one file: their order is kept).
    pub log: PathBuf,
}

/// An entry of a host directory, as the sandbox plan needs it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Entry {
    Symlink(PathBuf),
    Other,
}

/// The host's entries of `dir` (nothing when it does not exist).
pub fn list_host(dir: &Path) -> Vec<(OsString, Entry)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut listed: Vec<(OsString, Entry)> = entries
        .flatten()
        .map(|entry| {
            let kind = match fs::read_link(entry.path()) {
                Ok(target) => Entry::Symlink(target),
                Err(_) => Entry::Other,
            };
            (entry.file_name(), kind)
        })
        .collect();
    listed.sort();
    listed
}

/// Lexically normalised absolute path (`.` and `..` resolved, no trailing slash).
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Paths the sandbox makes fresh itself: mount points below them need no host directory.
fn fresh(path: &Path) -> bool {
    path.starts_with("/dev") || path.starts_with("/proc")
}

/// `bwrap`'s arguments for `launch`, with the host seen through `list`.
pub fn bwrap_args(
    launch: &Launch,
    list: impl Fn(&Path) -> Vec<(OsString, Entry)>,
) -> Vec<OsString> {
    let mut mounts: Vec<Mount> = launch
        .mounts
        .iter()
        .map(|mount| Mount {
            target: normalise(&mount.target),
            source: mount.source.clone(),
        })
        .filter(|mount| mount.target != Path::new("/"))
        .collect();
    // Parents before children, so a mount inside another volume lands inside it.
    mounts.sort_by_key(|mount| mount.target.components().count());
    let targets: BTreeSet<PathBuf> = mounts.iter().map(|m| m.target.clone()).collect();

    // The host directories on the way to a mount point (outside fresh trees and other mounts):
    // rebuilt from their entries instead of bound whole.
    let mut spine: BTreeSet<PathBuf> = BTreeSet::from([PathBuf::from("/")]);
    for target in &targets {
        let mut dir = PathBuf::from("/");
        let parts: Vec<_> = target.components().skip(1).collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            dir.push(part);
            if fresh(&dir) || targets.contains(&dir) {
                break;
            }
            spine.insert(dir.clone());
        }
    }

    let mut args: Vec<OsString> = [
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--as-pid-1",
        "--die-with-parent",
        "--hostname",
    ]
    .map(OsString::from)
    .to_vec();
    args.push(launch.hostname.clone().into());
    args.extend(["--dev", "/dev", "--proc", "/proc"].map(OsString::from));
    for dir in &spine {
        if dir != Path::new("/") {
            args.extend([OsString::from("--dir"), dir.clone().into()]);
        }
        for (name, entry) in list(dir) {
            let path = dir.join(&name);
            if dir == Path::new("/") && (name == "dev" || name == "proc") {
                continue;
            }
            if spine.contains(&path) || targets.contains(&path) {
                continue;
            }
            match entry {
                Entry::Symlink(to) => {
                    args.extend([OsString::from("--symlink"), to.into(), path.into()]);
                }
                // `-try`: a host entry may vanish between the listing and the mount.
                Entry::Other => {
                    args.extend([
                        OsString::from("--bind-try"),
                        path.clone().into(),
                        path.into(),
                    ]);
                }
            }
        }
    }
    for mount in mounts {
        match mount.source {
            Source::Bind { host, read_only } => {
                let flag = if read_only { "--ro-bind" } else { "--bind" };
                args.extend([flag.into(), host.into(), mount.target.into()]);
            }
            Source::Dir => args.extend([OsString::from("--dir"), mount.target.into()]),
        }
    }
    args.extend([OsString::from("--chdir"), launch.working_dir.clone().into()]);
    args.push("--".into());
    args.extend(launch.argv.iter().map(OsString::from));
    args
}

/// Starts `launch` under `bwrap`; the child is `bwrap`'s monitor process, whose exit status is
/// the container's (128 + the signal's number when a signal ended it).
pub fn spawn(bwrap: &Path, launch: &Launch) -> std::io::Result<tokio::process::Child> {
    let log = File::options()
        .create(true)
        .append(true)
        .open(&launch.log)?;
    let mut command = tokio::process::Command::new(bwrap);
    command
        .args(bwrap_args(launch, list_host))
        // A container sees only its own environment, never the kubelet's.
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a signal meant for the kubelet's group never reaches it.
        .process_group(0);
    command.spawn()
}

/// The container's own process (PID 1 of its namespace): `bwrap`'s only child.
pub fn container_pid(bwrap_pid: u32) -> Option<i32> {
    let children =
        fs::read_to_string(format!("/proc/{bwrap_pid}/task/{bwrap_pid}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

/// Sends `signal` to `pid`; a process already gone is not an error.
pub fn signal(pid: i32, signal: i32) {
    if pid > 0 {
        // SAFETY: kill(2) has no memory effects; a stale pid at worst gets ESRCH.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// Asks the container to stop: `SIGTERM` to its process (not to `bwrap`, which would die
/// without reporting the container's exit code).
pub fn terminate(bwrap_pid: u32) {
    if let Some(pid) = container_pid(bwrap_pid) {
        signal(pid, libc::SIGTERM);
    }
}

/// Ends the container at once: `SIGKILL` to its process (bwrap then reports 137), and to `bwrap`
/// should the container be gone already.
pub fn kill(bwrap_pid: u32) {
    match container_pid(bwrap_pid) {
        Some(pid) => signal(pid, libc::SIGKILL),
        None => signal(bwrap_pid as i32, libc::SIGKILL),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_host(dir: &Path) -> Vec<(OsString, Entry)> {
        let names: &[(&str, Option<&str>)] = match dir.to_str().unwrap() {
            "/" => &[
                ("bin", Some("usr/bin")),
                ("dev", None),
                ("etc", None),
                ("proc", None),
                ("tmp", None),
                ("usr", None),
                ("var", None),
            ],
            "/var" => &[("lib", None), ("run", Some("/run"))],
            "/var/run" => &[("lock", None)],
            _ => &[],
        };
        names
            .iter()
            .map(|(name, link)| {
                let entry = link.map_or(Entry::Other, |to| Entry::Symlink(PathBuf::from(to)));
                (OsString::from(name), entry)
            })
            .collect()
    }

    fn launch(mounts: Vec<Mount>) -> Launch {
        Launch {
            argv: vec!["sh".into(), "-c".into(), "true".into()],
            env: vec![],
            working_dir: "/".into(),
            hostname: "pod-1".into(),
            mounts,
            log: PathBuf::from("/dev/null"),
        }
    }

    fn text(args: &[OsString]) -> String {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn host_entries_are_bound_and_mount_points_never_touch_the_host() {
        let args = bwrap_args(
            &launch(vec![
                Mount {
                    target: "/dev/termination-log".into(),
                    source: Source::Bind {
                        host: "/state/tl".into(),
                        read_only: false,
                    },
                },
                Mount {
                    target: "/var/run/secrets/kubernetes.io/serviceaccount".into(),
                    source: Source::Bind {
                        host: "/state/sa".into(),
                        read_only: true,
                    },
                },
            ]),
            fake_host,
        );
        let text = text(&args);
        assert!(text.contains("--symlink usr/bin /bin"), "{text}");
        assert!(text.contains("--bind-try /etc /etc"), "{text}");
        assert!(!text.contains("--bind-try /dev"), "{text}");
        assert!(!text.contains("--bind-try /proc"), "{text}");
        // /var is rebuilt from its entries; so is /var/run; the deeper ones are fresh dirs.
        assert!(!text.contains("--bind-try /var /var"), "{text}");
        assert!(
            text.contains("--dir /var --bind-try /var/lib /var/lib"),
            "{text}"
        );
        assert!(
            text.contains("--dir /var/run --bind-try /var/run/lock /var/run/lock"),
            "{text}"
        );
        assert!(
            text.contains("--dir /var/run/secrets/kubernetes.io"),
            "{text}"
        );
        assert!(
            text.contains("--bind /state/tl /dev/termination-log"),
            "{text}"
        );
        assert!(
            text.contains("--ro-bind /state/sa /var/run/secrets/kubernetes.io/serviceaccount"),
            "{text}"
        );
        assert!(text.ends_with("--chdir / -- sh -c true"), "{text}");
    }

    #[test]
    fn mounts_inside_mounts_go_inside_the_outer_volume() {
        let args = bwrap_args(
            &launch(vec![
                Mount {
                    target: "/data/sub/file".into(),
                    source: Source::Bind {
                        host: "/state/f".into(),
                        read_only: true,
                    },
                },
                Mount {
                    target: "/data".into(),
                    source: Source::Bind {
                        host: "/state/empty".into(),
                        read_only: false,
                    },
                },
            ]),
            fake_host,
        );
        let text = text(&args);
        let outer = text.find("--bind /state/empty /data").unwrap();
        let inner = text.find("--ro-bind /state/f /data/sub/file").unwrap();
        assert!(outer < inner, "{text}");
        assert!(!text.contains("--dir /data/sub"), "{text}");
    }
}
