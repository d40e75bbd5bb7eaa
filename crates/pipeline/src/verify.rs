//! `verify`: proves that audit events flow. It creates and deletes a uniquely named
//! ConfigMap, then waits for that ConfigMap's events wherever they should show up: Falco's logs,
//! the node's audit log, or an `audit-sink` it hosts itself.

use std::time::{Duration, Instant};

use audit_sink::{Collector, Config, Event, Server};

use crate::cluster_args::{ClusterArgs, Kube};
use crate::error::{Context, PipelineError, Result, bail};
use crate::node::Node;
use crate::report::{Reporter, Steps};
use crate::target::TargetArgs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    /// The Falco pods' logs (label selector -l).
    Falco,
    /// The node's audit log, through the same session enable uses (static and dynamic+log).
    NodeLog,
    /// An audit-sink hosted by verify itself on --sink-listen (the webhook must point at it).
    Sink,
}

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  cargo xtask verify                                   # minikube: Falco's logs and the node's audit log
  cargo xtask verify ssh --host cp1 --via node-log
  cargo xtask verify local --root /tmp/node --via sink --sink-listen 127.0.0.1:8765")]
pub struct VerifyArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Where to look for the events; repeatable or comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Source::Falco, Source::NodeLog])]
    pub via: Vec<Source>,
    /// The Falco pods' label selector.
    #[arg(short = 'l', long, default_value = "app=falco-example")]
    pub selector: String,
    /// The address the hosted audit-sink listens on (with --via sink).
    #[arg(long, default_value = "127.0.0.1:8765")]
    pub sink_listen: std::net::SocketAddr,
    /// The namespace of the probe ConfigMap.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// How long to wait for the events, in seconds (batching alone delays them up to 5 s).
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

/// Runs `verify`; its findings go to `reporter` as output.
pub fn run(args: VerifyArgs, reporter: &dyn Reporter) -> Result<()> {
    let out = Steps::new(reporter);
    let kube = args.cluster.connect_required()?;
    let node = if args.via.contains(&Source::NodeLog) {
        Some(args.target.connect()?)
    } else {
        None
    };
    let probe = cluster::ProbeConfigMap {
        namespace: args.namespace.clone(),
        name: format!("audit-probe-{}-{}", std::process::id(), unix_millis()),
    };
    // A busy cluster sends every request's events here: keep only the probe's.
    let probe_name = probe.name.clone();
    let collector = Collector::keeping(move |e| about_probe(e, &probe_name));
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

    kube.block_on(kube.cluster.create_and_delete_probe(&probe))?;
    let since = Instant::now();
    out.output(format!(
        "created and deleted ConfigMap {}/{}",
        probe.namespace, probe.name
    ));

    let timeout = Duration::from_secs(args.timeout);
    let mut missing = Vec::new();
    for source in &args.via {
        let seen = match source {
            Source::Sink => wait_sink(
                &kube,
                &collector,
                &probe.name,
                timeout.saturating_sub(since.elapsed()),
            ),
            Source::NodeLog => poll(since, timeout, || {
                node_log_events(node.as_ref(), &args.target.node.audit_dir, &probe.name)
            }),
            Source::Falco => poll(since, timeout, || {
                falco_lines(&kube, &args.selector, &probe.name)
            }),
        };
        match seen {
            Ok(found) => out.output(format!(
                "✓ {source:?}: {found} ({:.1}s after the delete)",
                since.elapsed().as_secs_f64()
            )),
            Err(why) => {
                out.output(format!("✗ {source:?}: {}", why.report()));
                missing.push((*source, why));
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    for (source, _) in &missing {
        out.output(format!(
            "  likely reasons for {source:?}: {}",
            hint(*source)
        ));
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

fn falco_lines(kube: &Kube, selector: &str, probe: &str) -> Result<Option<String>> {
    let logs = kube.block_on(kube.cluster.recent_logs(selector, 600))?;
    if logs.is_empty() {
        bail!("no pod matches the selector {selector}");
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
