//! A byte stream from the node to a TCP port it can reach (its own API server, say), as a
//! direct-tcpip channel of the node's session: nothing connects from the operator's machine.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use crate::session::{KEEPALIVE, KEEPALIVE_MAX_MISSED, REQUEST_TIMEOUT, would_block};
use crate::{Session, ShipError};

/// A stream opened by [`Session::tunnel`]. Reads and writes block, each bounded by its
/// timeout (60 s unless set); other channels of the session (a held command, say) keep
/// working meanwhile. It borrows the session, which runs on one thread at a time.
pub struct Tunnel<'s> {
    session: &'s Session,
    channel: ssh2::Channel,
    target: String,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl Session {
    /// Opens a direct-tcpip channel from the node to `host:port` (one round trip). A port
    /// the node cannot connect to is an error here, not a hang.
    pub fn tunnel(&self, host: &str, port: u16) -> Result<Tunnel<'_>, ShipError> {
        let target = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        self.ssh.set_blocking(true);
        let channel = self
            .ssh
            .channel_direct_tcpip(host, port, None)
            .map_err(|e| ShipError::TunnelOpen {
                host: self.host().to_owned(),
                target: target.clone(),
                message: e.message().to_owned(),
            })?;
        self.round_trip();
        Ok(Tunnel {
            session: self,
            channel,
            target,
            read_timeout: Some(REQUEST_TIMEOUT),
            write_timeout: Some(REQUEST_TIMEOUT),
        })
    }
}

impl Tunnel<'_> {
    /// `host:port` as seen from the node.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// How long a read waits for data; `None` waits as long as the connection lives (a dead
    /// one is still noticed by keepalives). A read that times out fails with `TimedOut`.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    /// How long a write waits for the channel to take the data.
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.write_timeout = timeout;
    }

    /// Ends what we send (the far end reads end of file); reading goes on.
    pub fn send_eof(&mut self) -> io::Result<()> {
        let deadline = self.write_timeout.map(|t| Instant::now() + t);
        let mut missed = 0;
        loop {
            self.session.ssh.set_blocking(false);
            let sent = self.channel.send_eof();
            match sent {
                Ok(()) => {
                    self.session.ssh.set_blocking(true);
                    return Ok(());
                }
                Err(e) if would_block(&e) => {}
                Err(e) => {
                    self.session.ssh.set_blocking(true);
                    return Err(io::Error::other(e));
                }
            }
            self.wait(deadline, &mut missed, "sending end of file")?;
        }
    }

    /// Waits (non-blocking mode set) for the transport; the session is blocking again after.
    fn wait(&self, deadline: Option<Instant>, missed: &mut u32, during: &str) -> io::Result<()> {
        let result = self.wait_inner(deadline, missed, during);
        self.session.ssh.set_blocking(true);
        result
    }

    fn wait_inner(
        &self,
        deadline: Option<Instant>,
        missed: &mut u32,
        during: &str,
    ) -> io::Result<()> {
        let wait = match deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "{}: tunnel to {}: timed out {during}",
                            self.session.host(),
                            self.target
                        ),
                    ));
                }
                left.min(KEEPALIVE)
            }
            None => KEEPALIVE,
        };
        let ready = self
            .session
            .wait_for_socket_for(wait)
            .map_err(io::Error::other)?;
        if ready {
            *missed = 0;
            return Ok(());
        }
        // Only a full keepalive interval of silence counts against the connection.
        if wait >= KEEPALIVE {
            *missed += 1;
            if *missed > KEEPALIVE_MAX_MISSED {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    self.session
                        .lost(during, "the server stopped answering keepalives"),
                ));
            }
            let _ = self.session.ssh.keepalive_send();
        }
        Ok(())
    }
}

impl Tunnel<'_> {
    /// Runs `op` on the channel in non-blocking mode until it does not would-block, waiting on
    /// the socket in between (bounded by `deadline` and the keepalives); the session is left
    /// blocking, as the rest of ship expects it.
    fn until_ready<T>(
        &mut self,
        deadline: Option<Instant>,
        during: &str,
        mut op: impl FnMut(&mut ssh2::Channel) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut missed = 0;
        loop {
            self.session.ssh.set_blocking(false);
            let result = op(&mut self.channel);
            self.session.ssh.set_blocking(true);
            match result {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return done,
            }
            self.wait(deadline, &mut missed, during)?;
        }
    }
}

impl Read for Tunnel<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let deadline = self.read_timeout.map(|t| Instant::now() + t);
        self.until_ready(deadline, "reading", |channel| channel.read(buf))
    }
}

impl Write for Tunnel<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let deadline = self.write_timeout.map(|t| Instant::now() + t);
        self.until_ready(deadline, "writing", |channel| channel.write(buf))
    }

    /// A write returns once libssh2 sent the data, so there is nothing to flush. (The
    /// channel's own `flush` would discard unread input instead.)
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Tunnel<'_> {
    fn drop(&mut self) {
        self.session.ssh.set_blocking(true);
        // The close goes out with the session's next request; no need to wait for the reply.
        let _ = self.channel.close();
    }
}
