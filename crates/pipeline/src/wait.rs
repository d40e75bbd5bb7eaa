//! Stage 4, wait: what `kubeadm upgrade` does after a manifest change. The mirror pod's config
//! hash must change (the kubelet really restarted the pod), then /readyz must answer, then the
//! running command must carry (or no longer carry) our flags, so an old process still answering
//! is never mistaken for success.

use std::time::{Duration, Instant};

use cluster::Readiness;

use crate::cluster_args::Kube;
use crate::error::{Result, bail};

/// How enable and disable wait for the API server, and whether they undo a change it does not survive.
#[derive(Debug, Clone, clap::Args)]
pub struct RestartArgs {
    /// How long to wait for the API server to come back, in seconds.
    #[arg(long, default_value_t = 180)]
    pub timeout: u64,
    /// Do not wait for the API server (no kubeconfig at hand); nothing checks that it came back.
    #[arg(long)]
    pub no_wait: bool,
    /// Leave the new manifest in place even when the API server does not come back.
    #[arg(long)]
    pub no_rollback: bool,
}

/// What the restarted API server's command must look like.
pub enum Expect<'a> {
    /// Every one of these flags is present.
    Flags(&'a [String]),
    /// None of these flags is present.
    NoFlags(&'a [String]),
}

/// How the wait knows the kubelet picked up the change.
pub enum Restarted<'a> {
    /// The mirror pod's hash differs from this one (it was recorded before the change).
    HashChangedFrom(Option<&'a str>),
    /// The mirror pod's hash is this one (a restored manifest brings its old hash back).
    HashIs(Option<&'a str>),
}

pub fn mirror_hash(kube: &Kube, node_name: Option<&str>) -> Option<String> {
    kube.block_on(kube.cluster.apiserver_mirror_pod(node_name))
        .ok()
        .flatten()
        .and_then(|pod| pod.config_hash)
}

/// Polls until the API server is back as expected; the error says what was last seen.
pub fn wait_ready(
    kube: &Kube,
    node_name: Option<&str>,
    restarted: Restarted,
    expect: Expect,
    timeout: Duration,
) -> Result<String> {
    let started = Instant::now();
    let mut last = String::from("nothing yet");
    while started.elapsed() < timeout {
        match check_once(kube, node_name, &restarted, &expect) {
            Ok(summary) => {
                return Ok(format!(
                    "{summary} after {:.1}s",
                    started.elapsed().as_secs_f64()
                ));
            }
            Err(state) => last = state,
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!(
        "the API server was not back within {}s; last seen: {last}",
        timeout.as_secs()
    )
}

fn check_once(
    kube: &Kube,
    node_name: Option<&str>,
    restarted: &Restarted,
    expect: &Expect,
) -> Result<String, String> {
    match kube.block_on(kube.cluster.readiness()) {
        Readiness::Ready => {}
        Readiness::NotReady(why) => return Err(format!("/readyz says {why}")),
        Readiness::Unreachable(why) => return Err(format!("API server unreachable ({why})")),
    }
    let pod = kube
        .block_on(kube.cluster.apiserver_mirror_pod(node_name))
        .map_err(|e| format!("mirror pod: {e}"))?;
    let Some(pod) = pod else {
        return Err("no kube-apiserver mirror pod in kube-system yet".into());
    };
    let hash = pod.config_hash.as_deref();
    match restarted {
        Restarted::HashChangedFrom(old) if hash == *old => {
            return Err(format!("{} still has the old config hash", pod.name));
        }
        Restarted::HashIs(want) if hash != *want => {
            return Err(format!(
                "{} has config hash {hash:?}, waiting for {want:?}",
                pod.name
            ));
        }
        _ => {}
    }
    match expect {
        Expect::Flags(flags) => {
            if let Some(missing) = flags.iter().find(|f| !pod.command.contains(f)) {
                return Err(format!("{} runs without {missing}", pod.name));
            }
        }
        Expect::NoFlags(flags) => {
            if let Some(present) = flags.iter().find(|f| pod.command.contains(f)) {
                return Err(format!("{} still runs with {present}", pod.name));
            }
        }
    }
    Ok(format!(
        "{} ready, config hash {}",
        pod.name,
        hash.unwrap_or("-")
    ))
}
