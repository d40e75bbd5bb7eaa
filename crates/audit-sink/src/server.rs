//! The HTTP receiver: POSTs on `/k8s_audit` (classic Falco) and `/k8s-audit` (k8saudit plugin).
//!
//! Memory stays bounded under bursts: each body is capped at `max_body_bytes`, bodies being read
//! or decoded share a budget of `max_in_flight_bytes` (a request waits for its share, its bytes
//! still in the kernel's socket buffer), and a request is answered only once its events are in
//! the sink, so a slow consumer slows the senders down instead of queueing without limit.
//!
//! Connections cannot lock senders out: every stage of a request has a deadline (headers, then
//! budget and body), and at the connection limit the accept loop closes the connection idle
//! the longest instead of waiting for a free slot.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{
    CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, TRANSFER_ENCODING,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::event::{Event, decode};
use crate::filter::Filter;
use crate::sink::EventSink;
use crate::tls::TlsConfig;

/// The two paths Falco has listened on: the webserver before 0.32 and the k8saudit plugin after.
pub const PATHS: [&str; 2] = ["/k8s_audit", "/k8s-audit"];

#[derive(Debug, Clone)]
pub struct Config {
    pub filter: Filter,
    /// Larger bodies get 413. The API server's default batch (400 events) is well below 16 MiB.
    pub max_body_bytes: usize,
    /// Body bytes held at once across all requests (decoded events take about as much again).
    pub max_in_flight_bytes: usize,
    /// Connections open at once. At the limit a new connection replaces the one that has been
    /// idle (no request in progress) the longest, so idle connections cannot lock senders out;
    /// when every connection has a request in progress, the new one gets a 503.
    pub max_connections: usize,
    /// A connection must deliver a request's headers this long after it opened (TLS handshake
    /// included) or after its previous response; a slow or idle one is closed.
    pub header_timeout: Duration,
    /// Once its headers are in, a request must get its share of `max_in_flight_bytes` (or a
    /// 503) and deliver its whole body (or a 408) within this time.
    pub body_timeout: Duration,
    /// Serve https instead of http.
    pub tls: Option<TlsConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            filter: Filter::default(),
            max_body_bytes: 16 << 20,
            max_in_flight_bytes: 32 << 20,
            max_connections: 64,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            tls: None,
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
    shed: AtomicU64,
    refused: AtomicU64,
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
    /// Idle connections closed to make room for a new one.
    pub shed: u64,
    /// Connections turned away because every slot had a request in progress.
    pub refused: u64,
}

impl Stats {
    fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            matched: self.matched.load(Ordering::Relaxed),
            shed: self.shed.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
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
    tls: bool,
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
        let tls = config.tls.is_some();
        let task = tokio::spawn(serve(listener, config, sink, Arc::clone(&stats)));
        Ok(Server {
            addr,
            tls,
            stats,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to put in the webhook kubeconfig, e.g. `http://127.0.0.1:8765/k8s_audit`
    /// (`https://` when serving TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{}", self.addr, PATHS[0])
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

/// A connection between requests: its headers may still be on the way, and closing it loses
/// nothing the sender has been told was received.
const IDLE: u8 = 0;
/// A request is being read, decoded, queued or answered.
const BUSY: u8 = 1;
/// Chosen to make room; it must not start a request any more.
const SHED: u8 = 2;

struct Connection {
    phase: AtomicU8,
    /// Milliseconds since `Connections::epoch` at which it last became idle.
    idle_since: AtomicU64,
}

/// The open connections, so that the accept loop can pick one to shed.
struct Connections {
    epoch: Instant,
    open: Mutex<HashMap<u64, (Arc<Connection>, AbortHandle)>>,
}

impl Connections {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Arc<Connection>, AbortHandle)>> {
        // The map stays consistent whatever a panicking holder did: each step is one insert or
        // remove.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Removes its connection from the registry however the connection's task ends (finished,
/// failed or aborted).
struct Registered {
    connections: Arc<Connections>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.id);
    }
}

/// Ends every open connection when the accept loop ends (the [`Server`] was dropped), so that
/// a keep-alive sender does not go on delivering to a receiver its owner has let go.
struct CloseAll(Arc<Connections>);

impl Drop for CloseAll {
    fn drop(&mut self) {
        let open: Vec<AbortHandle> = self.0.lock().drain().map(|(_, (_, a))| a).collect();
        for connection in open {
            connection.abort();
        }
    }
}

/// Picks the connection idle the longest and marks it shed, unless it started a request in
/// the meantime; returns its abort handle.
fn pick_idle(open: &mut HashMap<u64, (Arc<Connection>, AbortHandle)>) -> Option<AbortHandle> {
    let mut idle: Vec<(u64, u64)> = open
        .iter()
        .filter(|(_, (c, _))| c.phase.load(Ordering::Acquire) == IDLE)
        .map(|(id, (c, _))| (c.idle_since.load(Ordering::Relaxed), *id))
        .collect();
    idle.sort_unstable();
    for (_, id) in idle {
        let Some((conn, _)) = open.get(&id) else {
            continue;
        };
        if conn
            .phase
            .compare_exchange(IDLE, SHED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return open.remove(&id).map(|(_, abort)| abort);
        }
    }
    None
}

/// Per-connection read buffer, which bounds a request's headers.
const HEADER_BUFFER: usize = 64 << 10;

/// What a plain-http client gets when every slot has a request in progress.
const BUSY_REPLY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 55\r\nConnection: close\r\n\r\nevery connection slot has a request in progress; retry\n";

/// Accepts connections forever: the connection limit never stops the loop (see
/// [`Config::max_connections`]), and a failing accept (e.g. out of file descriptors) is
/// retried after a pause instead of stopping the receiver.
async fn serve(listener: TcpListener, config: Config, sink: impl EventSink, stats: Arc<Stats>) {
    let limit = config.max_connections.max(1);
    let budget = Semaphore::new(kib(config.max_in_flight_bytes.max(config.max_body_bytes)));
    let connections = Arc::new(Connections {
        epoch: Instant::now(),
        open: Mutex::new(HashMap::new()),
    });
    let shared = Arc::new(Shared {
        config,
        sink,
        stats,
        budget,
        connections: Arc::clone(&connections),
    });
    let _close_all = CloseAll(Arc::clone(&connections));
    let mut next_id = 0u64;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let mut open = connections.lock();
        let victim = if open.len() >= limit {
            match pick_idle(&mut open) {
                Some(victim) => {
                    // Counted before the new connection can be served, so that stats read
                    // after its answer include it.
                    shared.stats.shed.fetch_add(1, Ordering::Relaxed);
                    Some(victim)
                }
                None => {
                    drop(open);
                    shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                    if shared.config.tls.is_none() {
                        tokio::spawn(refuse(stream));
                    }
                    continue;
                }
            }
        } else {
            None
        };
        let id = next_id;
        next_id += 1;
        let conn = Arc::new(Connection {
            phase: AtomicU8::new(IDLE),
            idle_since: AtomicU64::new(connections.now()),
        });
        let registered = Registered {
            connections: Arc::clone(&connections),
            id,
        };
        // Inserted under the same lock that the task's `Registered` takes on its way out, so
        // a connection that ends at once cannot leave a stale entry behind.
        let task = tokio::spawn(connection(
            stream,
            Arc::clone(&shared),
            Arc::clone(&conn),
            registered,
        ));
        open.insert(id, (conn, task.abort_handle()));
        drop(open);
        if let Some(victim) = victim {
            victim.abort();
        }
    }
}

/// Answers 503 without reading the request, then reads a little of it for a moment: closing
/// a socket with unread data resets it, and the client would lose the answer.
async fn refuse(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.try_write(BUSY_REPLY);
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let drain = async {
        let mut left = 64usize << 10;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// One connection, TLS handshake included; a broken connection only ends itself.
async fn connection<S: EventSink>(
    stream: TcpStream,
    shared: Arc<Shared<S>>,
    conn: Arc<Connection>,
    _registered: Registered,
) {
    let _ = stream.set_nodelay(true);
    match shared.config.tls.clone() {
        None => serve_http(stream, shared, conn).await,
        Some(tls) => {
            let handshake =
                tokio::time::timeout(shared.config.header_timeout, tls.acceptor.accept(stream));
            if let Ok(Ok(stream)) = handshake.await {
                serve_http(stream, shared, conn).await;
            }
        }
    }
}

async fn serve_http<S: EventSink>(
    io: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    shared: Arc<Shared<S>>,
    conn: Arc<Connection>,
) {
    let timeout = shared.config.header_timeout;
    let service = hyper::service::service_fn(move |req| {
        let shared = Arc::clone(&shared);
        let conn = Arc::clone(&conn);
        async move {
            let Some(busy) = Busy::enter(conn, Arc::clone(&shared.connections)) else {
                let response = reply(StatusCode::SERVICE_UNAVAILABLE, "closing".to_owned());
                return Ok::<_, Infallible>(response.map(|body| Tracked { body, _busy: None }));
            };
            let response = shared.handle(req).await;
            Ok(response.map(|body| Tracked {
                body,
                _busy: Some(busy),
            }))
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        // hyper's default lets each connection buffer about 400 KiB of headers; the API
        // server sends well under 8 KiB, so all connections together stay within a few MiB.
        .max_buf_size(HEADER_BUFFER)
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// Marks its connection busy from the moment a request's headers are in until the response
/// body has been handed to the connection, so that shedding never cuts off an answer.
struct Busy {
    conn: Arc<Connection>,
    connections: Arc<Connections>,
}

impl Busy {
    fn enter(conn: Arc<Connection>, connections: Arc<Connections>) -> Option<Busy> {
        conn.phase
            .compare_exchange(IDLE, BUSY, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        Some(Busy { conn, connections })
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.conn
            .idle_since
            .store(self.connections.now(), Ordering::Relaxed);
        // Only BUSY becomes IDLE: a shed connection stays shed.
        let _ = self
            .conn
            .phase
            .compare_exchange(BUSY, IDLE, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// A response body that keeps its connection busy until hyper has taken all of it.
struct Tracked {
    body: Full<Bytes>,
    _busy: Option<Busy>,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

struct Shared<S> {
    config: Config,
    sink: S,
    stats: Arc<Stats>,
    /// `max_in_flight_bytes` in KiB permits.
    budget: Semaphore,
    connections: Arc<Connections>,
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
        let deadline = Instant::now() + self.config.body_timeout;
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
            response
                .headers_mut()
                .insert(hyper::header::ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
        if let Some(refusal) = refuse_headers(req.headers()) {
            return refusal;
        }
        let limit = self.config.max_body_bytes;
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|len| len > limit) {
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body larger than {limit} bytes"),
            );
        }
        // A chunked body may be as large as the limit, so it reserves that much.
        let share = u32::try_from(kib(declared.unwrap_or(limit))).unwrap_or(u32::MAX);
        let _share = match tokio::time::timeout_at(deadline, self.budget.acquire_many(share)).await
        {
            Ok(Ok(share)) => share,
            Ok(Err(_)) => {
                return reply(StatusCode::SERVICE_UNAVAILABLE, "shutting down".to_owned());
            }
            Err(_) => {
                let mut response = reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many bodies in flight; retry".to_owned(),
                );
                response
                    .headers_mut()
                    .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
                return response;
            }
        };
        let body = Limited::new(req.into_body(), limit).collect();
        let body = match tokio::time::timeout_at(deadline, body).await {
            Err(_) => {
                return reply(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "body not received within {:?} of the headers",
                        self.config.body_timeout
                    ),
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

/// Headers that say the body is not what the API server sends: Falco's k8saudit plugin
/// refuses a Content-Type without `application/json`, and neither it nor we decode a
/// compressed body, which would otherwise surface as a puzzling "not UTF-8".
fn refuse_headers(headers: &hyper::HeaderMap) -> Option<Response<Full<Bytes>>> {
    for value in headers.get_all(CONTENT_ENCODING) {
        let text = String::from_utf8_lossy(value.as_bytes());
        let unsupported = text
            .split(',')
            .map(str::trim)
            .find(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("identity"));
        if let Some(coding) = unsupported {
            return Some(reply(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "unsupported Content-Encoding {coding:?}: send the body uncompressed (identity), as the API server does"
                ),
            ));
        }
    }
    // hyper removes a final `chunked`; any other transfer coding would leave the body encoded.
    for value in headers.get_all(TRANSFER_ENCODING) {
        let text = String::from_utf8_lossy(value.as_bytes());
        let unsupported = text
            .split(',')
            .map(str::trim)
            .find(|coding| !coding.eq_ignore_ascii_case("chunked"));
        if let Some(coding) = unsupported {
            return Some(reply(
                StatusCode::NOT_IMPLEMENTED,
                format!("unsupported Transfer-Encoding {coding:?}: only chunked is accepted"),
            ));
        }
    }
    let expected = "expected application/json, as the API server sends and Falco requires";
    match headers.get(CONTENT_TYPE) {
        None => Some(reply(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("missing Content-Type: {expected}"),
        )),
        Some(value) => {
            let text = String::from_utf8_lossy(value.as_bytes());
            let media_type = text.split(';').next().unwrap_or_default().trim();
            if media_type.eq_ignore_ascii_case("application/json") {
                None
            } else {
                Some(reply(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!("unsupported Content-Type {text:?}: {expected}"),
                ))
            }
        }
    }
}

fn reply(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text + "\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
