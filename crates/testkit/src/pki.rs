//! Throwaway certificates for TLS tests, made by the `openssl` CLI: a CA, and certificates it
//! signs for a subjectAltName.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn openssl(args: &[&str], dir: &Path) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl {args:?}");
}

/// `name.pem` and `name.key`: a CA, or a certificate `ca` signed for `san`.
pub fn certificate(dir: &Path, name: &str, ca: Option<&str>, san: &str) -> (PathBuf, PathBuf) {
    let (pem, key) = (format!("{name}.pem"), format!("{name}.key"));
    let mut args = vec![
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
    ];
    let subject = format!("/CN={name}");
    args.push(&subject);
    let (ca_pem, ca_key);
    if let Some(ca) = ca {
        ca_pem = format!("{ca}.pem");
        ca_key = format!("{ca}.key");
        // Without it, openssl's defaults make a CA certificate, which rustls refuses as a
        // client's.
        args.extend(["-CA", &ca_pem, "-CAkey", &ca_key]);
        args.extend([
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            san,
        ]);
    }
    args.extend(["-keyout", &key, "-out", &pem]);
    openssl(&args, dir);
    (dir.join(pem), dir.join(key))
}
