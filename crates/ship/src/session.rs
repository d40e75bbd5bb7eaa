//! One SSH session per node: connecting (DNS, TCP or a jump host's channel, handshake, host
//! key, auth) and running remote commands over channels of that session.

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth;
use crate::host_key::{host_key_preference, verify_host_key};
use crate::jump::{Jump, Relay};
use crate::{ConnectOptions, Destination, ShipError, Stats, config, known_hosts};

/// Blocking libssh2 calls after the handshake (auth, channel open, exec request) are short
/// exchanges; this bounds them so a dead peer cannot hang us. Long transfers and commands run
/// non-blocking and are bounded by keepalives instead.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const KEEPALIVE: Duration = Duration::from_secs(15);
/// Keepalive rounds without a byte from the server before we call the connection dead.
pub(crate) const KEEPALIVE_MAX_MISSED: u32 = 4;

pub struct Session {
    pub(crate) ssh: ssh2::Session,
    /// A second handle on the transport libssh2 owns (a TCP socket, or our end of a jump's
    /// channel), only for poll().
    socket: OwnedFd,
    host: String,
    stats: Cell<Stats>,
    /// Whether the node's `head -c` can cut a batch upload apart; unknown until asked.
    pub(crate) gnu_head: Cell<Option<bool>>,
    /// Keeps the jump hosts' relays running while this session rides on them; dropped after
    /// `ssh` (fields drop in order), so the session says goodbye before its carrier goes.
    jump: Option<Arc<Jump>>,
}

// The pipeline runs node preflights on threads of their own.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<Session>();
};

/// Which end of a connection a host is: the target takes the caller's user and port options,
/// a jump host only its own (`user@host:port` in the jump list, then the ssh config), as
/// OpenSSH does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Target,
    Hop,
}

/// A verified and authenticated libssh2 session, not yet wrapped.
pub(crate) struct Established {
    pub(crate) ssh: ssh2::Session,
    pub(crate) socket: OwnedFd,
    pub(crate) host: String,
}

impl Session {
    /// Connects to `dest`: directly, or through the jump hosts of `opts.jump` (or, when that
    /// is empty, the ProxyJump the ssh config gives the host).
    pub fn connect(dest: &Destination, opts: &ConnectOptions) -> Result<Session, ShipError> {
        let hops = if opts.jump.is_empty() {
            crate::jump_hops(&dest.host, opts.ssh_config.as_deref())?
        } else {
            opts.jump.clone()
        };
        if hops.is_empty() {
            let established = establish(dest, opts, Role::Target, None)?;
            return Ok(Session::wrap(established, None));
        }
        let jump = Jump::connect(&hops, opts)?;
        Session::connect_via(dest, opts, &jump)
    }

    /// Like [`Session::connect`], through an existing jump (several sessions may share one,
    /// from several threads). `opts.jump` and the ssh config's ProxyJump for `dest` are not
    /// used: the jump given is the way in.
    pub fn connect_via(
        dest: &Destination,
        opts: &ConnectOptions,
        jump: &Arc<Jump>,
    ) -> Result<Session, ShipError> {
        let established = establish(dest, opts, Role::Target, Some(jump.carrier()))?;
        Ok(Session::wrap(established, Some(Arc::clone(jump))))
    }

    fn wrap(established: Established, jump: Option<Arc<Jump>>) -> Session {
        Session {
            ssh: established.ssh,
            socket: established.socket,
            host: established.host,
            stats: Cell::new(Stats {
                // Through a jump, the transport is a channel of the jump host's connection.
                tcp_connections: u32::from(jump.is_none()),
                round_trips: 0,
            }),
            gnu_head: Cell::new(None),
            jump,
        }
    }

    /// The host name this session is connected to (after ~/.ssh/config's HostName).
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn stats(&self) -> Stats {
        self.stats.get()
    }

    pub(crate) fn round_trip(&self) {
        let mut stats = self.stats.get();
        stats.round_trips += 1;
        self.stats.set(stats);
    }

    pub(crate) fn lost(&self, during: &str, message: impl std::fmt::Display) -> ShipError {
        let mut message = message.to_string();
        // A session through a jump host loses its connection when the jump host's does; the
        // jump's own error says why, which "socket disconnect" alone would not.
        if let Some(why) = self.jump.as_ref().and_then(|j| j.failure()) {
            message = format!("{message} (jump host {}: {why})", self.jump_description());
        }
        ShipError::ConnectionLost {
            host: self.host.clone(),
            during: during.to_owned(),
            message,
        }
    }

    fn jump_description(&self) -> String {
        self.jump.as_ref().map(|j| j.describe()).unwrap_or_default()
    }

    /// Runs `command` (a remote shell line) on a new channel, feeding `stdin` and copying the
    /// output as it arrives; returns the exit status (128+N when killed by signal N).
    pub(crate) fn run(
        &self,
        command: &str,
        during: &str,
        stdin: Option<&mut dyn Read>,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> Result<i32, ShipError> {
        self.run_tracked(command, during, stdin, stdout, stderr)
            .map_err(|failure| failure.error)
    }

    /// [`Session::run`], telling on failure whether the command may have started: a caller
    /// that must know whether the node acted (a transaction) needs that.
    pub(crate) fn run_tracked(
        &self,
        command: &str,
        during: &str,
        stdin: Option<&mut dyn Read>,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> Result<i32, RunFailure> {
        let not_started = |error| RunFailure {
            error,
            exec_sent: false,
        };
        let started = |error| RunFailure {
            error,
            exec_sent: true,
        };
        self.ssh.set_blocking(true);
        let mut channel = self
            .ssh
            .channel_session()
            .map_err(|e| not_started(self.lost(during, e)))?;
        self.round_trip();
        // A command given no input reads /dev/null, as with `ssh -n`: then no EOF needs to
        // follow the exec request, which saves a round trip per command.
        let command = match stdin {
            Some(_) => command.to_owned(),
            None => format!("{command} </dev/null"),
        };
        // A failed exec request may still have reached the server.
        channel
            .exec(&command)
            .map_err(|e| started(self.lost(during, e)))?;
        self.round_trip();
        self.ssh.set_blocking(false);
        let has_input = stdin.is_some();
        let pumped = self.pump(&mut channel, during, stdin, stdout, stderr);
        self.ssh.set_blocking(true);
        pumped.map_err(started)?;
        if has_input {
            // The input could only follow the exec request's answer.
            self.round_trip();
        }
        // The server closes the channel by itself once the command is done, and our close
        // goes out with the next request, so closing costs no round trip of its own.
        channel
            .wait_close()
            .map_err(|e| started(self.lost(during, e)))?;
        exit_status(&channel).map_err(|e| started(self.lost(during, e)))
    }

    /// Moves data both ways until the remote side is done. Non-blocking, so that a command
    /// writing lots of stderr cannot stall its stdout (they share one window), and so that a
    /// command that stops reading its input cannot hang us.
    fn pump(
        &self,
        channel: &mut ssh2::Channel,
        during: &str,
        mut stdin: Option<&mut dyn Read>,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> Result<(), ShipError> {
        // libssh2 needs writes of >= 256 KiB to keep the pipe full.
        let mut input = vec![0u8; if stdin.is_some() { 512 * 1024 } else { 0 }];
        let (mut start, mut end) = (0, 0);
        let mut input_open = stdin.is_some();
        let mut eof_sent = stdin.is_none();
        let mut output = vec![0u8; 64 * 1024];
        let mut missed_keepalives = 0;
        loop {
            let mut progressed = false;
            if !eof_sent {
                if start == end
                    && input_open
                    && let Some(source) = stdin.as_mut()
                {
                    let n = source
                        .read(&mut input)
                        .map_err(|source| ShipError::ReadSource {
                            host: self.host.clone(),
                            path: during.to_owned(),
                            cause: source,
                        })?;
                    (start, end) = (0, n);
                    input_open = n > 0;
                    progressed = true;
                }
                if start < end {
                    match channel.write(&input[start..end]) {
                        Ok(n) => {
                            start += n;
                            progressed |= n > 0;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) if channel.eof() => drop(e),
                        Err(e) => return Err(self.lost(during, e)),
                    }
                }
                if !input_open && start == end {
                    match channel.send_eof() {
                        Ok(()) => {
                            eof_sent = true;
                            progressed = true;
                        }
                        Err(e) if would_block(&e) => {}
                        Err(e) if channel.eof() => drop(e),
                        Err(e) => return Err(self.lost(during, e)),
                    }
                }
            }
            progressed |= self.drain(channel, during, 0, &mut output, stdout)?;
            progressed |= self.drain(channel, during, 1, &mut output, stderr)?;
            // The remote side closes its output when the command is done; input it did not
            // read is dropped (the command's exit status says whether that was a failure).
            if channel.eof() {
                return Ok(());
            }
            if !progressed {
                if self.wait_for_socket()? {
                    missed_keepalives = 0;
                } else {
                    missed_keepalives += 1;
                    if missed_keepalives > KEEPALIVE_MAX_MISSED {
                        return Err(self.lost(during, "the server stopped answering keepalives"));
                    }
                    let _ = self.ssh.keepalive_send();
                }
            }
        }
    }

    /// Copies whatever stream `id` (0 stdout, 1 stderr) has now; true when anything came.
    pub(crate) fn drain(
        &self,
        channel: &mut ssh2::Channel,
        during: &str,
        id: i32,
        buf: &mut [u8],
        to: &mut dyn Write,
    ) -> Result<bool, ShipError> {
        let mut got = false;
        loop {
            match channel.stream(id).read(buf) {
                Ok(0) => return Ok(got),
                Ok(n) => {
                    got = true;
                    to.write_all(&buf[..n])
                        .map_err(|source| ShipError::WriteLocal {
                            host: self.host.clone(),
                            cause: source,
                        })?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(got),
                Err(e) => return Err(self.lost(during, e)),
            }
        }
    }

    /// Waits until the socket is ready in the direction libssh2 is blocked on; false on timeout.
    pub(crate) fn wait_for_socket(&self) -> Result<bool, ShipError> {
        self.wait_for_socket_for(KEEPALIVE)
    }

    /// [`Session::wait_for_socket`], waiting at most `wait`.
    pub(crate) fn wait_for_socket_for(&self, wait: Duration) -> Result<bool, ShipError> {
        use rustix::event::{PollFd, PollFlags, Timespec};
        let flags = match self.ssh.block_directions() {
            ssh2::BlockDirections::Outbound => PollFlags::OUT,
            ssh2::BlockDirections::Both => PollFlags::IN | PollFlags::OUT,
            _ => PollFlags::IN,
        };
        let mut fds = [PollFd::new(&self.socket, flags)];
        let timeout = Timespec {
            tv_sec: wait.as_secs() as i64,
            tv_nsec: i64::from(wait.subsec_nanos()),
        };
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(n) => Ok(n > 0),
            Err(rustix::io::Errno::INTR) => Ok(true),
            Err(e) => Err(self.lost("waiting for the server", e)),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.ssh.set_blocking(true);
        let _ = self.ssh.disconnect(None, "done", None);
    }
}

/// Connects to `dest` (over TCP, or over a channel of `via`), checks its host key and
/// authenticates.
pub(crate) fn establish(
    dest: &Destination,
    opts: &ConnectOptions,
    role: Role,
    via: Option<&Relay>,
) -> Result<Established, ShipError> {
    let config = config::resolve(&dest.host, opts.ssh_config.as_deref())?;
    if role == Role::Hop && !config.proxy_jump.is_empty() {
        return Err(ShipError::NestedJump {
            hop: dest.to_string(),
        });
    }
    let (opt_user, opt_port) = match role {
        Role::Target => (opts.user.clone(), opts.port),
        Role::Hop => (None, None),
    };
    let host = config
        .host_name
        .clone()
        .unwrap_or_else(|| dest.host.clone());
    let port = dest.port.or(opt_port).or(config.port).unwrap_or(22);
    let user = dest
        .user
        .clone()
        .or(opt_user)
        .or_else(|| config.user.clone())
        .unwrap_or_else(local_user);
    let timeout = config
        .connect_timeout
        .map_or(opts.connect_timeout, |t| t.min(opts.connect_timeout));
    let deadline = Instant::now() + timeout;

    let files = known_hosts_files(opts, &config.user_known_hosts);
    let entries = known_hosts::lookup(&files, &host, port)?;

    let handshake_err = |message: String| ShipError::Handshake {
        host: host.clone(),
        port,
        message,
    };
    let mut ssh = ssh2::Session::new().map_err(|e| handshake_err(e.to_string()))?;
    let socket = match via {
        None => {
            let tcp = connect_tcp(&host, port, deadline, timeout)?;
            let socket = tcp.try_clone().map_err(|e| handshake_err(e.to_string()))?;
            // Without it, every command round waits ~40 ms for delayed ACKs.
            tcp.set_nodelay(true)
                .map_err(|e| handshake_err(e.to_string()))?;
            ssh.set_tcp_stream(tcp);
            OwnedFd::from(socket)
        }
        Some(relay) => {
            let stream = relay.open(&host, port, deadline)?;
            let socket = stream
                .try_clone()
                .map_err(|e| handshake_err(e.to_string()))?;
            ssh.set_tcp_stream(stream);
            OwnedFd::from(socket)
        }
    };
    let remaining = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    ssh.set_timeout(millis(remaining));
    let preferred = host_key_preference(&ssh, &entries);
    if let Some(prefs) = &preferred {
        ssh.method_pref(ssh2::MethodType::HostKey, prefs)
            .map_err(|e| handshake_err(e.to_string()))?;
    }
    if let Err(e) = ssh.handshake() {
        return Err(match e.code() {
            ssh2::ErrorCode::Session(LIBSSH2_ERROR_TIMEOUT) => ShipError::ConnectTimeout {
                host,
                port,
                timeout,
            },
            ssh2::ErrorCode::Session(LIBSSH2_ERROR_KEX_FAILURE) if preferred.is_some() => {
                let mut known: Vec<&str> = entries
                    .iter()
                    .filter(|e| !e.revoked)
                    .map(|e| e.key_type.as_str())
                    .collect();
                known.dedup();
                ShipError::NoKnownHostKeyType {
                    host,
                    port,
                    known: known.join(", "),
                }
            }
            _ => handshake_err(e.message().to_owned()),
        });
    }
    verify_host_key(&ssh, &host, port, &entries, &files, opts.accept_new)?;

    ssh.set_timeout(millis(REQUEST_TIMEOUT));
    let keys = auth::keys(opts, &config.identity_files, config.identities_only);
    auth::authenticate(&ssh, &host, &user, &keys, opts)?;
    ssh.set_keepalive(true, KEEPALIVE.as_secs() as u32);
    Ok(Established { ssh, socket, host })
}

/// A failed [`Session::run_tracked`].
pub(crate) struct RunFailure {
    pub(crate) error: ShipError,
    /// The exec request went out, so the command may have run, in part or to the end.
    pub(crate) exec_sent: bool,
}

/// The exit status of a closed channel: 128+N when the command was killed by signal N.
pub(crate) fn exit_status(channel: &ssh2::Channel) -> Result<i32, ssh2::Error> {
    if let Ok(signal) = channel.exit_signal()
        && let Some(name) = signal.exit_signal
    {
        return Ok(128 + signal_number(&name));
    }
    channel.exit_status()
}

const LIBSSH2_ERROR_TIMEOUT: i32 = -9;
const LIBSSH2_ERROR_KEX_FAILURE: i32 = -5;
const LIBSSH2_ERROR_EAGAIN: i32 = -37;

pub(crate) fn would_block(e: &ssh2::Error) -> bool {
    e.code() == ssh2::ErrorCode::Session(LIBSSH2_ERROR_EAGAIN)
}

pub(crate) fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

fn signal_number(name: &str) -> i32 {
    match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "ABRT" => 6,
        "FPE" => 8,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        // An unknown signal still must not look like success.
        _ => 127,
    }
}

fn local_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "root".to_owned())
}

fn known_hosts_files(opts: &ConnectOptions, from_config: &[PathBuf]) -> Vec<PathBuf> {
    if !opts.known_hosts.is_empty() {
        return opts.known_hosts.clone();
    }
    let mut files = if !from_config.is_empty() {
        from_config.to_vec()
    } else {
        let ssh_dir = config::home()
            .unwrap_or_else(|| PathBuf::from("/root"))
            .join(".ssh");
        vec![ssh_dir.join("known_hosts"), ssh_dir.join("known_hosts2")]
    };
    files.push(PathBuf::from("/etc/ssh/ssh_known_hosts"));
    files.push(PathBuf::from("/etc/ssh/ssh_known_hosts2"));
    files
}

fn connect_tcp(
    host: &str,
    port: u16,
    deadline: Instant,
    timeout: Duration,
) -> Result<TcpStream, ShipError> {
    let name = host.to_owned();
    let resolved = within(
        deadline.saturating_duration_since(Instant::now()),
        move || {
            (name.as_str(), port)
                .to_socket_addrs()
                .map(Iterator::collect::<Vec<_>>)
        },
    )
    .unwrap_or_else(|| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {} s", timeout.as_secs_f64()),
        ))
    });
    let addrs = resolved.map_err(|cause| ShipError::Resolve {
        host: host.to_owned(),
        cause,
    })?;
    let mut last = None;
    for addr in addrs {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, remaining) {
            Ok(stream) => return Ok(stream),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(source) => last = Some(source),
        }
    }
    Err(match last {
        Some(source) => ShipError::Connect {
            host: host.to_owned(),
            port,
            cause: source,
        },
        None => ShipError::ConnectTimeout {
            host: host.to_owned(),
            port,
            timeout,
        },
    })
}

/// Runs `work` on a thread of its own and waits at most `timeout` for it: `getaddrinfo` has
/// no timeout of its own, and a dead resolver would otherwise hang the connect for a minute.
/// The thread is left to finish (or not) on its own.
fn within<T: Send + 'static>(
    timeout: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(work());
    });
    rx.recv_timeout(timeout).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_gives_up_on_slow_work_and_keeps_fast_results() {
        let started = Instant::now();
        let slow = within(Duration::from_millis(100), || {
            std::thread::sleep(Duration::from_secs(5));
            1
        });
        assert_eq!(slow, None);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(within(Duration::from_secs(5), || 2), Some(2));
    }
}
