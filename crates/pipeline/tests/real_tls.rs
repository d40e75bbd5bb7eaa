//! The webhook kubeconfig that `--falco-ca-file`, `--falco-client-cert` and `--falco-client-key`
//! produce, read by the real kube-apiserver v1.20.2: it delivers to an audit-sink that serves
//! TLS with a CA of the test's own and requires that CA's client certificates. With another
//! CA in the kubeconfig nothing is delivered, and the server's log says why in a line that
//! `verify` explains. Everything listens on 127.0.0.1.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use audit_sink::{Collector, Config, Server, TlsConfig};
use pipeline::templates::{self, FalcoTls, FalcoUrl};
use testkit::apiserver::{ApiServer, exclusive};
use testkit::pki::certificate;

/// The API server's flags for a webhook kubeconfig made by the pipeline's own template.
fn flags(dir: &Path, url: &str, tls: FalcoTls) -> Vec<String> {
    let url = FalcoUrl::parse(url)
        .unwrap()
        .with_tls(Some(Arc::new(tls)))
        .unwrap();
    let webhook = dir.join("webhook-config.yaml");
    std::fs::write(&webhook, templates::webhook_config(&url).unwrap()).unwrap();
    let policy = dir.join("audit-policy.yaml");
    std::fs::write(&policy, templates::audit_policy(None).unwrap()).unwrap();
    vec![
        format!("--audit-policy-file={}", policy.display()),
        format!("--audit-webhook-config-file={}", webhook.display()),
        "--audit-webhook-batch-max-wait=1s".to_owned(),
        // A failed delivery is logged after the retries: keep them short.
        "--audit-webhook-initial-backoff=50ms".to_owned(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_delivers_over_tls_with_the_rendered_kubeconfig() {
    let _one_at_a_time = exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ca, _) = certificate(d, "ca", None, "");
    let (server_pem, server_key) =
        certificate(d, "sink", Some("ca"), "subjectAltName=IP:127.0.0.1");
    let (client_pem, client_key) =
        certificate(d, "apiserver", Some("ca"), "extendedKeyUsage=clientAuth");
    let (other_ca, _) = certificate(d, "other-ca", None, "");

    let collector = Collector::new();
    let sink = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        Config {
            tls: Some(TlsConfig::from_pem_files(&server_pem, &server_key, Some(&ca)).unwrap()),
            ..Config::default()
        },
        collector.clone(),
    )
    .await
    .unwrap();
    assert!(
        sink.url().starts_with("https://127.0.0.1:"),
        "{}",
        sink.url()
    );

    // The test's CA and its client certificate: events arrive (the server audits its own
    // requests; none need to be made).
    let tls = FalcoTls::load(Some(&ca), Some(&client_pem), Some(&client_key))
        .unwrap()
        .unwrap();
    let sub = d.join("good");
    std::fs::create_dir(&sub).unwrap();
    let server = ApiServer::start(&flags(&sub, &sink.url(), tls))
        .await
        .unwrap();
    collector
        .wait_for(Duration::from_secs(30), |_| true)
        .await
        .unwrap_or_else(|e| panic!("{e}; kube-apiserver log:\n{}", server.plane().log_tail(20)));
    drop(server);

    // Another CA: the server refuses the sink's certificate, delivers nothing, and logs an
    // error that verify explains as TLS.
    let received = collector.events().len();
    let tls = FalcoTls::load(Some(&other_ca), Some(&client_pem), Some(&client_key))
        .unwrap()
        .unwrap();
    let sub = d.join("wrong-ca");
    std::fs::create_dir(&sub).unwrap();
    let server = ApiServer::start(&flags(&sub, &sink.url(), tls))
        .await
        .unwrap();
    let mut errors = Vec::new();
    for _ in 0..60 {
        let log = std::fs::read_to_string(server.plane().log_path()).unwrap();
        errors = pipeline::verify::webhook_errors(&log);
        if !errors.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (line, cause) = errors
        .first()
        .expect("a webhook error in the API server's log");
    assert!(line.contains("x509"), "{line}");
    assert!(cause.starts_with("TLS failed"), "{cause}");
    assert_eq!(
        collector.events().len(),
        received,
        "delivered despite the wrong CA"
    );
}
