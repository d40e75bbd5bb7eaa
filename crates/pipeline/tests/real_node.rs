//! The static pipeline on a real node: the kubelet v1.20.2, containerd and runc run etcd and
//! kube-apiserver as static pods (`testkit::real_node`), and `k8s-audit` reaches the node
//! through an sshd whose sessions run inside it, with no `--root`: the manifest, the audit
//! directory and /var/log/pods are the node's own. Skipped, with the reason on stderr, where
//! the machine cannot run containers.

use std::process::Output;
use std::time::{Duration, Instant};

use testkit::real_node::RealNode;

fn k8s_audit(node: &RealNode, home: &std::path::Path, args: &[&str]) -> Output {
    node.k8s_audit(
        std::path::Path::new(env!("CARGO_BIN_EXE_k8s-audit")),
        home,
        args,
    )
    .output()
    .expect("run k8s-audit")
}

/// The API server's mirror pod once it is ready with a config hash.
fn ready(node: &RealNode) -> testkit::node::MirrorPod {
    node.wait_for(Duration::from_secs(60), |pod, ready| {
        ready && pod.config_hash.is_some()
    })
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn static_enable_then_disable_on_a_real_node() {
    let Some(node) = RealNode::start() else {
        return;
    };
    let up = node.bring_up();
    eprintln!(
        "real node: /readyz ok {:.1?} after the kubelet started; mirror pods after {:.1?}",
        up.ready, up.mirror_pods
    );
    let home = tempfile::tempdir().unwrap();
    let original = std::fs::read(node.apiserver_manifest()).unwrap();
    let before = ready(&node);
    assert!(before.is_mirror, "{before:?}");
    let (falco_url, events) = node.receiver();

    let started = Instant::now();
    let enabled = k8s_audit(
        &node,
        home.path(),
        &[
            "enable",
            "static",
            "--falco-url",
            &falco_url,
            "--timeout",
            "120",
        ],
    );
    assert_ok(&enabled);
    eprintln!("real node: enable took {:.1?}", started.elapsed());
    let text = String::from_utf8_lossy(&enabled.stdout);
    assert!(text.contains("✓ wait"), "{text}");
    let after = node.wait_for(Duration::from_secs(30), |pod, ready| {
        ready && pod.config_hash != before.config_hash
    });
    assert!(
        after
            .command
            .iter()
            .any(|f| f.starts_with("--audit-webhook-config-file=")),
        "the running API server carries the webhook flag: {after:?}"
    );
    assert!(
        after
            .command
            .iter()
            .any(|f| f.starts_with("--audit-log-path=")),
        "{after:?}"
    );
    // The real API server writes its audit log into the node's audit directory, which the
    // host sees under the node's state directory.
    let audit_log = node.node().host_path("/var/lib/k8s_audit/audit.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::metadata(&audit_log).is_ok_and(|m| m.len() > 0) {
        assert!(
            Instant::now() < deadline,
            "no audit events in {}",
            audit_log.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while events.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "the webhook never reached the receiver inside the node"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // verify: a probe ConfigMap's events show up in the node's audit.log, read through SSH.
    let verified = k8s_audit(
        &node,
        home.path(),
        &["verify", "--via", "node-log", "--timeout", "60"],
    );
    assert_ok(&verified);
    let text = String::from_utf8_lossy(&verified.stdout);
    assert!(text.contains("✓ NodeLog"), "{text}");
    let status = k8s_audit(&node, home.path(), &["status"]);
    assert_ok(&status);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("audit      static mode"), "{text}");
    assert!(text.contains("runs with 4 audit flag(s)"), "{text}");

    let started = Instant::now();
    let disabled = k8s_audit(&node, home.path(), &["disable", "--timeout", "120"]);
    assert_ok(&disabled);
    eprintln!("real node: disable took {:.1?}", started.elapsed());
    assert_eq!(
        std::fs::read(node.apiserver_manifest()).unwrap(),
        original,
        "the original bytes are back"
    );
    let last = node.wait_for(Duration::from_secs(60), |pod, ready| {
        ready && pod.config_hash == before.config_hash
    });
    assert!(
        !last.command.iter().any(|f| f.starts_with("--audit-")),
        "{last:?}"
    );
}

/// Starts a ready node, runs `enable` with `args` (plus a Falco inside the node), which must
/// fail, and checks that the original manifest is back and ready; returns what it printed and
/// how long it took.
fn enable_rolled_back(label: &str, args: &[&str]) -> Option<(RealNode, String, Duration)> {
    let node = RealNode::start()?;
    node.bring_up();
    let home = tempfile::tempdir().unwrap();
    let original = std::fs::read(node.apiserver_manifest()).unwrap();
    let before = ready(&node);
    let (falco_url, _events) = node.receiver();
    let mut argv = vec!["enable"];
    argv.extend_from_slice(args);
    argv.extend(["--falco-url", &falco_url]);
    let started = Instant::now();
    let out = k8s_audit(&node, home.path(), &argv);
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("real node: {label}, rolled back in {took:.1?}\n{text}");
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("✗ wait"), "{text}");
    assert!(text.contains("the new API server exited"), "{text}");
    assert!(text.contains("✓ rollback"), "{text}");
    // The node's API server had not been restarted since it came up.
    assert!(!text.contains(RESTART_WARNING), "{text}");
    assert_eq!(std::fs::read(node.apiserver_manifest()).unwrap(), original);
    node.wait_for(Duration::from_secs(60), |pod, ready| {
        ready && pod.config_hash == before.config_hash
    });
    Some((node, text, took))
}

/// What the preflight says when the kubelet restarted the API server in the last 10 minutes.
const RESTART_WARNING: &str = "the kubelet restarted kube-apiserver-";

/// A flag the real API server refuses: the kubelet crash-loops it within a second, and enable
/// rolls back as soon as the pod's log says so, not after --timeout (180 s by default).
#[test]
fn a_failed_enable_is_rolled_back_within_seconds_on_a_real_node() {
    let Some((node, text, took)) = enable_rolled_back(
        "a refused flag",
        &["static", "--test-only-batch-max-wait", "5"],
    ) else {
        return;
    };
    assert!(text.contains("--audit-webhook-batch-max-wait"), "{text}");
    assert!(
        text.contains("crash back-off for the restored manifest is armed"),
        "{text}"
    );
    // The rollback restarted the original pod, so its crash back-off is armed: the next
    // enable's preflight says that a second failure would keep the API server down longer.
    // The kubelet reports the restart in the mirror pod's status within a few seconds.
    let home = tempfile::tempdir().unwrap();
    let (falco_url, _events) = node.receiver();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = k8s_audit(
            &node,
            home.path(),
            &["enable", "static", "--dry-run", "--falco-url", &falco_url],
        );
        assert_ok(&out);
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains(RESTART_WARNING) {
            assert!(text.contains("ago; for "), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "no back-off warning:\n{text}");
        std::thread::sleep(Duration::from_secs(1));
    }
    // Preflight and apply included; the API server's own downtime is within this. The death is
    // seen within a second; the restore then takes the kubelet 9 to 30 s here (it must finish
    // killing the crashed pod and, at times, wait out the old pod's termination). Without the
    // watch it was the whole --timeout, 180 s.
    assert!(took < Duration::from_secs(60), "{took:?}\n{text}");
}

/// --kube-version v1.16.15 on the real v1.20.2 server: the pipeline writes the dynamic flags,
/// the server refuses them at startup, and the pipeline rolls back as soon as the pod's log
/// says so.
#[test]
fn a_wrong_kube_version_is_rolled_back_fast_on_a_real_node() {
    let Some((_node, text, took)) = enable_rolled_back(
        "dynamic flags on 1.20",
        &["dynamic", "--kube-version", "v1.16.15"],
    ) else {
        return;
    };
    assert!(
        text.contains("unknown flag: --audit-dynamic-configuration"),
        "{text}"
    );
    assert!(took < Duration::from_secs(60), "{took:?}\n{text}");
}

/// On a kubeadm node whose cluster has kube-system/kubeadm-config, enable also puts the
/// settings there, so that `kubeadm upgrade` keeps them; status sees both agree; disable gives
/// the ClusterConfiguration back byte for byte.
#[test]
fn enable_is_made_durable_in_kubeadm_config_on_a_real_node() {
    let Some(node) = RealNode::start() else {
        return;
    };
    node.bring_up();
    ready(&node);
    let original = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/kubeadm-config/kubeadm-v1beta2.yaml"),
    )
    .unwrap();
    testkit::kubeadm_config::create(&node.kubeconfig(), &original);
    let home = tempfile::tempdir().unwrap();
    let (falco_url, _events) = node.receiver();
    let enabled = k8s_audit(
        &node,
        home.path(),
        &[
            "enable",
            "static",
            "--falco-url",
            &falco_url,
            "--timeout",
            "120",
        ],
    );
    assert_ok(&enabled);
    let text = String::from_utf8_lossy(&enabled.stdout);
    assert!(text.contains("✓ durable"), "{text}");
    let durable = testkit::kubeadm_config::read(&node.kubeconfig());
    assert!(
        durable.contains("audit-webhook-config-file: /var/lib/k8s_audit/webhook-config.yaml"),
        "{durable}"
    );
    assert!(durable.contains("name: k8s-audit"), "{durable}");

    let status = k8s_audit(&node, home.path(), &["status"]);
    assert_ok(&status);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("kubeadm-config carries the audit settings"),
        "{text}"
    );
    assert!(text.contains("they agree"), "{text}");

    let disabled = k8s_audit(&node, home.path(), &["disable", "--timeout", "120"]);
    assert_ok(&disabled);
    let text = String::from_utf8_lossy(&disabled.stdout);
    assert!(
        text.contains("kubeadm-config: restored byte for byte"),
        "{text}"
    );
    assert_eq!(testkit::kubeadm_config::read(&node.kubeconfig()), original);
}

/// A slow but healthy start must not be rolled back early: the API server is held to a small
/// CPU limit, so it takes long to get ready, without crashing or restarting; the enable waits
/// for it and succeeds.
#[test]
fn a_slow_but_healthy_start_is_waited_for_on_a_real_node() {
    let Some(node) = RealNode::start() else {
        return;
    };
    node.bring_up();
    let before = ready(&node);
    // A tight CFS quota: the server needs many seconds of CPU to start.
    let manifest = node.apiserver_manifest();
    let text = std::fs::read_to_string(&manifest).unwrap();
    let slow = text.replace(
        "    resources:\n      requests:\n        cpu: 250m\n",
        "    resources:\n      limits:\n        cpu: 150m\n      requests:\n        cpu: 150m\n",
    );
    assert_ne!(slow, text, "the manifest's resources are as expected");
    std::fs::write(&manifest, &slow).unwrap();
    let started = Instant::now();
    let limited = node.wait_for(Duration::from_secs(240), |pod, ready| {
        ready && pod.config_hash != before.config_hash
    });
    eprintln!(
        "real node: the CPU-limited server was ready {:.1?} after its manifest changed",
        started.elapsed()
    );
    assert!(limited.config_hash.is_some());

    let home = tempfile::tempdir().unwrap();
    let (falco_url, _events) = node.receiver();
    let out = k8s_audit(
        &node,
        home.path(),
        &[
            "enable",
            "static",
            "--falco-url",
            &falco_url,
            "--timeout",
            "240",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("real node: enable of a slow server\n{text}");
    assert_ok(&out);
    assert!(!text.contains("rollback"), "{text}");
    let waited = text
        .lines()
        .find_map(|l| l.strip_prefix("✓ wait")?.trim_start().strip_prefix('('))
        .and_then(|rest| rest.split_once("s)"))
        .and_then(|(secs, _)| secs.parse::<f64>().ok())
        .expect("a wait line");
    // Slower than the 4.6-5.1 s a manifest edit takes without the limit, and no rollback.
    assert!(waited > 8.0, "the start was not slow ({waited} s): {text}");
}
