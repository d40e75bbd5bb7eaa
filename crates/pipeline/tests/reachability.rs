//! The reachability probe: Falco is tried from the node before anything is written. Every test
//! here runs inside a network namespace of its own (`testkit::netns::run_isolated`), where only
//! `lo` exists: a ClusterIP such as 10.96.0.50 is unroutable there, so the failure is immediate
//! and no packet can leave the machine. The receiver is a real audit-sink on 127.0.0.1.

use std::path::Path;
use std::process::{Command, Output};

use audit_sink::{Collector, Config, Server};
use pipeline::falco_url::FalcoUrl;
use pipeline::node::Node;
use pipeline::reachability::{self, Answer, Verdict};

const CLUSTER_IP: &str = "http://10.96.0.50:9765/k8s-audit";
const MANIFEST: &str = "/etc/kubernetes/manifests/kube-apiserver.yaml";

/// A real audit-sink on a free loopback port, standing in for Falco's NodePort.
fn sink() -> (tokio::runtime::Runtime, Server) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime
        .block_on(Server::bind(
            "127.0.0.1:0".parse().unwrap(),
            Config::default(),
            Collector::new(),
        ))
        .unwrap();
    (runtime, server)
}

fn sandbox() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let manifest = root.path().join(MANIFEST.trim_start_matches('/'));
    std::fs::create_dir_all(manifest.parent().unwrap()).unwrap();
    std::fs::write(
        &manifest,
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../fixtures/manifests/minikube-v1.28.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    root
}

/// A PATH with the node's usual tools but neither curl nor wget, so that the probe falls back
/// to bash's /dev/tcp.
fn path_without_http_clients() -> tempfile::TempDir {
    let bin = tempfile::tempdir().unwrap();
    for tool in [
        "sh", "bash", "timeout", "sed", "cat", "wc", "mkdir", "rm", "find", "date", "grep",
        "dirname", "head", "tr", "mktemp", "kill", "printf", "id", "chmod", "chown", "mv", "ln",
        "dd", "true", "sleep",
    ] {
        for dir in ["/usr/bin", "/bin"] {
            let from = Path::new(dir).join(tool);
            if from.exists() {
                std::os::unix::fs::symlink(&from, bin.path().join(tool)).unwrap();
                break;
            }
        }
    }
    bin
}

fn probe_from(root: &Path, candidates: &[FalcoUrl]) -> Vec<reachability::Probed> {
    let node = Node::local(Some(root)).unwrap();
    let urls: Vec<String> = candidates.iter().map(|u| u.to_url()).collect();
    testkit::netns::assert_probe_allowed(&urls.iter().map(String::as_str).collect::<Vec<_>>());
    let (_, probed) = node
        .lock_and_read(
            "/etc/kubernetes/manifests/.k8s-audit.lock",
            &[MANIFEST],
            candidates,
            None,
        )
        .unwrap();
    probed
}

fn the_node_port_is_chosen_when_the_cluster_ip_does_not_answer(tool: &str) {
    let (_runtime, server) = sink();
    let root = sandbox();
    let node_port = FalcoUrl::parse(&server.url().replace("/k8s_audit", "/k8s-audit")).unwrap();
    let candidates = [FalcoUrl::parse(CLUSTER_IP).unwrap(), node_port.clone()];
    let probed = probe_from(root.path(), &candidates);
    assert_eq!(probed[0].tool, tool, "{probed:?}");
    assert!(matches!(&probed[0].answer, Answer::Failed(_)), "{probed:?}");
    assert_eq!(probed[1].answer, Answer::Accepted(Some(200)), "{probed:?}");
    assert!(matches!(reachability::verdict(&probed), Verdict::Reachable(p) if p.url == node_port));
    assert_eq!(server.stats().requests, 1, "one POST reached the sink");
}

#[test]
#[ignore = "run by the_node_port_is_chosen inside its own network namespace"]
fn inner_the_node_port_is_chosen_with_curl() {
    the_node_port_is_chosen_when_the_cluster_ip_does_not_answer("curl");
}

#[test]
#[ignore = "run by the_node_port_is_chosen inside its own network namespace"]
fn inner_the_node_port_is_chosen_without_curl_or_wget() {
    let bin = path_without_http_clients();
    // This process runs this one test alone (run_isolated), so changing PATH is safe here.
    unsafe { std::env::set_var("PATH", bin.path()) };
    the_node_port_is_chosen_when_the_cluster_ip_does_not_answer("bash");
}

#[test]
fn the_node_port_is_chosen_when_the_cluster_ip_does_not_answer_with_curl() {
    testkit::netns::run_isolated("inner_the_node_port_is_chosen_with_curl");
}

#[test]
fn the_node_port_is_chosen_when_the_cluster_ip_does_not_answer_without_curl_or_wget() {
    testkit::netns::run_isolated("inner_the_node_port_is_chosen_without_curl_or_wget");
}

fn enable(root: &Path, url: &str) -> Output {
    testkit::netns::assert_probe_allowed(&[url]);
    Command::new(env!("CARGO_BIN_EXE_k8s-audit"))
        .args(["enable", "local", "static", "--no-wait", "--falco-url", url])
        .arg("--root")
        .arg(root)
        .env_remove("KUBECONFIG")
        .output()
        .unwrap()
}

#[test]
#[ignore = "run by static_enable_refuses_an_unreachable_falco inside its own network namespace"]
fn inner_static_enable_refuses_an_unreachable_falco() {
    let root = sandbox();
    let before = std::fs::read(root.path().join(MANIFEST.trim_start_matches('/'))).unwrap();
    let out = enable(root.path(), CLUSTER_IP);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no Falco endpoint answered from the node"),
        "{err}"
    );
    assert!(err.contains("http://10.96.0.50:9765/k8s-audit: "), "{err}");
    assert!(err.contains("--skip-reachability"), "{err}");
    assert_eq!(
        std::fs::read(root.path().join(MANIFEST.trim_start_matches('/'))).unwrap(),
        before
    );
    assert!(!root.path().join("var/lib/k8s_audit").exists());

    let (_runtime, server) = sink();
    let ok = enable(root.path(), &server.url());
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(text.contains("reachable from the node: "), "{text}");
}

#[test]
fn static_enable_refuses_an_unreachable_falco() {
    testkit::netns::run_isolated("inner_static_enable_refuses_an_unreachable_falco");
}

#[test]
fn a_probe_of_a_cluster_ip_outside_a_namespace_of_our_own_is_refused() {
    if testkit::netns::isolated() {
        return;
    }
    let refused = std::panic::catch_unwind(|| testkit::netns::assert_probe_allowed(&[CLUSTER_IP]));
    assert!(refused.is_err());
    testkit::netns::assert_probe_allowed(&["http://127.0.0.1:30007/k8s-audit"]);
}

/// An https Falco is probed with the CA the webhook will carry: the right CA passes, another
/// CA makes the probe, and so the enable, refuse.
#[test]
#[ignore = "run by an_https_falco_is_probed_with_its_ca inside its own network namespace"]
fn inner_an_https_falco_is_probed_with_its_ca() {
    let pki = tempfile::tempdir().unwrap();
    let (ca, _) = testkit::pki::certificate(pki.path(), "ca", None, "");
    let (other_ca, _) = testkit::pki::certificate(pki.path(), "other", None, "");
    let (cert, key) = testkit::pki::certificate(
        pki.path(),
        "falco",
        Some("ca"),
        "subjectAltName=IP:127.0.0.1",
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = Config {
        tls: Some(audit_sink::TlsConfig::from_pem_files(&cert, &key, None).unwrap()),
        ..Config::default()
    };
    let server = runtime
        .block_on(Server::bind(
            "127.0.0.1:0".parse().unwrap(),
            config,
            Collector::new(),
        ))
        .unwrap();
    let url = server.url();
    assert!(url.starts_with("https://"), "{url}");
    let enable_with = |ca: &Path| {
        let root = sandbox();
        testkit::netns::assert_probe_allowed(&[&url]);
        let out = Command::new(env!("CARGO_BIN_EXE_k8s-audit"))
            .args([
                "enable",
                "local",
                "static",
                "--no-wait",
                "--falco-url",
                &url,
            ])
            .arg("--falco-ca-file")
            .arg(ca)
            .arg("--root")
            .arg(root.path())
            .env_remove("KUBECONFIG")
            .output()
            .unwrap();
        (root, out)
    };
    let (_root, ok) = enable_with(&ca);
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        text.contains("reachable from the node: https://127.0.0.1:"),
        "{text}"
    );
    let (root, refused) = enable_with(&other_ca);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no Falco endpoint answered from the node"),
        "{err}"
    );
    assert!(!root.path().join("var/lib/k8s_audit").exists());
}

#[test]
fn an_https_falco_is_probed_with_its_ca() {
    testkit::netns::run_isolated("inner_an_https_falco_is_probed_with_its_ca");
}
