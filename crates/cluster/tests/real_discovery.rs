//! Falco discovery against the real kube-apiserver v1.20.2 (`cargo xtask apiserver build`):
//! Services shaped like the Helm chart's k8saudit webhook and like the seed's `falco-service`
//! are each found with no flags, two at once are listed, a Service without either port is not
//! taken, and a user who may not list every namespace still finds Falco in `default` or `falco`.
//!
//! The tests only talk to the API server on loopback; no ClusterIP is ever connected to.

use cluster::{Cluster, ClusterError, ClusterOptions, FalcoQuery};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use testkit::apiserver::{ApiServer, exclusive};

/// The Service Falco's chart creates for the k8saudit plugin (release `falco`).
fn chart_service() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "falco-k8saudit-webhook", "namespace": "falco",
                     "labels": {"app.kubernetes.io/name": "falco", "app.kubernetes.io/instance": "falco"}},
        "spec": {"type": "NodePort", "clusterIP": "10.96.0.77",
                 "selector": {"app.kubernetes.io/name": "falco", "app.kubernetes.io/instance": "falco"},
                 "ports": [{"name": "k8saudit-webhook", "protocol": "TCP", "port": 9765,
                            "targetPort": 9765, "nodePort": 30007}]}
    })
}

/// The seed's Service: `falco-service` in `default`, the webserver port 8765.
fn seed_service() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "falco-service", "namespace": "default", "labels": {"app": "falco-example"}},
        "spec": {"clusterIP": "10.96.0.134", "selector": {"app": "falco-example"},
                 "ports": [{"protocol": "TCP", "port": 8765, "targetPort": 8765}]}
    })
}

/// Something else entirely, which must never be taken for Falco.
fn web_service() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "falco", "labels": {"app": "falco"}},
        "spec": {"type": "NodePort", "ports": [{"name": "http", "port": 80, "targetPort": 8080}, {"name": "https", "port": 443}]}
    })
}

async fn create(client: &kube::Client, service: &serde_json::Value) {
    let namespace = service["metadata"]["namespace"].as_str().unwrap();
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    let service: Service = serde_json::from_value(service.clone()).unwrap();
    api.create(&PostParams::default(), &service).await.unwrap();
}

async fn delete(client: &kube::Client, namespace: &str, name: &str) {
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    api.delete(name, &DeleteParams::default()).await.unwrap();
}

async fn apply<K>(client: &kube::Client, namespace: Option<&str>, object: serde_json::Value)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace.unwrap());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(object).unwrap(),
    )
    .await
    .unwrap();
}

/// A kubeconfig for the test server's admin token that acts as `user` (impersonation), so RBAC
/// decides what discovery may list.
fn kubeconfig(server: &ApiServer, dir: &std::path::Path, user: Option<&str>) -> ClusterOptions {
    let path = dir.join(format!("kubeconfig-{}", user.unwrap_or("admin")));
    let acting = user.map(|u| format!("    as: {u}\n")).unwrap_or_default();
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: {}\n{acting}contexts:\n- name: test\n  context:\n    cluster: test\n    user: u\ncurrent-context: test\n",
            server.plane().url(),
            server.plane().token()
        ),
    )
    .unwrap();
    ClusterOptions {
        kubeconfig: Some(path),
        context: None,
    }
}

fn urls(endpoint: &cluster::FalcoEndpoint) -> Vec<String> {
    endpoint.candidates.iter().map(|c| c.url()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_finds_the_chart_and_the_seed_service_with_no_flags() {
    let _one_at_a_time = exclusive().await;
    let server = ApiServer::start(&[]).await.unwrap();
    let client = server.plane().client().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::connect(&kubeconfig(&server, dir.path(), None))
        .await
        .unwrap();
    let none = FalcoQuery::default();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "falco"}})).unwrap(),
        )
        .await
        .unwrap();

    // Nothing yet, and a Service without either port is not taken.
    create(&client, &web_service()).await;
    let err = cluster.find_falco(&none).await.unwrap_err();
    assert!(matches!(err, ClusterError::NoFalcoService { .. }), "{err}");
    assert!(err.to_string().contains("in every namespace"), "{err}");

    // Named but portless: what it exposes instead.
    let err = cluster
        .find_falco(&FalcoQuery {
            name: Some("web".into()),
            ..FalcoQuery::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Service falco/web exposes no Falco audit port (8765 for the Falco webserver, 9765 for the k8saudit plugin); its ports are: 80/http, 443/https"
    );

    // The chart's Service alone: its ClusterIP, then its nodePort on loopback.
    create(&client, &chart_service()).await;
    let chart = cluster.find_falco(&none).await.unwrap();
    assert_eq!(
        (chart.namespace.as_str(), chart.name.as_str()),
        ("falco", "falco-k8saudit-webhook")
    );
    assert_eq!(
        urls(&chart),
        [
            "http://10.96.0.77:9765/k8s-audit",
            "http://127.0.0.1:30007/k8s-audit"
        ]
    );
    assert!(
        chart.reason.starts_with(
            "found by discovery in every namespace; Service falco/falco-k8saudit-webhook: port 9765"
        ),
        "{}",
        chart.reason
    );
    let forced = cluster
        .find_falco(&FalcoQuery {
            via_node_port: true,
            ..FalcoQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(urls(&forced), ["http://127.0.0.1:30007/k8s-audit"]);

    // Both: a list, never a pick.
    create(&client, &seed_service()).await;
    let err = cluster.find_falco(&none).await.unwrap_err();
    assert!(
        matches!(err, ClusterError::SeveralFalcoServices { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.ends_with(
            ":\n  falco/falco-k8saudit-webhook (NodePort, ports 9765→30007/TCP, Falco labels)\n  default/falco-service (ClusterIP, ports 8765/TCP)"
        ),
        "{text}"
    );
    assert!(
        text.contains("--falco-service and --falco-namespace"),
        "{text}"
    );
    // Either flag alone narrows the search enough.
    for query in [
        FalcoQuery {
            namespace: Some("default".into()),
            ..FalcoQuery::default()
        },
        FalcoQuery {
            name: Some("falco-service".into()),
            ..FalcoQuery::default()
        },
    ] {
        let seed = cluster.find_falco(&query).await.unwrap();
        assert_eq!(
            urls(&seed),
            ["http://10.96.0.134:8765/k8s_audit"],
            "{query:?}"
        );
    }

    // The seed's Service alone.
    delete(&client, "falco", "falco-k8saudit-webhook").await;
    let seed = cluster.find_falco(&none).await.unwrap();
    assert_eq!(
        (seed.namespace.as_str(), seed.name.as_str()),
        ("default", "falco-service")
    );
    assert_eq!(urls(&seed), ["http://10.96.0.134:8765/k8s_audit"]);
    let err = cluster
        .find_falco(&FalcoQuery {
            via_node_port: true,
            ..FalcoQuery::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Service default/falco-service is of type ClusterIP, not NodePort, so --falco-via-nodeport cannot reach it"
    );

    // A user who may list Services only in `default` and `falco` still finds it.
    create(&client, &chart_service()).await;
    delete(&client, "default", "falco-service").await;
    for namespace in ["default", "falco"] {
        apply::<Role>(
            &client,
            Some(namespace),
            serde_json::json!({
                "metadata": {"name": "list-services"},
                "rules": [{"apiGroups": [""], "resources": ["services"], "verbs": ["list", "get"]}]
            }),
        )
        .await;
        apply::<RoleBinding>(
            &client,
            Some(namespace),
            serde_json::json!({
                "metadata": {"name": "list-services"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "list-services"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "falco-finder"}]
            }),
        )
        .await;
    }
    let limited = Cluster::connect(&kubeconfig(&server, dir.path(), Some("falco-finder")))
        .await
        .unwrap();
    let found = limited.find_falco(&none).await.unwrap();
    assert_eq!(found.name, "falco-k8saudit-webhook");
    assert!(
        found.reason.starts_with(
            "found by discovery in namespace default and falco (listing every namespace is forbidden)"
        ),
        "{}",
        found.reason
    );

    // A user who may list nothing gets the refusal, not "Falco is not deployed".
    let stranger = Cluster::connect(&kubeconfig(&server, dir.path(), Some("stranger")))
        .await
        .unwrap();
    let err = stranger.find_falco(&none).await.unwrap_err();
    assert!(
        matches!(err, ClusterError::Unauthorized { code: 403, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("listing Services in every namespace, then in default and falco"),
        "{err}"
    );
}

/// The chart's Falco pods carry a falcoctl sidecar: a log request without a container name is
/// refused for them (HTTP 400), so the logs are read from the `falco` container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_a_chart_falco_pod_come_from_its_falco_container() {
    let _one_at_a_time = exclusive().await;
    let server = ApiServer::start(&[]).await.unwrap();
    let client = server.plane().client().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::connect(&kubeconfig(&server, dir.path(), None))
        .await
        .unwrap();
    // No controller manager runs here to create the default ServiceAccount pods need.
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), "default");
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}})).unwrap(),
        )
        .await
        .unwrap();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "default");
    let pod = serde_json::json!({
        "metadata": {"name": "falco-x7k2q", "labels": {"app.kubernetes.io/name": "falco"}},
        "spec": {"automountServiceAccountToken": false, "containers": [
            {"name": "falcoctl-artifact-follow", "image": "falcosecurity/falcoctl:0.7.2"},
            {"name": "falco", "image": "falcosecurity/falco:0.37.1"}
        ]}
    });
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod).unwrap(),
    )
    .await
    .unwrap();
    // No kubelet runs the pod, so its log is empty; what matters is that the server accepts
    // the request.
    let logs = cluster
        .recent_logs("app.kubernetes.io/name=falco", 60)
        .await
        .unwrap();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].pod, "falco-x7k2q");

    // The default selectors find the chart's pod and the seed's, and nothing else.
    for (name, labels) in [
        (
            "falco-example-5d9f",
            serde_json::json!({"app": "falco-example"}),
        ),
        (
            "falcosidekick-7c4b",
            serde_json::json!({"app.kubernetes.io/name": "falcosidekick"}),
        ),
    ] {
        let pod = serde_json::json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"automountServiceAccountToken": false,
                     "containers": [{"name": "c", "image": "busybox"}]}
        });
        pods.create(
            &PostParams::default(),
            &serde_json::from_value(pod).unwrap(),
        )
        .await
        .unwrap();
    }
    let mut found = Vec::new();
    for selector in cluster::FALCO_POD_SELECTORS {
        for log in cluster.recent_logs(selector, 60).await.unwrap() {
            found.push(log.pod);
        }
    }
    found.sort();
    assert_eq!(found, ["falco-example-5d9f", "falco-x7k2q"]);
}
