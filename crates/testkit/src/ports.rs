//! Ports for the servers the harnesses start. A port picked by binding port 0 comes from the
//! kernel's ephemeral range, the same range every outgoing connection takes its local port
//! from: between the pick and the server's own bind, a client connection of a test running
//! beside it can take the port, and the server then fails with "address already in use" for as
//! long as that connection lives (a real API server crash-looped for 90 s in CI that way). So
//! the ports come from below the ephemeral range, where no connection is ever given one.

use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};

/// The lowest port handed out.
const FLOOR: u16 = 10_000;

/// A port, below the ephemeral range, that nothing listens on at any of `addresses` (and that
/// is not one of `taken`).
pub fn server_port(addresses: &[Ipv4Addr], taken: &[u16]) -> io::Result<u16> {
    let ceiling = ephemeral_floor().saturating_sub(1).max(FLOOR + 1);
    let span = u64::from(ceiling - FLOOR);
    let candidates = (0..200).map(|_| FLOOR + (next_random() % span) as u16);
    first_free(candidates, addresses, taken).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("no free port between {FLOOR} and {ceiling} after 200 tries"),
        )
    })
}

/// The first candidate that is not `taken` and that every one of `addresses` can bind.
fn first_free(
    candidates: impl IntoIterator<Item = u16>,
    addresses: &[Ipv4Addr],
    taken: &[u16],
) -> Option<u16> {
    candidates.into_iter().find(|port| {
        !taken.contains(port)
            && addresses
                .iter()
                .all(|&address| TcpListener::bind((address, *port)).is_ok())
    })
}

/// The start of the kernel's ephemeral range (Linux's default when it cannot be read).
fn ephemeral_floor() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// xorshift over a seed from the clock and the pid, advanced per call: tests of one process
/// (and of processes started at once) pick different ports.
fn next_random() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        x = nanos ^ (u64::from(std::process::id()) << 32) | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_below_the_ephemeral_range_and_are_free() {
        let floor = ephemeral_floor();
        for _ in 0..20 {
            let port = server_port(&[Ipv4Addr::LOCALHOST], &[]).unwrap();
            assert!((FLOOR..floor).contains(&port), "{port}");
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        }
    }

    #[test]
    fn a_port_in_use_or_taken_is_passed_over() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let busy = listener.local_addr().unwrap().port();
        let free = server_port(&[Ipv4Addr::LOCALHOST], &[busy]).unwrap();
        let localhost = [Ipv4Addr::LOCALHOST];
        assert_eq!(first_free([busy, free], &localhost, &[]), Some(free));
        assert_eq!(first_free([free], &localhost, &[free]), None);
        assert_eq!(first_free([busy], &localhost, &[]), None);
    }
}
