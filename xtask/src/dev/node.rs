//! `cargo xtask node up|down|status`: a real single-node control plane on this machine (the
//! kubelet, containerd and runc running etcd and kube-apiserver as static pods), in namespaces
//! of its own. The harness is testkit's, included by path like the binary cache.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use xshell::Shell;

// Shared by path with the tests' harness, which xtask may not depend on.
#[path = "../../../crates/testkit/src/node.rs"]
#[allow(dead_code)]
mod harness;

use super::apiserver::apiserver_cache;
use harness::{Node, NodeSpec};

/// The node's name: its mirror pods are `kube-system/etcd-k8s-audit-node` and
/// `kube-system/kube-apiserver-k8s-audit-node`.
const NAME: &str = "k8s-audit-node";

#[derive(Subcommand)]
pub enum NodeCommand {
    /// Build what is missing, then start the node and wait until the API server is ready.
    Up,
    /// Stop the node and remove every trace of it.
    Down,
    /// Print the node's address, kubeconfig, readiness and mirror pods.
    Status,
    /// Edit the API server's manifest (a harmless flag) and time until the new pod is ready;
    /// then edit it back.
    Restart,
}

impl NodeCommand {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let dir = state_dir()?;
        match self {
            NodeCommand::Up => up(sh, &dir),
            NodeCommand::Down => {
                let Some(node) = Node::load(&dir)? else {
                    eprintln!("node: nothing to take down ({} has no node)", dir.display());
                    return Ok(());
                };
                node.down()?;
                eprintln!("node: down, {} removed", dir.display());
                Ok(())
            }
            NodeCommand::Status => status(&loaded(&dir)?),
            NodeCommand::Restart => restart(&loaded(&dir)?),
        }
    }
}

fn state_dir() -> anyhow::Result<PathBuf> {
    let binary = apiserver_cache::binary_path()
        .context("neither XDG_CACHE_HOME nor HOME is set: no place for the node")?;
    Ok(binary
        .parent()
        .and_then(Path::parent)
        .context("the cache path has two parents")?
        .join("node"))
}

fn loaded(dir: &Path) -> anyhow::Result<Node> {
    Node::load(dir)?.with_context(|| {
        format!(
            "no node is up ({} has none): run `cargo xtask node up`",
            dir.display()
        )
    })
}

fn up(sh: &Shell, dir: &Path) -> anyhow::Result<()> {
    if let Some(reason) = harness::unsupported_reason() {
        bail!("this machine cannot run a node: {reason}");
    }
    let binary = super::apiserver::build(sh)?;
    let kubelet = apiserver_cache::kubelet_path().context("HOME is set")?;
    let tree = apiserver_cache::source_tree().context("HOME is set")?;
    let spec = NodeSpec {
        name: NAME.to_owned(),
        dir: dir.to_path_buf(),
        image_cache: dir
            .parent()
            .context("state dir has a parent")?
            .join("images"),
        kube_apiserver: binary,
        kubelet,
        pause_source: tree.join("build/pause/linux/pause.c"),
    };
    let (node, figures) = Node::up(&spec, Duration::from_secs(180))?;
    eprintln!(
        "node: up; /readyz ok {:.1?} after the kubelet started, both mirror pods with their config hash after {:.1?}",
        figures.ready, figures.mirror_pods
    );
    status(&node)
}

fn status(node: &Node) -> anyhow::Result<()> {
    println!(
        "node        {} ({} on the veth pair, host side {})",
        node.name,
        node.ip(),
        node.host_ip()
    );
    println!(
        "api server  {}  /readyz: {}",
        node.api_url(),
        if node.readyz() { "ok" } else { "not ready" }
    );
    println!("kubeconfig  {}", node.kubeconfig().display());
    println!(
        "manifests   {}",
        node.host_path("/etc/kubernetes/manifests").display()
    );
    println!("enter       {} sh", node.enter_prefix());
    match node.mirror_pods() {
        None => println!("mirror pods (the API server does not answer)"),
        Some(pods) => {
            for pod in pods {
                println!(
                    "pod         kube-system/{}  config.hash={}  mirror={}  ready={}  restarts={}",
                    pod.name,
                    pod.config_hash.as_deref().unwrap_or("-"),
                    pod.is_mirror,
                    pod.ready,
                    pod.restarts
                );
            }
        }
    }
    Ok(())
}

/// A manifest edit as the pipeline makes one: the kubelet sees the new file, kills the old
/// pod and starts a new one under a new config hash.
fn restart(node: &Node) -> anyhow::Result<()> {
    let manifest = node.manifest("kube-apiserver");
    let original = std::fs::read_to_string(&manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let flag = "    - --token-auth-file=/etc/kubernetes/pki/tokens.csv\n";
    if !original.contains(flag) {
        bail!("{}: expected the line {flag:?}", manifest.display());
    }
    let edited = original.replace(flag, &format!("{flag}    - --v=1\n"));
    for (what, text) in [("edit", &edited), ("edit back", &original)] {
        let before = node
            .mirror_pod("kube-apiserver")
            .and_then(|p| p.config_hash)
            .context("the API server's mirror pod has no config hash")?;
        let tmp = manifest.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        let started = Instant::now();
        std::fs::rename(&tmp, &manifest)?;
        // The mirror pod can change before the old server stops, and the old one answers
        // /readyz until then: the new one is ready only after a refusal (both bind :6443).
        let (mut hash_at, mut down_at, mut ready_at) = (None, None, None);
        while hash_at.is_none() || ready_at.is_none() {
            if started.elapsed() > Duration::from_secs(120) {
                bail!(
                    "not ready again 120 s after the {what}\n{}",
                    node.log_tails(30)
                );
            }
            if hash_at.is_none() {
                let hash = node
                    .mirror_pod("kube-apiserver")
                    .and_then(|p| p.config_hash);
                if hash.is_some_and(|h| h != before) {
                    hash_at = Some(started.elapsed());
                }
            }
            let ready = node.readyz();
            if down_at.is_none() && !ready {
                down_at = Some(started.elapsed());
            } else if down_at.is_some() && ready {
                ready_at = Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "node: {what}: new config.hash after {:.1?}, old server gone after {:.1?}, \
             /readyz ok again after {:.1?}",
            hash_at.unwrap_or_default(),
            down_at.unwrap_or_default(),
            ready_at.unwrap_or_default()
        );
    }
    Ok(())
}
