//! The receiver end to end over loopback HTTP: accepted bodies, rejected bodies, filters and
//! backpressure.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use audit_sink::{Collector, Config, Filter, Format, Level, Server, Stage, write_event};
use tokio::sync::mpsc;

/// One HTTP/1.1 request on its own connection; returns the status and body text.
fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let headers = format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    raw_request(addr, method, path, &headers, body)
}

/// A request with exactly these header lines (each ending in CRLF) besides Host and Connection.
fn raw_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the receiver");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("set timeout");
    let head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).expect("send head");
    // A receiver may answer 413 and close before reading everything; that is not a test failure.
    let _ = stream.write_all(body);
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let text = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim_end().to_owned())
        .unwrap_or_default();
    (status, text)
}

async fn post(addr: SocketAddr, path: &'static str, body: Vec<u8>) -> (u16, String) {
    tokio::task::spawn_blocking(move || request(addr, "POST", path, &body))
        .await
        .expect("request thread")
}

fn event_json(
    stage: &str,
    verb: &str,
    resource: &str,
    ns: &str,
    name: &str,
    user: &str,
    code: u16,
) -> String {
    format!(
        r#"{{"level":"Metadata","auditID":"id-{name}-{stage}","stage":"{stage}","requestURI":"/api/v1/namespaces/{ns}/{resource}","verb":"{verb}","user":{{"username":"{user}","groups":["system:masters"]}},"sourceIPs":["127.0.0.1"],"objectRef":{{"resource":"{resource}","namespace":"{ns}","name":"{name}","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":{code}}}}}"#
    )
}

fn event_list(items: &[String]) -> Vec<u8> {
    format!(
        r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{}]}}"#,
        items.join(",")
    )
    .into_bytes()
}

async fn collector_server(config: Config) -> (Server, Collector) {
    serve(config, Collector::new()).await
}

async fn serve(config: Config, collector: Collector) -> (Server, Collector) {
    let server = Server::bind(
        "127.0.0.1:0".parse().expect("addr"),
        config,
        collector.clone(),
    )
    .await
    .expect("bind");
    (server, collector)
}

fn lines(events: &[audit_sink::Event], format: Format) -> String {
    let mut out = Vec::new();
    for e in events {
        write_event(&mut out, e, format).expect("write to a Vec");
    }
    String::from_utf8(out).expect("utf-8 output")
}

#[tokio::test]
async fn line_format_for_both_paths_and_versions() {
    let (server, collector) = collector_server(Config::default()).await;
    let list = event_list(&[
        event_json("RequestReceived", "create", "configmaps", "default", "probe", "admin", 0).replace(r#","responseStatus":{"metadata":{},"code":0}"#, ""),
        event_json("ResponseComplete", "create", "configmaps", "default", "probe", "admin", 201),
        r#"{"level":"Metadata","auditID":"v","stage":"ResponseComplete","requestURI":"/version","verb":"get","user":{"username":"system:anonymous"},"responseStatus":{"code":200}}"#.to_owned(),
        r#"{"level":"RequestResponse","auditID":"n","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/x","verb":"delete","user":{"username":"evil user\nResponseComplete get secrets"},"objectRef":{"resource":"namespaces","name":"x"},"responseStatus":{"code":200}}"#.to_owned(),
    ]);
    assert_eq!(
        post(server.local_addr(), "/k8s_audit", list).await,
        (200, "ok".to_owned())
    );
    let single = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/v1beta1-event.json"
    ))
    .expect("fixture");
    assert_eq!(
        post(server.local_addr(), "/k8s-audit", single).await,
        (200, "ok".to_owned())
    );

    let events = collector.events();
    insta::assert_snapshot!(lines(&events, Format::Line), @r"
    RequestReceived create configmaps default/probe admin -
    ResponseComplete create configmaps default/probe admin 201
    ResponseComplete get /version - system:anonymous 200
    ResponseComplete delete namespaces x evil\u{20}user\u{a}ResponseComplete\u{20}get\u{20}secrets 200
    ResponseComplete get pods/log default/nginx minikube-user 200
    ");
    // JSON lines: one line per event, pretty input compacted, every field kept.
    let json = lines(&events, Format::Json);
    assert_eq!(json.lines().count(), events.len());
    let last: serde_json::Value =
        serde_json::from_str(json.lines().last().expect("a line")).expect("valid JSON");
    assert_eq!(last["sourceIPs"][0], "192.168.99.1");
    assert_eq!(last["apiVersion"], "audit.k8s.io/v1beta1");
    assert_eq!(server.stats().events, 5);
}

#[tokio::test]
async fn bad_requests_get_a_reason_and_the_server_keeps_serving() {
    let config = Config {
        max_body_bytes: 4096,
        ..Config::default()
    };
    let (server, collector) = collector_server(config).await;
    let addr = server.local_addr();
    let missing_stage = event_list(&[
        event_json("ResponseComplete", "get", "pods", "a", "b", "u", 200),
        "{\n\"level\":\"Metadata\",\"auditID\":\"x\",\"verb\":\"get\",\"requestURI\":\"/\"}"
            .to_owned(),
    ]);
    let cases: Vec<(&str, &str, &'static str, Vec<u8>)> = vec![
        ("empty body", "POST", "/k8s_audit", b"".to_vec()),
        ("not JSON", "POST", "/k8s_audit", b"hello".to_vec()),
        ("truncated", "POST", "/k8s_audit", b"{\"kind\":\"EventList\",\n\"items\":[".to_vec()),
        ("not UTF-8", "POST", "/k8s_audit", b"{\"kind\":\"\xff\"}".to_vec()),
        ("an array of numbers", "POST", "/k8s_audit", b"[1]".to_vec()),
        ("nested arrays", "POST", "/k8s_audit", b"[[]]".to_vec()),
        ("a bad event in an array", "POST", "/k8s_audit", b"[{\"kind\":\"EventList\",\"items\":[]},\n {\"kind\":\"Event\",\"level\":\"None\"}]".to_vec()),
        ("no kind", "POST", "/k8s_audit", br#"{"apiVersion":"audit.k8s.io/v1"}"#.to_vec()),
        ("wrong kind", "POST", "/k8s_audit", br#"{"kind":"Pod","apiVersion":"audit.k8s.io/v1"}"#.to_vec()),
        ("wrong version", "POST", "/k8s_audit", br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v2","items":[]}"#.to_vec()),
        ("kind not a string", "POST", "/k8s_audit", br#"{"kind": 0}"#.to_vec()),
        ("apiVersion not a string", "POST", "/k8s_audit", br#"{"kind":"EventList","apiVersion":1,"items":[]}"#.to_vec()),
        ("items not an array", "POST", "/k8s_audit", br#"{"kind":"EventList","items":{"a":1}}"#.to_vec()),
        ("item without stage", "POST", "/k8s_audit", missing_stage),
        ("unknown stage", "POST", "/k8s-audit", br#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"None","auditID":"x","stage":"Later","verb":"get","requestURI":"/"}"#.to_vec()),
        ("too large", "POST", "/k8s_audit", vec![b' '; 5000]),
        ("GET", "GET", "/k8s_audit", Vec::new()),
        ("wrong path", "POST", "/audit", b"{}".to_vec()),
    ];
    let mut report = String::new();
    for (what, method, path, body) in cases {
        let method = method.to_owned();
        let (status, text) =
            tokio::task::spawn_blocking(move || request(addr, &method, path, &body))
                .await
                .expect("thread");
        report.push_str(&format!("{what}: {status} {text}\n"));
    }
    insta::assert_snapshot!(report);
    assert!(
        collector.events().is_empty(),
        "nothing from a rejected body reaches the sink"
    );
    let good = event_list(&[event_json(
        "ResponseComplete",
        "get",
        "pods",
        "a",
        "b",
        "u",
        200,
    )]);
    assert_eq!(post(addr, "/k8s_audit", good).await.0, 200);
    assert_eq!(collector.events().len(), 1);
    assert_eq!(server.stats().rejected, 18);
}

#[tokio::test]
async fn filters_apply_before_the_sink() {
    let filter = Filter {
        resources: vec!["configmaps".into()],
        verbs: vec!["create".into()],
        users: vec![],
    };
    let (server, collector) = collector_server(Config {
        filter,
        ..Config::default()
    })
    .await;
    let list = event_list(&[
        event_json(
            "ResponseComplete",
            "create",
            "configmaps",
            "d",
            "keep",
            "u",
            201,
        ),
        event_json(
            "ResponseComplete",
            "delete",
            "configmaps",
            "d",
            "drop-verb",
            "u",
            200,
        ),
        event_json(
            "ResponseComplete",
            "create",
            "secrets",
            "d",
            "drop-resource",
            "u",
            201,
        ),
    ]);
    assert_eq!(post(server.local_addr(), "/k8s_audit", list).await.0, 200);
    let names: Vec<_> = collector
        .events()
        .iter()
        .map(|e| e.name().map(str::to_owned))
        .collect();
    assert_eq!(names, vec![Some("keep".to_owned())]);
    let stats = server.stats();
    assert_eq!((stats.events, stats.matched), (3, 1));
}

#[tokio::test]
async fn collector_waits_for_a_matching_event() {
    let (server, collector) = collector_server(Config::default()).await;
    let addr = server.local_addr();
    let waiter = tokio::spawn({
        let collector = collector.clone();
        async move {
            collector
                .wait_for(Duration::from_secs(10), |e| {
                    e.name() == Some("late") && e.stage == Stage::ResponseComplete
                })
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    post(
        addr,
        "/k8s_audit",
        event_list(&[event_json(
            "ResponseComplete",
            "create",
            "configmaps",
            "d",
            "other",
            "u",
            201,
        )]),
    )
    .await;
    post(
        addr,
        "/k8s_audit",
        event_list(&[event_json(
            "ResponseComplete",
            "create",
            "configmaps",
            "d",
            "late",
            "u",
            201,
        )]),
    )
    .await;
    let event = waiter.await.expect("task").expect("event arrives");
    assert_eq!(event.response_code, Some(201));
    let missing = collector
        .wait_for(Duration::from_millis(200), |e| e.name() == Some("never"))
        .await;
    assert_eq!(missing.expect_err("no such event").seen, 2);
}

#[tokio::test]
async fn a_keeping_collector_stores_only_what_it_waits_for() {
    let (server, collector) = serve(
        Config::default(),
        Collector::keeping(|e| e.name() == Some("probe")),
    )
    .await;
    let items: Vec<String> = ["a", "probe", "b", "c"]
        .iter()
        .map(|name| event_json("ResponseComplete", "get", "pods", "d", name, "u", 200))
        .collect();
    let (status, _) = post(server.local_addr(), "/k8s_audit", event_list(&items)).await;
    assert_eq!(status, 200);
    let kept = collector.events();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].name(), Some("probe"));
    assert_eq!(collector.received(), 4, "the others are counted");
}

#[tokio::test]
async fn a_full_queue_holds_the_response_back() {
    let (tx, mut rx) = mpsc::channel(1);
    let server = Server::bind("127.0.0.1:0".parse().expect("addr"), Config::default(), tx)
        .await
        .expect("bind");
    let items: Vec<String> = (0..3)
        .map(|i| {
            event_json(
                "ResponseComplete",
                "get",
                "pods",
                "d",
                &format!("p{i}"),
                "u",
                200,
            )
        })
        .collect();
    let pending = tokio::spawn(post(server.local_addr(), "/k8s_audit", event_list(&items)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !pending.is_finished(),
        "answered before the consumer took the events"
    );
    let mut names = Vec::new();
    for _ in 0..3 {
        let event = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("in time")
            .expect("event");
        names.push(event.name().unwrap_or_default().to_owned());
    }
    assert_eq!(names, ["p0", "p1", "p2"]);
    assert_eq!(pending.await.expect("task").0, 200);
}

#[tokio::test]
async fn a_stopped_consumer_gives_503() {
    let (tx, rx) = mpsc::channel(8);
    drop(rx);
    let server = Server::bind("127.0.0.1:0".parse().expect("addr"), Config::default(), tx)
        .await
        .expect("bind");
    let list = event_list(&[event_json(
        "ResponseComplete",
        "get",
        "pods",
        "d",
        "p",
        "u",
        200,
    )]);
    assert_eq!(post(server.local_addr(), "/k8s_audit", list).await.0, 503);
}

/// Bodies a real kube-apiserver v1.20.2 POSTed with the bundled Falco policy: a ConfigMap
/// create and delete, a `pods/log` get (404, with its ResponseStarted stage) and an anonymous
/// secrets list (403).
#[tokio::test]
async fn bodies_recorded_from_a_real_api_server() {
    let (server, collector) = collector_server(Config::default()).await;
    for name in ["eventlist-v1.20.2-a.json", "eventlist-v1.20.2-b.json"] {
        let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
        let body = std::fs::read(&path).expect("recorded body");
        assert_eq!(
            post(server.local_addr(), "/k8s_audit", body).await,
            (200, "ok".to_owned())
        );
    }
    insta::assert_snapshot!(lines(&collector.events(), Format::Line), @r"
    ResponseComplete create configmaps default/falco-probe admin 201
    ResponseComplete get pods/log default/nginx admin 404
    ResponseComplete list secrets kube-system/- system:anonymous 403
    ResponseStarted get pods/log default/nginx admin 404
    ResponseComplete delete configmaps default/falco-probe admin 200
    ");
    let create = &collector.events()[0];
    assert_eq!(create.level, Level::RequestResponse);
    assert_eq!(
        create.user.groups,
        ["system:masters", "system:authenticated"]
    );
}

/// Falco's own test events carry no apiVersion, and Falco reads them: so must its stand-in.
#[tokio::test]
async fn events_without_api_version_are_read_as_v1() {
    let (server, collector) = collector_server(Config::default()).await;
    let item = event_json(
        "ResponseComplete",
        "create",
        "configmaps",
        "default",
        "my-config",
        "minikube-user",
        201,
    );
    let single = format!(r#"{{"kind":"Event",{}"#, &item[1..]);
    let list = format!(r#"{{"kind":"EventList","items":[{item}]}}"#);
    for body in [single, list] {
        assert_eq!(
            post(server.local_addr(), "/k8s-audit", body.into_bytes()).await,
            (200, "ok".to_owned())
        );
    }
    let versions: Vec<_> = collector.events().iter().map(|e| e.api_version).collect();
    assert_eq!(versions, [audit_sink::ApiVersion::V1; 2]);
}

/// Every field of the line is one token, `-` when the event lacks it, whichever way it lacks it
/// (no key, an empty string, no enclosing object).
#[tokio::test]
async fn absent_fields_print_a_dash() {
    let (server, collector) = collector_server(Config::default()).await;
    let head = r#""level":"Metadata","stage":"ResponseComplete","auditID":"a""#;
    let list = event_list(&[
        // A list in a namespace: no name.
        format!(
            r#"{{{head},"verb":"list","requestURI":"/api/v1/namespaces/d/secrets","user":{{"username":"u"}},"objectRef":{{"resource":"secrets","namespace":"d"}},"responseStatus":{{"code":200}}}}"#
        ),
        // A cluster-scoped object: no namespace.
        format!(
            r#"{{{head},"verb":"get","requestURI":"/api/v1/nodes/n1","user":{{"username":"u"}},"objectRef":{{"resource":"nodes","name":"n1"}},"responseStatus":{{"code":200}}}}"#
        ),
        // No objectRef, no user, no responseStatus.
        format!(r#"{{{head},"verb":"get","requestURI":"/healthz"}}"#),
        // Empty strings, a user without a name, a status without a code.
        format!(
            r#"{{{head},"verb":"","requestURI":"/api/v1/pods","user":{{"groups":["g"]}},"objectRef":{{"resource":"pods","namespace":"","name":""}},"responseStatus":{{"metadata":{{}}}}}}"#
        ),
        format!(
            r#"{{{head},"verb":"get","requestURI":"/api/v1/namespaces/x","user":{{"username":""}},"objectRef":{{"resource":"","namespace":"","name":"x"}},"responseStatus":{{"code":200}}}}"#
        ),
    ]);
    assert_eq!(post(server.local_addr(), "/k8s_audit", list).await.0, 200);
    insta::assert_snapshot!(lines(&collector.events(), Format::Line), @r#"
    ResponseComplete list secrets d/- u 200
    ResponseComplete get nodes n1 u 200
    ResponseComplete get /healthz - - -
    ResponseComplete - pods - - -
    ResponseComplete get /api/v1/namespaces/x x - 200
    "#);
}

/// What Falco would not read is refused with the reason, before the body is read: a
/// compressed body, and a body that is not declared JSON.
#[tokio::test]
async fn encodings_and_media_types_that_falco_would_not_read() {
    let (server, collector) = collector_server(Config::default()).await;
    let addr = server.local_addr();
    let body = event_list(&[event_json(
        "ResponseComplete",
        "get",
        "pods",
        "a",
        "b",
        "u",
        200,
    )]);
    let gzip = [
        0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xab, 0xae, 0x05, 0x00,
    ];
    let json = "Content-Type: application/json\r\n";
    let cases: Vec<(&str, String, Vec<u8>)> = vec![
        (
            "gzip",
            format!("{json}Content-Encoding: gzip\r\n"),
            gzip.to_vec(),
        ),
        (
            "br after identity",
            format!("{json}Content-Encoding: identity, br\r\n"),
            body.clone(),
        ),
        (
            "identity",
            format!("{json}Content-Encoding: identity\r\n"),
            body.clone(),
        ),
        (
            "gzip transfer coding",
            format!("{json}Transfer-Encoding: gzip, chunked\r\n"),
            Vec::new(),
        ),
        ("no Content-Type", String::new(), body.clone()),
        (
            "form",
            "Content-Type: application/x-www-form-urlencoded\r\n".to_owned(),
            body.clone(),
        ),
        (
            "text",
            "Content-Type: text/plain\r\n".to_owned(),
            body.clone(),
        ),
        (
            "charset",
            "Content-Type: application/json; charset=utf-8\r\n".to_owned(),
            body.clone(),
        ),
        (
            "upper case",
            "Content-Type: Application/JSON\r\n".to_owned(),
            body.clone(),
        ),
    ];
    let mut report = String::new();
    for (what, headers, body) in cases {
        let (status, text) = tokio::task::spawn_blocking(move || {
            let headers = if headers.contains("Transfer-Encoding") {
                headers
            } else {
                format!("{headers}Content-Length: {}\r\n", body.len())
            };
            let body = if headers.contains("Transfer-Encoding") {
                b"3\r\nabc\r\n0\r\n\r\n".to_vec()
            } else {
                body
            };
            raw_request(addr, "POST", "/k8s_audit", &headers, &body)
        })
        .await
        .expect("thread");
        report.push_str(&format!("{what}: {status} {text}\n"));
    }
    insta::assert_snapshot!(report, @r#"
    gzip: 415 unsupported Content-Encoding "gzip": send the body uncompressed (identity), as the API server does
    br after identity: 415 unsupported Content-Encoding "br": send the body uncompressed (identity), as the API server does
    identity: 200 ok
    gzip transfer coding: 501 unsupported Transfer-Encoding "gzip": only chunked is accepted
    no Content-Type: 415 missing Content-Type: expected application/json, as the API server sends and Falco requires
    form: 415 unsupported Content-Type "application/x-www-form-urlencoded": expected application/json, as the API server sends and Falco requires
    text: 415 unsupported Content-Type "text/plain": expected application/json, as the API server sends and Falco requires
    charset: 200 ok
    upper case: 200 ok
    "#);
    assert_eq!(
        collector.events().len(),
        3,
        "identity, charset and upper case"
    );
}

/// Falco's k8saudit plugin also reads a JSON array of EventLists and Events.
#[tokio::test]
async fn arrays_of_lists_and_events_are_read_as_falco_reads_them() {
    let (server, collector) = collector_server(Config::default()).await;
    let addr = server.local_addr();
    let a = event_json(
        "ResponseComplete",
        "create",
        "configmaps",
        "d",
        "a",
        "u",
        201,
    );
    let b = event_json(
        "ResponseComplete",
        "delete",
        "configmaps",
        "d",
        "b",
        "u",
        200,
    );
    let single = format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1beta1",{}"#,
        &b[1..]
    );
    let body = format!(
        "[{}, {single}]",
        String::from_utf8(event_list(&[a])).expect("utf-8")
    );
    assert_eq!(
        post(addr, "/k8s-audit", body.into_bytes()).await,
        (200, "ok".to_owned())
    );
    assert_eq!(
        post(addr, "/k8s-audit", b" [ ]".to_vec()).await,
        (200, "ok".to_owned())
    );
    let names: Vec<_> = collector
        .events()
        .iter()
        .map(|e| (e.name().unwrap_or_default().to_owned(), e.api_version))
        .collect();
    assert_eq!(
        names,
        [
            ("a".to_owned(), audit_sink::ApiVersion::V1),
            ("b".to_owned(), audit_sink::ApiVersion::V1Beta1)
        ]
    );
}
