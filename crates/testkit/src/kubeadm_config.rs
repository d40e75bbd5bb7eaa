//! The `kube-system/kubeadm-config` ConfigMap on a test API server, for tests whose own
//! package may not use kube (the pipeline's): create it as `kubeadm init` would, and read its
//! ClusterConfiguration back.

use std::path::Path;

const CONFIGMAPS: &str = "/api/v1/namespaces/kube-system/configmaps";

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}

async fn client(kubeconfig: &Path) -> kube::Client {
    let config = kube::config::Kubeconfig::read_from(kubeconfig).expect("a kubeconfig");
    let config =
        kube::Config::from_custom_kubeconfig(config, &kube::config::KubeConfigOptions::default())
            .await
            .expect("a usable kubeconfig");
    kube::Client::try_from(config).expect("a kube client")
}

async fn send(
    client: &kube::Client,
    method: http::Method,
    path: &str,
    body: Vec<u8>,
) -> (u16, String) {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body)
        .expect("a request");
    let response = client
        .send(request.map(kube::client::Body::from))
        .await
        .expect("the API server answers");
    let status = response.status().as_u16();
    let bytes = response.into_body().collect_bytes().await.expect("a body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// Creates kubeadm-config with this ClusterConfiguration (and a ClusterStatus, as kubeadm
/// writes both).
pub fn create(kubeconfig: &Path, cluster_configuration: &str) {
    block_on(async {
        let client = client(kubeconfig).await;
        let body = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
            "data": {
                "ClusterConfiguration": cluster_configuration,
                "ClusterStatus": "apiVersion: kubeadm.k8s.io/v1beta2\nkind: ClusterStatus\n",
            },
        });
        let (status, text) = send(
            &client,
            http::Method::POST,
            CONFIGMAPS,
            serde_json::to_vec(&body).expect("JSON"),
        )
        .await;
        assert_eq!(status, 201, "creating kubeadm-config: {text}");
    })
}

/// The ClusterConfiguration text kubeadm-config holds now.
pub fn read(kubeconfig: &Path) -> String {
    block_on(async {
        let client = client(kubeconfig).await;
        let (status, text) = send(
            &client,
            http::Method::GET,
            &format!("{CONFIGMAPS}/kubeadm-config"),
            Vec::new(),
        )
        .await;
        assert_eq!(status, 200, "reading kubeadm-config: {text}");
        let map: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        map["data"]["ClusterConfiguration"]
            .as_str()
            .expect("a ClusterConfiguration key")
            .to_string()
    })
}
