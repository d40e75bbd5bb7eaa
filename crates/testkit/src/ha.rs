//! A kubeadm-shaped HA control plane on one host: n real kube-apiservers sharing one etcd and one
//! set of credentials, each on a node of its own: node`i` on 127.0.0.`i` (the whole of
//! 127.0.0.0/8 is loopback), with its own sandbox root and manifest, its own kubelet stand-in
//! talking to its own server, its own serving certificate (signed by the cluster's CA for the
//! node's address and 127.0.0.1) and its own sshd. Clients reach the servers through a TCP load
//! balancer on 127.0.0.1, which the certificates cover too, so nothing skips TLS verification.
//!
//! [`AvailabilityProbe`] watches every server's `/readyz` during a rollout and says how many
//! were ready at worst and how often each one went away.
//!
//! Each server takes ~340 MB and both cores while it starts: tests of one binary that start
//! clusters should hold [`crate::apiserver::exclusive`]. As in [`crate::sshd`] and
//! [`crate::pki`], a missing `openssl` or `sshd` panics with the reason; everything else is an
//! [`Error`].

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::apiserver::{self, ControlPlane, DEBIAN_VERSION, Endpoint, ServingCert};
use crate::kubelet::{Kubelet, KubeletOptions, KubeletState, config_hash, manifest_path};
use crate::sshd::{Sshd, SshdOptions};

/// How long [`HaCluster::start`] waits for every server and mirror pod: three servers start at
/// once on two cores.
pub const START_TIMEOUT: Duration = Duration::from_secs(240);
/// How often [`AvailabilityProbe`] samples every server.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// A `/readyz` that takes longer counts as not ready.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the load balancer tries one backend before the next.
const BACKEND_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

const FIXTURE: &str = include_str!("../../../fixtures/manifests/minikube-v1.28.yaml");
/// The fixture's node address and port, replaced by each node's own.
const FIXTURE_ADDRESS: &str = "192.168.49.2";
const FIXTURE_PORT: &str = "8443";
const FIXTURE_IMAGE_TAG: &str = "v1.28.3";

#[derive(thiserror::Error)]
pub enum Error {
    #[error("an HA cluster has 1 to 254 nodes (127.0.0.1 to 127.0.0.254), not {0}")]
    NodeCount(usize),
    #[error(transparent)]
    ControlPlane(#[from] apiserver::Error),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("the control plane was not up within {waited:?}:\n{nodes}")]
    NotUp { waited: Duration, nodes: String },
}

// Tests `unwrap()` these; the message (with the servers' log tails) is what helps.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Dropping it stops the load balancer, every node (sshd, kubelet and server), then etcd.
pub struct HaCluster {
    // Field order is drop order.
    balancer: LoadBalancer,
    nodes: Vec<HaNode>,
    plane: Arc<ControlPlane>,
    kubeconfig: PathBuf,
    ca: PathBuf,
    known_hosts: PathBuf,
    dir: TempDir,
}

pub struct HaNode {
    /// `node1`, `node2`, …
    pub name: String,
    /// 127.0.0.`i` for node`i`: its server, its sshd and the mirror pod's `status.hostIP`.
    pub address: Ipv4Addr,
    /// The sandbox node root (`--root`): the manifest is under `etc/kubernetes/manifests`.
    pub root: PathBuf,
    /// The server's secure port (the same on every node, as with kubeadm's 6443).
    pub port: u16,
    /// Listens on [`HaNode::address`] and the port every node's sshd shares; its known_hosts
    /// file names that address. Node 1's client key is authorized on every node.
    pub sshd: Sshd,
    kubelet: Kubelet,
    original_manifest: String,
}

impl HaCluster {
    /// Starts etcd, the shared credentials, a CA and `nodes` nodes named node1..nodeN on
    /// 127.0.0.1..127.0.0.N, each with a sandbox root holding a kubeadm-shaped manifest
    /// (`fixtures/manifests/minikube-v1.28.yaml` with the real binary's version and the node's
    /// own addresses and port), the kubelet stand-in watching it and an sshd on the node's
    /// address. The servers start at once. Returns when every server is ready, every Node is
    /// registered and every mirror pod published.
    pub fn start(nodes: usize) -> Result<HaCluster, Error> {
        if nodes == 0 || nodes > 254 {
            return Err(Error::NodeCount(nodes));
        }
        let plane = Arc::new(ControlPlane::start()?);
        let dir = tempfile::Builder::new()
            .prefix("ha-cluster-")
            .tempdir()
            .map_err(io_error("creating the cluster's temp dir"))?;
        let (ca, _) = crate::pki::certificate(dir.path(), "ca", None, "");
        let addresses: Vec<Ipv4Addr> = (1..=nodes as u8).map(node_address).collect();
        let port = common_free_port(&addresses, None)?;
        let ssh_port = common_free_port(&addresses, Some(port))?;
        let mut started: Vec<HaNode> = Vec::with_capacity(nodes);
        for (index, &address) in addresses.iter().enumerate() {
            let name = format!("node{}", index + 1);
            let ports = (port, ssh_port);
            started.push(start_node(&plane, dir.path(), &ca, name, address, ports)?);
        }
        // One key and one known_hosts file reach every node, as with a real fleet.
        let mut known_hosts = String::new();
        let shared_key = started[0].sshd.client_keys()[0].public.clone();
        for (index, node) in started.iter().enumerate() {
            if index > 0 {
                node.sshd.authorize(node.sshd.user(), &shared_key);
            }
            for line in node.sshd.known_hosts_lines() {
                known_hosts.push_str(&line);
                known_hosts.push('\n');
            }
        }
        let known_hosts_file = dir.path().join("known_hosts");
        std::fs::write(&known_hosts_file, known_hosts)
            .map_err(io_error(format!("writing {}", known_hosts_file.display())))?;
        let backends = addresses
            .iter()
            .map(|&a| SocketAddr::from((a, port)))
            .collect();
        let balancer = LoadBalancer::start(backends)?;
        let kubeconfig = dir.path().join("kubeconfig");
        plane.write_kubeconfig(&kubeconfig, &balancer.url(), Some(&ca))?;
        let cluster = HaCluster {
            balancer,
            nodes: started,
            plane,
            kubeconfig,
            ca,
            known_hosts: known_hosts_file,
            dir,
        };
        cluster.wait_up(START_TIMEOUT)?;
        Ok(cluster)
    }

    /// A kubeconfig whose server is the load balancer, verifying the servers' certificates with
    /// the cluster's CA, with the admin token.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn lb_url(&self) -> String {
        self.balancer.url()
    }

    pub fn nodes(&self) -> &[HaNode] {
        &self.nodes
    }

    /// The port every node's sshd listens on.
    pub fn ssh_port(&self) -> u16 {
        self.nodes[0].sshd.port()
    }

    /// A client key authorized for root on every node.
    pub fn client_key(&self) -> &Path {
        self.nodes[0].sshd.client_key()
    }

    /// Every node's host keys, as `[127.0.0.i]:port` lines.
    pub fn known_hosts(&self) -> &Path {
        &self.known_hosts
    }

    /// Every node's sandbox root with the node's name as `{node}`: `<cluster dir>/{node}/root`.
    pub fn root_template(&self) -> PathBuf {
        self.dir.path().join("{node}").join("root")
    }

    /// The command-line arguments that reach every node and the cluster, as the product's
    /// commands take them: root over the shared SSH port, key and known_hosts, each node's
    /// sandbox through `--root` with `{node}`, the load balancer's kubeconfig.
    pub fn access_args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> =
            ["--user", "root", "--port"].map(Into::into).to_vec();
        args.push(self.ssh_port().to_string().into());
        args.push("-i".into());
        args.push(self.client_key().into());
        args.push("--known-hosts".into());
        args.push(self.known_hosts().into());
        args.push("--root".into());
        args.push(self.root_template().into());
        args.push("--kubeconfig".into());
        args.push(self.kubeconfig().into());
        args
    }

    /// The CA that signed every server's certificate.
    pub fn ca(&self) -> &Path {
        &self.ca
    }

    /// etcd and the credentials every server shares.
    pub fn plane(&self) -> &ControlPlane {
        &self.plane
    }

    pub async fn client(&self) -> Result<kube::Client, Error> {
        Ok(ControlPlane::client_from(&self.kubeconfig).await?)
    }

    /// Waits until every node runs the manifest on disk: its server ready, its Node registered
    /// and its mirror pod carrying the manifest's hash. On time-out, the error has every node's
    /// state and log tail.
    pub fn wait_up(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let states: Vec<KubeletState> = self.nodes.iter().map(HaNode::state).collect();
            // The manifest on disk, not the one the kubelet last saw: right after a write it
            // may not have looked yet.
            let on_disk: Vec<Option<String>> = self
                .nodes
                .iter()
                .map(|n| {
                    std::fs::read(n.manifest_path())
                        .ok()
                        .map(|b| config_hash(&b))
                })
                .collect();
            if states
                .iter()
                .zip(&on_disk)
                .all(|(state, disk)| is_up(state) && state.manifest_hash == *disk)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                let nodes = self
                    .nodes
                    .iter()
                    .zip(&states)
                    .map(|(node, state)| {
                        format!(
                            "{} ({}): {state:?}\n{}\n",
                            node.name,
                            node.url(),
                            node.log_tail(20)
                        )
                    })
                    .collect();
                return Err(Error::NotUp {
                    waited: timeout,
                    nodes,
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn is_up(state: &KubeletState) -> bool {
    state.ready
        && state.node_registered
        && state.mirror_hash.is_some()
        && state.mirror_hash == state.manifest_hash
}

/// node`i`'s address: 127.0.0.`i`.
fn node_address(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, index)
}

/// One port free on every node's address (other than `taken`), as kubeadm gives each
/// control-plane node 6443 and each node listens for SSH on 22.
fn common_free_port(addresses: &[Ipv4Addr], taken: Option<u16>) -> Result<u16, Error> {
    let taken: Vec<u16> = taken.into_iter().collect();
    crate::ports::server_port(addresses, &taken)
        .map_err(io_error("picking a port free on every node"))
}

fn start_node(
    plane: &Arc<ControlPlane>,
    cluster_dir: &Path,
    ca: &Path,
    name: String,
    address: Ipv4Addr,
    (port, ssh_port): (u16, u16),
) -> Result<HaNode, Error> {
    let node_dir = cluster_dir.join(&name);
    let root = node_dir.join("root");
    let manifest = manifest_path(&root);
    let manifests_dir = manifest.parent().unwrap_or(&root);
    std::fs::create_dir_all(manifests_dir)
        .map_err(io_error(format!("creating {}", manifests_dir.display())))?;
    let original_manifest = node_manifest(address, port);
    std::fs::write(&manifest, &original_manifest)
        .map_err(io_error(format!("writing {}", manifest.display())))?;
    // pki names files relative to one directory, so the node's certificate sits beside the CA.
    let (cert, key) = crate::pki::certificate(
        cluster_dir,
        &format!("{name}-apiserver"),
        Some("ca"),
        &format!("subjectAltName=IP:{address},IP:127.0.0.1,DNS:{name}"),
    );
    let endpoint = Endpoint {
        address,
        port,
        advertise: true,
        tls: Some(ServingCert { cert, key }),
        log: node_dir.join("kube-apiserver.log"),
        kubeconfig: node_dir.join("kubeconfig"),
    };
    plane.write_kubeconfig(&endpoint.kubeconfig, &endpoint.url(), Some(ca))?;
    let sshd = Sshd::start_with(SshdOptions {
        listen_address: address,
        port: Some(ssh_port),
        ..SshdOptions::default()
    });
    let options = KubeletOptions {
        root: root.clone(),
        manifest,
        node_name: name.clone(),
    };
    let kubelet = Kubelet::start_on(Arc::clone(plane), options, endpoint)?;
    Ok(HaNode {
        name,
        address,
        root,
        port,
        sshd,
        kubelet,
        original_manifest,
    })
}

/// The kubeadm-shaped fixture for one node: the real binary's version, the node's own
/// advertise and bind address, secure port, probes and endpoint annotation.
pub fn node_manifest(address: Ipv4Addr, port: u16) -> String {
    let really = DEBIAN_VERSION
        .rsplit("really")
        .next()
        .unwrap_or(DEBIAN_VERSION);
    let address = address.to_string();
    FIXTURE
        .replace(FIXTURE_ADDRESS, &address)
        .replace(FIXTURE_PORT, &port.to_string())
        .replace(FIXTURE_IMAGE_TAG, &format!("v{really}"))
        .replacen(
            &format!("    - --advertise-address={address}\n"),
            &format!("    - --advertise-address={address}\n    - --bind-address={address}\n"),
            1,
        )
}

impl HaNode {
    pub fn state(&self) -> KubeletState {
        self.kubelet.state()
    }

    pub fn manifest_path(&self) -> PathBuf {
        manifest_path(&self.root)
    }

    /// The manifest as the cluster wrote it at start.
    pub fn original_manifest(&self) -> &str {
        &self.original_manifest
    }

    /// This node's server itself, not the load balancer.
    pub fn url(&self) -> String {
        format!("https://{}:{}", self.address, self.port)
    }

    /// A kubeconfig for this node's server alone (CA-verified, admin token).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubelet.endpoint().kubeconfig
    }

    /// `kube-apiserver-<name>`.
    pub fn mirror_pod_name(&self) -> String {
        self.kubelet.mirror_pod_name("kube-apiserver")
    }

    /// The last lines of this node's server log (every start, appended).
    pub fn log_tail(&self, lines: usize) -> String {
        self.kubelet.log_tail(lines)
    }

    pub fn kubelet(&self) -> &Kubelet {
        &self.kubelet
    }
}

/// A TCP load balancer on 127.0.0.1: each connection goes to the first backend that accepts,
/// trying them from an index that rotates per connection.
struct LoadBalancer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The piped connections, so that dropping the balancer cuts them.
    open: Arc<Mutex<HashMap<usize, TcpStream>>>,
}

impl LoadBalancer {
    fn start(backends: Vec<SocketAddr>) -> Result<LoadBalancer, Error> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(io_error("binding the load balancer"))?;
        let addr = listener
            .local_addr()
            .map_err(io_error("binding the load balancer"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(HashMap::new()));
        let accept = Accept {
            backends: Arc::new(backends),
            next: Arc::new(AtomicUsize::new(0)),
            ids: Arc::new(AtomicUsize::new(0)),
            open: Arc::clone(&open),
        };
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("ha-lb".into())
            .spawn(move || {
                for client in listener.incoming() {
                    if stopping.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Ok(client) = client {
                        let accept = accept.clone();
                        let _ = std::thread::Builder::new()
                            .name("ha-lb-conn".into())
                            .spawn(move || accept.serve(client));
                    }
                }
            })
            .map_err(io_error("starting the load balancer"))?;
        Ok(LoadBalancer {
            addr,
            stop,
            thread: Some(thread),
            open,
        })
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        for stream in lock(&self.open).values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

#[derive(Clone)]
struct Accept {
    backends: Arc<Vec<SocketAddr>>,
    next: Arc<AtomicUsize>,
    ids: Arc<AtomicUsize>,
    open: Arc<Mutex<HashMap<usize, TcpStream>>>,
}

impl Accept {
    fn serve(self, client: TcpStream) {
        let count = self.backends.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let server = (0..count).find_map(|k| {
            let backend = self.backends[(first + k) % count];
            TcpStream::connect_timeout(&backend, BACKEND_CONNECT_TIMEOUT).ok()
        });
        // No backend: dropping the client closes it, as an LB with no healthy backend does.
        let Some(server) = server else { return };
        let (Ok(client_reader), Ok(server_reader)) = (client.try_clone(), server.try_clone())
        else {
            return;
        };
        let (client_id, server_id) = (
            self.ids.fetch_add(1, Ordering::Relaxed),
            self.ids.fetch_add(1, Ordering::Relaxed),
        );
        {
            let mut open = lock(&self.open);
            if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
                open.insert(client_id, c);
                open.insert(server_id, s);
            }
        }
        let upstream = std::thread::Builder::new()
            .name("ha-lb-pipe".into())
            .spawn(move || pipe(client_reader, server));
        pipe(server_reader, client);
        if let Ok(upstream) = upstream {
            let _ = upstream.join();
        }
        let mut open = lock(&self.open);
        open.remove(&client_id);
        open.remove(&server_id);
    }
}

/// Copies until `from` ends, then passes the end on to `to`.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Samples every server's `/readyz` every [`PROBE_INTERVAL`] until stopped.
pub struct AvailabilityProbe {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Availability>>,
}

/// What an [`AvailabilityProbe`] saw.
#[derive(Debug, Clone, Default)]
pub struct Availability {
    pub samples: usize,
    /// The fewest servers ready in any one sample.
    pub min_ready: usize,
    /// In the cluster's node order.
    pub servers: Vec<ServerAvailability>,
    /// Every sample where some server was not ready: its time since the first sample, and
    /// which servers answered (in node order), to show where two were down together.
    pub degraded: Vec<(Duration, Vec<bool>)>,
}

#[derive(Debug, Clone, Default)]
pub struct ServerAvailability {
    pub name: String,
    /// Maximal runs of not-ready samples after the server was first seen ready.
    pub outages: u32,
    /// From the first not-ready sample of an outage to the sample that saw the server ready
    /// again (or to the last sample, when it never came back).
    pub longest_outage: Duration,
    /// The mirror pod's `kubernetes.io/config.hash` when the probe started and when it stopped.
    pub first_hash: Option<String>,
    pub last_hash: Option<String>,
}

impl Availability {
    pub fn server(&self, name: &str) -> Option<&ServerAvailability> {
        self.servers.iter().find(|s| s.name == name)
    }
}

struct ProbeTarget {
    name: String,
    mirror_pod: String,
    kubeconfig: PathBuf,
}

impl AvailabilityProbe {
    /// Reads every mirror pod's hash, then samples until [`AvailabilityProbe::stop`].
    pub fn start(cluster: &HaCluster) -> AvailabilityProbe {
        let targets: Vec<ProbeTarget> = cluster
            .nodes
            .iter()
            .map(|node| ProbeTarget {
                name: node.name.clone(),
                mirror_pod: node.mirror_pod_name(),
                kubeconfig: node.kubeconfig().to_owned(),
            })
            .collect();
        let balancer = cluster.kubeconfig.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ha-probe".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let Ok(runtime) = runtime else {
                    let _ = started_tx.send(());
                    return Availability::default();
                };
                runtime.block_on(probe(targets, balancer, stopping, started_tx))
            })
            .expect("spawning the availability probe's thread");
        // The first hashes are read before the caller changes anything.
        let _ = started_rx.recv();
        AvailabilityProbe {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling, reads every mirror pod's hash again and sums up.
    pub fn stop(mut self) -> Availability {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(availability)) => availability,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => Availability::default(),
        }
    }
}

impl Drop for AvailabilityProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One sample: when, and which servers answered `/readyz` with `ok`.
type Sample = (Instant, Vec<bool>);

async fn probe(
    targets: Vec<ProbeTarget>,
    balancer: PathBuf,
    stop: Arc<AtomicBool>,
    started: std::sync::mpsc::Sender<()>,
) -> Availability {
    let lb = ControlPlane::client_from(&balancer).await.ok();
    let mut clients = Vec::with_capacity(targets.len());
    for target in &targets {
        clients.push(ControlPlane::client_from(&target.kubeconfig).await.ok());
    }
    let first_hashes = mirror_hashes(lb.as_ref(), &targets).await;

    let mut samples: Vec<Sample> = Vec::new();
    let mut ticks = tokio::time::interval(PROBE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        samples.push(sample(&clients).await);
        // The caller changes nothing before the first sample, so it shows the servers as they
        // were: a server down from the start is never seen ready and has no outage.
        if samples.len() == 1 {
            let _ = started.send(());
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }
    let last_hashes = mirror_hashes(lb.as_ref(), &targets).await;
    let names: Vec<String> = targets.into_iter().map(|t| t.name).collect();
    let mut availability = summarize(&names, &samples);
    for ((server, first), last) in availability
        .servers
        .iter_mut()
        .zip(first_hashes)
        .zip(last_hashes)
    {
        server.first_hash = first;
        server.last_hash = last;
    }
    availability
}

/// Every server's `/readyz` at once, so that one that hangs delays the sample, not the others.
async fn sample(clients: &[Option<kube::Client>]) -> Sample {
    let at = Instant::now();
    let mut probes = tokio::task::JoinSet::new();
    for (index, client) in clients.iter().enumerate() {
        let client = client.clone();
        probes.spawn(async move {
            let ready = match client {
                Some(client) => ready_within(&client, PROBE_TIMEOUT).await,
                None => false,
            };
            (index, ready)
        });
    }
    let mut ready = vec![false; clients.len()];
    while let Some(result) = probes.join_next().await {
        if let Ok((index, up)) = result {
            ready[index] = up;
        }
    }
    (at, ready)
}

async fn ready_within(client: &kube::Client, timeout: Duration) -> bool {
    let Ok(request) = http::Request::get("/readyz").body(Vec::new()) else {
        return false;
    };
    matches!(
        tokio::time::timeout(timeout, client.request_text(request)).await,
        Ok(Ok(body)) if body.trim() == "ok"
    )
}

/// Every mirror pod's config hash, through the load balancer. A server that is down is skipped
/// by the balancer, so a few tries ride out one that accepted and then failed.
async fn mirror_hashes(lb: Option<&kube::Client>, targets: &[ProbeTarget]) -> Vec<Option<String>> {
    let mut hashes = Vec::with_capacity(targets.len());
    for target in targets {
        let mut hash = None;
        if let Some(lb) = lb {
            for _ in 0..10 {
                hash = mirror_hash(lb, &target.mirror_pod).await;
                if hash.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        hashes.push(hash);
    }
    hashes
}

async fn mirror_hash(client: &kube::Client, pod: &str) -> Option<String> {
    let request = http::Request::get(format!("/api/v1/namespaces/kube-system/pods/{pod}"))
        .body(Vec::new())
        .ok()?;
    let text = tokio::time::timeout(Duration::from_secs(5), client.request_text(request))
        .await
        .ok()?
        .ok()?;
    let pod: serde_json::Value = serde_json::from_str(&text).ok()?;
    pod["metadata"]["annotations"]["kubernetes.io/config.hash"]
        .as_str()
        .map(str::to_owned)
}

/// Counts outages per server and the fewest servers ready in any sample.
fn summarize(names: &[String], samples: &[Sample]) -> Availability {
    let servers = names
        .iter()
        .enumerate()
        .map(|(index, name)| {
            let mut outages = 0;
            let mut longest = Duration::ZERO;
            let mut seen_ready = false;
            let mut down_since: Option<Instant> = None;
            for (at, ready) in samples {
                let up = ready.get(index).copied().unwrap_or(false);
                match (up, down_since) {
                    (true, Some(since)) => {
                        longest = longest.max(at.duration_since(since));
                        down_since = None;
                    }
                    (false, None) if seen_ready => {
                        outages += 1;
                        down_since = Some(*at);
                    }
                    _ => {}
                }
                seen_ready |= up;
            }
            if let (Some(since), Some((last, _))) = (down_since, samples.last()) {
                longest = longest.max(last.duration_since(since));
            }
            ServerAvailability {
                name: name.clone(),
                outages,
                longest_outage: longest,
                first_hash: None,
                last_hash: None,
            }
        })
        .collect();
    let min_ready = samples
        .iter()
        .map(|(_, ready)| ready.iter().filter(|&&up| up).count())
        .min()
        .unwrap_or(0);
    let degraded = match samples.first() {
        Some((first, _)) => samples
            .iter()
            .filter(|(_, ready)| ready.iter().any(|up| !up))
            .map(|(at, ready)| (at.duration_since(*first), ready.clone()))
            .collect(),
        None => Vec::new(),
    };
    Availability {
        samples: samples.len(),
        min_ready,
        servers,
        degraded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(rows: &[&[bool]]) -> Vec<Sample> {
        let start = Instant::now();
        rows.iter()
            .enumerate()
            .map(|(i, row)| (start + PROBE_INTERVAL * i as u32, row.to_vec()))
            .collect()
    }

    #[test]
    fn outages_count_runs_after_the_first_ready_sample() {
        let names = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let seen = samples(&[
            &[false, true, true],
            &[true, true, true],
            &[true, false, true],
            &[true, false, true],
            &[true, false, true],
            &[true, true, true],
            &[true, true, false],
            &[true, true, true],
            &[true, true, false],
        ]);
        let availability = summarize(&names, &seen);
        assert_eq!(availability.samples, 9);
        assert_eq!(availability.min_ready, 2);
        let outages: Vec<u32> = availability.servers.iter().map(|s| s.outages).collect();
        assert_eq!(outages, [0, 1, 2], "a's not-ready start is no outage");
        assert_eq!(availability.servers[1].longest_outage, PROBE_INTERVAL * 3);
        // c's first outage lasted one interval; its last, still open at the end, none yet.
        assert_eq!(availability.servers[2].longest_outage, PROBE_INTERVAL);
        assert_eq!(availability.server("b").map(|s| s.outages), Some(1));
    }

    #[test]
    fn no_samples_is_no_availability() {
        let availability = summarize(&["a".to_owned()], &[]);
        assert_eq!((availability.samples, availability.min_ready), (0, 0));
        assert_eq!(availability.servers[0].outages, 0);
    }

    #[test]
    fn the_manifest_is_the_nodes_own() {
        let text = node_manifest(Ipv4Addr::new(127, 0, 0, 2), 16443);
        for line in [
            "    - --advertise-address=127.0.0.2\n    - --bind-address=127.0.0.2\n",
            "    - --secure-port=16443\n",
            "    image: registry.k8s.io/kube-apiserver:v1.20.2\n",
            "kube-apiserver.advertise-address.endpoint: 127.0.0.2:16443\n",
            "        host: 127.0.0.2\n",
            "        port: 16443\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        assert!(!text.contains(FIXTURE_ADDRESS) && !text.contains(FIXTURE_PORT));
        let pod = crate::kubelet::parse(text.as_bytes(), Path::new("/r")).expect("a pod");
        assert!(pod.audit_flags.is_empty(), "{:?}", pod.audit_flags);
    }

    #[test]
    fn the_balancer_skips_a_backend_that_refuses() {
        use std::io::{Read, Write};
        // A port nobody listens on: bound, then closed.
        let refused = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let backend = TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2");
        let backend_addr = backend.local_addr().expect("backend addr");
        std::thread::spawn(move || {
            for stream in backend.incoming().flatten() {
                let mut stream = stream;
                let mut byte = [0u8; 1];
                while stream.read_exact(&mut byte).is_ok() {
                    let _ = stream.write_all(&[byte[0] + 1]);
                }
            }
        });
        let balancer = LoadBalancer::start(vec![refused, backend_addr]).expect("balancer");
        // Two connections: one starts at the refusing backend, one at the listening one.
        for _ in 0..2 {
            let mut stream = TcpStream::connect(balancer.addr).expect("connect");
            stream.write_all(b"a").expect("write");
            let mut answer = [0u8; 1];
            stream.read_exact(&mut answer).expect("an answer");
            assert_eq!(&answer, b"b");
        }
        drop(balancer);
    }
}
