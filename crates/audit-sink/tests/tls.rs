//! The receiver over TLS, with certificates made for each test by the `openssl` CLI and
//! requests sent by `curl`, so that the client side is an independent TLS implementation.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use audit_sink::{Collector, Config, Server, TlsConfig, TlsError};
use support::pki::certificates;

mod support {
    pub mod pki;
}

const LIST: &str = r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{"level":"Metadata","auditID":"a","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/d/configmaps","verb":"create","user":{"username":"u"},"objectRef":{"resource":"configmaps","namespace":"d","name":"c"},"responseStatus":{"code":201}}]}"#;

async fn tls_server(dir: &Path, client_ca: Option<&str>) -> (Server, Collector) {
    tls_server_with(dir, client_ca, Config::default()).await
}

async fn tls_server_with(
    dir: &Path,
    client_ca: Option<&str>,
    config: Config,
) -> (Server, Collector) {
    let client_ca = client_ca.map(|name| dir.join(name));
    let tls = TlsConfig::from_pem_files(
        &dir.join("good-server.pem"),
        &dir.join("good-server.key"),
        client_ca.as_deref(),
    )
    .expect("usable certificates");
    let collector = Collector::new();
    let config = Config {
        tls: Some(tls),
        ..config
    };
    let server = Server::bind(
        "127.0.0.1:0".parse().expect("addr"),
        config,
        collector.clone(),
    )
    .await
    .expect("bind");
    (server, collector)
}

/// `curl` POSTs `LIST` to `url` trusting `ca`; returns its exit code and what it printed
/// (the body, then the status code).
async fn curl(url: String, dir: PathBuf, ca: &str, client: Option<&str>) -> (i32, String) {
    let mut command = Command::new("curl");
    command
        .args(["--silent", "--show-error", "--max-time", "10"])
        .args(["--write-out", "%{http_code}", "--output", "-"])
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            LIST,
        ])
        .arg("--cacert")
        .arg(dir.join(ca))
        .arg(url)
        .stdin(Stdio::null());
    if let Some(client) = client {
        command
            .arg("--cert")
            .arg(dir.join(format!("{client}.pem")))
            .arg("--key")
            .arg(dir.join(format!("{client}.key")));
    }
    let output: Output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("thread")
        .expect("run curl");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_for_a_client_that_trusts_the_ca() {
    let dir = certificates();
    let (server, collector) = tls_server(dir.path(), None).await;
    let url = server.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let path = dir.path().to_owned();
    assert_eq!(
        curl(url.clone(), path.clone(), "good-ca.pem", None).await,
        (0, "ok\n200".to_owned())
    );
    assert_eq!(collector.events().len(), 1);
    // curl's 60: the peer's certificate cannot be verified with the given CA.
    assert_eq!(curl(url, path, "other-ca.pem", None).await.0, 60);
    assert_eq!(collector.events().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_ca_requires_a_certificate_it_signed() {
    let dir = certificates();
    let (server, collector) = tls_server(dir.path(), Some("good-ca.pem")).await;
    let url = server.url();
    let path = dir.path().to_owned();
    let without = curl(url.clone(), path.clone(), "good-ca.pem", None).await;
    assert_ne!(
        without.0, 0,
        "served without a client certificate: {without:?}"
    );
    let foreign = curl(
        url.clone(),
        path.clone(),
        "good-ca.pem",
        Some("other-client"),
    )
    .await;
    assert_ne!(foreign.0, 0, "served another CA's client: {foreign:?}");
    assert!(collector.events().is_empty());
    assert_eq!(
        curl(url, path, "good-ca.pem", Some("good-client")).await,
        (0, "ok\n200".to_owned())
    );
    assert_eq!(collector.events().len(), 1);
}

/// Every way a PEM file can be wrong names the file and says what was expected.
#[test]
fn unusable_pem_files_are_named_with_what_was_expected() {
    let dir = certificates();
    let d = dir.path();
    std::fs::write(
        d.join("garbage.pem"),
        "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    std::fs::write(
        d.join("unterminated.pem"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n",
    )
    .expect("write");
    std::fs::write(d.join("empty.pem"), "").expect("write");
    std::fs::write(
        d.join("not-x509.pem"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let cases: [(&str, &str, &str, Option<&str>); 11] = [
        (
            "missing certificate",
            "missing.pem",
            "good-server.key",
            None,
        ),
        ("missing key", "good-server.pem", "missing.key", None),
        (
            "missing client CA",
            "good-server.pem",
            "good-server.key",
            Some("missing.pem"),
        ),
        (
            "key given as certificate",
            "good-server.key",
            "good-server.key",
            None,
        ),
        (
            "certificate given as key",
            "good-server.pem",
            "good-server.pem",
            None,
        ),
        ("bad base64", "garbage.pem", "good-server.key", None),
        (
            "unterminated key",
            "good-server.pem",
            "unterminated.pem",
            None,
        ),
        (
            "key of another certificate",
            "good-server.pem",
            "other-client.key",
            None,
        ),
        (
            "empty client CA",
            "good-server.pem",
            "good-server.key",
            Some("empty.pem"),
        ),
        (
            "certificate not X.509",
            "not-x509.pem",
            "good-server.key",
            None,
        ),
        (
            "client CA not X.509",
            "good-server.pem",
            "good-server.key",
            Some("not-x509.pem"),
        ),
    ];
    let mut report = String::new();
    for (what, cert, key, ca) in cases {
        let ca = ca.map(|ca| d.join(ca));
        let error: TlsError =
            TlsConfig::from_pem_files(&d.join(cert), &d.join(key), ca.as_deref()).expect_err(what);
        // The message and its causes, as `{:#}` prints them in the binary.
        let mut text = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            text = format!("{text}: {cause}");
            source = cause.source();
        }
        let text = text.replace(&format!("{}/", d.display()), "DIR/");
        report.push_str(&format!("{what}: {text}\n"));
    }
    insta::assert_snapshot!(report, @r#"
    missing certificate: cannot read DIR/missing.pem: No such file or directory (os error 2)
    missing key: cannot read DIR/missing.key: No such file or directory (os error 2)
    missing client CA: cannot read DIR/missing.pem: No such file or directory (os error 2)
    key given as certificate: DIR/good-server.key: no certificate found; expected a PEM file with a "-----BEGIN CERTIFICATE-----" block
    certificate given as key: DIR/good-server.pem: no private key found; expected a PEM file with a "-----BEGIN PRIVATE KEY-----", "-----BEGIN RSA PRIVATE KEY-----" or "-----BEGIN EC PRIVATE KEY-----" block
    bad base64: DIR/garbage.pem: invalid PEM (a block is not valid base64); expected a PEM file with a "-----BEGIN CERTIFICATE-----" block
    unterminated key: DIR/unterminated.pem: invalid PEM (no "-----END PRIVATE KEY-----" line); expected a PEM file with a "-----BEGIN PRIVATE KEY-----", "-----BEGIN RSA PRIVATE KEY-----" or "-----BEGIN EC PRIVATE KEY-----" block
    key of another certificate: DIR/other-client.key is not the private key of the certificate in DIR/good-server.pem
    empty client CA: DIR/empty.pem: no certificate found; expected a PEM file with a "-----BEGIN CERTIFICATE-----" block
    certificate not X.509: DIR/not-x509.pem: not a valid X.509 certificate (BadEncoding)
    client CA not X.509: DIR/not-x509.pem: not a valid X.509 certificate (BadEncoding)
    "#);
}

/// A client that opens a connection and never starts the handshake is closed at the header
/// deadline, and idle connections are shed over TLS as over plain http.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_silent_tls_connections_do_not_lock_out_a_sender() {
    use std::io::Read;
    use std::time::{Duration, Instant};
    let dir = certificates();
    let config = Config {
        header_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    let (server, collector) = tls_server_with(dir.path(), None, config).await;
    let addr = server.local_addr();
    let silent = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let started = Instant::now();
        let mut buf = [0u8; 64];
        let _ = stream.read(&mut buf);
        started.elapsed()
    });
    let closed = silent.await.expect("thread");
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(3)).contains(&closed),
        "a silent connection was closed after {closed:?}"
    );
    let idle: Vec<std::net::TcpStream> = (0..200)
        .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
        .collect();
    let started = Instant::now();
    let answer = curl(server.url(), dir.path().to_owned(), "good-ca.pem", None).await;
    let took = started.elapsed();
    assert_eq!(answer, (0, "ok\n200".to_owned()));
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(collector.events().len(), 1);
    drop(idle);
}

/// The in-memory constructor, for a test or a pipeline that made its certificates itself;
/// its errors name which PEM was wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_memory() {
    let dir = certificates();
    let read = |name: &str| std::fs::read(dir.path().join(name)).expect("read");
    let (cert, key, ca) = (
        read("good-server.pem"),
        read("good-server.key"),
        read("good-ca.pem"),
    );
    let error = TlsConfig::from_pem(&key, &key, None).expect_err("a key is no certificate");
    assert!(
        error
            .to_string()
            .starts_with("certificate PEM: no certificate found"),
        "{error}"
    );
    let error = TlsConfig::from_pem(&cert, &key, Some(&key)).expect_err("a key is no CA");
    assert!(
        error
            .to_string()
            .starts_with("client CA PEM: no certificate found"),
        "{error}"
    );
    let tls = TlsConfig::from_pem(&cert, &key, Some(&ca)).expect("usable");
    assert!(tls.requires_client_cert());
    let config = Config {
        tls: Some(tls),
        ..Config::default()
    };
    let collector = Collector::new();
    let server = Server::bind(
        "127.0.0.1:0".parse().expect("addr"),
        config,
        collector.clone(),
    )
    .await
    .expect("bind");
    let answer = curl(
        server.url(),
        dir.path().to_owned(),
        "good-ca.pem",
        Some("good-client"),
    )
    .await;
    assert_eq!(answer, (0, "ok\n200".to_owned()));
}
