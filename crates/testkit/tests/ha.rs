//! The HA harness itself, with three real kube-apiservers v1.20.2 (`cargo xtask apiserver build`):
//! every server answers at its own address with a certificate the cluster's CA verifies, the
//! nodes and mirror pods say where each server runs, the load balancer rides out a server that
//! crash-loops, and the availability probe sees exactly that one outage.
//!
//! Without the cached binary this test fails, saying how to build it: CI builds it first.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use testkit::apiserver::ControlPlane;
use testkit::ha::{AvailabilityProbe, HaCluster, HaNode};
use testkit::kubelet::{KubeletState, config_hash};

/// Writes beside the target and renames, as the pipeline does, so the stand-in never reads half a file.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write manifest");
    std::fs::rename(&tmp, path).expect("rename manifest");
}

async fn get(client: &kube::Client, path: &str) -> Result<serde_json::Value, kube::Error> {
    let request = http::Request::get(path).body(Vec::new()).expect("request");
    let text = client.request_text(request).await?;
    Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

async fn readyz(kubeconfig: &Path) -> Result<String, String> {
    let client = ControlPlane::client_from(kubeconfig)
        .await
        .map_err(|e| e.to_string())?;
    let request = http::Request::get("/readyz")
        .body(Vec::new())
        .expect("request");
    client
        .request_text(request)
        .await
        .map_err(|e| e.to_string())
}

fn wait_for(node: &HaNode, timeout: Duration, done: impl Fn(&KubeletState) -> bool) {
    let deadline = Instant::now() + timeout;
    while !done(&node.state()) {
        assert!(
            Instant::now() < deadline,
            "{}: {:?}\n{}",
            node.name,
            node.state(),
            node.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// OpenSSH's client with nothing but the cluster's one key, port and known_hosts file.
fn ssh(cluster: &HaCluster, node: &HaNode, home: &Path, command: &str) -> Output {
    Command::new("ssh")
        .args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
        ])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            cluster.known_hosts().display()
        ))
        .arg("-i")
        .arg(cluster.client_key())
        .arg("-p")
        .arg(cluster.ssh_port().to_string())
        .arg(format!("root@{}", node.address))
        .arg(command)
        .env("HOME", home)
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .output()
        .expect("run ssh")
}

#[test]
fn three_servers_behind_the_balancer_and_one_outage_seen() {
    let cluster = HaCluster::start(3).unwrap();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let nodes = cluster.nodes();
    let home = tempfile::tempdir().expect("HOME for ssh");
    assert_eq!(
        nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        ["node1", "node2", "node3"]
    );

    for (index, node) in nodes.iter().enumerate() {
        let address = format!("127.0.0.{}", index + 1);
        assert_eq!(node.address.to_string(), address);
        assert_eq!(node.url(), format!("https://{address}:{}", node.port));
        let answer = runtime.block_on(readyz(node.kubeconfig()));
        assert_eq!(answer.as_deref(), Ok("ok"), "{}", node.log_tail(20));
        let kubeconfig = std::fs::read_to_string(node.kubeconfig()).expect("kubeconfig");
        assert!(kubeconfig.contains(&format!("server: {}\n", node.url())));
        assert!(
            !kubeconfig.contains("insecure-skip-tls-verify"),
            "{kubeconfig}"
        );

        // Each node's sshd listens at the node's address, on the port they all share.
        assert_eq!(
            node.sshd.addr(),
            SocketAddr::from((node.address, cluster.ssh_port()))
        );
        let session = ssh(&cluster, node, home.path(), "echo $SSH_CONNECTION");
        let connection = String::from_utf8_lossy(&session.stdout);
        assert!(
            session.status.success(),
            "{}: {}\n{}",
            node.name,
            String::from_utf8_lossy(&session.stderr),
            node.sshd.log()
        );
        assert_eq!(
            connection.split_whitespace().nth(2),
            Some(address.as_str()),
            "{connection}"
        );

        let template = cluster.root_template().to_string_lossy().into_owned();
        assert_eq!(
            node.root,
            Path::new(&template.replace("{node}", &node.name))
        );
        let manifest = std::fs::read_to_string(node.manifest_path()).expect("manifest");
        assert_eq!(manifest, node.original_manifest());
        assert!(manifest.contains(&format!("    - --bind-address={address}\n")));

        // The stand-in asks its own server: the mirror pod says where it runs.
        let client = runtime
            .block_on(ControlPlane::client_from(node.kubeconfig()))
            .unwrap();
        let pod = runtime
            .block_on(get(
                &client,
                &format!(
                    "/api/v1/namespaces/kube-system/pods/{}",
                    node.mirror_pod_name()
                ),
            ))
            .unwrap();
        assert_eq!(pod["spec"]["nodeName"], node.name.as_str());
        assert_eq!(pod["status"]["hostIP"], address.as_str());
        assert_eq!(
            pod["metadata"]["annotations"]["kubernetes.io/config.hash"],
            config_hash(manifest.as_bytes()).as_str()
        );
        let command = pod["spec"]["containers"][0]["command"].to_string();
        for flag in [
            format!("--secure-port={}", node.port),
            format!("--advertise-address={address}"),
        ] {
            assert!(command.contains(&flag), "{flag} not in {command}");
        }
    }

    // The certificates are verified: a CA that did not sign them is refused.
    let other = tempfile::tempdir().expect("temp dir");
    let (other_ca, _) = testkit::pki::certificate(other.path(), "other", None, "");
    let distrusting = other.path().join("kubeconfig");
    cluster
        .plane()
        .write_kubeconfig(&distrusting, &nodes[0].url(), Some(&other_ca))
        .unwrap();
    let refused = runtime.block_on(readyz(&distrusting));
    assert!(refused.is_err(), "{refused:?}");

    // Every node is registered as a control-plane node with its address.
    let client = runtime.block_on(cluster.client()).unwrap();
    let list = runtime
        .block_on(get(
            &client,
            "/api/v1/nodes?labelSelector=node-role.kubernetes.io/control-plane",
        ))
        .unwrap();
    let registered: Vec<(String, String)> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|n| {
            (
                n["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                n["status"]["addresses"][0]["address"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        registered,
        [
            ("node1".to_owned(), "127.0.0.1".to_owned()),
            ("node2".to_owned(), "127.0.0.2".to_owned()),
            ("node3".to_owned(), "127.0.0.3".to_owned()),
        ]
    );

    // node2's server crash-loops on a flag value without a unit, then comes back.
    let probe = AvailabilityProbe::start(&cluster);
    let broken_node = &nodes[1];
    let original = broken_node.original_manifest().to_owned();
    let broken = original.replacen(
        "    - kube-apiserver\n",
        "    - kube-apiserver\n    - --audit-webhook-batch-max-wait=5\n",
        1,
    );
    assert_ne!(broken, original);
    replace(&broken_node.manifest_path(), &broken);
    wait_for(broken_node, Duration::from_secs(60), |s| {
        s.crash_restarts >= 2 && !s.running
    });
    assert_eq!(
        broken_node.state().flags,
        ["--audit-webhook-batch-max-wait=5"]
    );
    // Fresh clients, so each request is a new connection and the balancer's starting backend
    // rotates through all three, node2 included.
    for attempt in 0..6 {
        let version = runtime.block_on(async {
            let client = cluster.client().await.map_err(|e| e.to_string())?;
            get(&client, "/version").await.map_err(|e| e.to_string())
        });
        let version = version.unwrap_or_else(|e| panic!("request {attempt}: {e}"));
        assert_eq!(version["gitVersion"], "v1.20.2", "{version}");
    }
    replace(&broken_node.manifest_path(), &original);
    cluster.wait_up(Duration::from_secs(120)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let availability = probe.stop();

    assert!(availability.samples > 20, "{availability:?}");
    assert_eq!(availability.min_ready, 2, "{availability:?}");
    let outages: Vec<(&str, u32)> = availability
        .servers
        .iter()
        .map(|s| (s.name.as_str(), s.outages))
        .collect();
    assert_eq!(outages, [("node1", 0), ("node2", 1), ("node3", 0)]);
    let node2 = availability.server("node2").expect("node2");
    assert!(
        node2.longest_outage >= Duration::from_secs(1),
        "{availability:?}"
    );
    assert_eq!(availability.servers[0].longest_outage, Duration::ZERO);
    for (server, node) in availability.servers.iter().zip(nodes) {
        let hash = config_hash(node.original_manifest().as_bytes());
        assert_eq!(server.first_hash.as_deref(), Some(hash.as_str()));
        assert_eq!(server.last_hash.as_deref(), Some(hash.as_str()));
    }
}
