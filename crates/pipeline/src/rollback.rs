//! Stage 5, rollback: when the API server does not come back from a manifest change, the
//! previous manifest goes back, the stage waits for the old hash and readiness, shows the API
//! server's last log lines, and fails.

use std::time::Duration;

use crate::cluster_args::Kube;
use crate::error::{Result, bail};
use crate::node::Node;
use crate::report::Steps;
use crate::wait::{self, CrashWatch, Expect, Health, PodLogs, RestartArgs, Restarted};

/// Restoring the manifest of a pod the kubelet stopped moments before counts as a restart of
/// that pod (its UID comes from the content), which arms the kubelet's crash back-off for it.
const BACKOFF_ARMED: &str = "for the next 10 minutes, the kubelet's crash back-off for the restored manifest is armed: should another change fail before then, its rollback waits 10 s or more (doubling with each restart) before the API server starts again";

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
    /// The node's name in the cluster (its mirror pod), when known.
    pub node_name: Option<&'a str>,
    /// Where its readiness is asked.
    pub health: Health<'a>,
}

/// Waits for the API server to come back from `change`; when it does not, puts the previous
/// manifest back, waits for that, shows the API server's log and fails.
pub fn wait_or_roll_back(
    kube: Option<&Kube>,
    args: &RestartArgs,
    change: &ManifestChange,
    steps: &Steps,
    step_name: &str,
) -> Result<()> {
    let node_name = change.node_name;
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
    let watch = CrashWatch {
        node: change.node,
        manifest_path: change.manifest_path,
        old_hash: change.old_hash,
    };
    let watch = match watch.look() {
        PodLogs::Unavailable => {
            steps.info(format!(
                "{} keeps no /var/log/pods: an API server that fails to start is noticed only after --timeout ({}s)",
                change.node.describe(),
                args.timeout
            ));
            None
        }
        _ => Some(&watch),
    };
    let waited = steps.run(&format!("wait{step_name}"), || {
        let restarted = Restarted::HashChangedFrom(change.old_hash);
        wait::wait_ready(
            kube,
            node_name,
            change.health,
            restarted,
            after,
            timeout,
            watch,
        )
        .map(|summary| ((), summary))
    });
    let Err(failure) = waited else {
        return Ok(());
    };
    let log = apiserver_log_tail(change.node);
    steps.output(format!("API server log (last lines):\n{log}"));
    if args.no_rollback {
        bail!(
            "the API server did not come back after {}, and --no-rollback left the new manifest in place: {}",
            change.command,
            failure.report()
        );
    }
    steps.run(&format!("rollback{step_name}"), || {
        change
            .node
            .write(change.manifest_path, change.previous.as_bytes(), 0o600)?;
        let summary = wait::wait_ready(
            kube,
            node_name,
            change.health,
            Restarted::HashIs(change.old_hash),
            before,
            timeout,
            None,
        )?;
        Ok(((), format!("previous manifest restored; {summary}")))
    })?;
    steps.warn(BACKOFF_ARMED);
    bail!(
        "{} failed and was rolled back: {}",
        change.command,
        failure.report()
    )
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
