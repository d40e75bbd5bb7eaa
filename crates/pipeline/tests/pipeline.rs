//! The pipelines end to end through a real OpenSSH sshd on 127.0.0.1, on a sandbox node
//! (`--root`), with recorded API responses standing in for the cluster where one is needed.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

use common::{assert_ok, stdout};
use patch_apiserver::{Mode, PatchOptions};
use testkit::replay::{ReplayServer, Reply};
use testkit::sshd::Sshd;

const FALCO_URL: &str = "http://10.96.0.10:8765/k8s_audit";
const AUDIT_DIR: &str = "var/lib/k8s_audit";

/// A node: the loopback sshd plus a sandbox directory standing in for its `/`.
struct TestNode {
    sshd: Sshd,
    root: tempfile::TempDir,
    home: tempfile::TempDir,
    manifest: &'static str,
}

impl TestNode {
    fn with_manifest(fixture: &str, manifest: &'static str) -> TestNode {
        let node = TestNode {
            sshd: Sshd::start(),
            root: tempfile::tempdir().unwrap(),
            home: tempfile::tempdir().unwrap(),
            manifest,
        };
        let path = node.path(manifest);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, fixture_bytes(fixture)).unwrap();
        node
    }

    fn path(&self, node_path: &str) -> PathBuf {
        self.root.path().join(node_path.trim_start_matches('/'))
    }

    fn manifest_bytes(&self) -> Vec<u8> {
        std::fs::read(self.path(self.manifest)).unwrap()
    }

    /// `cargo xtask enable <variant> static` on this node's sandbox root, with its known_hosts, a
    /// clean HOME and no kubeconfig or agent; how to reach the node is up to the caller.
    fn enable_variant(&self, variant: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_k8s-audit"));
        cmd.args(["enable", variant, "static", "--user", "root"])
            .args(["--falco-url", FALCO_URL, "--no-wait", "--skip-reachability"])
            .arg("--known-hosts")
            .arg(self.sshd.known_hosts_file())
            .arg("--root")
            .arg(self.root.path())
            .env("HOME", self.home.path())
            .env_remove("KUBECONFIG")
            .env_remove("SSH_AUTH_SOCK");
        cmd
    }

    /// `cargo xtask <command> ssh [mode] --host ... <extra>` with a clean HOME, so neither the
    /// user's kubeconfig nor their ssh config leaks in.
    fn xtask(&self, command: &str, mode: Option<&str>, extra: &[&str]) -> Output {
        common::ssh_command(
            &self.sshd,
            self.root.path(),
            self.home.path(),
            command,
            mode,
        )
        .args(["--manifest", self.manifest])
        .args(extra)
        .output()
        .unwrap()
    }

    /// Masks what changes from run to run: timings, temp paths, ports, timestamps.
    fn settings(&self) -> insta::Settings {
        let mut settings = insta::Settings::clone_current();
        settings.add_filter(&regex_escape(&self.root.path().to_string_lossy()), "[ROOT]");
        settings.add_filter(r"\(\d+\.\d\ds\)", "(T)");
        settings.add_filter(r"after \d+\.\ds", "after T");
        settings.add_filter(r"\d{8}T\d{6}(\.\d{9})?Z", "[TIMESTAMP]");
        settings.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]");
        settings
    }
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let special = ".+*?()|[]{}^$\\".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/manifests")
            .join(name),
    )
    .unwrap()
}

fn expected_patch(fixture: &str, mode: Mode) -> String {
    let original = String::from_utf8(fixture_bytes(fixture)).unwrap();
    let patched = patch_apiserver::patch(&original, &PatchOptions::new(mode)).unwrap();
    assert!(patched.changed);
    patched.text
}

fn mode_and_owner(path: &Path) -> (u32, u32) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.permissions().mode() & 0o777, meta.uid())
}

fn backups(node: &TestNode) -> Vec<PathBuf> {
    let dir = node.path(&format!("{AUDIT_DIR}/backup"));
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    found.sort();
    found
}

fn version_1_28() -> Reply {
    Reply::json(
        200,
        r#"{"major":"1","minor":"28","gitVersion":"v1.28.3","gitCommit":"a8a1abc25cad87333840cd7d54be2efaf31a3177","gitTreeState":"clean","buildDate":"2023-10-18T11:33:18Z","goVersion":"go1.20.10","compiler":"gc","platform":"linux/amd64"}"#,
    )
}

/// The kube-system pod list with one mirror pod of the API server; `flags` is appended to its
/// command as JSON (`,"--flag=value"...`).
/// What preflight asks a cluster for its control-plane nodes, added after a test's own routes
/// (the first route that matches answers): one kube-apiserver mirror pod and no labelled Node.
fn control_plane(cluster: &ReplayServer) {
    cluster.route(
        "GET",
        "/api/v1/nodes",
        [Reply::json(
            200,
            r#"{"kind":"NodeList","apiVersion":"v1","metadata":{},"items":[]}"#,
        )],
    );
    cluster.route(
        "GET",
        "/api/v1/namespaces/kube-system/pods",
        [mirror_pods("0ld", "")],
    );
    cluster.route(
        "GET",
        "/api/v1/namespaces/kube-system/pods/kube-apiserver-node1",
        [mirror_pod("0ld", "")],
    );
}

/// The kube-apiserver mirror pod of node1, with this config hash and these extra flags.
fn mirror_pod_json(hash: &str, flags: &str) -> String {
    format!(
        r#"{{"kind":"Pod","apiVersion":"v1","metadata":{{"name":"kube-apiserver-node1","namespace":"kube-system","labels":{{"component":"kube-apiserver"}},"annotations":{{"kubernetes.io/config.hash":"{hash}","kubernetes.io/config.mirror":"{hash}"}}}},"spec":{{"nodeName":"node1","containers":[{{"name":"kube-apiserver","command":["kube-apiserver","--secure-port=8443"{flags}]}}]}}}}"#
    )
}

fn mirror_pod(hash: &str, flags: &str) -> Reply {
    Reply::json(200, mirror_pod_json(hash, flags))
}

fn mirror_pods(hash: &str, flags: &str) -> Reply {
    Reply::json(
        200,
        format!(
            r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{}},"items":[{}]}}"#,
            mirror_pod_json(hash, flags)
        ),
    )
}

const MINIKUBE: (&str, &str) = (
    "minikube-v1.28.yaml",
    "/etc/kubernetes/manifests/kube-apiserver.yaml",
);
const KOPS: (&str, &str) = (
    "kops-v1.18.manifest",
    "/etc/kubernetes/manifests/kube-apiserver.manifest",
);

fn static_cycle(fixture: &str, manifest: &'static str) {
    let node = TestNode::with_manifest(fixture, manifest);
    let original = fixture_bytes(fixture);
    let falco = ["--falco-url", FALCO_URL, "--no-wait"];

    let out = node.xtask("enable", Some("static"), &falco);
    assert_ok(&out);
    node.settings()
        .bind(|| insta::assert_snapshot!(format!("enable_static_{fixture}"), stdout(&out)));
    assert_eq!(
        String::from_utf8(node.manifest_bytes()).unwrap(),
        expected_patch(fixture, Mode::Static)
    );
    assert_eq!(mode_and_owner(&node.path(AUDIT_DIR)), (0o700, 0));
    for file in ["audit-policy.yaml", "webhook-config.yaml"] {
        assert_eq!(
            mode_and_owner(&node.path(&format!("{AUDIT_DIR}/{file}"))),
            (0o600, 0),
            "{file}"
        );
    }
    let webhook =
        std::fs::read_to_string(node.path(&format!("{AUDIT_DIR}/webhook-config.yaml"))).unwrap();
    assert!(
        webhook.contains(&format!("server: \"{FALCO_URL}\"\n")),
        "{webhook}"
    );
    let policy =
        std::fs::read_to_string(node.path(&format!("{AUDIT_DIR}/audit-policy.yaml"))).unwrap();
    assert!(policy.contains("apiVersion: audit.k8s.io/v1\n"));
    let backup = backups(&node);
    assert_eq!(backup.len(), 1, "{backup:?}");
    assert_eq!(
        std::fs::read(&backup[0]).unwrap(),
        original,
        "the backup holds the original bytes"
    );
    assert_eq!(mode_and_owner(&backup[0]), (0o600, 0));
    // Nothing but the manifest in the manifests directory: the kubelet would start any other file.
    let manifests_dir = node.path(manifest).parent().unwrap().to_path_buf();
    assert_eq!(std::fs::read_dir(&manifests_dir).unwrap().count(), 1);

    let again = node.xtask("enable", Some("static"), &falco);
    assert_ok(&again);
    assert!(
        stdout(&again).contains("nothing to do"),
        "{}",
        stdout(&again)
    );
    assert_eq!(
        String::from_utf8(node.manifest_bytes()).unwrap(),
        expected_patch(fixture, Mode::Static)
    );

    let off = node.xtask("disable", None, &["--no-wait"]);
    assert_ok(&off);
    assert!(
        stdout(&off).contains("restoring the backup"),
        "{}",
        stdout(&off)
    );
    assert_eq!(
        node.manifest_bytes(),
        original,
        "disable brings back the original bytes"
    );
    assert!(!node.path(&format!("{AUDIT_DIR}/enabled")).exists());
    assert!(
        node.path(&format!("{AUDIT_DIR}/webhook-config.yaml"))
            .exists(),
        "kept without --purge"
    );

    let reenabled = node.xtask("enable", Some("static"), &falco);
    assert_ok(&reenabled);
    assert_eq!(
        String::from_utf8(node.manifest_bytes()).unwrap(),
        expected_patch(fixture, Mode::Static)
    );

    let purged = node.xtask("disable", None, &["--no-wait", "--purge"]);
    assert_ok(&purged);
    assert_eq!(node.manifest_bytes(), original);
    assert!(
        !node
            .path(&format!("{AUDIT_DIR}/webhook-config.yaml"))
            .exists()
    );
    assert!(
        !node
            .path(&format!("{AUDIT_DIR}/audit-policy.yaml"))
            .exists()
    );
    assert!(!backups(&node).is_empty(), "--purge keeps the backups");
}

#[test]
fn static_minikube_enable_disable_reenable() {
    static_cycle(MINIKUBE.0, MINIKUBE.1);
}

#[test]
fn static_kops_enable_disable_reenable() {
    static_cycle(KOPS.0, KOPS.1);
}

/// A cluster for the dynamic modes: a v1.18 server that serves auditregistration.
fn dynamic_cluster() -> ReplayServer {
    let server = ReplayServer::start();
    server.route(
        "GET",
        "/version",
        [Reply::json(200, r#"{"major":"1","minor":"18","gitVersion":"v1.18.20","gitCommit":"1f3e19b7beb1cc0110255668c4238ed63dadb7ad","gitTreeState":"clean","buildDate":"2021-06-16T12:51:17Z","goVersion":"go1.13.15","compiler":"gc","platform":"linux/amd64"}"#)],
    );
    server.route(
        "GET",
        "/apis/auditregistration.k8s.io/v1alpha1",
        [Reply::json(200, r#"{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"auditregistration.k8s.io/v1alpha1","resources":[{"name":"auditsinks","singularName":"","namespaced":false,"kind":"AuditSink","verbs":["create","delete","get","list","update"]}]}"#)],
    );
    server.route(
        "GET",
        "/apis/auditregistration.k8s.io/v1alpha1/auditsinks/falco-audit-sink",
        [Reply::json(404, r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"auditsinks.auditregistration.k8s.io \"falco-audit-sink\" not found","reason":"NotFound","details":{"name":"falco-audit-sink","group":"auditregistration.k8s.io","kind":"auditsinks"},"code":404}"#)],
    );
    let sink = r#"{"apiVersion":"auditregistration.k8s.io/v1alpha1","kind":"AuditSink","metadata":{"name":"falco-audit-sink","resourceVersion":"1044"},"spec":{}}"#;
    server.route(
        "POST",
        "/apis/auditregistration.k8s.io/v1alpha1/auditsinks",
        [Reply::json(201, sink)],
    );
    server.route(
        "DELETE",
        "/apis/auditregistration.k8s.io/v1alpha1/auditsinks/falco-audit-sink",
        [Reply::json(
            200,
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","code":200}"#,
        )],
    );
    server
}

fn dynamic_cycle(fixture: &str, manifest: &'static str, mode: Mode) {
    let node = TestNode::with_manifest(fixture, manifest);
    let cluster = dynamic_cluster();
    control_plane(&cluster);
    let kubeconfig = cluster.write_kubeconfig(node.home.path());
    let kube = ["--kubeconfig", kubeconfig.to_str().unwrap()];
    let original = fixture_bytes(fixture);
    let mode_name = mode.to_string();

    let mut args = vec!["--falco-url", FALCO_URL, "--no-wait"];
    args.extend(kube);
    let out = node.xtask("enable", Some(&mode_name), &args);
    assert_ok(&out);
    assert_eq!(
        String::from_utf8(node.manifest_bytes()).unwrap(),
        expected_patch(fixture, mode)
    );
    let post = cluster
        .seen()
        .into_iter()
        .find(|s| s.method == "POST")
        .expect("the AuditSink was created");
    let body: serde_json::Value = serde_json::from_str(&post.body).unwrap();
    assert_eq!(body["spec"]["webhook"]["clientConfig"]["url"], FALCO_URL);
    assert_eq!(body["spec"]["policy"]["level"], "RequestResponse");
    let policy = node.path(&format!("{AUDIT_DIR}/audit-policy.yaml"));
    // dynamic+log needs the policy its flag names (the old script forgot to copy it).
    assert_eq!(policy.exists(), mode == Mode::DynamicLog);
    if mode == Mode::DynamicLog {
        assert_eq!(mode_and_owner(&policy), (0o600, 0));
    }
    assert!(
        !node
            .path(&format!("{AUDIT_DIR}/webhook-config.yaml"))
            .exists()
    );
    assert_eq!(mode_and_owner(&node.path(AUDIT_DIR)), (0o700, 0));
    let backup = backups(&node);
    assert_eq!(backup.len(), 1, "{backup:?}");
    assert_eq!(std::fs::read(&backup[0]).unwrap(), original);
    assert_eq!(mode_and_owner(&backup[0]), (0o600, 0));

    let again = node.xtask("enable", Some(&mode_name), &args);
    assert_ok(&again);
    assert!(
        stdout(&again).contains("nothing to do"),
        "{}",
        stdout(&again)
    );

    let mut off_args = vec!["--no-wait"];
    off_args.extend(kube);
    let off = node.xtask("disable", None, &off_args);
    assert_ok(&off);
    assert_eq!(node.manifest_bytes(), original);
    assert!(
        cluster.seen().iter().any(|s| s.method == "DELETE"),
        "the AuditSink was deleted"
    );

    let posts = |c: &ReplayServer| c.seen().iter().filter(|s| s.method == "POST").count();
    let before = posts(&cluster);
    let reenabled = node.xtask("enable", Some(&mode_name), &args);
    assert_ok(&reenabled);
    assert_eq!(
        String::from_utf8(node.manifest_bytes()).unwrap(),
        expected_patch(fixture, mode)
    );
    assert_eq!(
        posts(&cluster),
        before + 1,
        "the AuditSink was created again"
    );
}

#[test]
fn dynamic_minikube_like() {
    dynamic_cycle(
        "minikube-v1.18.yaml",
        "/etc/kubernetes/manifests/kube-apiserver.yaml",
        Mode::Dynamic,
    );
}

#[test]
fn dynamic_log_minikube_like() {
    dynamic_cycle(
        "minikube-v1.18.yaml",
        "/etc/kubernetes/manifests/kube-apiserver.yaml",
        Mode::DynamicLog,
    );
}

#[test]
fn dynamic_kops() {
    dynamic_cycle(KOPS.0, KOPS.1, Mode::Dynamic);
}

#[test]
fn dynamic_log_kops() {
    dynamic_cycle(KOPS.0, KOPS.1, Mode::DynamicLog);
}

#[test]
fn dynamic_on_1_28_is_refused_before_anything_is_written() {
    let node = TestNode::with_manifest(MINIKUBE.0, MINIKUBE.1);
    let cluster = dynamic_cluster();
    control_plane(&cluster);
    let kubeconfig = cluster.write_kubeconfig(node.home.path());
    for mode in ["dynamic", "dynamic+log"] {
        let out = node.xtask(
            "enable",
            Some(mode),
            &[
                "--falco-url",
                FALCO_URL,
                "--no-wait",
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
            ],
        );
        assert!(!out.status.success(), "{}", stdout(&out));
        assert!(stdout(&out).contains("✗ preflight"), "{}", stdout(&out));
        assert_eq!(node.manifest_bytes(), fixture_bytes(MINIKUBE.0));
        assert!(!node.path(AUDIT_DIR).exists(), "nothing was written");
    }
    assert!(
        cluster.seen().iter().all(|s| s.method == "GET"),
        "the cluster was only read"
    );
}

#[test]
fn dry_run_shows_files_and_diff_and_changes_nothing() {
    let node = TestNode::with_manifest(MINIKUBE.0, MINIKUBE.1);
    let out = node.xtask(
        "enable",
        Some("static"),
        &["--falco-url", FALCO_URL, "--no-wait", "--dry-run"],
    );
    assert_ok(&out);
    node.settings()
        .bind(|| insta::assert_snapshot!(stdout(&out)));
    assert_eq!(node.manifest_bytes(), fixture_bytes(MINIKUBE.0));
    assert!(!node.path(AUDIT_DIR).exists());
}

#[test]
fn kops_without_a_host_stops_before_connecting() {
    let out = Command::new(env!("CARGO_BIN_EXE_k8s-audit"))
        .args(["enable", "kops", "static"])
        .env_remove("APISERVER_HOST")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("you must specify the kops control-plane nodes: pass --host for each"),
        "{stderr}"
    );
}

/// kops HA clusters have three masters behind APISERVER_HOST, which is usually the load
/// balancer: without a kubeconfig it is refused alone, and a --host per node is needed. The
/// kops defaults (user, key, kops' manifest name `kube-apiserver.manifest`) apply to each host;
/// the user and key are overridden for the loopback sshd.
#[test]
fn kops_without_a_kubeconfig_needs_a_host_per_node() {
    let node = TestNode::with_manifest(KOPS.0, KOPS.1);
    let out = node
        .enable_variant("kops")
        .env("APISERVER_HOST", "127.0.0.1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("kops without a kubeconfig needs every control-plane node as --host")
            && stderr.contains("APISERVER_HOST=127.0.0.1 is usually the load balancer"),
        "{stderr}"
    );
    assert_eq!(node.manifest_bytes(), fixture_bytes(KOPS.0));

    let out = node
        .enable_variant("kops")
        .args(["--host", "127.0.0.1", "--port"])
        .arg(node.sshd.port().to_string())
        .arg("-i")
        .arg(node.sshd.client_key())
        .env("APISERVER_HOST", "api.example.invalid")
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(
        String::from_utf8(node.manifest_bytes()).unwrap(),
        expected_patch(KOPS.0, Mode::Static)
    );
    assert!(
        stdout(&out).contains("kops"),
        "the kops manager warning: {}",
        stdout(&out)
    );
}

/// A cluster whose kubelet never restarts the API server: the mirror pod keeps its old hash and
/// its old command, so the wait must time out and the rollback must restore the original.
#[test]
fn rollback_when_the_api_server_does_not_come_back() {
    let node = TestNode::with_manifest(MINIKUBE.0, MINIKUBE.1);
    let cluster = ReplayServer::start();
    cluster.route("GET", "/version", [version_1_28()]);
    cluster.route(
        "GET",
        "/readyz",
        [
            Reply::Drop,
            Reply::json(500, "[-]etcd failed: reason withheld\nreadyz check failed"),
            Reply::json(200, "ok"),
        ],
    );
    cluster.route(
        "GET",
        "/api/v1/namespaces/kube-system/pods",
        [mirror_pods("0ld", "")],
    );
    control_plane(&cluster);
    let kubeconfig = cluster.write_kubeconfig(node.home.path());

    let out = node.xtask(
        "enable",
        Some("static"),
        &[
            "--falco-url",
            FALCO_URL,
            "--timeout",
            "3",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("✗ wait"), "{text}");
    assert!(text.contains("still has the old config hash"), "{text}");
    assert!(text.contains("✓ rollback"), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("enable failed and was rolled back"));
    assert_eq!(
        node.manifest_bytes(),
        fixture_bytes(MINIKUBE.0),
        "the original manifest is back"
    );
}

/// The old script's line matching, written from its description, as the golden reference:
/// after `- kube-apiserver` it adds flag lines, after `volumeMounts:` a mount and after
/// `volumes:` a hostPath volume, both named `data`.
fn old_script_flags_and_mount(original: &str, mode: Mode) -> (Vec<String>, bool) {
    let mut flags = Vec::new();
    if mode != Mode::Dynamic {
        flags.push("--audit-log-path=/var/lib/k8s_audit/audit.log".to_string());
        flags.push("--audit-policy-file=/var/lib/k8s_audit/audit-policy.yaml".to_string());
    }
    if mode == Mode::Static {
        flags
            .push("--audit-webhook-config-file=/var/lib/k8s_audit/webhook-config.yaml".to_string());
        flags.push("--audit-webhook-batch-max-wait=5s".to_string());
    }
    if mode != Mode::Static {
        flags.push("--audit-dynamic-configuration".to_string());
        flags.push("--feature-gates=DynamicAuditing=true".to_string());
        flags.push("--runtime-config=auditregistration.k8s.io/v1alpha1=true".to_string());
    }
    let mounts = mode != Mode::Dynamic && original.contains("volumeMounts:");
    (flags, mounts)
}

#[test]
fn same_flags_and_mount_as_the_old_script() {
    for (fixture, mode) in [
        ("minikube-v1.18.yaml", Mode::Static),
        ("minikube-v1.18.yaml", Mode::Dynamic),
        ("minikube-v1.18.yaml", Mode::DynamicLog),
    ] {
        let original = String::from_utf8(fixture_bytes(fixture)).unwrap();
        let ours = patch_apiserver::inspect(&expected_patch(fixture, mode)).unwrap();
        let before = patch_apiserver::inspect(&original).unwrap();
        let added: Vec<String> = ours
            .apiserver_args
            .iter()
            .filter(|a| !before.apiserver_args.contains(a))
            .cloned()
            .collect();
        let (flags, mounted) = old_script_flags_and_mount(&original, mode);
        assert_eq!(added, flags, "{fixture} {mode}");
        let audit_mount = ours
            .host_mounts
            .iter()
            .find(|m| m.host_path.trim_end_matches('/') == "/var/lib/k8s_audit");
        assert_eq!(audit_mount.is_some(), mounted, "{fixture} {mode}");
        if let Some(mount) = audit_mount {
            // Deliberate improvement: not the collision-prone name `data`.
            assert_ne!(mount.volume, "data");
            assert_eq!(mount.mount_path.trim_end_matches('/'), "/var/lib/k8s_audit");
        }
    }
}

/// The kubelet restarts the API server with our flags: the first look at the mirror pod (in the
/// preflight) shows the old hash, every later one the new hash and the audit flags.
#[test]
fn wait_succeeds_once_the_kubelet_restarted_with_our_flags() {
    let node = TestNode::with_manifest(MINIKUBE.0, MINIKUBE.1);
    let cluster = ReplayServer::start();
    cluster.route("GET", "/version", [version_1_28()]);
    cluster.route(
        "GET",
        "/readyz",
        [Reply::Drop, Reply::Drop, Reply::json(200, "ok")],
    );
    let flags = r#","--audit-log-path=/var/lib/k8s_audit/audit.log","--audit-policy-file=/var/lib/k8s_audit/audit-policy.yaml","--audit-webhook-config-file=/var/lib/k8s_audit/webhook-config.yaml","--audit-webhook-batch-max-wait=5s""#;
    // Preflight reads the old hash, then the wait polls until the new one shows.
    cluster.route(
        "GET",
        "/api/v1/namespaces/kube-system/pods/kube-apiserver-node1",
        [mirror_pod("0ld", ""), mirror_pod("n3w", flags)],
    );
    control_plane(&cluster);
    let kubeconfig = cluster.write_kubeconfig(node.home.path());
    let out = node.xtask(
        "enable",
        Some("static"),
        &[
            "--falco-url",
            FALCO_URL,
            "--timeout",
            "20",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
    );
    assert_ok(&out);
    let text = stdout(&out);
    assert!(text.contains("✓ wait"), "{text}");
    assert!(
        text.contains("kube-apiserver-node1 ready, config hash n3w"),
        "{text}"
    );
    let readyz_calls = cluster
        .seen()
        .iter()
        .filter(|s| s.path == "/readyz")
        .count();
    assert!(
        readyz_calls >= 3,
        "the refused connections were retried ({readyz_calls} calls)"
    );
}

/// A manifest edited by hand after enable no longer matches patch(backup): disable must not
/// throw the edit away with the backup, and reverts our additions instead.
#[test]
fn disable_keeps_later_edits_by_reverting_instead_of_restoring() {
    let node = TestNode::with_manifest(MINIKUBE.0, MINIKUBE.1);
    assert_ok(&node.xtask(
        "enable",
        Some("static"),
        &["--falco-url", FALCO_URL, "--no-wait"],
    ));
    let mut edited = node.manifest_bytes();
    edited.extend_from_slice(b"# edited by hand after enable\n");
    std::fs::write(node.path(MINIKUBE.1), &edited).unwrap();

    let out = node.xtask("disable", None, &["--no-wait"]);
    assert_ok(&out);
    assert!(
        stdout(&out).contains("removing our audit flags"),
        "{}",
        stdout(&out)
    );
    let mut expected = fixture_bytes(MINIKUBE.0);
    expected.extend_from_slice(b"# edited by hand after enable\n");
    assert_eq!(
        String::from_utf8(node.manifest_bytes()).unwrap(),
        String::from_utf8(expected).unwrap()
    );
}

#[test]
fn status_reports_the_node() {
    let node = TestNode::with_manifest(MINIKUBE.0, MINIKUBE.1);
    let before = node.xtask("status", None, &[]);
    assert_ok(&before);
    assert!(
        stdout(&before).contains("audit      not enabled"),
        "{}",
        stdout(&before)
    );
    assert_ok(&node.xtask(
        "enable",
        Some("static"),
        &["--falco-url", FALCO_URL, "--no-wait"],
    ));
    let after = node.xtask("status", None, &[]);
    assert_ok(&after);
    node.settings()
        .bind(|| insta::assert_snapshot!(stdout(&after)));
}

/// Without --falco-url, the webhook points at the Falco Service's ClusterIP and the port of the
/// Falco flavour it exposes, and the step log says which and why.
#[test]
fn falco_endpoint_comes_from_the_service() {
    let node = TestNode::with_manifest(MINIKUBE.0, MINIKUBE.1);
    let cluster = ReplayServer::start();
    cluster.route("GET", "/version", [version_1_28()]);
    cluster.route(
        "GET",
        "/api/v1/namespaces/falco/services/falco",
        [Reply::json(200, r#"{"kind":"Service","apiVersion":"v1","metadata":{"name":"falco","namespace":"falco"},"spec":{"type":"ClusterIP","clusterIP":"10.0.0.77","ports":[{"name":"k8saudit","protocol":"TCP","port":9765,"targetPort":9765}]}}"#)],
    );
    control_plane(&cluster);
    let kubeconfig = cluster.write_kubeconfig(node.home.path());
    let out = node.xtask(
        "enable",
        Some("static"),
        &[
            "--no-wait",
            "--falco-service",
            "falco",
            "--falco-namespace",
            "falco",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
    );
    assert_ok(&out);
    let text = stdout(&out);
    assert!(text.contains("· Falco endpoint http://10.0.0.77:9765/k8s-audit (Service falco/falco: port 9765 is the k8saudit plugin of Falco >= 0.32)"), "{text}");
    let webhook =
        std::fs::read_to_string(node.path(&format!("{AUDIT_DIR}/webhook-config.yaml"))).unwrap();
    assert!(
        webhook.contains("server: \"http://10.0.0.77:9765/k8s-audit\"\n"),
        "{webhook}"
    );
}

#[test]
fn minikube_variant_without_minikube_is_a_clear_error() {
    let empty_path = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_k8s-audit"))
        .args([
            "enable",
            "minikube",
            "static",
            "--falco-url",
            FALCO_URL,
            "--no-wait",
            "--skip-reachability",
        ])
        .env("PATH", empty_path.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the minikube variant needs the minikube CLI on PATH"),
        "{stderr}"
    );
}

/// The minikube variant's own logic, with stand-ins for the minikube and docker CLIs (there is
/// no minikube here): with the docker driver it connects to the port Docker forwards on
/// 127.0.0.1, with minikube's key, and the profile is the one asked for.
#[test]
fn minikube_variant_with_the_docker_driver_uses_the_forwarded_port() {
    let node = TestNode::with_manifest(MINIKUBE.0, MINIKUBE.1);
    let bin = tempfile::tempdir().unwrap();
    let calls = bin.path().join("calls");
    let stub = |name: &str, body: String| {
        let path = bin.path().join(name);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"{name} $*\" >> '{}'\n{body}",
                calls.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    // Two profiles: the other one's driver must not be taken for ours.
    let profiles = r#"{"invalid":[],"valid":[{"Name":"minikube","Config":{"Name":"minikube","Driver":"kvm2"}},{"Name":"dev","Config":{"Name":"dev","Driver":"docker"}}]}"#;
    stub(
        "minikube",
        format!(
            "case $1 in\n  version) echo 'minikube version: v1.32.0' ;;\n  ssh-key) echo '{}' ;;\n  profile) echo '{profiles}' ;;\n  ip) echo 192.168.49.2 ;;\n  *) exit 2 ;;\nesac\n",
            node.sshd.client_key().display()
        ),
    );
    stub(
        "docker",
        format!(
            "[ \"$*\" = 'port dev 22/tcp' ] || exit 2\necho '0.0.0.0:{0}'\necho '[::]:{0}'\n",
            node.sshd.port()
        ),
    );
    let out = node
        .enable_variant("minikube")
        .args(["-p", "dev"])
        .env("PATH", bin.path())
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(
        String::from_utf8(node.manifest_bytes()).unwrap(),
        expected_patch(MINIKUBE.0, Mode::Static)
    );
    let calls = std::fs::read_to_string(&calls).unwrap();
    assert!(calls.contains("minikube ssh-key -p dev\n"), "{calls}");
    assert!(calls.contains("docker port dev 22/tcp\n"), "{calls}");
    assert!(
        !calls.contains("minikube ip"),
        "the docker driver is reached through the forwarded port: {calls}"
    );

    // The kvm2 profile is reached at `minikube ip`, port 22 (here 127.0.0.1, where nothing
    // of ours listens, so the connection itself fails): no docker port lookup for it.
    std::fs::write(bin.path().join("calls"), "").unwrap();
    stub(
        "minikube",
        format!(
            "case $1 in\n  version) echo v1 ;;\n  ssh-key) echo '{}' ;;\n  profile) echo '{profiles}' ;;\n  ip) echo 127.0.0.1 ;;\n  *) exit 2 ;;\nesac\n",
            node.sshd.client_key().display()
        ),
    );
    let out = node
        .enable_variant("minikube")
        .env("PATH", bin.path())
        .output()
        .unwrap();
    let calls = std::fs::read_to_string(bin.path().join("calls")).unwrap();
    assert!(calls.contains("minikube ip -p minikube\n"), "{calls}");
    assert!(!calls.contains("docker"), "{calls}");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("127.0.0.1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A mode change, then disable: the second enable once backed up the already patched
/// manifest, and disable left four --audit-* flags in place while reporting success.
#[test]
fn a_mode_change_then_disable_restores_the_original_bytes() {
    let fixture = "minikube-v1.18.yaml";
    let node = TestNode::with_manifest(fixture, "/etc/kubernetes/manifests/kube-apiserver.yaml");
    let cluster = dynamic_cluster();
    control_plane(&cluster);
    let kubeconfig = cluster.write_kubeconfig(node.home.path());
    let kube = ["--kubeconfig", kubeconfig.to_str().unwrap()];
    let mut args = vec!["--falco-url", FALCO_URL, "--no-wait"];
    args.extend(kube);
    assert_ok(&node.xtask("enable", Some("static"), &args));
    let second = node.xtask("enable", Some("dynamic+log"), &args);
    assert_ok(&second);
    assert!(
        stdout(&second).contains("disable restores the original"),
        "{}",
        stdout(&second)
    );
    // Two backups, never one written over the other; the record keeps the first.
    assert_eq!(backups(&node).len(), 2);
    let record = std::fs::read_to_string(node.path(&format!("{AUDIT_DIR}/enabled"))).unwrap();
    assert_eq!(record.matches("\nenable=").count(), 2, "{record}");

    let mut off_args = vec!["--no-wait"];
    off_args.extend(kube);
    let off = node.xtask("disable", None, &off_args);
    assert_ok(&off);
    assert!(
        stdout(&off).contains("restoring the backup"),
        "{}",
        stdout(&off)
    );
    assert_eq!(node.manifest_bytes(), fixture_bytes(fixture));
    assert!(
        cluster.seen().iter().any(|s| s.method == "DELETE"),
        "the AuditSink of the dynamic+log enable was deleted"
    );
}

/// `--force` replaced the user's own --audit-policy-file; disable re-derived the patch without
/// --force, failed, and fell back to a revert that lost the user's flag.
#[test]
fn force_then_disable_gives_back_the_users_own_flag() {
    let fixture = "minikube-v1.28.yaml";
    let node = TestNode::with_manifest(fixture, "/etc/kubernetes/manifests/kube-apiserver.yaml");
    let users = String::from_utf8(fixture_bytes(fixture)).unwrap().replacen(
        "    - kube-apiserver\n",
        "    - kube-apiserver\n    - --audit-policy-file=/etc/kubernetes/audit/policy.yaml\n",
        1,
    );
    assert!(users.contains("/etc/kubernetes/audit/policy.yaml"));
    std::fs::write(node.path(node.manifest), &users).unwrap();
    let refused = node.xtask(
        "enable",
        Some("static"),
        &["--falco-url", FALCO_URL, "--no-wait"],
    );
    assert!(!refused.status.success(), "a conflict without --force");
    let forced = node.xtask(
        "enable",
        Some("static"),
        &["--falco-url", FALCO_URL, "--no-wait", "--force"],
    );
    assert_ok(&forced);
    assert!(
        !String::from_utf8(node.manifest_bytes())
            .unwrap()
            .contains("/etc/kubernetes/audit/policy.yaml")
    );
    let off = node.xtask("disable", None, &["--no-wait"]);
    assert_ok(&off);
    assert_eq!(String::from_utf8(node.manifest_bytes()).unwrap(), users);
}

/// A state record written by the first format (before the options were recorded) still
/// leads disable back to the original.
#[test]
fn disable_reads_a_state_record_of_the_first_format() {
    let fixture = "minikube-v1.28.yaml";
    let node = TestNode::with_manifest(fixture, "/etc/kubernetes/manifests/kube-apiserver.yaml");
    assert_ok(&node.xtask(
        "enable",
        Some("static"),
        &["--falco-url", FALCO_URL, "--no-wait"],
    ));
    let record_path = node.path(&format!("{AUDIT_DIR}/enabled"));
    let record = std::fs::read_to_string(&record_path).unwrap();
    let field = |key: &str| {
        record
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap()
            .to_string()
    };
    let old = format!(
        "# Written by `cargo xtask enable`; read by disable and status.\nmode=static\nmanifest={}\nbackup={}\nbatch-max-wait=5s\n",
        field("manifest="),
        field("backup=")
    );
    std::fs::write(&record_path, old).unwrap();
    let off = node.xtask("disable", None, &["--no-wait"]);
    assert_ok(&off);
    assert!(
        stdout(&off).contains("restoring the backup"),
        "{}",
        stdout(&off)
    );
    assert_eq!(node.manifest_bytes(), fixture_bytes(fixture));
}

/// `--audit-dir /var/log` chmodded the system directory to 0700 root:root, `/` mounted the
/// whole host into the pod, and the manifests directory received the webhook kubeconfig.
#[test]
fn system_and_manifest_directories_are_refused_as_the_audit_dir() {
    let fixture = "minikube-v1.28.yaml";
    let node = TestNode::with_manifest(fixture, "/etc/kubernetes/manifests/kube-apiserver.yaml");
    let log = node.path("/var/log");
    std::fs::create_dir_all(&log).unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o755)).unwrap();
    for dir in [
        "/var/log",
        "/",
        "/etc/kubernetes/manifests",
        "/etc/kubernetes",
        "/etc",
    ] {
        let out = node.xtask(
            "enable",
            Some("static"),
            &["--falco-url", FALCO_URL, "--no-wait", "--audit-dir", dir],
        );
        assert!(!out.status.success(), "{dir} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("--audit-dir {dir}:")), "{dir}: {err}");
        let purge = node.xtask(
            "disable",
            None,
            &["--no-wait", "--purge", "--audit-dir", dir],
        );
        assert!(!purge.status.success(), "disable --purge accepted {dir}");
    }
    assert_eq!(node.manifest_bytes(), fixture_bytes(fixture));
    assert_eq!(mode_and_owner(&log).0, 0o755);
}

/// An audit directory that exists is used as it is: enable never chmods or chowns what it
/// did not create.
#[test]
fn an_existing_audit_dir_keeps_its_mode_and_owner() {
    let fixture = "minikube-v1.28.yaml";
    let node = TestNode::with_manifest(fixture, "/etc/kubernetes/manifests/kube-apiserver.yaml");
    let dir = node.path("/srv/audit");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::chown(&dir, Some(1), Some(1)).unwrap();
    let out = node.xtask(
        "enable",
        Some("static"),
        &[
            "--falco-url",
            FALCO_URL,
            "--no-wait",
            "--audit-dir",
            "/srv/audit",
        ],
    );
    assert_ok(&out);
    assert_eq!(mode_and_owner(&dir), (0o750, 1));
    assert_eq!(
        mode_and_owner(&node.path("/srv/audit/webhook-config.yaml")),
        (0o600, 0)
    );
}

/// Two enables at once on one node: the second stops at once, says who holds the node, and
/// writes nothing. (Without the lock, one run's webhook config could win while the other
/// reported its own URL.)
#[test]
fn a_second_enable_is_refused_while_another_holds_the_node() {
    let node = TestNode::with_manifest(MINIKUBE.0, MINIKUBE.1);
    let lock = node.path("/etc/kubernetes/manifests/.k8s-audit.lock");
    std::fs::create_dir_all(&lock).unwrap();
    // A live holder: a process whose command line names the lock script, as a real one does.
    let mut holder = Command::new("sh")
        .args(["-c", "sleep 60", "k8s-audit-lock"])
        .spawn()
        .unwrap();
    std::fs::write(
        lock.join("holder"),
        format!("2026-12-01T10:00:00Z\n{}\nops-laptop\n", holder.id()),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = node.xtask(
        "enable",
        Some("static"),
        &["--falco-url", FALCO_URL, "--no-wait"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "another enable/disable holds 127.0.0.1 (sandbox root {}) since 2026-12-01T10:00:00Z (pid {} on the node, from ops-laptop)",
            node.root.path().display(),
            holder.id()
        )),
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(node.manifest_bytes(), fixture_bytes(MINIKUBE.0));
    assert!(!node.path(AUDIT_DIR).exists());

    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_ok(&node.xtask(
        "enable",
        Some("static"),
        &["--falco-url", FALCO_URL, "--no-wait"],
    ));
    assert!(!lock.exists(), "the run released the lock");
}

/// kill -9 of a run in the middle of its wait never leaves a stale lock: the holder on the
/// node sees its channel close and removes the lock.
#[test]
fn a_killed_run_leaves_no_lock_behind() {
    let node = TestNode::with_manifest(MINIKUBE.0, MINIKUBE.1);
    let cluster = ReplayServer::start();
    cluster.route("GET", "/version", [version_1_28()]);
    cluster.route("GET", "/readyz", [Reply::json(500, "[-]etcd failed")]);
    cluster.route(
        "GET",
        "/api/v1/namespaces/kube-system/pods",
        [mirror_pods("0ld", "")],
    );
    control_plane(&cluster);
    let kubeconfig = cluster.write_kubeconfig(node.home.path());
    let mut run = common::ssh_command(
        &node.sshd,
        node.root.path(),
        node.home.path(),
        "enable",
        Some("static"),
    )
    .args(["--manifest", node.manifest, "--falco-url", FALCO_URL])
    .args([
        "--timeout",
        "60",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ])
    .stdout(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let lock = node.path("/etc/kubernetes/manifests/.k8s-audit.lock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // Killed while it waits for the API server: the manifest is replaced, the lock is held.
    while node.manifest_bytes() == fixture_bytes(MINIKUBE.0) {
        assert!(std::time::Instant::now() < deadline, "enable never applied");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(lock.exists());
    run.kill().unwrap();
    run.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while lock.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the lock outlived its run by 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Two `enable local static` runs at once on one sandbox, with different Falco URLs: each run
/// either wins the node or is refused by the lock, and the webhook config on disk is the one a
/// successful run reported.
#[test]
fn concurrent_local_enables_never_mix_their_files() {
    for round in 0..4 {
        let root = tempfile::tempdir().unwrap();
        let manifest = root
            .path()
            .join("etc/kubernetes/manifests/kube-apiserver.yaml");
        std::fs::create_dir_all(manifest.parent().unwrap()).unwrap();
        std::fs::write(&manifest, fixture_bytes(MINIKUBE.0)).unwrap();
        let urls = [
            format!("http://10.96.0.{}:8765/k8s_audit", 10 + round),
            format!("http://10.96.1.{}:9765/k8s-audit", 10 + round),
        ];
        let runs: Vec<_> = urls
            .iter()
            .map(|url| {
                Command::new(env!("CARGO_BIN_EXE_k8s-audit"))
                    .args(["enable", "local", "static", "--no-wait", "--falco-url", url])
                    .arg("--skip-reachability")
                    .arg("--root")
                    .arg(root.path())
                    .env_remove("KUBECONFIG")
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outs: Vec<Output> = runs
            .into_iter()
            .map(|r| r.wait_with_output().unwrap())
            .collect();
        let winners: Vec<&String> = urls
            .iter()
            .zip(&outs)
            .filter(|(_, out)| out.status.success())
            .map(|(url, _)| url)
            .collect();
        for out in outs.iter().filter(|o| !o.status.success()) {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("another enable/disable holds"), "{err}");
        }
        let webhook =
            std::fs::read_to_string(root.path().join("var/lib/k8s_audit/webhook-config.yaml"))
                .unwrap();
        let last = winners.last().expect("one run succeeded");
        // Both can succeed one after the other; the second then replaced the first's file.
        assert!(
            winners.iter().any(|url| webhook.contains(url.as_str())),
            "{webhook}"
        );
        if winners.len() == 1 {
            assert!(webhook.contains(last.as_str()), "{webhook}");
        }
    }
}

/// The chart's k8saudit Service and the seed's, as `GET /api/v1/services` lists them.
const CHART_SERVICE: &str = r#"{"metadata":{"name":"falco-k8saudit-webhook","namespace":"falco","labels":{"app.kubernetes.io/name":"falco"}},"spec":{"type":"NodePort","clusterIP":"10.96.0.77","ports":[{"name":"k8saudit-webhook","protocol":"TCP","port":9765,"targetPort":9765,"nodePort":30007}]}}"#;
const SEED_SERVICE: &str = r#"{"metadata":{"name":"falco-service","namespace":"default","labels":{"app":"falco-example"}},"spec":{"type":"ClusterIP","clusterIP":"10.96.0.134","ports":[{"protocol":"TCP","port":8765,"targetPort":8765}]}}"#;

fn service_list(items: &[&str]) -> Reply {
    Reply::json(
        200,
        format!(
            r#"{{"kind":"ServiceList","apiVersion":"v1","metadata":{{"resourceVersion":"1"}},"items":[{}]}}"#,
            items.join(",")
        ),
    )
}

/// Without --falco-url, --falco-service or --falco-namespace, discovery finds the chart's
/// Service: the webhook gets its ClusterIP (the first candidate; the reachability probe is off
/// here, because a ClusterIP must never be connected to from a test), never a DNS name.
#[test]
fn falco_is_discovered_with_no_flags() {
    let node = TestNode::with_manifest(MINIKUBE.0, MINIKUBE.1);
    let cluster = ReplayServer::start();
    cluster.route("GET", "/version", [version_1_28()]);
    cluster.route("GET", "/api/v1/services", [service_list(&[CHART_SERVICE])]);
    control_plane(&cluster);
    let kubeconfig = cluster.write_kubeconfig(node.home.path());
    let out = node.xtask(
        "enable",
        Some("static"),
        &["--no-wait", "--kubeconfig", kubeconfig.to_str().unwrap()],
    );
    assert_ok(&out);
    let text = stdout(&out);
    assert!(
        text.contains("Falco endpoint http://10.96.0.77:9765/k8s-audit (found by discovery in every namespace; Service falco/falco-k8saudit-webhook: port 9765 is the k8saudit plugin of Falco >= 0.32; its ClusterIP, then its nodePort on 127.0.0.1)"),
        "{text}"
    );
    let webhook =
        std::fs::read_to_string(node.path(&format!("{AUDIT_DIR}/webhook-config.yaml"))).unwrap();
    assert!(
        webhook.contains("server: \"http://10.96.0.77:9765/k8s-audit\"\n"),
        "{webhook}"
    );
}

/// Two Services that could be Falco: the run lists them and asks, and writes nothing.
#[test]
fn several_falco_services_are_listed_not_picked() {
    let node = TestNode::with_manifest(MINIKUBE.0, MINIKUBE.1);
    let cluster = ReplayServer::start();
    cluster.route("GET", "/version", [version_1_28()]);
    cluster.route(
        "GET",
        "/api/v1/services",
        [service_list(&[SEED_SERVICE, CHART_SERVICE])],
    );
    control_plane(&cluster);
    let kubeconfig = cluster.write_kubeconfig(node.home.path());
    let out = node.xtask(
        "enable",
        Some("static"),
        &["--no-wait", "--kubeconfig", kubeconfig.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("several Services expose Falco's audit port (9765 or 8765), and choosing one would be a guess; name one with --falco-service and --falco-namespace:\n  falco/falco-k8saudit-webhook (NodePort, ports 9765→30007/TCP, Falco labels)\n  default/falco-service (ClusterIP, ports 8765/TCP)"),
        "{stderr}"
    );
    assert_eq!(node.manifest_bytes(), fixture_bytes(MINIKUBE.0));
    assert!(!node.path(AUDIT_DIR).exists());
}

/// A policy the API server would refuse never reaches the node: the error names the file, line
/// and column, and the manifest and audit directory stay as they were.
#[test]
fn a_bad_policy_file_is_refused_with_its_position() {
    let node = TestNode::with_manifest(MINIKUBE.0, MINIKUBE.1);
    let policy = node.home.path().join("policy.yaml");
    for (text, says) in [
        (
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Everything\n",
            ":4:10: rules[0].level: unknown variant `Everything`",
        ),
        (
            "apiVersion: audit.k8s.io/v1beta1\nkind: Policy\nrules:\n- level: Metadata\n",
            ":1:1: apiVersion audit.k8s.io/v1beta1: Kubernetes v1.28.3 no longer serves audit.k8s.io/v1beta1",
        ),
        (
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n  verbs: [get\n",
            ":6:1: did not find expected ',' or ']'",
        ),
    ] {
        std::fs::write(&policy, text).unwrap();
        let out = node.xtask(
            "enable",
            Some("static"),
            &[
                "--falco-url",
                FALCO_URL,
                "--no-wait",
                "--policy",
                policy.to_str().unwrap(),
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("{}{says}", policy.display())),
            "{says}: {stderr}"
        );
        assert!(stderr.contains("nothing was written"), "{stderr}");
        assert_eq!(node.manifest_bytes(), fixture_bytes(MINIKUBE.0));
        assert!(!node.path(AUDIT_DIR).exists());
    }
}

/// The default policy logs Secrets at Metadata; the seed preset is the seed's rules, with a
/// warning; a user's valid policy goes to the node byte for byte.
#[test]
fn policy_presets_and_a_users_policy_reach_the_node() {
    let node = TestNode::with_manifest(MINIKUBE.0, MINIKUBE.1);
    let on_node =
        || std::fs::read_to_string(node.path(&format!("{AUDIT_DIR}/audit-policy.yaml"))).unwrap();
    let enable = |extra: &[&str]| {
        let mut args = vec!["--falco-url", FALCO_URL, "--no-wait"];
        args.extend_from_slice(extra);
        let out = node.xtask("enable", Some("static"), &args);
        assert_ok(&out);
        out
    };
    let out = enable(&[]);
    assert!(!stdout(&out).contains("Secret"), "{}", stdout(&out));
    assert!(
        on_node().contains("  - level: Metadata\n    resources:\n    - group: \"\"\n      resources: [\"secrets\"]\n"),
        "{}",
        on_node()
    );

    let out = enable(&["--policy-preset", "seed"]);
    let text = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("--policy-preset seed logs Secrets at RequestResponse"),
        "{text}"
    );
    assert!(
        on_node().contains("resources: [\"secrets\", \"configmaps\"]"),
        "{}",
        on_node()
    );

    let mine = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: RequestResponse\n";
    let policy = node.home.path().join("mine.yaml");
    std::fs::write(&policy, mine).unwrap();
    let out = enable(&["--policy", policy.to_str().unwrap()]);
    let text = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("catch-all rule (the last, with no selectors) logs RequestResponse"),
        "{text}"
    );
    assert_eq!(on_node(), mine);
}

/// https with a CA and a client certificate: --dry-run shows the kubeconfig with the key
/// redacted, and the real run writes it 0600 with the key in it.
#[test]
fn tls_kubeconfig_is_redacted_in_dry_run_and_private_on_the_node() {
    let node = TestNode::with_manifest(MINIKUBE.0, MINIKUBE.1);
    let dir = node.home.path();
    let run = |cmd: &mut Command| assert!(cmd.status().unwrap().success());
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-subj", "/CN=test-ca", "-days", "2"])
        .arg("-keyout")
        .arg(dir.join("ca.key"))
        .arg("-out")
        .arg(dir.join("ca.pem"))
        .stderr(std::process::Stdio::null()));
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-subj", "/CN=kube-apiserver", "-days", "2"])
        .arg("-CA")
        .arg(dir.join("ca.pem"))
        .arg("-CAkey")
        .arg(dir.join("ca.key"))
        .arg("-keyout")
        .arg(dir.join("client.key"))
        .arg("-out")
        .arg(dir.join("client.pem"))
        .stderr(std::process::Stdio::null()));
    let key = std::fs::read(dir.join("client.key")).unwrap();
    let key_data = {
        use std::io::Write;
        let mut child = Command::new("base64")
            .arg("-w0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&key).unwrap();
        String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
    };
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let args = [
        "--falco-url".to_string(),
        "https://127.0.0.1:9765/k8s-audit".into(),
        "--no-wait".into(),
        "--falco-ca-file".into(),
        path("ca.pem"),
        "--falco-client-cert".into(),
        path("client.pem"),
        "--falco-client-key".into(),
        path("client.key"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut dry = args.clone();
    dry.push("--dry-run");
    let out = node.xtask("enable", Some("static"), &dry);
    assert_ok(&out);
    let text = stdout(&out);
    assert!(text.contains("certificate-authority-data: LS0t"), "{text}");
    assert!(text.contains("client-key-data: <redacted: "), "{text}");
    assert!(!text.contains(&key_data), "the key was printed:\n{text}");
    assert!(!node.path(AUDIT_DIR).exists());

    assert_ok(&node.xtask("enable", Some("static"), &args));
    let webhook = node.path(&format!("{AUDIT_DIR}/webhook-config.yaml"));
    assert!(
        std::fs::read_to_string(&webhook)
            .unwrap()
            .contains(&format!("client-key-data: {key_data}}}")),
    );
    assert_eq!(mode_and_owner(&webhook).0, 0o600);

    // http with a CA file is refused before anything is written.
    let node = TestNode::with_manifest(MINIKUBE.0, MINIKUBE.1);
    let out = node.xtask(
        "enable",
        Some("static"),
        &[
            "--falco-url",
            FALCO_URL,
            "--no-wait",
            "--falco-ca-file",
            &path("ca.pem"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("need an https:// Falco URL"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!node.path(AUDIT_DIR).exists());
}

/// A manifest whose image tag claims another minor version than the server runs: the dynamic
/// modes depend on the version, so they are refused before anything is written, naming both;
/// --kube-version decides, --force does not.
#[test]
fn dynamic_modes_are_refused_when_the_image_tag_and_the_server_disagree() {
    let fixture = "minikube-v1.18.yaml";
    let node = TestNode::with_manifest(fixture, "/etc/kubernetes/manifests/kube-apiserver.yaml");
    let cluster = ReplayServer::start();
    cluster.route("GET", "/version", [version_1_28()]);
    control_plane(&cluster);
    let kubeconfig = cluster.write_kubeconfig(node.home.path());
    let kube = kubeconfig.to_str().unwrap();
    for extra in [&[][..], &["--force"][..]] {
        let mut args = vec!["--falco-url", FALCO_URL, "--no-wait", "--kubeconfig", kube];
        args.extend(extra);
        let out = node.xtask("enable", Some("dynamic"), &args);
        assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("the manifest's image says v1.18.") && err.contains("reports v1.28.3"),
            "{err}"
        );
        assert!(err.contains("--kube-version"), "{err}");
    }
    assert_eq!(node.manifest_bytes(), fixture_bytes(fixture));
    assert!(!node.path(AUDIT_DIR).exists());
}

/// The AuditSink's policy has one level and no rules: the dynamic modes say that Secret values
/// reach Falco, whatever the policy file says.
#[test]
fn dynamic_modes_warn_that_the_audit_sink_sends_secret_values() {
    let node = TestNode::with_manifest("minikube-v1.18.yaml", MINIKUBE.1);
    let cluster = dynamic_cluster();
    control_plane(&cluster);
    let kubeconfig = cluster.write_kubeconfig(node.home.path());
    let out = node.xtask(
        "enable",
        Some("dynamic"),
        &[
            "--falco-url",
            FALCO_URL,
            "--no-wait",
            "--dry-run",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
    );
    assert_ok(&out);
    let text = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains(&format!(
            "so Secret values reach {FALCO_URL} whatever the policy file says"
        )),
        "{text}"
    );
}

/// A full or closed standard output is an error (exit 1), never a panic, and the run itself
/// goes on to its end.
#[test]
fn a_full_or_closed_stdout_is_an_error_not_a_panic() {
    let root = tempfile::tempdir().unwrap();
    let manifest = root.path().join(MINIKUBE.1.trim_start_matches('/'));
    std::fs::create_dir_all(manifest.parent().unwrap()).unwrap();
    std::fs::write(&manifest, fixture_bytes(MINIKUBE.0)).unwrap();
    let status = |stdout: std::process::Stdio, closed: bool| {
        let mut cmd = if closed {
            let mut sh = Command::new("sh");
            sh.args([
                "-c",
                "exec \"$0\" \"$@\" >&-",
                env!("CARGO_BIN_EXE_k8s-audit"),
            ]);
            sh
        } else {
            Command::new(env!("CARGO_BIN_EXE_k8s-audit"))
        };
        cmd.args(["status", "local", "--root"])
            .arg(root.path())
            .env_remove("KUBECONFIG")
            .stdout(stdout)
            .output()
            .unwrap()
    };
    let full = status(std::fs::File::create("/dev/full").unwrap().into(), false);
    let closed = status(std::process::Stdio::inherit(), true);
    for out in [full, closed] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("writing standard output failed"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
