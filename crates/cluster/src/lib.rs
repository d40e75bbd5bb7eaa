//! The cluster side of the pipelines, through `kube`: where Falco listens, which version the
//! API server runs, whether it is ready, what the kubelet's mirror pod says, the AuditSink object,
//! and Falco's logs. Every call is one or two plain requests, so the crate can be tested against a
//! server that replays recorded API responses.
//!
//! The client is the `client` feature (on by default). Without it the crate keeps its types and
//! the methods the pipeline calls, but [`Cluster`] and [`NodeProbe`] cannot be built: [`Cluster::connect`] answers
//! [`ClusterError::ClientNotBuilt`] (see `offline.rs`).

mod connect;
mod control_plane;
mod dynamic_sink;
mod error;
mod falco;
mod health;
mod kubeadm_config;
mod logs;
mod mirror_pod;
#[cfg(feature = "client")]
mod node_probe;
#[cfg(not(feature = "client"))]
mod offline;
mod probe;

#[cfg(feature = "client")]
pub use connect::Cluster;
pub use connect::ClusterOptions;
pub use control_plane::{
    APISERVER_POD_SELECTORS, ApiServerPod, CONTROL_PLANE_NODE_LABELS, ControlPlaneNodes,
    DEFAULT_SECURE_PORT,
};
pub use dynamic_sink::{AUDIT_SINK_NAME, Applied};
pub use error::ClusterError;
pub use falco::{
    Candidate, FALCO_LABELS, FALCO_POD_SELECTORS, FALLBACK_NAMESPACES, FalcoEndpoint, FalcoFlavour,
    FalcoQuery,
};
pub use health::Readiness;
pub use kubeadm_config::{
    CLUSTER_CONFIGURATION_KEY, KUBEADM_CONFIG_NAME, KUBEADM_CONFIG_NAMESPACE, KubeadmConfig,
};
pub use logs::PodLog;
pub use mirror_pod::MirrorPod;
#[cfg(feature = "client")]
pub use node_probe::NodeProbe;
#[cfg(not(feature = "client"))]
pub use offline::{Cluster, NodeProbe};
pub use probe::ProbeConfigMap;
