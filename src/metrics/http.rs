//! The local HTTP face of a peer: `GET /metrics` (Prometheus text), `GET /status` (JSON of the
//! [`StatusSnapshot`]), and `GET /healthz` and `/readyz` for probes ([`super::health`]), served
//! with hyper from the snapshot the node publishes on a `watch` channel; and the small client
//! `rumor status`, `rumor top` and `rumor health` use.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::debug;

use super::health::{liveness, readiness, Heartbeat};
use super::{render_prometheus, StatusSnapshot};

/// Why serving or fetching failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The peer's address could not be resolved or reached.
    #[error("cannot reach {addr}")]
    Connect {
        /// The address given.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("HTTP error talking to {addr}")]
    Http {
        /// The address given.
        addr: String,
        /// The hyper error.
        source: hyper::Error,
    },
    /// The peer answered with an error status.
    #[error("{addr} answered {status}: {}", body.trim_end())]
    Status {
        /// The address given.
        addr: String,
        /// The HTTP status.
        status: StatusCode,
        /// The start of the answer's body (at most 512 bytes), which says why.
        body: String,
    },
    /// The answer was not a status snapshot.
    #[error("{addr} sent a /status that is not valid")]
    Decode {
        /// The address given.
        addr: String,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// No answer within the timeout.
    #[error("{addr} did not answer within {timeout:?}")]
    Timeout {
        /// The address given.
        addr: String,
        /// How long we waited.
        timeout: Duration,
    },
}

/// A running metrics server; stops when dropped.
pub struct MetricsServer {
    addr: SocketAddr,
    heartbeat: Arc<Heartbeat>,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// Binds `addr` (port 0: any free port) and serves the latest snapshot of `snapshots`.
    ///
    /// # Errors
    /// [`HttpError::Bind`] when the address cannot be bound.
    pub async fn start(
        addr: SocketAddr,
        snapshots: watch::Receiver<Arc<StatusSnapshot>>,
    ) -> Result<Self, HttpError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| HttpError::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| HttpError::Bind { addr, source })?;
        let heartbeat = Arc::new(Heartbeat::new());
        let task = tokio::spawn(accept_loop(listener, snapshots, heartbeat.clone()));
        Ok(Self {
            addr: bound,
            heartbeat,
            task,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The peer's run is over (it lingers): `/healthz` answers `finished` from now on, while
    /// `/status` and `/metrics` keep the last snapshot.
    pub fn finish(&self) {
        self.heartbeat.finish();
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    snapshots: watch::Receiver<Arc<StatusSnapshot>>,
    heartbeat: Arc<Heartbeat>,
) {
    // Every new snapshot is a beat of the peer's event loop; the task ends with the peer.
    let beats = {
        let (mut snapshots, heartbeat) = (snapshots.clone(), heartbeat.clone());
        tokio::spawn(async move {
            while snapshots.changed().await.is_ok() {
                heartbeat.beat(std::time::Instant::now());
            }
        })
    };
    let _stop_beats = AbortOnDrop(beats);
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                debug!("metrics accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (snapshots, heartbeat) = (snapshots.clone(), heartbeat.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let snapshot = snapshots.borrow().clone();
                let health = liveness(&heartbeat, std::time::Instant::now());
                async move { Ok::<_, Infallible>(route(&req, &snapshot, health)) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%from, "metrics connection ended: {e}");
            }
        });
    }
}

/// Aborts a task when dropped (the accept loop's own tasks end with it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        res.headers_mut().insert(CONTENT_TYPE, v);
    }
    res
}

/// Answers one request; `health` is the answer `/healthz` gets now.
fn route(
    req: &Request<Incoming>,
    snapshot: &StatusSnapshot,
    health: (StatusCode, String),
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            render_prometheus(snapshot),
        ),
        "/status" => match serde_json::to_string_pretty(snapshot) {
            Ok(json) => respond(StatusCode::OK, "application/json", json + "\n"),
            Err(e) => respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("{e}\n"),
            ),
        },
        "/healthz" => respond(health.0, "text/plain", health.1),
        "/readyz" => {
            let (code, body) = readiness(snapshot);
            respond(code, "text/plain", body)
        }
        "/" => respond(
            StatusCode::OK,
            "text/plain",
            "rumor peer: GET /metrics (Prometheus), GET /status (JSON), GET /healthz (liveness), \
             GET /readyz (readiness)\n"
                .into(),
        ),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// `host:port`, with an optional `http://` prefix and trailing `/`.
fn authority(addr: &str) -> &str {
    let a = addr.trim();
    let a = a.strip_prefix("http://").unwrap_or(a);
    a.trim_end_matches('/')
}

/// Fetches `path` from a peer's metrics address (`host:port` or `http://host:port`) and returns
/// the body, within `timeout`.
///
/// # Errors
/// [`HttpError`] when the peer cannot be reached, answers an error status, or is too slow.
pub async fn get(addr: &str, path: &str, timeout: Duration) -> Result<String, HttpError> {
    let host = authority(addr).to_string();
    match tokio::time::timeout(timeout, get_inner(&host, path)).await {
        Ok(r) => r,
        Err(_) => Err(HttpError::Timeout {
            addr: host,
            timeout,
        }),
    }
}

async fn get_inner(host: &str, path: &str) -> Result<String, HttpError> {
    let connect = |source| HttpError::Connect {
        addr: host.to_string(),
        source,
    };
    let http = |source| HttpError::Http {
        addr: host.to_string(),
        source,
    };
    let stream = TcpStream::connect(host).await.map_err(connect)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!("status connection ended: {e}");
        }
    });
    let req = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(HOST, host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| connect(std::io::Error::other(e)))?;
    let res = sender.send_request(req).await.map_err(http)?;
    let status = res.status();
    let body = res.into_body().collect().await.map_err(http)?.to_bytes();
    driver.abort();
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
        return Err(HttpError::Status {
            addr: host.to_string(),
            status,
            body: text,
        });
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Fetches and decodes a peer's `/status`.
///
/// # Errors
/// As [`get`], plus [`HttpError::Decode`] when the body is not a status snapshot.
pub async fn fetch_status(addr: &str, timeout: Duration) -> Result<StatusSnapshot, HttpError> {
    let body = get(addr, "/status", timeout).await?;
    serde_json::from_str(&body).map_err(|source| HttpError::Decode {
        addr: authority(addr).to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_metrics_and_status_and_404() {
        let mut snap = StatusSnapshot::default();
        snap.peer.name = "peer-x".into();
        snap.peer.version = 3;
        let (_tx, rx) = watch::channel(Arc::new(snap));
        let server = MetricsServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), rx)
            .await
            .unwrap();
        let addr = server.local_addr().to_string();
        let t = Duration::from_secs(10);
        let metrics = get(&addr, "/metrics", t).await.unwrap();
        assert!(
            metrics.contains("rumor_version{peer=\"peer-x\"} 3"),
            "{metrics}"
        );
        let status = fetch_status(&format!("http://{addr}/"), t).await.unwrap();
        assert_eq!(status.peer.name, "peer-x");
        assert!(matches!(
            get(&addr, "/nope", t).await,
            Err(HttpError::Status {
                status: StatusCode::NOT_FOUND,
                ..
            })
        ));
    }
}
