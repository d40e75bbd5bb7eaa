#[cfg(feature = "client")]
use crate::{Cluster, ClusterError};

/// One look at the API server's health endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// It answered, but not "ok" (the body says which check failed).
    NotReady(String),
    /// It did not answer: expected while the kubelet restarts it.
    Unreachable(String),
}

#[cfg(feature = "client")]
impl Cluster {
    /// `GET /readyz`, falling back to `/healthz` on servers older than 1.16 that lack it.
    /// Never fails: every outcome is a state the caller's wait loop understands.
    pub async fn readiness(&self) -> Readiness {
        match self.get_health("/readyz").await {
            Err(ClusterError::Api { code: 404, .. }) => match self.get_health("/healthz").await {
                Ok(()) => Readiness::Ready,
                Err(e) => classify(e),
            },
            Ok(()) => Readiness::Ready,
            Err(e) => classify(e),
        }
    }

    async fn get_health(&self, path: &str) -> Result<(), ClusterError> {
        let request = http::Request::get(path)
            .body(Vec::new())
            .expect("a GET with a static path is a valid request");
        self.client
            .request_text(request)
            .await
            .map(|_| ())
            .map_err(|e| self.error(format!("GET {path}"), e))
    }
}

#[cfg(feature = "client")]
fn classify(error: ClusterError) -> Readiness {
    match error {
        ClusterError::Unreachable { source, .. } => Readiness::Unreachable(source.to_string()),
        ClusterError::Api { code, message, .. }
        | ClusterError::Unauthorized { code, message, .. } => {
            Readiness::NotReady(format!("HTTP {code}: {}", message.trim()))
        }
        other => Readiness::NotReady(other.to_string()),
    }
}
