//! The real node (`cluster up --node real`): the upstream kubelet on containerd and runc runs a
//! pod of the locally built busybox image in a real container; `kubectl logs` and the
//! termination message come back through the real API server; `down` leaves nothing behind.
//!
//! Ignored unless asked for (`cargo test -p devcluster --test real_node -- --ignored`): it
//! replaces the shared cluster of the test run (which has the process-kubelet) with its own, so
//! it must not run beside the other cluster tests; ignored, a run counts it as skipped, never as
//! passed. Asked for where the machine cannot run containers, it prints why and returns.

use std::path::Path;
use std::time::{Duration, Instant};

use devcluster::cluster::{self, NodeKind, real_node};
use serde_json::{Value, json};

#[test]
#[ignore = "replaces the shared cluster: run alone, with -- --ignored"]
fn a_pod_runs_in_a_real_container_and_down_cleans_the_host() {
    if let Err(reason) = real_node::can_run_containers() {
        eprintln!("skipped: {reason}");
        return;
    }
    let started = Instant::now();
    let cluster = cluster::up_with(NodeKind::Real).expect("starting the real node");
    eprintln!("real node Ready in {:.1}s", started.elapsed().as_secs_f64());

    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "real-hello", "namespace": "default" },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "main",
                "image": real_node::BUSYBOX_IMAGE,
                "imagePullPolicy": "Never",
                "command": ["sh", "-c",
                    "echo hello from a container; echo the end > /dev/termination-log; exit 3"],
            }],
        },
    });
    cluster
        .apply(None, &pod.to_string())
        .expect("creating the pod");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let out = cluster
            .kubectl_output(&["get", "pod", "real-hello", "-o", "json"])
            .expect("reading the pod");
        let pod: Value = serde_json::from_str(&out).unwrap();
        let phase = pod["status"]["phase"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if phase == "Failed" || phase == "Succeeded" {
            break pod["status"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "the pod did not finish: {}",
            pod["status"]
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(status["phase"], "Failed");
    let terminated = &status["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 3);
    assert_eq!(terminated["message"], "the end\n");
    assert_eq!(
        status["containerStatuses"][0]["imageID"]
            .as_str()
            .map(|id| id.starts_with("sha256:")),
        Some(true)
    );
    let logs = cluster
        .kubectl_output(&["logs", "real-hello"])
        .expect("kubectl logs");
    assert_eq!(logs, "hello from a container\n");

    // A Service in front of a pod, reached by its cluster IP from another pod: the scheduler,
    // the pod network, the endpointslice controller and kube-proxy's rules together.
    let server = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "real-server", "namespace": "default", "labels": { "app": "real-server" } },
        "spec": {
            "containers": [{
                "name": "main",
                "image": real_node::BUSYBOX_IMAGE,
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", "while true; do echo served | busybox nc -l -p 8080; done"],
            }],
        },
    });
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": "real-server", "namespace": "default" },
        "spec": { "selector": { "app": "real-server" }, "ports": [{ "port": 80, "targetPort": 8080 }] },
    });
    cluster
        .apply(None, &server.to_string())
        .expect("creating the server");
    cluster
        .apply(None, &service.to_string())
        .expect("creating the Service");
    cluster
        .kubectl_output(&[
            "wait",
            "--for=condition=Ready",
            "pod/real-server",
            "--timeout=50s",
        ])
        .expect("the server pod is Ready");
    let ip = cluster
        .kubectl_output(&[
            "get",
            "service",
            "real-server",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
        .expect("the Service's IP");
    // kube-proxy writes its rules a moment after the endpoints appear: the client retries.
    let script = format!(
        "for i in 1 2 3 4 5 6 7 8 9 10; do busybox nc -w 2 {ip} 80 </dev/null && exit 0; busybox sleep 1; done; exit 1"
    );
    let client = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "real-client", "namespace": "default" },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "main",
                "image": real_node::BUSYBOX_IMAGE,
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", script],
            }],
        },
    });
    cluster
        .apply(None, &client.to_string())
        .expect("creating the client");
    cluster
        .kubectl_output(&[
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            "pod/real-client",
            "--timeout=50s",
        ])
        .expect("the client reaches the Service");
    let served = cluster
        .kubectl_output(&["logs", "real-client"])
        .expect("client logs");
    assert!(served.contains("served"), "{served}");

    // The host's loopback listeners (the test databases) at the bridge's address, and the API
    // server at the `kubernetes` Service the kubelet names in every pod's environment.
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in host.incoming().flatten() {
            let mut stream = stream;
            let _ = std::io::Write::write_all(&mut stream, b"from the host\n");
        }
    });
    let script = format!(
        "busybox nc -w 2 {gateway} {port} </dev/null || exit 1; \
         echo at $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT; \
         for i in 1 2 3 4 5 6 7 8 9 10; do \
           printf 'GET / HTTP/1.0\\r\\n\\r\\n' | \
             busybox nc -w 3 $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT | \
             busybox grep -q 'HTTPS server' && echo reached the API server && exit 0; \
           busybox sleep 1; done; exit 1",
        gateway = real_node::POD_GATEWAY
    );
    let client = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "real-host-client", "namespace": "default" },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "main",
                "image": real_node::BUSYBOX_IMAGE,
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", script],
            }],
        },
    });
    cluster
        .apply(None, &client.to_string())
        .expect("creating the host client");
    let waited = cluster.kubectl_output(&[
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/real-host-client",
        "--timeout=50s",
    ]);
    let logs = cluster
        .kubectl_output(&["logs", "real-host-client"])
        .unwrap_or_default();
    assert!(waited.is_ok(), "the host client failed: {waited:?}\n{logs}");
    assert!(logs.contains("from the host"), "{logs}");
    // Go's TLS server answers plain HTTP with a 400 that says so: it was the API server.
    assert!(logs.contains("reached the API server"), "{logs}");
    assert!(
        logs.contains(&format!("at {}:443", cluster::KUBERNETES_SERVICE_IP)),
        "{logs}"
    );

    let dir = cluster.dir.clone();
    cluster::down().expect("stopping the cluster");
    assert!(!dir.exists(), "{} is left", dir.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&*dir.to_string_lossy()), "mounts are left");
    assert!(
        !Path::new("/sys/class/net").join(real_node::BRIDGE).exists(),
        "the bridge is left"
    );
    assert!(
        !Path::new("/sys/fs/cgroup/memory/kubepods").exists(),
        "pod cgroups are left"
    );
    let mut save = std::process::Command::new("iptables-save");
    let rules = devcluster::cmd::output(&mut save, Duration::from_secs(30)).unwrap();
    assert!(
        !rules.contains("KUBE-")
            && !rules.contains("atlas-devcluster")
            && !rules.contains("ATLAS-DEVCLUSTER"),
        "iptables rules are left:\n{rules}"
    );
}
