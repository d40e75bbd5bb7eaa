//! The bundled files the pipelines put on the node, rendered with `render --strict` semantics.

use patch_apiserver::KubeVersion;

use crate::error::{Context, Result};

pub const WEBHOOK_CONFIG: &[u8] = include_bytes!("../assets/webhook-config.yaml.in");
pub const AUDIT_SINK: &[u8] = include_bytes!("../assets/audit-sink.yaml.in");
pub const AUDIT_POLICY: &[u8] = include_bytes!("../assets/audit-policy.yaml.in");

pub use crate::falco_url::{FalcoUrl, Scheme};

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

pub fn webhook_config(falco: &FalcoUrl) -> Result<Vec<u8>> {
    render_strict("webhook-config.yaml.in", WEBHOOK_CONFIG, &vars(falco))
}

pub fn audit_sink(falco: &FalcoUrl) -> Result<Vec<u8>> {
    render_strict("audit-sink.yaml.in", AUDIT_SINK, &vars(falco))
}

/// `audit.k8s.io/v1` from 1.12 on; 1.11 only knows v1beta1 (removed in 1.24, so never later).
pub fn audit_policy(version: Option<&KubeVersion>) -> Result<Vec<u8>> {
    let api = match version {
        Some(v) if (v.major, v.minor) < (1, 12) => "audit.k8s.io/v1beta1",
        _ => "audit.k8s.io/v1",
    };
    let mut vars = render::Vars::new();
    vars.set("AUDIT_API_VERSION", api);
    render_strict("audit-policy.yaml.in", AUDIT_POLICY, &vars)
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
        assert!(text(Some(&old)).starts_with("# The audit policy"));
        assert!(text(Some(&old)).contains("apiVersion: audit.k8s.io/v1beta1\n"));
        assert!(text(Some(&new)).contains("apiVersion: audit.k8s.io/v1\n"));
        assert!(text(None).contains("apiVersion: audit.k8s.io/v1\n"));
    }
}
