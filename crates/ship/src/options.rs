//! How a remote operation runs: named options instead of positional booleans.

use std::io::{Read, Write};
use std::path::Path;

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
