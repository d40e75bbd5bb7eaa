//! The probe and the places its events should show up.

use std::time::{Duration, Instant};

use audit_sink::{Collector, Config, Event, Server};

use super::{FALCO_POD_SELECTORS, Source, VerifyArgs};
use crate::cluster_args::Kube;
use crate::error::{Context, PipelineError, Result, bail};
use crate::node::Node;
use crate::report::{Reporter, Steps};
use crate::target::Jumps;

/// Runs `verify`; its findings go to `reporter` as output. On a control plane of several
/// nodes, one probe per node, sent to that node's own API server (through its session): each
/// server audits only the requests it serves, so each node's log must show its own probe.
pub(super) fn run(args: VerifyArgs, reporter: &dyn Reporter) -> Result<()> {
    let out = Steps::new(reporter);
    let (kube, fleet) = crate::preflight::cluster_and_fleet(&args.target, &args.cluster, true)?;
    let kube = kube.context("verify needs the cluster")?;
    let multi = fleet.nodes.len() > 1;
    let jumps = Jumps::default();
    let nodes: Vec<Node> = if multi || args.via.contains(&Source::NodeLog) {
        let results = crate::preflight::on_every_node(&fleet, |target| {
            args.target.connect(target, multi, &jumps)
        });
        crate::preflight::all_or_report(&fleet, results, "to connect")?
    } else {
        Vec::new()
    };
    let selectors: Vec<&str> = match &args.selector {
        Some(selector) => vec![selector.as_str()],
        None => FALCO_POD_SELECTORS.to_vec(),
    };
    for (i, node) in nodes.iter().enumerate() {
        let target = delivery_target(node, &args.target.node.audit_dir);
        out.output(match multi {
            true => format!("{}: {target}", fleet.nodes[i].name),
            false => target,
        });
    }
    let stamp = format!("{}-{}", std::process::id(), unix_millis());
    let probes: Vec<cluster::ProbeConfigMap> = match multi {
        false => vec![format!("audit-probe-{stamp}")],
        true => fleet
            .nodes
            .iter()
            .map(|n| format!("audit-probe-{stamp}-{}", n.name.to_ascii_lowercase()))
            .collect(),
    }
    .into_iter()
    .map(|name| cluster::ProbeConfigMap {
        namespace: args.namespace.clone(),
        name,
    })
    .collect();
    // A busy cluster sends every request's events here: keep only the probes'.
    let names: Vec<String> = probes.iter().map(|p| p.name.clone()).collect();
    let collector = Collector::keeping(move |e| names.iter().any(|n| about_probe(e, n)));
    let _server = if args.via.contains(&Source::Sink) {
        let server = kube
            .block_on(Server::bind(
                args.sink_listen,
                Config::default(),
                collector.clone(),
            ))
            .with_context(|| format!("starting audit-sink on {}", args.sink_listen))?;
        out.output(format!("audit-sink listening on {}", server.url()));
        Some(server)
    } else {
        None
    };

    if multi {
        let node_probe = kube.cluster.node_probe()?;
        for ((target, node), probe) in fleet.nodes.iter().zip(&nodes).zip(&probes) {
            let endpoint = target.api.as_ref().with_context(|| {
                format!(
                    "{}: its mirror pod shows no host IP, so its own API server cannot be asked",
                    target.name
                )
            })?;
            node_probe.create_and_delete_probe(
                &endpoint.host,
                || {
                    node.tunnel(&endpoint.host, endpoint.port)
                        .map_err(|e| std::io::Error::other(e.report()))
                },
                probe,
            )?;
            out.output(format!(
                "created and deleted ConfigMap {}/{} through {}'s own API server ({endpoint})",
                probe.namespace, probe.name, target.name
            ));
        }
    } else {
        kube.block_on(kube.cluster.create_and_delete_probe(&probes[0]))?;
        out.output(format!(
            "created and deleted ConfigMap {}/{}",
            probes[0].namespace, probes[0].name
        ));
    }
    let since = Instant::now();

    let timeout = Duration::from_secs(args.timeout);
    let mut missing = Vec::new();
    for (i, probe) in probes.iter().enumerate() {
        let node = nodes.get(i);
        let label = fleet.nodes[i].step_label(multi);
        for source in &args.via {
            let seen = match source {
                Source::Sink => wait_sink(
                    &kube,
                    &collector,
                    &probe.name,
                    timeout.saturating_sub(since.elapsed()),
                ),
                Source::NodeLog => poll(since, timeout, || {
                    node_log_events(node, &args.target.node.audit_dir, &probe.name)
                }),
                Source::Falco => poll(since, timeout, || {
                    falco_lines(&kube, &selectors, &probe.name)
                }),
            };
            match seen {
                Ok(found) => out.output(format!(
                    "✓ {source:?}{label}: {found} ({:.1}s after the delete)",
                    since.elapsed().as_secs_f64()
                )),
                Err(why) => {
                    out.output(format!("✗ {source:?}{label}: {}", why.report()));
                    missing.push((*source, node));
                }
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let mut hinted = Vec::new();
    for (source, _) in &missing {
        if !hinted.contains(source) {
            hinted.push(*source);
            out.output(format!(
                "  likely reasons for {source:?}: {}",
                hint(*source)
            ));
        }
    }
    // The webhook's own complaints say which of the reasons it is.
    for node in missing
        .iter()
        .filter(|(source, _)| matches!(source, Source::Falco | Source::Sink))
        .filter_map(|(_, node)| *node)
        .take(1)
    {
        let errors = webhook_errors(&webhook_error_lines(node));
        if errors.is_empty() {
            out.output("  the API server's recent log holds no audit webhook error");
        } else {
            out.output("  the API server's log says the webhook failed:");
            for (line, cause) in errors {
                out.output(format!("    {line}"));
                out.output(format!("      → {cause}"));
            }
        }
    }
    bail!(
        "the probe's audit events were not seen in {} place(s)",
        missing.len()
    )
}

fn hint(source: Source) -> &'static str {
    match source {
        Source::Falco => {
            "Falco is not running with the k8s audit rules, the webhook URL is not routable from the API server's host (try --falco-via-nodeport), or the selector (-l) matches no pod"
        }
        Source::NodeLog => {
            "audit is not enabled (see `cargo xtask status`), the mode is dynamic (no log), or the policy drops ConfigMap events"
        }
        Source::Sink => {
            "the webhook config does not point at --sink-listen, or the API server was not restarted with it"
        }
    }
}

fn unix_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Retries `look` every second until it finds something or the time is up.
fn poll(
    since: Instant,
    timeout: Duration,
    mut look: impl FnMut() -> Result<Option<String>>,
) -> Result<String> {
    loop {
        if let Some(found) = look()? {
            return Ok(found);
        }
        if since.elapsed() >= timeout {
            bail!("nothing within {}s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn describe(events: &[Event]) -> String {
    let stages: Vec<String> = events
        .iter()
        .map(|e| format!("{} {}", e.verb, e.stage.as_str()))
        .collect();
    format!("{} event(s): {}", events.len(), stages.join(", "))
}

fn about_probe(event: &Event, probe: &str) -> bool {
    event.resource().as_deref() == Some("configmaps") && event.name() == Some(probe)
}

fn wait_sink(kube: &Kube, collector: &Collector, probe: &str, timeout: Duration) -> Result<String> {
    kube.block_on(collector.wait_for(timeout, |e| about_probe(e, probe) && e.verb == "delete"))
        .map_err(|t| {
            PipelineError::failed(format!(
                "no delete event within {:?} ({} events received)",
                t.waited, t.seen
            ))
        })?;
    let events: Vec<Event> = collector
        .events()
        .into_iter()
        .filter(|e| about_probe(e, probe))
        .collect();
    Ok(describe(&events))
}

fn node_log_events(node: Option<&Node>, audit_dir: &str, probe: &str) -> Result<Option<String>> {
    let node = node.context("the node log needs the node")?;
    let log = node.read(&format!("{audit_dir}/audit.log"))?;
    let events: Vec<Event> = log
        .split(|b| *b == b'\n')
        // Cheap filter first: the log holds every request the policy records.
        .filter(|line| line.windows(probe.len()).any(|w| w == probe.as_bytes()))
        .filter_map(|line| audit_sink::decode(line).ok())
        .flatten()
        .filter(|e| about_probe(e, probe))
        .collect();
    Ok(events
        .iter()
        .any(|e| e.verb == "delete")
        .then(|| describe(&events)))
}

fn falco_lines(kube: &Kube, selectors: &[&str], probe: &str) -> Result<Option<String>> {
    let mut logs: Vec<cluster::PodLog> = Vec::new();
    for selector in selectors {
        for log in kube.block_on(kube.cluster.recent_logs(selector, 600))? {
            // A pod may carry both sets of labels.
            if !logs
                .iter()
                .any(|l| (&l.namespace, &l.pod) == (&log.namespace, &log.pod))
            {
                logs.push(log);
            }
        }
    }
    if logs.is_empty() {
        bail!("no pod matches the selector {}", selectors.join(" or "));
    }
    let hits: Vec<String> = logs
        .iter()
        .flat_map(|log| {
            log.text
                .lines()
                .filter(|l| l.contains(probe))
                .map(move |l| format!("{}: {l}", log.pod))
        })
        .collect();
    Ok((!hits.is_empty()).then(|| format!("{} line(s), first: {}", hits.len(), hits[0])))
}

/// Which URL the API server delivers to, from the webhook kubeconfig on the node (what the
/// server actually read, not what this run would write).
fn delivery_target(node: &Node, audit_dir: &str) -> String {
    let path = format!("{audit_dir}/webhook-config.yaml");
    match node
        .read_many(&[&path])
        .map(|mut files| files.pop().flatten())
    {
        Ok(Some(bytes)) => match webhook_server(&bytes) {
            Some(url) => format!("the API server delivers audit events to {url} (from {path})"),
            None => format!("{path} names no server"),
        },
        Ok(None) => format!(
            "no {path} on the node: static audit is not enabled there (the dynamic modes deliver through the AuditSink)"
        ),
        Err(e) => format!("could not read {path}: {}", e.report()),
    }
}

/// `clusters[0].cluster.server` of a kubeconfig.
fn webhook_server(kubeconfig: &[u8]) -> Option<String> {
    let yaml: serde_norway::Value = serde_norway::from_slice(kubeconfig).ok()?;
    yaml.get("clusters")?
        .get(0)?
        .get("cluster")?
        .get("server")?
        .as_str()
        .map(str::to_string)
}

/// The batch webhook's marker for a failed delivery. Each is followed by one line per event it
/// dropped (hundreds), so the last lines of the log rarely show it: the marker is searched for.
const WEBHOOK_ERROR: &str = "Error in audit plugin 'webhook'";

/// The last webhook errors in the API server's log on the node, from the same places the
/// rollback reads (crictl, the kubelet's pod logs, kops's log file), searched on the node so
/// that only the matching lines travel.
fn webhook_error_lines(node: &Node) -> String {
    const SCRIPT: &str = r#"marker=$1 kops_log=$2
{
  if command -v crictl >/dev/null 2>&1; then
    id=$(crictl ps -a --name kube-apiserver -q 2>/dev/null | head -n 1)
    if [ -n "$id" ]; then crictl logs --tail 20000 "$id" 2>&1; fi
  fi
  for f in /var/log/pods/kube-system_kube-apiserver-*/kube-apiserver/*.log "$kops_log"; do
    if [ -f "$f" ]; then tail -n 20000 "$f"; fi
  done
} | grep -F -e "$marker" | tail -n 5
"#;
    let kops_log = node.path("/var/log/kube-apiserver.log");
    match node.run(&[
        "sh",
        "-c",
        SCRIPT,
        "webhook-errors",
        WEBHOOK_ERROR,
        &kops_log,
    ]) {
        Ok(out) => out.stdout_text(),
        Err(_) => String::new(),
    }
}

/// The audit webhook's errors in an API server log, each with what it most likely means. The
/// batch backend logs every failed delivery as `Error in audit plugin 'webhook' ...`.
pub fn webhook_errors(log: &str) -> Vec<(String, &'static str)> {
    log.lines()
        .filter(|line| line.contains(WEBHOOK_ERROR))
        .map(|line| {
            let lower = line.to_ascii_lowercase();
            let cause = if lower.contains("connection refused") {
                "nothing listens there: Falco is not running, or not on this port"
            } else if lower.contains("i/o timeout")
                || lower.contains("no route to host")
                || lower.contains("network is unreachable")
                || lower.contains("deadline exceeded")
            {
                "the address is not reachable from the API server's host (a ClusterIP without kube-proxy, a NetworkPolicy); try --falco-via-nodeport"
            } else if lower.contains("no such host") || lower.contains("server misbehaving") {
                "the host name does not resolve from the API server's host (cluster DNS names never do)"
            } else if lower.contains("x509") || lower.contains("tls") || lower.contains("certificate") {
                "TLS failed: check --falco-ca-file, the server certificate's names, and the client certificate"
            } else if lower.contains("status code") || lower.contains("the server") {
                "Falco answered with an HTTP error: check the path (/k8s-audit for the plugin, /k8s_audit for the webserver)"
            } else {
                "the webhook could not deliver"
            };
            // The message is what matters; the klog header and CRI prefix are not.
            let message = line.find(WEBHOOK_ERROR).map_or(line, |i| &line[i..]);
            let shown: String = message.chars().take(400).collect();
            (shown, cause)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as the real kube-apiserver v1.20.2 wrote them with a webhook on a closed port: the
    /// error, then one line per dropped event.
    const REAL_LOG: &str = "E1201 12:19:23.952973    3236 metrics.go:109] Error in audit plugin 'webhook' affecting 275 audit events: Post \"http://127.0.0.1:36269/k8s-audit\": dial tcp 127.0.0.1:36269: connect: connection refused
Impacted events:
2026-12-01T12:19:22.496740272Z AUDIT: id=\"ff5722b2-bd22-4140-a200-5bf11bbd5bbc\" stage=\"RequestReceived\" ip=\"127.0.0.1\" method=\"get\" user=\"admin\" uri=\"/readyz\" response=\"<deferred>\"
";

    #[test]
    fn webhook_errors_are_found_and_explained() {
        let errors = webhook_errors(REAL_LOG);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0]
                .0
                .starts_with("Error in audit plugin 'webhook' affecting 275 audit events: Post")
        );
        assert!(errors[0].1.starts_with("nothing listens there"));
        // In a pod log file, with the CRI prefix.
        let cri = "2026-12-01T12:19:23.9Z stderr F E1201 12:19:23.952973 1 metrics.go:109] Error in audit plugin 'webhook' affecting 3 audit events: Post \"https://10.0.0.1:9765/k8s-audit\": x509: certificate signed by unknown authority";
        assert!(webhook_errors(cri)[0].1.starts_with("TLS failed"));
        assert!(webhook_errors("I1201 quota admission added evaluator\n").is_empty());
    }

    #[test]
    fn the_webhook_url_comes_from_the_kubeconfig_on_the_node() {
        let url = crate::templates::FalcoUrl::parse("http://127.0.0.1:30007/k8s-audit").unwrap();
        let config = crate::templates::webhook_config(&url).unwrap();
        assert_eq!(
            webhook_server(&config).as_deref(),
            Some("http://127.0.0.1:30007/k8s-audit")
        );
        assert_eq!(webhook_server(b"not: [yaml"), None);
    }
}
