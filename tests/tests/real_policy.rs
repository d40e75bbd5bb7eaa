//! The bundled default policy (`--policy-preset falco`) on the real kube-apiserver v1.20.2: the
//! server starts with it, and a Secret created through the API is audited at Metadata, in
//! audit.log and at the webhook, with its value in neither.
//!
//! Without the cached binary these tests fail, saying how to build it: CI builds it first.

mod real;

use std::time::Duration;

use audit_sink::{Collector, Config, Level, Server, Stage};
use testkit::apiserver::{ApiServer, exclusive};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_audited_at_metadata_without_their_values() {
    let _one_at_a_time = exclusive().await;
    let collector = Collector::new();
    let sink = Server::bind(
        "127.0.0.1:0".parse().expect("addr"),
        Config::default(),
        collector.clone(),
    )
    .await
    .expect("bind audit-sink");
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = dir.path().join("audit-policy.yaml");
    std::fs::write(
        &policy,
        real::render_fixture(
            "crates/pipeline/assets/audit-policy.yaml.in",
            &[("AUDIT_API_VERSION", "audit.k8s.io/v1")],
        ),
    )
    .expect("write policy");
    let webhook = dir.path().join("webhook-config.yaml");
    std::fs::write(
        &webhook,
        real::render_fixture(
            "crates/pipeline/assets/webhook-config.yaml.in",
            &[("FALCO_URL", &sink.url())],
        ),
    )
    .expect("write webhook config");
    let log = dir.path().join("audit.log");
    let server = ApiServer::start(&[
        format!("--audit-policy-file={}", policy.display()),
        format!("--audit-log-path={}", log.display()),
        format!("--audit-webhook-config-file={}", webhook.display()),
        "--audit-webhook-batch-max-wait=1s".to_owned(),
    ])
    .await
    .unwrap();
    let client = server.plane().client().await.unwrap();

    let name = real::unique_name("secret");
    // A value no other request carries, so finding it anywhere means the policy leaked it.
    let value = format!("value-of-{name}");
    let answer = real::call(
        &client,
        http::Method::POST,
        "/api/v1/namespaces/default/secrets",
        Some(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name}, "stringData": {"password": value},
        })),
    )
    .await;
    // The value as the server stores and returns it.
    let encoded = answer["data"]["password"]
        .as_str()
        .expect("the created Secret's data")
        .to_string();
    let created = collector
        .wait_for(Duration::from_secs(30), |e| {
            e.name() == Some(name.as_str()) && e.verb == "create"
        })
        .await
        .unwrap_or_else(|e| panic!("{e}; kube-apiserver log:\n{}", server.plane().log_tail(20)));
    assert_eq!(created.level, Level::Metadata);
    assert_eq!(created.stage, Stage::ResponseComplete);
    assert_eq!(created.resource().as_deref(), Some("secrets"));
    for event in collector.events() {
        let raw = event.raw_json();
        assert!(
            !raw.contains(&value) && !raw.contains(&encoded),
            "the webhook received the Secret's value: {raw}"
        );
    }

    // The log backend writes synchronously; the event is there by now.
    let text = std::fs::read_to_string(&log).expect("audit.log");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&name) && l.contains("\"verb\":\"create\""))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].contains("\"level\":\"Metadata\""), "{}", lines[0]);
    assert!(
        !text.contains(&value) && !text.contains(&encoded),
        "audit.log holds the Secret's value"
    );
}
