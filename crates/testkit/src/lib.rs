//! Test harnesses shared by the crates' tests and the end-to-end tests. Never a dependency of a tool.

pub mod sshd;
pub mod users;

pub mod replay;

pub mod apiserver;
pub mod delay_proxy;
pub mod kubelet;

/// Deterministic bytes that look random (xorshift), so no layer (compression, caches) can make a
/// transfer look faster or a corruption go unnoticed.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}
