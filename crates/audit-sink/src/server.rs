//! The HTTP receiver: POSTs on `/k8s_audit` (classic Falco) and `/k8s-audit` (k8saudit plugin).
//!
//! Memory stays bounded under bursts: each body is capped at `max_body_bytes`, bodies being read
//! or decoded share a budget of `max_in_flight_bytes` (a request waits for its share, its bytes
//! still in the kernel's socket buffer), and a request is answered only once its events are in
//! the sink, so a slow consumer slows the senders down instead of queueing without limit.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::event::{Event, decode};
use crate::filter::Filter;
use crate::sink::EventSink;

/// The two paths Falco has listened on: the webserver before 0.32 and the k8saudit plugin after.
pub const PATHS: [&str; 2] = ["/k8s_audit", "/k8s-audit"];

#[derive(Debug, Clone)]
pub struct Config {
    pub filter: Filter,
    /// Larger bodies get 413. The API server's default batch (400 events) is well below 16 MiB.
    pub max_body_bytes: usize,
    /// Body bytes held at once across all requests (decoded events take about as much again).
    pub max_in_flight_bytes: usize,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// A client that sends its headers or body slower than this is dropped.
    pub read_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            filter: Filter::default(),
            max_body_bytes: 16 << 20,
            max_in_flight_bytes: 32 << 20,
            max_connections: 64,
            read_timeout: Duration::from_secs(30),
        }
    }
}

/// Counters for assertions and benchmarks.
#[derive(Debug, Default)]
struct Stats {
    requests: AtomicU64,
    rejected: AtomicU64,
    events: AtomicU64,
    matched: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// Every HTTP request, whatever its outcome.
    pub requests: u64,
    /// Requests answered with a 4xx or 5xx.
    pub rejected: u64,
    /// Events decoded from accepted bodies.
    pub events: u64,
    /// Events that passed the filter and were handed to the sink.
    pub matched: u64,
}

impl Stats {
    fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            matched: self.matched.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A receiver running on the current tokio runtime; dropping it stops it.
pub struct Server {
    addr: SocketAddr,
    stats: Arc<Stats>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Binds `addr` (port 0 picks a free one) and starts serving.
    pub async fn bind(
        addr: SocketAddr,
        config: Config,
        sink: impl EventSink,
    ) -> Result<Server, ServeError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        Server::start(listener, config, sink)
    }

    /// Serves an already bound listener; must be called inside a tokio runtime.
    pub fn start(
        listener: TcpListener,
        config: Config,
        sink: impl EventSink,
    ) -> Result<Server, ServeError> {
        let addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: ([0, 0, 0, 0], 0).into(),
            source,
        })?;
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(serve(listener, config, sink, Arc::clone(&stats)));
        Ok(Server { addr, stats, task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to put in the webhook kubeconfig, e.g. `http://127.0.0.1:8765/k8s_audit`.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, PATHS[0])
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts connections forever: a failing accept (e.g. out of file descriptors) is retried
/// after a pause instead of stopping the receiver.
async fn serve(listener: TcpListener, config: Config, sink: impl EventSink, stats: Arc<Stats>) {
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let budget = Semaphore::new(kib(config.max_in_flight_bytes.max(config.max_body_bytes)));
    let shared = Arc::new(Shared {
        config,
        sink,
        stats,
        budget,
    });
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let timeout = shared.config.read_timeout;
            let service = hyper::service::service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(shared.handle(req).await) }
            });
            // A broken connection only ends that connection.
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}

struct Shared<S> {
    config: Config,
    sink: S,
    stats: Arc<Stats>,
    /// `max_in_flight_bytes` in KiB permits.
    budget: Semaphore,
}

fn kib(bytes: usize) -> usize {
    bytes.div_ceil(1024).min(Semaphore::MAX_PERMITS)
}

impl<S: EventSink> Shared<S> {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let response = self.respond(req).await;
        if !response.status().is_success() {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
        }
        response
    }

    async fn respond(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if !PATHS.contains(&req.uri().path()) {
            return reply(
                StatusCode::NOT_FOUND,
                format!(
                    "not found: POST audit events to {} or {}",
                    PATHS[0], PATHS[1]
                ),
            );
        }
        if req.method() != Method::POST {
            let mut response = reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "only POST is accepted".to_owned(),
            );
            response.headers_mut().insert(
                hyper::header::ALLOW,
                hyper::header::HeaderValue::from_static("POST"),
            );
            return response;
        }
        let limit = self.config.max_body_bytes;
        let declared = req
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|len| len > limit) {
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body larger than {limit} bytes"),
            );
        }
        // A chunked body may be as large as the limit, so it reserves that much.
        let share = u32::try_from(kib(declared.unwrap_or(limit))).unwrap_or(u32::MAX);
        let Ok(_share) = self.budget.acquire_many(share).await else {
            return reply(StatusCode::SERVICE_UNAVAILABLE, "shutting down".to_owned());
        };
        let body = Limited::new(req.into_body(), limit).collect();
        let body = match tokio::time::timeout(self.config.read_timeout, body).await {
            Err(_) => {
                return reply(
                    StatusCode::REQUEST_TIMEOUT,
                    "body not received in time".to_owned(),
                );
            }
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return reply(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body larger than {limit} bytes"),
                );
            }
            Ok(Err(e)) => return reply(StatusCode::BAD_REQUEST, format!("reading body: {e}")),
            Ok(Ok(collected)) => collected.to_bytes(),
        };
        let events = match decode(&body) {
            Ok(events) => events,
            Err(e) => return reply(StatusCode::BAD_REQUEST, e.to_string()),
        };
        drop(body);
        self.stats
            .events
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        let matched: Vec<Event> = events
            .into_iter()
            .filter(|e| self.config.filter.matches(e))
            .collect();
        let count = matched.len() as u64;
        if self.sink.accept(matched).await.is_err() {
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "the event consumer has stopped".to_owned(),
            );
        }
        self.stats.matched.fetch_add(count, Ordering::Relaxed);
        reply(StatusCode::OK, "ok".to_owned())
    }
}

fn reply(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text + "\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
