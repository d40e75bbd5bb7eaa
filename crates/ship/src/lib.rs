//! `ship`: one verified SSH session (libssh2 via the `ssh2` crate) to copy files atomically and
//! run `sudo -n` commands on a node. The library never prints; the binary maps errors to
//! exit codes.

mod auth;
mod child;
mod config;
pub mod copy;
mod dest;
mod error;
mod host_key;
mod jump;
mod known_hosts;
mod ops;
mod options;
mod quote;
mod session;
mod transaction;
mod tunnel;
mod upload;

pub use auth::Passphrase;
pub use child::{Held, RemoteChild, Until};
pub use dest::{Destination, RemotePath};
pub use error::{AuthAttempt, AuthOutcome, ShipError};
pub use jump::{Jump, jump_hops};
pub use ops::Output;
pub use options::{ExecOptions, Source, Streams, Sudo, UploadOptions};
pub use quote::{command_line, quote};
pub use session::{ConnectOptions, Session, Stats};
pub use transaction::{ApplyError, Input, Invocation, Phase, Transaction};
pub use tunnel::Tunnel;
pub use upload::Upload;

/// The host a name stands for after the ssh config's `HostName` (the name itself without one),
/// so callers can match `--host cp1` against an address.
pub fn host_name(alias: &str, ssh_config: Option<&std::path::Path>) -> Result<String, ShipError> {
    Ok(config::resolve(alias, ssh_config)?
        .host_name
        .unwrap_or_else(|| alias.to_string()))
}
