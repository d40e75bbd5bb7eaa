//! The bundled files the pipelines put on the node, rendered with `render --strict` semantics.

use patch_apiserver::KubeVersion;

use crate::error::{Context, Result};

pub const WEBHOOK_CONFIG: &[u8] = include_bytes!("../assets/webhook-config.yaml.in");
pub const WEBHOOK_CONFIG_TLS: &[u8] = include_bytes!("../assets/webhook-config-tls.yaml.in");
pub const AUDIT_SINK: &[u8] = include_bytes!("../assets/audit-sink.yaml.in");
pub const AUDIT_SINK_TLS: &[u8] = include_bytes!("../assets/audit-sink-tls.yaml.in");
pub const AUDIT_POLICY: &[u8] = include_bytes!("../assets/audit-policy.yaml.in");
pub const AUDIT_POLICY_SEED: &[u8] = include_bytes!("../assets/audit-policy-seed.yaml.in");

pub use crate::falco_url::{ClientCert, FalcoTls, FalcoUrl, Scheme};

/// The templates' one variable for Falco: the whole checked URL, so its scheme is the user's.
fn vars(falco: &FalcoUrl) -> render::Vars {
    let mut vars = render::Vars::new();
    vars.set("FALCO_URL", falco.to_url());
    vars
}

fn render_strict(name: &str, template: &[u8], vars: &render::Vars) -> Result<Vec<u8>> {
    let options = render::Options {
        strict: true,
        no_empty: true,
        ..render::Options::default()
    };
    render::render(template, vars, &options).with_context(|| format!("rendering {name}"))
}

/// The webhook kubeconfig. Plain http keeps the seed's shape; with a CA or a client
/// certificate, the TLS template carries them as `*-data` fields (base64 of the PEM files), so
/// the node needs no other file.
pub fn webhook_config(falco: &FalcoUrl) -> Result<Vec<u8>> {
    let Some(tls) = &falco.tls else {
        return render_strict("webhook-config.yaml.in", WEBHOOK_CONFIG, &vars(falco));
    };
    let mut vars = vars(falco);
    vars.set(
        "FALCO_CLUSTER_TLS",
        match &tls.ca_pem {
            Some(pem) => format!("certificate-authority-data: {}", FalcoTls::data(pem)),
            None => "# no certificate-authority-data: the node's system roots verify Falco".into(),
        },
    );
    vars.set(
        "FALCO_USER",
        match &tls.client {
            Some(client) => format!(
                "{{client-certificate-data: {}, client-key-data: {}}}",
                FalcoTls::data(&client.cert_pem),
                FalcoTls::data(&client.key_pem)
            ),
            None => "{}".into(),
        },
    );
    render_strict("webhook-config-tls.yaml.in", WEBHOOK_CONFIG_TLS, &vars)
}

/// The AuditSink object. Its webhook verifies Falco with `caBundle`, but has no place for a
/// client certificate, so one is refused rather than dropped.
pub fn audit_sink(falco: &FalcoUrl) -> Result<Vec<u8>> {
    let Some(tls) = &falco.tls else {
        return render_strict("audit-sink.yaml.in", AUDIT_SINK, &vars(falco));
    };
    if tls.client.is_some() {
        crate::error::bail!(
            "--falco-client-cert and --falco-client-key work in static mode only: the dynamic modes' AuditSink cannot carry a client certificate"
        );
    }
    let Some(ca) = &tls.ca_pem else {
        return render_strict("audit-sink.yaml.in", AUDIT_SINK, &vars(falco));
    };
    let mut vars = vars(falco);
    vars.set("FALCO_CA_BUNDLE", FalcoTls::data(ca));
    render_strict("audit-sink-tls.yaml.in", AUDIT_SINK_TLS, &vars)
}

/// `audit.k8s.io/v1` from 1.12 on; 1.11 only knows v1beta1 (removed in 1.24, so never later).
fn policy_vars(version: Option<&KubeVersion>) -> render::Vars {
    let api = match version {
        Some(v) if (v.major, v.minor) < (1, 12) => "audit.k8s.io/v1beta1",
        _ => "audit.k8s.io/v1",
    };
    let mut vars = render::Vars::new();
    vars.set("AUDIT_API_VERSION", api);
    vars
}

/// The default policy (`--policy-preset falco`): Secrets at Metadata.
pub fn audit_policy(version: Option<&KubeVersion>) -> Result<Vec<u8>> {
    render_strict("audit-policy.yaml.in", AUDIT_POLICY, &policy_vars(version))
}

/// The seed's rules (`--policy-preset seed`): Secrets at RequestResponse.
pub fn seed_policy(version: Option<&KubeVersion>) -> Result<Vec<u8>> {
    render_strict(
        "audit-policy-seed.yaml.in",
        AUDIT_POLICY_SEED,
        &policy_vars(version),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_points_at_falco() {
        let url = FalcoUrl::parse("http://10.0.0.134:9765/k8s-audit").unwrap();
        let text = String::from_utf8(webhook_config(&url).unwrap()).unwrap();
        assert!(
            text.contains("    server: \"http://10.0.0.134:9765/k8s-audit\"\n"),
            "{text}"
        );
        let sink = String::from_utf8(audit_sink(&url).unwrap()).unwrap();
        assert!(
            sink.contains("url: \"http://10.0.0.134:9765/k8s-audit\""),
            "{sink}"
        );
    }

    #[test]
    fn policy_api_version_follows_the_server() {
        let old: KubeVersion = "v1.11.2".parse().unwrap();
        let new: KubeVersion = "v1.28.3".parse().unwrap();
        let text = |v| String::from_utf8(audit_policy(v).unwrap()).unwrap();
        assert!(text(Some(&old)).starts_with("# The default audit policy"));
        assert!(text(Some(&old)).contains("apiVersion: audit.k8s.io/v1beta1\n"));
        assert!(text(Some(&new)).contains("apiVersion: audit.k8s.io/v1\n"));
        assert!(text(None).contains("apiVersion: audit.k8s.io/v1\n"));
    }

    fn tls(client: bool) -> Option<std::sync::Arc<FalcoTls>> {
        use crate::falco_url::test_pem::*;
        Some(std::sync::Arc::new(FalcoTls {
            ca_pem: Some(CA.as_bytes().to_vec()),
            client: client.then(|| ClientCert {
                cert_pem: CLIENT_CERT.as_bytes().to_vec(),
                key_pem: CLIENT_KEY.as_bytes().to_vec(),
            }),
        }))
    }

    /// The kubeconfig the API server reads: the PEM files as `*-data`, decodable back to the
    /// bytes the user gave, and a user entry only with a client certificate.
    #[test]
    fn webhook_config_carries_the_tls_files() {
        use base64::Engine;
        let url = FalcoUrl::parse("https://10.0.0.134:9765/k8s-audit")
            .unwrap()
            .with_tls(tls(true))
            .unwrap();
        let bytes = webhook_config(&url).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        insta::assert_snapshot!("webhook_config_ca_and_client", text);
        let redacted = crate::rendering::display_text(&bytes);
        insta::assert_snapshot!("webhook_config_ca_and_client_redacted", redacted);
        assert!(!redacted.contains(&FalcoTls::data(
            crate::falco_url::test_pem::CLIENT_KEY.as_bytes()
        )));

        let yaml: serde_norway::Value = serde_norway::from_str(&text).unwrap();
        let data = |v: &serde_norway::Value| {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap();
            String::from_utf8(decoded).unwrap()
        };
        let cluster = &yaml["clusters"][0]["cluster"];
        assert_eq!(
            cluster["server"].as_str(),
            Some("https://10.0.0.134:9765/k8s-audit")
        );
        assert_eq!(
            data(&cluster["certificate-authority-data"]),
            crate::falco_url::test_pem::CA
        );
        let user = &yaml["users"][0]["user"];
        assert_eq!(
            data(&user["client-certificate-data"]),
            crate::falco_url::test_pem::CLIENT_CERT
        );
        assert_eq!(
            data(&user["client-key-data"]),
            crate::falco_url::test_pem::CLIENT_KEY
        );
        assert_eq!(
            yaml["contexts"][0]["context"]["user"].as_str(),
            Some("falco")
        );

        let ca_only = FalcoUrl::parse("https://10.0.0.134:9765/k8s-audit")
            .unwrap()
            .with_tls(tls(false))
            .unwrap();
        let ca_only = webhook_config(&ca_only).unwrap();
        insta::assert_snapshot!(
            "webhook_config_ca_only",
            String::from_utf8(ca_only.clone()).unwrap()
        );
        // Nothing secret in it: shown as it is.
        assert_eq!(
            crate::rendering::display_text(&ca_only).as_bytes(),
            ca_only.as_slice()
        );
        // The dynamic modes' AuditSink cannot carry them: refused, not dropped.
        assert!(
            audit_sink(&url)
                .unwrap_err()
                .to_string()
                .contains("static mode only")
        );
    }
}
