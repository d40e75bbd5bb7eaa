//! The light build's stand-ins for the SSH client types (without the `ssh` feature). They have
//! the methods the pipeline calls, with the real signatures, so it compiles unchanged (and
//! fails to when they drift), but none can be made: each holds [`Infallible`], so a
//! method body is a `match` with no arms, and [`Session::connect`] says what is missing.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::{ApplyError, ConnectOptions, Destination, ExecOptions, Output, ShipError, Stats};
use crate::{Streams, Transaction, Until};

pub struct Session {
    never: Infallible,
}

pub struct Jump {
    never: Infallible,
}

pub struct Held {
    never: Infallible,
}

pub struct RemoteChild<'s> {
    never: Infallible,
    _session: std::marker::PhantomData<&'s Session>,
}

pub struct Tunnel<'s> {
    never: Infallible,
    _session: std::marker::PhantomData<&'s Session>,
}

impl Session {
    pub fn connect(dest: &Destination, _opts: &ConnectOptions) -> Result<Session, ShipError> {
        Err(ShipError::NotBuilt {
            host: dest.host.clone(),
        })
    }

    pub fn connect_via(
        dest: &Destination,
        opts: &ConnectOptions,
        _jump: &Arc<Jump>,
    ) -> Result<Session, ShipError> {
        Session::connect(dest, opts)
    }

    pub fn stats(&self) -> Stats {
        match self.never {}
    }

    pub fn exec_streaming(
        &self,
        _argv: &[&str],
        _opts: ExecOptions,
        _streams: Streams<'_>,
    ) -> Result<i32, ShipError> {
        match self.never {}
    }

    pub fn spawn(&self, _argv: &[&str], _opts: ExecOptions) -> Result<RemoteChild<'_>, ShipError> {
        match self.never {}
    }

    pub fn apply(
        &self,
        _transaction: &mut Transaction<'_>,
        _opts: ExecOptions,
    ) -> Result<(), ApplyError> {
        match self.never {}
    }

    pub fn tunnel(&self, _host: &str, _port: u16) -> Result<Tunnel<'_>, ShipError> {
        match self.never {}
    }
}

impl Jump {
    pub fn connect(hops: &[Destination], _opts: &ConnectOptions) -> Result<Arc<Jump>, ShipError> {
        Err(ShipError::NotBuilt {
            host: hops.first().map(|hop| hop.host.clone()).unwrap_or_default(),
        })
    }

    pub fn stats(&self) -> Stats {
        match self.never {}
    }
}

impl RemoteChild<'_> {
    pub fn read_until_line(&mut self, _line: &str) -> Result<Until, ShipError> {
        match self.never {}
    }

    pub fn detach(self) -> Result<Held, ShipError> {
        match self.never {}
    }
}

impl Held {
    pub fn release(self, _session: &Session) -> Result<Output, ShipError> {
        match self.never {}
    }
}

impl Tunnel<'_> {
    pub fn set_read_timeout(&mut self, _timeout: Option<Duration>) {
        match self.never {}
    }

    pub fn set_write_timeout(&mut self, _timeout: Option<Duration>) {
        match self.never {}
    }
}

impl io::Read for Tunnel<'_> {
    fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        match self.never {}
    }
}

impl io::Write for Tunnel<'_> {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        match self.never {}
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.never {}
    }
}
