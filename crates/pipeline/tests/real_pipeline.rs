//! The static pipeline against the real kube-apiserver v1.20.2 (`cargo xtask apiserver build`),
//! driven by the kubelet stand-in from a sandbox node's manifest, reached through a real sshd:
//! enable with a real readiness wait, verify with real audit events, a forced rollback, disable,
//! and the dynamic modes refused on 1.20.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod common;

use common::{assert_ok, stdout};
use testkit::apiserver::ControlPlane;
use testkit::kubelet::{Kubelet, KubeletOptions, KubeletState, manifest_path};
use testkit::sshd::Sshd;

const NODE: &str = "sandbox-node";

/// One real API server at a time: each needs ~340 MB and most of a core while starting.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

struct RealNode {
    kubelet: Kubelet,
    sshd: Sshd,
    root: tempfile::TempDir,
    home: tempfile::TempDir,
    original: String,
}

impl RealNode {
    fn start() -> RealNode {
        let root = tempfile::tempdir().unwrap();
        let manifest = manifest_path(root.path());
        std::fs::create_dir_all(manifest.parent().unwrap()).unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/manifests/minikube-v1.28.yaml");
        // The same minikube (kubeadm-made) manifest, naming the version the real binary is.
        let original = std::fs::read_to_string(fixture)
            .unwrap()
            .replace("kube-apiserver:v1.28.3", "kube-apiserver:v1.20.2");
        std::fs::write(&manifest, &original).unwrap();
        // Where a kops node keeps the API server's log, so a rollback can show its last lines.
        std::fs::create_dir_all(root.path().join("var/log")).unwrap();
        let plane = ControlPlane::start().unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink(
            plane.log_path(),
            root.path().join("var/log/kube-apiserver.log"),
        )
        .unwrap();
        let options = KubeletOptions {
            root: root.path().to_path_buf(),
            manifest,
            node_name: NODE.into(),
        };
        let kubelet = Kubelet::start(plane, options).unwrap_or_else(|e| panic!("{e}"));
        let node = RealNode {
            kubelet,
            sshd: Sshd::start(),
            root,
            home: tempfile::tempdir().unwrap(),
            original,
        };
        node.wait_for(Duration::from_secs(90), |s| {
            s.ready && s.mirror_hash.is_some()
        });
        node
    }

    fn wait_for(&self, timeout: Duration, done: impl Fn(&KubeletState) -> bool) -> KubeletState {
        let started = Instant::now();
        loop {
            let state = self.kubelet.state();
            if done(&state) {
                return state;
            }
            assert!(
                started.elapsed() < timeout,
                "kubelet state: {state:?}\n{}",
                self.kubelet.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn manifest(&self) -> String {
        std::fs::read_to_string(manifest_path(self.root.path())).unwrap()
    }

    fn xtask(&self, command: &str, mode: Option<&str>, extra: &[&str]) -> Output {
        common::ssh_command(
            &self.sshd,
            self.root.path(),
            self.home.path(),
            command,
            mode,
        )
        .args(["--node", NODE])
        .arg("--kubeconfig")
        .arg(self.kubelet.plane().kubeconfig())
        .args(extra)
        .output()
        .unwrap()
    }

    fn audit_log(&self) -> PathBuf {
        self.root.path().join("var/lib/k8s_audit/audit.log")
    }
}

fn free_port() -> u16 {
    testkit::ports::server_port(&[std::net::Ipv4Addr::LOCALHOST], &[]).unwrap()
}

#[test]
fn static_enable_verify_disable_on_a_real_api_server() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let node = RealNode::start();
    let before = node.kubelet.state();
    let sink = format!("127.0.0.1:{}", free_port());
    let falco_url = format!("http://{sink}/k8s_audit");

    let enabled = node.xtask(
        "enable",
        Some("static"),
        &["--falco-url", &falco_url, "--timeout", "120"],
    );
    assert_ok(&enabled);
    let text = stdout(&enabled);
    assert!(text.contains("✓ wait"), "{text}");
    assert!(text.contains("kube-apiserver-sandbox-node ready"), "{text}");
    let after = node.kubelet.state();
    assert_ne!(after.mirror_hash, before.mirror_hash);
    assert!(
        after
            .flags
            .iter()
            .any(|f| f.starts_with("--audit-webhook-config-file=")),
        "{after:?}"
    );
    assert!(
        after
            .flags
            .contains(&"--audit-webhook-batch-max-wait=5s".to_string()),
        "{after:?}"
    );

    let verified = node.xtask(
        "verify",
        None,
        &[
            "--via",
            "sink,node-log",
            "--sink-listen",
            &sink,
            "--timeout",
            "60",
        ],
    );
    assert_ok(&verified);
    let text = stdout(&verified);
    assert!(text.contains("✓ Sink:"), "{text}");
    assert!(text.contains("✓ NodeLog:"), "{text}");
    let probe = text
        .lines()
        .find_map(|l| l.strip_prefix("created and deleted ConfigMap default/"))
        .expect("verify names its probe")
        .to_string();
    // The real events in the node's audit log: the bundled policy records configmaps with
    // RequestResponse and omits RequestReceived.
    let log = std::fs::read_to_string(node.audit_log()).unwrap();
    let events: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.contains(&probe))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let verbs: Vec<&str> = events.iter().map(|e| e["verb"].as_str().unwrap()).collect();
    assert_eq!(verbs, ["create", "delete"], "{events:#?}");
    for event in &events {
        assert_eq!(event["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(event["kind"], "Event");
        assert_eq!(event["stage"], "ResponseComplete");
        assert_eq!(event["level"], "RequestResponse");
        assert_eq!(event["user"]["username"], "admin");
        assert_eq!(event["objectRef"]["resource"], "configmaps");
        assert_eq!(event["objectRef"]["namespace"], "default");
        assert_eq!(event["objectRef"]["name"], probe.as_str());
    }
    assert_eq!(events[0]["responseStatus"]["code"], 201);
    assert_eq!(events[0]["requestObject"]["data"]["probe"], "audit");
    assert_eq!(events[1]["responseStatus"]["code"], 200);

    let disabled = node.xtask("disable", None, &["--timeout", "120"]);
    assert_ok(&disabled);
    assert_eq!(node.manifest(), node.original, "back to the original bytes");
    let last = node.wait_for(Duration::from_secs(30), |s| s.ready);
    assert!(last.flags.is_empty(), "{last:?}");
}

#[test]
fn a_bad_flag_value_is_rolled_back_on_a_real_api_server() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let node = RealNode::start();
    let before = node.kubelet.state();
    // No unit: the real 1.20 API server exits at startup ("time: missing unit in duration").
    let out = node.xtask(
        "enable",
        Some("static"),
        &[
            "--falco-url",
            "http://127.0.0.1:9/k8s_audit",
            "--test-only-batch-max-wait",
            "5",
            "--timeout",
            "40",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("✗ wait"), "{text}");
    assert!(text.contains("✓ rollback"), "{text}");
    assert!(
        text.contains("missing unit in duration"),
        "the API server's own log is shown:\n{text}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("enable failed and was rolled back"));
    assert_eq!(node.manifest(), node.original);
    let state = node.wait_for(Duration::from_secs(30), |s| s.ready);
    assert!(state.flags.is_empty(), "{state:?}");
    assert!(
        state.crash_restarts > 0,
        "the bad flag really crashed it: {state:?}"
    );
    assert_eq!(
        state.mirror_hash, before.mirror_hash,
        "the mirror pod is the original one again"
    );
}

#[test]
fn dynamic_modes_are_refused_on_1_20_before_anything_is_written() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let node = RealNode::start();
    let before = node.kubelet.state();
    for mode in ["dynamic", "dynamic+log"] {
        let out = node.xtask(
            "enable",
            Some(mode),
            &["--falco-url", "http://127.0.0.1:9/k8s_audit"],
        );
        assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
        assert!(stdout(&out).contains("✗ preflight"), "{}", stdout(&out));
        assert_eq!(node.manifest(), node.original);
        assert!(!node.root.path().join("var/lib/k8s_audit").exists());
    }
    assert_eq!(
        node.kubelet.state().starts,
        before.starts,
        "the API server was never restarted"
    );
}
