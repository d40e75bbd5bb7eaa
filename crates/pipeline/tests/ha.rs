//! A control plane of three real kube-apiservers (testkit::ha: one etcd, node1..node3 on
//! 127.0.0.1..3, each with its own sandbox root, kubelet stand-in and sshd, behind a load
//! balancer), changed by the real `k8s-audit` binary. An availability probe samples every
//! server's /readyz each 100 ms during each rollout.

use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Duration;

// Its ssh_command builders serve the single-node tests; these build their own command line.
#[allow(dead_code)]
mod common;

use common::{assert_ok, stdout};
use testkit::ha::{Availability, AvailabilityProbe, HaCluster};
use testkit::sshd::{Sshd, SshdOptions};

/// Three real API servers at once take most of the machine: one cluster at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A loopback URL: the webhook's events go nowhere, and no packet leaves the machine.
const FALCO_URL: &str = "http://127.0.0.1:9/k8s-audit";

struct Ha {
    cluster: HaCluster,
    home: tempfile::TempDir,
}

impl Ha {
    fn start() -> Ha {
        Ha {
            cluster: HaCluster::start(3).unwrap_or_else(|e| panic!("{e}")),
            home: tempfile::tempdir().unwrap(),
        }
    }

    /// `k8s-audit <command> ssh [mode]` against every node, the nodes from the kubeconfig.
    fn k8s_audit(&self, command: &str, mode: Option<&str>, extra: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_k8s-audit"));
        cmd.arg(command).arg("ssh").args(mode);
        cmd.args(self.cluster.access_args())
            .args(extra)
            .env("HOME", self.home.path())
            .env_remove("KUBECONFIG")
            .env_remove("SSH_AUTH_SOCK");
        if command == "enable" {
            cmd.args([
                "--falco-url",
                FALCO_URL,
                "--skip-reachability",
                "--timeout",
                "90",
            ]);
        }
        if matches!(command, "enable" | "disable") {
            // Long enough for the availability probe's view to catch up with the gate's.
            cmd.args(["-v", "--settle", "2"]);
        }
        cmd
    }

    fn run(&self, command: &str, mode: Option<&str>, extra: &[&str]) -> Output {
        self.k8s_audit(command, mode, extra).output().unwrap()
    }

    /// `run` while the availability probe samples every server.
    fn watched(&self, command: &str, mode: Option<&str>, extra: &[&str]) -> (Output, Availability) {
        let probe = AvailabilityProbe::start(&self.cluster);
        let out = self.run(command, mode, extra);
        (out, probe.stop())
    }

    fn manifests(&self) -> Vec<String> {
        self.cluster
            .nodes()
            .iter()
            .map(|n| std::fs::read_to_string(n.manifest_path()).unwrap())
            .collect()
    }

    fn originals(&self) -> Vec<String> {
        self.cluster
            .nodes()
            .iter()
            .map(|n| n.original_manifest().to_string())
            .collect()
    }

    fn settle(&self) {
        self.cluster
            .wait_up(Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

fn report(out: &Output, availability: &Availability) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}\navailability: {availability:#?}",
        out.status,
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// At every sample two servers of three answered, and each server went away exactly
/// `outages[i]` times.
fn assert_available(out: &Output, availability: &Availability, outages: [u32; 3]) {
    let why = report(out, availability);
    assert!(availability.samples > 10, "{why}");
    assert!(
        availability.min_ready >= 2,
        "two servers were down at once: {why}"
    );
    for (server, want) in availability.servers.iter().zip(outages) {
        assert_eq!(server.outages, want, "{}: {why}", server.name);
    }
}

#[test]
fn rolling_enable_status_drift_and_disable_across_three_api_servers() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let ha = Ha::start();
    let originals = ha.originals();

    // Preflight: one node's manifest cannot be patched; nothing is written on any node, and
    // every node's problem is listed, not only the first.
    let conflicting = |node: usize, flag: &str| {
        let node = &ha.cluster.nodes()[node];
        let text = node.original_manifest().replacen(
            "    - --advertise-address=",
            &format!("    - {flag}\n    - --advertise-address="),
            1,
        );
        std::fs::write(node.manifest_path(), text).unwrap();
    };
    conflicting(1, "--audit-webhook-batch-max-wait=30s");
    conflicting(2, "--audit-webhook-batch-max-wait=1m");
    ha.settle();
    let before = ha.manifests();
    let out = ha.run("enable", Some("static"), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "2 of 3 control-plane nodes failed the preflight; nothing was written on any node"
        ) && stderr.contains("node2: ")
            && stderr.contains("30s")
            && stderr.contains("node3: ")
            && stderr.contains("1m"),
        "{stderr}"
    );
    assert_eq!(ha.manifests(), before);
    for node in ha.cluster.nodes() {
        assert!(
            !node.root.join("var/lib/k8s_audit").exists(),
            "{}",
            node.name
        );
    }
    for node in [1, 2] {
        std::fs::write(ha.cluster.nodes()[node].manifest_path(), &originals[node]).unwrap();
    }
    ha.settle();

    // The rollout: one node at a time, each behind the health gate; every server restarted
    // exactly once, and never two down together.
    let (out, availability) = ha.watched("enable", Some("static"), &[]);
    assert!(out.status.success(), "{}", report(&out, &availability));
    assert_available(&out, &availability, [1, 1, 1]);
    for server in &availability.servers {
        assert_ne!(
            server.first_hash, server.last_hash,
            "{}: {availability:#?}",
            server.name
        );
        eprintln!(
            "{}: longest outage {:?}",
            server.name, server.longest_outage
        );
    }
    let text = stdout(&out);
    assert!(
        text.contains("enabled static audit on 3 control-plane nodes: node1, node2, node3"),
        "{text}"
    );
    for (gate, others) in [
        ("gate node1", "node2, node3 ready for 2s"),
        ("gate node3", "node1, node2 ready for 2s"),
    ] {
        assert!(text.contains(gate) && text.contains(others), "{text}");
    }
    for (manifest, original) in ha.manifests().iter().zip(&originals) {
        assert_ne!(manifest, original);
        assert!(
            manifest.contains("--audit-webhook-config-file="),
            "{manifest}"
        );
    }

    // Status: one row per node, then drift, once a node is patched by hand.
    let out = ha.run("status", None, &[]);
    assert_ok(&out);
    let text = stdout(&out);
    for node in ["node1", "node2", "node3"] {
        let row = text
            .lines()
            .find(|l| l.starts_with(node))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(
            row.contains("static") && row.contains("ready"),
            "{row}\n{text}"
        );
    }
    assert!(text.contains("drift      none"), "{text}");
    let enabled = ha.manifests();
    let node2 = &ha.cluster.nodes()[1];
    let by_hand = enabled[1].replacen(
        "    - --audit-log-path=",
        "    - --audit-log-format=legacy\n    - --audit-log-path=",
        1,
    );
    assert_ne!(by_hand, enabled[1], "the hand edit adds a flag");
    std::fs::write(node2.manifest_path(), &by_hand).unwrap();
    ha.settle();
    let out = ha.run("status", None, &[]);
    assert_ok(&out);
    let text = stdout(&out);
    assert!(
        text.contains(
            "DRIFT      node2 differ(s) from node1, node3: has --audit-log-format=legacy"
        ),
        "{text}"
    );
    std::fs::write(node2.manifest_path(), &enabled[1]).unwrap();
    ha.settle();

    // Verify: one probe per node, through that node's own API server; each node's audit log
    // shows its own (a request through the load balancer reaches one server only).
    let out = ha.run("verify", None, &["--via", "node-log", "--timeout", "60"]);
    assert_ok(&out);
    let text = stdout(&out);
    for node in ha.cluster.nodes() {
        assert!(
            text.contains(&format!(
                "through {}'s own API server ({}:{})",
                node.name, node.address, node.port
            )),
            "{text}"
        );
        let seen = format!("✓ NodeLog {}: ", node.name);
        assert!(text.contains(&seen), "{text}");
        let log = std::fs::read_to_string(node.root.join("var/lib/k8s_audit/audit.log")).unwrap();
        // The probes' names end in their node's name.
        let probes_of = |name: &str| {
            log.lines()
                .filter(|l| l.contains("audit-probe-") && l.contains(&format!("-{name}\"")))
                .count()
        };
        assert!(
            probes_of(&node.name) > 0,
            "{}'s log lacks its probe",
            node.name
        );
        for other in ha.cluster.nodes().iter().filter(|o| o.name != node.name) {
            assert_eq!(
                probes_of(&other.name),
                0,
                "{} served {}'s probe",
                node.name,
                other.name
            );
        }
    }

    // Disable: the same discipline, and every node gets its original bytes back.
    let (out, availability) = ha.watched("disable", None, &[]);
    assert!(out.status.success(), "{}", report(&out, &availability));
    assert_available(&out, &availability, [1, 1, 1]);
    assert_eq!(ha.manifests(), originals);
    ha.settle();

    // A failure on the second node: node2 is rolled back, then node1; node3 is never touched.
    let (out, availability) = ha.watched(
        "enable",
        Some("static"),
        &["--test-only-batch-max-wait", "node2=5"],
    );
    let why = report(&out, &availability);
    assert_eq!(out.status.code(), Some(1), "{why}");
    assert!(availability.min_ready >= 2, "{why}");
    assert_eq!(availability.server("node3").unwrap().outages, 0, "{why}");
    let text = stdout(&out);
    let row = |node: &str| {
        text.lines()
            .find(|l| l.starts_with(node))
            .unwrap_or_else(|| panic!("{why}"))
            .to_string()
    };
    assert!(row("node1").contains("enabled, then rolled back"), "{why}");
    assert!(row("node2").contains("FAILED"), "{why}");
    assert!(row("node3").contains("not touched"), "{why}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("enable failed on node2, and no node was left changed"),
        "{why}"
    );
    assert_eq!(ha.manifests(), originals, "{why}");
    ha.settle();
    for server in &availability.servers {
        assert_eq!(server.first_hash, server.last_hash, "{why}");
    }

    // --keep-partial: node1 stays enabled, node2 is rolled back, node3 untouched, and the
    // run says loudly which nodes stay unaudited.
    let out = ha.run(
        "enable",
        Some("static"),
        &["--test-only-batch-max-wait", "node2=5", "--keep-partial"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--keep-partial leaves node1 enabled; node2, node3 stay UNAUDITED"),
        "{stderr}"
    );
    let manifests = ha.manifests();
    assert!(
        manifests[0].contains("--audit-webhook-config-file="),
        "{}",
        manifests[0]
    );
    assert_eq!(manifests[1..], originals[1..]);
    ha.settle();
    let out = ha.run("disable", None, &[]);
    assert_ok(&out);
    assert_eq!(ha.manifests(), originals);
}

/// The nodes behind a bastion: one TCP connection from here (to the bastion), each node's
/// session and each node's API server check through it.
#[test]
fn every_node_is_reached_through_one_bastion() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let ha = Ha::start();
    let bastion = Sshd::start_with(SshdOptions {
        // sshd logs each direct-tcpip open at DEBUG1 only; the Match block overrides the
        // harness's LogLevel for the sessions.
        extra_config: vec!["Match all".into(), "  LogLevel DEBUG1".into()],
        ..SshdOptions::default()
    });
    let key = &ha.cluster.nodes()[0].sshd.client_keys()[0].public;
    bastion.authorize(bastion.user(), key);
    let known_hosts = ha.home.path().join("known_hosts");
    let mut lines = std::fs::read_to_string(ha.cluster.known_hosts()).unwrap();
    lines.push_str(&bastion.known_hosts_lines().join("\n"));
    lines.push('\n');
    std::fs::write(&known_hosts, lines).unwrap();
    let jump = format!("{}@127.0.0.1:{}", bastion.user(), bastion.port());

    let (out, availability) = {
        let probe = AvailabilityProbe::start(&ha.cluster);
        let out = ha
            .k8s_audit("enable", Some("static"), &["--jump", &jump])
            .arg("--known-hosts")
            .arg(&known_hosts)
            .output()
            .unwrap();
        (out, probe.stop())
    };
    assert!(out.status.success(), "{}", report(&out, &availability));
    assert_available(&out, &availability, [1, 1, 1]);
    let text = stdout(&out);
    assert!(text.contains("1 TCP connection(s)"), "{text}");
    let log = bastion.log();
    let port = ha.cluster.ssh_port();
    for node in ha.cluster.nodes() {
        let to_sshd = format!("target {} port {port}", node.address);
        assert!(log.contains(&to_sshd), "no channel to {to_sshd}:\n{log}");
    }

    // minikube HA profiles (`minikube start --ha`), with a stand-in minikube CLI: each node is
    // reached as minikube reaches it, `minikube ip -n NODE`.
    let bin = tempfile::tempdir().unwrap();
    let calls = bin.path().join("calls");
    let stub = bin.path().join("minikube");
    std::fs::write(
        &stub,
        format!(
            r#"#!/bin/sh
echo "minikube $*" >> '{calls}'
case $1 in
  version) echo 'minikube version: v1.32.0' ;;
  ssh-key) echo '{key}' ;;
  profile) echo '{{"invalid":[],"valid":[{{"Name":"minikube","Config":{{"Name":"minikube","Driver":"kvm2"}}}}]}}' ;;
  ip) while [ $# -gt 0 ]; do [ "$1" = -n ] && node=$2; shift; done; echo "127.0.0.${{node#node}}" ;;
  *) exit 2 ;;
esac
"#,
            calls = calls.display(),
            key = ha.cluster.client_key().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_k8s-audit"))
        .args(["disable", "minikube", "--user", "root", "--port"])
        .arg(ha.cluster.ssh_port().to_string())
        .arg("--known-hosts")
        .arg(ha.cluster.known_hosts())
        .arg("--root")
        .arg(ha.cluster.root_template())
        .arg("--kubeconfig")
        .arg(ha.cluster.kubeconfig())
        .args(["--settle", "2"])
        .env("HOME", ha.home.path())
        .env("PATH", bin.path())
        .env_remove("KUBECONFIG")
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap();
    assert_ok(&out);
    let calls = std::fs::read_to_string(&calls).unwrap();
    for node in ha.cluster.nodes() {
        let ip = format!("minikube ip -p minikube -n {}\n", node.name);
        assert!(calls.contains(&ip), "{calls}");
    }
    assert_eq!(ha.manifests(), ha.originals());
}
