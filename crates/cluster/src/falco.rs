use k8s_openapi::api::core::v1::{Service, ServicePort};
use kube::Api;

use crate::{Cluster, ClusterError};

/// Which Falco receives the events: they listen on different ports and paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FalcoFlavour {
    /// Falco < 0.32: the embedded webserver, port 8765, path `/k8s_audit`.
    Webserver,
    /// Falco >= 0.32: the k8saudit plugin, port 9765, path `/k8s-audit`.
    K8sAuditPlugin,
}

impl FalcoFlavour {
    pub fn port(self) -> u16 {
        match self {
            FalcoFlavour::Webserver => 8765,
            FalcoFlavour::K8sAuditPlugin => 9765,
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            FalcoFlavour::Webserver => "/k8s_audit",
            FalcoFlavour::K8sAuditPlugin => "/k8s-audit",
        }
    }
}

/// Where the API server should send audit events, and why we chose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FalcoEndpoint {
    pub host: String,
    pub port: u16,
    pub path: String,
    /// One sentence for the step log: which Service port was picked and why.
    pub reason: String,
}

impl FalcoEndpoint {
    pub fn url(&self) -> String {
        format!("http://{}:{}{}", self.host, self.port, self.path)
    }
}

impl Cluster {
    /// Finds Falco's audit endpoint from its Service: the ClusterIP (or, with `via_node_port`,
    /// `127.0.0.1:<nodePort>`, because a ClusterIP is not always routable from the API server's
    /// host network) and the port of whichever Falco flavour the Service exposes.
    pub async fn falco_endpoint(
        &self,
        namespace: &str,
        name: &str,
        via_node_port: bool,
    ) -> Result<FalcoEndpoint, ClusterError> {
        let services: Api<Service> = Api::namespaced(self.client.clone(), namespace);
        let service = services
            .get_opt(name)
            .await
            .map_err(|e| self.error(format!("reading Service {namespace}/{name}"), e))?
            .ok_or_else(|| ClusterError::FalcoServiceMissing {
                namespace: namespace.to_string(),
                name: name.to_string(),
            })?;
        endpoint_of(&service, namespace, name, via_node_port)
    }
}

/// The pure half of `falco_endpoint`, separate so that every Service shape can be unit-tested.
pub(crate) fn endpoint_of(
    service: &Service,
    namespace: &str,
    name: &str,
    via_node_port: bool,
) -> Result<FalcoEndpoint, ClusterError> {
    let unusable = |problem: String| ClusterError::UnusableService {
        namespace: namespace.to_string(),
        name: name.to_string(),
        problem,
    };
    let spec = service
        .spec
        .as_ref()
        .ok_or_else(|| unusable("has no spec".into()))?;
    let ports = spec.ports.as_deref().unwrap_or_default();
    // The plugin port wins: a Service exposing both is a Falco >= 0.32 that also kept the old port.
    let (flavour, port) = [FalcoFlavour::K8sAuditPlugin, FalcoFlavour::Webserver]
        .into_iter()
        .find_map(|flavour| {
            ports
                .iter()
                .find(|p| p.port == i32::from(flavour.port()))
                .map(|p| (flavour, p))
        })
        .ok_or_else(|| ClusterError::NoAuditPort {
            namespace: namespace.to_string(),
            name: name.to_string(),
            ports: describe_ports(ports),
        })?;
    let why_flavour = match flavour {
        FalcoFlavour::K8sAuditPlugin => "port 9765 is the k8saudit plugin of Falco >= 0.32",
        FalcoFlavour::Webserver => "port 8765 is the classic Falco webserver",
    };
    if via_node_port {
        if spec.type_.as_deref() != Some("NodePort") {
            return Err(unusable(format!(
                "is of type {}, not NodePort, so --falco-via-nodeport cannot reach it",
                spec.type_.as_deref().unwrap_or("ClusterIP")
            )));
        }
        let node_port = port
            .node_port
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| unusable(format!("port {} has no nodePort", port.port)))?;
        return Ok(FalcoEndpoint {
            host: "127.0.0.1".into(),
            port: node_port,
            path: flavour.path().into(),
            reason: format!(
                "Service {namespace}/{name}: {why_flavour}; nodePort {node_port} on the API server's host"
            ),
        });
    }
    let cluster_ip = spec
        .cluster_ip
        .clone()
        .filter(|ip| !ip.is_empty() && ip != "None")
        .ok_or_else(|| {
            unusable(
                "has no ClusterIP (a headless Service cannot be an audit webhook target)".into(),
            )
        })?;
    Ok(FalcoEndpoint {
        host: cluster_ip,
        port: flavour.port(),
        path: flavour.path().into(),
        reason: format!("Service {namespace}/{name}: {why_flavour}"),
    })
}

fn describe_ports(ports: &[ServicePort]) -> String {
    if ports.is_empty() {
        return "none".into();
    }
    ports
        .iter()
        .map(|p| match &p.name {
            Some(name) => format!("{}/{name}", p.port),
            None => p.port.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(json: serde_json::Value) -> Service {
        serde_json::from_value(json).expect("test Service is valid")
    }

    #[test]
    fn classic_webserver_port() {
        let svc = service(serde_json::json!({
            "spec": {"clusterIP": "10.96.12.34", "ports": [{"port": 8765, "name": "http"}]}
        }));
        let ep = endpoint_of(&svc, "default", "falco-service", false).unwrap();
        assert_eq!(ep.url(), "http://10.96.12.34:8765/k8s_audit");
        assert!(
            ep.reason.contains("classic Falco webserver"),
            "{}",
            ep.reason
        );
    }

    #[test]
    fn plugin_port_wins_over_webserver_port() {
        let svc = service(serde_json::json!({
            "spec": {"clusterIP": "10.0.0.7", "ports": [{"port": 8765}, {"port": 9765, "name": "k8saudit"}]}
        }));
        let ep = endpoint_of(&svc, "falco", "falco", false).unwrap();
        assert_eq!(ep.url(), "http://10.0.0.7:9765/k8s-audit");
    }

    #[test]
    fn node_port_goes_through_loopback() {
        let svc = service(serde_json::json!({
            "spec": {"type": "NodePort", "clusterIP": "10.0.0.7", "ports": [{"port": 8765, "nodePort": 30765}]}
        }));
        let ep = endpoint_of(&svc, "default", "falco-service", true).unwrap();
        assert_eq!(ep.url(), "http://127.0.0.1:30765/k8s_audit");
    }

    #[test]
    fn node_port_on_cluster_ip_service_is_refused() {
        let svc = service(serde_json::json!({
            "spec": {"clusterIP": "10.0.0.7", "ports": [{"port": 8765}]}
        }));
        let err = endpoint_of(&svc, "default", "falco-service", true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Service default/falco-service is of type ClusterIP, not NodePort, so --falco-via-nodeport cannot reach it"
        );
    }

    #[test]
    fn headless_and_portless_services_are_refused() {
        let headless = service(serde_json::json!({
            "spec": {"clusterIP": "None", "ports": [{"port": 8765}]}
        }));
        assert!(matches!(
            endpoint_of(&headless, "d", "f", false),
            Err(ClusterError::UnusableService { .. })
        ));
        let other = service(serde_json::json!({
            "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80, "name": "web"}, {"port": 443}]}
        }));
        assert_eq!(
            endpoint_of(&other, "d", "f", false)
                .unwrap_err()
                .to_string(),
            "Service d/f exposes no Falco audit port (8765 for the Falco webserver, 9765 for the k8saudit plugin); its ports are: 80/web, 443"
        );
    }
}
