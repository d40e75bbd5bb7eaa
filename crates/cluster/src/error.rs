use std::path::PathBuf;

/// What went wrong talking to the cluster, with enough context to act on it.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot load kubeconfig{}: {source}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Kubeconfig {
        path: Option<PathBuf>,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[cfg(feature = "client")]
    #[error("cannot reach the API server at {server}: {source}")]
    Unreachable {
        server: String,
        #[source]
        source: kube::Error,
    },
    #[error("the API server refused our credentials (HTTP {code}) when {action}: {message}")]
    Unauthorized {
        action: String,
        code: u16,
        message: String,
    },
    #[error("{action}: HTTP {code}: {message}")]
    Api {
        action: String,
        code: u16,
        message: String,
    },
    #[error(
        "Service {namespace}/{name} not found; deploy Falco first, or name its Service with --falco-service/--falco-namespace, or pass --falco-url"
    )]
    FalcoServiceMissing { namespace: String, name: String },
    #[error(
        "no Service exposing Falco's audit port (9765 for the k8saudit plugin, 8765 for the Falco webserver) {searched}; deploy Falco first, or name its Service with --falco-service and --falco-namespace, or pass --falco-url"
    )]
    NoFalcoService { searched: String },
    #[error(
        "several Services expose Falco's audit port (9765 or 8765), and choosing one would be a guess; name one with --falco-service and --falco-namespace:\n{list}"
    )]
    SeveralFalcoServices { list: String },
    #[error(
        "Service {namespace}/{name} exposes no Falco audit port (8765 for the Falco webserver, 9765 for the k8saudit plugin); its ports are: {ports}"
    )]
    NoAuditPort {
        namespace: String,
        name: String,
        ports: String,
    },
    #[error("Service {namespace}/{name} {problem}")]
    UnusableService {
        namespace: String,
        name: String,
        problem: String,
    },
    #[error("several kube-apiserver mirror pods ({names}); say which node with --node")]
    AmbiguousMirrorPod { names: String },
    #[error(
        "the API server does not serve auditregistration.k8s.io/v1alpha1: it lacks --runtime-config=auditregistration.k8s.io/v1alpha1=true (and AuditSink exists only in Kubernetes 1.13-1.18)"
    )]
    AuditRegistrationNotServed,
    #[error(
        "ConfigMap kube-system/kubeadm-config changed since it was read (HTTP 409 Conflict: {message})"
    )]
    KubeadmConfigConflict { message: String },
    #[error(
        "{verb} ConfigMap kube-system/kubeadm-config is forbidden (HTTP 403: {message}); the credentials need RBAC permission to get and patch ConfigMaps in kube-system, as kubeadm's admin.conf has"
    )]
    KubeadmConfigForbidden { verb: &'static str, message: String },
    #[error(
        "ConfigMap kube-system/kubeadm-config has no ClusterConfiguration key (its keys: {keys}); expected the one kubeadm writes"
    )]
    KubeadmConfigWithoutKey { keys: String },
    #[cfg(feature = "client")]
    #[error(
        "cannot set up TLS for the nodes' API servers from the kubeconfig of {server}: {source}"
    )]
    NodeProbeTls {
        server: String,
        #[source]
        source: kube::Error,
    },
    /// A node's own API server, asked over a stream, gave no HTTP answer (no stream, TLS,
    /// a broken answer).
    #[error("{action}: {reason}")]
    NodeApiServerUnreachable { action: String, reason: String },
    #[error("cannot read the kubeconfig's token file {}: {source}", path.display())]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// What [`crate::Cluster::connect`] answers in a build without the `client` feature.
    #[error(
        "this build has no cluster client (built without the `client` feature of crate cluster); use the full build, e.g. `cargo xtask ...` or `k8s-audit`"
    )]
    ClientNotBuilt,
    #[error("the AuditSink manifest is not valid YAML: {0}")]
    AuditSinkManifest(#[from] serde_norway::Error),
}

impl ClusterError {
    /// Sorts a kube error into "could not connect", "not allowed" and "the server said no",
    /// because each of those needs a different fix from the user.
    #[cfg(feature = "client")]
    pub(crate) fn from_kube(action: impl Into<String>, server: &str, error: kube::Error) -> Self {
        match error {
            kube::Error::Api(status) => Self::from_status(action, status.code, status.message),
            other => ClusterError::Unreachable {
                server: server.to_string(),
                source: other,
            },
        }
    }

    /// An answer the API server gave with a failing status, sorted as [`Self::from_kube`] does.
    #[cfg(feature = "client")]
    pub(crate) fn from_status(action: impl Into<String>, code: u16, message: String) -> Self {
        let action = action.into();
        if code == 401 || code == 403 {
            ClusterError::Unauthorized {
                action,
                code,
                message,
            }
        } else {
            ClusterError::Api {
                action,
                code,
                message,
            }
        }
    }

    /// The HTTP status the API server answered with, if it answered at all.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            ClusterError::Api { code, .. } | ClusterError::Unauthorized { code, .. } => Some(*code),
            ClusterError::KubeadmConfigConflict { .. } => Some(409),
            ClusterError::KubeadmConfigForbidden { .. } => Some(403),
            _ => None,
        }
    }
}
