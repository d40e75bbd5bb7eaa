//! The cluster calls against a server that replays Kubernetes API responses. Those from
//! v1.20.2 were recorded from the real kube-apiserver with `cargo xtask record-api`; the
//! AuditSink ones cannot be (the API went away in 1.19) and follow the v1alpha1 schema.

use cluster::{Applied, Cluster, ClusterError, ClusterOptions, FalcoQuery, Readiness};
use testkit::replay::{ReplayServer, Reply};

fn recorded(name: &str) -> String {
    let path = format!("{}/tests/recorded/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

async fn connect(server: &ReplayServer, dir: &tempfile::TempDir) -> Cluster {
    let options = ClusterOptions {
        kubeconfig: Some(server.write_kubeconfig(dir.path())),
        context: None,
    };
    Cluster::connect(&options).await.expect("kubeconfig loads")
}

#[tokio::test]
async fn version_and_credentials() {
    let server = ReplayServer::start();
    server.route(
        "GET",
        "/version",
        [Reply::json(200, recorded("version-1.20.2.json"))],
    );
    let dir = tempfile::tempdir().unwrap();
    let cluster = connect(&server, &dir).await;
    assert_eq!(cluster.version().await.unwrap(), "v1.20.2");

    let refusing = ReplayServer::start();
    refusing.route(
        "GET",
        "/version",
        [Reply::json(401, recorded("unauthorized.json"))],
    );
    let dir = tempfile::tempdir().unwrap();
    let err = connect(&refusing, &dir).await.version().await.unwrap_err();
    assert!(
        matches!(err, ClusterError::Unauthorized { code: 401, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the API server refused our credentials (HTTP 401) when reading /version: Unauthorized"
    );
}

#[tokio::test]
async fn falco_service_lookup() {
    let server = ReplayServer::start();
    server.route(
        "GET",
        "/api/v1/namespaces/default/services/falco-service",
        [Reply::json(200, recorded("service-falco.json"))],
    );
    server.route(
        "GET",
        "/api/v1/namespaces/falco/services/falco-service",
        [Reply::json(404, recorded("service-falco-not-found.json"))],
    );
    let dir = tempfile::tempdir().unwrap();
    let cluster = connect(&server, &dir).await;
    let endpoint = cluster
        .falco_endpoint("default", "falco-service", false)
        .await
        .unwrap();
    assert_eq!(endpoint.url(), "http://10.96.0.134:8765/k8s_audit");

    let err = cluster
        .falco_endpoint("falco", "falco-service", false)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClusterError::FalcoServiceMissing { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("--falco-url"), "{err}");
}

/// Discovery over the recorded lists: the chart's and the seed's Service together are listed,
/// not picked; the `kubernetes` Service (443) is never a candidate.
#[tokio::test]
async fn discovery_lists_every_candidate() {
    let server = ReplayServer::start();
    server.route(
        "GET",
        "/api/v1/services",
        [Reply::json(200, recorded("services-all.json"))],
    );
    let dir = tempfile::tempdir().unwrap();
    let cluster = connect(&server, &dir).await;
    let err = cluster
        .find_falco(&FalcoQuery::default())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "several Services expose Falco's audit port (9765 or 8765), and choosing one would be a guess; name one with --falco-service and --falco-namespace:\n  falco/falco-k8saudit-webhook (NodePort, ports 9765→30007/TCP, Falco labels)\n  default/falco-service (ClusterIP, ports 8765/TCP)"
    );
}

/// Forbidden to list every namespace, discovery lists `default` and `falco` one by one; a
/// namespace it may not list either is skipped, and what remains is enough.
#[tokio::test]
async fn discovery_falls_back_to_default_and_falco_on_403() {
    let server = ReplayServer::start();
    server.route(
        "GET",
        "/api/v1/services",
        [Reply::json(403, recorded("services-all-forbidden.json"))],
    );
    server.route(
        "GET",
        "/api/v1/namespaces/default/services",
        [Reply::json(200, recorded("services-default.json"))],
    );
    server.route(
        "GET",
        "/api/v1/namespaces/falco/services",
        [Reply::json(403, recorded("services-falco-forbidden.json"))],
    );
    let dir = tempfile::tempdir().unwrap();
    let cluster = connect(&server, &dir).await;
    let endpoint = cluster.find_falco(&FalcoQuery::default()).await.unwrap();
    assert_eq!(endpoint.url(), "http://10.96.0.134:8765/k8s_audit");
    assert_eq!(
        endpoint.reason,
        "found by discovery in namespace default (listing every namespace is forbidden); Service default/falco-service: port 8765 is the classic Falco webserver"
    );
    let paths: Vec<String> = server.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(
        paths,
        [
            "/api/v1/services",
            "/api/v1/namespaces/default/services",
            "/api/v1/namespaces/falco/services"
        ]
    );
}

#[tokio::test]
async fn readiness_goes_from_refused_to_ready() {
    let server = ReplayServer::start();
    server.route(
        "GET",
        "/readyz",
        [
            Reply::Drop,
            Reply::json(500, recorded("readyz-etcd-failed.txt")),
            Reply::json(200, "ok"),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let cluster = connect(&server, &dir).await;
    assert!(matches!(
        cluster.readiness().await,
        Readiness::Unreachable(_)
    ));
    match cluster.readiness().await {
        Readiness::NotReady(why) => assert!(why.contains("etcd failed"), "{why}"),
        other => panic!("expected NotReady, got {other:?}"),
    }
    assert_eq!(cluster.readiness().await, Readiness::Ready);
}

#[tokio::test]
async fn readiness_falls_back_to_healthz_on_old_servers() {
    let server = ReplayServer::start();
    server.route("GET", "/readyz", [Reply::json(404, "404 page not found")]);
    server.route("GET", "/healthz", [Reply::json(200, "ok")]);
    let dir = tempfile::tempdir().unwrap();
    let cluster = connect(&server, &dir).await;
    assert_eq!(cluster.readiness().await, Readiness::Ready);
    let paths: Vec<String> = server.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/readyz", "/healthz"]);
}

#[tokio::test]
async fn unreachable_server_is_not_ready() {
    // A port nobody listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{port}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user: {{}}\n"),
    )
    .unwrap();
    let cluster = Cluster::connect(&ClusterOptions {
        kubeconfig: Some(kubeconfig),
        context: None,
    })
    .await
    .unwrap();
    assert!(matches!(
        cluster.readiness().await,
        Readiness::Unreachable(_)
    ));
    let err = cluster.version().await.unwrap_err();
    assert!(matches!(err, ClusterError::Unreachable { .. }), "{err:?}");
}

#[tokio::test]
async fn mirror_pod_hash_and_command() {
    let server = ReplayServer::start();
    server.route(
        "GET",
        "/api/v1/namespaces/kube-system/pods",
        [Reply::json(200, recorded("pods-kube-apiserver.json"))],
    );
    let dir = tempfile::tempdir().unwrap();
    let cluster = connect(&server, &dir).await;
    let pod = cluster
        .apiserver_mirror_pod(None)
        .await
        .unwrap()
        .expect("one mirror pod");
    assert_eq!(pod.name, "kube-apiserver-node1");
    assert_eq!(pod.config_hash.as_deref(), Some("9782ef0f40fcc32e"));
    assert_eq!(pod.command[0], "kube-apiserver");
    assert!(pod.command.contains(&"--secure-port=8443".to_string()));
}

const SINK: &str = "apiVersion: auditregistration.k8s.io/v1alpha1\nkind: AuditSink\nmetadata:\n  name: falco-audit-sink\nspec:\n  policy:\n    level: RequestResponse\n    stages:\n    - ResponseComplete\n  webhook:\n    throttle:\n      qps: 10\n      burst: 15\n    clientConfig:\n      url: \"http://10.0.0.134:8765/k8s_audit\"\n";

#[tokio::test]
async fn audit_sink_needs_the_api_group() {
    let server = ReplayServer::start();
    server.route(
        "GET",
        "/apis/auditregistration.k8s.io/v1alpha1",
        [Reply::json(404, recorded("discovery-not-found.json"))],
    );
    let dir = tempfile::tempdir().unwrap();
    let cluster = connect(&server, &dir).await;
    let err = cluster.apply_audit_sink(SINK).await.unwrap_err();
    assert!(
        matches!(err, ClusterError::AuditRegistrationNotServed),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("--runtime-config=auditregistration.k8s.io/v1alpha1=true")
    );
    assert!(!cluster.delete_audit_sink("falco-audit-sink").await.unwrap());
}

#[tokio::test]
async fn audit_sink_is_created_then_replaced() {
    let server = ReplayServer::start();
    server.route(
        "GET",
        "/apis/auditregistration.k8s.io/v1alpha1",
        [Reply::json(
            200,
            recorded("discovery-auditregistration.json"),
        )],
    );
    server.route(
        "GET",
        "/apis/auditregistration.k8s.io/v1alpha1/auditsinks/falco-audit-sink",
        [
            Reply::json(404, recorded("auditsink-not-found.json")),
            Reply::json(200, recorded("auditsink.json")),
        ],
    );
    server.route(
        "POST",
        "/apis/auditregistration.k8s.io/v1alpha1/auditsinks",
        [Reply::json(201, recorded("auditsink.json"))],
    );
    server.route(
        "PUT",
        "/apis/auditregistration.k8s.io/v1alpha1/auditsinks/falco-audit-sink",
        [Reply::json(200, recorded("auditsink.json"))],
    );
    let dir = tempfile::tempdir().unwrap();
    let cluster = connect(&server, &dir).await;
    assert_eq!(
        cluster.apply_audit_sink(SINK).await.unwrap(),
        Applied::Created
    );
    assert_eq!(
        cluster.apply_audit_sink(SINK).await.unwrap(),
        Applied::Replaced
    );

    let seen = server.seen();
    let put = seen.iter().find(|s| s.method == "PUT").expect("a PUT");
    let body: serde_json::Value = serde_json::from_str(&put.body).unwrap();
    // A replace must carry the resourceVersion it read, or the server rejects it.
    assert_eq!(body["metadata"]["resourceVersion"], "1044");
    assert_eq!(
        body["spec"]["webhook"]["clientConfig"]["url"],
        "http://10.0.0.134:8765/k8s_audit"
    );
    assert!(
        seen.iter().all(|s| s.method != "PATCH"),
        "no server-side apply"
    );
}

const FALCO_PODS: &str = r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"2001"},"items":[{"metadata":{"name":"falco-7x2kq","namespace":"falco","labels":{"app":"falco-example"}},"spec":{"containers":[{"name":"falco","image":"falcosecurity/falco:0.31.1"}]}}]}"#;

const FALCO_LOG: &str = "Thu Nov 26 16:40:01 2026: Falco initialized with configuration file /etc/falco/falco.yaml\n16:41:07.123456789: Notice K8s ConfigMap Created (user=admin configmap=audit-probe-1 ns=default resp=201 decision=allow reason=)\n";

#[tokio::test]
async fn falco_logs_are_read_from_every_matching_pod() {
    let server = ReplayServer::start();
    server.route("GET", "/api/v1/pods", [Reply::json(200, FALCO_PODS)]);
    server.route(
        "GET",
        "/api/v1/namespaces/falco/pods/falco-7x2kq/log",
        [Reply::json(200, FALCO_LOG)],
    );
    let dir = tempfile::tempdir().unwrap();
    let cluster = connect(&server, &dir).await;
    let logs = cluster.recent_logs("app=falco-example", 600).await.unwrap();
    assert_eq!(logs.len(), 1);
    assert_eq!(
        (logs[0].namespace.as_str(), logs[0].pod.as_str()),
        ("falco", "falco-7x2kq")
    );
    assert!(
        logs[0].text.contains("configmap=audit-probe-1"),
        "{}",
        logs[0].text
    );

    let mut lines = Vec::new();
    let followed = cluster
        .follow_logs("app=falco-example", |line| lines.push(line.to_string()))
        .await
        .unwrap();
    assert_eq!(
        followed,
        Some(("falco".to_string(), "falco-7x2kq".to_string()))
    );
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[1].starts_with("16:41:07.123456789: Notice K8s ConfigMap Created"));
}

#[tokio::test]
async fn no_falco_pod_is_not_an_error_but_nothing_to_follow() {
    let server = ReplayServer::start();
    server.route(
        "GET",
        "/api/v1/pods",
        [Reply::json(
            200,
            r#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[]}"#,
        )],
    );
    let dir = tempfile::tempdir().unwrap();
    let cluster = connect(&server, &dir).await;
    assert!(
        cluster
            .recent_logs("app=falco", 60)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        cluster.follow_logs("app=falco", |_| {}).await.unwrap(),
        None
    );
}

const KUBEADM_CONFIG: &str = "/api/v1/namespaces/kube-system/configmaps/kubeadm-config";

#[tokio::test]
async fn kubeadm_config_read_and_update_with_its_resource_version() {
    let server = ReplayServer::start();
    server.route(
        "GET",
        KUBEADM_CONFIG,
        [Reply::json(200, recorded("kubeadm-config.json"))],
    );
    server.route(
        "PATCH",
        KUBEADM_CONFIG,
        [
            Reply::json(200, recorded("kubeadm-config-patched.json")),
            Reply::json(409, recorded("kubeadm-config-conflict.json")),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let cluster = connect(&server, &dir).await;
    let read = cluster.read_kubeadm_config().await.unwrap().unwrap();
    let recorded_map: serde_json::Value =
        serde_json::from_str(&recorded("kubeadm-config.json")).unwrap();
    assert_eq!(
        read.resource_version,
        recorded_map["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
    );
    assert!(
        read.cluster_configuration
            .starts_with("apiServer:\n  extraArgs:\n    authorization-mode: Node,RBAC\n"),
        "{}",
        read.cluster_configuration
    );
    let new_text = read
        .cluster_configuration
        .replace("Node,RBAC\n", "Node,RBAC\n    v: \"2\"\n");
    let patched: serde_json::Value =
        serde_json::from_str(&recorded("kubeadm-config-patched.json")).unwrap();
    let new_version = cluster
        .update_kubeadm_config(&new_text, &read.resource_version)
        .await
        .unwrap();
    assert_eq!(
        new_version,
        patched["metadata"]["resourceVersion"].as_str().unwrap()
    );
    // What went over the wire: a merge patch of the one key, carrying the version read.
    let seen = server.seen();
    let sent = seen.iter().rfind(|s| s.method == "PATCH").unwrap();
    let body: serde_json::Value = serde_json::from_str(&sent.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "metadata": {"resourceVersion": read.resource_version},
            "data": {"ClusterConfiguration": new_text},
        })
    );
    // The second time, someone else wrote in between.
    let err = cluster
        .update_kubeadm_config(&new_text, &read.resource_version)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClusterError::KubeadmConfigConflict { .. }),
        "{err:?}"
    );
    assert_eq!(err.http_status(), Some(409));
    assert!(
        err.to_string()
            .starts_with("ConfigMap kube-system/kubeadm-config changed since it was read (HTTP 409 Conflict: Operation cannot be fulfilled"),
        "{err}"
    );
}

#[tokio::test]
async fn kubeadm_config_absent_is_none() {
    let server = ReplayServer::start();
    server.route(
        "GET",
        KUBEADM_CONFIG,
        [Reply::json(404, recorded("kubeadm-config-not-found.json"))],
    );
    let dir = tempfile::tempdir().unwrap();
    let cluster = connect(&server, &dir).await;
    assert_eq!(cluster.read_kubeadm_config().await.unwrap(), None);
}

#[tokio::test]
async fn kubeadm_config_without_rbac_is_forbidden_with_the_fix() {
    let server = ReplayServer::start();
    server.route(
        "GET",
        KUBEADM_CONFIG,
        [Reply::json(403, recorded("kubeadm-config-forbidden.json"))],
    );
    server.route(
        "PATCH",
        KUBEADM_CONFIG,
        [Reply::json(
            403,
            recorded("kubeadm-config-forbidden-patch.json"),
        )],
    );
    let dir = tempfile::tempdir().unwrap();
    let cluster = connect(&server, &dir).await;
    let err = cluster.read_kubeadm_config().await.unwrap_err();
    assert!(
        matches!(
            err,
            ClusterError::KubeadmConfigForbidden {
                verb: "reading",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.http_status(), Some(403));
    let shown = err.to_string();
    assert!(shown.starts_with("reading ConfigMap kube-system/kubeadm-config is forbidden (HTTP 403: configmaps \"kubeadm-config\" is forbidden: User \"system:serviceaccount:default:nobody\" cannot get resource"), "{shown}");
    assert!(
        shown.contains("RBAC permission to get and patch ConfigMaps in kube-system"),
        "{shown}"
    );
    let err = cluster.update_kubeadm_config("x", "").await.unwrap_err();
    assert!(
        matches!(err, ClusterError::KubeadmConfigConflict { .. }),
        "an unconditional write is never sent: {err:?}"
    );
    assert!(!server.seen().iter().any(|s| s.method == "PATCH"));
    let err = cluster.update_kubeadm_config("x", "1").await.unwrap_err();
    assert!(
        matches!(
            err,
            ClusterError::KubeadmConfigForbidden {
                verb: "updating",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn kubeadm_config_without_its_key_is_an_error() {
    let mut map: serde_json::Value =
        serde_json::from_str(&recorded("kubeadm-config.json")).unwrap();
    map["data"]
        .as_object_mut()
        .unwrap()
        .remove("ClusterConfiguration");
    let server = ReplayServer::start();
    server.route("GET", KUBEADM_CONFIG, [Reply::json(200, map.to_string())]);
    let dir = tempfile::tempdir().unwrap();
    let cluster = connect(&server, &dir).await;
    let err = cluster.read_kubeadm_config().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "ConfigMap kube-system/kubeadm-config has no ClusterConfiguration key (its keys: ClusterStatus); expected the one kubeadm writes"
    );
}

/// `control_plane` over lists recorded from the real server (`record_control_plane_api`): the
/// kubeadm pods, the kops pod by its own label, the ordinary pod with the apiserver's label left
/// out, and the old `master` role label counted as a control plane.
#[tokio::test]
async fn control_plane_from_recorded_lists() {
    let server = ReplayServer::start();
    // The replay server ignores query strings, so each list answers in the order asked.
    server.route(
        "GET",
        "/api/v1/namespaces/kube-system/pods",
        [
            Reply::json(200, recorded("control-plane-pods-component.json")),
            Reply::json(200, recorded("control-plane-pods-k8s-app.json")),
        ],
    );
    server.route(
        "GET",
        "/api/v1/nodes",
        [
            Reply::json(200, recorded("control-plane-nodes.json")),
            Reply::json(200, recorded("control-plane-nodes-master.json")),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let cluster = connect(&server, &dir).await;
    let found = cluster.control_plane().await.unwrap();
    let summary: Vec<_> = found
        .apiservers
        .iter()
        .map(|a| {
            (
                a.node_name.as_str(),
                a.pod_name.as_str(),
                a.host_ip.as_deref(),
                a.secure_port,
                a.config_hash.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "cp-a",
                "kube-apiserver-cp-a",
                Some("10.0.0.1"),
                8443,
                Some("kube-apiserver-cp-a-hash")
            ),
            (
                "cp-b",
                "kube-apiserver-cp-b",
                None,
                6443,
                Some("kube-apiserver-cp-b-hash")
            ),
            (
                "cp-c",
                "kube-apiserver-cp-c",
                Some("10.0.0.3"),
                443,
                Some("kube-apiserver-cp-c-hash")
            ),
        ]
    );
    assert_eq!(
        found.apiservers[2].command,
        [
            "/go-runner",
            "--log-file=/var/log/kube-apiserver.log",
            "/usr/local/bin/kube-apiserver",
            "--secure-port",
            "443"
        ]
    );
    assert_eq!(found.labelled_without_pod, ["cp-d"]);
    let asked: Vec<_> = server.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(
        asked,
        [
            "/api/v1/namespaces/kube-system/pods",
            "/api/v1/namespaces/kube-system/pods",
            "/api/v1/nodes",
            "/api/v1/nodes"
        ]
    );
}

/// Listing Nodes needs a cluster-wide permission; without it the answer is an error that says
/// what was being listed, not a control plane with every node missing.
#[tokio::test]
async fn control_plane_without_permission_to_list_nodes() {
    let server = ReplayServer::start();
    server.route(
        "GET",
        "/api/v1/namespaces/kube-system/pods",
        [Reply::json(
            200,
            recorded("control-plane-pods-component.json"),
        )],
    );
    server.route(
        "GET",
        "/api/v1/nodes",
        [Reply::json(403, recorded("nodes-forbidden.json"))],
    );
    let dir = tempfile::tempdir().unwrap();
    let err = connect(&server, &dir)
        .await
        .control_plane()
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClusterError::Unauthorized { code: 403, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("when listing Nodes labelled node-role.kubernetes.io/control-plane"),
        "{err}"
    );
}
