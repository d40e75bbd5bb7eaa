//! Stage 4, wait: what `kubeadm upgrade` does after a manifest change. The mirror pod's config
//! hash must change (the kubelet really restarted the pod), then /readyz must answer, then the
//! running command must carry (or no longer carry) our flags, so an old process still answering
//! is never mistaken for success.

use std::time::{Duration, Instant, SystemTime};

use cluster::Readiness;

use crate::cluster_args::Kube;
use crate::error::{Result, bail};
use crate::fleet::{ApiEndpoint, NodeTarget};
use crate::node::Node;

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
    /// On a control plane of several nodes: how long, in seconds, every other API server must
    /// have answered /readyz without a break before the next one restarts (a load balancer's
    /// health checks need that long to send traffic back to a server that returned).
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub settle: u64,
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

/// Where an API server's readiness is asked.
#[derive(Clone, Copy)]
pub enum Health<'a> {
    /// The kubeconfig's server: the node's own API server on a single control plane.
    Kubeconfig,
    /// The node's own API server at its own address, through the node's session: behind a load
    /// balancer, the kubeconfig's server may answer for another node.
    Node {
        node: &'a Node,
        endpoint: &'a ApiEndpoint,
        probe: &'a cluster::NodeProbe,
    },
}

impl<'a> Health<'a> {
    /// A node's own API server when its address and a probe are known (a control plane of
    /// several nodes), otherwise the kubeconfig's server.
    pub fn of(
        node: &'a Node,
        target: &'a NodeTarget,
        probe: Option<&'a cluster::NodeProbe>,
    ) -> Health<'a> {
        match (&target.api, probe) {
            (Some(endpoint), Some(probe)) => Health::Node {
                node,
                endpoint,
                probe,
            },
            _ => Health::Kubeconfig,
        }
    }

    pub fn readiness(&self, kube: &Kube) -> Readiness {
        match self {
            Health::Kubeconfig => kube.block_on(kube.cluster.readiness()),
            Health::Node {
                node,
                endpoint,
                probe,
            } => probe.readiness(&endpoint.host, || {
                node.tunnel(&endpoint.host, endpoint.port)
                    .map_err(|e| std::io::Error::other(e.report()))
            }),
        }
    }

    /// Where the answer comes from, for messages.
    pub fn describe(&self, kube: &Kube) -> String {
        match self {
            Health::Kubeconfig => kube.cluster.server().to_string(),
            Health::Node { endpoint, .. } => format!("https://{endpoint}"),
        }
    }
}

pub fn mirror_hash(kube: &Kube, node_name: Option<&str>) -> Option<String> {
    mirror_pod(kube, node_name).and_then(|pod| pod.config_hash)
}

pub fn mirror_pod(kube: &Kube, node_name: Option<&str>) -> Option<cluster::MirrorPod> {
    kube.block_on(kube.cluster.apiserver_mirror_pod(node_name))
        .ok()
        .flatten()
}

/// How long the kubelet remembers a container's restart: its crash back-off entries expire
/// twice the 5-minute maximum back-off after the last restart.
const KUBELET_BACKOFF_MEMORY: Duration = Duration::from_secs(600);

/// A warning when the kubelet restarted this API server less than 10 minutes ago (a rollback
/// or a disable restores a manifest, and with it a pod UID, that ran minutes before). Should
/// this change fail, the restored pod waits out the crash back-off that restart left: 10 s,
/// doubling with each restart, on top of the usual downtime.
pub fn recent_restart_warning(pod: &cluster::MirrorPod, now: SystemTime) -> Option<String> {
    let since = now.duration_since(pod.last_restart?).unwrap_or_default();
    let left = KUBELET_BACKOFF_MEMORY
        .checked_sub(since)
        .filter(|left| !left.is_zero())?;
    Some(format!(
        "the kubelet restarted {} {} ago; for {} more, its crash back-off (10 s, doubling with each restart) delays the next start of that manifest: if this change fails, the rollback waits it out and the API server stays down that much longer",
        pod.name,
        minutes_seconds(since),
        minutes_seconds(left)
    ))
}

fn minutes_seconds(d: Duration) -> String {
    let secs = d.as_secs();
    match secs / 60 {
        0 => format!("{secs}s"),
        m => format!("{m}m{:02}s", secs % 60),
    }
}

/// Lists, for each kube-apiserver pod log under /var/log/pods written since the manifest
/// changed (`$1`) and not of the old pod (`$2`, its UID is the config hash), the log file
/// (`N.log`, one per container instance) and its last line matching [`FATAL`] (`$3`).
/// `none` when the node keeps no /var/log/pods.
const CRASH_SCRIPT: &str = r#"m=$1 old=$2 fatal=$3
[ -d /var/log/pods ] || { echo none; exit 0; }
find /var/log/pods -path '*/kube-system_kube-apiserver-*/kube-apiserver/*.log' -newer "$m" 2>/dev/null |
while IFS= read -r f; do
  pod=${f%/kube-apiserver/*}; uid=${pod##*_}
  [ "$uid" = "$old" ] && continue
  echo "log $uid ${f##*/}"
  grep -E "$fatal" "$f" | tail -n 1 | sed 's/^/fatal /'
done"#;

/// The CRI log lines of a server that is dying (grep -E): cobra's `Error: `, a klog `F` line,
/// a Go panic or runtime fatal error, on stderr.
const FATAL: &str = " stderr F (Error: |F[0-9]{4} |panic: |fatal error: )";

/// Watches the node, through the same session, for the new API server dying before it is
/// ready: the kubelet's pod log says so within a second, long before any timeout.
pub struct CrashWatch<'a> {
    pub node: &'a Node,
    pub manifest_path: &'a str,
    /// The config hash of the pod before the change: its logs are the old server's.
    pub old_hash: Option<&'a str>,
}

/// What the node's pod logs say about the new API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodLogs {
    /// The node keeps no /var/log/pods (older kops): only the timeout can tell.
    Unavailable,
    /// Nothing says it died (yet).
    Quiet,
    /// It exited before it was ready; the reason from its log.
    Died(String),
}

impl CrashWatch<'_> {
    pub fn look(&self) -> PodLogs {
        let manifest = self.node.path(self.manifest_path);
        let Ok(ran) = self.node.run(&[
            "sh",
            "-c",
            CRASH_SCRIPT,
            "k8s-audit-watch",
            &manifest,
            self.old_hash.unwrap_or(""),
            FATAL,
        ]) else {
            // A failed look is no evidence either way; the next one may work.
            return PodLogs::Quiet;
        };
        read_pod_logs(&ran.stdout_text())
    }
}

fn read_pod_logs(text: &str) -> PodLogs {
    if text.trim() == "none" {
        return PodLogs::Unavailable;
    }
    if let Some(fatal) = text.lines().find_map(|l| l.strip_prefix("fatal ")) {
        // CRI log lines: `<time> stderr F <message>`.
        let message = fatal.split_once(" F ").map_or(fatal, |(_, m)| m);
        return PodLogs::Died(message.trim().to_string());
    }
    // One log file per container instance. Three written since the change mean it died twice
    // without a fatal line. Two are not enough: a pod UID seen before (a restored manifest's)
    // can get an instance the kubelet replaces within seconds, with no error, before the one
    // that comes up (seen on the real node: 0.log appended, then 1.log 5 s later, ready).
    let mut started: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("log "))
        .filter_map(|l| l.split_once(' ').map(|(uid, _)| uid))
        .collect();
    started.sort_unstable();
    match started.windows(3).find(|w| w[0] == w[2]) {
        Some(pair) => PodLogs::Died(format!(
            "the kubelet restarted it (pod {} under /var/log/pods)",
            pair[0]
        )),
        None => PodLogs::Quiet,
    }
}

/// Polls until the API server is back as expected; the error says what was last seen. With
/// `watch`, the node's pod logs are read at least once a second too, and a new API server that
/// died ends the wait at once.
pub fn wait_ready(
    kube: &Kube,
    node_name: Option<&str>,
    health: Health,
    restarted: Restarted,
    expect: Expect,
    timeout: Duration,
    watch: Option<&CrashWatch>,
) -> Result<String> {
    let started = Instant::now();
    let mut last = String::from("nothing yet");
    while started.elapsed() < timeout {
        match check_once(kube, node_name, health, &restarted, &expect) {
            Ok(summary) => {
                return Ok(format!(
                    "{summary} after {:.1}s",
                    started.elapsed().as_secs_f64()
                ));
            }
            Err(state) => last = state,
        }
        if let Some(PodLogs::Died(reason)) = watch.map(CrashWatch::look) {
            bail!(
                "the new API server exited {:.1}s after the change, before it was ready: {reason}",
                started.elapsed().as_secs_f64()
            );
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
    health: Health,
    restarted: &Restarted,
    expect: &Expect,
) -> Result<String, String> {
    match health.readiness(kube) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(last_restart: Option<SystemTime>) -> cluster::MirrorPod {
        cluster::MirrorPod {
            name: "kube-apiserver-cp1".into(),
            config_hash: Some("3f2a".into()),
            command: vec!["kube-apiserver".into()],
            last_restart,
        }
    }

    #[test]
    fn a_restart_in_the_last_ten_minutes_is_warned_about() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(recent_restart_warning(&pod(None), now), None);
        let old = now - Duration::from_secs(600);
        assert_eq!(recent_restart_warning(&pod(Some(old)), now), None);
        let warning = recent_restart_warning(&pod(Some(now - Duration::from_secs(130))), now)
            .expect("a restart 130 s ago");
        assert!(
            warning
                .starts_with("the kubelet restarted kube-apiserver-cp1 2m10s ago; for 7m50s more"),
            "{warning}"
        );
        // A node clock ahead of ours: the restart counts as just now.
        let ahead = now + Duration::from_secs(5);
        let warning = recent_restart_warning(&pod(Some(ahead)), now).expect("warned");
        assert!(warning.contains(" 0s ago; for 10m00s more"), "{warning}");
    }

    #[test]
    fn pod_logs_say_when_the_new_server_died() {
        assert_eq!(read_pod_logs("none\n"), PodLogs::Unavailable);
        assert_eq!(read_pod_logs(""), PodLogs::Quiet);
        assert_eq!(read_pod_logs("log 3f2a 0.log\n"), PodLogs::Quiet);
        assert_eq!(
            read_pod_logs("log 3f2a 0.log\nfatal 2026-12-01T12:00:00.1Z stderr F Error: invalid argument \"5\" for \"--audit-webhook-batch-max-wait\" flag: time: missing unit\n"),
            PodLogs::Died("Error: invalid argument \"5\" for \"--audit-webhook-batch-max-wait\" flag: time: missing unit".into())
        );
        // A restored manifest's pod UID was seen before: its first new log is not 0.log, and
        // the kubelet may replace its first instance at once, as the real node did.
        assert_eq!(read_pod_logs("log 3f2a 1.log\n"), PodLogs::Quiet);
        assert_eq!(
            read_pod_logs("log 3f2a 0.log\nlog 3f2a 1.log\n"),
            PodLogs::Quiet
        );
        assert_eq!(
            read_pod_logs("log 3f2a 1.log\nlog 3f2a 2.log\nlog 3f2a 3.log\n"),
            PodLogs::Died("the kubelet restarted it (pod 3f2a under /var/log/pods)".into())
        );
        assert_eq!(
            read_pod_logs("log 3f2a 0.log\nlog 9b1c 0.log\nlog 3f2a 1.log\n"),
            PodLogs::Quiet
        );
    }

    /// FATAL, run through grep -E as the node runs it, on lines as the CRI writes them.
    #[test]
    fn fatal_lines_are_what_a_dying_server_writes() {
        let lines = [
            (
                "2026-12-01T12:00:00.1Z stderr F Error: unknown flag: --audit-bogus",
                true,
            ),
            (
                "2026-12-01T12:00:00.1Z stderr F F1201 12:00:00.1 1 server.go:1] etcd is gone",
                true,
            ),
            (
                "2026-12-01T12:00:00.1Z stderr F panic: runtime error: invalid memory address",
                true,
            ),
            (
                "2026-12-01T12:00:00.1Z stderr F fatal error: concurrent map writes",
                true,
            ),
            (
                "2026-12-01T12:00:00.1Z stderr F I1201 12:00:00.1 1 server.go:1] Error: not fatal",
                false,
            ),
            (
                "2026-12-01T12:00:00.1Z stderr F E1201 12:00:00.1 1 controller.go:1] panic: quoted",
                false,
            ),
            ("2026-12-01T12:00:00.1Z stdout F Error: on stdout", false),
        ];
        for (line, fatal) in lines {
            let matched = std::process::Command::new("grep")
                .args(["-qE", FATAL])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut grep| {
                    use std::io::Write;
                    grep.stdin
                        .take()
                        .unwrap()
                        .write_all(format!("{line}\n").as_bytes())?;
                    grep.wait()
                })
                .unwrap()
                .success();
            assert_eq!(matched, fatal, "{line}");
        }
    }
}
