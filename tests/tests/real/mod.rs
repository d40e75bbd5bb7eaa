//! Helpers shared by the real kube-apiserver tests.
// Each test binary includes this module and uses a subset of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The repository's bundled template, with `${VAR}` replaced as `render --strict` would.
pub fn render_fixture(relative: &str, vars: &[(&str, &str)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative);
    let mut text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    for (name, value) in vars {
        text = text.replace(&format!("${{{name}}}"), value);
    }
    assert!(
        !text.contains("${"),
        "{relative}: unrendered variable left in\n{text}"
    );
    text
}

/// The bundled Falco policy and a webhook kubeconfig for `url`, written into `dir`.
pub fn write_audit_files(dir: &Path, url: &str) -> (PathBuf, PathBuf) {
    let policy = dir.join("audit-policy.yaml");
    let webhook = dir.join("webhook-config.yaml");
    std::fs::write(
        &policy,
        render_fixture(
            "crates/pipeline/assets/audit-policy.yaml.in",
            &[("AUDIT_API_VERSION", "audit.k8s.io/v1")],
        ),
    )
    .expect("write policy");
    std::fs::write(
        &webhook,
        render_fixture(
            "crates/pipeline/assets/webhook-config.yaml.in",
            &[("FALCO_URL", url)],
        ),
    )
    .expect("write webhook config");
    (policy, webhook)
}

/// A ConfigMap name no other run uses.
pub fn unique_name(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Sends one API request and returns the JSON answer; panics with the server's reason.
pub async fn call(
    client: &kube::Client,
    method: http::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let request = http::Request::builder()
        .method(method.clone())
        .uri(path)
        .header("content-type", "application/json")
        .body(bytes)
        .expect("valid request");
    let text = client
        .request_text(request)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
}
