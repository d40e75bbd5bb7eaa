//! A kubelet stand-in for one static pod: the real kube-apiserver, driven by a manifest file in
//! a sandbox node root.
//!
//! Like a kubelet it watches the manifest, restarts the server when the manifest changes, keeps
//! restarting it (with backoff) when it crashes, and publishes the mirror pod
//! `<namespace>/<name>-<node>` with `kubernetes.io/config.hash` and `kubernetes.io/config.mirror`
//! annotations, so that a pipeline waiting the way `kubeadm upgrade` does sees what a real node
//! would show, `spec.nodeName` and `status.hostIP` included. The server runs with the harness's
//! base flags plus only the manifest's audit-related flags, their paths mapped into the sandbox
//! through the pod's own volumes. Several stand-ins can share one control plane
//! ([`Kubelet::start_on`], used by [`crate::ha`]): each runs its server at an endpoint of its
//! own and registers its Node.

mod manifest;

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use manifest::{CONTAINER_FS, ManifestError, StaticPod, parse};

use crate::apiserver::{ControlPlane, Endpoint, Error, Process};

/// How often the manifest, the process and readiness are looked at.
const TICK: Duration = Duration::from_millis(200);
/// A real kubelet starts at 10 s and doubles up to 5 min; tests cannot wait that long.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// SIGTERM grace before SIGKILL when the manifest changes.
const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct KubeletOptions {
    /// The sandbox's node root: hostPath `/x` is `<root>/x`.
    pub root: PathBuf,
    /// The manifest file to watch, usually under `<root>/etc/kubernetes/manifests/`.
    pub manifest: PathBuf,
    pub node_name: String,
}

/// What the stand-in is doing, for assertions.
#[derive(Debug, Clone, Default)]
pub struct KubeletState {
    /// `config.hash` of the manifest the current process was started from.
    pub manifest_hash: Option<String>,
    /// The manifest's audit flags given to the current process, paths mapped.
    pub flags: Vec<String>,
    /// Every process start, whatever the reason.
    pub starts: u32,
    /// Starts after the process exited on its own.
    pub crash_restarts: u32,
    pub last_exit: Option<ExitStatus>,
    pub running: bool,
    pub ready: bool,
    /// `config.hash` of the mirror pod as last published.
    pub mirror_hash: Option<String>,
    /// The last manifest or mirror-pod problem, if any.
    pub error: Option<String>,
    /// The Node object exists (only a kubelet started with [`Kubelet::start_on`] registers one).
    pub node_registered: bool,
}

/// Runs until dropped; dropping it stops the API server, then etcd.
pub struct Kubelet {
    state: Arc<Mutex<KubeletState>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    plane: Arc<ControlPlane>,
    options: KubeletOptions,
    endpoint: Endpoint,
}

impl Kubelet {
    /// Starts watching `options.manifest` (which may appear later) on a thread of its own; the
    /// server runs at the control plane's own endpoint.
    pub fn start(plane: ControlPlane, options: KubeletOptions) -> Result<Kubelet, Error> {
        let endpoint = plane.endpoint();
        Kubelet::spawn(Arc::new(plane), options, endpoint, false)
    }

    /// One control-plane node of several sharing `plane`: its server runs at `endpoint`, and the
    /// stand-in talks to that server alone, as a kubeadm control-plane kubelet does, registering
    /// its Node (labelled `node-role.kubernetes.io/control-plane`) before the mirror pod.
    pub fn start_on(
        plane: Arc<ControlPlane>,
        options: KubeletOptions,
        endpoint: Endpoint,
    ) -> Result<Kubelet, Error> {
        Kubelet::spawn(plane, options, endpoint, true)
    }

    fn spawn(
        plane: Arc<ControlPlane>,
        options: KubeletOptions,
        endpoint: Endpoint,
        register_node: bool,
    ) -> Result<Kubelet, Error> {
        let state = Arc::new(Mutex::new(KubeletState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| Error::Io {
                what: "starting the kubelet's runtime".into(),
                source,
            })?;
        let worker = Worker {
            plane: Arc::clone(&plane),
            options: options.clone(),
            endpoint: endpoint.clone(),
            register_node,
            state: Arc::clone(&state),
            stop: Arc::clone(&stop),
            process: None,
            pod: None,
            backoff: FIRST_BACKOFF,
            restart_at: None,
        };
        let thread = std::thread::Builder::new()
            .name("kubelet".into())
            .spawn(move || runtime.block_on(worker.run()))
            .map_err(|source| Error::Io {
                what: "starting the kubelet thread".into(),
                source,
            })?;
        Ok(Kubelet {
            state,
            stop,
            thread: Some(thread),
            plane,
            options,
            endpoint,
        })
    }

    pub fn state(&self) -> KubeletState {
        lock(&self.state).clone()
    }

    pub fn plane(&self) -> &ControlPlane {
        &self.plane
    }

    pub fn options(&self) -> &KubeletOptions {
        &self.options
    }

    /// Where this kubelet's server serves and logs.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// `kube-apiserver-<node>` for a manifest named `kube-apiserver`.
    pub fn mirror_pod_name(&self, pod_name: &str) -> String {
        format!("{pod_name}-{}", self.options.node_name)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        crate::apiserver::tail(&self.endpoint.log, lines)
    }

    /// Polls the state until `done` holds.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&KubeletState) -> bool,
    ) -> Result<KubeletState, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.state();
            if done(&state) {
                return Ok(state);
            }
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    waited: timeout,
                    log: format!("kubelet state: {state:?}\n{}", self.log_tail(30)),
                });
            }
            tokio::time::sleep(TICK / 2).await;
        }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock(state: &Mutex<KubeletState>) -> std::sync::MutexGuard<'_, KubeletState> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The config.hash a kubelet would put on the mirror pod: here FNV-1a of the manifest bytes,
/// which changes whenever the manifest does.
pub fn config_hash(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

struct Worker {
    plane: Arc<ControlPlane>,
    options: KubeletOptions,
    endpoint: Endpoint,
    register_node: bool,
    state: Arc<Mutex<KubeletState>>,
    stop: Arc<AtomicBool>,
    process: Option<Process>,
    /// The pod the kubelet wants running, with its hash.
    pod: Option<(StaticPod, String)>,
    backoff: Duration,
    restart_at: Option<Instant>,
}

impl Worker {
    async fn run(mut self) {
        let client = loop {
            match ControlPlane::client_from(&self.endpoint.kubeconfig).await {
                Ok(client) => break client,
                Err(e) => self.update(|s| s.error = Some(e.to_string())),
            }
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            tokio::time::sleep(TICK).await;
        };
        while !self.stop.load(Ordering::Relaxed) {
            self.sync_manifest();
            self.reap_and_restart();
            self.probe_and_mirror(&client).await;
            tokio::time::sleep(TICK).await;
        }
        if let Some(mut process) = self.process.take() {
            process.stop(STOP_GRACE);
        }
    }

    fn update(&self, change: impl FnOnce(&mut KubeletState)) {
        change(&mut lock(&self.state));
    }

    /// A changed manifest means: stop the old server, start one with the new flags.
    fn sync_manifest(&mut self) {
        let bytes = std::fs::read(&self.options.manifest).ok();
        let hash = bytes.as_deref().map(config_hash);
        if hash.as_ref() == self.pod.as_ref().map(|(_, h)| h) {
            return;
        }
        if let Some(mut process) = self.process.take() {
            let status = process.stop(STOP_GRACE);
            self.update(|s| {
                s.last_exit = status;
                s.running = false;
                s.ready = false;
            });
        }
        self.backoff = FIRST_BACKOFF;
        self.pod = None;
        let (Some(bytes), Some(hash)) = (bytes, hash) else {
            // A removed manifest removes the pod, as on a real node.
            self.update(|s| s.manifest_hash = None);
            return;
        };
        match parse(&bytes, &self.options.root) {
            Ok(pod) => {
                self.pod = Some((pod, hash));
                self.start(false);
            }
            Err(e) => self.update(|s| {
                s.error = Some(format!("{}: {e}", self.options.manifest.display()));
                s.manifest_hash = None;
            }),
        }
    }

    fn start(&mut self, after_crash: bool) {
        let Some((pod, hash)) = &self.pod else { return };
        for dir in &pod.create_dirs {
            if let Err(e) = create_host_dir(dir) {
                let error = format!("hostPath {}: {e}", dir.display());
                self.update(|s| s.error = Some(error));
                return;
            }
        }
        match self.plane.spawn_at(&self.endpoint, &pod.audit_flags) {
            Ok(process) => {
                self.process = Some(process);
                self.restart_at = None;
                let (flags, hash) = (pod.audit_flags.clone(), hash.clone());
                self.update(|s| {
                    s.starts += 1;
                    s.crash_restarts += u32::from(after_crash);
                    s.running = true;
                    s.ready = false;
                    s.flags = flags;
                    s.manifest_hash = Some(hash);
                });
            }
            Err(e) => self.update(|s| s.error = Some(e.to_string())),
        }
    }

    /// A server that exited on its own is started again after a growing pause.
    fn reap_and_restart(&mut self) {
        if let Some(status) = self.process.as_mut().and_then(Process::exited) {
            self.process = None;
            self.restart_at = Some(Instant::now() + self.backoff);
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            self.update(|s| {
                s.last_exit = Some(status);
                s.running = false;
                s.ready = false;
            });
        }
        if self.process.is_none() && self.restart_at.is_some_and(|at| Instant::now() >= at) {
            self.start(true);
        }
    }

    async fn probe_and_mirror(&mut self, client: &kube::Client) {
        let Some((pod, hash)) = &self.pod else { return };
        let state = lock(&self.state).clone();
        if !state.running {
            return;
        }
        if !state.ready {
            if !ControlPlane::is_ready(client).await {
                return;
            }
            self.backoff = FIRST_BACKOFF;
            self.update(|s| s.ready = true);
        }
        if self.register_node && !state.node_registered {
            match register_node(client, &self.options.node_name, &self.endpoint).await {
                Ok(()) => self.update(|s| s.node_registered = true),
                Err(e) => return self.update(|s| s.error = Some(format!("node: {e}"))),
            }
        }
        if state.mirror_hash.as_ref() == Some(hash) {
            return;
        }
        let node = (self.options.node_name.as_str(), self.endpoint.address);
        match publish_mirror(client, pod, hash, node).await {
            Ok(()) => {
                let hash = hash.clone();
                self.update(|s| {
                    s.mirror_hash = Some(hash);
                    s.error = None;
                });
            }
            Err(e) => self.update(|s| s.error = Some(format!("mirror pod: {e}"))),
        }
    }
}

/// The Node a kubelet registers: a kubeadm control-plane node's label and its address.
async fn register_node(
    client: &kube::Client,
    name: &str,
    endpoint: &Endpoint,
) -> Result<(), String> {
    let node = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "node-role.kubernetes.io/control-plane": "",
            },
        },
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": endpoint.address.to_string()},
                {"type": "Hostname", "address": name},
            ],
        },
    });
    let body = serde_json::to_vec(&node).map_err(|e| e.to_string())?;
    let create = http::Request::post("/api/v1/nodes")
        .header("content-type", "application/json")
        .body(body)
        .map_err(|e| e.to_string())?;
    match client.request_text(create).await {
        Ok(_) => Ok(()),
        // A restarted stand-in finds its node registered, as a real kubelet does.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// Replaces the mirror pod: a pod's spec is immutable, so a kubelet deletes and recreates it.
/// `node` is the node's name and address (the pod's `status.hostIP`).
async fn publish_mirror(
    client: &kube::Client,
    pod: &StaticPod,
    hash: &str,
    (node, host_ip): (&str, std::net::Ipv4Addr),
) -> Result<(), String> {
    let name = format!("{}-{node}", pod.name);
    let path = format!("/api/v1/namespaces/{}/pods", pod.namespace);
    let mut object = pod.object.clone();
    let meta = object
        .as_object_mut()
        .ok_or("manifest is not a mapping")?
        .entry("metadata")
        .or_insert_with(|| serde_json::json!({}));
    meta["name"] = name.clone().into();
    meta["namespace"] = pod.namespace.clone().into();
    if let Some(m) = meta.as_object_mut() {
        m.remove("creationTimestamp");
    }
    let annotations = meta
        .as_object_mut()
        .ok_or("metadata is not a mapping")?
        .entry("annotations")
        .or_insert_with(|| serde_json::json!({}));
    annotations["kubernetes.io/config.hash"] = hash.into();
    annotations["kubernetes.io/config.mirror"] = hash.into();
    annotations["kubernetes.io/config.source"] = "file".into();
    object["spec"]["nodeName"] = node.into();
    if let Some(o) = object.as_object_mut() {
        o.remove("status");
    }

    let delete = http::Request::delete(format!("{path}/{name}?gracePeriodSeconds=0"))
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    match client.request_text(delete).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(e) => return Err(e.to_string()),
    }
    let body = serde_json::to_vec(&object).map_err(|e| e.to_string())?;
    let create = http::Request::post(&path)
        .header("content-type", "application/json")
        .body(body)
        .map_err(|e| e.to_string())?;
    client
        .request_text(create)
        .await
        .map_err(|e| e.to_string())?;
    // The status is ignored on create; a kubelet reports it afterwards. A static pod runs on
    // the host network, so its IP is the host's.
    let host_ip = host_ip.to_string();
    let status = serde_json::json!({"status": {
        "hostIP": host_ip,
        "podIP": host_ip,
        "podIPs": [{"ip": host_ip}],
    }});
    let body = serde_json::to_vec(&status).map_err(|e| e.to_string())?;
    let report = http::Request::patch(format!("{path}/{name}/status"))
        .header("content-type", "application/merge-patch+json")
        .body(body)
        .map_err(|e| e.to_string())?;
    client
        .request_text(report)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Where kubeadm keeps the API server's manifest, inside a sandbox node root.
/// `DirectoryOrCreate`: an existing directory is left as it is; a new one is 0755.
fn create_host_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
}

pub fn manifest_path(root: &Path) -> PathBuf {
    root.join("etc/kubernetes/manifests/kube-apiserver.yaml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_hash_changes_with_any_byte() {
        assert_eq!(config_hash(b"a"), config_hash(b"a"));
        assert_ne!(config_hash(b"a"), config_hash(b"b"));
        assert_eq!(config_hash(b"").len(), 16);
    }
}
