//! The certificates the TLS tests share, made by testkit's `openssl` helper.

use testkit::pki::certificate;

const SERVER: &str = "subjectAltName=IP:127.0.0.1";
const CLIENT: &str = "extendedKeyUsage=clientAuth";

/// Two independent CAs, in one directory: `good-ca` signs `good-server` and `good-client`,
/// `other-ca` only `other-client` (each `NAME.pem` and `NAME.key`).
pub fn certificates() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for name in ["good", "other"] {
        let ca = format!("{name}-ca");
        certificate(dir.path(), &ca, None, "");
        certificate(dir.path(), &format!("{name}-client"), Some(&ca), CLIENT);
    }
    certificate(dir.path(), "good-server", Some("good-ca"), SERVER);
    dir
}
