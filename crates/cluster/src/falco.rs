#[cfg(feature = "client")]
use k8s_openapi::api::core::v1::{Service, ServicePort};
#[cfg(feature = "client")]
use kube::Api;
#[cfg(feature = "client")]
use kube::api::ListParams;

#[cfg(feature = "client")]
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

/// The labels Falco's Helm chart (`app.kubernetes.io/name`) and older manifests (`app`) put on
/// its Services.
pub const FALCO_LABELS: [(&str, &str); 2] = [("app.kubernetes.io/name", "falco"), ("app", "falco")];

/// The label selectors that find Falco's pods: the chart's (`app.kubernetes.io/name`) and the
/// older manifests' (`app`, the seed's `falco-example` included). A selector cannot say "this
/// key or that one", so a caller lists the pods of each and merges them.
pub const FALCO_POD_SELECTORS: [&str; 2] = [
    "app.kubernetes.io/name=falco",
    "app in (falco, falco-example)",
];

/// Where discovery looks when the user may not list Services in every namespace: the seed's
/// namespace and the chart's usual one.
pub const FALLBACK_NAMESPACES: [&str; 2] = ["default", "falco"];

/// One address the API server could send the events to: always an IP (IPv6 in brackets), never
/// a cluster DNS name, because the API server's host network cannot resolve those.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub host: String,
    pub port: u16,
    pub path: String,
    /// Why this address may work, for the step log (e.g. "the Service's ClusterIP").
    pub why: String,
}

impl Candidate {
    /// Always http: a Service says nothing about TLS.
    pub fn url(&self) -> String {
        format!("http://{}:{}{}", self.host, self.port, self.path)
    }
}

/// Falco's Service and the addresses to try, in order: the ClusterIP first, then
/// `127.0.0.1:<nodePort>` for a NodePort (or LoadBalancer) Service, because a ClusterIP is not
/// routable from the host network with every CNI. With `--falco-via-nodeport`, only the latter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FalcoEndpoint {
    pub namespace: String,
    pub name: String,
    pub flavour: FalcoFlavour,
    /// Never empty.
    pub candidates: Vec<Candidate>,
    /// One sentence for the step log: which Service and port were picked, and why.
    pub reason: String,
}

impl FalcoEndpoint {
    /// The first candidate's URL.
    pub fn url(&self) -> String {
        self.candidates
            .first()
            .map(Candidate::url)
            .unwrap_or_default()
    }
}

/// What the user said about Falco's Service; every field may be absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FalcoQuery {
    /// `--falco-namespace`: look only there.
    pub namespace: Option<String>,
    /// `--falco-service`: only a Service of this name.
    pub name: Option<String>,
    /// `--falco-via-nodeport`: only the nodePort candidate.
    pub via_node_port: bool,
}

#[cfg(feature = "client")]
impl Cluster {
    /// Finds Falco's audit endpoint. With both a namespace and a name, that one Service;
    /// otherwise every Service exposing 9765 or 8765 in the namespaces we may list (all of them,
    /// or `default` and `falco` when listing them all is forbidden), narrowed by the name or
    /// namespace given. Exactly one must remain: several are an error that lists them, because
    /// picking one would be a guess.
    pub async fn find_falco(&self, query: &FalcoQuery) -> Result<FalcoEndpoint, ClusterError> {
        if let (Some(namespace), Some(name)) = (&query.namespace, &query.name) {
            return self
                .falco_endpoint(namespace, name, query.via_node_port)
                .await;
        }
        let (services, searched) = self.list_services(query.namespace.as_deref()).await?;
        let mut found: Vec<&Service> = services
            .iter()
            .filter(|s| query.name.is_none() || s.metadata.name == query.name)
            .filter(|s| audit_port(s).is_some())
            .collect();
        // Falco's own labels first, so the list shows the likeliest ones on top.
        found.sort_by_key(|s| (!has_falco_labels(s), namespace_of(s), name_of(s)));
        // A Service named by the user but without the port: say what it exposes instead.
        if found.is_empty()
            && query.name.is_some()
            && let [named] = services
                .iter()
                .filter(|s| s.metadata.name == query.name)
                .collect::<Vec<_>>()
                .as_slice()
        {
            return endpoint_of(
                named,
                &namespace_of(named),
                &name_of(named),
                query.via_node_port,
            );
        }
        match found.as_slice() {
            [] => Err(ClusterError::NoFalcoService {
                searched: match &query.name {
                    Some(name) => format!("named {name} {searched}"),
                    None => searched,
                },
            }),
            [one] => endpoint_of(one, &namespace_of(one), &name_of(one), query.via_node_port).map(
                |mut endpoint| {
                    endpoint.reason = format!("found by discovery {searched}; {}", endpoint.reason);
                    endpoint
                },
            ),
            several => Err(ClusterError::SeveralFalcoServices {
                list: several
                    .iter()
                    .map(|s| format!("  {}", describe_service(s)))
                    .collect::<Vec<_>>()
                    .join("\n"),
            }),
        }
    }

    /// The Services of `namespace`, or of every namespace, falling back to
    /// [`FALLBACK_NAMESPACES`] when listing them all is forbidden. Also says where it looked.
    async fn list_services(
        &self,
        namespace: Option<&str>,
    ) -> Result<(Vec<Service>, String), ClusterError> {
        if let Some(namespace) = namespace {
            let api: Api<Service> = Api::namespaced(self.client.clone(), namespace);
            let list = api
                .list(&ListParams::default())
                .await
                .map_err(|e| self.error(format!("listing Services in namespace {namespace}"), e))?;
            return Ok((list.items, format!("in namespace {namespace}")));
        }
        let all: Api<Service> = Api::all(self.client.clone());
        match all.list(&ListParams::default()).await {
            Ok(list) => return Ok((list.items, "in every namespace".into())),
            Err(kube::Error::Api(status)) if status.code == 403 => {}
            Err(e) => return Err(self.error("listing Services in every namespace", e)),
        }
        let mut services = Vec::new();
        let mut allowed = Vec::new();
        let mut refusal = None;
        for namespace in FALLBACK_NAMESPACES {
            let api: Api<Service> = Api::namespaced(self.client.clone(), namespace);
            match api.list(&ListParams::default()).await {
                Ok(list) => {
                    services.extend(list.items);
                    allowed.push(namespace);
                }
                Err(kube::Error::Api(status)) if status.code == 403 => refusal = Some(status),
                Err(e) => {
                    return Err(self.error(format!("listing Services in namespace {namespace}"), e));
                }
            }
        }
        if allowed.is_empty()
            && let Some(status) = refusal
        {
            return Err(ClusterError::Unauthorized {
                action: format!(
                    "listing Services in every namespace, then in {}",
                    FALLBACK_NAMESPACES.join(" and ")
                ),
                code: status.code,
                message: status.message,
            });
        }
        Ok((
            services,
            format!(
                "in namespace {} (listing every namespace is forbidden)",
                allowed.join(" and ")
            ),
        ))
    }

    /// The endpoint of one named Service.
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

#[cfg(feature = "client")]
fn namespace_of(service: &Service) -> String {
    service.metadata.namespace.clone().unwrap_or_default()
}

#[cfg(feature = "client")]
fn name_of(service: &Service) -> String {
    service.metadata.name.clone().unwrap_or_default()
}

#[cfg(feature = "client")]
fn has_falco_labels(service: &Service) -> bool {
    service.metadata.labels.as_ref().is_some_and(|labels| {
        FALCO_LABELS
            .iter()
            .any(|(key, value)| labels.get(*key).map(String::as_str) == Some(*value))
    })
}

/// The Service port of the Falco flavour it exposes. The plugin port wins: a Service exposing
/// both is a Falco >= 0.32 that also kept the old port.
#[cfg(feature = "client")]
fn audit_port(service: &Service) -> Option<(FalcoFlavour, &ServicePort)> {
    let ports = service.spec.as_ref()?.ports.as_deref().unwrap_or_default();
    [FalcoFlavour::K8sAuditPlugin, FalcoFlavour::Webserver]
        .into_iter()
        .find_map(|flavour| {
            ports
                .iter()
                .find(|p| p.port == i32::from(flavour.port()))
                .map(|p| (flavour, p))
        })
}

/// `falco/falco-k8saudit-webhook (NodePort, ports 9765→30007/TCP, Falco labels)`.
#[cfg(feature = "client")]
fn describe_service(service: &Service) -> String {
    let spec = service.spec.as_ref();
    let kind = spec.and_then(|s| s.type_.as_deref()).unwrap_or("ClusterIP");
    let ports = spec
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let node_port = p.node_port.map(|n| format!("→{n}")).unwrap_or_default();
            let protocol = p.protocol.as_deref().unwrap_or("TCP");
            format!("{}{node_port}/{protocol}", p.port)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let labels = if has_falco_labels(service) {
        ", Falco labels"
    } else {
        ""
    };
    format!(
        "{}/{} ({kind}, ports {ports}{labels})",
        namespace_of(service),
        name_of(service)
    )
}

/// The pure half of discovery, separate so that every Service shape can be unit-tested.
#[cfg(feature = "client")]
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
    let (flavour, port) = audit_port(service).ok_or_else(|| ClusterError::NoAuditPort {
        namespace: namespace.to_string(),
        name: name.to_string(),
        ports: describe_ports(spec.ports.as_deref().unwrap_or_default()),
    })?;
    let why_flavour = match flavour {
        FalcoFlavour::K8sAuditPlugin => "port 9765 is the k8saudit plugin of Falco >= 0.32",
        FalcoFlavour::Webserver => "port 8765 is the classic Falco webserver",
    };
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    // LoadBalancer Services get nodePorts too.
    let node_port = port
        .node_port
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0 && matches!(kind, "NodePort" | "LoadBalancer"));
    let cluster_ip = spec
        .cluster_ip
        .clone()
        .filter(|ip| !ip.is_empty() && ip != "None");
    let mut candidates = Vec::new();
    if !via_node_port && let Some(ip) = &cluster_ip {
        candidates.push(Candidate {
            // A URL's IPv6 host goes in brackets (a dual-stack or IPv6-only cluster).
            host: if ip.contains(':') {
                format!("[{ip}]")
            } else {
                ip.clone()
            },
            port: flavour.port(),
            path: flavour.path().into(),
            why: format!("the ClusterIP of Service {namespace}/{name}"),
        });
    }
    if let Some(node_port) = node_port {
        candidates.push(Candidate {
            host: "127.0.0.1".into(),
            port: node_port,
            path: flavour.path().into(),
            why: format!(
                "nodePort {node_port} of Service {namespace}/{name} on the API server's host"
            ),
        });
    }
    if candidates.is_empty() {
        return Err(unusable(if via_node_port {
            if kind == "NodePort" || kind == "LoadBalancer" {
                format!("port {} has no nodePort", port.port)
            } else {
                format!("is of type {kind}, not NodePort, so --falco-via-nodeport cannot reach it")
            }
        } else {
            "has no ClusterIP (a headless Service cannot be an audit webhook target)".into()
        }));
    }
    let route = if via_node_port {
        "; its nodePort on 127.0.0.1 (--falco-via-nodeport)"
    } else if candidates.len() > 1 {
        "; its ClusterIP, then its nodePort on 127.0.0.1"
    } else {
        ""
    };
    Ok(FalcoEndpoint {
        namespace: namespace.to_string(),
        name: name.to_string(),
        flavour,
        candidates,
        reason: format!("Service {namespace}/{name}: {why_flavour}{route}"),
    })
}

#[cfg(feature = "client")]
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

#[cfg(all(test, feature = "client"))]
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

    /// The chart's k8saudit Service: the ClusterIP first, then the nodePort on loopback, so the
    /// reachability probe can fall back when the ClusterIP is not routable from the host.
    #[test]
    fn chart_service_gives_cluster_ip_then_node_port() {
        let svc = service(serde_json::json!({
            "metadata": {"name": "falco-k8saudit-webhook", "namespace": "falco",
                         "labels": {"app.kubernetes.io/name": "falco"}},
            "spec": {"type": "NodePort", "clusterIP": "10.96.7.8",
                     "ports": [{"port": 9765, "nodePort": 30007, "protocol": "TCP"}]}
        }));
        let ep = endpoint_of(&svc, "falco", "falco-k8saudit-webhook", false).unwrap();
        let urls: Vec<String> = ep.candidates.iter().map(Candidate::url).collect();
        assert_eq!(
            urls,
            [
                "http://10.96.7.8:9765/k8s-audit",
                "http://127.0.0.1:30007/k8s-audit"
            ]
        );
        assert_eq!(
            ep.reason,
            "Service falco/falco-k8saudit-webhook: port 9765 is the k8saudit plugin of Falco >= 0.32; its ClusterIP, then its nodePort on 127.0.0.1"
        );
        assert_eq!(
            describe_service(&svc),
            "falco/falco-k8saudit-webhook (NodePort, ports 9765→30007/TCP, Falco labels)"
        );
        let forced = endpoint_of(&svc, "falco", "falco-k8saudit-webhook", true).unwrap();
        assert_eq!(forced.candidates.len(), 1);
        assert_eq!(forced.url(), "http://127.0.0.1:30007/k8s-audit");
    }

    #[test]
    fn ipv6_cluster_ip_is_bracketed() {
        let svc = service(serde_json::json!({
            "spec": {"clusterIP": "fd00:10:96::a", "ports": [{"port": 9765}]}
        }));
        let ep = endpoint_of(&svc, "falco", "falco", false).unwrap();
        assert_eq!(ep.candidates[0].host, "[fd00:10:96::a]");
        assert_eq!(ep.url(), "http://[fd00:10:96::a]:9765/k8s-audit");
    }

    #[test]
    fn headless_node_port_service_still_has_its_node_port() {
        let svc = service(serde_json::json!({
            "spec": {"type": "LoadBalancer", "clusterIP": "None",
                     "ports": [{"port": 8765, "nodePort": 31000}]}
        }));
        let ep = endpoint_of(&svc, "d", "f", false).unwrap();
        assert_eq!(ep.url(), "http://127.0.0.1:31000/k8s_audit");
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
