//! The cluster half of the command line, and the one tokio runtime the sync pipeline drives it with.

use std::path::PathBuf;

use cluster::Cluster;

use crate::error::Result;

#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// The kubeconfig (default: $KUBECONFIG, then ~/.kube/config, as kubectl reads it).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// A kubeconfig context other than the current one.
    #[arg(long)]
    pub context: Option<String>,
    /// Change only this control-plane node (mirror pod kube-apiserver-NODE); repeatable. The
    /// others stay unaudited, and the run says so. Default: every control-plane node.
    #[arg(long = "node", value_name = "NODE")]
    pub nodes: Vec<String>,
}

/// The cluster and the runtime its async calls run on.
pub struct Kube {
    #[cfg(feature = "remote")]
    runtime: tokio::runtime::Runtime,
    pub cluster: Cluster,
}

#[cfg(feature = "remote")]
impl Kube {
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }
}

/// The light build's Cluster cannot be made, so neither can a Kube.
#[cfg(not(feature = "remote"))]
impl Kube {
    // never() returns Infallible, so the lint calls the empty match after it unreachable.
    #[allow(unreachable_code)]
    pub fn block_on<F: std::future::Future>(&self, _future: F) -> F::Output {
        match self.cluster.never() {}
    }
}

impl ClusterArgs {
    fn explicit(&self) -> bool {
        self.kubeconfig.is_some() || self.context.is_some()
    }

    /// Connects when `needed`, or when the user named a kubeconfig or context; a pipeline that
    /// can do without the cluster (static, --falco-url, --no-wait) never reaches for one it was
    /// not given.
    pub fn connect(&self, needed: bool) -> Result<Option<Kube>> {
        if !needed && !self.explicit() {
            return Ok(None);
        }
        self.connect_required().map(Some)
    }

    #[cfg(not(feature = "remote"))]
    pub fn connect_required(&self) -> Result<Kube> {
        Err(cluster::ClusterError::ClientNotBuilt.into())
    }

    #[cfg(feature = "remote")]
    pub fn connect_required(&self) -> Result<Kube> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        use crate::error::Context;
        let options = cluster::ClusterOptions {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
        };
        let cluster = runtime.block_on(Cluster::connect(&options))?;
        Ok(Kube { runtime, cluster })
    }
}
