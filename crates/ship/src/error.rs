//! The one error type of the library: every variant names the host and the cause.
//! An I/O cause is a field named `cause`, not `source`: the message already shows it, and as
//! a `source` it would print twice in an error chain (`{:#}`).

use std::path::PathBuf;
use std::time::Duration;

/// One authentication attempt, for the "what was tried" list of [`ShipError::AuthFailed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthAttempt {
    /// What was offered: `agent key "comment"` or a key file path.
    pub key: String,
    pub outcome: AuthOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    Rejected,
    FileMissing,
    NeedsPassphrase,
    WrongPassphrase,
    Unreadable(String),
}

impl std::fmt::Display for AuthAttempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let outcome = match &self.outcome {
            AuthOutcome::Rejected => "rejected by the server".to_owned(),
            AuthOutcome::FileMissing => "file not found".to_owned(),
            AuthOutcome::NeedsPassphrase => {
                "encrypted, and no passphrase was given (no terminal to ask on)".to_owned()
            }
            AuthOutcome::WrongPassphrase => "wrong passphrase".to_owned(),
            AuthOutcome::Unreadable(why) => format!("could not be used: {why}"),
        };
        write!(f, "{}: {outcome}", self.key)
    }
}

fn list(attempts: &[AuthAttempt]) -> String {
    if attempts.is_empty() {
        return "no keys (no agent, no -i, and none of ~/.ssh/id_rsa, id_ecdsa, id_ed25519 exist)"
            .to_owned();
    }
    attempts.iter().map(|a| format!("\n  - {a}")).collect()
}

fn paths(files: &[PathBuf]) -> String {
    files
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// The light build (without the `ssh` feature) has no SSH client.
    #[error(
        "{host}: this build has no SSH client (crate ship was built without its `ssh` feature); use the full build, `k8s-audit` or `cargo xtask`"
    )]
    NotBuilt { host: String },

    #[error("invalid destination {input:?}: {reason}")]
    InvalidDestination { input: String, reason: &'static str },

    #[error("{host}: invalid remote path {path:?}: {reason}")]
    InvalidRemotePath {
        host: String,
        path: String,
        reason: &'static str,
    },

    /// `line` is 0 when the problem is not on one line (the file cannot be read).
    #[error("{}{}: {message}", path.display(), if *line > 0 { format!(":{line}") } else { String::new() })]
    Config {
        path: PathBuf,
        line: usize,
        message: String,
    },

    #[error("{host}: cannot resolve host name: {cause}")]
    Resolve { host: String, cause: std::io::Error },

    #[error("{host}:{port}: cannot connect: {cause}")]
    Connect {
        host: String,
        port: u16,
        cause: std::io::Error,
    },

    #[error("{host}:{port}: no answer within {}s (wrong port, firewall, or host down?)", timeout.as_secs_f32())]
    ConnectTimeout {
        host: String,
        port: u16,
        timeout: Duration,
    },

    #[error("{host}:{port}: SSH handshake failed (is this an SSH server?): {message}")]
    Handshake {
        host: String,
        port: u16,
        message: String,
    },

    #[error(
        "{host}:{port}: the server offers none of the host key types known_hosts records for it ({known}); \
         its key may have changed, refusing to connect"
    )]
    NoKnownHostKeyType {
        host: String,
        port: u16,
        known: String,
    },

    #[error(
        "{host}:{port}: unknown host key {key_type} {fingerprint} (not in {files}).\n\
         If you trust it (check the fingerprint with the host's owner), run again with --accept-new to record it"
    , files = paths(known_hosts))]
    UnknownHostKey {
        host: String,
        port: u16,
        key_type: String,
        fingerprint: String,
        known_hosts: Vec<PathBuf>,
    },

    #[error(
        "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\n\
         {host}:{port} now presents {key_type} {fingerprint}, but {}:{line} records a different key.\n\
         Someone could be eavesdropping on you (man-in-the-middle), or the host key was replaced.\n\
         Refusing to connect; remove the old entry only after checking with the host's owner",
        file.display()
    )]
    ChangedHostKey {
        host: String,
        port: u16,
        key_type: String,
        fingerprint: String,
        file: PathBuf,
        line: usize,
    },

    #[error("{host}:{port}: host key {fingerprint} is marked @revoked in {}:{line}; refusing to connect", file.display())]
    RevokedHostKey {
        host: String,
        port: u16,
        fingerprint: String,
        file: PathBuf,
        line: usize,
    },

    #[error("{}: cannot read known_hosts: {cause}", path.display())]
    KnownHostsRead {
        path: PathBuf,
        cause: std::io::Error,
    },

    #[error("{}: cannot record the host key: {cause}", path.display())]
    KnownHostsWrite {
        path: PathBuf,
        cause: std::io::Error,
    },

    #[error(
        "{user}@{host}: authentication failed; the server allows: {methods}; tried:{}",
        list(tried)
    )]
    AuthFailed {
        host: String,
        user: String,
        methods: String,
        tried: Vec<AuthAttempt>,
    },

    #[error(
        "{host}: sudo needs a password for this user; ship only runs `sudo -n` (configure NOPASSWD for it)"
    )]
    SudoNeedsPassword { host: String },

    #[error("{host}: remote command `{command}` failed with status {status}: {}", stderr.trim_end())]
    RemoteCommand {
        host: String,
        command: String,
        status: i32,
        stderr: String,
    },

    #[error("{host}: {path}: no such file or directory")]
    RemotePathMissing { host: String, path: String },

    #[error("{host}: {path}: already exists, and may not be replaced")]
    RemotePathExists { host: String, path: String },

    #[error(
        "{host}: {what}: the command line would be {len} bytes, more than a remote shell accepts ({max})"
    )]
    CommandTooLong {
        host: String,
        what: String,
        len: usize,
        max: usize,
    },

    #[error("{host}: running {command}: {cause}")]
    LocalCommand {
        host: String,
        command: String,
        cause: std::io::Error,
    },

    #[error("{host}: {path}: not writable: {}", stderr.trim_end())]
    RemotePathNotWritable {
        host: String,
        path: String,
        stderr: String,
    },

    #[error(
        "{host}: {path}: the upload was cut short (sent {sent} bytes); the target was left untouched"
    )]
    IncompleteUpload {
        host: String,
        path: String,
        sent: u64,
    },

    #[error("{host}: reading the data to upload to {path}: {cause}")]
    ReadSource {
        host: String,
        path: String,
        cause: std::io::Error,
    },

    #[error("{host}: writing local output: {cause}")]
    WriteLocal { host: String, cause: std::io::Error },

    #[error("{host}: connection lost during {during}: {message}")]
    ConnectionLost {
        host: String,
        during: String,
        message: String,
    },

    /// A jump host could not carry a connection to `target`, or is gone.
    #[error("through jump host {jump}: cannot reach {target}: {message}")]
    JumpChannel {
        jump: String,
        target: String,
        message: String,
    },

    #[error(
        "{hop}: the ssh config gives this jump host a ProxyJump of its own; ship does not chain \
         them (list every hop in ProxyJump or --jump, and give the jump host `ProxyJump none`)"
    )]
    NestedJump { hop: String },

    /// The node refused or could not open a tunnel (a closed port, forwarding disabled).
    #[error("{host}: cannot open a tunnel to {target} from the node: {message}")]
    TunnelOpen {
        host: String,
        target: String,
        message: String,
    },
}

impl ShipError {
    /// Connection and authentication failures, which `ship` reports with exit status 255 as ssh does.
    pub fn is_connection_failure(&self) -> bool {
        matches!(
            self,
            ShipError::Resolve { .. }
                | ShipError::Connect { .. }
                | ShipError::ConnectTimeout { .. }
                | ShipError::Handshake { .. }
                | ShipError::NoKnownHostKeyType { .. }
                | ShipError::UnknownHostKey { .. }
                | ShipError::ChangedHostKey { .. }
                | ShipError::RevokedHostKey { .. }
                | ShipError::AuthFailed { .. }
                | ShipError::ConnectionLost { .. }
                | ShipError::JumpChannel { .. }
                | ShipError::NestedJump { .. }
        )
    }
}
