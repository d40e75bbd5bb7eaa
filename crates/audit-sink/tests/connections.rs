//! Connections that send nothing, or send slowly, must not lock real senders out, and every
//! stage of a request has a deadline.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use audit_sink::{Collector, Config, Server};
use tokio::sync::mpsc;

const EVENT: &str = r#"{"level":"Metadata","auditID":"a","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/d/configmaps","verb":"create","user":{"username":"u"},"objectRef":{"resource":"configmaps","namespace":"d","name":"c"},"responseStatus":{"code":201}}"#;

fn list(events: usize) -> String {
    let items = vec![EVENT; events].join(",");
    format!(r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{items}]}}"#)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to the receiver");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set timeout");
    stream
}

fn head(addr: SocketAddr, length: usize) -> String {
    format!(
        "POST /k8s_audit HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    )
}

/// Sends one POST and returns the status line, or the error that ended the wait for it.
fn post(addr: SocketAddr, body: &str) -> Result<String, std::io::Error> {
    let mut stream = connect(addr);
    stream.write_all(head(addr, body.len()).as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response.lines().next().unwrap_or_default().to_owned())
}

/// Reads until the server closes; returns what it sent and how long that took.
fn wait_for_close(stream: &mut TcpStream, started: Instant) -> (String, Duration) {
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("still open after {:?}: {e}", started.elapsed()),
        }
    }
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("test thread")
}

async fn server(config: Config) -> (Server, Collector) {
    let collector = Collector::new();
    let server = Server::bind(
        "127.0.0.1:0".parse().expect("addr"),
        config,
        collector.clone(),
    )
    .await
    .expect("bind");
    (server, collector)
}

#[test]
fn default_deadlines() {
    let config = Config::default();
    assert_eq!(config.header_timeout, Duration::from_secs(10));
    assert_eq!(config.body_timeout, Duration::from_secs(30));
    assert_eq!(config.max_connections, 64);
}

/// 200 connections that never send a byte (three times the connection limit) and then one
/// real POST: the POST is served at once, because the idle connections make room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_lock_out_a_sender() {
    let (server, collector) = server(Config::default()).await;
    let addr = server.local_addr();
    let (idle, status, took) = blocking(move || {
        let idle: Vec<TcpStream> = (0..200).map(|_| connect(addr)).collect();
        let started = Instant::now();
        let status = post(addr, &list(1));
        (idle, status, started.elapsed())
    })
    .await;
    assert_eq!(
        status.expect("an answer while 200 idle connections are open"),
        "HTTP/1.1 200 OK"
    );
    assert!(took < Duration::from_secs(1), "the POST took {took:?}");
    assert_eq!(collector.events().len(), 1);
    let stats = server.stats();
    eprintln!("answered in {took:?} with 200 idle connections open; {stats:?}");
    assert!(stats.shed >= 200 + 1 - 64, "{stats:?}");
    assert_eq!(stats.refused, 0);
    drop(idle);
}

/// A request in progress is never the one shed; when every slot has one, a new connection is
/// told to retry, and the requests in progress still complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_progress_are_not_shed() {
    // A queue of one event and nobody reading: the POST stays in progress.
    let (tx, mut rx) = mpsc::channel(1);
    let config = Config {
        max_connections: 1,
        ..Config::default()
    };
    let server = Server::bind("127.0.0.1:0".parse().expect("addr"), config, tx)
        .await
        .expect("bind");
    let addr = server.local_addr();
    let pending = tokio::task::spawn_blocking(move || post(addr, &list(3)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !pending.is_finished(),
        "answered before the events were taken"
    );

    let refused = blocking(move || post(addr, &list(1))).await;
    assert_eq!(
        refused.expect("an answer"),
        "HTTP/1.1 503 Service Unavailable"
    );
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("in time")
            .expect("an event");
    }
    let status = pending.await.expect("thread").expect("an answer");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let stats = server.stats();
    assert_eq!((stats.shed, stats.refused), (0, 1));
}

/// Headers trickling in a byte at a time are cut at the header deadline, and so is a
/// keep-alive connection that sends nothing after its first request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_idle_keep_alive_are_cut_at_the_header_deadline() {
    let config = Config {
        header_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    let (server, _collector) = server(config).await;
    let addr = server.local_addr();
    let (slow, idle) = blocking(move || {
        let mut slowloris = connect(addr);
        let started = Instant::now();
        let partial = format!("POST /k8s_audit HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ");
        let mut cut = None;
        for byte in partial.bytes().chain(std::iter::repeat(b'a')) {
            if slowloris.write_all(&[byte]).is_err() || started.elapsed() > Duration::from_secs(5) {
                cut = Some(started.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let (_, closed) = wait_for_close(&mut slowloris, started);
        let cut = cut.map_or(closed, |c| c.min(closed));

        let mut keep_alive = connect(addr);
        let body = list(1);
        let request = head(addr, body.len()).replace("Connection: close\r\n", "") + &body;
        keep_alive.write_all(request.as_bytes()).expect("send");
        let started = Instant::now();
        let (response, idle) = wait_for_close(&mut keep_alive, started);
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        (cut, idle)
    })
    .await;
    let window = Duration::from_millis(900)..Duration::from_secs(3);
    assert!(window.contains(&slow), "slow headers cut after {slow:?}");
    assert!(
        window.contains(&idle),
        "idle keep-alive closed after {idle:?}"
    );
}

/// A body trickling in is answered 408 at the body deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_is_cut_at_the_body_deadline() {
    let config = Config {
        body_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    let (server, collector) = server(config).await;
    let addr = server.local_addr();
    let (response, took) = blocking(move || {
        let body = list(1);
        let mut stream = connect(addr);
        stream
            .write_all(head(addr, body.len()).as_bytes())
            .expect("send head");
        let started = Instant::now();
        for byte in body.bytes() {
            if stream.write_all(&[byte]).is_err() || started.elapsed() > Duration::from_secs(5) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        wait_for_close(&mut stream, started)
    })
    .await;
    assert!(
        response.starts_with("HTTP/1.1 408 Request Timeout"),
        "{response}"
    );
    assert!(response.ends_with("body not received within 1s of the headers\n"));
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(collector.events().is_empty());
}

/// A request waiting for its share of the in-flight budget waits no longer than the body
/// deadline, then hears that it may retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_the_in_flight_budget_ends_at_the_body_deadline() {
    let (tx, mut rx) = mpsc::channel(1);
    let config = Config {
        max_body_bytes: 4096,
        max_in_flight_bytes: 4096,
        body_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    let server = Server::bind("127.0.0.1:0".parse().expect("addr"), config, tx)
        .await
        .expect("bind");
    let addr = server.local_addr();
    // Three events into a queue of one, padded to hold the whole budget until they are taken.
    let mut holder = list(3);
    holder.push_str(&" ".repeat(4000 - holder.len()));
    let pending = tokio::task::spawn_blocking(move || post(addr, &holder));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pending.is_finished());

    let (waiter, took) = blocking(move || {
        let started = Instant::now();
        (post(addr, &list(1)), started.elapsed())
    })
    .await;
    assert_eq!(
        waiter.expect("an answer"),
        "HTTP/1.1 503 Service Unavailable"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
    for _ in 0..3 {
        rx.recv().await.expect("an event");
    }
    assert_eq!(
        pending.await.expect("thread").expect("answer"),
        "HTTP/1.1 200 OK"
    );
}

/// Dropping the server ends its open connections too, keep-alive ones included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_server_closes_its_connections() {
    let (server, _collector) = server(Config::default()).await;
    let addr = server.local_addr();
    let mut keep_alive = blocking(move || {
        let mut stream = connect(addr);
        let body = list(1);
        let request = head(addr, body.len()).replace("Connection: close\r\n", "") + &body;
        stream.write_all(request.as_bytes()).expect("send");
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).expect("response");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));
        stream
    })
    .await;
    drop(server);
    let (rest, took) = blocking(move || wait_for_close(&mut keep_alive, Instant::now())).await;
    assert_eq!(rest, "");
    assert!(took < Duration::from_secs(1), "{took:?}");
}

/// Headers larger than the connection's buffer are refused instead of buffered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_refused() {
    let (server, _collector) = server(Config::default()).await;
    let addr = server.local_addr();
    let response = blocking(move || {
        let mut stream = connect(addr);
        let filler = format!("X-Filler: {}\r\n", "a".repeat(1000)).repeat(100);
        let request = head(addr, 0).replace("\r\n\r\n", &format!("\r\n{filler}\r\n"));
        let _ = stream.write_all(request.as_bytes());
        wait_for_close(&mut stream, Instant::now()).0
    })
    .await;
    assert!(
        response.starts_with("HTTP/1.1 431 Request Header Fields Too Large"),
        "{response}"
    );
}
