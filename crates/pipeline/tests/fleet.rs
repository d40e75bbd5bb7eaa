//! Several control-plane nodes at once, fast: ONE real OpenSSH sshd on 127.0.0.1 stands in for
//! every node. An ssh config gives each node a name (`Host cp1` ... all `HostName 127.0.0.1`)
//! and `--root DIR/{node}` gives each its own sandbox, so each node has its own manifest, lock
//! and audit directory. Recorded API responses stand in for the cluster where one is needed.
//! The real three-server control plane is `tests/ha.rs` (slow).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

// Its ssh_command builders serve the single-node tests; these build their own command line.
#[allow(dead_code)]
mod common;

use common::{assert_ok, stdout};
use patch_apiserver::{Mode, PatchOptions};
use testkit::replay::{ReplayServer, Reply};
use testkit::sshd::Sshd;

const FALCO_URL: &str = "http://10.96.0.10:8765/k8s_audit";
const MANIFEST: &str = "etc/kubernetes/manifests/kube-apiserver.yaml";
const AUDIT_DIR: &str = "var/lib/k8s_audit";
const LOCK: &str = "etc/kubernetes/manifests/.k8s-audit.lock";

/// The nodes' sandboxes under one directory, reached by name through one sshd.
struct Nodes {
    sshd: Sshd,
    dir: tempfile::TempDir,
    names: Vec<&'static str>,
}

impl Nodes {
    /// One node per `(name, manifest text)`, each named in the ssh config.
    fn start(nodes: &[(&'static str, String)]) -> Nodes {
        let fleet = Nodes {
            sshd: Sshd::start(),
            dir: tempfile::tempdir().unwrap(),
            names: nodes.iter().map(|(name, _)| *name).collect(),
        };
        std::fs::create_dir(fleet.home()).unwrap();
        let mut config = String::new();
        for (name, manifest) in nodes {
            config.push_str(&format!(
                "Host {name}\n  HostName 127.0.0.1\n  Port {}\n  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n\n",
                fleet.sshd.port(),
                fleet.sshd.client_key().display()
            ));
            fleet.write_manifest(name, manifest);
        }
        std::fs::write(fleet.ssh_config(), config).unwrap();
        fleet
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn ssh_config(&self) -> PathBuf {
        self.dir.path().join("ssh_config")
    }

    /// A node path inside `node`'s sandbox.
    fn path(&self, node: &str, node_path: &str) -> PathBuf {
        self.dir.path().join("roots").join(node).join(node_path)
    }

    fn manifest(&self, node: &str) -> String {
        std::fs::read_to_string(self.path(node, MANIFEST)).unwrap()
    }

    fn write_manifest(&self, node: &str, text: &str) {
        let path = self.path(node, MANIFEST);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// `k8s-audit <command> ssh [mode] --host H...` with every node's sandbox as
    /// `--root DIR/{node}`, a clean HOME and no kubeconfig unless `extra` names one. `enable`
    /// gets a Falco URL and skips the probe of it (it would leave the machine) and the wait.
    fn run(&self, command: &str, mode: Option<&str>, hosts: &[&str], extra: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_k8s-audit"));
        cmd.arg(command).arg("ssh").args(mode);
        for host in hosts {
            cmd.args(["--host", host]);
        }
        cmd.arg("--ssh-config")
            .arg(self.ssh_config())
            .arg("--known-hosts")
            .arg(self.sshd.known_hosts_file())
            .arg("--root")
            .arg(self.dir.path().join("roots").join("{node}"));
        match command {
            "enable" => {
                cmd.args(["--falco-url", FALCO_URL, "--no-wait", "--skip-reachability"]);
            }
            "disable" => {
                cmd.arg("--no-wait");
            }
            _ => {}
        }
        cmd.args(extra)
            .env("HOME", self.home())
            .env_remove("KUBECONFIG")
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("APISERVER_HOST")
            .output()
            .unwrap()
    }

    /// What a node's sandbox holds besides its manifest: nothing, for a node never changed.
    fn assert_untouched(&self, node: &str, original: &str) {
        assert_eq!(self.manifest(node), original, "{node}'s manifest");
        assert!(
            !self.path(node, AUDIT_DIR).exists(),
            "{node} got an audit directory"
        );
        assert!(!self.path(node, LOCK).exists(), "{node}'s lock is left");
        let manifests = self.path(node, MANIFEST).parent().unwrap().to_path_buf();
        assert_eq!(
            std::fs::read_dir(&manifests).unwrap().count(),
            1,
            "{node}: only the manifest in {}",
            manifests.display()
        );
    }
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/manifests")
            .join(name),
    )
    .unwrap()
}

/// The minikube v1.18 fixture with its image tag rewritten to `tag`: a node of another version.
fn minikube_1_18_as(tag: &str) -> String {
    let text = fixture("minikube-v1.18.yaml");
    assert!(text.contains("kube-apiserver:v1.18.3\n"));
    text.replace(
        "kube-apiserver:v1.18.3\n",
        &format!("kube-apiserver:{tag}\n"),
    )
}

/// The manifest with one more flag after `--authorization-mode`, as a hand edit would add it.
fn with_flag(manifest: &str, flag: &str) -> String {
    let anchor = "    - --authorization-mode=Node,RBAC\n";
    assert!(manifest.contains(anchor));
    manifest.replacen(anchor, &format!("{anchor}    - {flag}\n"), 1)
}

fn expected_patch(original: &str, mode: Mode) -> String {
    let patched = patch_apiserver::patch(original, &PatchOptions::new(mode)).unwrap();
    assert!(patched.changed);
    patched.text
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn both(out: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", stdout(out), stderr(out))
}

/// The lines of a status table that start with the node's name.
fn rows<'a>(text: &'a str, node: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.split_whitespace().next() == Some(node))
        .collect()
}

/// A cluster's kube-apiserver mirror pods, one per node name, and no labelled Node.
fn control_plane(cluster: &ReplayServer, nodes: &[&str]) {
    let pods: Vec<String> = nodes
        .iter()
        .map(|node| {
            format!(
                r#"{{"kind":"Pod","apiVersion":"v1","metadata":{{"name":"kube-apiserver-{node}","namespace":"kube-system","labels":{{"component":"kube-apiserver"}},"annotations":{{"kubernetes.io/config.hash":"0ld-{node}","kubernetes.io/config.mirror":"0ld-{node}"}}}},"spec":{{"nodeName":"{node}","containers":[{{"name":"kube-apiserver","command":["kube-apiserver","--secure-port=8443"]}}]}}}}"#
            )
        })
        .collect();
    cluster.route(
        "GET",
        "/api/v1/namespaces/kube-system/pods",
        [Reply::json(
            200,
            format!(
                r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{}},"items":[{}]}}"#,
                pods.join(",")
            ),
        )],
    );
    cluster.route(
        "GET",
        "/api/v1/nodes",
        [Reply::json(
            200,
            r#"{"kind":"NodeList","apiVersion":"v1","metadata":{},"items":[]}"#,
        )],
    );
}

/// Nodes cp1..cp3 holding `original`, and a v1.28.3 cluster whose mirror pods name them;
/// returns the cluster (alive while it is held) and its kubeconfig.
fn three_in_a_cluster(original: &str) -> (Nodes, ReplayServer, std::path::PathBuf) {
    let nodes = Nodes::start(&[
        ("cp1", original.to_string()),
        ("cp2", original.to_string()),
        ("cp3", original.to_string()),
    ]);
    let cluster = ReplayServer::start();
    cluster.route("GET", "/version", [version("v1.28.3")]);
    control_plane(&cluster, &["cp1", "cp2", "cp3"]);
    let kubeconfig = cluster.write_kubeconfig(&nodes.home());
    (nodes, cluster, kubeconfig)
}

fn version(git_version: &str) -> Reply {
    let (major, minor) = match git_version
        .trim_start_matches('v')
        .split('.')
        .collect::<Vec<_>>()[..]
    {
        [major, minor, ..] => (major.to_string(), minor.to_string()),
        _ => panic!("{git_version}"),
    };
    Reply::json(
        200,
        format!(
            r#"{{"major":"{major}","minor":"{minor}","gitVersion":"{git_version}","gitCommit":"1f3e19b7beb1cc0110255668c4238ed63dadb7ad","gitTreeState":"clean","buildDate":"2021-06-16T12:51:17Z","goVersion":"go1.13.15","compiler":"gc","platform":"linux/amd64"}}"#
        ),
    )
}

/// Static mode without a cluster: every --host changed, one status row each, drift named by
/// node, and disable gives every node its original bytes back.
#[test]
fn static_enable_status_drift_and_disable_on_every_host() {
    let original = fixture("minikube-v1.28.yaml");
    let nodes = Nodes::start(&[("cp1", original.clone()), ("cp2", original.clone())]);
    let hosts = ["cp1", "cp2"];
    let patched = expected_patch(&original, Mode::Static);

    let on = nodes.run("enable", Some("static"), &hosts, &[]);
    assert_ok(&on);
    assert!(
        stdout(&on).contains("enabled static audit on 2 control-plane nodes: cp1, cp2"),
        "{}",
        both(&on)
    );
    for node in &nodes.names {
        assert_eq!(nodes.manifest(node), patched, "{node}");
        let webhook = nodes.path(node, &format!("{AUDIT_DIR}/webhook-config.yaml"));
        let webhook = std::fs::read_to_string(webhook).unwrap();
        assert!(webhook.contains(FALCO_URL), "{node}: {webhook}");
        assert!(!nodes.path(node, LOCK).exists(), "{node}'s lock is left");
    }

    let status = nodes.run("status", None, &hosts, &[]);
    assert_ok(&status);
    let text = stdout(&status);
    for node in &nodes.names {
        let found = rows(&text, node);
        assert_eq!(found.len(), 1, "one row for {node}: {text}");
        assert_eq!(
            found[0].split_whitespace().nth(1),
            Some("static"),
            "{node}: {text}"
        );
    }
    assert!(
        text.contains("\ndrift      none: every node carries the same audit flags\n"),
        "{text}"
    );

    nodes.write_manifest("cp2", &with_flag(&patched, "--audit-log-format=legacy"));
    let drifted = nodes.run("status", None, &hosts, &[]);
    assert_ok(&drifted);
    let text = stdout(&drifted);
    assert!(
        text.contains("\nDRIFT      cp2 differ(s) from cp1: has --audit-log-format=legacy\n"),
        "{text}"
    );
    assert!(!text.contains("drift      none"), "{text}");

    // Back to what enable wrote, so that disable can tell it is exactly its own work.
    nodes.write_manifest("cp2", &patched);
    let off = nodes.run("disable", None, &hosts, &[]);
    assert_ok(&off);
    for node in &nodes.names {
        assert_eq!(nodes.manifest(node), original, "{node}: {}", both(&off));
        assert!(
            !nodes.path(node, &format!("{AUDIT_DIR}/enabled")).exists(),
            "{node}'s state record"
        );
        assert!(!nodes.path(node, LOCK).exists(), "{node}'s lock is left");
    }
}

/// One node upgraded to 1.18, the other still on 1.17: static mode goes on with a warning that
/// names both versions, each node patched for its own; a dynamic mode, whose flags depend on
/// the version, is refused and nothing is written on either node.
#[test]
fn a_half_finished_upgrade_warns_for_static_and_refuses_dynamic() {
    let new = minikube_1_18_as("v1.18.3");
    let old = minikube_1_18_as("v1.17.5");
    let skew =
        "the control-plane nodes run different Kubernetes versions (cp1 v1.18.3, cp2 v1.17.5)";

    let nodes = Nodes::start(&[("cp1", new.clone()), ("cp2", old.clone())]);
    let out = nodes.run("enable", Some("static"), &["cp1", "cp2"], &[]);
    assert_ok(&out);
    assert!(
        stdout(&out).contains(&format!("  ! {skew}: an upgrade is half done")),
        "{}",
        both(&out)
    );
    assert_eq!(nodes.manifest("cp1"), expected_patch(&new, Mode::Static));
    assert_eq!(nodes.manifest("cp2"), expected_patch(&old, Mode::Static));

    let nodes = Nodes::start(&[("cp1", new.clone()), ("cp2", old.clone())]);
    let cluster = ReplayServer::start();
    cluster.route("GET", "/version", [version("v1.18.20")]);
    control_plane(&cluster, &["cp1", "cp2"]);
    let kubeconfig = cluster.write_kubeconfig(&nodes.home());
    let kubeconfig = kubeconfig.to_str().unwrap();
    for mode in ["dynamic", "dynamic+log"] {
        let out = nodes.run(
            "enable",
            Some(mode),
            &["cp1", "cp2"],
            &["--kubeconfig", kubeconfig],
        );
        assert_eq!(out.status.code(), Some(1), "{mode}: {}", both(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "{skew}, a half-finished upgrade; {mode} mode depends on the version"
            )) && err.contains("nothing was written"),
            "{mode}: {err}"
        );
    }
    nodes.assert_untouched("cp1", &new);
    nodes.assert_untouched("cp2", &old);
    let asked: Vec<String> = cluster
        .seen()
        .iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    assert!(
        asked.iter().all(|a| a.starts_with("GET ")),
        "nothing was created in the cluster: {asked:?}"
    );
    assert!(
        asked.contains(&"GET /api/v1/namespaces/kube-system/pods".to_string()),
        "the nodes came from the cluster: {asked:?}"
    );
}

/// Two of three nodes carry a flag of ours with another value: the preflight says so for each
/// of them (not only the first), writes nothing anywhere and leaves no lock behind, so the run
/// after the fix goes through.
#[test]
fn the_preflight_lists_every_nodes_problem_and_writes_nothing() {
    let original = fixture("minikube-v1.28.yaml");
    let conflicting = with_flag(&original, "--audit-webhook-batch-max-wait=30s");
    let nodes = Nodes::start(&[
        ("cp1", original.clone()),
        ("cp2", conflicting.clone()),
        ("cp3", conflicting.clone()),
    ]);
    let hosts = ["cp1", "cp2", "cp3"];

    let out = nodes.run("enable", Some("static"), &hosts, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let err = stderr(&out);
    assert!(
        err.contains(
            "2 of 3 control-plane nodes failed the preflight; nothing was written on any node"
        ),
        "{err}"
    );
    for node in ["cp2", "cp3"] {
        let line = err
            .lines()
            .find(|l| l.starts_with(&format!("  {node}: ")))
            .unwrap_or_else(|| panic!("no line for {node}: {err}"));
        assert!(
            line.contains("--audit-webhook-batch-max-wait")
                && line.contains("\"30s\"")
                && line.contains("--force"),
            "{line}"
        );
    }
    assert!(!err.contains("  cp1: "), "cp1 had no problem: {err}");
    nodes.assert_untouched("cp1", &original);
    nodes.assert_untouched("cp2", &conflicting);
    nodes.assert_untouched("cp3", &conflicting);

    nodes.write_manifest("cp2", &original);
    nodes.write_manifest("cp3", &original);
    let fixed = nodes.run("enable", Some("static"), &hosts, &[]);
    assert_ok(&fixed);
    for node in hosts {
        assert_eq!(
            nodes.manifest(node),
            expected_patch(&original, Mode::Static),
            "{node}"
        );
    }
}

/// `--node` changes only the node it names, and says loudly which ones stay unaudited.
#[test]
fn node_narrows_the_run_and_names_the_unaudited_ones() {
    let original = fixture("minikube-v1.28.yaml");
    let nodes = Nodes::start(&[
        ("cp1", original.clone()),
        ("cp2", original.clone()),
        ("cp3", original.clone()),
    ]);
    let out = nodes.run(
        "enable",
        Some("static"),
        &["cp1", "cp2", "cp3"],
        &["--node", "cp2"],
    );
    assert_ok(&out);
    assert!(
        stdout(&out).contains("--node leaves cp1, cp3 alone: their API servers stay UNAUDITED"),
        "{}",
        both(&out)
    );
    assert_eq!(
        nodes.manifest("cp2"),
        expected_patch(&original, Mode::Static)
    );
    nodes.assert_untouched("cp1", &original);
    nodes.assert_untouched("cp3", &original);

    let unknown = nodes.run(
        "enable",
        Some("static"),
        &["cp1", "cp2", "cp3"],
        &["--node", "cp4"],
    );
    assert_eq!(unknown.status.code(), Some(1), "{}", both(&unknown));
    assert!(
        stderr(&unknown).contains("--node cp4: no such control-plane node (known: cp1, cp2, cp3)"),
        "{}",
        both(&unknown)
    );
    nodes.assert_untouched("cp1", &original);
}

/// The cluster shows three API servers and the user gave one --host: refused before anything
/// is written, naming the nodes no host reaches; with --node for that one node the run goes on.
#[test]
fn a_cluster_node_without_a_host_is_refused_unless_node_narrows_the_run() {
    let original = fixture("minikube-v1.28.yaml");
    let (nodes, _cluster, kubeconfig) = three_in_a_cluster(&original);
    let kube = ["--kubeconfig", kubeconfig.to_str().unwrap()];

    let out = nodes.run("enable", Some("static"), &["cp1"], &kube);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        stderr(&out)
            .contains("no --host reaches cp2, cp3: pass --host for every control-plane node"),
        "{}",
        both(&out)
    );
    for node in ["cp1", "cp2", "cp3"] {
        nodes.assert_untouched(node, &original);
    }

    let narrowed = nodes.run(
        "enable",
        Some("static"),
        &["cp1"],
        &[&kube[..], &["--node", "cp1"]].concat(),
    );
    assert_ok(&narrowed);
    assert!(
        stdout(&narrowed)
            .contains("--node leaves cp2, cp3 alone: their API servers stay UNAUDITED"),
        "{}",
        both(&narrowed)
    );
    assert_eq!(
        nodes.manifest("cp1"),
        expected_patch(&original, Mode::Static)
    );
    nodes.assert_untouched("cp2", &original);
    nodes.assert_untouched("cp3", &original);
}

/// `--host cp2 --node cp1` on a cluster of three: the one host is node cp2 by name, so the
/// shortcut "one --host and one chosen API server are the same machine, however the host is
/// spelt" must not pair it with cp1 (it once did: the run changed cp2's manifest and reported
/// cp1 as done). A host that names another control-plane node is refused before anything is
/// written.
#[test]
fn a_host_naming_another_node_is_not_taken_for_the_chosen_one() {
    let original = fixture("minikube-v1.28.yaml");
    let (nodes, _cluster, kubeconfig) = three_in_a_cluster(&original);
    let out = nodes.run(
        "enable",
        Some("static"),
        &["cp2"],
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--node",
            "cp1",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(stderr(&out).contains("cp2"), "{}", both(&out));
    for node in ["cp1", "cp2", "cp3"] {
        nodes.assert_untouched(node, &original);
    }
}
