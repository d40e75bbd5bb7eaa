//! A real single-node control plane, the kubeadm way: Debian's containerd and runc, the kubelet
//! v1.20.2 built from the same tree as the API server, and etcd and kube-apiserver as static
//! pods from images made here, without a registry.
//!
//! Everything runs in a network namespace and a mount namespace of the node's own:
//! - the network namespace (`ip netns add`) is joined to the host by a veth pair whose /30 exists
//!   only on that pair, and it has no default route, so nothing in it can reach another address;
//! - the mount namespace is private (no propagation either way). In it, the node's fixed paths
//!   (`/etc/kubernetes`, `/var/lib/kubelet`, `/var/log/pods`, ...) are bind mounts of directories
//!   under the node's state directory, so two nodes, or a node and the host, never share them.
//!   The kubelet's rshared bind of its root dir, the pods' /dev/shm tmpfs and the overlay
//!   snapshots are made in that namespace too, and vanish with it.
//!
//! The node outlives the process that starts it (`cargo xtask node up` exits), so its state is
//! a file in the state directory, and [`Node::down`] works from that file alone.
//!
//! `cargo xtask node` includes this file by path (xtask may not depend on testkit), so it uses
//! only std and serde_json, which both crates have, and runs the system's tools.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The node's paths that the kubelet, containerd and the pipeline use at fixed places. Each is
/// a bind mount, in the node's mount namespace, of `<state dir>/fs/<path>`. `/run/containerd`
/// is there because containerd's shims put their sockets under it whatever the config says.
pub const NODE_PATHS: &[&str] = &[
    "/etc/kubernetes",
    "/var/lib/kubelet",
    "/var/log/pods",
    "/var/log/containers",
    "/var/lib/etcd",
    "/var/lib/k8s_audit",
    "/run/containerd",
];

/// Names of the host's network namespaces (and cgroup roots) the nodes create: `down` of one
/// node looks for others by this prefix before it removes shared mount points.
const PREFIX: &str = "k8s-audit-";
const APISERVER_IMAGE: &str = "k8s.gcr.io/kube-apiserver:v1.20.2";
const ETCD_IMAGE: &str = "k8s.gcr.io/etcd:3.4.23-0";
const PAUSE_IMAGE: &str = "k8s.gcr.io/pause:3.2";
const API_PORT: u16 = 6443;
const STATE_FILE: &str = "node.state";
/// One file per node that is up, named after it, holding its state directory.
const REGISTRY: &str = "/run/k8s-audit-tools/nodes";
/// The host mount points some node created, one a line: the last node down removes them,
/// whichever node created them.
const MOUNT_POINTS: &str = "/run/k8s-audit-tools/mount-points";

fn remember_mount_point(dir: &Path) {
    // One short append per line, so that two nodes starting at once do not mix lines.
    let _ = fs::create_dir_all("/run/k8s-audit-tools").and_then(|()| {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(MOUNT_POINTS)?
            .write_all(format!("{}\n", dir.display()).as_bytes())
    });
}

/// Takes down the nodes of test processes that died without doing so (killed, or aborted):
/// those named `<prefix><pid>-...` whose pid is gone. Returns their names.
pub fn sweep_stale(prefix: &str) -> Vec<String> {
    let Ok(entries) = fs::read_dir(REGISTRY) else {
        return Vec::new();
    };
    let mut swept = Vec::new();
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if alive(pid) {
            continue;
        }
        let dir = fs::read_to_string(entry.path()).unwrap_or_default();
        if let Ok(Some(node)) = Node::load(Path::new(dir.trim())) {
            let _ = node.down();
        }
        let _ = fs::remove_file(entry.path());
        swept.push(name);
    }
    swept
}

/// A harness error: what failed, with the log or output that says why.
#[derive(Debug)]
pub struct NodeError(pub String);

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NodeError {}

type Result<T> = std::result::Result<T, NodeError>;

fn err<T>(message: impl Into<String>) -> Result<T> {
    Err(NodeError(message.into()))
}

fn io_context(what: impl fmt::Display) -> impl FnOnce(io::Error) -> NodeError {
    move |e| NodeError(format!("{what}: {e}"))
}

/// What to start.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// The node name (a DNS label): the mirror pods are `kube-system/<component>-<name>`.
    pub name: String,
    /// The state directory on the host; created, and removed by [`Node::down`].
    pub dir: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kubelet: PathBuf,
    /// `build/pause/linux/pause.c` of the kubernetes tree.
    pub pause_source: PathBuf,
    /// Where image tarballs are cached between runs.
    pub image_cache: PathBuf,
}

/// Why this machine cannot run a node, or `None` when it can: root, the tools, and the cgroup
/// v1 hierarchies the kubelet's cgroupfs driver writes.
pub fn unsupported_reason() -> Option<String> {
    if !is_root() {
        return Some("not root: a node needs namespaces, mounts and cgroups".into());
    }
    for tool in [
        "containerd",
        "runc",
        "ctr",
        "etcd",
        "gcc",
        "ip",
        "nsenter",
        "unshare",
        "openssl",
        "curl",
    ] {
        if !on_path(tool) {
            return Some(format!(
                "`{tool}` is not installed (see .ci/debian-packages)"
            ));
        }
    }
    let memory = Path::new("/sys/fs/cgroup/memory");
    if !memory.is_dir() {
        return Some("no cgroup v1 memory hierarchy at /sys/fs/cgroup/memory".into());
    }
    // One name per call: the tests of one binary probe from several threads at once.
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = memory.join(format!("{PREFIX}probe-{}-{n}", std::process::id()));
    if let Err(e) = fs::create_dir(&probe) {
        return Some(format!("cannot create a cgroup ({}): {e}", probe.display()));
    }
    let _ = fs::remove_dir(&probe);
    None
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            let file = dir.join(tool);
            file.is_file() && fs::metadata(&file).is_ok_and(|m| m.mode() & 0o111 != 0)
        })
    })
}

/// The record of a node that is up, in `<dir>/node.state`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub dir: PathBuf,
    /// The third octet of 10.250.N.0/30: the host side is .1, the node .2.
    pub subnet: u8,
    /// The process that holds the mount namespace open.
    pub holder: u32,
    /// The namespaces' inode numbers: what `down` matches processes by, even once the holder
    /// is gone.
    pub mnt_ns: u64,
    pub net_ns: u64,
    /// The mount points this node created on the host (they did not exist before).
    pub created: Vec<PathBuf>,
}

/// One mirror pod as the API server reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorPod {
    pub name: String,
    pub config_hash: Option<String>,
    pub is_mirror: bool,
    pub ready: bool,
    pub restarts: u64,
    /// The first container's command and args.
    pub command: Vec<String>,
}

/// Figures of a bring-up.
#[derive(Clone, Copy, Debug)]
pub struct BringUp {
    /// From the kubelet's start to `/readyz` answering ok.
    pub ready: Duration,
    /// From the kubelet's start to both mirror pods published with their config hash.
    pub mirror_pods: Duration,
}

impl Node {
    /// The network namespace's name.
    pub fn netns(&self) -> String {
        format!("{PREFIX}{}", self.name)
    }

    /// The cgroup every pod of this node lives under (`cgroupRoot`), in every hierarchy.
    pub fn cgroup_root(&self) -> String {
        format!("/{PREFIX}{}", self.name)
    }

    /// The node's address (on its end of the veth pair).
    pub fn ip(&self) -> String {
        format!("10.250.{}.2", self.subnet)
    }

    /// The host's address on the veth pair.
    pub fn host_ip(&self) -> String {
        format!("10.250.{}.1", self.subnet)
    }

    pub fn api_url(&self) -> String {
        format!("https://{}:{API_PORT}", self.ip())
    }

    /// The admin kubeconfig, for clients on the host.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.conf")
    }

    /// Where a node path (`/etc/kubernetes/manifests/...`) is on the host.
    pub fn host_path(&self, node_path: &str) -> PathBuf {
        self.dir.join("fs").join(node_path.trim_start_matches('/'))
    }

    pub fn manifest(&self, component: &str) -> PathBuf {
        self.host_path(&format!("/etc/kubernetes/manifests/{component}.yaml"))
    }

    pub fn kubelet_log(&self) -> PathBuf {
        self.dir.join("logs/kubelet.log")
    }

    pub fn containerd_log(&self) -> PathBuf {
        self.dir.join("logs/containerd.log")
    }

    /// A command that runs `program` in the node's mount and network namespaces.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--mount=/proc/{}/ns/mnt", self.holder))
            .arg(format!("--net=/run/netns/{}", self.netns()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// The command line that enters the node (for sshd's ForceCommand and for people).
    pub fn enter_prefix(&self) -> String {
        format!(
            "nsenter --mount=/proc/{}/ns/mnt --net=/run/netns/{} --",
            self.holder,
            self.netns()
        )
    }

    /// Reads the state file of the node whose state directory is `dir`.
    pub fn load(dir: &Path) -> Result<Option<Node>> {
        let path = dir.join(STATE_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return err(format!("reading {}: {e}", path.display())),
        };
        let mut node = Node {
            name: String::new(),
            dir: dir.to_path_buf(),
            subnet: 0,
            holder: 0,
            mnt_ns: 0,
            net_ns: 0,
            created: Vec::new(),
        };
        for (n, line) in text.lines().enumerate() {
            let bad = || NodeError(format!("{}:{}: expected key=value", path.display(), n + 1));
            let (key, value) = line.split_once('=').ok_or_else(bad)?;
            match key {
                "name" => node.name = value.to_owned(),
                "subnet" => node.subnet = value.parse().map_err(|_| bad())?,
                "holder" => node.holder = value.parse().map_err(|_| bad())?,
                "mnt_ns" => node.mnt_ns = value.parse().map_err(|_| bad())?,
                "net_ns" => node.net_ns = value.parse().map_err(|_| bad())?,
                "created" => node.created.push(PathBuf::from(value)),
                _ => return Err(bad()),
            }
        }
        if node.name.is_empty() {
            return err(format!("{}: no name=", path.display()));
        }
        Ok(Some(node))
    }

    fn save(&self) -> Result<()> {
        let mut text = format!(
            "name={}\nsubnet={}\nholder={}\nmnt_ns={}\nnet_ns={}\n",
            self.name, self.subnet, self.holder, self.mnt_ns, self.net_ns
        );
        for dir in &self.created {
            text.push_str(&format!("created={}\n", dir.display()));
        }
        // Where the state directory is, so that a node whose test process was killed can be
        // found and taken down by the next one (see `sweep_stale`).
        // Best effort: without it only the sweep is lost.
        let _ = fs::create_dir_all(REGISTRY).and_then(|()| {
            fs::write(
                Path::new(REGISTRY).join(&self.name),
                self.dir.to_string_lossy().as_bytes(),
            )
        });
        let path = self.dir.join(STATE_FILE);
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        fs::write(&tmp, text).map_err(io_context(format!("writing {}", tmp.display())))?;
        fs::rename(&tmp, &path).map_err(io_context(format!("renaming {}", tmp.display())))
    }

    /// Brings the node up and waits until the API server is ready and both mirror pods carry
    /// their config hash. On failure everything started so far is torn down again.
    pub fn up(spec: &NodeSpec, timeout: Duration) -> Result<(Node, BringUp)> {
        if let Some(reason) = unsupported_reason() {
            return err(format!("this machine cannot run a node: {reason}"));
        }
        if spec.dir.join(STATE_FILE).exists() {
            return err(format!(
                "{} holds a node already (run `cargo xtask node down` first)",
                spec.dir.display()
            ));
        }
        fs::create_dir_all(&spec.dir)
            .map_err(io_context(format!("creating {}", spec.dir.display())))?;
        let images = build_images(spec)?;
        let mut node = Node {
            name: spec.name.clone(),
            dir: spec.dir.clone(),
            subnet: 0,
            holder: 0,
            mnt_ns: 0,
            net_ns: 0,
            created: Vec::new(),
        };
        let started = node.start(spec, &images, timeout);
        match started {
            Ok(figures) => Ok((node, figures)),
            Err(e) => {
                let logs = node.log_tails(40);
                let _ = node.down();
                err(format!("{e}\n{logs}"))
            }
        }
    }

    fn start(&mut self, spec: &NodeSpec, images: &[PathBuf], timeout: Duration) -> Result<BringUp> {
        self.create_network()?;
        self.save()?;
        self.create_mount_namespace()?;
        self.save()?;
        let token = self.write_config()?;
        self.write_manifests()?;
        self.write_kubeconfigs(&token)?;
        self.create_cgroup_root()?;
        self.start_containerd()?;
        for image in images {
            self.run_in(
                self.ctr()
                    .args(["-n", "k8s.io", "images", "import"])
                    .arg(image),
                "ctr images import",
            )?;
        }
        let started = Instant::now();
        self.start_kubelet(spec)?;
        let deadline = started + timeout;
        self.add_apiserver_after_etcd(deadline)?;
        let mut ready = None;
        loop {
            if ready.is_none() && self.readyz() {
                ready = Some(started.elapsed());
            }
            if let Some(ready) = ready {
                let pods = self.mirror_pods().unwrap_or_default();
                let published = ["etcd", "kube-apiserver"].iter().all(|c| {
                    pods.iter()
                        .any(|p| p.name == format!("{c}-{}", self.name) && p.config_hash.is_some())
                });
                if published {
                    return Ok(BringUp {
                        ready,
                        mirror_pods: started.elapsed(),
                    });
                }
            }
            if Instant::now() > deadline {
                return err(format!(
                    "the control plane was not up {timeout:?} after the kubelet started \
                     (readyz ok: {})",
                    ready.is_some()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn create_network(&mut self) -> Result<()> {
        // The first /30 whose host-side link does not exist yet; `ip link add` is the lock.
        for subnet in 1..=250u8 {
            let host_link = format!("ka{subnet}h");
            if Path::new("/sys/class/net").join(&host_link).exists() || subnet_in_use(subnet) {
                continue;
            }
            let node_link = format!("ka{subnet}n");
            let added = Command::new("ip")
                .args(["link", "add", &host_link, "type", "veth", "peer", "name"])
                .arg(&node_link)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !added {
                continue;
            }
            self.subnet = subnet;
            let ns = self.netns();
            let host = format!("{}/30", self.host_ip());
            let node = format!("{}/30", self.ip());
            let result = (|| {
                run(
                    Command::new("ip").args(["netns", "add", &ns]),
                    "ip netns add",
                )?;
                let meta = fs::metadata(format!("/run/netns/{ns}"))
                    .map_err(io_context(format!("/run/netns/{ns}")))?;
                self.net_ns = meta.ino();
                run(
                    Command::new("ip").args(["link", "set", &node_link, "netns", &ns]),
                    "ip link set netns",
                )?;
                run(
                    Command::new("ip").args(["addr", "add", &host, "dev", &host_link]),
                    "ip addr add",
                )?;
                run(
                    Command::new("ip").args(["link", "set", &host_link, "up"]),
                    "ip link set up",
                )?;
                let inside = |args: &[&str]| {
                    let mut cmd = Command::new("ip");
                    cmd.args(["netns", "exec", &ns, "ip"]).args(args);
                    cmd
                };
                run(
                    &mut inside(&["addr", "add", &node, "dev", &node_link]),
                    "ip addr add",
                )?;
                run(
                    &mut inside(&["link", "set", &node_link, "up"]),
                    "ip link set up",
                )?;
                run(
                    &mut inside(&["link", "set", "lo", "up"]),
                    "ip link set lo up",
                )?;
                let routes = output(&mut inside(&["route", "show"]), "ip route")?;
                if routes.lines().any(|l| l.starts_with("default")) {
                    return err(format!(
                        "the node's namespace has a default route:\n{routes}"
                    ));
                }
                Ok(())
            })();
            if result.is_err() {
                let _ = Command::new("ip")
                    .args(["link", "del", &host_link])
                    .stderr(Stdio::null())
                    .status();
            }
            return result;
        }
        err("no free 10.250.N.0/30 for the node's veth pair")
    }

    fn create_mount_namespace(&mut self) -> Result<()> {
        for path in NODE_PATHS {
            let target = Path::new(path);
            if !target.exists() {
                fs::create_dir_all(target)
                    .map_err(io_context(format!("creating mount point {path}")))?;
                self.created.push(target.to_path_buf());
                remember_mount_point(target);
            }
            let source = self.host_path(path);
            fs::create_dir_all(&source)
                .map_err(io_context(format!("creating {}", source.display())))?;
        }
        let log = fs::File::create(self.dir.join("holder.log"))
            .map_err(io_context("creating holder.log"))?;
        // nsenter and unshare exec, so this pid is the holder's.
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns()))
            .args(["--", "unshare", "--mount", "--propagation", "private"])
            .args(["--", "sleep", "infinity"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(io_context("spawning the namespace holder"))?;
        self.holder = child.id();
        let own = ns_id("self", "mnt");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pid = self.holder.to_string();
            let theirs = ns_id(&pid, "mnt");
            if theirs.is_some() && theirs != own && comm(self.holder).as_deref() == Some("sleep") {
                self.mnt_ns = theirs.unwrap_or_default();
                break;
            }
            if Instant::now() > deadline {
                return err("the namespace holder did not start within 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut script = String::from("set -e\n");
        for path in NODE_PATHS {
            script.push_str(&format!(
                "mount --bind '{}' '{path}'\n",
                self.host_path(path).display()
            ));
        }
        self.run_in(
            self.command("sh").args(["-c", &script]),
            "binding the node's paths",
        )?;
        Ok(())
    }

    /// The containerd config, the kubelet config and the pki; returns the kubelet's token.
    fn write_config(&self) -> Result<String> {
        let d = self.dir.display();
        for sub in ["containerd", "logs", "cni/bin", "cni/net.d"] {
            fs::create_dir_all(self.dir.join(sub))
                .map_err(io_context(format!("creating {d}/{sub}")))?;
        }
        let containerd = format!(
            r#"version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.opt"]

[grpc]
  address = "{d}/containerd/containerd.sock"

[ttrpc]
  address = "{d}/containerd/containerd.sock.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # This VM withholds CAP_SYS_RESOURCE: lowering oom_score_adj is denied, and runc then fails
  # every container with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni/bin"
    conf_dir = "{d}/cni/net.d"
"#
        );
        write(&self.dir.join("containerd/config.toml"), &containerd)?;

        let pki = self.host_path("/etc/kubernetes/pki");
        fs::create_dir_all(&pki).map_err(io_context(format!("creating {}", pki.display())))?;
        let key = pki.join("sa.key");
        run(
            Command::new("openssl")
                .args(["genrsa", "-out"])
                .arg(&key)
                .arg("2048"),
            "openssl genrsa",
        )?;
        run(
            Command::new("openssl")
                .args(["rsa", "-pubout", "-in"])
                .arg(&key)
                .arg("-out")
                .arg(pki.join("sa.pub")),
            "openssl rsa -pubout",
        )?;
        let ip = self.ip();
        run(
            Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
                ])
                .args(["-subj", "/CN=kube-apiserver", "-addext"])
                .arg(format!(
                    "subjectAltName=IP:{ip},IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,\
                     DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
                ))
                .arg("-keyout")
                .arg(pki.join("apiserver.key"))
                .arg("-out")
                .arg(pki.join("apiserver.crt")),
            "openssl req -x509",
        )?;
        let admin = token()?;
        let kubelet = token()?;
        write(
            &pki.join("tokens.csv"),
            &format!(
                "{admin},admin,admin-uid,system:masters\n\
                 {kubelet},system:node:{name},node-{name},system:nodes\n",
                name = self.name
            ),
        )?;
        write(&self.dir.join("admin.token"), &admin)?;

        let kubelet_config = format!(
            r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
staticPodPath: /etc/kubernetes/manifests
# Mirror pods are created on the sync loop: with the default 1m they can take a minute.
syncFrequency: 3s
cgroupDriver: cgroupfs
cgroupRoot: {cgroup_root}
failSwapOn: false
address: {ip}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
# The images cannot be pulled again.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
"#,
            cgroup_root = self.cgroup_root()
        );
        write(
            &self.host_path("/etc/kubernetes/kubelet.yaml"),
            &kubelet_config,
        )?;
        Ok(kubelet)
    }

    fn write_kubeconfigs(&self, kubelet_token: &str) -> Result<()> {
        let admin = fs::read_to_string(self.dir.join("admin.token"))
            .map_err(io_context("reading admin.token"))?;
        write(
            &self.kubeconfig(),
            &kubeconfig(&self.api_url(), "admin", &admin),
        )?;
        write(
            &self.host_path("/etc/kubernetes/kubelet.conf"),
            &kubeconfig(
                &self.api_url(),
                &format!("system:node:{}", self.name),
                kubelet_token,
            ),
        )
    }

    fn write_manifests(&self) -> Result<()> {
        let dir = self.host_path("/etc/kubernetes/manifests");
        fs::create_dir_all(&dir).map_err(io_context(format!("creating {}", dir.display())))?;
        write(&dir.join("etcd.yaml"), &etcd_manifest(&self.name))
    }

    /// The API server's manifest goes in once etcd answers. Placed together, as kubeadm does,
    /// the API server often exits before etcd is up; that restart starts the kubelet's back-off
    /// for the pod's UID, which comes from the manifest's content, so every later restore of
    /// these exact bytes (a disable, a rollback) would wait 10-20 s for a back-off that a node
    /// whose API server has run for a while does not have.
    fn add_apiserver_after_etcd(&self, deadline: Instant) -> Result<()> {
        loop {
            let health = self
                .command("curl")
                .args(["-s", "--max-time", "1", "http://127.0.0.1:2379/health"])
                .stderr(Stdio::null())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            if health.contains("\"health\":\"true\"") {
                break;
            }
            if Instant::now() > deadline {
                return err(format!(
                    "etcd was not healthy in time (last answer: {health:?})"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Renamed in, so the kubelet never reads half a manifest.
        let tmp = self.dir.join("kube-apiserver.yaml.tmp");
        write(&tmp, &apiserver_manifest(&self.ip()))?;
        let manifest = self.manifest("kube-apiserver");
        fs::rename(&tmp, &manifest)
            .map_err(io_context(format!("renaming to {}", manifest.display())))
    }

    fn create_cgroup_root(&self) -> Result<()> {
        for hierarchy in cgroup_hierarchies() {
            let dir = hierarchy.join(self.cgroup_root().trim_start_matches('/'));
            fs::create_dir_all(&dir).map_err(io_context(format!("creating {}", dir.display())))?;
            // A new cpuset cgroup starts empty and takes no tasks until it has cpus and mems.
            for file in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(value) = fs::read_to_string(hierarchy.join(file)) {
                    let _ = fs::write(dir.join(file), value.trim());
                }
            }
        }
        Ok(())
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("containerd/containerd.sock")
    }

    fn ctr(&self) -> Command {
        let mut cmd = self.command("ctr");
        cmd.arg("--address").arg(self.socket());
        cmd
    }

    fn start_containerd(&self) -> Result<()> {
        let log = fs::File::create(self.containerd_log())
            .map_err(io_context("creating containerd.log"))?;
        self.command("containerd")
            .arg("--config")
            .arg(self.dir.join("containerd/config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io_context("containerd.log"))?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(io_context("spawning containerd"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self
                .ctr()
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                return err("containerd did not answer within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn start_kubelet(&self, spec: &NodeSpec) -> Result<()> {
        let log =
            fs::File::create(self.kubelet_log()).map_err(io_context("creating kubelet.log"))?;
        let socket = self.socket();
        self.command(&spec.kubelet)
            .arg("--config=/etc/kubernetes/kubelet.yaml")
            .arg("--kubeconfig=/etc/kubernetes/kubelet.conf")
            .arg("--container-runtime=remote")
            .arg(format!(
                "--container-runtime-endpoint=unix://{}",
                socket.display()
            ))
            // cAdvisor looks for containerd at its default socket unless told.
            .arg(format!("--containerd={}", socket.display()))
            .arg(format!("--pod-infra-container-image={PAUSE_IMAGE}"))
            .arg(format!("--node-ip={}", self.ip()))
            .arg(format!("--hostname-override={}", self.name))
            .arg("--v=2")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io_context("kubelet.log"))?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(io_context(format!("spawning {}", spec.kubelet.display())))?;
        Ok(())
    }

    fn run_in(&self, cmd: &mut Command, what: &str) -> Result<()> {
        run(cmd, what)
    }

    /// GET on the API server with the admin token; `None` when it does not answer 200.
    pub fn get(&self, path: &str) -> Option<String> {
        let token = fs::read_to_string(self.dir.join("admin.token")).ok()?;
        let out = Command::new("curl")
            .args(["-sk", "--fail", "--max-time", "2", "-H"])
            .arg(format!("Authorization: Bearer {}", token.trim()))
            .arg(format!("{}{path}", self.api_url()))
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn readyz(&self) -> bool {
        self.get("/readyz").is_some_and(|body| body.trim() == "ok")
    }

    /// The pods of kube-system bound to this node.
    pub fn mirror_pods(&self) -> Option<Vec<MirrorPod>> {
        let body = self.get(&format!(
            "/api/v1/namespaces/kube-system/pods?fieldSelector=spec.nodeName%3D{}",
            self.name
        ))?;
        let list: serde_json::Value = serde_json::from_str(&body).ok()?;
        let items = list["items"].as_array()?;
        Some(items.iter().map(mirror_pod).collect())
    }

    pub fn mirror_pod(&self, component: &str) -> Option<MirrorPod> {
        let name = format!("{component}-{}", self.name);
        self.mirror_pods()?.into_iter().find(|p| p.name == name)
    }

    /// The last lines of the kubelet's and containerd's logs.
    pub fn log_tails(&self, lines: usize) -> String {
        format!(
            "--- kubelet.log ---\n{}\n--- containerd.log ---\n{}",
            tail(&self.kubelet_log(), lines),
            tail(&self.containerd_log(), lines)
        )
    }

    /// The pids of every process of the node: in its mount or network namespace (containers
    /// have mount namespaces of their own, but share the network one: hostNetwork), or in its
    /// cgroups. containerd's shims are re-parented to PID 1, so the process tree cannot say.
    pub fn processes(&self) -> Vec<u32> {
        let me = std::process::id();
        let cgroup = format!("{}/", self.cgroup_root());
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| pid != me)
            .filter(|&pid| {
                let p = pid.to_string();
                (self.mnt_ns != 0 && ns_id(&p, "mnt") == Some(self.mnt_ns))
                    || (self.net_ns != 0 && ns_id(&p, "net") == Some(self.net_ns))
                    || fs::read_to_string(format!("/proc/{pid}/cgroup"))
                        .is_ok_and(|c| c.lines().any(|l| l.contains(&cgroup)))
            })
            .collect()
    }

    /// Stops everything and removes every trace: processes, cgroups (deepest first), the
    /// namespaces (their mounts go with the mount namespace), the veth pair, the mount points
    /// it created on the host when no other node still uses them, and the state directory.
    pub fn down(&self) -> Result<()> {
        let mut problems = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let pids = self.processes();
            if pids.is_empty() {
                break;
            }
            for pid in &pids {
                kill(*pid);
            }
            if Instant::now() > deadline {
                problems.push(format!("processes still alive after 20 s: {pids:?}"));
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for hierarchy in cgroup_hierarchies() {
            let root = hierarchy.join(self.cgroup_root().trim_start_matches('/'));
            if let Err(e) = remove_cgroup_tree(&root) {
                problems.push(e.0);
            }
        }
        let ns = self.netns();
        if Path::new("/run/netns").join(&ns).exists()
            && let Err(e) = run(
                Command::new("ip").args(["netns", "del", &ns]),
                "ip netns del",
            )
        {
            problems.push(e.0);
        }
        let host_link = format!("ka{}h", self.subnet);
        if self.subnet != 0 && Path::new("/sys/class/net").join(&host_link).exists() {
            let _ = Command::new("ip")
                .args(["link", "del", &host_link])
                .stderr(Stdio::null())
                .status();
        }
        // Removing a directory that is a mount point in another namespace unmounts it there,
        // so the host's mount points go only when no other node is up.
        if !other_nodes_up(&ns) {
            // Also those another node created and left to the last one.
            let mut dirs = self.created.clone();
            dirs.extend(
                fs::read_to_string(MOUNT_POINTS)
                    .unwrap_or_default()
                    .lines()
                    .map(PathBuf::from),
            );
            for dir in dirs.iter().rev() {
                let _ = fs::remove_dir(dir);
            }
            let _ = fs::remove_file(MOUNT_POINTS);
        }
        if mounted_under(&self.dir) {
            problems.push(format!(
                "{} still has mounts in this namespace; left in place",
                self.dir.display()
            ));
        } else if let Err(e) = fs::remove_dir_all(&self.dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            problems.push(format!("removing {}: {e}", self.dir.display()));
        }
        if problems.is_empty() {
            let _ = fs::remove_file(Path::new(REGISTRY).join(&self.name));
            Ok(())
        } else {
            err(problems.join("\n"))
        }
    }
}

fn mirror_pod(item: &serde_json::Value) -> MirrorPod {
    let annotations = &item["metadata"]["annotations"];
    let statuses = item["status"]["containerStatuses"].as_array();
    let container = &item["spec"]["containers"][0];
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut command = strings(&container["command"]);
    command.extend(strings(&container["args"]));
    MirrorPod {
        name: item["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        config_hash: annotations["kubernetes.io/config.hash"]
            .as_str()
            .map(str::to_owned),
        is_mirror: annotations["kubernetes.io/config.mirror"].is_string(),
        ready: statuses.is_some_and(|s| !s.is_empty() && s.iter().all(|c| c["ready"] == true)),
        restarts: statuses
            .map(|s| s.iter().filter_map(|c| c["restartCount"].as_u64()).sum())
            .unwrap_or(0),
        command,
    }
}

fn etcd_manifest(name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  creationTimestamp: null
  labels:
    component: etcd
    tier: control-plane
  name: etcd
  namespace: kube-system
spec:
  containers:
  - command:
    - etcd
    - --name={name}
    - --data-dir=/var/lib/etcd
    - --listen-client-urls=http://127.0.0.1:2379
    - --advertise-client-urls=http://127.0.0.1:2379
    - --listen-peer-urls=http://127.0.0.1:2380
    - --initial-advertise-peer-urls=http://127.0.0.1:2380
    - --initial-cluster={name}=http://127.0.0.1:2380
    - --listen-metrics-urls=http://127.0.0.1:2381
    - --snapshot-count=10000
    image: {ETCD_IMAGE}
    imagePullPolicy: Never
    livenessProbe:
      failureThreshold: 8
      httpGet:
        host: 127.0.0.1
        path: /health
        port: 2381
        scheme: HTTP
      initialDelaySeconds: 10
      periodSeconds: 10
      timeoutSeconds: 15
    name: etcd
    resources:
      requests:
        cpu: 100m
        memory: 100Mi
    volumeMounts:
    - mountPath: /var/lib/etcd
      name: etcd-data
  hostNetwork: true
  priorityClassName: system-node-critical
  volumes:
  - hostPath:
      path: /var/lib/etcd
      type: DirectoryOrCreate
    name: etcd-data
status: {{}}
"#
    )
}

fn apiserver_manifest(ip: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  annotations:
    kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint: {ip}:{API_PORT}
  creationTimestamp: null
  labels:
    component: kube-apiserver
    tier: control-plane
  name: kube-apiserver
  namespace: kube-system
spec:
  containers:
  - command:
    - kube-apiserver
    - --advertise-address={ip}
    - --allow-privileged=true
    - --authorization-mode=Node,RBAC
    - --enable-admission-plugins=NodeRestriction
    - --etcd-servers=http://127.0.0.1:2379
    - --kubelet-preferred-address-types=InternalIP
    - --secure-port={API_PORT}
    - --service-account-issuer=https://kubernetes.default.svc.cluster.local
    - --service-account-key-file=/etc/kubernetes/pki/sa.pub
    - --service-account-signing-key-file=/etc/kubernetes/pki/sa.key
    - --service-cluster-ip-range=10.96.0.0/12
    - --tls-cert-file=/etc/kubernetes/pki/apiserver.crt
    - --tls-private-key-file=/etc/kubernetes/pki/apiserver.key
    - --token-auth-file=/etc/kubernetes/pki/tokens.csv
    image: {APISERVER_IMAGE}
    imagePullPolicy: Never
    livenessProbe:
      failureThreshold: 8
      httpGet:
        host: {ip}
        path: /livez
        port: {API_PORT}
        scheme: HTTPS
      initialDelaySeconds: 10
      periodSeconds: 10
      timeoutSeconds: 15
    name: kube-apiserver
    readinessProbe:
      failureThreshold: 3
      httpGet:
        host: {ip}
        path: /readyz
        port: {API_PORT}
        scheme: HTTPS
      periodSeconds: 1
      timeoutSeconds: 15
    resources:
      requests:
        cpu: 250m
    startupProbe:
      failureThreshold: 24
      httpGet:
        host: {ip}
        path: /livez
        port: {API_PORT}
        scheme: HTTPS
      initialDelaySeconds: 10
      periodSeconds: 10
      timeoutSeconds: 15
    volumeMounts:
    - mountPath: /etc/kubernetes/pki
      name: k8s-certs
      readOnly: true
  hostNetwork: true
  priorityClassName: system-node-critical
  volumes:
  - hostPath:
      path: /etc/kubernetes/pki
      type: DirectoryOrCreate
    name: k8s-certs
status: {{}}
"#
    )
}

fn kubeconfig(server: &str, user: &str, token: &str) -> String {
    // The serving certificate is self-signed; the tests are about the node, not about PKI.
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: node\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\n\
         users:\n- name: {user}\n  user:\n    token: {token}\n\
         contexts:\n- name: node\n  context:\n    cluster: node\n    user: {user}\n\
         current-context: node\n",
        token = token.trim()
    )
}

/// The image tarballs, built once per source and cached.
fn build_images(spec: &NodeSpec) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(&spec.image_cache).map_err(io_context(format!(
        "creating {}",
        spec.image_cache.display()
    )))?;
    let apiserver = cached_image(spec, "kube-apiserver", &spec.kube_apiserver, |_| {
        Ok(vec![LayerFile::file(
            "usr/local/bin/kube-apiserver",
            &spec.kube_apiserver,
        )])
    })?;
    let etcd_binary = PathBuf::from("/usr/bin/etcd");
    let etcd = cached_image(spec, "etcd", &etcd_binary, |_| {
        let mut files = vec![LayerFile::file("usr/bin/etcd", &etcd_binary)];
        for lib in linked_libraries(&etcd_binary)? {
            let inside = lib.to_string_lossy().trim_start_matches('/').to_owned();
            files.push(LayerFile::file(&inside, &lib));
        }
        Ok(files)
    })?;
    let pause = cached_image(spec, "pause", &spec.pause_source, |tmp| {
        let binary = tmp.join("pause");
        run(
            Command::new("gcc")
                .args(["-Os", "-static", "-DVERSION=3.2", "-o"])
                .arg(&binary)
                .arg(&spec.pause_source),
            "gcc -static pause.c",
        )?;
        Ok(vec![LayerFile::file("pause", &binary)])
    })?;
    Ok(vec![pause, etcd, apiserver])
}

/// The shared libraries and loader a dynamic binary needs, as `ldd` lists them.
fn linked_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let text = output(Command::new("ldd").arg(binary), "ldd")?;
    let mut libs = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// One file of an image's single layer, read from `source` (symlinks followed).
struct LayerFile {
    path: String,
    source: PathBuf,
}

impl LayerFile {
    fn file(path: &str, source: &Path) -> LayerFile {
        LayerFile {
            path: path.to_owned(),
            source: source.to_path_buf(),
        }
    }
}

fn cached_image(
    spec: &NodeSpec,
    name: &str,
    key_source: &Path,
    files: impl FnOnce(&Path) -> Result<Vec<LayerFile>>,
) -> Result<PathBuf> {
    let meta = fs::metadata(key_source).map_err(io_context(format!(
        "{} (needed for the {name} image)",
        key_source.display()
    )))?;
    let tag = match name {
        "kube-apiserver" => APISERVER_IMAGE,
        "etcd" => ETCD_IMAGE,
        _ => PAUSE_IMAGE,
    };
    let path = spec
        .image_cache
        .join(format!("{name}-{}-{}.tar", meta.len(), meta.mtime()));
    if path.is_file() {
        return Ok(path);
    }
    let work = spec
        .image_cache
        .join(format!(".{name}.{}.tmp", std::process::id()));
    fs::create_dir_all(&work).map_err(io_context(format!("creating {}", work.display())))?;
    let result = (|| {
        let files = files(&work)?;
        let layer = work.join("layer.tar");
        write_layer(&layer, &files)?;
        let tarball = work.join("image.tar");
        write_docker_archive(&tarball, &layer, tag, &files)?;
        fs::rename(&tarball, &path).map_err(io_context(format!("renaming to {}", path.display())))
    })();
    let _ = fs::remove_dir_all(&work);
    result.map(|()| path)
}

fn write_layer(layer: &Path, files: &[LayerFile]) -> Result<()> {
    let out =
        fs::File::create(layer).map_err(io_context(format!("creating {}", layer.display())))?;
    let mut out = io::BufWriter::new(out);
    let mut dirs: Vec<String> = vec!["tmp/".into()];
    for file in files {
        let mut prefix = String::new();
        let parts: Vec<&str> = file.path.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            prefix.push_str(part);
            prefix.push('/');
            if !dirs.contains(&prefix) {
                dirs.push(prefix.clone());
            }
        }
    }
    let tar_err = io_context(format!("writing {}", layer.display()));
    (|| {
        for dir in &dirs {
            let mode = if dir == "tmp/" { 0o1777 } else { 0o755 };
            out.write_all(&ustar_header(dir, mode, 0, b'5'))?;
        }
        for file in files {
            let mut source = fs::File::open(&file.source)?;
            let len = source.metadata()?.len();
            out.write_all(&ustar_header(&file.path, 0o755, len, b'0'))?;
            copy_padded(&mut source, &mut out, len)?;
        }
        out.write_all(&[0u8; 1024])?;
        out.flush()
    })()
    .map_err(tar_err)
}

/// `docker save`'s format, which `ctr images import` reads: manifest.json, the config, and the
/// layer, named by their digests.
fn write_docker_archive(
    tarball: &Path,
    layer: &Path,
    tag: &str,
    files: &[LayerFile],
) -> Result<()> {
    let layer_digest = sha256(layer)?;
    let entrypoint = if files.iter().any(|f| f.path == "pause") {
        serde_json::json!(["/pause"])
    } else {
        serde_json::Value::Null
    };
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": entrypoint,
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
    })
    .to_string();
    let config_name = format!("{}.json", sha256_bytes(config.as_bytes(), tarball)?);
    let layer_name = format!("{layer_digest}/layer.tar");
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": [tag],
        "Layers": [layer_name],
    }])
    .to_string();
    let out =
        fs::File::create(tarball).map_err(io_context(format!("creating {}", tarball.display())))?;
    let mut out = io::BufWriter::new(out);
    (|| {
        for (name, bytes) in [
            ("manifest.json", manifest.as_bytes()),
            (config_name.as_str(), config.as_bytes()),
        ] {
            out.write_all(&ustar_header(name, 0o644, bytes.len() as u64, b'0'))?;
            copy_padded(&mut &bytes[..], &mut out, bytes.len() as u64)?;
        }
        out.write_all(&ustar_header(&format!("{layer_digest}/"), 0o755, 0, b'5'))?;
        let mut source = fs::File::open(layer)?;
        let len = source.metadata()?.len();
        out.write_all(&ustar_header(&layer_name, 0o644, len, b'0'))?;
        copy_padded(&mut source, &mut out, len)?;
        out.write_all(&[0u8; 1024])?;
        out.flush()
    })()
    .map_err(io_context(format!("writing {}", tarball.display())))
}

/// A POSIX ustar header; every name here is shorter than the 100 bytes of the name field.
fn ustar_header(name: &str, mode: u32, size: u64, kind: u8) -> [u8; 512] {
    let mut h = [0u8; 512];
    let put = |h: &mut [u8; 512], at: usize, bytes: &[u8]| {
        h[at..at + bytes.len()].copy_from_slice(bytes);
    };
    put(&mut h, 0, &name.as_bytes()[..name.len().min(100)]);
    put(&mut h, 100, format!("{mode:07o}\0").as_bytes());
    put(&mut h, 108, b"0000000\0");
    put(&mut h, 116, b"0000000\0");
    put(&mut h, 124, format!("{size:011o}\0").as_bytes());
    put(&mut h, 136, b"00000000000\0");
    put(&mut h, 148, b"        ");
    h[156] = kind;
    put(&mut h, 257, b"ustar\0");
    put(&mut h, 263, b"00");
    put(&mut h, 265, b"root");
    put(&mut h, 297, b"root");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    put(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
    h
}

fn copy_padded(source: &mut impl Read, out: &mut impl Write, len: u64) -> io::Result<()> {
    let copied = io::copy(&mut source.take(len), out)?;
    if copied != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the file shrank while it was copied ({copied} of {len} bytes)"),
        ));
    }
    let pad = (512 - len % 512) % 512;
    out.write_all(&vec![0u8; pad as usize])
}

fn sha256(path: &Path) -> Result<String> {
    let text = output(Command::new("sha256sum").arg(path), "sha256sum")?;
    text.split_whitespace()
        .next()
        .filter(|h| h.len() == 64)
        .map(str::to_owned)
        .ok_or_else(|| {
            NodeError(format!(
                "sha256sum printed no digest for {}",
                path.display()
            ))
        })
}

fn sha256_bytes(bytes: &[u8], near: &Path) -> Result<String> {
    let file = near.with_extension("digest-input");
    fs::write(&file, bytes).map_err(io_context(format!("writing {}", file.display())))?;
    let digest = sha256(&file);
    let _ = fs::remove_file(&file);
    digest
}

fn cgroup_hierarchies() -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir("/sys/fs/cgroup") else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

/// Removes a cgroup and its descendants, deepest first; a cgroup whose last task is still
/// exiting is busy for a moment, so each is retried for a few seconds.
fn remove_cgroup_tree(root: &Path) -> Result<()> {
    if !root.is_dir() {
        return Ok(());
    }
    let mut all = Vec::new();
    let mut frontier = vec![root.to_path_buf()];
    while let Some(dir) = frontier.pop() {
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.filter_map(|e| e.ok()) {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    frontier.push(entry.path());
                }
            }
        }
        all.push(dir);
    }
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for dir in all {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match fs::remove_dir(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) if Instant::now() > deadline => {
                    return err(format!("removing cgroup {}: {e}", dir.display()));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    Ok(())
}

fn other_nodes_up(own: &str) -> bool {
    fs::read_dir("/run/netns").is_ok_and(|entries| {
        entries.filter_map(|e| e.ok()).any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(PREFIX) && name != own
        })
    })
}

fn mounted_under(dir: &Path) -> bool {
    let prefix = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo").is_ok_and(|info| {
        info.lines().any(|l| {
            l.split_whitespace()
                .nth(4)
                .is_some_and(|m| m == prefix || m.starts_with(&format!("{prefix}/")))
        })
    })
}

fn subnet_in_use(subnet: u8) -> bool {
    Command::new("ip")
        .args(["-4", "addr", "show"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("10.250.{subnet}.")))
}

fn ns_id(pid: &str, kind: &str) -> Option<u64> {
    let link = fs::read_link(format!("/proc/{pid}/ns/{kind}")).ok()?;
    let text = link.to_string_lossy();
    text.strip_prefix(&format!("{kind}:["))?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Whether `pid` runs: a killed test process whose parent was gone stays a zombie until PID 1
/// reaps it, which here happens only lazily.
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next());
        !matches!(state, Some("Z" | "X") | None)
    })
}

fn comm(pid: u32) -> Option<String> {
    Some(
        fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()?
            .trim_end()
            .to_owned(),
    )
}

fn kill(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

fn token() -> Result<String> {
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io_context("reading /dev/urandom"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).map_err(io_context(format!("writing {}", path.display())))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    output(cmd, what).map(drop)
}

fn output(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(io_context(format!("running {what}")))?;
    if !out.status.success() {
        return err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ustar_header_checksum_is_what_tar_computes() {
        let h = ustar_header("usr/bin/etcd", 0o755, 1234, b'0');
        let mut copy = h;
        copy[148..156].copy_from_slice(b"        ");
        let sum: u32 = copy.iter().map(|&b| u32::from(b)).sum();
        let field = std::str::from_utf8(&h[148..154]).unwrap();
        assert_eq!(u32::from_str_radix(field, 8).unwrap(), sum);
        assert_eq!(&h[124..136], b"00000002322\0");
    }

    #[test]
    fn sweep_takes_down_only_nodes_of_dead_processes() {
        if !is_root() {
            return;
        }
        let dead = {
            let mut child = Command::new("true").spawn().unwrap();
            let pid = child.id();
            child.wait().unwrap();
            pid
        };
        let alive = std::process::id();
        fs::create_dir_all(REGISTRY).unwrap();
        let gone = tempfile::tempdir().unwrap();
        let kept = tempfile::tempdir().unwrap();
        let gone_dir = gone.path().join("node");
        fs::create_dir_all(&gone_dir).unwrap();
        let dead_node = Node {
            name: format!("sweeptest-{dead}-0"),
            dir: gone_dir.clone(),
            subnet: 0,
            holder: 0,
            mnt_ns: 0,
            net_ns: 0,
            created: Vec::new(),
        };
        dead_node.save().unwrap();
        let live_entry = Path::new(REGISTRY).join(format!("sweeptest-{alive}-0"));
        fs::write(&live_entry, kept.path().to_string_lossy().as_bytes()).unwrap();

        let swept = sweep_stale("sweeptest-");
        let live_still_there = live_entry.exists();
        let _ = fs::remove_file(&live_entry);
        assert_eq!(swept.as_slice(), std::slice::from_ref(&dead_node.name));
        assert!(live_still_there, "a live process's node is left alone");
        assert!(
            !gone_dir.exists(),
            "the dead one's state directory is removed"
        );
        assert!(!Path::new(REGISTRY).join(&dead_node.name).exists());
    }

    #[test]
    fn the_last_node_down_removes_mount_points_another_node_created() {
        if !is_root() || other_nodes_up("") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // Created by a node that went down while this one was up, so not in `created`.
        let mount_point = dir.path().join("var-log-pods");
        fs::create_dir(&mount_point).unwrap();
        remember_mount_point(&mount_point);
        let state = dir.path().join("node");
        fs::create_dir(&state).unwrap();
        let last = Node {
            name: format!("mountpointtest-{}", std::process::id()),
            dir: state.clone(),
            subnet: 0,
            holder: 0,
            mnt_ns: 0,
            net_ns: 0,
            created: Vec::new(),
        };
        last.down().unwrap();
        assert!(!mount_point.exists());
        assert!(!state.exists());
    }

    #[test]
    fn a_zombie_is_not_alive() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not waited for yet: a zombie, with its /proc entry still there.
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let seen_dead = !alive(pid);
        let proc_entry = Path::new(&format!("/proc/{pid}")).exists();
        child.wait().unwrap();
        assert!(proc_entry, "the zombie still has its /proc entry");
        assert!(seen_dead);
        assert!(alive(std::process::id()));
    }

    #[test]
    fn state_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node {
            name: "n1".into(),
            dir: dir.path().to_path_buf(),
            subnet: 7,
            holder: 42,
            mnt_ns: 4026531840,
            net_ns: 4026532000,
            created: vec!["/etc/kubernetes".into(), "/var/log/pods".into()],
        };
        node.save().unwrap();
        let _ = fs::remove_file(Path::new(REGISTRY).join("n1"));
        assert_eq!(Node::load(dir.path()).unwrap(), Some(node));
    }
}
