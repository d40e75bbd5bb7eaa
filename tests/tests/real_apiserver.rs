//! Flags proven against the real kube-apiserver v1.20.2 (`cargo xtask apiserver build`): the
//! static audit flags deliver events, and the flags the old scripts got wrong stop it at startup.
//!
//! Without the cached binary these tests fail, saying how to build it: CI builds it first.

mod real;

use std::time::Duration;

use audit_sink::{Collector, Config, Level, Server, Stage};
use testkit::apiserver::{ApiServer, Failure, exclusive};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_flags_send_events_to_the_webhook_and_the_log() {
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
    let (policy, webhook) = real::write_audit_files(dir.path(), &sink.url());
    let log = dir.path().join("audit.log");
    let server = ApiServer::start(&[
        format!("--audit-policy-file={}", policy.display()),
        format!("--audit-log-path={}", log.display()),
        format!("--audit-webhook-config-file={}", webhook.display()),
        "--audit-webhook-batch-max-wait=5s".to_owned(),
        // The form patch-apiserver writes when it merges into an empty list flag: the server
        // skips the empty item.
        "--runtime-config=,v1=true".to_owned(),
        "--feature-gates=,APIListChunking=true".to_owned(),
    ])
    .await
    .unwrap();
    let client = server.plane().client().await.unwrap();

    let name = real::unique_name("probe");
    let configmap = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name}, "data": {"probe": "k8s-audit-tools"},
    });
    real::call(
        &client,
        http::Method::POST,
        "/api/v1/namespaces/default/configmaps",
        Some(configmap),
    )
    .await;
    let created = collector
        .wait_for(Duration::from_secs(30), |e| {
            e.name() == Some(name.as_str()) && e.verb == "create"
        })
        .await
        .unwrap_or_else(|e| panic!("{e}; kube-apiserver log:\n{}", server.plane().log_tail(20)));
    real::call(
        &client,
        http::Method::DELETE,
        &format!("/api/v1/namespaces/default/configmaps/{name}"),
        None,
    )
    .await;
    let deleted = collector
        .wait_for(Duration::from_secs(30), |e| {
            e.name() == Some(name.as_str()) && e.verb == "delete"
        })
        .await
        .expect("delete event at audit-sink");

    // The bundled Falco policy: configmaps outside kube-system at RequestResponse, and no
    // RequestReceived stage.
    assert_eq!(created.stage, Stage::ResponseComplete);
    assert_eq!(created.level, Level::RequestResponse);
    assert_eq!(created.resource().as_deref(), Some("configmaps"));
    assert_eq!(created.namespace(), Some("default"));
    assert_eq!(created.user.username, "admin");
    assert!(
        created.user.groups.iter().any(|g| g == "system:masters"),
        "{:?}",
        created.user
    );
    assert_eq!(created.response_code, Some(201));
    let raw: serde_json::Value = serde_json::from_str(created.raw_json()).expect("event JSON");
    assert_eq!(
        raw["requestObject"]["data"]["probe"], "k8s-audit-tools",
        "RequestResponse carries the body"
    );
    assert_eq!(raw["responseObject"]["metadata"]["name"], name.as_str());
    assert_eq!(
        (deleted.stage, deleted.response_code),
        (Stage::ResponseComplete, Some(200))
    );
    let events = collector.events();
    assert!(
        !events.iter().any(|e| e.stage == Stage::RequestReceived),
        "omitStages: [RequestReceived] is honoured: {:?}",
        events
            .iter()
            .map(|e| (e.stage, e.verb.clone(), e.resource()))
            .collect::<Vec<_>>()
    );
    assert!(
        !events.iter().any(|e| e.request_uri == "/version"),
        "rule 6 drops /version probes"
    );

    // The log backend wrote the very same events (same auditID), one JSON Event per line.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let in_log = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let found: Vec<audit_sink::Event> = text
            .lines()
            .filter(|l| l.contains(name.as_str()))
            .map(|l| {
                audit_sink::decode(l.as_bytes())
                    .expect("each audit.log line is an Event")
                    .remove(0)
            })
            .collect();
        if found.len() >= 2 || std::time::Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ids: Vec<&str> = in_log.iter().map(|e| e.audit_id.as_str()).collect();
    assert!(
        ids.contains(&created.audit_id.as_str()),
        "create event {} not in audit.log: {ids:?}",
        created.audit_id
    );
    assert!(
        ids.contains(&deleted.audit_id.as_str()),
        "delete event {} not in audit.log: {ids:?}",
        deleted.audit_id
    );
    assert!(
        sink.stats().rejected == 0,
        "audit-sink rejected a batch from the real server"
    );
}

async fn expect_failure(extra: &[String]) -> Failure {
    let _one_at_a_time = exclusive().await;
    let failure = ApiServer::start_expecting_failure(extra, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        failure.status.code(),
        Some(1),
        "exit status; log:\n{}",
        failure.log
    );
    failure
}

#[tokio::test]
async fn dynamic_auditing_feature_gate_is_refused() {
    let failure = expect_failure(&["--feature-gates=DynamicAuditing=true".to_owned()]).await;
    assert!(
        failure
            .log
            .contains("unrecognized feature gate: DynamicAuditing"),
        "{}",
        failure.log
    );
}

#[tokio::test]
async fn audit_dynamic_configuration_flag_is_refused() {
    let failure = expect_failure(&["--audit-dynamic-configuration".to_owned()]).await;
    assert!(
        failure
            .log
            .contains("unknown flag: --audit-dynamic-configuration"),
        "{}",
        failure.log
    );
}

#[tokio::test]
async fn a_missing_policy_file_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("not-there/audit-policy.yaml");
    let failure = expect_failure(&[
        format!("--audit-policy-file={}", missing.display()),
        format!(
            "--audit-log-path={}",
            dir.path().join("audit.log").display()
        ),
    ])
    .await;
    assert!(
        failure.log.contains(&missing.display().to_string()),
        "{}",
        failure.log
    );
    assert!(
        failure.log.contains("no such file or directory"),
        "{}",
        failure.log
    );
}

#[tokio::test]
async fn a_batch_max_wait_without_unit_is_refused() {
    let failure = expect_failure(&["--audit-webhook-batch-max-wait=5".to_owned()]).await;
    assert!(
        failure.log.contains("missing unit in duration"),
        "{}",
        failure.log
    );
}
