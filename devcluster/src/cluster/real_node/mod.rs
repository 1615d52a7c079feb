//! The real node (`cargo xtask cluster up --node real`): the upstream kubelet on containerd and
//! runc, with the bridge CNI plugin, and kube-scheduler placing pods on it. It proves what the
//! process-kubelet only imitates: images, sandboxes, cgroups, a pod network, termination
//! messages, the kubelet's own status reporting.
//!
//! Nothing is ever pulled: the pause image is compiled from the kubernetes module's
//! `build/pause/linux/pause.c` and the busybox image is Debian's static busybox, both built with
//! buildah (its storage in the cluster's directory, on `vfs`, so it mounts nothing) and imported
//! into containerd's `k8s.io` namespace.
//!
//! Everything lives in the cluster's directory except what the kernel keeps globally: the
//! bridge [`BRIDGE`], the bridge plugin's NAT chains, the pods' cgroups under `kubepods` and
//! libcni's result cache in `/var/lib/cni`. So there is one real node per machine, and `down`
//! ([`tear_down_pods`], [`clean_host`]) removes all of those by name.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::components::{spawn, wait_for};
use super::pki::Usage;
use super::{CALL_LIMIT, Cluster, ClusterError, Component, command_error, io};
use crate::images::Buildah;
use crate::{cmd, process};

mod host;
pub(super) use host::{clean_host, make_network, tear_down_pods, was_here};

/// The Node's name: not the process-kubelet's `devnode`, so a test can tell which node ran it.
pub const NODE_NAME: &str = "realnode";
/// The pod sandbox image, built at `up` (pinned in containerd's config).
pub const PAUSE_IMAGE: &str = "devcluster.local/pause:3.10";
/// Debian's static busybox as an image, `/bin/busybox` and `/bin/sh`, built at `up`.
pub const BUSYBOX_IMAGE: &str = "devcluster.local/busybox:1";
/// The pods' bridge: at most 15 characters (a Linux interface name).
pub const BRIDGE: &str = "atlascni0";
/// The CNI network's name: the bridge plugin's NAT rules carry it in their comments, by which
/// `down` finds them.
const NETWORK: &str = "atlas-devcluster";
/// The pods' addresses; the bridge has the first, which is where a pod reaches the host's
/// listeners (the pod's own 127.0.0.1 is its own).
pub const POD_SUBNET: &str = "10.88.0.0/16";
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
/// The shim containerd starts per pod: not one of our components, found by our socket's path
/// in its arguments.
const SHIM: &str = "containerd-shim-runc-v2";
/// The prefix of the nat chains of ours, by which `down` finds them.
const OUR_CHAINS: &str = "ATLAS-DEVCLUSTER-";
/// The nat chain that sends pods' connections to the gateway on to the host's loopback.
const HOST_CHAIN: &str = "ATLAS-DEVCLUSTER-HOST";
/// The nat chain that makes those connections come from the loopback address.
const HOST_SNAT_CHAIN: &str = "ATLAS-DEVCLUSTER-SNAT";
const ROUTE_LOCALNET: &str = "net.ipv4.conf.atlascni0.route_localnet=1";
/// The cgroup under which the kubelet (cgroupfs driver, default root) puts every pod.
const PODS_CGROUP: &str = "kubepods";
/// A pause or busybox image build is a few seconds.
const IMAGE_LIMIT: Duration = Duration::from_secs(300);

/// The programs the real node runs, found (and the machine checked) before anything starts.
pub(super) struct Binaries {
    containerd: PathBuf,
    ctr: PathBuf,
    kubelet: PathBuf,
    scheduler: PathBuf,
    proxy: PathBuf,
    runc: PathBuf,
    shim: PathBuf,
    pause_source: PathBuf,
}

/// Checks that this machine can run containers, installs the real node's packages and finds its
/// binaries; every refusal says why.
pub(super) fn prepare() -> Result<Binaries, ClusterError> {
    can_run_containers().map_err(ClusterError::CannotRunContainers)?;
    crate::packages::ensure_real_node()?;
    let runc = ["/usr/sbin/runc", "/usr/bin/runc"]
        .map(PathBuf::from)
        .into_iter()
        .find(|path| path.exists())
        .ok_or_else(|| ClusterError::CannotRunContainers("runc is not installed".into()))?;
    Ok(Binaries {
        containerd: crate::tools::path("containerd")?,
        ctr: crate::tools::path("ctr")?,
        kubelet: crate::tools::path("kubelet")?,
        scheduler: crate::tools::path("kube-scheduler")?,
        proxy: crate::tools::path("kube-proxy")?,
        runc,
        shim: crate::tools::path(SHIM)?,
        pause_source: pause_source()?,
    })
}

/// Whether this machine can run the real node at all; if not, why (a test skips with it).
pub fn can_run_containers() -> Result<(), String> {
    if !cmd::is_root() {
        return Err("the real node needs root (containerd, runc, mounts, a bridge)".into());
    }
    let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems.lines().any(|line| line.ends_with("\toverlay")) {
        return Err(
            "the kernel has no overlay filesystem (containerd's overlayfs snapshotter needs it; \
             try `modprobe overlay`)"
                .into(),
        );
    }
    if !Path::new("/sys/fs/cgroup").is_dir() {
        return Err("no cgroup filesystem at /sys/fs/cgroup".into());
    }
    Ok(())
}

/// `build/pause/linux/pause.c` of the kubernetes module the tools were built from.
fn pause_source() -> Result<PathBuf, ClusterError> {
    let go_mod = crate::workspace_root().join("tools/kubernetes/go.mod");
    let text = fs::read_to_string(&go_mod).map_err(io(format!("reading {}", go_mod.display())))?;
    let version = text
        .lines()
        .map(str::trim)
        .find_map(|line| {
            // `require k8s.io/kubernetes vX` alone, or the line inside a `require (…)` block.
            let line = line.strip_prefix("require ").unwrap_or(line);
            let rest = line.strip_prefix("k8s.io/kubernetes ")?;
            rest.split_whitespace().next()
        })
        .ok_or_else(|| {
            ClusterError::CannotRunContainers(format!(
                "{} requires no k8s.io/kubernetes version",
                go_mod.display()
            ))
        })?;
    let mut go_env = Command::new("go");
    go_env.args(["env", "GOMODCACHE"]);
    let cache = cmd::output(&mut go_env, CALL_LIMIT).map_err(command_error("go env GOMODCACHE"))?;
    let source = PathBuf::from(cache.trim())
        .join(format!("k8s.io/kubernetes@{version}"))
        .join("build/pause/linux/pause.c");
    if !source.exists() {
        return Err(ClusterError::CannotRunContainers(format!(
            "{} is missing (run `cargo xtask tools`, which downloads the module)",
            source.display()
        )));
    }
    Ok(source)
}

fn node_dir(cluster: &Cluster) -> PathBuf {
    cluster.dir.join("node")
}

fn containerd_socket(cluster: &Cluster) -> PathBuf {
    node_dir(cluster).join("containerd/containerd.sock")
}

/// Starts containerd, builds and imports the images, then starts the kubelet and the scheduler.
pub(super) fn start(cluster: &mut Cluster, binaries: &Binaries) -> Result<(), ClusterError> {
    let dir = node_dir(cluster);
    for sub in [
        "containerd",
        "cni/net.d",
        "cni/ipam",
        "kubelet",
        "pod-logs",
        "images",
    ] {
        let path = dir.join(sub);
        fs::create_dir_all(&path).map_err(io(format!("creating {}", path.display())))?;
    }
    let config = dir.join("containerd/config.toml");
    fs::write(&config, containerd_config(cluster, binaries))
        .map_err(io("writing containerd's config"))?;
    let cni = dir.join("cni/net.d/10-devcluster.conflist");
    fs::write(&cni, cni_config(&dir)).map_err(io("writing the CNI config"))?;

    let mut command = Command::new(&binaries.containerd);
    command.arg(format!("--config={}", config.display()));
    spawn(cluster, Component::Containerd, &mut command)?;

    // The images are built while containerd starts.
    let pause = build_pause(cluster, binaries)?;
    let busybox = build_busybox(cluster)?;
    wait_for(
        cluster,
        "containerd did not answer",
        Component::Containerd,
        || {
            let mut ctr = ctr(cluster, binaries);
            ctr.arg("version");
            cmd::output(&mut ctr, Duration::from_secs(10))
                .map(drop)
                .map_err(|err| err.to_string())
        },
    )?;
    import_archives(&ctr(cluster, binaries), &[pause, busybox])?;

    let node_user = format!("system:node:{NODE_NAME}");
    let client = cluster.issue_cert("node", &node_user, &["system:nodes"], &Usage::Client)?;
    let serving = cluster.issue_cert(
        "node-serving",
        NODE_NAME,
        &[],
        &Usage::Server {
            dns_names: vec![NODE_NAME.to_string(), "localhost".to_string()],
            ips: vec![Ipv4Addr::LOCALHOST.into(), POD_GATEWAY.into()],
        },
    )?;
    let kubeconfig = dir.join("kubelet.kubeconfig");
    cluster.write_kubeconfig(&kubeconfig, &client)?;
    let kubelet_config = dir.join("kubelet-config.yaml");
    fs::write(
        &kubelet_config,
        kubelet_config_text(cluster, &serving.cert, &serving.key),
    )
    .map_err(io("writing the kubelet's config"))?;
    let mut command = Command::new(&binaries.kubelet);
    command
        .arg(format!("--config={}", kubelet_config.display()))
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--root-dir={}", dir.join("kubelet").display()))
        .arg(format!("--hostname-override={NODE_NAME}"))
        // The API server reaches the kubelet (logs, exec) at the InternalIP, which the kubelet
        // refuses to be a loopback address: the bridge's own address, on this machine.
        .arg(format!("--node-ip={POD_GATEWAY}"))
        .arg("--v=1");
    spawn(cluster, Component::NodeKubelet, &mut command)?;

    let scheduler_kubeconfig = dir.join("scheduler.kubeconfig");
    cluster.write_kubeconfig(&scheduler_kubeconfig, &cluster.pki_pair("scheduler"))?;
    let config = scheduler_kubeconfig.display();
    let mut command = Command::new(&binaries.scheduler);
    command
        .arg(format!("--kubeconfig={config}"))
        .arg(format!("--authentication-kubeconfig={config}"))
        .arg(format!("--authorization-kubeconfig={config}"))
        .arg("--leader-elect=false")
        // Nothing reads its health or metrics: no port to find or collide on.
        .arg("--secure-port=0");
    spawn(cluster, Component::Scheduler, &mut command)?;

    // The user the bootstrap binding `system:node-proxier` grants what kube-proxy reads.
    let proxy = cluster.issue_cert("kube-proxy", "system:kube-proxy", &[], &Usage::Client)?;
    let proxy_kubeconfig = dir.join("kube-proxy.kubeconfig");
    cluster.write_kubeconfig(&proxy_kubeconfig, &proxy)?;
    let ports = crate::lifecycle::free_ports(2)?;
    let mut command = Command::new(&binaries.proxy);
    command
        .arg(format!("--kubeconfig={}", proxy_kubeconfig.display()))
        .arg(format!("--hostname-override={NODE_NAME}"))
        .arg("--proxy-mode=iptables")
        .arg(format!("--cluster-cidr={POD_SUBNET}"))
        // Leave the machine's conntrack limits and route_localnet alone.
        .arg("--conntrack-max-per-core=0")
        .arg("--iptables-localhost-nodeports=false")
        // Its health and metrics servers would take fixed ports (it refuses port 0).
        .arg(format!("--healthz-bind-address=127.0.0.1:{}", ports[0]))
        .arg(format!("--metrics-bind-address=127.0.0.1:{}", ports[1]));
    spawn(cluster, Component::Proxy, &mut command)
}

/// Makes images built here ([`crate::images`]) available to the node's pods, as if pulled.
pub fn import(cluster: &Cluster, images: &[crate::images::Built]) -> Result<(), ClusterError> {
    let ctr = ctr_for(cluster, &crate::tools::path("ctr")?);
    let archives: Vec<PathBuf> = images.iter().map(|image| image.archive.clone()).collect();
    import_archives(&ctr, &archives)
}

fn import_archives(ctr: &Command, archives: &[PathBuf]) -> Result<(), ClusterError> {
    for archive in archives {
        let mut import = Command::new(ctr.get_program());
        import
            .args(ctr.get_args())
            .args(["images", "import"])
            .arg(archive);
        cmd::output(&mut import, IMAGE_LIMIT)
            .map_err(command_error(format!("importing {}", archive.display())))?;
    }
    Ok(())
}

fn ctr(cluster: &Cluster, binaries: &Binaries) -> Command {
    ctr_for(cluster, &binaries.ctr)
}

fn ctr_for(cluster: &Cluster, program: &Path) -> Command {
    let mut ctr = Command::new(program);
    ctr.arg(format!(
        "--address={}",
        containerd_socket(cluster).display()
    ))
    .args(["--namespace", "k8s.io"]);
    ctr
}

/// containerd 2.4's config (`version = 4`, the plugin names of `containerd config default`),
/// every path in our directory so it never meets the machine's own containerd.
fn containerd_config(cluster: &Cluster, binaries: &Binaries) -> String {
    let dir = node_dir(cluster).join("containerd");
    let socket = containerd_socket(cluster);
    let d = dir.display();
    let cni = node_dir(cluster).join("cni/net.d");
    format!(
        "# Written by devcluster (src/cluster/real_node/).
version = 4
root = '{d}/root'
state = '{d}/state'
imports = []

[plugins.'io.containerd.server.v1.grpc']
  address = '{socket}'
[plugins.'io.containerd.server.v1.ttrpc']
  address = '{socket}.ttrpc'
[plugins.'io.containerd.nri.v1.nri']
  disable = true
[plugins.'io.containerd.internal.v1.opt']
  path = '{d}/opt'
[plugins.'io.containerd.image-verifier.v1.bindir']
  bin_dir = '{d}/image-verifier'

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '{PAUSE_IMAGE}'

[plugins.'io.containerd.cri.v1.runtime']
  # This machine's root may lack CAP_SYS_RESOURCE: runc then fails to lower a container's
  # oom_score_adj below its own.
  restrict_oom_score_adj = true
  # The pods' network namespaces are bind-mounted here, not in /var/run/netns.
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      runtime_path = '{shim}'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '{runc}'
        Root = '{d}/runc'
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['/usr/lib/cni']
    conf_dir = '{cni}'

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
  stream_server_port = '0'
",
        socket = socket.display(),
        runc = binaries.runc.display(),
        shim = binaries.shim.display(),
        cni = cni.display(),
    )
}

/// A bridge with host-local addresses and masquerading: without a CNI network the runtime (so
/// the node) is never Ready.
fn cni_config(dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "plugins": [{
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": true,
            "ipMasq": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": POD_SUBNET, "gateway": POD_GATEWAY.to_string() }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
                "dataDir": dir.join("cni/ipam"),
            },
        }],
    })
    .to_string()
}

/// The kubelet's configuration. Authentication is by the cluster's CA (the API server's client
/// certificate when it proxies logs); authorization is `AlwaysAllow`, as the kubelet listens on
/// loopback only and every caller already holds a certificate of our CA.
fn kubelet_config_text(cluster: &Cluster, cert: &Path, key: &Path) -> String {
    let dir = node_dir(cluster);
    format!(
        "# Written by devcluster (src/cluster/real_node/).
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {gateway}
port: {port}
readOnlyPort: 0
healthzPort: 0
tlsCertFile: {cert}
tlsPrivateKeyFile: {key}
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
  x509:
    clientCAFile: {ca}
authorization:
  mode: AlwaysAllow
containerRuntimeEndpoint: unix://{socket}
podLogsDir: {logs}
# Test machines are cgroup v1 hosts, without swap accounting.
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
# Our images cannot be pulled again: never collect them, never evict for a fuller disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 1Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
",
        gateway = POD_GATEWAY,
        port = cluster.ports.kubelet,
        cert = cert.display(),
        key = key.display(),
        ca = cluster.ca().cert.display(),
        socket = containerd_socket(cluster).display(),
        logs = dir.join("pod-logs").display(),
    )
}

/// The node's images: the pause and busybox images in buildah storage of the cluster's own.
fn buildah(cluster: &Cluster) -> Buildah {
    Buildah::at(&node_dir(cluster).join("images/buildah"))
}

/// An image of `files` (host path, path in the image) with `entrypoint`, as an archive.
fn build_image(
    cluster: &Cluster,
    name: &str,
    files: &[(&Path, &str)],
    entrypoint: &str,
) -> Result<PathBuf, ClusterError> {
    let buildah = buildah(cluster);
    buildah.from_files(name, "scratch", files, &["--entrypoint", entrypoint])?;
    Ok(buildah.archive(name, &node_dir(cluster).join("images"))?)
}

/// The pause image: `pause.c` compiled statically, as upstream's Makefile does.
fn build_pause(cluster: &Cluster, binaries: &Binaries) -> Result<PathBuf, ClusterError> {
    let binary = node_dir(cluster).join("images/pause");
    let mut gcc = Command::new("gcc");
    gcc.args(["-Os", "-Wall", "-static", "-DVERSION=devcluster", "-o"])
        .arg(&binary)
        .arg(&binaries.pause_source);
    cmd::output(&mut gcc, IMAGE_LIMIT).map_err(command_error("compiling pause.c"))?;
    build_image(
        cluster,
        PAUSE_IMAGE,
        &[(&binary, "/pause")],
        r#"["/pause"]"#,
    )
}

/// Busybox as `/bin/busybox` and `/bin/sh` (a copy rather than a link: one `buildah copy` each),
/// so `sh -c` and `busybox <applet>` work.
fn build_busybox(cluster: &Cluster) -> Result<PathBuf, ClusterError> {
    let busybox = Path::new("/bin/busybox");
    build_image(
        cluster,
        BUSYBOX_IMAGE,
        &[(busybox, "/bin/busybox"), (busybox, "/bin/sh")],
        r#"["/bin/sh"]"#,
    )
}

/// Returns once the node reports itself Ready (runtime and network up).
pub(super) fn wait_until_ready(cluster: &Cluster) -> Result<(), ClusterError> {
    super::process_node::wait_for_node(cluster, NODE_NAME, Component::NodeKubelet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cni_network_is_a_bridge_with_masquerading() {
        let config: serde_json::Value =
            serde_json::from_str(&cni_config(Path::new("/tmp/x"))).unwrap();
        assert_eq!(config["plugins"][0]["bridge"], BRIDGE);
        assert_eq!(config["plugins"][0]["ipMasq"], true);
        assert!(BRIDGE.len() <= 15);
    }
}
