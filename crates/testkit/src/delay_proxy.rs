//! A TCP proxy on 127.0.0.1 that holds every chunk for a fixed time in each direction, so a
//! loopback connection behaves like a link with a round-trip time. The kernel here has no netem.
//! Chunks are forwarded on a schedule, not one at a time, so throughput is not capped by the
//! delay (it behaves like a long pipe, not a slow one).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

pub struct DelayProxy {
    addr: SocketAddr,
}

impl DelayProxy {
    /// Forwards connections on a new loopback port to `target`, adding `one_way` each direction.
    pub fn start(target: SocketAddr, one_way: Duration) -> DelayProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
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
                pipe(client, server2, one_way);
                pipe(server, client2, one_way);
            }
        });
        DelayProxy { addr }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// Reads from `from` as fast as it comes and writes each chunk to `to` once `delay` has passed
/// since it was read.
fn pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        let mut buf = vec![0; 256 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
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
    fn adds_the_round_trip_it_promises() {
        let rtt = measure_round_trip(Duration::from_millis(25), 5);
        assert!(rtt >= Duration::from_millis(50), "{rtt:?}");
        assert!(rtt < Duration::from_secs(1), "{rtt:?}");
    }
}
