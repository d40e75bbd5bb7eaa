//! Falco's audit endpoint, parsed and checked before it goes into a kubeconfig. The URL is
//! written into YAML, so anything that could end the string or the line (a newline, a quote)
//! would let the user's input add keys such as `insecure-skip-tls-verify: true`; it is refused
//! here, with the byte that is wrong, rather than escaped.

use std::fmt;

use crate::error::{PipelineError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// Where Falco listens, as the templates need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FalcoUrl {
    pub scheme: Scheme,
    /// A DNS name, an IPv4 address, or an IPv6 address in brackets (`[fd00::1]`).
    pub host: String,
    pub port: u16,
    /// Starts with `/`; may carry a query.
    pub path: String,
}

impl FalcoUrl {
    /// An http endpoint from its parts, as Service discovery finds it.
    pub fn http(host: impl Into<String>, port: u16, path: impl Into<String>) -> FalcoUrl {
        FalcoUrl {
            scheme: Scheme::Http,
            host: host.into(),
            port,
            path: path.into(),
        }
    }

    /// Accepts `http[s]://HOST[:PORT]/PATH`. The port defaults to 80 or 443, as in any URL.
    pub fn parse(url: &str) -> Result<FalcoUrl> {
        let bad = |why: String| PipelineError::failed(format!("--falco-url {url:?}: {why}"));
        if let Some((at, c)) = url.char_indices().find(|(_, c)| c.is_control()) {
            return Err(bad(format!(
                "control character {c:?} at byte {at}; a URL is one line of printable text"
            )));
        }
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected http://HOST:PORT/PATH or https://...".into()))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => return Err(bad(format!("scheme {other:?}: expected http or https"))),
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => {
                return Err(bad(
                    "expected a path such as /k8s-audit after the host and port".into(),
                ));
            }
        };
        if authority.contains('@') {
            return Err(bad(
                "user information (user:password@) is refused: it would be stored in the webhook kubeconfig in clear; use --falco-client-cert for authentication".into(),
            ));
        }
        let (host, port) = split_host_port(authority).map_err(bad)?;
        let port = match port {
            None => scheme.default_port(),
            Some(text) => match text.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(bad(format!("{text:?} is not a port number (1-65535)"))),
            },
        };
        if let Some(c) = path.chars().find(|c| !is_path_char(*c)) {
            return Err(bad(format!(
                "{c:?} is not allowed in the path (letters, digits and -._~!$&'()*+,;=:@/?% are)"
            )));
        }
        Ok(FalcoUrl {
            scheme,
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    pub fn to_url(&self) -> String {
        self.to_string()
    }

    /// A name that the API server's host network cannot resolve: cluster DNS lives inside the
    /// pod network, and the API server runs with the host's resolver.
    pub fn is_cluster_dns_name(&self) -> bool {
        let host = self.host.trim_end_matches('.').to_ascii_lowercase();
        host.ends_with(".svc") || host.ends_with(".cluster.local") || host.contains(".svc.")
    }
}

impl fmt::Display for FalcoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}:{}{}",
            self.scheme.as_str(),
            self.host,
            self.port,
            self.path
        )
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`, each part checked.
fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| "an IPv6 address needs its closing ]".to_string())?;
        if inside.is_empty()
            || !inside
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err(format!("[{inside}] is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("unexpected {after:?} after the IPv6 address"))?,
            ),
        };
        (&authority[..inside.len() + 2], port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    if !host.starts_with('[') {
        if let Some(c) = host
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.'))
        {
            return Err(format!(
                "{c:?} is not allowed in a host name (letters, digits, - and . are)"
            ));
        }
    }
    Ok((host, port))
}

/// RFC 3986 path and query characters, with percent-escapes; nothing that could end a quoted
/// YAML string (`"`, `\`) or start a comment.
fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/?%".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_falco_listens_on() {
        let url = FalcoUrl::parse("http://10.96.0.10:8765/k8s_audit").unwrap();
        assert_eq!(url, FalcoUrl::http("10.96.0.10", 8765, "/k8s_audit"));
        assert_eq!(url.to_url(), "http://10.96.0.10:8765/k8s_audit");
        let tls = FalcoUrl::parse("HTTPS://falco.example.com/k8s-audit").unwrap();
        assert_eq!(
            (tls.scheme, tls.port, tls.to_url().as_str()),
            (
                Scheme::Https,
                443,
                "https://falco.example.com:443/k8s-audit"
            )
        );
        let v6 = FalcoUrl::parse("http://[fd00::a]:9765/k8s-audit?x=1").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("[fd00::a]", 9765));
        assert_eq!(FalcoUrl::parse("http://localhost/a").unwrap().port, 80);
    }

    #[test]
    fn refuses_what_could_change_the_kubeconfig() {
        for (bad, says) in [
            (
                "http://10.0.0.1:8765/a\n    insecure-skip-tls-verify: true",
                "control character '\\n' at byte 22",
            ),
            ("http://10.0.0.1:8765/a\r", "control character '\\r'"),
            (
                "http://10.0.0.1:8765/a\"b",
                "'\"' is not allowed in the path",
            ),
            ("http://10.0.0.1:8765/a b", "' ' is not allowed in the path"),
            ("http://user:pw@10.0.0.1:8765/a", "user information"),
            (
                "http://10.0.0.1 :8765/a",
                "' ' is not allowed in a host name",
            ),
            ("http://10.0.0.1:port/a", "\"port\" is not a port number"),
            ("http://10.0.0.1:0/a", "\"0\" is not a port number"),
            ("http://10.0.0.1:65536/a", "not a port number"),
            ("http://10.0.0.1:8765", "expected a path"),
            ("http://:8765/a", "the host is empty"),
            ("ftp://x:1/a", "scheme \"ftp\""),
            ("10.0.0.1:8765/a", "expected http://"),
            ("http://[fd00::1/a", "closing ]"),
            ("http://[zz]:1/a", "is not an IPv6 address"),
            ("http://[::1]x/a", "unexpected \"x\""),
            ("http://a#b:1/a", "'#' is not allowed in a host name"),
        ] {
            let error = FalcoUrl::parse(bad).unwrap_err().to_string();
            assert!(error.contains(says), "{bad:?}: {error}");
        }
    }

    #[test]
    fn cluster_dns_names_are_recognised() {
        let name = |u: &str| FalcoUrl::parse(u).unwrap().is_cluster_dns_name();
        assert!(name("http://falco.falco.svc:9765/k8s-audit"));
        assert!(name("http://falco.falco.svc.cluster.local.:9765/k8s-audit"));
        assert!(!name("http://10.96.0.10:9765/k8s-audit"));
        assert!(!name("http://falco.example.com/k8s-audit"));
    }
}
