//! The bundled files the pipelines put on the node, rendered with `render --strict` semantics.

use patch_apiserver::KubeVersion;

use crate::error::{Context, Result, ensure};

pub const WEBHOOK_CONFIG: &[u8] = include_bytes!("../assets/webhook-config.yaml.in");
pub const AUDIT_SINK: &[u8] = include_bytes!("../assets/audit-sink.yaml.in");
pub const AUDIT_POLICY: &[u8] = include_bytes!("../assets/audit-policy.yaml.in");

/// Where Falco listens, as the templates need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FalcoUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl FalcoUrl {
    /// Accepts `http://HOST:PORT/PATH`; the API server's webhook client speaks plain HTTP to Falco.
    pub fn parse(url: &str) -> Result<FalcoUrl> {
        let rest = url
            .strip_prefix("http://")
            .with_context(|| format!("--falco-url {url:?}: expected http://HOST:PORT/PATH"))?;
        let (authority, path) = rest.split_once('/').with_context(|| {
            format!("--falco-url {url:?}: expected a path such as /k8s_audit after the port")
        })?;
        let (host, port) = authority.rsplit_once(':').with_context(|| {
            format!("--falco-url {url:?}: expected an explicit port (8765 or 9765)")
        })?;
        let port = port
            .parse()
            .with_context(|| format!("--falco-url {url:?}: {port:?} is not a port number"))?;
        ensure!(!host.is_empty(), "--falco-url {url:?}: the host is empty");
        Ok(FalcoUrl {
            host: host.to_string(),
            port,
            path: format!("/{path}"),
        })
    }

    pub fn to_url(&self) -> String {
        format!("http://{}:{}{}", self.host, self.port, self.path)
    }
}

fn vars(falco: &FalcoUrl) -> render::Vars {
    let mut vars = render::Vars::new();
    vars.set("FALCO_SERVICE_CLUSTERIP", falco.host.clone());
    vars.set("FALCO_SERVICE_PORT", falco.port.to_string());
    vars.set("FALCO_AUDIT_PATH", falco.path.clone());
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
    fn falco_url_parsing() {
        let url = FalcoUrl::parse("http://10.96.0.10:8765/k8s_audit").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.path.as_str()),
            ("10.96.0.10", 8765, "/k8s_audit")
        );
        assert_eq!(url.to_url(), "http://10.96.0.10:8765/k8s_audit");
        for bad in [
            "https://x:1/a",
            "http://x/a",
            "http://x:port/a",
            "http://x:8765",
            "http://:8765/a",
        ] {
            assert!(FalcoUrl::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn webhook_points_at_falco() {
        let url = FalcoUrl::parse("http://10.0.0.134:9765/k8s-audit").unwrap();
        let text = String::from_utf8(webhook_config(&url).unwrap()).unwrap();
        assert!(
            text.contains("    server: http://10.0.0.134:9765/k8s-audit\n"),
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
