//! Debian's packages the test bed needs: the database servers and clients, openssl and
//! bubblewrap, and for the real node only ([`REAL_NODE_PACKAGES`]) runc, the CNI plugins,
//! buildah, busybox, iptables and a C compiler. Installed when we run as root; otherwise the exact
//! command to run is printed.

use std::process::Command;
use std::sync::Once;
use std::time::Duration;

use crate::cmd::{self, CmdError};

/// The packages, and a file each installs, by which we tell it is there.
pub const PACKAGES: &[(&str, &str)] = &[
    ("postgresql", "/usr/share/postgresql-common/pg_wrapper"),
    ("mariadb-server", "/usr/sbin/mariadbd"),
    ("mariadb-client", "/usr/bin/mariadb"),
    ("sqlite3", "/usr/bin/sqlite3"),
    // The local cluster's CA and certificates.
    ("openssl", "/usr/bin/openssl"),
    // The process-kubelet's sandboxes: a private mount and PID namespace per container.
    ("bubblewrap", "/usr/bin/bwrap"),
];

/// What `cluster up --node real` needs on top of [`PACKAGES`]: the default process-kubelet
/// needs none of it, so a plain `up` never installs it.
pub const REAL_NODE_PACKAGES: &[(&str, &str)] = &[
    ("runc", "/usr/sbin/runc"),
    ("containernetworking-plugins", "/usr/lib/cni/bridge"),
    // Builds the pause and busybox images from local files (nothing is ever pulled).
    ("buildah", "/usr/bin/buildah"),
    ("busybox-static", "/bin/busybox"),
    // The bridge plugin's masquerading, and `down` removing its chains.
    ("iptables", "/usr/sbin/iptables"),
    ("iproute2", "/usr/sbin/ip"),
    // The pause binary is compiled statically from the kubernetes module's source.
    ("gcc", "/usr/bin/gcc"),
    ("libc6-dev", "/usr/include/stdio.h"),
];

#[derive(Debug, thiserror::Error)]
pub enum PackagesError {
    #[error(
        "missing Debian packages: {missing}; install them as root with:\n  \
         apt-get update && apt-get install -y --no-install-recommends {missing}"
    )]
    NotRoot { missing: String },
    #[error("installing Debian packages {missing} failed: {source}")]
    Install {
        missing: String,
        #[source]
        source: CmdError,
    },
    #[error("after installing, still missing: {0}")]
    StillMissing(String),
}

/// The packages that are not installed.
pub fn missing() -> Vec<&'static str> {
    missing_of(PACKAGES)
}

fn missing_of(packages: &[(&'static str, &str)]) -> Vec<&'static str> {
    packages
        .iter()
        .filter(|(_, marker)| !std::path::Path::new(marker).exists())
        .map(|(name, _)| *name)
        .collect()
}

/// Installs the missing packages (as root), or says how to.
pub fn ensure() -> Result<(), PackagesError> {
    ensure_all(PACKAGES)
}

/// [`ensure`], and the real node's packages too.
pub fn ensure_real_node() -> Result<(), PackagesError> {
    ensure_all(PACKAGES)?;
    ensure_all(REAL_NODE_PACKAGES)
}

/// Held while one process installs: apt refuses a second `apt-get install` while the first
/// holds dpkg's lock, and the test binaries that need packages run at once on a new machine.
const INSTALL_LOCK: &str = "/var/lock/atlas-operator-packages.lock";

fn ensure_all(packages: &[(&'static str, &str)]) -> Result<(), PackagesError> {
    if missing_of(packages).is_empty() {
        return Ok(());
    }
    if !cmd::is_root() {
        return Err(PackagesError::NotRoot {
            missing: missing_of(packages).join(" "),
        });
    }
    let _installing = std::fs::File::create(INSTALL_LOCK).and_then(|file| {
        file.lock()?;
        Ok(file)
    });
    // Another process may have installed them while this one waited.
    let missing = missing_of(packages);
    if missing.is_empty() {
        return Ok(());
    }
    let names = missing.join(" ");
    eprintln!("==> installing Debian packages: {names}");
    static UPDATE: Once = Once::new();
    let mut update_result = Ok(());
    UPDATE.call_once(|| {
        update_result = cmd::run_inherit(
            Command::new("apt-get").args(["update", "-q"]),
            Duration::from_secs(600),
        );
    });
    update_result.map_err(|source| PackagesError::Install {
        missing: names.clone(),
        source,
    })?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive");
    cmd::run_inherit(&mut install, Duration::from_secs(1200)).map_err(|source| {
        PackagesError::Install {
            missing: names.clone(),
            source,
        }
    })?;
    let still = missing_of(packages);
    if !still.is_empty() {
        return Err(PackagesError::StillMissing(still.join(" ")));
    }
    Ok(())
}
