#[cfg(feature = "client")]
use std::collections::{BTreeMap, BTreeSet};

#[cfg(feature = "client")]
use k8s_openapi::api::core::v1::{Node, Pod};
#[cfg(feature = "client")]
use kube::{Api, api::ListParams};

#[cfg(feature = "client")]
use crate::mirror_pod::mirror_pod_of;
#[cfg(feature = "client")]
use crate::{Cluster, ClusterError};

/// The labels the kube-apiserver static pods carry: kubeadm and minikube, then kops.
pub const APISERVER_POD_SELECTORS: [&str; 2] =
    ["component=kube-apiserver", "k8s-app=kube-apiserver"];

/// The control-plane node role, and its name before Kubernetes 1.20.
pub const CONTROL_PLANE_NODE_LABELS: [&str; 2] = [
    "node-role.kubernetes.io/control-plane",
    "node-role.kubernetes.io/master",
];

/// What kube-apiserver listens on when its manifest does not say.
pub const DEFAULT_SECURE_PORT: u16 = 6443;

/// One kube-apiserver static pod, as its mirror pod tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiServerPod {
    /// `spec.nodeName`.
    pub node_name: String,
    /// `kube-apiserver-<node>`.
    pub pod_name: String,
    /// `status.hostIP`: absent until the kubelet has reported the pod's status.
    pub host_ip: Option<String>,
    /// From the container's `--secure-port` flag, [`DEFAULT_SECURE_PORT`] without one.
    pub secure_port: u16,
    pub config_hash: Option<String>,
    /// The container's command followed by its args, as [`crate::MirrorPod::command`].
    pub command: Vec<String>,
}

/// The control plane as the API server knows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ControlPlaneNodes {
    /// Sorted by node name.
    pub apiservers: Vec<ApiServerPod>,
    /// Nodes labelled `node-role.kubernetes.io/control-plane` (or `.../master`, before 1.20)
    /// that have no mirror pod: a node whose kubelet is down, or one that runs no API server.
    pub labelled_without_pod: Vec<String>,
}

#[cfg(feature = "client")]
impl Cluster {
    /// The kube-apiserver mirror pods in kube-system: label component=kube-apiserver (kubeadm,
    /// minikube) or k8s-app=kube-apiserver (kops), only those with the
    /// kubernetes.io/config.mirror annotation; cross-checked against the control-plane node
    /// labels.
    pub async fn control_plane(&self) -> Result<ControlPlaneNodes, ClusterError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "kube-system");
        // Keyed by pod name: a pod carrying both labels is listed twice.
        let mut apiservers = BTreeMap::new();
        for selector in APISERVER_POD_SELECTORS {
            let list = pods
                .list(&ListParams::default().labels(selector))
                .await
                .map_err(|e| self.error(format!("listing pods {selector} in kube-system"), e))?;
            for pod in &list.items {
                if let Some(apiserver) = apiserver_pod_of(pod) {
                    apiservers.insert(apiserver.pod_name.clone(), apiserver);
                }
            }
        }
        let nodes: Api<Node> = Api::all(self.client.clone());
        let mut labelled = BTreeSet::new();
        for label in CONTROL_PLANE_NODE_LABELS {
            let list = nodes
                .list(&ListParams::default().labels(label))
                .await
                .map_err(|e| self.error(format!("listing Nodes labelled {label}"), e))?;
            labelled.extend(list.items.into_iter().filter_map(|n| n.metadata.name));
        }
        let mut apiservers: Vec<ApiServerPod> = apiservers.into_values().collect();
        apiservers.sort_by(|a, b| (&a.node_name, &a.pod_name).cmp(&(&b.node_name, &b.pod_name)));
        for apiserver in &apiservers {
            labelled.remove(&apiserver.node_name);
        }
        Ok(ControlPlaneNodes {
            apiservers,
            labelled_without_pod: labelled.into_iter().collect(),
        })
    }
}

#[cfg(feature = "client")]
fn apiserver_pod_of(pod: &Pod) -> Option<ApiServerPod> {
    let mirror = mirror_pod_of(pod)?;
    let node_name = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        // The kubelet always sets it on a mirror pod; the name is the next best witness.
        .or_else(|| {
            mirror
                .name
                .strip_prefix("kube-apiserver-")
                .map(str::to_string)
        })
        .unwrap_or_else(|| mirror.name.clone());
    let host_ip = pod
        .status
        .as_ref()
        .and_then(|s| s.host_ip.clone())
        .filter(|ip| !ip.is_empty());
    Some(ApiServerPod {
        node_name,
        pod_name: mirror.name,
        host_ip,
        secure_port: secure_port(&mirror.command),
        config_hash: mirror.config_hash,
        command: mirror.command,
    })
}

/// The last `--secure-port` wins, as with Go's flag parsing; a value kube-apiserver would
/// refuse leaves the default, since such a server does not run at all.
#[cfg(feature = "client")]
fn secure_port(command: &[String]) -> u16 {
    let mut port = DEFAULT_SECURE_PORT;
    let mut words = command.iter();
    while let Some(word) = words.next() {
        let value = match word.strip_prefix("--secure-port") {
            Some(rest) if rest.starts_with('=') => Some(rest[1..].to_string()),
            Some("") => words.next().cloned(),
            _ => None,
        };
        if let Some(parsed) = value.and_then(|v| v.trim().parse::<u16>().ok()) {
            port = parsed;
        }
    }
    port
}

#[cfg(all(test, feature = "client"))]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn secure_port_forms() {
        assert_eq!(secure_port(&words("kube-apiserver --v=2")), 6443);
        assert_eq!(
            secure_port(&words("kube-apiserver --secure-port=8443")),
            8443
        );
        assert_eq!(secure_port(&words("kube-apiserver --secure-port 443")), 443);
        assert_eq!(
            secure_port(&words("kube-apiserver --secure-port=1 --secure-port=2")),
            2
        );
        assert_eq!(secure_port(&words("kube-apiserver --secure-port=x")), 6443);
        assert_eq!(secure_port(&words("kube-apiserver --secure-port")), 6443);
        assert_eq!(secure_port(&words("kube-apiserver --secure-ports=1")), 6443);
    }
}
