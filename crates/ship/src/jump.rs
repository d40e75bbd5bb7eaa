//! Jump hosts (`ssh -J`, ProxyJump): sessions to nodes carried by direct-tcpip channels of
//! a bastion's verified session.
//!
//! libssh2 needs a socket for its transport, so a session behind a jump host runs over one
//! end of a `UnixStream::pair()`, and a relay thread that owns the jump host's session pumps
//! bytes between each channel and the other end. The relay's session is non-blocking and
//! touched by that thread alone, so any number of sessions on any threads can share it: one
//! TCP connection per jump host, whatever the number of nodes behind it. With several hops,
//! hop N's session runs over a channel of hop N-1's relay.

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::session::{Established, KEEPALIVE, Role, establish, millis, would_block};
use crate::{ConnectOptions, Destination, ShipError, Stats};

/// The jump hosts' sessions, connected in order and ready to carry sessions to the nodes
/// behind them ([`Session::connect_via`](crate::Session::connect_via)). Dropping the last
/// `Arc` (the caller's and each session's) stops the relays and closes the connections.
pub struct Jump {
    /// In connection order, never empty; hop N's session runs over a channel of hop N-1's.
    relays: Vec<Relay>,
}

// Shared by the sessions of nodes that run on threads of their own.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Jump>();
};

impl Jump {
    /// Connects the hops in order (each verified and authenticated like a target, with its
    /// own user, port, HostName and IdentityFile from the ssh config), ready to carry sessions
    /// to nodes behind them.
    pub fn connect(hops: &[Destination], opts: &ConnectOptions) -> Result<Arc<Jump>, ShipError> {
        if hops.is_empty() {
            return Err(ShipError::InvalidDestination {
                input: String::new(),
                reason: "a jump needs at least one jump host",
            });
        }
        // On an error, dropping the partial jump stops the hops connected so far.
        let mut jump = Jump { relays: Vec::new() };
        for hop in hops {
            let established = establish(hop, opts, Role::Hop, jump.relays.last())?;
            jump.relays.push(Relay::start(established)?);
        }
        Ok(Arc::new(jump))
    }

    /// One TCP connection (the first hop's; later hops ride on it), and the round trips of
    /// the channel opens the relays made.
    pub fn stats(&self) -> Stats {
        Stats {
            tcp_connections: 1,
            round_trips: self
                .relays
                .iter()
                .map(|r| r.shared.round_trips.load(Ordering::Relaxed))
                .sum(),
        }
    }

    /// The hops, as `a` or `a -> b`.
    pub fn describe(&self) -> String {
        self.relays
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(" -> ")
    }

    /// The relay that carries sessions to the nodes: the last hop's.
    pub(crate) fn carrier(&self) -> &Relay {
        // `connect` refuses an empty list, so there is always a last hop.
        &self.relays[self.relays.len() - 1]
    }

    /// Why the jump stopped carrying, once it has: the outermost failure, since an outer
    /// hop's loss takes the inner ones with it.
    pub(crate) fn failure(&self) -> Option<String> {
        self.relays.iter().find_map(|r| {
            let failure = r.shared.failure.lock().ok()?.clone()?;
            Some(format!("{}: {failure}", r.name))
        })
    }
}

impl Drop for Jump {
    fn drop(&mut self) {
        // Innermost first: each hop's session runs over the hop before it.
        while let Some(relay) = self.relays.pop() {
            drop(relay);
        }
    }
}

/// One hop's session, run by a thread of its own.
pub(crate) struct Relay {
    name: String,
    requests: mpsc::Sender<OpenRequest>,
    /// Written to wake the relay from poll() when a request or the stop comes.
    waker: UnixStream,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    round_trips: AtomicU32,
    failure: Mutex<Option<String>>,
}

struct OpenRequest {
    host: String,
    port: u16,
    reply: mpsc::Sender<Result<UnixStream, String>>,
}

impl Relay {
    fn start(established: Established) -> Result<Relay, ShipError> {
        let name = established.host.clone();
        let failed = |cause: io::Error| ShipError::JumpChannel {
            jump: name.clone(),
            target: name.clone(),
            message: format!("cannot start the relay: {cause}"),
        };
        let (waker, wake) = UnixStream::pair().map_err(failed)?;
        // A full wake-up buffer already wakes the relay; the writer must never wait on it.
        waker.set_nonblocking(true).map_err(failed)?;
        wake.set_nonblocking(true).map_err(failed)?;
        let (requests, incoming) = mpsc::channel();
        let shared = Arc::new(Shared::default());
        let worker = Worker {
            ssh: established.ssh,
            socket: established.socket,
            wake,
            incoming,
            shared: Arc::clone(&shared),
            pending: None,
            forwards: Vec::new(),
            closing: Vec::new(),
            idle_data: false,
        };
        let thread = std::thread::Builder::new()
            .name(format!("ship-jump {name}"))
            .spawn(move || worker.run())
            .map_err(failed)?;
        Ok(Relay {
            name,
            requests,
            waker,
            shared,
            thread: Some(thread),
        })
    }

    /// A byte stream to `host:port` through this hop: our end of a direct-tcpip channel.
    pub(crate) fn open(
        &self,
        host: &str,
        port: u16,
        deadline: Instant,
    ) -> Result<UnixStream, ShipError> {
        let target = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let error = |message: String| ShipError::JumpChannel {
            jump: self.name.clone(),
            target: target.clone(),
            message,
        };
        let gone = || {
            let why = self.shared.failure.lock().ok().and_then(|f| f.clone());
            error(why.unwrap_or_else(|| "the jump host's connection is closed".to_owned()))
        };
        let (reply, answer) = mpsc::channel();
        self.requests
            .send(OpenRequest {
                host: host.to_owned(),
                port,
                reply,
            })
            .map_err(|_| gone())?;
        self.wake();
        // A late answer finds our end gone, and the relay closes the channel.
        match answer.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(message)) => Err(error(message)),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(error(
                "the jump host did not open the channel in time".to_owned(),
            )),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(gone()),
        }
    }

    fn wake(&self) {
        let _ = (&self.waker).write(&[1]);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The relay thread's state.
struct Worker {
    ssh: ssh2::Session,
    /// The transport libssh2 reads and writes, only for poll().
    socket: OwnedFd,
    wake: UnixStream,
    incoming: mpsc::Receiver<OpenRequest>,
    shared: Arc<Shared>,
    /// libssh2 opens one channel at a time; the others wait in `incoming`.
    pending: Option<OpenRequest>,
    forwards: Vec<Forward>,
    closing: Vec<ssh2::Channel>,
    /// The transport has bytes while no channel is open to read them with (libssh2 reads only
    /// for a channel): stop polling for them until a channel is opened.
    idle_data: bool,
}

impl Worker {
    fn run(mut self) {
        self.ssh.set_blocking(false);
        let outcome = self.serve();
        if let Err(why) = outcome
            && let Ok(mut failure) = self.shared.failure.lock()
        {
            *failure = Some(why);
        }
        let why = self
            .shared
            .failure
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_else(|| "the jump was closed".to_owned());
        for request in self
            .pending
            .take()
            .into_iter()
            .chain(self.incoming.try_iter())
        {
            let _ = request.reply.send(Err(why.clone()));
        }
        // The sessions on top see their transport end.
        let forwards = std::mem::take(&mut self.forwards);
        let closing = std::mem::take(&mut self.closing);
        self.ssh.set_blocking(true);
        self.ssh.set_timeout(millis(Duration::from_secs(2)));
        drop(forwards);
        drop(closing);
        let _ = self.ssh.disconnect(None, "done", None);
    }

    fn serve(&mut self) -> Result<(), String> {
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            let mut sink = [0u8; 64];
            while matches!((&self.wake).read(&mut sink), Ok(n) if n > 0) {}
            if self.pending.is_none() {
                match self.incoming.try_recv() {
                    Ok(request) => self.pending = Some(request),
                    Err(mpsc::TryRecvError::Empty) => {}
                    Err(mpsc::TryRecvError::Disconnected) => return Ok(()),
                }
            }
            let mut progressed = self.try_open()?;
            progressed |= self.reap();
            let mut i = 0;
            while i < self.forwards.len() {
                let (moved, done) = self.forwards[i].pump()?;
                progressed |= moved;
                if done {
                    let finished = self.forwards.swap_remove(i);
                    self.close(finished);
                    progressed = true;
                } else {
                    i += 1;
                }
            }
            if !progressed {
                self.wait()?;
            }
        }
    }

    /// Goes on with the pending channel open; true when it finished, either way.
    fn try_open(&mut self) -> Result<bool, String> {
        let Some(request) = &self.pending else {
            return Ok(false);
        };
        let opened = self
            .ssh
            .channel_direct_tcpip(&request.host, request.port, None);
        let request = match opened {
            Err(e) if would_block(&e) => return Ok(false),
            _ => match self.pending.take() {
                Some(request) => request,
                None => return Ok(false),
            },
        };
        match opened {
            Ok(channel) => {
                self.shared.round_trips.fetch_add(1, Ordering::Relaxed);
                self.idle_data = false;
                match UnixStream::pair().and_then(|(ours, theirs)| {
                    ours.set_nonblocking(true)?;
                    Ok((ours, theirs))
                }) {
                    Ok((ours, theirs)) => {
                        let forward = Forward::new(channel, ours);
                        if request.reply.send(Ok(theirs)).is_ok() {
                            self.forwards.push(forward);
                        } else {
                            // The caller gave up waiting.
                            self.close(forward);
                        }
                    }
                    Err(e) => {
                        let _ = request.reply.send(Err(e.to_string()));
                    }
                }
                Ok(true)
            }
            Err(e) => {
                let message = e.message().to_owned();
                let _ = request.reply.send(Err(message.clone()));
                if is_fatal_code(e.code()) {
                    return Err(message);
                }
                Ok(true)
            }
        }
    }

    /// libssh2 frees a channel only once its close went out and the peer's came back, so a
    /// finished channel waits here, retried each round, rather than stall the others.
    fn close(&mut self, forward: Forward) {
        self.closing.push(forward.channel);
    }

    /// Goes on closing finished channels; true when one was freed.
    fn reap(&mut self) -> bool {
        let before = self.closing.len();
        self.closing.retain_mut(|channel| match channel.close() {
            Err(e) => would_block(&e),
            Ok(()) => false,
        });
        self.closing.len() < before
    }

    /// Sleeps until the transport, a local end or a request may have something, or a
    /// keepalive is due.
    fn wait(&mut self) -> Result<(), String> {
        use rustix::event::{PollFd, PollFlags, Timespec};
        let mut transport = PollFlags::empty();
        let reading = self.pending.is_some()
            || !self.closing.is_empty()
            || self.forwards.iter().any(Forward::can_take);
        let idle = self.pending.is_none() && self.forwards.is_empty() && self.closing.is_empty();
        if reading || (idle && !self.idle_data) {
            transport |= PollFlags::IN;
        }
        if matches!(
            self.ssh.block_directions(),
            ssh2::BlockDirections::Outbound | ssh2::BlockDirections::Both
        ) {
            transport |= PollFlags::OUT;
        }
        let mut fds = Vec::with_capacity(2 + self.forwards.len());
        fds.push(PollFd::new(&self.socket, transport));
        fds.push(PollFd::new(&self.wake, PollFlags::IN));
        for forward in &self.forwards {
            fds.push(PollFd::new(&forward.local, forward.local_interest()));
        }
        let timeout = Timespec {
            tv_sec: KEEPALIVE.as_secs() as i64,
            tv_nsec: 0,
        };
        let ready = match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => return Ok(()),
            Err(e) => return Err(format!("poll: {e}")),
        };
        let events = fds[0].revents();
        drop(fds);
        if ready == 0 {
            return match self.ssh.keepalive_send() {
                Err(e) if is_fatal_code(e.code()) => Err(e.message().to_owned()),
                _ => Ok(()),
            };
        }
        if events.intersects(PollFlags::HUP | PollFlags::ERR) {
            return Err("the connection was closed".to_owned());
        }
        if idle && events.contains(PollFlags::IN) {
            let mut probe = [0u8; 1];
            match rustix::net::recv(
                &self.socket,
                &mut probe,
                rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT,
            ) {
                Ok((0, _)) => return Err("the connection was closed".to_owned()),
                Ok(_) => self.idle_data = true,
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }
}

/// One channel and our end of the socket pair its session (or stream) runs over.
struct Forward {
    channel: ssh2::Channel,
    local: UnixStream,
    to_local: Buffer,
    to_remote: Buffer,
    /// The local side closed its sending half.
    local_eof: bool,
    eof_sent: bool,
    /// The channel's EOF was passed on to the local side.
    remote_eof: bool,
}

impl Forward {
    fn new(channel: ssh2::Channel, local: UnixStream) -> Forward {
        Forward {
            channel,
            local,
            to_local: Buffer::new(64 * 1024),
            // libssh2 needs writes of >= 256 KiB to keep the pipe full.
            to_remote: Buffer::new(256 * 1024),
            local_eof: false,
            eof_sent: false,
            remote_eof: false,
        }
    }

    /// Whether a read of the channel has room to go: the transport is worth polling for.
    fn can_take(&self) -> bool {
        self.to_local.is_empty() && !self.remote_eof
    }

    fn local_interest(&self) -> rustix::event::PollFlags {
        use rustix::event::PollFlags;
        let mut flags = PollFlags::empty();
        if self.to_remote.is_empty() && !self.local_eof {
            flags |= PollFlags::IN;
        }
        if !self.to_local.is_empty() {
            flags |= PollFlags::OUT;
        }
        flags
    }

    /// Moves what can move now: `(anything moved, the forward is finished)`. An error is the
    /// jump host's whole connection failing.
    fn pump(&mut self) -> Result<(bool, bool), String> {
        let mut moved = false;
        if self.can_take() {
            match self.channel.read(self.to_local.space()) {
                Ok(0) => {
                    if self.channel.eof() {
                        let _ = self.local.shutdown(std::net::Shutdown::Write);
                        self.remote_eof = true;
                        moved = true;
                    }
                }
                Ok(n) => {
                    self.to_local.filled(n);
                    moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return channel_failed(&e),
            }
        }
        if !self.to_local.is_empty() {
            match rustix::net::send(
                &self.local,
                self.to_local.data(),
                rustix::net::SendFlags::NOSIGNAL | rustix::net::SendFlags::DONTWAIT,
            ) {
                Ok(n) => {
                    self.to_local.consumed(n);
                    moved = true;
                }
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
                // The local side is gone: nobody is left to read.
                Err(_) => return Ok((true, true)),
            }
        }
        if self.to_remote.is_empty() && !self.local_eof {
            match self.local.read(self.to_remote.space()) {
                Ok(0) => {
                    self.local_eof = true;
                    moved = true;
                }
                Ok(n) => {
                    self.to_remote.filled(n);
                    moved = true;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => return Ok((true, true)),
            }
        }
        if !self.to_remote.is_empty() {
            match self.channel.write(self.to_remote.data()) {
                Ok(n) => {
                    self.to_remote.consumed(n);
                    moved |= n > 0;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return channel_failed(&e),
            }
        }
        if self.local_eof && self.to_remote.is_empty() && !self.eof_sent {
            match self.channel.send_eof() {
                Ok(()) => {
                    self.eof_sent = true;
                    moved = true;
                }
                Err(e) if would_block(&e) => {}
                Err(e) if is_fatal_code(e.code()) => return Err(e.message().to_owned()),
                Err(_) => return Ok((true, true)),
            }
        }
        let done = self.eof_sent && self.remote_eof && self.to_local.is_empty();
        Ok((moved, done))
    }
}

/// A channel's I/O error: the end of this forward, or of the whole connection.
fn channel_failed(e: &io::Error) -> Result<(bool, bool), String> {
    let code = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ssh2::Error>())
        .map(ssh2::Error::code);
    match code {
        Some(code) if !is_fatal_code(code) => Ok((true, true)),
        _ => Err(e.to_string()),
    }
}

/// Errors of the transport itself (as opposed to one channel's): the connection is unusable.
fn is_fatal_code(code: ssh2::ErrorCode) -> bool {
    const SOCKET_NONE: i32 = -1;
    const INVALID_MAC: i32 = -4;
    const SOCKET_SEND: i32 = -7;
    const TIMEOUT: i32 = -9;
    const DECRYPT: i32 = -12;
    const SOCKET_DISCONNECT: i32 = -13;
    const PROTO: i32 = -14;
    const SOCKET_TIMEOUT: i32 = -30;
    const SOCKET_RECV: i32 = -43;
    matches!(
        code,
        ssh2::ErrorCode::Session(
            SOCKET_NONE
                | INVALID_MAC
                | SOCKET_SEND
                | TIMEOUT
                | DECRYPT
                | SOCKET_DISCONNECT
                | PROTO
                | SOCKET_TIMEOUT
                | SOCKET_RECV
        )
    )
}

/// Bytes read and not written on yet.
struct Buffer {
    bytes: Vec<u8>,
    start: usize,
    end: usize,
}

impl Buffer {
    fn new(size: usize) -> Buffer {
        Buffer {
            bytes: vec![0; size],
            start: 0,
            end: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The whole buffer, to read into; only called when it is empty.
    fn space(&mut self) -> &mut [u8] {
        self.start = 0;
        self.end = 0;
        &mut self.bytes
    }

    fn filled(&mut self, n: usize) {
        self.end = n;
    }

    fn data(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    fn consumed(&mut self, n: usize) {
        self.start += n;
    }
}
