#[cfg(feature = "client")]
use kube::{
    Api,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams},
};

#[cfg(feature = "client")]
use crate::{Cluster, ClusterError};

/// The object name our bundled `audit-sink.yaml.in` uses.
pub const AUDIT_SINK_NAME: &str = "falco-audit-sink";

#[cfg(feature = "client")]
const GROUP_VERSION: &str = "auditregistration.k8s.io/v1alpha1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Created,
    Replaced,
}

#[cfg(feature = "client")]
fn audit_sink_api(cluster: &Cluster) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("auditregistration.k8s.io", "v1alpha1", "AuditSink");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "auditsinks");
    Api::all_with(cluster.client.clone(), &resource)
}

#[cfg(feature = "client")]
impl Cluster {
    /// Creates the AuditSink, or replaces it when it exists. Not server-side apply: 1.13-1.15,
    /// exactly the versions that have AuditSink, lack it without a feature gate.
    pub async fn apply_audit_sink(&self, manifest: &str) -> Result<Applied, ClusterError> {
        self.require_audit_registration().await?;
        let mut object: DynamicObject = serde_norway::from_str(manifest)?;
        let name = object
            .metadata
            .name
            .clone()
            .unwrap_or_else(|| AUDIT_SINK_NAME.into());
        let api = audit_sink_api(self);
        let existing = api
            .get_opt(&name)
            .await
            .map_err(|e| self.error(format!("reading AuditSink {name}"), e))?;
        match existing {
            None => {
                api.create(&PostParams::default(), &object)
                    .await
                    .map_err(|e| self.error(format!("creating AuditSink {name}"), e))?;
                Ok(Applied::Created)
            }
            Some(current) => {
                object.metadata.resource_version = current.metadata.resource_version;
                api.replace(&name, &PostParams::default(), &object)
                    .await
                    .map_err(|e| self.error(format!("replacing AuditSink {name}"), e))?;
                Ok(Applied::Replaced)
            }
        }
    }

    /// Deletes the AuditSink; `false` when there was none (or the API is not served at all).
    pub async fn delete_audit_sink(&self, name: &str) -> Result<bool, ClusterError> {
        if self.require_audit_registration().await.is_err() {
            return Ok(false);
        }
        match audit_sink_api(self)
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
            Err(e) => Err(self.error(format!("deleting AuditSink {name}"), e)),
        }
    }

    /// Whether the AuditSink exists; `None` when the API group is not served.
    pub async fn audit_sink_exists(&self, name: &str) -> Result<Option<bool>, ClusterError> {
        if self.require_audit_registration().await.is_err() {
            return Ok(None);
        }
        let found = audit_sink_api(self)
            .get_opt(name)
            .await
            .map_err(|e| self.error(format!("reading AuditSink {name}"), e))?;
        Ok(Some(found.is_some()))
    }

    async fn require_audit_registration(&self) -> Result<(), ClusterError> {
        match self.client.list_api_group_resources(GROUP_VERSION).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                Err(ClusterError::AuditRegistrationNotServed)
            }
            Err(e) => Err(self.error(format!("discovering {GROUP_VERSION}"), e)),
        }
    }
}
