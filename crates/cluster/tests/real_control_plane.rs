//! Control-plane discovery and the per-node readiness and verify probes against the real
//! kube-apiserver v1.20.2 (`cargo xtask apiserver build`). Without the cached binary these tests
//! fail, saying how to build it.
//!
//! The Nodes and mirror pods are objects written with the admin credentials, shaped as
//! kubeadm's, an older kubeadm's and kops' kubelets publish them; no kubelet runs.

use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use cluster::{
    ApiServerPod, Cluster, ClusterOptions, ControlPlaneNodes, ProbeConfigMap, Readiness,
};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, ServiceAccount};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use testkit::apiserver::{ApiServer, exclusive};

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

fn node(name: &str, role: Option<&str>) -> Node {
    let labels = match role {
        Some(label) => serde_json::json!({ label: "", "kubernetes.io/hostname": name }),
        None => serde_json::json!({ "kubernetes.io/hostname": name }),
    };
    serde_json::from_value(serde_json::json!({"metadata": {"name": name, "labels": labels}}))
        .unwrap()
}

/// A pod as a kubelet mirrors a static pod: the mirror annotation, the manifest's hash and the
/// node it runs on.
fn mirror_pod(
    name: &str,
    node: &str,
    labels: serde_json::Value,
    hash: &str,
    command: &[String],
    args: &[String],
) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name,
            "namespace": "kube-system",
            "labels": labels,
            "annotations": {
                "kubernetes.io/config.mirror": hash,
                "kubernetes.io/config.hash": hash,
                "kubernetes.io/config.source": "file",
            },
        },
        "spec": {
            "nodeName": node,
            "hostNetwork": true,
            "priorityClassName": "system-node-critical",
            "containers": [{
                "name": "kube-apiserver",
                "image": "k8s.gcr.io/kube-apiserver:v1.20.2",
                "command": command,
                "args": args,
            }],
        },
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_is_the_mirror_pods_checked_against_the_node_labels() {
    let _one_at_a_time = exclusive().await;
    let server = ApiServer::start(&[]).await.unwrap();
    let client = server.plane().client().await.unwrap();
    let cluster = connect(server.plane().kubeconfig().to_path_buf()).await;
    assert_eq!(
        cluster.control_plane().await.unwrap(),
        ControlPlaneNodes::default()
    );

    let nodes: Api<Node> = Api::all(client.clone());
    for (name, role) in [
        ("cp-a", Some("node-role.kubernetes.io/control-plane")),
        // Labelled as kubeadm did before 1.20.
        ("cp-b", Some("node-role.kubernetes.io/master")),
        ("cp-c", Some("node-role.kubernetes.io/control-plane")),
        // Its kubelet never published a mirror pod.
        ("cp-d", Some("node-role.kubernetes.io/control-plane")),
        ("worker-1", None),
    ] {
        nodes
            .create(&PostParams::default(), &node(name, role))
            .await
            .unwrap();
    }

    let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let kubeadm_command = words(
        "kube-apiserver --advertise-address=10.0.0.1 --secure-port=8443 --etcd-servers=https://127.0.0.1:2379",
    );
    // Some distributions label the pod both ways: it must still be listed once.
    let both = serde_json::json!({"component": "kube-apiserver", "tier": "control-plane", "k8s-app": "kube-apiserver"});
    pods.create(
        &PostParams::default(),
        &mirror_pod(
            "kube-apiserver-cp-a",
            "cp-a",
            both,
            "hash-a",
            &kubeadm_command,
            &[],
        ),
    )
    .await
    .unwrap();
    let old_args = words("--advertise-address=10.0.0.2 --allow-privileged=true");
    pods.create(
        &PostParams::default(),
        &mirror_pod(
            "kube-apiserver-cp-b",
            "cp-b",
            serde_json::json!({"component": "kube-apiserver", "tier": "control-plane"}),
            "hash-b",
            &["kube-apiserver".to_string()],
            &old_args,
        ),
    )
    .await
    .unwrap();
    // kops: go-runner in front, the flag as an argument of its own.
    let kops_command = words("/go-runner");
    let kops_args = words(
        "--log-file=/var/log/kube-apiserver.log --also-stdout /usr/local/bin/kube-apiserver --secure-port 443 --insecure-port=0",
    );
    pods.create(
        &PostParams::default(),
        &mirror_pod(
            "kube-apiserver-cp-c",
            "cp-c",
            serde_json::json!({"k8s-app": "kube-apiserver"}),
            "hash-c",
            &kops_command,
            &kops_args,
        ),
    )
    .await
    .unwrap();
    // An ordinary pod with the component label is not a static pod, so not a control plane.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "kube-system");
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}})).unwrap(),
        )
        .await
        .unwrap();
    let impostor: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "kube-apiserver-worker-1", "namespace": "kube-system",
                     "labels": {"component": "kube-apiserver"}},
        "spec": {"nodeName": "worker-1", "automountServiceAccountToken": false,
                 "containers": [{"name": "kube-apiserver", "image": "k8s.gcr.io/kube-apiserver:v1.20.2"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &impostor)
        .await
        .unwrap();

    // hostIP is status, which only the status subresource takes (the kubelet's write).
    for (pod, ip) in [
        ("kube-apiserver-cp-a", "10.0.0.1"),
        ("kube-apiserver-cp-c", "10.0.0.3"),
    ] {
        pods.patch_status(
            pod,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"hostIP": ip, "phase": "Running"}})),
        )
        .await
        .unwrap();
    }

    let found = cluster.control_plane().await.unwrap();
    assert_eq!(
        found,
        ControlPlaneNodes {
            apiservers: vec![
                ApiServerPod {
                    node_name: "cp-a".into(),
                    pod_name: "kube-apiserver-cp-a".into(),
                    host_ip: Some("10.0.0.1".into()),
                    secure_port: 8443,
                    config_hash: Some("hash-a".into()),
                    command: kubeadm_command,
                },
                ApiServerPod {
                    node_name: "cp-b".into(),
                    pod_name: "kube-apiserver-cp-b".into(),
                    host_ip: None,
                    secure_port: 6443,
                    config_hash: Some("hash-b".into()),
                    command: [vec!["kube-apiserver".to_string()], old_args].concat(),
                },
                ApiServerPod {
                    node_name: "cp-c".into(),
                    pod_name: "kube-apiserver-cp-c".into(),
                    host_ip: Some("10.0.0.3".into()),
                    secure_port: 443,
                    config_hash: Some("hash-c".into()),
                    command: [kops_command, kops_args].concat(),
                },
            ],
            labelled_without_pod: vec!["cp-d".into()],
        }
    );
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

fn tcp(port: u16) -> impl FnMut() -> std::io::Result<TcpStream> {
    move || {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(stream)
    }
}

/// The probe over a plain TCP stream, as the pipeline runs it over an SSH channel: the test
/// server's kubeconfig skips verification, as its serving certificate is self-signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_probe_asks_the_real_server_over_a_stream() {
    let _one_at_a_time = exclusive().await;
    let server = ApiServer::start(&[]).await.unwrap();
    let port = port_of(&server.plane().url());
    let cluster = connect(server.plane().kubeconfig().to_path_buf()).await;
    let probe = cluster.node_probe().unwrap();
    assert_eq!(probe.readiness("127.0.0.1", tcp(port)), Readiness::Ready);

    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let readiness = probe.readiness("127.0.0.1", tcp(closed));
    assert!(
        matches!(&readiness, Readiness::Unreachable(reason) if reason.contains("Connection refused")),
        "{readiness:?}"
    );

    // Verified: the server's self-signed certificate (with the CA it made beside it) as the
    // kubeconfig's certificate-authority covers 127.0.0.1, and not another name.
    let dir = tempfile::tempdir().unwrap();
    let admin = std::fs::read_to_string(server.plane().kubeconfig()).unwrap();
    let serving = server.plane().dir().join("certs/apiserver.crt");
    assert!(admin.contains("insecure-skip-tls-verify: true"), "{admin}");
    let verifying = dir.path().join("kubeconfig-verifying");
    std::fs::write(
        &verifying,
        admin.replace(
            "insecure-skip-tls-verify: true",
            &format!("certificate-authority: {}", serving.display()),
        ),
    )
    .unwrap();
    let verified = connect(verifying).await.node_probe().unwrap();
    assert_eq!(verified.readiness("127.0.0.1", tcp(port)), Readiness::Ready);
    let readiness = verified.readiness("elsewhere.example", tcp(port));
    assert!(
        matches!(&readiness, Readiness::Unreachable(reason) if reason.contains("certificate not valid for name")),
        "{readiness:?}"
    );

    // A token the server does not know: 401, and the message does not carry it.
    let wrong = WRONG_TOKEN;
    let stranger = with_token(&server, dir.path(), wrong).await;
    let readiness = stranger
        .node_probe()
        .unwrap()
        .readiness("127.0.0.1", tcp(port));
    assert_eq!(
        readiness,
        Readiness::NotReady("HTTP 401: Unauthorized".into())
    );
}

/// The audit events of the ConfigMap `name` the server at `log` wrote: (verb, userAgent,
/// response code) of each, waiting a little for the log backend to write them.
fn audit_events_of(log: &std::path::Path, name: &str) -> Vec<(String, String, i64)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let events: Vec<(String, String, i64)> = text
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .filter(|event| event["objectRef"]["name"] == name)
            .map(|event| {
                (
                    event["verb"].as_str().unwrap_or_default().to_string(),
                    event["userAgent"].as_str().unwrap_or_default().to_string(),
                    event["responseStatus"]["code"].as_i64().unwrap_or_default(),
                )
            })
            .collect();
        if events.len() >= 2 || std::time::Instant::now() > deadline {
            return events;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The verify probe sent to one server over a stream, as the pipeline sends it over an SSH
/// channel to each control-plane node: that server's audit log shows its create and delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_probe_creates_and_deletes_the_probe_configmap_on_that_server() {
    let _one_at_a_time = exclusive().await;
    let audit = tempfile::tempdir().unwrap();
    let policy = audit.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n  resources:\n  - group: \"\"\n    resources: [configmaps]\n- level: None\n",
    )
    .unwrap();
    let log = audit.path().join("audit.log");
    let server = ApiServer::start(&[
        format!("--audit-policy-file={}", policy.display()),
        format!("--audit-log-path={}", log.display()),
    ])
    .await
    .unwrap();
    let port = port_of(&server.plane().url());
    let cluster = connect(server.plane().kubeconfig().to_path_buf()).await;
    let node_probe = cluster.node_probe().unwrap();
    let probe = ProbeConfigMap {
        namespace: "default".into(),
        name: "audit-probe-node-1".into(),
    };
    node_probe
        .create_and_delete_probe("127.0.0.1", tcp(port), &probe)
        .unwrap();

    // Read before the check below, whose get is audited too.
    assert_eq!(
        audit_events_of(&log, &probe.name),
        [
            ("create".to_string(), "k8s-audit".to_string(), 201),
            ("delete".to_string(), "k8s-audit".to_string(), 200),
        ]
    );
    let configmaps: Api<ConfigMap> =
        Api::namespaced(server.plane().client().await.unwrap(), "default");
    assert!(configmaps.get_opt(&probe.name).await.unwrap().is_none());

    // A probe that already exists: the create's 409, with the API's message, and no delete.
    let taken = ProbeConfigMap {
        namespace: "default".into(),
        name: "audit-probe-taken".into(),
    };
    configmaps
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": taken.name}})).unwrap(),
        )
        .await
        .unwrap();
    let err = node_probe
        .create_and_delete_probe("127.0.0.1", tcp(port), &taken)
        .unwrap_err();
    assert_eq!(err.http_status(), Some(409), "{err}");
    assert_eq!(
        err.to_string(),
        "creating ConfigMap default/audit-probe-taken on the API server at 127.0.0.1: HTTP 409: configmaps \"audit-probe-taken\" already exists"
    );
    assert!(configmaps.get_opt(&taken.name).await.unwrap().is_some());

    // A token the server does not know: 401, and the message does not carry it.
    let wrong = WRONG_TOKEN;
    let dir = tempfile::tempdir().unwrap();
    let stranger = with_token(&server, dir.path(), wrong)
        .await
        .node_probe()
        .unwrap();
    let err = stranger
        .create_and_delete_probe("127.0.0.1", tcp(port), &probe)
        .unwrap_err();
    assert_eq!(err.http_status(), Some(401), "{err}");
    assert_eq!(
        err.to_string(),
        "the API server refused our credentials (HTTP 401) when creating ConfigMap default/audit-probe-node-1 on the API server at 127.0.0.1: Unauthorized"
    );
    assert!(!format!("{err:?}").contains(wrong), "{err:?}");

    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = node_probe
        .create_and_delete_probe("127.0.0.1", tcp(closed), &probe)
        .unwrap_err();
    assert_eq!(err.http_status(), None);
    assert_eq!(
        err.to_string(),
        "creating ConfigMap default/audit-probe-node-1 on the API server at 127.0.0.1: cannot open a stream to 127.0.0.1: Connection refused (os error 111)"
    );
}

const WRONG_TOKEN: &str = "wrong-token-0123456789";

/// The server's admin kubeconfig with a token the server does not know, written in `dir`.
async fn with_token(server: &ApiServer, dir: &std::path::Path, token: &str) -> Cluster {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        std::fs::read_to_string(server.plane().kubeconfig())
            .unwrap()
            .replace(server.plane().token(), token),
    )
    .unwrap();
    connect(path).await
}

async fn connect(kubeconfig: std::path::PathBuf) -> Cluster {
    Cluster::connect(&ClusterOptions {
        kubeconfig: Some(kubeconfig),
        context: None,
    })
    .await
    .unwrap()
}
