//! What confines this process, as the kernel reports it: the user and group it runs as, its
//! effective capabilities, `no_new_privs`, the seccomp mode, and whether the root filesystem is
//! read-only. The runner logs it at start, so `kubectl logs` shows what a pod's
//! `securityContext` became on the node, not what the spec asked for.

use std::fmt;

/// The confinement read from `/proc/self/status` and `/proc/self/mountinfo`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Confinement {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// The effective capability set, as the hexadecimal mask the kernel prints.
    pub capabilities: Option<u64>,
    pub no_new_privs: Option<bool>,
    /// 0 none, 1 strict, 2 filter.
    pub seccomp: Option<u8>,
    pub read_only_root: Option<bool>,
}

impl Confinement {
    /// This process's; fields the kernel does not report stay unknown.
    pub fn current() -> Confinement {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Confinement::parse(&status, &mounts)
    }

    pub fn parse(status: &str, mountinfo: &str) -> Confinement {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        // `Uid:` and `Gid:` list real, effective, saved and filesystem ids: the effective one.
        let effective = |name: &str| field(name)?.split_whitespace().nth(1)?.parse().ok();
        Confinement {
            uid: effective("Uid"),
            gid: effective("Gid"),
            capabilities: field("CapEff").and_then(|mask| u64::from_str_radix(mask, 16).ok()),
            no_new_privs: field("NoNewPrivs").map(|value| value == "1"),
            seccomp: field("Seccomp").and_then(|mode| mode.parse().ok()),
            read_only_root: root_is_read_only(mountinfo),
        }
    }
}

/// Whether the last mount at `/` (the one this process sees) is read-only: the mount options
/// are the sixth field of a `mountinfo` line.
fn root_is_read_only(mountinfo: &str) -> Option<bool> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(4) == Some(&"/")).then(|| fields.get(5).copied())?
        })
        .next_back()
        .map(|options| options.split(',').any(|option| option == "ro"))
}

impl fmt::Display for Confinement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known = |value: Option<String>| value.unwrap_or_else(|| "unknown".into());
        write!(
            f,
            "uid {} gid {}, capabilities {}, no_new_privs {}, seccomp {}, root filesystem {}",
            known(self.uid.map(|v| v.to_string())),
            known(self.gid.map(|v| v.to_string())),
            known(self.capabilities.map(|mask| {
                if mask == 0 {
                    "none".into()
                } else {
                    format!("{mask:#x}")
                }
            })),
            known(
                self.no_new_privs
                    .map(|on| if on { "on" } else { "off" }.into())
            ),
            known(self.seccomp.map(|mode| match mode {
                0 => "off".into(),
                1 => "strict".into(),
                2 => "filter".into(),
                other => other.to_string(),
            })),
            known(
                self.read_only_root
                    .map(|ro| if ro { "read-only" } else { "writable" }.into())
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\trunner\nUid:\t65532\t65532\t65532\t65532\n\
                          Gid:\t65532\t65532\t65532\t65532\nCapEff:\t0000000000000000\n\
                          NoNewPrivs:\t1\nSeccomp:\t2\n";
    const MOUNTS: &str = "640 560 0:52 / / ro,relatime master:1 - overlay overlay rw,lowerdir=a\n\
                          641 640 0:53 / /proc rw,nosuid - proc proc rw\n\
                          650 640 8:1 /tmp /tmp rw,relatime - ext4 /dev/sda1 rw\n";

    #[test]
    fn a_restricted_container_reads_as_such() {
        let confinement = Confinement::parse(STATUS, MOUNTS);
        assert_eq!(
            confinement.to_string(),
            "uid 65532 gid 65532, capabilities none, no_new_privs on, seccomp filter, \
             root filesystem read-only"
        );
    }

    #[test]
    fn a_root_process_on_a_host_reads_as_such() {
        let status = "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nCapEff:\t000001ffffffffff\n\
                      NoNewPrivs:\t0\nSeccomp:\t0\n";
        let mounts = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n";
        assert_eq!(
            Confinement::parse(status, mounts).to_string(),
            "uid 0 gid 0, capabilities 0x1ffffffffff, no_new_privs off, seccomp off, \
             root filesystem writable"
        );
    }

    #[test]
    fn what_the_kernel_does_not_say_is_unknown() {
        assert_eq!(
            Confinement::parse("", "").to_string(),
            "uid unknown gid unknown, capabilities unknown, no_new_privs unknown, \
             seccomp unknown, root filesystem unknown"
        );
    }
}
