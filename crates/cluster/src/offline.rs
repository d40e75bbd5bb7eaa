//! The light build's stand-ins for [`Cluster`] and [`NodeProbe`], compiled only without the
//! `client` feature.
//!
//! Why it exists: a caller that never talks to a cluster (the pipeline run against a local
//! sandbox node by `cargo xtask demo`) still names these types and calls their methods, and
//! the client behind them (kube, k8s-openapi, tokio, rustls, hyper) is most of its build time.
//! So the light build keeps the methods its callers use (the pipeline's), with the same
//! signatures, and the plain data types are the same ones, but `Cluster` and `NodeProbe` hold
//! [`Infallible`]: no value of them can exist.
//! [`Cluster::connect`], their only way in, answers [`ClusterError::ClientNotBuilt`], and every
//! method body is a match on the impossible value, so none of them can run (or panic).
//! A caller that must hand back something of its own where it holds one writes
//! `match cluster.never() {}`.
//!
//! Keep this file in step with the `impl Cluster` blocks of the other modules and with
//! `node_probe.rs`: the same arguments, return types, `async` where they are (the pipeline's
//! light build, `cargo xtask`, fails to compile when they drift).

use std::convert::Infallible;
use std::io::{self, Read, Write};

use crate::{
    Applied, ClusterError, ClusterOptions, ControlPlaneNodes, FalcoEndpoint, FalcoQuery,
    KubeadmConfig, MirrorPod, PodLog, ProbeConfigMap, Readiness,
};

/// A connection to one API server; in this build (no `client` feature) there is none.
#[derive(Clone)]
pub struct Cluster {
    never: Infallible,
}

impl Cluster {
    /// There is no client in this build: always [`ClusterError::ClientNotBuilt`].
    pub async fn connect(_options: &ClusterOptions) -> Result<Self, ClusterError> {
        Err(ClusterError::ClientNotBuilt)
    }

    /// No `Cluster` can exist in this build; `match cluster.never() {}` says so to the compiler.
    pub fn never(&self) -> Infallible {
        self.never
    }

    pub fn server(&self) -> &str {
        match self.never {}
    }

    pub async fn version(&self) -> Result<String, ClusterError> {
        match self.never {}
    }

    pub async fn control_plane(&self) -> Result<ControlPlaneNodes, ClusterError> {
        match self.never {}
    }

    pub async fn apply_audit_sink(&self, _manifest: &str) -> Result<Applied, ClusterError> {
        match self.never {}
    }

    pub async fn delete_audit_sink(&self, _name: &str) -> Result<bool, ClusterError> {
        match self.never {}
    }

    pub async fn audit_sink_exists(&self, _name: &str) -> Result<Option<bool>, ClusterError> {
        match self.never {}
    }

    pub async fn find_falco(&self, _query: &FalcoQuery) -> Result<FalcoEndpoint, ClusterError> {
        match self.never {}
    }

    pub async fn readiness(&self) -> Readiness {
        match self.never {}
    }

    pub async fn read_kubeadm_config(&self) -> Result<Option<KubeadmConfig>, ClusterError> {
        match self.never {}
    }

    pub async fn update_kubeadm_config(
        &self,
        _cluster_configuration: &str,
        _resource_version: &str,
    ) -> Result<String, ClusterError> {
        match self.never {}
    }

    pub async fn recent_logs(
        &self,
        _selector: &str,
        _since_seconds: i64,
    ) -> Result<Vec<PodLog>, ClusterError> {
        match self.never {}
    }

    pub async fn follow_logs(
        &self,
        _selector: &str,
        _on_line: impl FnMut(&str),
    ) -> Result<Option<(String, String)>, ClusterError> {
        match self.never {}
    }

    pub async fn apiserver_mirror_pod(
        &self,
        _node: Option<&str>,
    ) -> Result<Option<MirrorPod>, ClusterError> {
        match self.never {}
    }

    pub async fn create_and_delete_probe(
        &self,
        _probe: &ProbeConfigMap,
    ) -> Result<(), ClusterError> {
        match self.never {}
    }

    pub fn node_probe(&self) -> Result<NodeProbe, ClusterError> {
        match self.never {}
    }
}

/// What is needed to ask one node's own API server over a byte stream; in this build (no
/// `client` feature) there is none, since only [`Cluster::node_probe`] makes one.
#[derive(Clone, Debug)]
pub struct NodeProbe {
    never: Infallible,
}

impl NodeProbe {
    pub fn readiness<S: Read + Write>(
        &self,
        _host: &str,
        _open: impl FnMut() -> io::Result<S>,
    ) -> Readiness {
        match self.never {}
    }

    pub fn create_and_delete_probe<S: Read + Write>(
        &self,
        _host: &str,
        _open: impl FnMut() -> io::Result<S>,
        _probe: &ProbeConfigMap,
    ) -> Result<(), ClusterError> {
        match self.never {}
    }
}
