//! Startup, liveness and readiness probes, as a kubelet runs them: `httpGet` (plain HTTP, a
//! status from 200 to 399 passes) and `tcpSocket` (the port accepts a connection), against the
//! pod's address (the node's loopback) unless the probe names a host.
//!
//! One task per run of a container ([`run`]) follows a kubelet's prober workers: the startup
//! probe first, until it passes (the container is then `started`) or fails `failureThreshold`
//! times in a row; then liveness and readiness side by side, each every `periodSeconds` from
//! `initialDelaySeconds` after the container's start. Readiness turns after `successThreshold`
//! passes or `failureThreshold` failures in a row; a liveness or startup probe failing
//! `failureThreshold` times asks for the container to be killed. The task reports only those
//! turns; the pod worker owns the container's state.
//!
//! `exec` and `grpc` probes and `scheme: HTTPS` are not run here: a container asking for one is
//! refused at start ([`specs`]) rather than left never ready with no word why.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Request;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A kubelet's defaults (`k8s.io/api/core/v1` documents them).
const DEFAULT_PERIOD: i32 = 10;
const DEFAULT_TIMEOUT: i32 = 1;
const DEFAULT_FAILURE_THRESHOLD: i32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

/// What one probe checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Http {
        host: String,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    Tcp {
        host: String,
        port: u16,
    },
}

/// One of a container's probes, with a kubelet's defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub kind: Kind,
    pub action: Action,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
    /// The probe's own `terminationGracePeriodSeconds`, for a kill it asks for.
    pub termination_grace: Option<i64>,
}

/// What the probes of one run of a container found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The startup probe passed.
    Started,
    /// Readiness turned; when to unready, with the last failure.
    Ready(bool, Option<String>),
    /// A liveness or startup probe failed `failureThreshold` times: the container is to be
    /// killed (and restarted as its pod's restart policy says).
    Failed {
        kind: Kind,
        message: String,
        termination_grace: Option<i64>,
    },
}

/// The container's probes, or why they cannot run here (the kubelet's wording where it has one).
pub fn specs(container: &Container, pod_ip: &str) -> Result<Vec<Spec>, String> {
    let mut specs = Vec::new();
    for (kind, probe) in [
        (Kind::Startup, &container.startup_probe),
        (Kind::Liveness, &container.liveness_probe),
        (Kind::Readiness, &container.readiness_probe),
    ] {
        if let Some(probe) = probe {
            specs.push(spec(kind, probe, container, pod_ip)?);
        }
    }
    Ok(specs)
}

fn seconds(value: Option<i32>, default: i32, minimum: i32) -> Duration {
    Duration::from_secs(value.unwrap_or(default).max(minimum) as u64)
}

fn spec(kind: Kind, probe: &Probe, container: &Container, pod_ip: &str) -> Result<Spec, String> {
    let unsupported = |what: &str| {
        Err(format!(
            "{} probe of container {:?}: {what} probes are not supported by devcluster-kubelet \
             (httpGet over HTTP and tcpSocket are)",
            kind.as_str().to_lowercase(),
            container.name
        ))
    };
    let action = if let Some(get) = &probe.http_get {
        if get
            .scheme
            .as_deref()
            .is_some_and(|scheme| !scheme.eq_ignore_ascii_case("HTTP"))
        {
            return unsupported("HTTPS");
        }
        let path = match get.path.as_deref() {
            None | Some("") => "/".to_string(),
            Some(path) if path.starts_with('/') => path.to_string(),
            Some(path) => format!("/{path}"),
        };
        Action::Http {
            host: host(get.host.as_deref(), pod_ip),
            port: port(&get.port, container)?,
            path,
            headers: get
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
        }
    } else if let Some(tcp) = &probe.tcp_socket {
        Action::Tcp {
            host: host(tcp.host.as_deref(), pod_ip),
            port: port(&tcp.port, container)?,
        }
    } else if probe.exec.is_some() {
        return unsupported("exec");
    } else if probe.grpc.is_some() {
        return unsupported("gRPC");
    } else {
        return Err(format!(
            "{} probe of container {:?} has no handler",
            kind.as_str().to_lowercase(),
            container.name
        ));
    };
    Ok(Spec {
        kind,
        action,
        initial_delay: seconds(probe.initial_delay_seconds, 0, 0),
        period: seconds(probe.period_seconds, DEFAULT_PERIOD, 1),
        timeout: seconds(probe.timeout_seconds, DEFAULT_TIMEOUT, 1),
        // The API server holds liveness and startup probes to 1.
        success_threshold: probe.success_threshold.unwrap_or(1).max(1) as u32,
        failure_threshold: probe
            .failure_threshold
            .unwrap_or(DEFAULT_FAILURE_THRESHOLD)
            .max(1) as u32,
        termination_grace: probe.termination_grace_period_seconds,
    })
}

fn host(host: Option<&str>, pod_ip: &str) -> String {
    match host {
        Some(host) if !host.is_empty() => host.to_string(),
        _ => pod_ip.to_string(),
    }
}

/// A probe's port: a number, or the name of one of the container's ports.
fn port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(number) => *number,
        IntOrString::String(name) => match name.parse::<i32>() {
            Ok(number) => number,
            Err(_) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| {
                    format!(
                        "container {:?} has no port named {name:?} for its probe",
                        container.name
                    )
                })?,
        },
    };
    u16::try_from(number)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("invalid probe port {number}"))
}

/// Probes one run of a container from `started` on, reporting each turn to `report`. Ends
/// after asking for a kill; otherwise runs until the task is aborted (the container exited).
pub async fn run(specs: Vec<Spec>, started: Instant, user_agent: String, report: impl Fn(Event)) {
    let find = |kind| specs.iter().find(|spec| spec.kind == kind);
    if let Some(startup) = find(Kind::Startup) {
        let mut failures = 0;
        let mut at = started + startup.initial_delay;
        loop {
            tokio::time::sleep_until(at).await;
            match check(&startup.action, startup.timeout, &user_agent).await {
                Ok(()) => break,
                Err(message) => {
                    failures += 1;
                    if failures >= startup.failure_threshold {
                        report(Event::Failed {
                            kind: Kind::Startup,
                            message,
                            termination_grace: startup.termination_grace,
                        });
                        return;
                    }
                }
            }
            at = next(at, startup.period);
        }
        report(Event::Started);
    }
    let liveness = async {
        let Some(spec) = find(Kind::Liveness) else {
            return std::future::pending::<(String, Option<i64>)>().await;
        };
        let mut failures = 0;
        let mut at = (started + spec.initial_delay).max(Instant::now());
        loop {
            tokio::time::sleep_until(at).await;
            match check(&spec.action, spec.timeout, &user_agent).await {
                Ok(()) => failures = 0,
                Err(message) => {
                    failures += 1;
                    if failures >= spec.failure_threshold {
                        return (message, spec.termination_grace);
                    }
                }
            }
            at = next(at, spec.period);
        }
    };
    let readiness = async {
        let Some(spec) = find(Kind::Readiness) else {
            return std::future::pending::<()>().await;
        };
        let mut ready = false;
        let mut streak = 0;
        let mut at = (started + spec.initial_delay).max(Instant::now());
        loop {
            tokio::time::sleep_until(at).await;
            let result = check(&spec.action, spec.timeout, &user_agent).await;
            let passed = result.is_ok();
            // A streak of results differing from the current state; it turns at the threshold.
            streak = if passed != ready { streak + 1 } else { 0 };
            let threshold = if passed {
                spec.success_threshold
            } else {
                spec.failure_threshold
            };
            if passed != ready && streak >= threshold {
                ready = passed;
                streak = 0;
                report(Event::Ready(ready, result.err()));
            }
            at = next(at, spec.period);
        }
    };
    tokio::select! {
        (message, termination_grace) = liveness => report(Event::Failed {
            kind: Kind::Liveness,
            message,
            termination_grace,
        }),
        () = readiness => {}
    }
}

/// When a probe that was due `at` runs next: a period later, or now if that has passed (a slow
/// probe, or liveness and readiness starting after a long startup), never in a burst.
fn next(at: Instant, period: Duration) -> Instant {
    (at + period).max(Instant::now())
}

/// One probe; the error is the failure as a kubelet words it.
pub async fn check(action: &Action, timeout: Duration, user_agent: &str) -> Result<(), String> {
    match action {
        Action::Tcp { host, port } => {
            let address = format!("{host}:{port}");
            match tokio::time::timeout(timeout, TcpStream::connect(&address)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(err)) => Err(format!("dial tcp {address}: {err}")),
                Err(_) => Err(format!("dial tcp {address}: i/o timeout")),
            }
        }
        Action::Http {
            host,
            port,
            path,
            headers,
        } => {
            let url = format!("http://{host}:{port}{path}");
            match tokio::time::timeout(timeout, get(host, *port, path, headers, user_agent)).await {
                Ok(Ok(status)) if (200..400).contains(&status) => Ok(()),
                Ok(Ok(status)) => Err(format!("HTTP probe failed with statuscode: {status}")),
                Ok(Err(err)) => Err(format!("Get {url:?}: {err}")),
                Err(_) => Err(format!(
                    "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
                )),
            }
        }
    }
}

/// A GET with a kubelet's headers (the probe's own override them); the response's status.
async fn get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    user_agent: &str,
) -> Result<u16, String> {
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|err| format!("dial tcp {host}:{port}: {err}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| err.to_string())?;
    let connection = tokio::spawn(connection);
    let mut request = Request::get(path);
    let defaults = [
        ("Host", format!("{host}:{port}")),
        ("User-Agent", user_agent.to_string()),
        ("Accept", "*/*".to_string()),
        ("Connection", "close".to_string()),
    ];
    for (name, value) in defaults {
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            request = request.header(name, value);
        }
    }
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|err| err.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| err.to_string());
    connection.abort();
    Ok(response?.status().as_u16())
}

/// `kube-probe/<major>.<minor>`, from the API server's version (`v1.37.2`), as a kubelet of
/// that version sends it.
pub fn user_agent(version: &str) -> String {
    let version = version.trim_start_matches('v');
    let mut parts = version.split('.');
    match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) => format!("kube-probe/{major}.{minor}"),
        _ => "kube-probe".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::{Read, Write};

    fn container(value: serde_json::Value) -> Container {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn specs_fill_in_a_kubelets_defaults_and_resolve_named_ports() {
        let c = container(json!({
            "name": "app",
            "ports": [{"name": "metrics", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "readyz", "port": "metrics"}},
            "livenessProbe": {"tcpSocket": {"port": 9000, "host": "10.0.0.1"}, "periodSeconds": 0,
                              "failureThreshold": 5, "terminationGracePeriodSeconds": 2},
        }));
        let specs = specs(&c, "127.0.0.1").unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].kind, Kind::Liveness);
        assert_eq!(
            specs[0].action,
            Action::Tcp {
                host: "10.0.0.1".into(),
                port: 9000
            }
        );
        assert_eq!(specs[0].period, Duration::from_secs(1));
        assert_eq!(specs[0].failure_threshold, 5);
        assert_eq!(specs[0].termination_grace, Some(2));
        assert_eq!(specs[1].kind, Kind::Readiness);
        assert_eq!(
            specs[1].action,
            Action::Http {
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/readyz".into(),
                headers: vec![]
            }
        );
        assert_eq!(specs[1].period, Duration::from_secs(10));
        assert_eq!(specs[1].timeout, Duration::from_secs(1));
        assert_eq!(specs[1].success_threshold, 1);
        assert_eq!(specs[1].failure_threshold, 3);
        assert_eq!(specs[1].initial_delay, Duration::ZERO);
    }

    #[test]
    fn unsupported_probes_are_refused_with_a_reason() {
        for probe in [
            json!({"exec": {"command": ["true"]}}),
            json!({"grpc": {"port": 9000}}),
            json!({"httpGet": {"port": 8443, "scheme": "HTTPS"}}),
            json!({"httpGet": {"port": "nope"}}),
        ] {
            let c = container(json!({"name": "app", "startupProbe": probe}));
            let err = specs(&c, "127.0.0.1").unwrap_err();
            assert!(err.contains("app"), "{err}");
        }
    }

    #[test]
    fn user_agents() {
        assert_eq!(user_agent("v1.37.2"), "kube-probe/1.37");
        assert_eq!(user_agent("weird"), "kube-probe");
    }

    /// Answers each connection with `status` (a thread of its own: the prober must not share
    /// the test's runtime with it), handing the request's head to the test.
    fn server(status: u16) -> (u16, std::sync::mpsc::Receiver<String>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut buffer = vec![0; 4096];
                let n = stream.read(&mut buffer).unwrap_or(0);
                let _ = tx.send(String::from_utf8_lossy(&buffer[..n]).into_owned());
                let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        (port, rx)
    }

    fn http(port: u16, headers: Vec<(String, String)>) -> Action {
        Action::Http {
            host: "127.0.0.1".into(),
            port,
            path: "/readyz".into(),
            headers,
        }
    }

    #[tokio::test]
    async fn http_probes_pass_below_400_and_send_a_kubelets_headers() {
        let second = Duration::from_secs(1);
        let (port, requests) = server(204);
        check(&http(port, vec![]), second, "kube-probe/1.37")
            .await
            .unwrap();
        let head = requests.recv().unwrap();
        assert!(head.starts_with("GET /readyz HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("user-agent: kube-probe/1.37"), "{head}");
        assert!(head.contains(&format!("host: 127.0.0.1:{port}")), "{head}");
        let custom = vec![("Host".to_string(), "example".to_string())];
        check(&http(port, custom), second, "kube-probe/1.37")
            .await
            .unwrap();
        let head = requests.recv().unwrap();
        assert!(head.contains("host: example\r\n"), "{head}");

        let (port, _requests) = server(503);
        let err = check(&http(port, vec![]), second, "kube-probe/1.37")
            .await
            .unwrap_err();
        assert_eq!(err, "HTTP probe failed with statuscode: 503");

        // Nothing listens on a port just released.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = check(&http(closed, vec![]), second, "kube-probe/1.37")
            .await
            .unwrap_err();
        assert!(
            err.contains("connection refused") || err.contains("Connection refused"),
            "{err}"
        );
        let err = check(
            &Action::Tcp {
                host: "127.0.0.1".into(),
                port: closed,
            },
            second,
            "",
        )
        .await
        .unwrap_err();
        assert!(
            err.starts_with(&format!("dial tcp 127.0.0.1:{closed}")),
            "{err}"
        );
    }
}
