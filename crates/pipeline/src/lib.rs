//! The product: the pipelines that turn Kubernetes API-server audit logging on and off on a
//! control-plane node and route the events to Falco. This crate is the only one that composes
//! the tools (render, patch-apiserver, ship, cluster, audit-sink); `cargo xtask` and the
//! installable `k8s-audit` binary both parse their arguments with [`cli::Cli`] and call [`run`].
//!
//! A pipeline is a sequence of stages, each a module: [`preflight`] (read only) →
//! [`rendering`] → [`apply`] (one transaction on the node) → [`wait`] → [`rollback`] when the
//! API server does not come back → [`auditsink`] in the dynamic modes. The commands compose
//! them: [`enable`], [`disable`], [`status`], [`verify`], [`observe`].
//!
//! Nothing here prints: every line goes through a [`report::Reporter`].

pub mod apply;
pub mod auditsink;
pub mod cli;
pub mod cluster_args;
pub mod disable;
pub mod durable;
pub mod enable;
mod error;
pub mod falco_url;
pub mod fleet;
pub mod lock;
pub mod manager;
pub mod node;
pub mod observe;
pub mod policy;
pub mod preflight;
pub mod reachability;
pub mod rendering;
pub mod report;
pub mod rollback;
pub mod rollout;
pub mod state;
pub mod status;
pub mod target;
pub mod templates;
pub mod verify;
pub mod wait;

pub use cli::{Cli, Command, run};
pub use error::{Context, PipelineError, Result};
