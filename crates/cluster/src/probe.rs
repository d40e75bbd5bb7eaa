#[cfg(feature = "client")]
use std::collections::BTreeMap;

#[cfg(feature = "client")]
use k8s_openapi::api::core::v1::ConfigMap;
#[cfg(feature = "client")]
use kube::{
    Api,
    api::{DeleteParams, ObjectMeta, PostParams},
};

#[cfg(feature = "client")]
use crate::{Cluster, ClusterError};

/// A uniquely named ConfigMap whose create and delete must show up as audit events.
#[derive(Debug, Clone)]
pub struct ProbeConfigMap {
    pub namespace: String,
    pub name: String,
}

#[cfg(feature = "client")]
impl ProbeConfigMap {
    /// The object both ways of creating the probe send: labelled as ours, so a leftover is
    /// easy to find and delete.
    pub(crate) fn object(&self) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/created-by".to_string(),
                    "k8s-audit-verify".to_string(),
                )])),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([("probe".to_string(), "audit".to_string())])),
            ..ConfigMap::default()
        }
    }

    /// `ConfigMap namespace/name`, for messages.
    pub(crate) fn describe(&self) -> String {
        format!("ConfigMap {}/{}", self.namespace, self.name)
    }
}

#[cfg(feature = "client")]
impl Cluster {
    pub async fn create_and_delete_probe(
        &self,
        probe: &ProbeConfigMap,
    ) -> Result<(), ClusterError> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &probe.namespace);
        let what = probe.describe();
        api.create(&PostParams::default(), &probe.object())
            .await
            .map_err(|e| self.error(format!("creating {what}"), e))?;
        api.delete(&probe.name, &DeleteParams::default())
            .await
            .map_err(|e| self.error(format!("deleting {what}"), e))?;
        Ok(())
    }
}
