//! A TCP proxy on 127.0.0.1 that holds every chunk for a fixed time in each direction, so a
//! loopback connection behaves like a link with a round-trip time. The kernel here has no netem.
//! Chunks are forwarded on a schedule, not one at a time, so throughput is not capped by the
//! delay (it behaves like a long pipe, not a slow one).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

pub struct DelayProxy {
    addr: SocketAddr,
    round_trips: Arc<AtomicU64>,
}

impl DelayProxy {
    /// Forwards connections on a new loopback port to `target`, adding `one_way` each direction.
    pub fn start(target: SocketAddr, one_way: Duration) -> DelayProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let round_trips = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&round_trips);
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                // The TCP handshake is a round trip of its own.
                counter.fetch_add(1, Ordering::Relaxed);
                let server_spoke_last = Arc::new(AtomicBool::new(true));
                let turns = Turns {
                    counter: Arc::clone(&counter),
                    server_spoke_last,
                };
                pipe(client, server2, one_way, Some(turns.clone()), true);
                pipe(server, client2, one_way, Some(turns), false);
            }
        });
        DelayProxy { addr, round_trips }
    }

    /// Round trips seen so far over every connection: one per TCP handshake, plus one each time
    /// the client speaks after the server did (a request that had to wait for an answer).
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// Who spoke last on one connection, and the proxy-wide count of client turns.
#[derive(Clone)]
struct Turns {
    counter: Arc<AtomicU64>,
    server_spoke_last: Arc<AtomicBool>,
}

/// Reads from `from` as fast as it comes and writes each chunk to `to` once `delay` has passed
/// since it was read. `client_side` is set on the client-to-server direction.
fn pipe(
    mut from: TcpStream,
    mut to: TcpStream,
    delay: Duration,
    turns: Option<Turns>,
    client_side: bool,
) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        let mut buf = vec![0; 256 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Some(turns) = &turns {
                        let was_server = turns
                            .server_spoke_last
                            .swap(!client_side, Ordering::Relaxed);
                        if client_side && was_server {
                            turns.counter.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    thread::spawn(move || {
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                return;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// The measured round trip through a proxy: an echo server behind it, `rounds` one-byte
/// ping-pongs, the median. Used to check the proxy before trusting a benchmark run through it.
pub fn measure_round_trip(one_way: Duration, rounds: usize) -> Duration {
    let echo = TcpListener::bind("127.0.0.1:0").expect("bind echo");
    let echo_addr = echo.local_addr().expect("echo addr");
    thread::spawn(move || {
        if let Ok((mut stream, _)) = echo.accept() {
            let _ = stream.set_nodelay(true);
            let mut byte = [0u8; 1];
            while stream.read_exact(&mut byte).is_ok() {
                if stream.write_all(&byte).is_err() {
                    break;
                }
            }
        }
    });
    let proxy = DelayProxy::start(echo_addr, one_way);
    let mut stream = TcpStream::connect(proxy.addr()).expect("connect through proxy");
    stream.set_nodelay(true).expect("nodelay");
    let mut times: Vec<Duration> = (0..rounds)
        .map(|_| {
            let started = Instant::now();
            let mut byte = [7u8; 1];
            stream.write_all(&byte).expect("ping");
            stream.read_exact(&mut byte).expect("pong");
            started.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_request_response_turns() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let echo_addr = echo.local_addr().unwrap();
        thread::spawn(move || {
            let (mut stream, _) = echo.accept().unwrap();
            let mut byte = [0u8; 1];
            while stream.read_exact(&mut byte).is_ok() && stream.write_all(&byte).is_ok() {}
        });
        let proxy = DelayProxy::start(echo_addr, Duration::from_millis(1));
        let mut stream = TcpStream::connect(proxy.addr()).unwrap();
        for _ in 0..4 {
            let mut byte = [1u8; 1];
            stream.write_all(&byte).unwrap();
            stream.read_exact(&mut byte).unwrap();
        }
        // One for the TCP handshake and one per ping-pong.
        assert_eq!(proxy.round_trips(), 5);
    }

    #[test]
    fn adds_the_round_trip_it_promises() {
        let rtt = measure_round_trip(Duration::from_millis(25), 5);
        assert!(rtt >= Duration::from_millis(50), "{rtt:?}");
        assert!(rtt < Duration::from_secs(1), "{rtt:?}");
    }
}
