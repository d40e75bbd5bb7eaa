//! Downloads and commands, and what uploads share with them. Every argument reaches the
//! remote shell quoted; scripts take their inputs as positional parameters.

use std::io::Write;

use crate::quote::command_line;
use crate::{ExecOptions, Session, ShipError, Streams, Sudo};

/// What a remote command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    /// `Ok(self)` on status 0, else [`ShipError::RemoteCommand`] carrying the stderr.
    pub fn check(self, host: &str, argv: &[&str]) -> Result<Output, ShipError> {
        if self.status == 0 {
            return Ok(self);
        }
        Err(ShipError::RemoteCommand {
            host: host.to_owned(),
            command: command_line(argv),
            status: self.status,
            stderr: String::from_utf8_lossy(&self.stderr).into_owned(),
        })
    }
}

/// What [`RemoteChild::read_until_line`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Until {
    /// The line came; `before` is the output that preceded it.
    Line { before: Vec<u8> },
    /// The command ended first (a lock holder that found the lock taken, say).
    Exited(Output),
}

/// Exit statuses our scripts use for the failures the caller should tell apart (above what
/// sudo, sh and coreutils use for their own errors).
pub(crate) const MISSING: i32 = 91;
pub(crate) const NOT_WRITABLE: i32 = 92;
pub(crate) const INCOMPLETE: i32 = 93;
pub(crate) const IS_DIRECTORY: i32 = 94;
pub(crate) const EXISTS: i32 = 95;
pub(crate) const NOT_REGULAR: i32 = 96;

const DOWNLOAD: &str = r#"if [ ! -e "$1" ]; then echo "ship: $1: no such file" >&2; exit 91; fi
exec cat -- "$1""#;

/// Splits a remote file path into its directory and file name.
pub(crate) fn split_path(host: &str, path: &str) -> Result<(String, String), ShipError> {
    let invalid = |reason| ShipError::InvalidRemotePath {
        host: host.to_owned(),
        path: path.to_owned(),
        reason,
    };
    if path.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    let (dir, name) = match path.rsplit_once('/') {
        Some(("", name)) => ("/", name),
        Some((dir, name)) => (dir, name),
        None => (".", path),
    };
    if name.is_empty() || name == "." || name == ".." {
        return Err(invalid("expected a file name at the end"));
    }
    Ok((dir.to_owned(), name.to_owned()))
}

pub(crate) fn script_argv<'a>(
    sudo: Sudo,
    name: &'a str,
    script: &'a str,
    args: &[&'a str],
) -> Vec<&'a str> {
    let mut argv = if sudo.is_yes() {
        vec!["sudo", "-n", "--"]
    } else {
        Vec::new()
    };
    argv.extend(["sh", "-c", script, name]);
    argv.extend_from_slice(args);
    argv
}

fn sudo_refused(stderr: &[u8]) -> bool {
    let text = String::from_utf8_lossy(stderr);
    text.contains("sudo: a password is required") || text.contains("sudo: a terminal is required")
}

/// Keeps the first few KiB of what passes through, to recognise sudo's refusal.
struct Tee<'a> {
    inner: &'a mut dyn Write,
    head: Vec<u8>,
}

impl Write for Tee<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        let room = 4096usize.saturating_sub(self.head.len()).min(n);
        self.head.extend_from_slice(&buf[..room]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The error a script's exit status stands for, about `path`.
pub(crate) fn script_error(
    host: &str,
    path: &str,
    what: &str,
    status: i32,
    stderr: &[u8],
) -> ShipError {
    let text = String::from_utf8_lossy(stderr).into_owned();
    let host = host.to_owned();
    match status {
        MISSING => ShipError::RemotePathMissing {
            host,
            path: path.to_owned(),
        },
        NOT_WRITABLE => ShipError::RemotePathNotWritable {
            host,
            path: path.to_owned(),
            stderr: text,
        },
        IS_DIRECTORY => ShipError::InvalidRemotePath {
            host,
            path: path.to_owned(),
            reason: "is a directory",
        },
        NOT_REGULAR => ShipError::InvalidRemotePath {
            host,
            path: path.to_owned(),
            reason: "is a symbolic link, a device or a FIFO; ship replaces only regular files",
        },
        EXISTS => ShipError::RemotePathExists {
            host,
            path: path.to_owned(),
        },
        _ if sudo_refused(stderr) => ShipError::SudoNeedsPassword { host },
        _ => ShipError::RemoteCommand {
            host,
            command: format!("{what} {path}"),
            status,
            stderr: text,
        },
    }
}

#[cfg(feature = "ssh")]
impl Session {
    /// Streams a remote file into `to`.
    pub fn download_to(
        &self,
        remote_path: &str,
        sudo: Sudo,
        to: &mut dyn Write,
    ) -> Result<(), ShipError> {
        let argv = script_argv(sudo, "ship-download", DOWNLOAD, &[remote_path]);
        let mut stderr = Vec::new();
        let status = self.run(&command_line(&argv), remote_path, None, to, &mut stderr)?;
        match status {
            0 => Ok(()),
            _ => Err(script_error(
                self.host(),
                remote_path,
                "download",
                status,
                &stderr,
            )),
        }
    }

    /// A remote file's bytes.
    pub fn download(&self, remote_path: &str, sudo: Sudo) -> Result<Vec<u8>, ShipError> {
        let mut bytes = Vec::new();
        self.download_to(remote_path, sudo, &mut bytes)?;
        Ok(bytes)
    }

    /// Runs `argv` (each argument quoted) and collects its output; the command reads
    /// `/dev/null`. A non-zero status is not an error here (see [`Output::check`]); sudo asking
    /// for a password is.
    pub fn exec(&self, argv: &[&str], opts: ExecOptions) -> Result<Output, ShipError> {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let streams = Streams {
            stdin: None,
            stdout: &mut stdout,
            stderr: &mut stderr,
        };
        let status = self.exec_streaming(argv, opts, streams)?;
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }

    /// Like [`Session::exec`], with the output copied to the streams as it arrives and their
    /// stdin fed to the command; returns the exit status.
    pub fn exec_streaming(
        &self,
        argv: &[&str],
        opts: ExecOptions,
        streams: Streams<'_>,
    ) -> Result<i32, ShipError> {
        let full = sudo_argv(argv, opts.sudo);
        let mut tee = Tee {
            inner: streams.stderr,
            head: Vec::new(),
        };
        let status = self.run(
            &command_line(&full),
            &command_line(argv),
            streams.stdin,
            streams.stdout,
            &mut tee,
        )?;
        self.sudo_check(opts.sudo, status, &tee.head)?;
        Ok(status)
    }

    /// sudo's refusal to run without a password is an error of its own, not a status.
    pub(crate) fn sudo_check(
        &self,
        sudo: Sudo,
        status: i32,
        stderr: &[u8],
    ) -> Result<(), ShipError> {
        if sudo.is_yes() && status == 1 && sudo_refused(stderr) {
            return Err(ShipError::SudoNeedsPassword {
                host: self.host().to_owned(),
            });
        }
        Ok(())
    }
}

/// `argv`, behind `sudo -n --` when asked.
pub(crate) fn sudo_argv<'a>(argv: &[&'a str], sudo: Sudo) -> Vec<&'a str> {
    match sudo {
        Sudo::Yes => ["sudo", "-n", "--"].iter().chain(argv).copied().collect(),
        Sudo::No => argv.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_paths_split_into_dir_and_name() {
        let split = |p: &str| split_path("h", p).map_err(|e| e.to_string());
        assert_eq!(
            split("/etc/x.yaml").unwrap(),
            ("/etc".into(), "x.yaml".into())
        );
        assert_eq!(split("/x").unwrap(), ("/".into(), "x".into()));
        assert_eq!(split("rel").unwrap(), (".".into(), "rel".into()));
        assert_eq!(split("a b/c\nd").unwrap(), ("a b".into(), "c\nd".into()));
        for bad in ["/etc/", "", "/tmp/..", "a\0b"] {
            assert!(split(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn check_carries_stderr() {
        let out = Output {
            status: 2,
            stdout: vec![],
            stderr: b"boom\n".to_vec(),
        };
        let err = out.check("node", &["ls", "a b"]).unwrap_err().to_string();
        assert_eq!(
            err,
            "node: remote command `ls 'a b'` failed with status 2: boom"
        );
    }
}
