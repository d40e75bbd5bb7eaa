//! `NodeProbe::readiness` against small TLS servers on 127.0.0.1 that answer canned HTTP:
//! the certificate is checked the way the kubeconfig says (its CA data, for the host asked), the
//! kubeconfig's client certificate and token are presented, and every answer maps to a
//! Readiness that never quotes the token; the verify probe's ConfigMap requests, and its errors.
//! The real API server's side is in
//! `real_control_plane.rs`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use cluster::{Cluster, ClusterOptions, NodeProbe, ProbeConfigMap, Readiness};
use tokio_rustls::rustls::{
    RootCertStore, ServerConfig, ServerConnection, StreamOwned,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};

const TOKEN: &str = "s3cr3t-t0ken-never-shown";

fn ok(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn status(code: u16, reason: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A TLS server answering each request path from `answers`; with `client_ca`, it requires a
/// client certificate that CA signed, as kube-apiserver with `--client-ca-file` may.
struct CannedServer {
    addr: SocketAddr,
    /// Every request received (head and body), in order.
    requests: Arc<Mutex<Vec<String>>>,
}

impl CannedServer {
    fn start(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
        answers: HashMap<&'static str, String>,
    ) -> Self {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let builder = ServerConfig::builder();
        let config = match client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for der in CertificateDer::pem_file_iter(ca).unwrap() {
                    roots.add(der.unwrap()).unwrap();
                }
                let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                    .build()
                    .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        }
        .with_single_cert(chain, key)
        .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let connection = ServerConnection::new(Arc::clone(&config)).unwrap();
                // A client that refuses the certificate ends the connection here.
                let _ = answer(StreamOwned::new(connection, stream), &answers, &seen);
            }
        });
        CannedServer { addr, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    fn open(&self) -> impl FnMut() -> std::io::Result<TcpStream> + '_ {
        move || {
            let stream = TcpStream::connect(self.addr)?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            Ok(stream)
        }
    }
}

fn answer(
    mut tls: StreamOwned<ServerConnection, TcpStream>,
    answers: &HashMap<&'static str, String>,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tls.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    // The body is read before answering, as a server does: closing with unread bytes would
    // reset the connection under the answer.
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("Content-Length: "))
        .map_or(0, |n| n.trim().parse::<usize>().unwrap());
    let mut body = vec![0u8; length];
    tls.read_exact(&mut body)?;
    seen.lock()
        .unwrap()
        .push(head.clone() + &String::from_utf8_lossy(&body));
    let reply = match answers.get(path.as_str()) {
        // A server that quotes the request back, to prove the token is scrubbed anyway.
        Some(reply) if reply == "ECHO" => status(401, "Unauthorized", &head),
        Some(reply) => reply.clone(),
        None => status(404, "Not Found", "404 page not found\n"),
    };
    tls.write_all(reply.as_bytes())?;
    tls.conn.send_close_notify();
    tls.flush()
}

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        testkit::pki::certificate(dir.path(), "ca", None, "");
        testkit::pki::certificate(dir.path(), "other-ca", None, "");
        testkit::pki::certificate(
            dir.path(),
            "node",
            Some("ca"),
            "subjectAltName=IP:127.0.0.1",
        );
        testkit::pki::certificate(
            dir.path(),
            "elsewhere",
            Some("ca"),
            "subjectAltName=DNS:elsewhere.example",
        );
        testkit::pki::certificate(
            dir.path(),
            "admin",
            Some("ca"),
            "extendedKeyUsage=clientAuth",
        );
        Pki { dir }
    }

    fn pem(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.pem"))
    }

    fn key(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.key"))
    }

    fn data(&self, path: &Path) -> String {
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap())
    }

    /// A kubeconfig trusting `ca` (its certificate-authority-data) with the token and,
    /// optionally, the `admin` client certificate; its server is never contacted.
    async fn probe(&self, ca: &str, client_certificate: bool) -> NodeProbe {
        let client = if client_certificate {
            format!(
                "    client-certificate-data: {}\n    client-key-data: {}\n",
                self.data(&self.pem("admin")),
                self.data(&self.key("admin"))
            )
        } else {
            String::new()
        };
        let path = self
            .dir
            .path()
            .join(format!("kubeconfig-{ca}-{client_certificate}"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n    certificate-authority-data: {}\nusers:\n- name: u\n  user:\n    token: {TOKEN}\n{client}contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n",
                self.data(&self.pem(ca))
            ),
        )
        .unwrap();
        let cluster = Cluster::connect(&ClusterOptions {
            kubeconfig: Some(path),
            context: None,
        })
        .await
        .unwrap();
        cluster.node_probe().unwrap()
    }
}

fn unreachable_reason(readiness: Readiness) -> String {
    match readiness {
        Readiness::Unreachable(reason) => reason,
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn verified_by_the_kubeconfig_ca_presenting_its_client_certificate_and_token() {
    let pki = Pki::new();
    let server = CannedServer::start(
        &pki.pem("node"),
        &pki.key("node"),
        Some(&pki.pem("ca")),
        HashMap::from([("/readyz", ok("ok"))]),
    );
    let probe = pki.probe("ca", true).await;
    assert_eq!(
        probe.readiness("127.0.0.1", server.open()),
        Readiness::Ready
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(requests[0].starts_with("GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n"));
    assert!(
        requests[0].contains(&format!("\r\nAuthorization: Bearer {TOKEN}\r\n")),
        "{}",
        requests[0]
    );
    assert!(requests[0].contains("\r\nConnection: close\r\n"));
    assert!(!format!("{probe:?}").contains(TOKEN));

    // The certificate covers the IP only: asked as a name, it does not match.
    let reason = unreachable_reason(probe.readiness("localhost", server.open()));
    assert!(
        reason.starts_with("TLS handshake with localhost: invalid peer certificate"),
        "{reason}"
    );
    assert!(reason.contains("not valid for name"), "{reason}");

    // Without the client certificate this server refuses the connection (in TLS 1.3 the
    // client learns it only when it reads the answer).
    let anonymous = pki.probe("ca", false).await;
    let reason = unreachable_reason(anonymous.readiness("127.0.0.1", server.open()));
    assert!(reason.contains("CertificateRequired"), "{reason}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_certificate_for_another_host_or_from_another_ca_is_refused() {
    let pki = Pki::new();
    let elsewhere = CannedServer::start(
        &pki.pem("elsewhere"),
        &pki.key("elsewhere"),
        None,
        HashMap::from([("/readyz", ok("ok"))]),
    );
    let probe = pki.probe("ca", false).await;
    let reason = unreachable_reason(probe.readiness("127.0.0.1", elsewhere.open()));
    assert!(
        reason.starts_with("TLS handshake with 127.0.0.1: invalid peer certificate"),
        "{reason}"
    );
    assert!(reason.contains("not valid for name"), "{reason}");
    // The name it does cover passes, so the refusal above was about the name alone.
    assert_eq!(
        probe.readiness("elsewhere.example", elsewhere.open()),
        Readiness::Ready
    );

    let node = CannedServer::start(
        &pki.pem("node"),
        &pki.key("node"),
        None,
        HashMap::from([("/readyz", ok("ok"))]),
    );
    let stranger = pki.probe("other-ca", false).await;
    let reason = unreachable_reason(stranger.readiness("127.0.0.1", node.open()));
    assert!(reason.contains("UnknownIssuer"), "{reason}");
    assert!(node.requests().is_empty(), "{:?}", node.requests());
}

#[tokio::test]
async fn failing_checks_are_quoted() {
    let pki = Pki::new();
    let body = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/recorded/readyz-etcd-failed.txt"
    ))
    .unwrap();
    let server = CannedServer::start(
        &pki.pem("node"),
        &pki.key("node"),
        None,
        HashMap::from([("/readyz", status(500, "Internal Server Error", &body))]),
    );
    let probe = pki.probe("ca", false).await;
    assert_eq!(
        probe.readiness("127.0.0.1", server.open()),
        Readiness::NotReady("HTTP 500: [-]etcd failed: reason withheld".into())
    );
}

#[tokio::test]
async fn healthz_answers_when_readyz_is_not_served() {
    let pki = Pki::new();
    let server = CannedServer::start(
        &pki.pem("node"),
        &pki.key("node"),
        None,
        HashMap::from([("/healthz", ok("ok"))]),
    );
    let probe = pki.probe("ca", false).await;
    assert_eq!(
        probe.readiness("127.0.0.1", server.open()),
        Readiness::Ready
    );
    let paths: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.split_whitespace().nth(1).unwrap().to_string())
        .collect();
    assert_eq!(paths, ["/readyz", "/healthz"]);

    // A 404 on /healthz too is an answer, not a retry loop.
    let neither = CannedServer::start(&pki.pem("node"), &pki.key("node"), None, HashMap::new());
    assert_eq!(
        probe.readiness("127.0.0.1", neither.open()),
        Readiness::NotReady("HTTP 404: 404 page not found".into())
    );
    assert_eq!(neither.requests().len(), 2);
}

#[tokio::test]
async fn unauthorized_is_not_ready_and_never_shows_the_token() {
    let pki = Pki::new();
    let recorded = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/recorded/unauthorized.json"
    ))
    .unwrap();
    let server = CannedServer::start(
        &pki.pem("node"),
        &pki.key("node"),
        None,
        HashMap::from([("/readyz", status(401, "Unauthorized", &recorded))]),
    );
    let probe = pki.probe("ca", false).await;
    assert_eq!(
        probe.readiness("127.0.0.1", server.open()),
        Readiness::NotReady("HTTP 401: Unauthorized".into())
    );

    let echo = CannedServer::start(
        &pki.pem("node"),
        &pki.key("node"),
        None,
        HashMap::from([("/readyz", "ECHO".to_string())]),
    );
    let readiness = probe.readiness("127.0.0.1", echo.open());
    let Readiness::NotReady(message) = &readiness else {
        panic!("{readiness:?}")
    };
    assert!(message.starts_with("HTTP 401: GET /readyz"), "{message}");
    assert!(
        message.contains("Authorization: Bearer <token>"),
        "{message}"
    );
    assert!(!message.contains(TOKEN), "{message}");
}

#[tokio::test]
async fn nothing_listening_is_unreachable() {
    let pki = Pki::new();
    let probe = pki.probe("ca", false).await;
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let reason = unreachable_reason(
        probe.readiness("127.0.0.1", || TcpStream::connect(("127.0.0.1", port))),
    );
    assert!(
        reason.starts_with("cannot open a stream to 127.0.0.1: Connection refused"),
        "{reason}"
    );
    // Not TLS at all: a server that closes at once.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    let reason = unreachable_reason(probe.readiness("127.0.0.1", || TcpStream::connect(addr)));
    assert!(
        reason.starts_with("TLS handshake with 127.0.0.1: "),
        "{reason}"
    );
    let reason = unreachable_reason(probe.readiness("not a host", || TcpStream::connect(addr)));
    assert_eq!(
        reason,
        "\"not a host\" is neither an IP address nor a DNS name"
    );
}

const CONFIGMAPS: &str = "/api/v1/namespaces/audit%20probes/configmaps";

fn odd_probe() -> ProbeConfigMap {
    ProbeConfigMap {
        namespace: "audit probes".into(),
        name: "p/1".into(),
    }
}

#[tokio::test]
async fn the_probe_posts_the_configmap_then_deletes_it() {
    let pki = Pki::new();
    let created = status(201, "Created", r#"{"kind":"ConfigMap"}"#);
    let server = CannedServer::start(
        &pki.pem("node"),
        &pki.key("node"),
        None,
        HashMap::from([
            (CONFIGMAPS, created),
            (
                "/api/v1/namespaces/audit%20probes/configmaps/p%2F1",
                ok("{}"),
            ),
        ]),
    );
    let probe = pki.probe("ca", false).await;
    probe
        .create_and_delete_probe("127.0.0.1", server.open(), &odd_probe())
        .unwrap();
    let requests = server.requests();
    let [create, delete] = requests.as_slice() else {
        panic!("{requests:?}")
    };
    let (head, body) = create.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with(&format!(
            "POST {CONFIGMAPS} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        )),
        "{head}"
    );
    for header in [
        format!("Authorization: Bearer {TOKEN}"),
        "Content-Type: application/json".to_string(),
        format!("Content-Length: {}", body.len()),
        "Connection: close".to_string(),
    ] {
        assert!(
            head.contains(&format!("\r\n{header}")),
            "{header} in {head}"
        );
    }
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(body).unwrap(),
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "p/1",
                "labels": {"app.kubernetes.io/created-by": "k8s-audit-verify"},
            },
            "data": {"probe": "audit"},
        })
    );
    assert!(
        delete
            .starts_with("DELETE /api/v1/namespaces/audit%20probes/configmaps/p%2F1 HTTP/1.1\r\n"),
        "{delete}"
    );
    assert!(delete.ends_with("\r\n\r\n"), "no body: {delete}");
}

#[tokio::test]
async fn probe_errors_carry_the_status_and_message_never_the_token() {
    let pki = Pki::new();
    let probe = pki.probe("ca", false).await;
    // Created, but the delete finds nothing (someone else deleted it): the 404 is an error,
    // as it is through the kubeconfig's server.
    let gone = CannedServer::start(
        &pki.pem("node"),
        &pki.key("node"),
        None,
        HashMap::from([(CONFIGMAPS, status(201, "Created", "{}"))]),
    );
    let err = probe
        .create_and_delete_probe("127.0.0.1", gone.open(), &odd_probe())
        .unwrap_err();
    assert_eq!(err.http_status(), Some(404));
    assert_eq!(
        err.to_string(),
        "deleting ConfigMap audit probes/p/1 on the API server at 127.0.0.1: HTTP 404: 404 page not found"
    );

    let echo = CannedServer::start(
        &pki.pem("node"),
        &pki.key("node"),
        None,
        HashMap::from([(CONFIGMAPS, "ECHO".to_string())]),
    );
    let err = probe
        .create_and_delete_probe("127.0.0.1", echo.open(), &odd_probe())
        .unwrap_err();
    assert_eq!(err.http_status(), Some(401));
    let message = format!("{err} {err:?}");
    assert!(
        message.contains("Authorization: Bearer <token>"),
        "{message}"
    );
    assert!(!message.contains(TOKEN), "{message}");
    assert_eq!(echo.requests().len(), 1, "no delete after a failed create");

    // The certificate is checked for the host asked, as readiness checks it.
    let err = probe
        .create_and_delete_probe("localhost", gone.open(), &odd_probe())
        .unwrap_err();
    assert_eq!(err.http_status(), None);
    let message = err.to_string();
    assert!(
        message.starts_with(
            "creating ConfigMap audit probes/p/1 on the API server at localhost: TLS handshake with localhost: invalid peer certificate"
        ),
        "{message}"
    );
}
