//! `cargo xtask record-api` runs this ignored test: it re-records the Kubernetes API responses that `crates/cluster`'s
//! tests replay, from the real kube-apiserver v1.20.2 and the kubelet stand-in. The recordings
//! are committed, so the cluster tests need no API server; this command is how they are renewed.

use std::path::Path;
use std::time::Duration;

use testkit::apiserver::ControlPlane;
use testkit::kubelet::{Kubelet, KubeletOptions, manifest_path};

const SERVICE: &str = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"falco-service","labels":{"app":"falco-example"}},"spec":{"clusterIP":"10.96.0.134","selector":{"app":"falco-example"},"ports":[{"protocol":"TCP","port":8765,"targetPort":8765}]}}"#;
/// The Service of Falco's Helm chart with the k8saudit plugin (release `falco`).
const CHART_SERVICE: &str = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"falco-k8saudit-webhook","namespace":"falco","labels":{"app.kubernetes.io/name":"falco","app.kubernetes.io/instance":"falco"}},"spec":{"type":"NodePort","clusterIP":"10.96.0.77","selector":{"app.kubernetes.io/name":"falco","app.kubernetes.io/instance":"falco"},"ports":[{"name":"k8saudit-webhook","protocol":"TCP","port":9765,"targetPort":9765,"nodePort":30007}]}}"#;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn project_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[tokio::test]
#[ignore = "re-records the committed API responses; run by `cargo xtask record-api`"]
async fn record_api() -> Result<()> {
    let out = project_root().join("crates/cluster/tests/recorded");
    let root = tempfile::tempdir()?;
    let manifest = manifest_path(root.path());
    std::fs::create_dir_all(manifest.parent().ok_or("manifest dir")?)?;
    let fixture =
        std::fs::read_to_string(project_root().join("fixtures/manifests/minikube-v1.28.yaml"))?;
    std::fs::write(
        &manifest,
        fixture.replace("kube-apiserver:v1.28.3", "kube-apiserver:v1.20.2"),
    )?;
    let options = KubeletOptions {
        root: root.path().to_path_buf(),
        manifest,
        node_name: "node1".into(),
    };
    let kubelet = Kubelet::start(ControlPlane::start()?, options)?;
    kubelet
        .wait_until(Duration::from_secs(90), |s| {
            s.ready && s.mirror_hash.is_some()
        })
        .await?;
    let client = kubelet.plane().client().await?;

    save(
        &client,
        "GET",
        "/version",
        None,
        200,
        &out.join("version-1.20.2.json"),
    )
    .await?;
    save(
        &client,
        "POST",
        "/api/v1/namespaces/default/services",
        Some(SERVICE),
        201,
        &out.join("service-falco-created.json"),
    )
    .await?;
    save(
        &client,
        "GET",
        "/api/v1/namespaces/default/services/falco-service",
        None,
        200,
        &out.join("service-falco.json"),
    )
    .await?;
    save(
        &client,
        "GET",
        "/api/v1/namespaces/falco/services/falco-service",
        None,
        404,
        &out.join("service-falco-not-found.json"),
    )
    .await?;
    // Discovery: the chart's Service beside the seed's, listed in every namespace and in each.
    save(
        &client,
        "POST",
        "/api/v1/namespaces",
        Some(r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"falco"}}"#),
        201,
        &out.join("namespace-falco-created.json"),
    )
    .await?;
    save(
        &client,
        "POST",
        "/api/v1/namespaces/falco/services",
        Some(CHART_SERVICE),
        201,
        &out.join("service-chart-created.json"),
    )
    .await?;
    save(
        &client,
        "GET",
        "/api/v1/services",
        None,
        200,
        &out.join("services-all.json"),
    )
    .await?;
    save(
        &client,
        "GET",
        "/api/v1/namespaces/default/services",
        None,
        200,
        &out.join("services-default.json"),
    )
    .await?;
    save(
        &client,
        "GET",
        "/apis/auditregistration.k8s.io/v1alpha1",
        None,
        404,
        &out.join("discovery-not-found.json"),
    )
    .await?;
    save(
        &client,
        "GET",
        "/api/v1/namespaces/kube-system/pods?labelSelector=component%3Dkube-apiserver",
        None,
        200,
        &out.join("pods-kube-apiserver.json"),
    )
    .await?;

    let mut config = kube::Config::new(kubelet.plane().url().parse()?);
    config.accept_invalid_certs = true;
    config.auth_info.token = Some("not-the-token".to_string().into());
    let stranger = kube::Client::try_from(config)?;
    save(
        &stranger,
        "GET",
        "/version",
        None,
        401,
        &out.join("unauthorized.json"),
    )
    .await?;
    // A user RBAC grants nothing: what discovery meets when it may not list every namespace.
    let mut config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubelet.plane().kubeconfig())?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    config.auth_info.impersonate = Some("falco-finder".to_string());
    let limited = kube::Client::try_from(config)?;
    save(
        &limited,
        "GET",
        "/api/v1/services",
        None,
        403,
        &out.join("services-all-forbidden.json"),
    )
    .await?;
    save(
        &limited,
        "GET",
        "/api/v1/namespaces/falco/services",
        None,
        403,
        &out.join("services-falco-forbidden.json"),
    )
    .await?;
    println!("recorded into {}", out.display());
    Ok(())
}

/// The ConfigMap kubeadm 1.20 writes at `kubeadm init`, with the ClusterConfiguration of the
/// hand-written fixture (fixtures/kubeadm-config).
fn kubeadm_config_map() -> Result<String> {
    let text = std::fs::read_to_string(
        project_root().join("fixtures/kubeadm-config/kubeadm-v1beta2.yaml"),
    )?;
    let status = "apiEndpoints:\n  node1:\n    advertiseAddress: 10.0.0.10\n    bindPort: 6443\napiVersion: kubeadm.k8s.io/v1beta2\nkind: ClusterStatus\n";
    Ok(serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": "kubeadm-config", "namespace": "kube-system" },
        "data": { "ClusterConfiguration": text, "ClusterStatus": status },
    })
    .to_string())
}

/// The kubeadm-config ConfigMap: absent, read, patched at its resourceVersion, patched at a
/// stale one (409), and read and patched by a user without RBAC on it (403). Only the API
/// server is needed, not the kubelet.
#[tokio::test]
#[ignore = "re-records the committed API responses; run by `cargo xtask record-api`"]
async fn record_kubeadm_config_api() -> Result<()> {
    let out = project_root().join("crates/cluster/tests/recorded");
    let _one = testkit::apiserver::exclusive().await;
    let server = testkit::apiserver::ApiServer::start(&[]).await?;
    let client = server.plane().client().await?;
    const PATH: &str = "/api/v1/namespaces/kube-system/configmaps/kubeadm-config";
    save(
        &client,
        "GET",
        PATH,
        None,
        404,
        &out.join("kubeadm-config-not-found.json"),
    )
    .await?;
    let created = save(
        &client,
        "POST",
        "/api/v1/namespaces/kube-system/configmaps",
        Some(&kubeadm_config_map()?),
        201,
        &out.join("kubeadm-config-created.json"),
    )
    .await?;
    save(
        &client,
        "GET",
        PATH,
        None,
        200,
        &out.join("kubeadm-config.json"),
    )
    .await?;
    let read_at = created["metadata"]["resourceVersion"]
        .as_str()
        .ok_or("no resourceVersion")?
        .to_string();
    let text = created["data"]["ClusterConfiguration"]
        .as_str()
        .ok_or("no ClusterConfiguration")?
        .replace(
            "authorization-mode: Node,RBAC\n",
            "authorization-mode: Node,RBAC\n    v: \"2\"\n",
        );
    let patch = |at: &str| {
        serde_json::json!({
            "metadata": { "resourceVersion": at },
            "data": { "ClusterConfiguration": text },
        })
        .to_string()
    };
    let merge = Some("application/merge-patch+json");
    save_as(
        &client,
        "PATCH",
        PATH,
        Some(&patch(&read_at)),
        merge,
        None,
        200,
        &out.join("kubeadm-config-patched.json"),
    )
    .await?;
    // The same patch again, at the version read before the first one.
    save_as(
        &client,
        "PATCH",
        PATH,
        Some(&patch(&read_at)),
        merge,
        None,
        409,
        &out.join("kubeadm-config-conflict.json"),
    )
    .await?;
    // An authenticated user with no RBAC binding, by impersonation (the admin may impersonate).
    let nobody = Some("system:serviceaccount:default:nobody");
    save_as(
        &client,
        "GET",
        PATH,
        None,
        None,
        nobody,
        403,
        &out.join("kubeadm-config-forbidden.json"),
    )
    .await?;
    save_as(
        &client,
        "PATCH",
        PATH,
        Some(&patch(&read_at)),
        merge,
        nobody,
        403,
        &out.join("kubeadm-config-forbidden-patch.json"),
    )
    .await?;
    println!("recorded into {}", out.display());
    Ok(())
}

/// Three control-plane nodes as kubeadm (new and old role label) and kops leave them, one
/// labelled node without a mirror pod, a worker, and an ordinary pod with the apiserver's label
/// (not a mirror pod); then the lists `Cluster::control_plane` asks for, in its order, and a
/// status patch that sets a mirror pod's hostIP. Only the API server is needed.
#[tokio::test]
#[ignore = "re-records the committed API responses; run by `cargo xtask record-api`"]
async fn record_control_plane_api() -> Result<()> {
    let out = project_root().join("crates/cluster/tests/recorded");
    let _one = testkit::apiserver::exclusive().await;
    let server = testkit::apiserver::ApiServer::start(&[]).await?;
    let client = server.plane().client().await?;
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(client.clone(), "kube-system");
    let accounts: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
        kube::Api::namespaced(client.clone(), "kube-system");
    let create = kube::api::PostParams::default();
    for (name, role) in [
        ("cp-a", "node-role.kubernetes.io/control-plane"),
        ("cp-b", "node-role.kubernetes.io/master"),
        ("cp-c", "node-role.kubernetes.io/control-plane"),
        ("cp-d", "node-role.kubernetes.io/control-plane"),
        ("worker-1", "node-role.kubernetes.io/worker"),
    ] {
        let node = serde_json::json!({"metadata": {"name": name, "labels": {role: ""}}});
        nodes
            .create(&create, &serde_json::from_value(node)?)
            .await?;
    }
    let mirror = |name: &str, node: &str, labels: serde_json::Value, command: &str| {
        let hash = format!("{name}-hash");
        serde_json::json!({
            "metadata": {"name": name, "namespace": "kube-system", "labels": labels,
                         "annotations": {"kubernetes.io/config.mirror": hash,
                                         "kubernetes.io/config.hash": hash,
                                         "kubernetes.io/config.source": "file"}},
            "spec": {"nodeName": node, "hostNetwork": true,
                     "containers": [{"name": "kube-apiserver",
                                     "image": "k8s.gcr.io/kube-apiserver:v1.20.2",
                                     "command": command.split_whitespace().collect::<Vec<_>>()}]}
        })
    };
    let kubeadm = serde_json::json!({"component": "kube-apiserver", "tier": "control-plane"});
    for pod in [
        mirror(
            "kube-apiserver-cp-a",
            "cp-a",
            kubeadm.clone(),
            "kube-apiserver --advertise-address=10.0.0.1 --secure-port=8443",
        ),
        mirror(
            "kube-apiserver-cp-b",
            "cp-b",
            kubeadm,
            "kube-apiserver --advertise-address=10.0.0.2",
        ),
        mirror(
            "kube-apiserver-cp-c",
            "cp-c",
            serde_json::json!({"k8s-app": "kube-apiserver"}),
            "/go-runner --log-file=/var/log/kube-apiserver.log /usr/local/bin/kube-apiserver --secure-port 443",
        ),
    ] {
        pods.create(&create, &serde_json::from_value(pod)?).await?;
    }
    accounts
        .create(
            &create,
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}}))?,
        )
        .await?;
    let impostor = serde_json::json!({
        "metadata": {"name": "kube-apiserver-worker-1", "namespace": "kube-system",
                     "labels": {"component": "kube-apiserver"}},
        "spec": {"nodeName": "worker-1", "automountServiceAccountToken": false,
                 "containers": [{"name": "kube-apiserver", "image": "k8s.gcr.io/kube-apiserver:v1.20.2"}]}
    });
    pods.create(&create, &serde_json::from_value(impostor)?)
        .await?;
    let merge = Some("application/merge-patch+json");
    for (pod, ip) in [
        ("kube-apiserver-cp-a", "10.0.0.1"),
        ("kube-apiserver-cp-c", "10.0.0.3"),
    ] {
        save_as(
            &client,
            "PATCH",
            &format!("/api/v1/namespaces/kube-system/pods/{pod}/status"),
            Some(&serde_json::json!({"status": {"hostIP": ip, "phase": "Running"}}).to_string()),
            merge,
            None,
            200,
            &out.join(format!("pod-status-{pod}.json")),
        )
        .await?;
    }
    for (selector, file) in [
        (
            "component%3Dkube-apiserver",
            "control-plane-pods-component.json",
        ),
        (
            "k8s-app%3Dkube-apiserver",
            "control-plane-pods-k8s-app.json",
        ),
    ] {
        save(
            &client,
            "GET",
            &format!("/api/v1/namespaces/kube-system/pods?labelSelector={selector}"),
            None,
            200,
            &out.join(file),
        )
        .await?;
    }
    for (label, file) in [
        ("control-plane", "control-plane-nodes.json"),
        ("master", "control-plane-nodes-master.json"),
    ] {
        save(
            &client,
            "GET",
            &format!("/api/v1/nodes?labelSelector=node-role.kubernetes.io%2F{label}"),
            None,
            200,
            &out.join(file),
        )
        .await?;
    }
    // A user without a cluster-wide binding, by impersonation (the admin may impersonate).
    save_as(
        &client,
        "GET",
        "/api/v1/nodes?labelSelector=node-role.kubernetes.io%2Fcontrol-plane",
        None,
        None,
        Some("system:serviceaccount:default:nobody"),
        403,
        &out.join("nodes-forbidden.json"),
    )
    .await?;
    println!("recorded into {}", out.display());
    Ok(())
}

async fn save(
    client: &kube::Client,
    method: &str,
    path: &str,
    body: Option<&str>,
    want: u16,
    to: &Path,
) -> Result<serde_json::Value> {
    save_as(client, method, path, body, None, None, want, to).await
}

/// `save` with another content type and, optionally, as an impersonated user.
#[allow(clippy::too_many_arguments)]
async fn save_as(
    client: &kube::Client,
    method: &str,
    path: &str,
    body: Option<&str>,
    content_type: Option<&str>,
    impersonate: Option<&str>,
    want: u16,
    to: &Path,
) -> Result<serde_json::Value> {
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type.unwrap_or("application/json"));
    if let Some(user) = impersonate {
        request = request.header("impersonate-user", user);
    }
    let request = request.body(body.unwrap_or_default().as_bytes().to_vec())?;
    let response = client.send(request.map(kube::client::Body::from)).await?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect_bytes().await?;
    if status != want {
        return Err(format!(
            "{method} {path}: HTTP {status}, expected {want}: {}",
            String::from_utf8_lossy(&bytes)
        )
        .into());
    }
    let value = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
    let pretty = match &value {
        Some(value) => serde_json::to_string_pretty(value)? + "\n",
        None => String::from_utf8_lossy(&bytes).into_owned(),
    };
    std::fs::write(to, pretty).map_err(|e| format!("writing {}: {e}", to.display()))?;
    println!(
        "{method} {path} -> {status} ({} bytes) {}",
        bytes.len(),
        to.display()
    );
    Ok(value.unwrap_or_default())
}
