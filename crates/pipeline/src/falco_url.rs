//! Falco's audit endpoint, parsed and checked before it goes into a kubeconfig. The URL is
//! written into YAML, so anything that could end the string or the line (a newline, a quote)
//! would let the user's input add keys such as `insecure-skip-tls-verify: true`; it is refused
//! here, with the byte that is wrong, rather than escaped.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;

use crate::error::{Context, PipelineError, Result};

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
    /// The CA and client certificate for an https endpoint, shared by every candidate.
    pub tls: Option<Arc<FalcoTls>>,
}

/// What `--falco-ca-file`, `--falco-client-cert` and `--falco-client-key` hold, read and checked
/// before anything is written. The PEM bytes are kept as the user gave them: the kubeconfig
/// carries them base64-encoded, as kubectl writes `*-data` fields.
#[derive(Clone, PartialEq, Eq)]
pub struct FalcoTls {
    /// One or more CA certificates; `None` means the node's system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// A client certificate chain and its private key, for mTLS through a proxy.
    pub client: Option<ClientCert>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

// The key must never reach a log line, not even through `{:?}`.
impl fmt::Debug for FalcoTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FalcoTls")
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field("client", &self.client.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientCert(<redacted>)")
    }
}

impl FalcoTls {
    /// Reads and checks the files: the CA file must hold at least one X.509 certificate, and the
    /// client certificate and key must come together and belong to each other. Every error
    /// names the file. `None` when no file was given.
    pub fn load(
        ca_file: Option<&Path>,
        client_cert: Option<&Path>,
        client_key: Option<&Path>,
    ) -> Result<Option<FalcoTls>> {
        let read = |flag: &str, path: &Path| {
            std::fs::read(path).with_context(|| format!("{flag} {}", path.display()))
        };
        let ca_pem = match ca_file {
            Some(path) => {
                let pem = read("--falco-ca-file", path)?;
                pem_check::ca(&pem).map_err(|why| {
                    PipelineError::failed(format!("--falco-ca-file {}: {why}", path.display()))
                })?;
                Some(pem)
            }
            None => None,
        };
        let client = match (client_cert, client_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let cert_pem = read("--falco-client-cert", cert)?;
                let key_pem = read("--falco-client-key", key)?;
                pem_check::client(&cert_pem, &key_pem).map_err(|why| {
                    PipelineError::failed(format!(
                        "--falco-client-cert {} with --falco-client-key {}: {why}",
                        cert.display(),
                        key.display(),
                    ))
                })?;
                Some(ClientCert { cert_pem, key_pem })
            }
            (Some(_), None) => {
                return Err(PipelineError::failed(
                    "--falco-client-cert needs --falco-client-key (the certificate's private key)",
                ));
            }
            (None, Some(_)) => {
                return Err(PipelineError::failed(
                    "--falco-client-key needs --falco-client-cert (the certificate it belongs to)",
                ));
            }
        };
        Ok((ca_pem.is_some() || client.is_some()).then_some(FalcoTls { ca_pem, client }))
    }

    /// The `*-data` value of a PEM file in a kubeconfig.
    pub fn data(pem: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(pem)
    }
}

/// The TLS files are checked with rustls, the TLS stack audit-sink serves with; the light build
/// (without the `remote` feature) has none, and refuses them rather than pass them unchecked.
#[cfg(feature = "remote")]
mod pem_check {
    use tokio_rustls::rustls::RootCertStore;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;

    /// audit-sink's own check: a chain, a key, and the key signs for the chain.
    pub fn client(cert_pem: &[u8], key_pem: &[u8]) -> Result<(), String> {
        audit_sink::TlsConfig::from_pem(cert_pem, key_pem, None)
            .map(drop)
            .map_err(|e| report(&e))
    }

    /// An error and its causes on one line.
    fn report(error: &dyn std::error::Error) -> String {
        let mut text = error.to_string();
        let mut cause = error.source();
        while let Some(e) = cause {
            text.push_str(&format!(": {e}"));
            cause = e.source();
        }
        text
    }

    /// At least one certificate, and every certificate one that rustls can trust as a root.
    pub fn ca(pem: &[u8]) -> Result<(), String> {
        let mut roots = RootCertStore::empty();
        for (n, cert) in CertificateDer::pem_slice_iter(pem).enumerate() {
            let cert = cert.map_err(|e| format!("invalid PEM ({e})"))?;
            roots.add(cert).map_err(|e| {
                format!(
                    "certificate {} is not a valid X.509 certificate ({e})",
                    n + 1
                )
            })?;
        }
        if roots.is_empty() {
            return Err(
                "no certificate found; expected a PEM file with a \"-----BEGIN CERTIFICATE-----\" block"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(not(feature = "remote"))]
mod pem_check {
    const NOT_BUILT: &str = "this light build cannot check TLS files (no rustls; the `remote` feature); use `k8s-audit` or `cargo xtask`";

    pub fn client(_cert_pem: &[u8], _key_pem: &[u8]) -> Result<(), String> {
        Err(NOT_BUILT.into())
    }

    pub fn ca(_pem: &[u8]) -> Result<(), String> {
        Err(NOT_BUILT.into())
    }
}

impl FalcoUrl {
    /// An http endpoint from its parts, as Service discovery finds it.
    pub fn http(host: impl Into<String>, port: u16, path: impl Into<String>) -> FalcoUrl {
        FalcoUrl {
            scheme: Scheme::Http,
            host: host.into(),
            port,
            path: path.into(),
            tls: None,
        }
    }

    /// Attaches the TLS files: they only make sense for https, and an http URL with them is
    /// refused rather than silently sent in clear.
    pub fn with_tls(mut self, tls: Option<Arc<FalcoTls>>) -> Result<FalcoUrl> {
        if tls.is_some() && self.scheme != Scheme::Https {
            return Err(PipelineError::failed(format!(
                "{self}: --falco-ca-file, --falco-client-cert and --falco-client-key need an https:// Falco URL; this one is {}",
                self.scheme.as_str()
            )));
        }
        self.tls = tls;
        Ok(self)
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
            tls: None,
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
    if !host.starts_with('[')
        && let Some(c) = host
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.'))
    {
        return Err(format!(
            "{c:?} is not allowed in a host name (letters, digits, - and . are)"
        ));
    }
    Ok((host, port))
}

/// RFC 3986 path and query characters, with percent-escapes; nothing that could end a quoted
/// YAML string (`"`, `\`) or start a comment.
fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/?%".contains(c)
}

/// Fixed test certificates (EC P-256, valid until 2126), so that snapshots are stable.
#[cfg(test)]
pub(crate) mod test_pem {
    pub const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBfDCCASGgAwIBAgIUN9Tbv2MixT/egkBIxmZ7/hAECD8wCgYIKoZIzj0EAwIw\nEjEQMA4GA1UEAwwHdGVzdC1jYTAgFw0yNjEyMDExMjEyMTVaGA8yMTI2MTEwNzEy\nMTIxNVowEjEQMA4GA1UEAwwHdGVzdC1jYTBZMBMGByqGSM49AgEGCCqGSM49AwEH\nA0IABFudgbG51/aCDi/B4sOu0ynogn7b787F5ueMGmuyJ0VAdHaMLSKyAyVaeSLX\nYnDHR9MCDXNkfacwMQBGugu2PyejUzBRMB0GA1UdDgQWBBRDXrJXJ6I7wAxuFYP5\nRfTtEg9aCzAfBgNVHSMEGDAWgBRDXrJXJ6I7wAxuFYP5RfTtEg9aCzAPBgNVHRMB\nAf8EBTADAQH/MAoGCCqGSM49BAMCA0kAMEYCIQCLi4cD2T5pP59RFpisp4znMF/T\nuA58nzz8DvYOZAup/QIhALZxUFybyLWlHuKV6p6o1TxL2haF63FuEWLOi6RbyiYZ\n-----END CERTIFICATE-----\n";
    /// Signed by [`CA`].
    pub const CLIENT_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBrDCCAVKgAwIBAgIUDL6ikpF4llerJvj/OgBiHtUEz7wwCgYIKoZIzj0EAwIw\nEjEQMA4GA1UEAwwHdGVzdC1jYTAgFw0yNjEyMDExMjEyMjdaGA8yMTI2MTEwNzEy\nMTIyN1owGTEXMBUGA1UEAwwOa3ViZS1hcGlzZXJ2ZXIwWTATBgcqhkjOPQIBBggq\nhkjOPQMBBwNCAATb/LetQmNFkvt4KJaFS2pkmrsFr69WkLRkv2CeUY6OQVLCirQx\nZRfiFS01u/FCb/sRRE6m+2miX3KracbU8n4Uo30wezAJBgNVHRMEAjAAMBMGA1Ud\nJQQMMAoGCCsGAQUFBwMCMBkGA1UdEQQSMBCCDmt1YmUtYXBpc2VydmVyMB0GA1Ud\nDgQWBBQpgnw0Z1dmmcyBjc+ExW0cUstKvTAfBgNVHSMEGDAWgBRDXrJXJ6I7wAxu\nFYP5RfTtEg9aCzAKBggqhkjOPQQDAgNIADBFAiEAoWk0cwbvAofZkC7eEMbkynih\n8K6V+FnMBLiS9C92B08CIBCOigKnGvqs8xFoH0wzMB6L1xzpg1e8I19fDYAOLpZt\n-----END CERTIFICATE-----\n";
    pub const CLIENT_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgkN+nbq7ZP7/d/P+p\nF1y2czuG5KXx8tKgCU70TxgPFeyhRANCAATb/LetQmNFkvt4KJaFS2pkmrsFr69W\nkLRkv2CeUY6OQVLCirQxZRfiFS01u/FCb/sRRE6m+2miX3KracbU8n4U\n-----END PRIVATE KEY-----\n";
    /// The CA's own key: not the client certificate's.
    pub const OTHER_KEY: &str = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB4ELLU9dYyVWwEOtnHOjIPPlt5r8Rfp6Ul1u5aFQM1poAoGCCqGSM49\nAwEHoUQDQgAEW52BsbnX9oIOL8Hiw67TKeiCftvvzsXm54waa7InRUB0dowtIrID\nJVp5ItdicMdH0wINc2R9pzAxAEa6C7Y/Jw==\n-----END EC PRIVATE KEY-----\n";

    /// Writes `contents` to `dir/name`.
    pub fn file(dir: &std::path::Path, name: &str, contents: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
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

    #[test]
    fn tls_files_are_checked_and_named_in_errors() {
        use test_pem::*;
        let dir = tempfile::tempdir().unwrap();
        let ca = file(dir.path(), "ca.pem", CA);
        let cert = file(dir.path(), "client.pem", CLIENT_CERT);
        let key = file(dir.path(), "client.key", CLIENT_KEY);
        let other = file(dir.path(), "other.key", OTHER_KEY);
        let garbage = file(
            dir.path(),
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        );
        let not_der = file(
            dir.path(),
            "not-der.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );

        assert_eq!(FalcoTls::load(None, None, None).unwrap(), None);
        let both = FalcoTls::load(Some(&ca), Some(&cert), Some(&key))
            .unwrap()
            .unwrap();
        assert_eq!(both.ca_pem.as_deref(), Some(CA.as_bytes()));
        assert!(!format!("{both:?}").contains("PRIVATE"), "{both:?}");

        let message = |ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>| {
            FalcoTls::load(ca, cert, key)
                .unwrap_err()
                .report()
                .replace(&dir.path().display().to_string(), "DIR")
        };
        assert_eq!(
            message(Some(&key), None, None),
            "--falco-ca-file DIR/client.key: no certificate found; expected a PEM file with a \"-----BEGIN CERTIFICATE-----\" block"
        );
        assert!(
            message(Some(&garbage), None, None)
                .starts_with("--falco-ca-file DIR/garbage.pem: invalid PEM")
        );
        assert!(message(Some(&not_der), None, None).starts_with(
            "--falco-ca-file DIR/not-der.pem: certificate 1 is not a valid X.509 certificate"
        ));
        assert!(
            message(Some(&dir.path().join("missing.pem")), None, None)
                .starts_with("--falco-ca-file DIR/missing.pem: ")
        );
        assert_eq!(
            message(None, Some(&cert), Some(&other)),
            "--falco-client-cert DIR/client.pem with --falco-client-key DIR/other.key: key PEM is not the private key of the certificate in certificate PEM"
        );
        assert!(message(None, Some(&cert), None).contains("needs --falco-client-key"));
    }

    #[test]
    fn tls_needs_https() {
        let tls = Some(Arc::new(FalcoTls {
            ca_pem: Some(test_pem::CA.as_bytes().to_vec()),
            client: None,
        }));
        let http = FalcoUrl::parse("http://10.0.0.1:9765/k8s-audit").unwrap();
        assert_eq!(
            http.with_tls(tls.clone()).unwrap_err().to_string(),
            "http://10.0.0.1:9765/k8s-audit: --falco-ca-file, --falco-client-cert and --falco-client-key need an https:// Falco URL; this one is http"
        );
        let https = FalcoUrl::parse("https://10.0.0.1:9765/k8s-audit").unwrap();
        assert!(https.clone().with_tls(tls).unwrap().tls.is_some());
        // https without a CA: the node's system roots.
        assert!(https.with_tls(None).unwrap().tls.is_none());
    }
}
