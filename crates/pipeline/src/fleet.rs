//! Which control-plane nodes a run acts on. A cluster with three API servers needs all three
//! audited: with a kubeconfig the nodes come from the kube-apiserver mirror pods, otherwise
//! from the repeatable `--host`; `--node` narrows the run, loudly.

use std::net::ToSocketAddrs;
use std::path::PathBuf;

use cluster::{ApiServerPod, ControlPlaneNodes};

use crate::error::{PipelineError, Result, bail};
use crate::target::{TargetArgs, Variant};

/// One control-plane node of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTarget {
    /// The node's name in the cluster, or its `--host` value without one.
    pub name: String,
    /// What to connect to over SSH; `None` for the local variant, and for minikube, which
    /// says itself how to reach each of its nodes.
    pub host: Option<String>,
    /// `--root` with `{node}` replaced by the name.
    pub root: Option<PathBuf>,
    /// The node's own API server, from its mirror pod (host IP and --secure-port).
    pub api: Option<ApiEndpoint>,
    /// Whether a mirror pod `kube-apiserver-<name>` stands for this node in the cluster.
    pub in_cluster: bool,
}

impl NodeTarget {
    /// What a step line adds for this node: nothing on a single node, so that its output
    /// stays as it was.
    pub fn step_label(&self, multi: bool) -> String {
        match multi {
            true => format!(" {}", self.name),
            false => String::new(),
        }
    }
}

/// Where one node's API server listens, as seen from the node itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiEndpoint {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for ApiEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host.contains(':') {
            true => write!(f, "[{}]:{}", self.host, self.port),
            false => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// The nodes of a run in the order it changes them, and what the user must hear about the
/// ones it leaves alone.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    pub nodes: Vec<NodeTarget>,
    pub warnings: Vec<String>,
}

impl Fleet {
    pub fn names(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The placeholder `--root` may hold for a sandbox per node.
const NODE_PLACEHOLDER: &str = "{node}";

/// Resolves the nodes from the arguments and, when there is one, the cluster's control plane.
/// `server` is the kubeconfig's server URL: the node behind it goes last, so that the run keeps
/// its own API access as long as it can.
pub fn resolve(
    target: &TargetArgs,
    only: &[String],
    control_plane: Option<&ControlPlaneNodes>,
    server: Option<&str>,
) -> Result<Fleet> {
    let mut fleet = match control_plane {
        Some(plane) => from_cluster(target, only, plane)?,
        None => from_hosts(target, only)?,
    };
    order(&mut fleet.nodes, server);
    Ok(fleet)
}

fn root_for(target: &TargetArgs, name: &str) -> Option<PathBuf> {
    let root = target.node.root.as_ref()?;
    let text = root.to_string_lossy();
    Some(match text.contains(NODE_PLACEHOLDER) {
        true => PathBuf::from(text.replace(NODE_PLACEHOLDER, name)),
        false => root.clone(),
    })
}

fn per_node_root(target: &TargetArgs) -> bool {
    target
        .node
        .root
        .as_ref()
        .is_some_and(|r| r.to_string_lossy().contains(NODE_PLACEHOLDER))
}

/// The `--host` values, each once, in the order given.
fn hosts(target: &TargetArgs) -> Vec<String> {
    let mut hosts: Vec<String> = Vec::new();
    for host in &target.node.host {
        if !hosts.contains(host) {
            hosts.push(host.clone());
        }
    }
    hosts
}

fn apiserver_host_env() -> Option<String> {
    std::env::var("APISERVER_HOST")
        .ok()
        .filter(|h| !h.trim().is_empty())
}

fn check_only(only: &[String], known: &[&str]) -> Result<()> {
    if let Some(unknown) = only.iter().find(|n| !known.contains(&n.as_str())) {
        bail!(
            "--node {unknown}: no such control-plane node (known: {})",
            known.join(", ")
        );
    }
    Ok(())
}

fn left_out_warning(left: &[&str]) -> Option<String> {
    (!left.is_empty()).then(|| {
        format!(
            "--node leaves {} alone: their API servers stay UNAUDITED, and requests the load balancer sends them leave no audit trail",
            left.join(", ")
        )
    })
}

fn from_cluster(target: &TargetArgs, only: &[String], plane: &ControlPlaneNodes) -> Result<Fleet> {
    let known: Vec<&str> = plane
        .apiservers
        .iter()
        .map(|p| p.node_name.as_str())
        .collect();
    if plane.apiservers.is_empty() {
        bail!(
            "the cluster shows no kube-apiserver mirror pod in kube-system (labels component=kube-apiserver or k8s-app=kube-apiserver), so it is not clear which nodes run an API server"
        );
    }
    check_only(only, &known)?;
    let mut warnings: Vec<String> = plane
        .labelled_without_pod
        .iter()
        .map(|node| {
            format!(
                "node {node} is labelled control-plane but runs no kube-apiserver mirror pod: it is not changed"
            )
        })
        .collect();
    let chosen: Vec<&ApiServerPod> = plane
        .apiservers
        .iter()
        .filter(|p| only.is_empty() || only.contains(&p.node_name))
        .collect();
    let left: Vec<&str> = plane
        .apiservers
        .iter()
        .filter(|p| !only.is_empty() && !only.contains(&p.node_name))
        .map(|p| p.node_name.as_str())
        .collect();
    warnings.extend(left_out_warning(&left));
    let hosts = hosts(target);
    if target.variant == Variant::Local && !per_node_root(target) {
        // This machine is one node; the others are not reachable from here.
        let [pod] = chosen.as_slice() else {
            bail!(
                "the cluster has {} control-plane nodes ({}) and the local variant changes only this machine: pass --node with this machine's node name (the others stay unaudited), or use the ssh variant to change them all",
                chosen.len(),
                known.join(", ")
            );
        };
        let mut nodes = vec![node_of(target, pod, None)];
        nodes[0].root = target.node.root.clone();
        return Ok(Fleet { nodes, warnings });
    }
    if hosts.is_empty() {
        let nodes = chosen
            .iter()
            .map(|pod| {
                let host = match target.variant {
                    Variant::Ssh | Variant::Kops => Some(pod.host_ip.clone().ok_or_else(|| {
                        PipelineError::failed(format!(
                            "the mirror pod {} shows no host IP to connect to: pass --host for each control-plane node",
                            pod.pod_name
                        ))
                    })?),
                    Variant::Minikube | Variant::Local => None,
                };
                Ok(node_of(target, pod, host))
            })
            .collect::<Result<_>>()?;
        return Ok(Fleet { nodes, warnings });
    }
    // One host and one API server: the same machine, however the host is spelt (an ssh_config
    // alias, a forwarded port on 127.0.0.1); unless the host names another node.
    if let ([host], [pod]) = (hosts.as_slice(), chosen.as_slice())
        && !plane
            .apiservers
            .iter()
            .any(|other| other.node_name != pod.node_name && host_matches(target, host, other))
    {
        let nodes = vec![node_of(target, pod, Some(host.clone()))];
        return Ok(Fleet { nodes, warnings });
    }
    let mut nodes = Vec::new();
    let mut unmatched = Vec::new();
    for host in &hosts {
        match chosen.iter().find(|pod| host_matches(target, host, pod)) {
            Some(pod) => nodes.push(node_of(target, pod, Some(host.clone()))),
            None => unmatched.push(host.as_str()),
        }
    }
    if !unmatched.is_empty() {
        bail!(
            "--host {} matches no control-plane node by name or host IP (the nodes: {})",
            unmatched.join(", --host "),
            describe_pods(&chosen)
        );
    }
    let without: Vec<&str> = chosen
        .iter()
        .filter(|pod| !nodes.iter().any(|n: &NodeTarget| n.name == pod.node_name))
        .map(|pod| pod.node_name.as_str())
        .collect();
    if !without.is_empty() {
        bail!(
            "no --host reaches {}: pass --host for every control-plane node, or --node to choose the ones to change (the others then stay unaudited)",
            without.join(", ")
        );
    }
    Ok(Fleet { nodes, warnings })
}

fn describe_pods(pods: &[&ApiServerPod]) -> String {
    pods.iter()
        .map(|p| match &p.host_ip {
            Some(ip) => format!("{} at {ip}", p.node_name),
            None => p.node_name.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A `--host` names a node by its name, by its host IP, or by a name that resolves to it
/// (after ~/.ssh/config's HostName).
fn host_matches(target: &TargetArgs, host: &str, pod: &ApiServerPod) -> bool {
    if host == pod.node_name || Some(host) == pod.host_ip.as_deref() {
        return true;
    }
    let Some(ip) = pod.host_ip.as_deref() else {
        return false;
    };
    let real = ship::host_name(host, target.node.ssh_config.as_deref())
        .unwrap_or_else(|_| host.to_string());
    if real == ip || real == pod.node_name {
        return true;
    }
    (real.as_str(), 0)
        .to_socket_addrs()
        .map(|mut addrs| addrs.any(|a| a.ip().to_string() == ip))
        .unwrap_or(false)
}

fn node_of(target: &TargetArgs, pod: &ApiServerPod, host: Option<String>) -> NodeTarget {
    NodeTarget {
        name: pod.node_name.clone(),
        host,
        root: root_for(target, &pod.node_name),
        api: pod.host_ip.clone().map(|host| ApiEndpoint {
            host,
            port: pod.secure_port,
        }),
        in_cluster: true,
    }
}

fn from_hosts(target: &TargetArgs, only: &[String]) -> Result<Fleet> {
    let mut hosts = hosts(target);
    match target.variant {
        Variant::Local => {
            return Ok(Fleet {
                nodes: vec![NodeTarget {
                    name: only
                        .first()
                        .cloned()
                        .unwrap_or_else(|| "this machine".into()),
                    host: None,
                    root: target.node.root.clone(),
                    api: None,
                    in_cluster: !only.is_empty(),
                }],
                warnings: Vec::new(),
            });
        }
        Variant::Ssh if hosts.is_empty() => {
            bail!(
                "the ssh variant needs --host (a name from ~/.ssh/config works); repeat it for every control-plane node"
            )
        }
        Variant::Kops if hosts.is_empty() => match apiserver_host_env() {
            // Without the cluster nothing says how many masters stand behind it.
            Some(host) if only.is_empty() => bail!(
                "kops without a kubeconfig needs every control-plane node as --host (--host m1 --host m2 --host m3): APISERVER_HOST={host} is usually the load balancer, not a node. With a single master, pass --host {host}; or pass --kubeconfig so the nodes come from the cluster"
            ),
            Some(host) => hosts.push(host),
            None => bail!(
                "you must specify the kops control-plane nodes: pass --host for each (or set APISERVER_HOST for a single master, with --node), or pass --kubeconfig so they come from the cluster"
            ),
        },
        Variant::Minikube if hosts.is_empty() => {
            return Ok(Fleet {
                nodes: vec![NodeTarget {
                    name: only
                        .first()
                        .cloned()
                        .unwrap_or_else(|| target.node.profile.clone()),
                    host: None,
                    root: root_for(target, only.first().unwrap_or(&target.node.profile)),
                    api: None,
                    in_cluster: false,
                }],
                warnings: Vec::new(),
            });
        }
        _ => {}
    }
    let known: Vec<&str> = hosts.iter().map(String::as_str).collect();
    check_only(only, &known)?;
    let left: Vec<&str> = known
        .iter()
        .copied()
        .filter(|h| !only.is_empty() && !only.iter().any(|o| o == h))
        .collect();
    let warnings = left_out_warning(&left).into_iter().collect();
    let nodes = hosts
        .iter()
        .filter(|h| only.is_empty() || only.contains(h))
        .map(|host| NodeTarget {
            name: host.clone(),
            host: Some(host.clone()),
            root: root_for(target, host),
            api: None,
            in_cluster: false,
        })
        .collect();
    Ok(Fleet { nodes, warnings })
}

/// By name, except that the node serving the kubeconfig's address goes last.
fn order(nodes: &mut [NodeTarget], server: Option<&str>) {
    let serving = server.and_then(server_endpoint);
    nodes.sort_by(|a, b| {
        let last = |n: &NodeTarget| serving.is_some() && n.api == serving;
        (last(a), &a.name).cmp(&(last(b), &b.name))
    });
}

/// The host and port of a kubeconfig's `https://host[:port]` server.
fn server_endpoint(server: &str) -> Option<ApiEndpoint> {
    let rest = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))?;
    let authority = rest.split('/').next()?;
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => 443,
    };
    Some(ApiEndpoint {
        host: host.to_string(),
        port,
    })
}

#[cfg(test)]
mod tests;
