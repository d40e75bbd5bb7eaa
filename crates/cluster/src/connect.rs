use std::path::PathBuf;

#[cfg(feature = "client")]
use kube::config::{KubeConfigOptions, Kubeconfig};

#[cfg(feature = "client")]
use crate::ClusterError;

/// Where to find the cluster: the same inputs kubectl reads.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// A kubeconfig file; `None` means `$KUBECONFIG`, then `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// A context other than the current one.
    pub context: Option<String>,
}

/// A connection to one API server.
#[cfg(feature = "client")]
#[derive(Clone)]
pub struct Cluster {
    pub(crate) client: kube::Client,
    /// Kept for the per-node probes, which need the same TLS settings and credentials at
    /// other addresses than the kubeconfig's server.
    pub(crate) config: kube::Config,
    server: String,
}

#[cfg(feature = "client")]
impl Cluster {
    pub async fn connect(options: &ClusterOptions) -> Result<Self, ClusterError> {
        let kube_options = KubeConfigOptions {
            context: options.context.clone(),
            ..KubeConfigOptions::default()
        };
        let kubeconfig = match &options.kubeconfig {
            Some(path) => Kubeconfig::read_from(path).map_err(|e| ClusterError::Kubeconfig {
                path: Some(path.clone()),
                source: Box::new(e),
            })?,
            None => Kubeconfig::read().map_err(|e| ClusterError::Kubeconfig {
                path: None,
                source: Box::new(e),
            })?,
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube_options)
            .await
            .map_err(|e| ClusterError::Kubeconfig {
                path: options.kubeconfig.clone(),
                source: Box::new(e),
            })?;
        let server = config.cluster_url.to_string();
        let client =
            kube::Client::try_from(config.clone()).map_err(|e| ClusterError::Unreachable {
                server: server.clone(),
                source: e,
            })?;
        Ok(Cluster {
            client,
            config,
            server,
        })
    }

    /// The API server's URL, for messages.
    pub fn server(&self) -> &str {
        &self.server
    }

    pub(crate) fn error(&self, action: impl Into<String>, error: kube::Error) -> ClusterError {
        ClusterError::from_kube(action, &self.server, error)
    }

    /// The server's `gitVersion`, e.g. `v1.20.2`.
    pub async fn version(&self) -> Result<String, ClusterError> {
        let info = self
            .client
            .apiserver_version()
            .await
            .map_err(|e| self.error("reading /version", e))?;
        Ok(info.git_version)
    }
}
