//! The `audit-sink` binary: arguments, output formats and filters, end to end.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdout, Command, Stdio};

struct Sink {
    child: Child,
    stdout: BufReader<ChildStdout>,
    addr: String,
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
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no address in {banner:?}"))
        .to_owned();
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    Sink {
        child,
        stdout,
        addr,
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
