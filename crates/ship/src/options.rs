//! How a remote operation runs: named options instead of positional booleans.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Destination;

/// Whether a remote operation runs as root through `sudo -n`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Sudo {
    /// As the user the session logged in as.
    #[default]
    No,
    /// As root, through `sudo -n` (never prompting for a password).
    Yes,
}

impl Sudo {
    pub fn is_yes(self) -> bool {
        self == Sudo::Yes
    }
}

/// Options of [`Session::exec`](crate::Session::exec), [`Session::exec_streaming`](crate::Session::exec_streaming),
/// [`Session::spawn`](crate::Session::spawn) and [`Session::apply`](crate::Session::apply).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecOptions {
    pub sudo: Sudo,
}

/// Options of [`Session::upload`](crate::Session::upload) and
/// [`Session::upload_batch`](crate::Session::upload_batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadOptions {
    /// Permissions of the written files (the low 12 bits are used).
    pub mode: u32,
    pub sudo: Sudo,
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions {
            mode: 0o600,
            sudo: Sudo::No,
        }
    }
}

/// Where the data of [`Session::upload`](crate::Session::upload) come from.
pub enum Source<'a> {
    Bytes(&'a [u8]),
    /// Exactly `len` bytes from `reader`; fewer is an error, and the target is left alone.
    Sized {
        reader: &'a mut dyn Read,
        len: u64,
    },
    /// A stream of unknown length, read to its end.
    Stream(&'a mut dyn Read),
    /// A local file (its size is known up front).
    File(&'a Path),
}

/// The standard streams of [`Session::exec_streaming`](crate::Session::exec_streaming).
pub struct Streams<'a> {
    /// `None` gives the command `/dev/null`, as `ssh -n` does (and saves a round trip).
    pub stdin: Option<&'a mut dyn Read>,
    pub stdout: &'a mut dyn Write,
    pub stderr: &'a mut dyn Write,
}

/// How to connect. `Default` gives OpenSSH's behaviour: ~/.ssh/config, the default known_hosts
/// files and identities, the agent, and a 10 s connect timeout.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub user: Option<String>,
    pub port: Option<u16>,
    /// Identity files (`-i`); tried after the agent, before ~/.ssh/config's IdentityFile.
    pub identities: Vec<PathBuf>,
    /// known_hosts files; empty means OpenSSH's defaults (or UserKnownHostsFile from the config).
    /// `accept_new` records new keys in the first one.
    pub known_hosts: Vec<PathBuf>,
    /// Record the key of a host that is not in known_hosts yet (never a changed one).
    pub accept_new: bool,
    /// For the TCP connect and the SSH handshake together. A ConnectTimeout in the ssh config
    /// wins when it is shorter.
    pub connect_timeout: Duration,
    /// `None` reads ~/.ssh/config when it exists.
    pub ssh_config: Option<PathBuf>,
    pub use_agent: bool,
    /// Jump hosts to go through, in order (`ssh -J a,b`). Empty means the ProxyJump the ssh
    /// config gives the destination, if any. The user and port options above are the
    /// destination's only: each hop takes its own from the jump list, then the ssh config.
    pub jump: Vec<Destination>,
    /// The agent's socket; `None` means `SSH_AUTH_SOCK`.
    pub agent_socket: Option<PathBuf>,
    /// The passphrase for encrypted identity files.
    pub passphrase: Option<Passphrase>,
    /// Asked for an encrypted key's passphrase when `passphrase` is unset (the CLI prompts on a TTY).
    pub ask_passphrase: Option<fn(&Path) -> Option<Passphrase>>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            user: None,
            port: None,
            identities: Vec::new(),
            known_hosts: Vec::new(),
            accept_new: false,
            connect_timeout: Duration::from_secs(10),
            ssh_config: None,
            use_agent: true,
            jump: Vec::new(),
            agent_socket: None,
            passphrase: None,
            ask_passphrase: None,
        }
    }
}

/// What a session cost, to check that a pipeline stays on one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub tcp_connections: u32,
    /// Exchanges that wait for the server: each channel open and exec request, and the input of
    /// a command that reads some (it can only follow the exec request's answer).
    pub round_trips: u32,
}

/// A key passphrase; its Debug output never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Passphrase(pub String);

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrase_is_not_printed() {
        assert_eq!(
            format!("{:?}", Passphrase("hunter2".into())),
            "Passphrase(..)"
        );
    }
}
