//! `cargo xtask record-api` runs this ignored test: it re-records the Kubernetes API responses that `crates/cluster`'s
//! tests replay, from the real kube-apiserver v1.20.2 and the kubelet stand-in. The recordings
//! are committed, so the cluster tests need no API server; this command is how they are renewed.

use std::path::Path;
use std::time::Duration;

use testkit::apiserver::ControlPlane;
use testkit::kubelet::{Kubelet, KubeletOptions, manifest_path};

const SERVICE: &str = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"falco-service","labels":{"app":"falco-example"}},"spec":{"clusterIP":"10.96.0.134","selector":{"app":"falco-example"},"ports":[{"protocol":"TCP","port":8765,"targetPort":8765}]}}"#;

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
        std::fs::read_to_string(project_root().join("fixtures/manifests/kubeadm-v1.28.yaml"))?;
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
) -> Result<()> {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body.unwrap_or_default().as_bytes().to_vec())?;
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
    let pretty = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(value) => serde_json::to_string_pretty(&value)? + "\n",
        Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
    };
    std::fs::write(to, pretty).map_err(|e| format!("writing {}: {e}", to.display()))?;
    println!(
        "{method} {path} -> {status} ({} bytes) {}",
        bytes.len(),
        to.display()
    );
    Ok(())
}
