//! The `audit-sink` binary: arguments, output formats and filters, end to end.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdout, Command, Stdio};

use support::pki::certificates;

mod support {
    pub mod pki;
}

struct Sink {
    child: Child,
    stdout: BufReader<ChildStdout>,
    addr: String,
    banner: String,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str]) -> Sink {
    let mut child = Command::new(env!("CARGO_BIN_EXE_audit-sink"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start audit-sink");
    let mut banner = String::new();
    BufReader::new(child.stderr.take().expect("stderr"))
        .read_line(&mut banner)
        .expect("banner");
    let addr = banner
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no address in {banner:?}"))
        .to_owned();
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    Sink {
        child,
        stdout,
        addr,
        banner,
    }
}

fn post(addr: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "POST /k8s-audit HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response.lines().next().unwrap_or_default().to_owned()
}

const LIST: &str = r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[
{"level":"Metadata","auditID":"1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/d/secrets/s","verb":"get","user":{"username":"alice"},"objectRef":{"resource":"secrets","namespace":"d","name":"s"},"responseStatus":{"code":200}},
{"level":"Metadata","auditID":"2","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/d/configmaps","verb":"create","user":{"username":"bob"},"objectRef":{"resource":"configmaps","namespace":"d","name":"c"},"responseStatus":{"code":201}}]}"#;

#[test]
fn prints_lines_and_applies_filters() {
    let mut sink = start(&["--user", "bob"]);
    assert_eq!(post(&sink.addr, LIST), "HTTP/1.1 200 OK");
    let mut line = String::new();
    sink.stdout.read_line(&mut line).expect("a line");
    assert_eq!(line, "ResponseComplete create configmaps d/c bob 201\n");
}

#[test]
fn json_mode_prints_each_event_verbatim() {
    let mut sink = start(&["--json", "--resource", "secrets"]);
    assert_eq!(post(&sink.addr, LIST), "HTTP/1.1 200 OK");
    let mut line = String::new();
    sink.stdout.read_line(&mut line).expect("a line");
    assert!(
        line.starts_with(r#"{"level":"Metadata","auditID":"1""#),
        "{line}"
    );
    assert!(line.ends_with("\"code\":200}}\n"), "{line}");
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_audit-sink"))
        .args(["--listen", &addr])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim(),
        format!("audit-sink: cannot listen on {addr}: Address already in use (os error 98)")
    );
}

#[test]
fn serves_https_with_client_certificates() {
    let dir = certificates();
    let d = dir.path();
    let pem = |name: &str| d.join(name).display().to_string();
    let mut sink = start(&[
        "--tls-cert",
        &pem("good-server.pem"),
        "--tls-key",
        &pem("good-server.key"),
        "--client-ca",
        &pem("good-ca.pem"),
    ]);
    assert!(
        sink.banner.contains("https://127.0.0.1:"),
        "{}",
        sink.banner
    );
    let curl = |client: &[&str]| {
        Command::new("curl")
            .args(["--silent", "--max-time", "10", "--output", "/dev/null"])
            .args([
                "--write-out",
                "%{http_code}",
                "-H",
                "Content-Type: application/json",
            ])
            .args(["--data-binary", LIST, "--cacert", &pem("good-ca.pem")])
            .args(client)
            .arg(format!("https://{}/k8s-audit", sink.addr))
            .output()
            .expect("run curl")
    };
    assert!(
        !curl(&[]).status.success(),
        "served without a client certificate"
    );
    let with = curl(&[
        "--cert",
        &pem("good-client.pem"),
        "--key",
        &pem("good-client.key"),
    ]);
    assert_eq!(String::from_utf8_lossy(&with.stdout), "200");
    let mut line = String::new();
    sink.stdout.read_line(&mut line).expect("a line");
    assert_eq!(line, "ResponseComplete get secrets d/s alice 200\n");
}

#[test]
fn tls_options_are_checked_before_listening() {
    let dir = certificates();
    let d = dir.path();
    let pem = |name: &str| d.join(name).display().to_string();
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_audit-sink"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .expect("run");
        let stderr =
            String::from_utf8_lossy(&output.stderr).replace(&format!("{}/", d.display()), "DIR/");
        (
            output.status.code(),
            stderr.lines().next().unwrap_or_default().to_owned(),
        )
    };
    assert_eq!(
        run(&[
            "--tls-cert",
            &pem("good-server.pem"),
            "--tls-key",
            &pem("nope.key")
        ]),
        (
            Some(1),
            "audit-sink: cannot read DIR/nope.key: No such file or directory (os error 2)"
                .to_owned()
        )
    );
    assert_eq!(
        run(&["--tls-cert", &pem("good-server.key"), "--tls-key", &pem("good-server.key")]),
        (Some(1), "audit-sink: DIR/good-server.key: no certificate found; expected a PEM file with a \"-----BEGIN CERTIFICATE-----\" block".to_owned())
    );
    // clap's usage errors: a key without a certificate, a client CA without TLS.
    assert_eq!(run(&["--tls-key", &pem("good-server.key")]).0, Some(2));
    assert_eq!(run(&["--client-ca", &pem("good-ca.pem")]).0, Some(2));
}
