//! Waiting for the kubelet to restart the API server on a changed manifest, and putting the old
//! manifest back when it does not come back. The wait is the one `kubeadm upgrade` does: the
//! mirror pod's config hash must change (the kubelet really restarted the pod), then /readyz must
//! answer, then the running command must carry (or no longer carry) our flags, so an old process
//! still answering is never mistaken for success.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use cluster::Readiness;

use crate::cluster_args::Kube;
use crate::node::Node;
use crate::steps::Steps;

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

/// A manifest change the kubelet is about to act on.
pub struct ManifestChange<'a> {
    pub node: &'a Node,
    pub manifest_path: &'a str,
    /// The bytes to put back if the API server does not survive the change.
    pub previous: &'a str,
    /// The mirror pod's config hash before the change.
    pub old_hash: Option<&'a str>,
    /// Our audit flags: the change adds them (enable) or removes them (disable).
    pub flags: &'a [String],
    pub adds_flags: bool,
    /// `enable` or `disable`, for messages.
    pub command: &'a str,
}

/// Waits for the API server to come back from `change`; when it does not, puts the previous
/// manifest back, waits for that, shows the API server's log and fails.
pub fn wait_or_roll_back(
    kube: Option<&Kube>,
    node_name: Option<&str>,
    args: &RestartArgs,
    change: &ManifestChange,
    steps: &Steps,
) -> Result<()> {
    let Some(kube) = kube.filter(|_| !args.no_wait) else {
        steps.warn("--no-wait: nothing checked that the API server came back; run `cargo xtask status` once it has");
        return Ok(());
    };
    let (after, before) = if change.adds_flags {
        (Expect::Flags(change.flags), Expect::NoFlags(change.flags))
    } else {
        (Expect::NoFlags(change.flags), Expect::Flags(change.flags))
    };
    let timeout = Duration::from_secs(args.timeout);
    let waited = steps.run("wait", || {
        let restarted = Restarted::HashChangedFrom(change.old_hash);
        wait_ready(kube, node_name, restarted, after, timeout).map(|summary| ((), summary))
    });
    let Err(failure) = waited else {
        return Ok(());
    };
    let log = apiserver_log_tail(change.node);
    println!("API server log (last lines):\n{log}");
    if args.no_rollback {
        bail!(
            "the API server did not come back after {}, and --no-rollback left the new manifest in place: {failure:#}",
            change.command
        );
    }
    steps.run("rollback", || {
        change
            .node
            .write(change.manifest_path, change.previous.as_bytes(), 0o600)?;
        let summary = wait_ready(
            kube,
            node_name,
            Restarted::HashIs(change.old_hash),
            before,
            timeout,
        )?;
        Ok(((), format!("previous manifest restored; {summary}")))
    })?;
    bail!("{} failed and was rolled back: {failure:#}", change.command)
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

/// The last lines of the API server's log, from wherever this node keeps it.
pub fn apiserver_log_tail(node: &Node) -> String {
    // crictl first (kubeadm, minikube, RKE2), then the kubelet's pod logs, then kops's log file.
    if let Ok(ps) = node.run(&["crictl", "ps", "-a", "--name", "kube-apiserver", "-q"])
        && ps.status == 0
        && let Some(id) = ps.stdout_text().lines().next().map(str::to_string)
        && let Ok(logs) = node.run(&["crictl", "logs", "--tail", "25", id.trim()])
        && logs.status == 0
    {
        return format!("{}{}", logs.stdout_text(), logs.stderr);
    }
    let pod_logs = "tail -n 25 /var/log/pods/kube-system_kube-apiserver-*/kube-apiserver/*.log";
    if let Ok(out) = node.run(&["sh", "-c", pod_logs])
        && out.status == 0
        && !out.stdout.trim_ascii().is_empty()
    {
        return out.stdout_text();
    }
    let kops_log = node.path("/var/log/kube-apiserver.log");
    match node.run(&["tail", "-n", "25", &kops_log]) {
        Ok(out) if out.status == 0 => out.stdout_text(),
        _ => {
            "(no API server log found: tried crictl, /var/log/pods and /var/log/kube-apiserver.log)"
                .into()
        }
    }
}
