//! TLS for the receiver: a server certificate and key from PEM, and optionally a CA whose
//! client certificates are then required.
//!
//! rustls with the ring provider, as kube already builds it; the provider is named explicitly so
//! that another crate enabling aws-lc-rs in the same build cannot make the choice ambiguous.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

/// What the receiver needs to serve https: built once, cheap to clone.
#[derive(Clone)]
pub struct TlsConfig {
    pub(crate) acceptor: TlsAcceptor,
    client_auth: bool,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}

/// Why the certificate, key or client CA cannot be used. `origin` is the file name (or
/// "certificate PEM" and the like for [`TlsConfig::from_pem`]). As with the other errors of
/// this crate, an underlying error is the `source`, not part of the message.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {origin}")]
    Read {
        origin: String,
        source: std::io::Error,
    },
    #[error("{origin}: invalid PEM ({message}); expected {expected}")]
    Pem {
        origin: String,
        message: String,
        expected: &'static str,
    },
    #[error("{origin}: no certificate found; expected {CERTIFICATE}")]
    NoCertificate { origin: String },
    #[error("{origin}: no private key found; expected {KEY}")]
    NoKey { origin: String },
    #[error("{key} is not the private key of the certificate in {cert}")]
    KeyMismatch { cert: String, key: String },
    #[error("{origin}: not a valid X.509 certificate ({reason})")]
    BadCertificate { origin: String, reason: String },
    #[error("{key} cannot serve the certificate of {cert}")]
    KeyRejected {
        cert: String,
        key: String,
        source: rustls::Error,
    },
    #[error("{origin}: cannot use as a client CA: {message}")]
    ClientCa { origin: String, message: String },
}

const CERTIFICATE: &str = "a PEM file with a \"-----BEGIN CERTIFICATE-----\" block";
const KEY: &str = "a PEM file with a \"-----BEGIN PRIVATE KEY-----\", \"-----BEGIN RSA PRIVATE KEY-----\" or \"-----BEGIN EC PRIVATE KEY-----\" block";

impl TlsConfig {
    /// Reads the server's certificate chain and key, and with `client_ca` requires every client
    /// to present a certificate that CA signed.
    pub fn from_pem_files(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<TlsConfig, TlsError> {
        let read = |path: &Path| {
            let origin = path.display().to_string();
            std::fs::read(path)
                .map(|bytes| (origin.clone(), bytes))
                .map_err(|source| TlsError::Read { origin, source })
        };
        let cert = read(cert)?;
        let key = read(key)?;
        let client_ca = client_ca.map(read).transpose()?;
        build(
            (&cert.0, &cert.1),
            (&key.0, &key.1),
            client_ca.as_ref().map(|(o, b)| (o.as_str(), b.as_slice())),
        )
    }

    /// The same from PEM text in memory, e.g. certificates a test generated.
    pub fn from_pem(
        cert: &[u8],
        key: &[u8],
        client_ca: Option<&[u8]>,
    ) -> Result<TlsConfig, TlsError> {
        build(
            ("certificate PEM", cert),
            ("key PEM", key),
            client_ca.map(|ca| ("client CA PEM", ca)),
        )
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_cert(&self) -> bool {
        self.client_auth
    }
}

fn build(
    (cert_origin, cert): (&str, &[u8]),
    (key_origin, key): (&str, &[u8]),
    client_ca: Option<(&str, &[u8])>,
) -> Result<TlsConfig, TlsError> {
    let chain = certificates(cert_origin, cert)?;
    let key = match PrivateKeyDer::from_pem_slice(key) {
        Ok(key) => key,
        Err(pem::Error::NoItemsFound) => {
            return Err(TlsError::NoKey {
                origin: key_origin.to_owned(),
            });
        }
        Err(e) => return Err(pem_error(key_origin, &e, KEY)),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::KeyRejected {
            cert: cert_origin.to_owned(),
            key: key_origin.to_owned(),
            source,
        })?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some((origin, pem)) => {
            let mut roots = RootCertStore::empty();
            for ca in certificates(origin, pem)? {
                roots.add(ca).map_err(|e| match e {
                    rustls::Error::InvalidCertificate(reason) => TlsError::BadCertificate {
                        origin: origin.to_owned(),
                        reason: format!("{reason:?}"),
                    },
                    e => TlsError::ClientCa {
                        origin: origin.to_owned(),
                        message: e.to_string(),
                    },
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::ClientCa {
                    origin: origin.to_owned(),
                    message: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|source| match source {
            rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                cert: cert_origin.to_owned(),
                key: key_origin.to_owned(),
            },
            rustls::Error::InvalidCertificate(reason) => TlsError::BadCertificate {
                origin: cert_origin.to_owned(),
                reason: format!("{reason:?}"),
            },
            source => TlsError::KeyRejected {
                cert: cert_origin.to_owned(),
                key: key_origin.to_owned(),
                source,
            },
        })?;
    // The receiver speaks HTTP/1.1 only; saying so keeps an h2-preferring client from trying h2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConfig {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        client_auth: client_ca.is_some(),
    })
}

fn certificates(origin: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(origin, &e, CERTIFICATE))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            origin: origin.to_owned(),
        });
    }
    Ok(chain)
}

fn pem_error(origin: &str, e: &pem::Error, expected: &'static str) -> TlsError {
    let message = match e {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "no \"-----END {}-----\" line",
            String::from_utf8_lossy(end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => {
            format!("malformed line {:?}", String::from_utf8_lossy(line))
        }
        pem::Error::Base64Decode(_) => "a block is not valid base64".to_owned(),
        other => other.to_string(),
    };
    TlsError::Pem {
        origin: origin.to_owned(),
        message,
        expected,
    }
}
