//! What the real node leaves in the kernel, outside the cluster's directory: the pods' bridge and
//! the nat rules by which pods reach the host's listeners (made at `up`), and at `down` the pods'
//! processes, cgroups, mounts, NAT chains and libcni's cache entries, each found by our names.

use super::*;

/// The pods' network as the host sees it: the bridge, and the way to the host's listeners.
pub(in crate::cluster) fn make_network(cluster: &Cluster) -> Result<(), ClusterError> {
    // First the mark that this cluster has a real node, so a `down` after a crash from here on
    // cleans up what follows (and only this cluster's `down` does: see `was_here`).
    let dir = node_dir(cluster);
    fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    make_bridge()?;
    reach_host_listeners(cluster)
}

/// Lets pods reach what listens on the host's loopback (the test databases, started before
/// any node and shared with the process-kubelet's tests) at the bridge's address, port for
/// port: new connections from the bridge to the gateway are sent to 127.0.0.1, which the
/// kernel routes from a bridge only with `route_localnet`. The API server and the kubelet
/// listen on the bridge itself and are left alone. The rules live in chains of ours, which
/// `down` removes ([`remove_nat_chains`]); the sysctl goes with the bridge.
fn reach_host_listeners(cluster: &Cluster) -> Result<(), ClusterError> {
    let own_ports = format!("{},{}", cluster.ports.apiserver, cluster.ports.kubelet);
    let steps = [
        format!("sysctl -q -w {ROUTE_LOCALNET}"),
        format!("iptables -t nat -N {HOST_CHAIN}"),
        format!(
            "iptables -t nat -A {HOST_CHAIN} -d {POD_GATEWAY}/32 -p tcp -m multiport \
             ! --dports {own_ports} -j DNAT --to-destination 127.0.0.1"
        ),
        format!("iptables -t nat -A PREROUTING -i {BRIDGE} -j {HOST_CHAIN}"),
        // The listeners then see the connection come from 127.0.0.1, as from the
        // process-kubelet's pods: the test servers accept loopback clients only.
        format!("iptables -t nat -N {HOST_SNAT_CHAIN}"),
        format!(
            "iptables -t nat -A {HOST_SNAT_CHAIN} -s {POD_SUBNET} -d 127.0.0.1/32 -p tcp \
             -j SNAT --to-source 127.0.0.1"
        ),
        format!("iptables -t nat -A INPUT -j {HOST_SNAT_CHAIN}"),
    ];
    for step in steps {
        let words: Vec<&str> = step.split_whitespace().collect();
        let mut command = Command::new(words[0]);
        command.args(&words[1..]);
        cmd::output(&mut command, CALL_LIMIT)
            .map_err(command_error("letting pods reach the host's listeners"))?;
    }
    Ok(())
}

/// The pods' bridge with its gateway address, made before the kubelet starts (the bridge plugin
/// would make it only with the first pod), so the kubelet can listen on it.
fn make_bridge() -> Result<(), ClusterError> {
    let prefix = POD_SUBNET.split('/').nth(1).unwrap_or("16");
    let steps: [&[&str]; 3] = [
        &["link", "add", BRIDGE, "type", "bridge"],
        &[
            "addr",
            "add",
            &format!("{POD_GATEWAY}/{prefix}"),
            "dev",
            BRIDGE,
        ],
        &["link", "set", BRIDGE, "up"],
    ];
    for step in steps {
        let mut ip = Command::new("ip");
        ip.args(step);
        cmd::output(&mut ip, CALL_LIMIT).map_err(command_error("making the pods' bridge"))?;
    }
    Ok(())
}

/// Kills every process in the pods' cgroups: the kubelet leaves its pods running when it stops,
/// and containerd's shims would restart nothing but keep them.
pub(in crate::cluster) fn tear_down_pods() {
    for _ in 0..20 {
        let pids = pod_pids();
        if pids.is_empty() {
            return;
        }
        let mut kill = Command::new("kill");
        kill.arg("-KILL").args(pids.iter().map(u32::to_string));
        let _ = cmd::output(&mut kill, Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `kubepods` cgroup of each v1 hierarchy (or the v2 one).
fn pod_cgroups() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut found = Vec::new();
    if root.join(PODS_CGROUP).is_dir() {
        found.push(root.join(PODS_CGROUP));
    }
    if let Ok(entries) = fs::read_dir(root) {
        for entry in entries.flatten() {
            let path = entry.path().join(PODS_CGROUP);
            if path.is_dir() {
                found.push(path);
            }
        }
    }
    found
}

fn pod_pids() -> Vec<u32> {
    fn walk(dir: &Path, pids: &mut Vec<u32>) {
        if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(
                text.lines()
                    .filter_map(|line| line.trim().parse::<u32>().ok()),
            );
        }
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                    walk(&entry.path(), pids);
                }
            }
        }
    }
    let mut pids = Vec::new();
    for cgroup in pod_cgroups() {
        walk(&cgroup, &mut pids);
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Removes what the real node leaves outside processes: the shims, the mounts under `dir`, the
/// pods' cgroups, the bridge and its NAT chains, libcni's cache entries. Safe to run when none
/// of it exists; `dir` is the cluster's directory.
pub(in crate::cluster) fn clean_host(dir: &Path) {
    tear_down_pods();
    let shims: Vec<u32> = process::find_in(&[SHIM], dir)
        .into_iter()
        .map(|(_, pid)| pid)
        .collect();
    process::terminate(&shims, Duration::from_secs(5));
    unmount_under(dir);
    remove_cgroups();
    if Path::new("/sys/class/net").join(BRIDGE).exists() {
        let mut ip = Command::new("ip");
        ip.args(["link", "delete", BRIDGE]);
        let _ = cmd::output(&mut ip, CALL_LIMIT);
    }
    remove_nat_chains();
    remove_cni_results(dir);
}

/// libcni's cached results of our pods, `<network>-<sandbox id>-<interface>`: ours are those of
/// our network, and the loopback network's of our sandboxes (containerd lists them in our
/// directory).
fn remove_cni_results(dir: &Path) {
    let sandboxes = dir.join("node/containerd/root/io.containerd.grpc.v1.cri/sandboxes");
    let ids: Vec<String> = fs::read_dir(sandboxes)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let Ok(entries) = fs::read_dir("/var/lib/cni/results") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{NETWORK}-")) || ids.iter().any(|id| name.contains(id)) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Whether the last `up` in `dir` started a real node (so a crash's leftovers need
/// [`clean_host`]).
///
/// Only this cluster's own mark counts, not the bridge: the bridge is global, and another
/// checkout's cluster may be running its real node on it (a process-node cluster's `down` once
/// tore down the real node of a CI run beside it).
pub(in crate::cluster) fn was_here(dir: &Path) -> bool {
    dir.join("node").exists()
}

/// Mount points under `dir` (overlay roots, shm, tmpfs volumes, network namespaces), deepest
/// first; lazily, so a busy one still goes.
fn unmount_under(dir: &Path) {
    let prefix = dir.to_string_lossy().into_owned();
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mount_point)
        .filter(|point| point.starts_with(&prefix))
        .collect();
    points.sort_by_key(|point| std::cmp::Reverse(point.len()));
    points.dedup();
    for point in points {
        let mut umount = Command::new("umount");
        umount.args(["--lazy", &point]);
        let _ = cmd::output(&mut umount, CALL_LIMIT);
    }
}

/// `/proc/self/mountinfo` writes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_point(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len() + 1
            && let Some(octal) = field.get(i + 1..i + 4)
            && let Ok(byte) = u8::from_str_radix(octal, 8)
        {
            out.push(byte);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The pods' cgroups, innermost first (a cgroup goes only once it has no children and no
/// processes; a few tries while the killed processes finish exiting).
fn remove_cgroups() {
    fn dirs(dir: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                    dirs(&entry.path(), out);
                }
            }
        }
        out.push(dir.to_path_buf());
    }
    for _ in 0..20 {
        let mut all = Vec::new();
        for cgroup in pod_cgroups() {
            dirs(&cgroup, &mut all);
        }
        if all.is_empty() {
            return;
        }
        for dir in all {
            let _ = fs::remove_dir(dir);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The rules and chains of ours in iptables and ip6tables: the bridge plugin's masquerading (a
/// `POSTROUTING` rule per pod, commented with our network's name, jumping to a `CNI-…` chain of
/// its own: a pod the kubelet tears down takes its own away, those of pods killed by `down` stay)
/// and the kubelet's and kube-proxy's `KUBE-…` chains (canaries, `KUBE-FIREWALL`, Services),
/// which they never remove. Rules are deleted by their own words as `iptables-save` prints them.
fn remove_nat_chains() {
    let marker = format!("name: \\\"{NETWORK}\\\"");
    for (save, iptables) in [
        ("iptables-save", "iptables"),
        ("ip6tables-save", "ip6tables"),
    ] {
        let mut command = Command::new(save);
        let Ok(rules) = cmd::output(&mut command, CALL_LIMIT) else {
            continue;
        };
        let mut table = "";
        let mut deletes: Vec<(String, Vec<String>)> = Vec::new();
        let mut chains: Vec<(String, String)> = Vec::new();
        for line in rules.lines() {
            if let Some(name) = line.strip_prefix('*') {
                table = name;
            } else if let Some(chain) = line.strip_prefix(':') {
                let chain = chain.split_whitespace().next().unwrap_or_default();
                if chain.starts_with("KUBE-") || chain.starts_with(OUR_CHAINS) {
                    chains.push((table.to_string(), chain.to_string()));
                }
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let words = split_rule(rule);
                let target = words
                    .iter()
                    .position(|word| word == "-j")
                    .and_then(|at| words.get(at + 1))
                    .cloned()
                    .unwrap_or_default();
                let ours_cni = rule.contains(&marker) && target.starts_with("CNI-");
                if ours_cni {
                    chains.push((table.to_string(), target.clone()));
                }
                let from_outside = !words[0].starts_with("KUBE-") && !words[0].starts_with("CNI-");
                let ours =
                    ours_cni || target.starts_with("KUBE-") || target.starts_with(OUR_CHAINS);
                if from_outside && ours {
                    deletes.push((table.to_string(), words));
                }
            }
        }
        for (table, words) in deletes {
            let mut delete = Command::new(iptables);
            delete.args(["-t", &table, "-D"]).args(&words);
            let _ = cmd::output(&mut delete, CALL_LIMIT);
        }
        // Flushed first, all of them: a chain can be deleted only once nothing jumps to it.
        for step in ["-F", "-X"] {
            for (table, chain) in &chains {
                let mut command = Command::new(iptables);
                command.args(["-t", table, step, chain]);
                let _ = cmd::output(&mut command, CALL_LIMIT);
            }
        }
    }
}

/// An `iptables-save` rule's words, with `"…"` (and `\"` inside) unquoted.
fn split_rule(rule: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut any = false;
    let mut chars = rule.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => word.extend(chars.next()),
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                any = false;
            }
            c => word.push(c),
        }
    }
    if any || !word.is_empty() {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nat_comments_and_mount_points_are_unquoted() {
        let rule = r#"POSTROUTING -s 10.88.0.5/32 -m comment --comment "name: \"atlas-devcluster\" id: \"abc\"" -j CNI-1234"#;
        assert_eq!(
            split_rule(rule),
            [
                "POSTROUTING",
                "-s",
                "10.88.0.5/32",
                "-m",
                "comment",
                "--comment",
                r#"name: "atlas-devcluster" id: "abc""#,
                "-j",
                "CNI-1234"
            ]
        );
        assert_eq!(unescape_mount_point(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mount_point("/tmp/plain"), "/tmp/plain");
    }
}
