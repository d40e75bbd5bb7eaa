//! `ship`: one verified SSH session (libssh2 via the `ssh2` crate) to copy files atomically and
//! run `sudo -n` commands on a node. The library never prints; the binary maps errors to
//! exit codes.
//!
//! Without the `ssh` feature (on by default) the crate builds without libssh2 and OpenSSL:
//! the plain types, ssh_config lookups and the local transaction stay, and [`Session`] is a
//! stand-in that cannot be made (see `offline.rs`). The pipeline's light build, which only
//! runs on the local node, uses that.

// The light build leaves out the SSH client but not the scripts and helpers it shares with
// the local transaction; what only the client uses is dead there, and only there.
#![cfg_attr(not(feature = "ssh"), allow(dead_code, unused_imports))]

#[cfg(feature = "ssh")]
mod auth;
#[cfg(feature = "ssh")]
mod child;
mod config;
#[cfg(feature = "ssh")]
pub mod copy;
mod dest;
mod error;
#[cfg(feature = "ssh")]
mod host_key;
#[cfg(feature = "ssh")]
mod jump;
#[cfg(feature = "ssh")]
mod known_hosts;
#[cfg(not(feature = "ssh"))]
mod offline;
mod ops;
mod options;
mod quote;
#[cfg(feature = "ssh")]
mod session;
mod transaction;
#[cfg(feature = "ssh")]
mod tunnel;
#[cfg(feature = "ssh")]
mod upload;

#[cfg(feature = "ssh")]
pub use child::{Held, RemoteChild};
pub use dest::{Destination, RemotePath};
pub use error::{AuthAttempt, AuthOutcome, ShipError};
#[cfg(feature = "ssh")]
pub use jump::Jump;
#[cfg(not(feature = "ssh"))]
pub use offline::{Held, Jump, RemoteChild, Session, Tunnel};
pub use ops::{Output, Until};
pub use options::{
    ConnectOptions, ExecOptions, Passphrase, Source, Stats, Streams, Sudo, UploadOptions,
};
pub use quote::{command_line, quote};
#[cfg(feature = "ssh")]
pub use session::Session;
pub use transaction::{ApplyError, Input, Invocation, Phase, Transaction};
#[cfg(feature = "ssh")]
pub use tunnel::Tunnel;
#[cfg(feature = "ssh")]
pub use upload::Upload;

/// The host a name stands for after the ssh config's `HostName` (the name itself without one),
/// so callers can match `--host cp1` against an address.
pub fn host_name(alias: &str, ssh_config: Option<&std::path::Path>) -> Result<String, ShipError> {
    Ok(config::resolve(alias, ssh_config)?
        .host_name
        .unwrap_or_else(|| alias.to_string()))
}

/// The jump hops the ssh config gives `host` (ProxyJump), empty when none (or `none`), so
/// callers can share one [`Jump`] among the nodes behind the same hops.
pub fn jump_hops(
    host: &str,
    ssh_config: Option<&std::path::Path>,
) -> Result<Vec<Destination>, ShipError> {
    let config = config::resolve(host, ssh_config)?;
    if config.proxy_jump.is_empty() {
        return Ok(Vec::new());
    }
    Destination::parse_jump(&config.proxy_jump.join(","))
}
