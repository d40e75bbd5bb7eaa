//! `verify`: proves that audit events flow. It creates and deletes a uniquely named
//! ConfigMap, then waits for that ConfigMap's events wherever they should show up: Falco's logs,
//! the node's audit log, or an `audit-sink` it hosts itself.

use crate::cluster_args::ClusterArgs;
use crate::error::Result;
use crate::report::Reporter;
use crate::target::TargetArgs;

#[cfg(feature = "remote")]
mod probe;
#[cfg(feature = "remote")]
pub use probe::webhook_errors;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    /// The Falco pods' logs (label selector -l).
    Falco,
    /// The node's audit log, through the same session enable uses (static and dynamic+log).
    NodeLog,
    /// An audit-sink hosted by verify itself on --sink-listen (the webhook must point at it).
    Sink,
}

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  cargo xtask verify                                   # minikube: Falco's logs and the node's audit log
  cargo xtask verify ssh --host cp1 --via node-log
  cargo xtask verify local --root /tmp/node --via sink --sink-listen 127.0.0.1:8765")]
pub struct VerifyArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Where to look for the events; repeatable or comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Source::Falco, Source::NodeLog])]
    pub via: Vec<Source>,
    /// The Falco pods' label selector (default: Falco's chart, `app.kubernetes.io/name=falco`,
    /// and the older manifests, `app in (falco, falco-example)`).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// The address the hosted audit-sink listens on (with --via sink).
    #[arg(long, default_value = "127.0.0.1:8765")]
    pub sink_listen: std::net::SocketAddr,
    /// The namespace of the probe ConfigMap.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// How long to wait for the events, in seconds (batching alone delays them up to 5 s).
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

/// The selectors that find Falco's pods when `-l` is not given.
pub use cluster::FALCO_POD_SELECTORS;

/// Runs `verify`; its findings go to `reporter` as output. It needs the cluster, so the light
/// build (without the `remote` feature) refuses it.
pub fn run(args: VerifyArgs, reporter: &dyn Reporter) -> Result<()> {
    #[cfg(feature = "remote")]
    return probe::run(args, reporter);
    #[cfg(not(feature = "remote"))]
    {
        let _ = (args, reporter);
        Err(crate::error::PipelineError::not_built("verify"))
    }
}
