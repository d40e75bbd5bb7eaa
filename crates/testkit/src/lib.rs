//! Test harnesses shared by the crates' tests and the end-to-end tests. Never a dependency of a tool.

pub mod sshd;
pub mod users;

pub mod replay;

pub mod apiserver;
mod apiserver_cache;
pub mod delay_proxy;
pub mod ha;
pub mod kubeadm_config;
pub mod kubelet;
pub mod netns;
pub mod node;
pub mod pki;
pub mod ports;
pub mod real_node;

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

/// The middle of the measured times (sorted in place); zero when there are none.
pub fn median(times: &mut [std::time::Duration]) -> std::time::Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

/// A `harness = false` benchmark's own arguments: what `cargo bench -- ARGS` passes, without the
/// `--bench` flag cargo adds.
pub fn bench_args() -> impl Iterator<Item = std::ffi::OsString> {
    std::env::args_os().filter(|arg| arg != "--bench")
}
