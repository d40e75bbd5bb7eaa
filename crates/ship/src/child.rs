//! A held command: one that keeps running on its own channel, stdin open, while the session
//! runs other commands. Its life is the channel's: when the channel closes (we finish or drop
//! it, our process dies, the connection drops), the command reads end of input. A lock holder
//! on the node built on it cannot outlive the run that took the lock.

use std::time::{Duration, Instant};

use crate::ops::{Output, Until, sudo_argv};
use crate::quote::command_line;
use crate::session::{KEEPALIVE, KEEPALIVE_MAX_MISSED, exit_status, millis};
use crate::{ExecOptions, Session, ShipError};

/// How long dropping a [`RemoteChild`] waits for the command to end after its end of input.
const DROP_WAIT: Duration = Duration::from_secs(10);

/// A command started by [`Session::spawn`]. Dropping it ends its input and waits (up to 10 s)
/// for it to exit; [`RemoteChild::finish`] does the same and returns what it printed.
pub struct RemoteChild<'s> {
    session: &'s Session,
    channel: Option<ssh2::Channel>,
    during: String,
    opts: ExecOptions,
    /// Output read off the channel and not handed out yet.
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Session {
    /// Starts `argv` on a channel of its own and leaves it running with its stdin open: two
    /// round trips (open, exec). Other commands can run on the session meanwhile. What the
    /// command prints waits in memory until it is read; one that prints more than the
    /// channel's window (2 MiB with OpenSSH) while nobody reads it stalls until it is read.
    ///
    /// A command that must clean up when the channel goes should also trap HUP and PIPE: when
    /// the connection drops, its first write gets SIGPIPE, which skips an EXIT trap.
    pub fn spawn(&self, argv: &[&str], opts: ExecOptions) -> Result<RemoteChild<'_>, ShipError> {
        let during = command_line(argv);
        self.ssh.set_blocking(true);
        let mut channel = self
            .ssh
            .channel_session()
            .map_err(|e| self.lost(&during, e))?;
        self.round_trip();
        channel
            .exec(&command_line(&sudo_argv(argv, opts.sudo)))
            .map_err(|e| self.lost(&during, e))?;
        self.round_trip();
        Ok(RemoteChild {
            session: self,
            channel: Some(channel),
            during,
            opts,
            stdout: Vec::new(),
            stderr: Vec::new(),
        })
    }
}

impl RemoteChild<'_> {
    /// Reads the command's output until it prints `line` on a line of its own (without the
    /// newline), or until it exits. The output after the line stays for later.
    pub fn read_until_line(&mut self, line: &str) -> Result<Until, ShipError> {
        let mut missed = 0;
        loop {
            if let Some(start) = find_line(&self.stdout, line.as_bytes()) {
                let before = self.stdout[..start].to_vec();
                self.stdout.drain(..start + line.len() + 1);
                return Ok(Until::Line { before });
            }
            let (progressed, eof) = self.poll()?;
            if eof {
                return self.wait_exit(None).map(Until::Exited);
            }
            if !progressed {
                self.idle(&mut missed, None)?;
            }
        }
    }

    /// Ends the command's input and waits for it to exit; returns its status and the output
    /// not read yet. One round trip.
    pub fn finish(mut self) -> Result<Output, ShipError> {
        self.end(None)
    }

    fn end(&mut self, deadline: Option<Instant>) -> Result<Output, ShipError> {
        let session = self.session;
        let Some(channel) = self.channel.as_mut() else {
            return Err(session.lost(&self.during, "the channel is already closed"));
        };
        session.ssh.set_blocking(true);
        if !channel.eof() {
            channel
                .send_eof()
                .map_err(|e| session.lost(&self.during, e))?;
        }
        session.round_trip();
        let mut missed = 0;
        loop {
            let (progressed, eof) = self.poll()?;
            if eof {
                return self.wait_exit(deadline);
            }
            if !progressed {
                self.idle(&mut missed, deadline)?;
            }
        }
    }

    /// Copies what the channel has now; `(anything came, the command closed its output)`.
    fn poll(&mut self) -> Result<(bool, bool), ShipError> {
        let session = self.session;
        let channel = self
            .channel
            .as_mut()
            .ok_or_else(|| session.lost(&self.during, "the channel is already closed"))?;
        session.ssh.set_blocking(false);
        let mut buf = vec![0u8; 64 * 1024];
        let out = session.drain(channel, &self.during, 0, &mut buf, &mut self.stdout);
        let err = session.drain(channel, &self.during, 1, &mut buf, &mut self.stderr);
        let eof = channel.eof();
        session.ssh.set_blocking(true);
        Ok((out? | err?, eof))
    }

    /// Waits for the socket; gives up on a dead connection, or at `deadline`.
    fn idle(&self, missed: &mut u32, deadline: Option<Instant>) -> Result<(), ShipError> {
        let wait = match deadline {
            Some(d) if Instant::now() >= d => {
                return Err(self.session.lost(&self.during, "the command did not end"));
            }
            Some(d) => d.saturating_duration_since(Instant::now()).min(KEEPALIVE),
            None => KEEPALIVE,
        };
        self.session.ssh.set_blocking(false);
        let ready = self.session.wait_for_socket_for(wait);
        if !matches!(ready, Ok(true)) {
            *missed += 1;
            let _ = self.session.ssh.keepalive_send();
        } else {
            *missed = 0;
        }
        self.session.ssh.set_blocking(true);
        ready?;
        if *missed > KEEPALIVE_MAX_MISSED {
            return Err(self
                .session
                .lost(&self.during, "the server stopped answering keepalives"));
        }
        Ok(())
    }

    fn wait_exit(&mut self, deadline: Option<Instant>) -> Result<Output, ShipError> {
        let session = self.session;
        let mut channel = self
            .channel
            .take()
            .ok_or_else(|| session.lost(&self.during, "the channel is already closed"))?;
        session.ssh.set_blocking(true);
        let result = bounded(session, deadline, || channel.wait_close())
            .and_then(|()| exit_status(&channel));
        bounded(session, deadline, || {
            drop(channel);
            Ok(())
        })
        .ok();
        let status = result.map_err(|e| session.lost(&self.during, e))?;
        session.sudo_check(self.opts.sudo, status, &self.stderr)?;
        Ok(Output {
            status,
            stdout: std::mem::take(&mut self.stdout),
            stderr: std::mem::take(&mut self.stderr),
        })
    }
}

/// A command kept running on its channel without borrowing the session, so that it can live
/// beside the session in one owner (a node lock held for a whole run). Hand it back to the
/// same session with [`Held::release`]; dropped instead, its channel closes with the session,
/// and the command reads end of input then.
pub struct Held {
    channel: ssh2::Channel,
    during: String,
    opts: ExecOptions,
}

impl RemoteChild<'_> {
    /// Keeps the command running on its channel, no longer tied to this borrow of the session.
    /// An error when the command has already ended (its channel is closed).
    pub fn detach(mut self) -> Result<Held, ShipError> {
        let Some(channel) = self.channel.take() else {
            return Err(self
                .session
                .lost(&self.during, "the command has already ended"));
        };
        Ok(Held {
            channel,
            during: std::mem::take(&mut self.during),
            opts: self.opts,
        })
    }
}

impl Held {
    /// Ends the command's input and waits for it to exit, on the session it was started on:
    /// one round trip.
    pub fn release(self, session: &Session) -> Result<Output, ShipError> {
        RemoteChild {
            session,
            channel: Some(self.channel),
            during: self.during,
            opts: self.opts,
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
        .finish()
    }
}

impl Drop for RemoteChild<'_> {
    fn drop(&mut self) {
        if self.channel.is_some() {
            let _ = self.end(Some(Instant::now() + DROP_WAIT));
        }
        if let Some(channel) = self.channel.take() {
            // Gave up waiting: freeing the channel still waits for the server's close, briefly.
            let _ = bounded(self.session, Some(Instant::now()), || {
                drop(channel);
                Ok(())
            });
        }
    }
}

/// Runs a blocking libssh2 call with the session's timeout cut to what is left until
/// `deadline` (at least a second), then restores it.
fn bounded<T>(
    session: &Session,
    deadline: Option<Instant>,
    call: impl FnOnce() -> Result<T, ssh2::Error>,
) -> Result<T, ssh2::Error> {
    let Some(deadline) = deadline else {
        return call();
    };
    let saved = session.ssh.timeout();
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(1));
    session.ssh.set_timeout(millis(left));
    let result = call();
    session.ssh.set_timeout(saved);
    result
}

/// Where a line equal to `line` starts in `text`.
fn find_line(text: &[u8], line: &[u8]) -> Option<usize> {
    let mut start = 0;
    for (i, &b) in text.iter().enumerate() {
        if b == b'\n' {
            if &text[start..i] == line {
                return Some(start);
            }
            start = i + 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::find_line;

    #[test]
    fn lines_are_whole_lines() {
        assert_eq!(find_line(b"a\nready\n", b"ready"), Some(2));
        assert_eq!(find_line(b"not ready\nready", b"ready"), None);
        assert_eq!(find_line(b"ready\n", b"ready"), Some(0));
    }
}
