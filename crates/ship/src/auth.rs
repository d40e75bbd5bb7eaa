//! Public-key authentication the way OpenSSH orders it: agent keys, then identity files
//! (explicit ones, else the default files).

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::error::{AuthAttempt, AuthOutcome};
use crate::{ConnectOptions, ShipError};

/// OpenSSH's default identity files, in the order it tries them.
const DEFAULT_IDENTITIES: &[&str] = &["id_rsa", "id_ecdsa", "id_ed25519"];

pub(crate) struct Keys {
    /// Explicit files are all tried (a missing one is reported); default ones only when present.
    pub files: Vec<PathBuf>,
    pub agent_socket: Option<PathBuf>,
    /// With `IdentitiesOnly yes`, the agent may only sign with these public keys (those of
    /// the identity files, read from their `.pub`), as OpenSSH does; `None` allows every key.
    pub agent_only: Option<Vec<Vec<u8>>>,
}

pub(crate) fn keys(opts: &ConnectOptions, config_files: &[PathBuf], identities_only: bool) -> Keys {
    let mut files: Vec<PathBuf> = opts
        .identities
        .iter()
        .chain(config_files)
        .cloned()
        .collect();
    files.dedup();
    if files.is_empty()
        && let Some(home) = crate::config::home()
    {
        files = DEFAULT_IDENTITIES
            .iter()
            .map(|name| home.join(".ssh").join(name))
            .filter(|p| p.exists())
            .collect();
    }
    let agent_socket = opts
        .agent_socket
        .clone()
        .or_else(|| std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from));
    let agent_socket = agent_socket.filter(|_| opts.use_agent);
    let agent_only = identities_only.then(|| files.iter().filter_map(|f| public_blob(f)).collect());
    Keys {
        files,
        agent_socket,
        agent_only,
    }
}

pub(crate) fn authenticate(
    session: &ssh2::Session,
    host: &str,
    user: &str,
    keys: &Keys,
    opts: &ConnectOptions,
) -> Result<(), ShipError> {
    // Asking for the server's methods first ("none" auth) costs a round trip on every connect;
    // they are only needed to explain a failure, so they are asked for only then.
    let mut tried = Vec::new();
    let failed = |tried: Vec<AuthAttempt>| {
        let methods = session
            .auth_methods(user)
            .map(str::to_owned)
            .unwrap_or_default();
        ShipError::AuthFailed {
            host: host.to_owned(),
            user: user.to_owned(),
            methods: if methods.is_empty() {
                "(unknown)".to_owned()
            } else {
                methods
            },
            tried,
        }
    };
    if let Some(socket) = &keys.agent_socket
        && try_agent(
            session,
            user,
            socket,
            keys.agent_only.as_deref(),
            &mut tried,
        )
    {
        return Ok(());
    }
    for file in &keys.files {
        let key = file.display().to_string();
        if !file.exists() {
            tried.push(AuthAttempt {
                key,
                outcome: AuthOutcome::FileMissing,
            });
            continue;
        }
        let encrypted = match is_encrypted(file) {
            Ok(e) => e,
            Err(why) => {
                tried.push(AuthAttempt {
                    key,
                    outcome: AuthOutcome::Unreadable(why),
                });
                continue;
            }
        };
        let passphrase = if encrypted {
            match opts
                .passphrase
                .clone()
                .or_else(|| opts.ask_passphrase.and_then(|ask| ask(file)))
            {
                Some(p) => Some(p),
                None => {
                    tried.push(AuthAttempt {
                        key,
                        outcome: AuthOutcome::NeedsPassphrase,
                    });
                    continue;
                }
            }
        } else {
            None
        };
        let public = public_key_beside(file);
        match session.userauth_pubkey_file(
            user,
            public.as_deref(),
            file,
            passphrase.as_ref().map(|p| p.0.as_str()),
        ) {
            Ok(()) if session.authenticated() => return Ok(()),
            Ok(()) => tried.push(AuthAttempt {
                key,
                outcome: AuthOutcome::Rejected,
            }),
            Err(e) => tried.push(AuthAttempt {
                key,
                outcome: classify(&e, encrypted),
            }),
        }
    }
    Err(failed(tried))
}

fn try_agent(
    session: &ssh2::Session,
    user: &str,
    socket: &Path,
    only: Option<&[Vec<u8>]>,
    tried: &mut Vec<AuthAttempt>,
) -> bool {
    let Ok(mut agent) = session.agent() else {
        return false;
    };
    if agent.set_identity_path(socket).is_err()
        || agent.connect().is_err()
        || agent.list_identities().is_err()
    {
        tried.push(AuthAttempt {
            key: "ssh-agent".to_owned(),
            outcome: AuthOutcome::Unreadable(format!(
                "cannot talk to the agent at {}",
                socket.display()
            )),
        });
        return false;
    }
    for identity in agent.identities().unwrap_or_default() {
        if only.is_some_and(|only| !only.iter().any(|b| b == identity.blob())) {
            continue;
        }
        if agent.userauth(user, &identity).is_ok() && session.authenticated() {
            let _ = agent.disconnect();
            return true;
        }
        tried.push(AuthAttempt {
            key: format!("agent key {:?}", identity.comment()),
            outcome: AuthOutcome::Rejected,
        });
    }
    let _ = agent.disconnect();
    false
}

/// libssh2 reports a wrong passphrase as a failed signing callback (or, without a .pub file,
/// as an unsupported key format); only "authentication failed" means the server said no.
fn classify(error: &ssh2::Error, encrypted: bool) -> AuthOutcome {
    const LIBSSH2_ERROR_AUTHENTICATION_FAILED: i32 = -18;
    match (error.code(), encrypted) {
        (ssh2::ErrorCode::Session(LIBSSH2_ERROR_AUTHENTICATION_FAILED), _) => AuthOutcome::Rejected,
        (_, true) => AuthOutcome::WrongPassphrase,
        (_, false) => AuthOutcome::Unreadable(error.message().to_owned()),
    }
}

fn public_key_beside(private: &Path) -> Option<PathBuf> {
    let mut name = private.file_name()?.to_owned();
    name.push(".pub");
    Some(private.with_file_name(name)).filter(|p| p.exists())
}

/// The key blob of `<private>.pub` (`type base64 comment`), if that file is there.
fn public_blob(private: &Path) -> Option<Vec<u8>> {
    let text = std::fs::read_to_string(public_key_beside(private)?).ok()?;
    let encoded = text.split_whitespace().nth(1)?;
    STANDARD.decode(encoded).ok()
}

/// Whether a private key file needs a passphrase: OpenSSH format records its cipher,
/// PEM marks encryption in a header.
pub(crate) fn is_encrypted(path: &Path) -> Result<bool, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
        let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        let bytes = STANDARD
            .decode(body.trim())
            .map_err(|_| "not a valid OpenSSH private key (bad base64)".to_owned())?;
        let rest = bytes
            .strip_prefix(b"openssh-key-v1\0")
            .ok_or("not a valid OpenSSH private key (bad magic)")?;
        let len = rest
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or("truncated key")?;
        let cipher = rest.get(4..4 + len).ok_or("truncated key")?;
        return Ok(cipher != b"none");
    }
    Ok(text.contains("ENCRYPTED"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn keygen(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
        let path = dir.join(name);
        let ok = Command::new("ssh-keygen")
            .arg("-q")
            .args(args)
            .arg("-f")
            .arg(&path)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        path
    }

    #[test]
    fn detects_encrypted_keys() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_encrypted(&keygen(dir.path(), "plain", &["-t", "ed25519", "-N", ""])).unwrap());
        assert!(
            is_encrypted(&keygen(
                dir.path(),
                "locked",
                &["-t", "ed25519", "-N", "secret"]
            ))
            .unwrap()
        );
        assert!(
            is_encrypted(&keygen(
                dir.path(),
                "pem",
                &["-t", "ecdsa", "-m", "PEM", "-N", "secret"]
            ))
            .unwrap()
        );
        std::fs::write(
            dir.path().join("junk"),
            "-----BEGIN OPENSSH PRIVATE KEY-----\n!!\n-----END OPENSSH PRIVATE KEY-----\n",
        )
        .unwrap();
        assert!(is_encrypted(&dir.path().join("junk")).is_err());
    }
}
