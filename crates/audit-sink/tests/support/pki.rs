//! Throwaway certificates made with the `openssl` CLI, shared by the TLS tests.

use std::path::Path;
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA (`{name}-ca.pem`) and a certificate it signed (`{name}-{leaf}.pem` and
/// `{name}-{leaf}.key`) for each leaf, in `dir`.
fn pki(dir: &Path, name: &str, leaves: &[(&str, &str)]) {
    let ca = format!("{name}-ca");
    openssl(
        dir,
        &[
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
            &format!("/CN={ca}"),
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
        ],
    );
    for (leaf, extensions) in leaves {
        let base = format!("{name}-{leaf}");
        let ext = format!("{base}.ext");
        std::fs::write(dir.join(&ext), extensions).expect("write extensions");
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &format!("/CN={base}"),
                "-keyout",
                &format!("{base}.key"),
                "-out",
                &format!("{base}.csr"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{base}.csr"),
                "-days",
                "2",
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-extfile",
                &ext,
                "-out",
                &format!("{base}.pem"),
            ],
        );
    }
}

const SERVER: &str = "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n";
const CLIENT: &str = "extendedKeyUsage=clientAuth\n";

/// Two independent CAs: `good` signs the server and a client, `other` only a client.
pub fn certificates() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    pki(
        dir.path(),
        "good",
        &[("server", SERVER), ("client", CLIENT)],
    );
    pki(dir.path(), "other", &[("client", CLIENT)]);
    dir
}
