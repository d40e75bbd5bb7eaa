//! Which node to change and how to reach it: the four variants of the old script and beyond.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::process::Command;

use crate::error::{Context, PipelineError, Result, bail};
use crate::fleet::NodeTarget;
use crate::node::Node;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Variant {
    /// `minikube ip` / `minikube ssh-key`, user docker.
    Minikube,
    /// A kops control plane: --host or APISERVER_HOST, user admin, ~/.ssh/id_rsa.
    Kops,
    /// Any host over SSH, e.g. a kubeadm control plane (~/.ssh/config applies).
    Ssh,
    /// This machine is the node (needs root, or --root for a sandbox).
    Local,
}

impl Variant {
    pub fn default_manifest(self) -> &'static str {
        match self {
            Variant::Kops => "/etc/kubernetes/manifests/kube-apiserver.manifest",
            _ => "/etc/kubernetes/manifests/kube-apiserver.yaml",
        }
    }
}

/// Which node, and how to reach it: shared by every command that touches it.
#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    /// How to reach the node.
    #[arg(value_enum, default_value_t = Variant::Minikube)]
    pub variant: Variant,
    #[command(flatten)]
    pub node: NodeArgs,
}

impl TargetArgs {
    /// Connects to one node of the run; `multi` when the run has several (minikube then
    /// names the node: `minikube ip -n NODE`). Nodes behind the same jump hosts share one
    /// connection to them, from `jumps`.
    pub fn connect(&self, target: &NodeTarget, multi: bool, jumps: &Jumps) -> Result<Node> {
        let minikube_node = multi.then_some(target.name.as_str());
        connect(self.variant, &self.node, target, minikube_node, jumps)
    }

    pub fn manifest(&self) -> String {
        self.node.manifest(self.variant)
    }

    /// `--audit-dir`, refused when it is `/`, a system directory, or the manifests directory
    /// (or one above it): enable creates it, mounts it into the pod and writes the webhook
    /// kubeconfig and the state record there, and `disable --purge` deletes files in it.
    pub fn audit_dir(&self) -> Result<&str> {
        let dir = self.node.audit_dir.as_str();
        let manifest = self.manifest();
        let manifest_dir = manifest.rsplit_once('/').map(|(dir, _)| dir);
        patch_apiserver::check_audit_dir(dir, manifest_dir.filter(|d| !d.is_empty()))
            .map_err(|e| PipelineError::failed(format!("--audit-dir {dir}: {e}")))?;
        Ok(dir)
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// A control-plane node's host name or address; repeat it for every node (kops: default
    /// $APISERVER_HOST). With a kubeconfig the nodes come from the cluster, and each --host is
    /// matched to one by name or host IP.
    #[arg(long)]
    pub host: Vec<String>,
    /// Reach the nodes through these jump hosts, `[user@]host[:port]` separated by commas, as
    /// `ssh -J` (default: ProxyJump from ~/.ssh/config). Every hop's host key is verified.
    #[arg(long, value_name = "HOPS")]
    pub jump: Option<String>,
    /// The SSH user (minikube: docker, kops: admin, ssh: from ~/.ssh/config or $USER).
    #[arg(long)]
    pub user: Option<String>,
    /// An SSH identity file; repeatable.
    #[arg(short = 'i', long = "identity")]
    pub identities: Vec<PathBuf>,
    /// The SSH port.
    #[arg(long)]
    pub port: Option<u16>,
    /// A known_hosts file to verify the node's host key against (default: OpenSSH's).
    #[arg(long)]
    pub known_hosts: Vec<PathBuf>,
    /// Record an unknown host key, like StrictHostKeyChecking=accept-new. A changed key is always refused.
    #[arg(long)]
    pub accept_new: bool,
    /// The ssh_config file (default ~/.ssh/config).
    #[arg(long)]
    pub ssh_config: Option<PathBuf>,
    /// The minikube profile.
    #[arg(short = 'p', long, default_value = "minikube")]
    pub profile: String,
    /// The kube-apiserver static pod manifest on the node.
    #[arg(long)]
    pub manifest: Option<String>,
    /// Prefix every node path with DIR, so a sandbox directory stands in for the node's `/`;
    /// `{node}` in DIR is replaced by each node's name.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Where the audit policy, webhook config, log and backups live on the node.
    #[arg(long, default_value = "/var/lib/k8s_audit")]
    pub audit_dir: String,
}

impl NodeArgs {
    fn manifest(&self, variant: Variant) -> String {
        self.manifest
            .clone()
            .unwrap_or_else(|| variant.default_manifest().to_string())
    }
}

/// Opens the one session every step of a pipeline reuses on one node.
fn connect(
    variant: Variant,
    args: &NodeArgs,
    target: &NodeTarget,
    minikube_node: Option<&str>,
    jumps: &Jumps,
) -> Result<Node> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let mut options = ship::ConnectOptions {
        user: args.user.clone(),
        port: args.port,
        identities: args.identities.clone(),
        known_hosts: args.known_hosts.clone(),
        accept_new: args.accept_new,
        ssh_config: args.ssh_config.clone(),
        ..ship::ConnectOptions::default()
    };
    let host = match variant {
        Variant::Local => return Node::local(target.root.as_deref()),
        Variant::Ssh => target
            .host
            .clone()
            .context("the ssh variant needs --host (a name from ~/.ssh/config works)")?,
        Variant::Kops => {
            options.user.get_or_insert_with(|| "admin".into());
            if options.identities.is_empty() {
                options.identities.push(home.join(".ssh/id_rsa"));
            }
            target.host.clone().context(
                "you must specify the kops control-plane node: pass --host (or APISERVER_HOST)",
            )?
        }
        Variant::Minikube => minikube_host(args, target, minikube_node, &mut options)?,
    };
    let destination = ship::Destination {
        user: options.user.clone(),
        host: host.clone(),
        port: options.port,
    };
    if options.connect_timeout.is_zero() {
        options.connect_timeout = Duration::from_secs(10);
    }
    let hops = match &args.jump {
        Some(list) => ship::Destination::parse_jump(list)?,
        None => ship::jump_hops(&host, args.ssh_config.as_deref())?,
    };
    let session = match hops.is_empty() {
        true => ship::Session::connect(&destination, &options)?,
        false => ship::Session::connect_via(&destination, &options, &jumps.get(&hops, &options)?)?,
    };
    let describe = match &target.root {
        Some(root) => format!("{host} (sandbox root {})", root.display()),
        None => host,
    };
    Ok(Node::ssh(session, target.root.as_deref(), describe))
}

/// The jump hosts' connections of a run, one per list of hops, shared by every node behind them
/// (each node still has its own session, through a channel of the last hop's).
#[derive(Default)]
pub struct Jumps {
    connected: std::sync::Mutex<Vec<(Vec<ship::Destination>, Arc<ship::Jump>)>>,
}

impl Jumps {
    fn get(
        &self,
        hops: &[ship::Destination],
        options: &ship::ConnectOptions,
    ) -> Result<Arc<ship::Jump>> {
        // Held while connecting, so that two nodes behind one bastion open one connection.
        let mut connected = self
            .connected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, jump)) = connected.iter().find(|(h, _)| h.as_slice() == hops) {
            return Ok(Arc::clone(jump));
        }
        let jump = ship::Jump::connect(hops, options)?;
        connected.push((hops.to_vec(), Arc::clone(&jump)));
        Ok(jump)
    }

    /// The jump hosts' own counters, for the run's total.
    pub fn stats(&self) -> Vec<ship::Stats> {
        self.connected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(_, jump)| jump.stats())
            .collect()
    }
}

/// The driver of `profile` in `minikube profile list -o json` (`{"valid": [{"Name": ..,
/// "Config": {"Driver": ..}}], "invalid": [..]}`).
fn driver_of(profiles: &str, profile: &str) -> Option<String> {
    let list: serde_json::Value = serde_json::from_str(profiles).ok()?;
    ["valid", "invalid"]
        .iter()
        .filter_map(|k| list.get(k)?.as_array())
        .flatten()
        .find(|p| p.get("Name").and_then(|n| n.as_str()) == Some(profile))?
        .get("Config")?
        .get("Driver")?
        .as_str()
        .map(str::to_owned)
}

/// Asks minikube where its node is, as `minikube ssh` does: the VM's IP on port 22, or with
/// the docker driver the port Docker forwards to the container's sshd.
///
/// A node of a multi-node profile (`minikube start --ha`) is reached the same way with `-n
/// NODE`; with the docker driver its container has the node's name.
fn minikube_host(
    args: &NodeArgs,
    target: &NodeTarget,
    node: Option<&str>,
    options: &mut ship::ConnectOptions,
) -> Result<String> {
    if read_command("minikube", &["version"]).is_err() {
        bail!(
            "the minikube variant needs the minikube CLI on PATH; use the ssh variant with --host for other clusters"
        );
    }
    let profile = args.profile.as_str();
    let mut with_node = vec!["-p", profile];
    with_node.extend(node.map(|n| ["-n", n]).into_iter().flatten());
    options.user.get_or_insert_with(|| "docker".into());
    if options.identities.is_empty() {
        let key = read_command("minikube", &[&["ssh-key"], with_node.as_slice()].concat())?;
        options.identities.push(PathBuf::from(key.trim()));
    }
    let profiles = read_command("minikube", &["profile", "list", "-o", "json"]).unwrap_or_default();
    if driver_of(&profiles, profile).as_deref() == Some("docker") && options.port.is_none() {
        let container = node.unwrap_or(profile);
        let forwarded = read_command("docker", &["port", container, "22/tcp"])?;
        let port = forwarded
            .lines()
            .find_map(|l| l.rsplit_once(':').and_then(|(_, p)| p.trim().parse().ok()))
            .with_context(|| {
                format!("`docker port {container} 22/tcp` printed no port: {forwarded}")
            })?;
        options.port = Some(port);
        return Ok(target.host.clone().unwrap_or_else(|| "127.0.0.1".into()));
    }
    match &target.host {
        Some(host) => Ok(host.clone()),
        None => Ok(
            read_command("minikube", &[&["ip"], with_node.as_slice()].concat())?
                .trim()
                .to_string(),
        ),
    }
}

/// Runs a local CLI (minikube, docker) and returns its standard output; a failure says what
/// the command printed on standard error.
fn read_command(program: &str, args: &[&str]) -> Result<String> {
    let line = || format!("`{program} {}`", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {}", line()))?;
    if !out.status.success() {
        return Err(PipelineError::failed(format!(
            "{} failed ({}): {}",
            line(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
