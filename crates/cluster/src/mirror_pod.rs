use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::ListParams};

use crate::{Cluster, ClusterError};

const CONFIG_HASH: &str = "kubernetes.io/config.hash";
const CONFIG_MIRROR: &str = "kubernetes.io/config.mirror";

/// What the kubelet reports about the static kube-apiserver pod it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorPod {
    pub name: String,
    /// Changes whenever the kubelet picks up a changed manifest, so a changed hash means the
    /// restart happened (the same signal `kubeadm upgrade` waits for).
    pub config_hash: Option<String>,
    /// The apiserver container's command followed by its args.
    pub command: Vec<String>,
}

impl Cluster {
    /// The mirror pod of the static kube-apiserver: `kube-apiserver-<node>` when `node` is
    /// given, otherwise the only one (several control-plane nodes need `node`).
    pub async fn apiserver_mirror_pod(
        &self,
        node: Option<&str>,
    ) -> Result<Option<MirrorPod>, ClusterError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "kube-system");
        if let Some(node) = node {
            let name = format!("kube-apiserver-{node}");
            let pod = pods
                .get_opt(&name)
                .await
                .map_err(|e| self.error(format!("reading pod kube-system/{name}"), e))?;
            return Ok(pod.as_ref().and_then(mirror_pod_of));
        }
        let list = pods
            .list(&ListParams::default().labels("component=kube-apiserver"))
            .await
            .map_err(|e| self.error("listing kube-apiserver pods in kube-system", e))?;
        let mut found: Vec<MirrorPod> = list.items.iter().filter_map(mirror_pod_of).collect();
        match found.len() {
            0 | 1 => Ok(found.pop()),
            _ => Err(ClusterError::AmbiguousMirrorPod {
                names: found
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

pub(crate) fn mirror_pod_of(pod: &Pod) -> Option<MirrorPod> {
    let annotations = pod.metadata.annotations.as_ref()?;
    if !annotations.contains_key(CONFIG_MIRROR) {
        return None;
    }
    let container = pod.spec.as_ref()?.containers.iter().find(|c| {
        c.name == "kube-apiserver"
            || c.image
                .as_deref()
                .is_some_and(|i| i.contains("kube-apiserver"))
    })?;
    let command = container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .cloned()
        .collect();
    Some(MirrorPod {
        name: pod.metadata.name.clone().unwrap_or_default(),
        config_hash: annotations.get(CONFIG_HASH).cloned(),
        command,
    })
}
