//! The `kube-system/kubeadm-config` ConfigMap, whose `ClusterConfiguration` key is what
//! `kubeadm upgrade` and `kubeadm join --control-plane` regenerate the static pod manifests
//! from. Read with its resourceVersion, and written back only if nobody changed it since.

#[cfg(feature = "client")]
use k8s_openapi::api::core::v1::ConfigMap;
#[cfg(feature = "client")]
use kube::Api;
#[cfg(feature = "client")]
use kube::api::{Patch, PatchParams};

#[cfg(feature = "client")]
use crate::{Cluster, ClusterError};

pub const KUBEADM_CONFIG_NAMESPACE: &str = "kube-system";
pub const KUBEADM_CONFIG_NAME: &str = "kubeadm-config";
/// The key holding the ClusterConfiguration document (one YAML document).
pub const CLUSTER_CONFIGURATION_KEY: &str = "ClusterConfiguration";

/// The ClusterConfiguration text as read, and the ConfigMap version it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeadmConfig {
    pub cluster_configuration: String,
    pub resource_version: String,
}

#[cfg(feature = "client")]
fn what() -> String {
    format!("ConfigMap {KUBEADM_CONFIG_NAMESPACE}/{KUBEADM_CONFIG_NAME}")
}

#[cfg(feature = "client")]
impl Cluster {
    fn kubeadm_config_api(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), KUBEADM_CONFIG_NAMESPACE)
    }

    /// Sorts out the two answers the caller acts on: 409 (re-read and retry) and 403 (no
    /// RBAC on kube-system ConfigMaps).
    fn kubeadm_config_error(&self, verb: &'static str, error: kube::Error) -> ClusterError {
        match error {
            kube::Error::Api(status) if status.code == 409 => ClusterError::KubeadmConfigConflict {
                message: status.message,
            },
            kube::Error::Api(status) if status.code == 403 => {
                ClusterError::KubeadmConfigForbidden {
                    verb,
                    message: status.message,
                }
            }
            other => self.error(format!("{verb} {}", what()), other),
        }
    }

    /// Reads the ClusterConfiguration; `None` when the ConfigMap does not exist (the cluster
    /// was not set up by kubeadm). A ConfigMap without the key is an error: it is kubeadm's,
    /// but not in a form kubeadm reads.
    pub async fn read_kubeadm_config(&self) -> Result<Option<KubeadmConfig>, ClusterError> {
        let Some(map) = self
            .kubeadm_config_api()
            .get_opt(KUBEADM_CONFIG_NAME)
            .await
            .map_err(|e| self.kubeadm_config_error("reading", e))?
        else {
            return Ok(None);
        };
        let resource_version = map.metadata.resource_version.clone().unwrap_or_default();
        let data = map.data.unwrap_or_default();
        match data.get(CLUSTER_CONFIGURATION_KEY) {
            Some(text) => Ok(Some(KubeadmConfig {
                cluster_configuration: text.clone(),
                resource_version,
            })),
            None => Err(ClusterError::KubeadmConfigWithoutKey {
                keys: if data.is_empty() {
                    "none".into()
                } else {
                    data.keys().cloned().collect::<Vec<_>>().join(", ")
                },
            }),
        }
    }

    /// Replaces the ClusterConfiguration key (and nothing else: a merge patch keeps the
    /// other keys) if the ConfigMap is still at `resource_version`; returns the new
    /// resourceVersion. A change in between is [`ClusterError::KubeadmConfigConflict`]:
    /// read again, redo the edit, and try once more. `resource_version` must be the one
    /// read: an empty one would make the write unconditional, so it is refused as a conflict.
    pub async fn update_kubeadm_config(
        &self,
        cluster_configuration: &str,
        resource_version: &str,
    ) -> Result<String, ClusterError> {
        if resource_version.is_empty() {
            return Err(ClusterError::KubeadmConfigConflict {
                message: "no resourceVersion to compare with; read the ConfigMap first".into(),
            });
        }
        // The resourceVersion in a patch makes the API server compare it: 409 on a mismatch.
        let patch = serde_json::json!({
            "metadata": { "resourceVersion": resource_version },
            "data": { CLUSTER_CONFIGURATION_KEY: cluster_configuration },
        });
        let map = self
            .kubeadm_config_api()
            .patch(
                KUBEADM_CONFIG_NAME,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|e| self.kubeadm_config_error("updating", e))?;
        Ok(map.metadata.resource_version.unwrap_or_default())
    }
}
