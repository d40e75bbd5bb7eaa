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
mod known_hosts;
mod ops;
mod options;
mod quote;
mod session;
mod transaction;
mod upload;

pub use auth::Passphrase;
pub use child::{Held, RemoteChild, Until};
pub use dest::{Destination, RemotePath};
pub use error::{AuthAttempt, AuthOutcome, ShipError};
pub use ops::Output;
pub use options::{ExecOptions, Source, Streams, Sudo, UploadOptions};
pub use quote::{command_line, quote};
pub use session::{ConnectOptions, Session, Stats};
pub use transaction::{ApplyError, Input, Invocation, Phase, Transaction};
pub use upload::Upload;
