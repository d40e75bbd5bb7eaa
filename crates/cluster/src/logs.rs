#[cfg(feature = "client")]
use futures::{AsyncBufReadExt, TryStreamExt};
#[cfg(feature = "client")]
use k8s_openapi::api::core::v1::Pod;
#[cfg(feature = "client")]
use kube::{
    Api,
    api::{ListParams, LogParams},
};

#[cfg(feature = "client")]
use crate::{Cluster, ClusterError};

/// The recent log of one pod.
#[derive(Debug, Clone)]
pub struct PodLog {
    pub namespace: String,
    pub pod: String,
    pub text: String,
}

#[cfg(feature = "client")]
impl Cluster {
    /// The pods matching `selector`, each with the container whose log to read: the chart's
    /// Falco pods carry sidecars (falcoctl), and the API server refuses a log request without
    /// a container name for a pod with several.
    async fn pods_matching(
        &self,
        selector: &str,
    ) -> Result<Vec<(String, String, Option<String>)>, ClusterError> {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| self.error(format!("listing pods with labels {selector}"), e))?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|p| {
                let containers = p.spec.map(|s| s.containers).unwrap_or_default();
                let container = (containers.len() > 1).then(|| {
                    containers
                        .iter()
                        .find(|c| c.name == "falco")
                        .unwrap_or(&containers[0])
                        .name
                        .clone()
                });
                Some((p.metadata.namespace?, p.metadata.name?, container))
            })
            .collect())
    }

    /// The last `since_seconds` of log of every pod matching `selector`, in every namespace.
    pub async fn recent_logs(
        &self,
        selector: &str,
        since_seconds: i64,
    ) -> Result<Vec<PodLog>, ClusterError> {
        let mut logs = Vec::new();
        for (namespace, pod, container) in self.pods_matching(selector).await? {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
            let params = LogParams {
                container,
                since_seconds: Some(since_seconds),
                ..LogParams::default()
            };
            let text = api
                .logs(&pod, &params)
                .await
                .map_err(|e| self.error(format!("reading the log of {namespace}/{pod}"), e))?;
            logs.push(PodLog {
                namespace,
                pod,
                text,
            });
        }
        Ok(logs)
    }

    /// Follows the log of the first pod matching `selector`, like `kubectl logs -f`, handing each
    /// line to `on_line` until the stream ends. Returns the pod it followed.
    pub async fn follow_logs(
        &self,
        selector: &str,
        mut on_line: impl FnMut(&str),
    ) -> Result<Option<(String, String)>, ClusterError> {
        let Some((namespace, pod, container)) =
            self.pods_matching(selector).await?.into_iter().next()
        else {
            return Ok(None);
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let params = LogParams {
            container,
            follow: true,
            tail_lines: Some(20),
            ..LogParams::default()
        };
        let stream = api
            .log_stream(&pod, &params)
            .await
            .map_err(|e| self.error(format!("following the log of {namespace}/{pod}"), e))?;
        let mut lines = stream.lines();
        while let Some(line) = lines.try_next().await.map_err(|e| ClusterError::Api {
            action: format!("reading the log of {namespace}/{pod}"),
            code: 0,
            message: e.to_string(),
        })? {
            on_line(&line);
        }
        Ok(Some((namespace, pod)))
    }
}
