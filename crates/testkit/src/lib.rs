//! Test harnesses shared by the crates' tests and the end-to-end tests. Never a dependency of a tool.

pub mod sshd;
pub mod users;

pub mod replay;

pub mod apiserver;
pub mod delay_proxy;
pub mod kubelet;
