//! Container logs: one file per container run (stdout and stderr together, in order), the
//! termination message read back as a kubelet reads it, and the kubelet's
//! `GET /containerLogs/{namespace}/{pod}/{container}` endpoint over TLS, which the API server
//! calls for `kubectl logs` (as its kubelet client, a certificate of the cluster's CA).
//!
//! Query parameters honoured: `follow`, `tailLines`, `limitBytes`, `previous`. Not honoured:
//! `timestamps`, `sinceSeconds`, `sinceTime` (our log files have no per-line times).

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A kubelet keeps at most this many bytes of a termination message: the end of the file.
pub const TERMINATION_MESSAGE_LIMIT: u64 = 4096;
/// `FallbackToLogsOnError` takes at most this many lines of the log's end …
const FALLBACK_LINES: usize = 80;
/// … and at most this many bytes of them.
const FALLBACK_BYTES: usize = 2048;
/// How often a followed log is checked for more output.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("reading the kubelet's TLS files: {0}")]
    Pem(String),
    #[error("setting up TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The runs of one container, oldest first, and whether the newest still runs.
#[derive(Clone, Debug, Default)]
struct Runs {
    files: Vec<PathBuf>,
    running: bool,
}

type Key = (String, String, String);

/// Which log files belong to which container, shared by the pod workers and the server.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<HashMap<Key, Runs>>>,
}

impl Registry {
    fn key(namespace: &str, pod: &str, container: &str) -> Key {
        (namespace.into(), pod.into(), container.into())
    }

    /// A new run of a container writes to `file`.
    pub fn started(&self, namespace: &str, pod: &str, container: &str, file: PathBuf) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let runs = map
            .entry(Registry::key(namespace, pod, container))
            .or_default();
        runs.files.push(file);
        runs.running = true;
    }

    /// The newest run of a container ended.
    pub fn ended(&self, namespace: &str, pod: &str, container: &str) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(runs) = map.get_mut(&Registry::key(namespace, pod, container)) {
            runs.running = false;
        }
    }

    /// The pod is gone: its logs go with it.
    pub fn forget_pod(&self, namespace: &str, pod: &str) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|(ns, name, _), _| !(ns == namespace && name == pod));
    }

    fn runs(&self, key: &Key) -> Option<Runs> {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).cloned()
    }
}

/// The last `limit` bytes of a file (all of it when shorter), cut forward to a character
/// boundary so the message is valid UTF-8.
pub fn read_tail(path: &Path, limit: u64) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(limit);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    let _ = file.take(limit).read_to_end(&mut bytes);
    let mut skip = 0;
    while skip < bytes.len().min(4) && std::str::from_utf8(&bytes[skip..]).is_err() {
        skip += 1;
    }
    String::from_utf8_lossy(&bytes[skip..]).into_owned()
}

/// The last `lines` lines of `text`.
fn tail_lines(text: &str, lines: usize) -> &str {
    if lines == 0 {
        return "";
    }
    let trimmed = text.strip_suffix('\n').unwrap_or(text);
    let mut count = 0;
    for (at, _) in trimmed.rmatch_indices('\n') {
        count += 1;
        if count == lines {
            return &text[at + 1..];
        }
    }
    text
}

/// A container's termination message as a kubelet reports it: the end of its file, or, with
/// `FallbackToLogsOnError`, when that is empty and the container failed, the end of its log.
pub fn termination_message(
    message_file: &Path,
    log_file: &Path,
    fallback_to_logs: bool,
    failed: bool,
) -> String {
    let message = read_tail(message_file, TERMINATION_MESSAGE_LIMIT);
    if !(message.is_empty() && fallback_to_logs && failed) {
        return message;
    }
    let log = read_tail(log_file, (FALLBACK_BYTES * 4) as u64);
    let tail = tail_lines(&log, FALLBACK_LINES);
    let cut = tail.len().saturating_sub(FALLBACK_BYTES);
    let mut start = cut;
    while !tail.is_char_boundary(start) {
        start += 1;
    }
    tail[start..].to_string()
}

/// The query of a `containerLogs` request.
#[derive(Debug, Default, PartialEq, Eq)]
struct Query {
    follow: bool,
    previous: bool,
    tail_lines: Option<usize>,
    limit_bytes: Option<usize>,
}

fn parse_query(query: Option<&str>) -> Query {
    let mut parsed = Query::default();
    for pair in query.unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let truthy = value.is_empty() || value == "true" || value == "1";
        match key {
            "follow" => parsed.follow = truthy,
            "previous" => parsed.previous = truthy,
            "tailLines" => parsed.tail_lines = value.parse().ok(),
            "limitBytes" => parsed.limit_bytes = value.parse().ok(),
            _ => {}
        }
    }
    parsed
}

type Body = BoxBody<Bytes, std::io::Error>;

fn text_response(status: StatusCode, text: String) -> Response<Body> {
    let body = Full::new(Bytes::from(text))
        .map_err(|never: Infallible| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}

async fn handle(registry: Registry, request: Request<hyper::body::Incoming>) -> Response<Body> {
    let path = request.uri().path().to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["containerLogs", namespace, pod, container] = parts[..] else {
        return text_response(
            StatusCode::NOT_FOUND,
            format!("devcluster-kubelet serves only /containerLogs/…, not {path}\n"),
        );
    };
    let query = parse_query(request.uri().query());
    let key = Registry::key(namespace, pod, container);
    let Some(runs) = registry.runs(&key) else {
        return text_response(
            StatusCode::BAD_REQUEST,
            format!(
                "container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating\n"
            ),
        );
    };
    let file = if query.previous {
        if runs.files.len() < 2 {
            return text_response(
                StatusCode::BAD_REQUEST,
                format!(
                    "previous terminated container \"{container}\" in pod \"{pod}\" not found\n"
                ),
            );
        }
        runs.files[runs.files.len() - 2].clone()
    } else {
        runs.files.last().cloned().unwrap_or_default()
    };
    let content = std::fs::read(&file).unwrap_or_default();
    let mut start = 0;
    if let Some(lines) = query.tail_lines {
        let text = String::from_utf8_lossy(&content);
        let tail = tail_lines(&text, lines);
        start = content.len() - tail.len().min(content.len());
    }
    let mut first = content[start..].to_vec();
    if let Some(limit) = query.limit_bytes {
        first.truncate(limit);
    }
    let follow = query.follow && !query.previous && query.limit_bytes.is_none();
    if !follow {
        return text_response(StatusCode::OK, String::from_utf8_lossy(&first).into_owned());
    }
    // Following: what is there now, then whatever the container writes until its run ends.
    let offset = content.len() as u64;
    let state = (Some(Bytes::from(first)), offset, file, registry, key);
    let stream =
        futures::stream::unfold(state, |(first, offset, file, registry, key)| async move {
            if let Some(first) = first {
                return Some((Ok(Frame::data(first)), (None, offset, file, registry, key)));
            }
            let mut offset = offset;
            loop {
                let running = registry
                    .runs(&key)
                    .is_some_and(|runs| runs.running && runs.files.last() == Some(&file));
                let chunk = read_from(&file, offset);
                if !chunk.is_empty() {
                    offset += chunk.len() as u64;
                    return Some((
                        Ok(Frame::data(Bytes::from(chunk))),
                        (None, offset, file, registry, key),
                    ));
                }
                if !running {
                    return None;
                }
                tokio::time::sleep(FOLLOW_POLL).await;
            }
        });
    let body = BodyExt::boxed(StreamBody::new(stream));
    Response::new(body)
}

fn read_from(path: &Path, offset: u64) -> Vec<u8> {
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    if file.seek(SeekFrom::Start(offset)).is_err() {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    let _ = file.take(1 << 20).read_to_end(&mut bytes);
    bytes
}

/// The TLS settings of the endpoint: our serving certificate, and client certificates of the
/// cluster's CA required (the API server's kubelet client has one).
pub fn tls_config(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
) -> Result<Arc<rustls::ServerConfig>, LogsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pem = |path: &Path, err: String| LogsError::Pem(format!("{}: {err}", path.display()));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem(cert, e.to_string()))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem(key, e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(client_ca).map_err(|e| pem(client_ca, e.to_string()))? {
        roots.add(ca.map_err(|e| pem(client_ca, e.to_string()))?)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| LogsError::Pem(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key_der)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves the endpoint on `addr` until the task is dropped.
pub async fn serve(
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    registry: Registry,
) -> Result<(), LogsError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| LogsError::Listen { addr, source })?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(%err, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let registry = registry.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(err)) => {
                        tracing::warn!(%peer, %err, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let service = hyper::service::service_fn(move |request| {
                let registry = registry.clone();
                async move { Ok::<_, Infallible>(handle(registry, request).await) }
            });
            if let Err(err) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, %err, "log connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, content: &[u8]) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("devcluster-logs-{}-{name}", std::process::id()));
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn termination_messages_keep_their_last_4096_bytes() {
        let long: String = (0..5000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let file = temp("long", long.as_bytes());
        let message = read_tail(&file, TERMINATION_MESSAGE_LIMIT);
        assert_eq!(message.len(), 4096);
        assert_eq!(message, long[long.len() - 4096..]);
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    fn a_cut_through_a_character_moves_forward() {
        let text = format!("{}{}", "é".repeat(3000), "x");
        let file = temp("utf8", text.as_bytes());
        let message = read_tail(&file, TERMINATION_MESSAGE_LIMIT);
        assert!(
            message.len() <= 4096 && message.ends_with('x'),
            "{}",
            message.len()
        );
        assert!(message.chars().all(|c| c == 'é' || c == 'x'));
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    fn fallback_to_logs_only_when_failed_and_empty() {
        let empty = temp("empty", b"");
        let log = temp("log", b"line 1\nline 2\nboom\n");
        assert_eq!(
            termination_message(&empty, &log, true, true),
            "line 1\nline 2\nboom\n"
        );
        assert_eq!(termination_message(&empty, &log, true, false), "");
        assert_eq!(termination_message(&empty, &log, false, true), "");
        let message = temp("msg", b"{\"ok\":false}");
        assert_eq!(
            termination_message(&message, &log, true, true),
            "{\"ok\":false}"
        );
        let many: String = (0..200).map(|i| format!("line {i}\n")).collect();
        let log = temp("many", many.as_bytes());
        let fallback = termination_message(&empty, &log, true, true);
        assert!(fallback.starts_with("line 120\n"), "{fallback}");
        assert!(fallback.ends_with("line 199\n"));
        for path in [empty, log, message] {
            std::fs::remove_file(path).unwrap();
        }
    }

    #[test]
    fn tails_and_queries() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail_lines("a\nb\nc", 2), "b\nc");
        assert_eq!(tail_lines("a\nb\n", 5), "a\nb\n");
        assert_eq!(tail_lines("a\nb\n", 0), "");
        assert_eq!(
            parse_query(Some("follow=true&tailLines=10&previous=false")),
            Query {
                follow: true,
                previous: false,
                tail_lines: Some(10),
                limit_bytes: None
            }
        );
        assert_eq!(parse_query(None), Query::default());
    }
}
