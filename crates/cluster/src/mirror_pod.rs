#[cfg(feature = "client")]
use k8s_openapi::api::core::v1::Pod;
#[cfg(feature = "client")]
use kube::{Api, api::ListParams};

#[cfg(feature = "client")]
use crate::{Cluster, ClusterError};

#[cfg(feature = "client")]
const CONFIG_HASH: &str = "kubernetes.io/config.hash";
#[cfg(feature = "client")]
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
    /// When the container's previous instance ended (`lastState.terminated.finishedAt`), once
    /// the kubelet has restarted it: for 10 minutes after a restart, the kubelet's crash
    /// back-off delays the next start of this pod.
    pub last_restart: Option<std::time::SystemTime>,
}

#[cfg(feature = "client")]
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

#[cfg(feature = "client")]
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
    let last_restart = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|statuses| statuses.iter().find(|s| s.name == container.name))
        .and_then(|s| {
            s.last_state
                .as_ref()?
                .terminated
                .as_ref()?
                .finished_at
                .as_ref()
        })
        .map(|time| std::time::SystemTime::from(time.0));
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
        last_restart,
    })
}

#[cfg(all(test, feature = "client"))]
mod tests {
    use super::*;

    /// A mirror pod as the kubelet reports it after restarting the container once (the shape
    /// of a v1.20 kubelet's status; the real-node test reads one from a real kubelet).
    fn restarted_pod(finished_at: Option<&str>) -> Pod {
        let last_state = match finished_at {
            Some(at) => {
                serde_json::json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": "2026-12-01T17:20:00Z", "finishedAt": at}})
            }
            None => serde_json::json!({}),
        };
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "kube-apiserver-cp1",
                "namespace": "kube-system",
                "annotations": {CONFIG_MIRROR: "3f2a", CONFIG_HASH: "3f2a"}
            },
            "spec": {"containers": [
                {"name": "kube-apiserver", "command": ["kube-apiserver", "--secure-port=6443"]}
            ]},
            "status": {"containerStatuses": [
                {"name": "other", "ready": true, "restartCount": 0, "image": "x", "imageID": "",
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-12-01T17:00:00Z"}}},
                {"name": "kube-apiserver", "ready": true, "restartCount": 1, "image": "x", "imageID": "",
                 "lastState": last_state}
            ]}
        }))
        .expect("a pod")
    }

    #[test]
    fn the_last_restart_is_the_apiserver_containers_previous_end() {
        let pod = mirror_pod_of(&restarted_pod(Some("2026-12-01T17:25:41Z"))).expect("mirror");
        let expected =
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_145_941);
        assert_eq!(pod.last_restart, Some(expected));
        assert_eq!(pod.command, ["kube-apiserver", "--secure-port=6443"]);
        let never = mirror_pod_of(&restarted_pod(None)).expect("mirror");
        assert_eq!(never.last_restart, None);
    }
}
