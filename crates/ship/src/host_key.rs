//! Checking the server's host key against known_hosts, the way OpenSSH does: refuse unknown
//! keys unless told to record them, and refuse changed or revoked keys always.

use std::path::PathBuf;

use crate::{ShipError, known_hosts};

/// The libssh2 host key methods for the key types known_hosts records for this host, best
/// first; `None` when nothing usable is recorded (then any type may be offered, and
/// verification decides). Without this, a server offering ed25519 to a client that only
/// knows its RSA key would look like a changed key.
pub(crate) fn host_key_preference(
    ssh: &ssh2::Session,
    entries: &[known_hosts::Entry],
) -> Option<String> {
    const ORDER: &[(&str, &[&str])] = &[
        ("ssh-ed25519", &["ssh-ed25519"]),
        ("ecdsa-sha2-nistp256", &["ecdsa-sha2-nistp256"]),
        ("ecdsa-sha2-nistp384", &["ecdsa-sha2-nistp384"]),
        ("ecdsa-sha2-nistp521", &["ecdsa-sha2-nistp521"]),
        ("ssh-rsa", &["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]),
        ("ssh-dss", &["ssh-dss"]),
    ];
    let supported = ssh
        .supported_algs(ssh2::MethodType::HostKey)
        .unwrap_or_default();
    let methods: Vec<&str> = ORDER
        .iter()
        .filter(|(key_type, _)| {
            entries
                .iter()
                .any(|e| !e.revoked && e.key_type == *key_type)
        })
        .flat_map(|(_, methods)| methods.iter().copied())
        .filter(|m| supported.contains(m))
        .collect();
    (!methods.is_empty()).then(|| methods.join(","))
}

fn key_type_name(kind: ssh2::HostKeyType) -> &'static str {
    match kind {
        ssh2::HostKeyType::Rsa => "ssh-rsa",
        ssh2::HostKeyType::Dss => "ssh-dss",
        ssh2::HostKeyType::Ecdsa256 => "ecdsa-sha2-nistp256",
        ssh2::HostKeyType::Ecdsa384 => "ecdsa-sha2-nistp384",
        ssh2::HostKeyType::Ecdsa521 => "ecdsa-sha2-nistp521",
        ssh2::HostKeyType::Ed25519 => "ssh-ed25519",
        ssh2::HostKeyType::Unknown => "unknown",
    }
}

pub(crate) fn verify_host_key(
    ssh: &ssh2::Session,
    host: &str,
    port: u16,
    entries: &[known_hosts::Entry],
    files: &[PathBuf],
    accept_new: bool,
) -> Result<(), ShipError> {
    let (blob, kind) = ssh.host_key().ok_or_else(|| ShipError::Handshake {
        host: host.to_owned(),
        port,
        message: "the server sent no host key".to_owned(),
    })?;
    let key_type = key_type_name(kind);
    let fingerprint = known_hosts::fingerprint(
        ssh.host_key_hash(ssh2::HashType::Sha256)
            .unwrap_or_default(),
    );
    if let Some(e) = entries.iter().find(|e| e.revoked && e.blob == blob) {
        return Err(ShipError::RevokedHostKey {
            host: host.to_owned(),
            port,
            fingerprint,
            file: e.file.clone(),
            line: e.line,
        });
    }
    let known: Vec<_> = entries.iter().filter(|e| !e.revoked).collect();
    if known
        .iter()
        .any(|e| e.key_type == key_type && e.blob == blob)
    {
        return Ok(());
    }
    // The host is known, but not with this key: point at the entry of the same type if any.
    if let Some(e) = known
        .iter()
        .find(|e| e.key_type == key_type)
        .or(known.first())
    {
        return Err(ShipError::ChangedHostKey {
            host: host.to_owned(),
            port,
            key_type: key_type.to_owned(),
            fingerprint,
            file: e.file.clone(),
            line: e.line,
        });
    }
    match files.first() {
        Some(file) if accept_new => known_hosts::record(file, host, port, key_type, blob),
        _ => Err(ShipError::UnknownHostKey {
            host: host.to_owned(),
            port,
            key_type: key_type.to_owned(),
            fingerprint,
            known_hosts: files.to_vec(),
        }),
    }
}
