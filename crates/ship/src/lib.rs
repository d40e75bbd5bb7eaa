//! `ship`: one verified SSH session (libssh2 via the `ssh2` crate) to copy files atomically and
//! run `sudo -n` commands on a node. The library never prints; the binary maps errors to
//! exit codes.

mod auth;
mod config;
mod dest;
mod error;
mod host_key;
mod known_hosts;
mod ops;
mod quote;
mod session;
mod upload;

pub use auth::Passphrase;
pub use dest::{Destination, RemotePath};
pub use error::{AuthAttempt, AuthOutcome, ShipError};
pub use ops::Output;
pub use quote::{command_line, quote};
pub use session::{ConnectOptions, Session, Stats};
pub use upload::Upload;
