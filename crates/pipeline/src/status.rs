//! `status`: what is enabled on the node and in the cluster. Reads only.

use patch_apiserver::Mode;

use crate::cluster_args::{ClusterArgs, Kube};
use crate::error::{PipelineError, Result};
use crate::fleet::NodeTarget;
use crate::node::Node;
use crate::preflight::{self, describe_version, read_manifest};
use crate::report::{Reporter, Steps};
use crate::state::{self, State};
use crate::target::{Jumps, TargetArgs};
use crate::wait::{self, Health};

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  cargo xtask status
  cargo xtask status ssh --host cp1 --kubeconfig ~/.kube/prod
  cargo xtask status ssh --kubeconfig ~/.kube/prod     # every control-plane node, one row each")]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// What one node holds.
struct NodeStatus {
    target: NodeTarget,
    node: Node,
    manifest_path: String,
    inspection: patch_apiserver::Inspection,
    /// `stat` of the policy, webhook config and log: `None` when absent.
    files: Vec<(&'static str, Option<String>)>,
    record: Option<State>,
}

impl NodeStatus {
    /// The audit flags the manifest carries, sorted: two nodes audited alike show the same.
    fn audit_flags(&self) -> Vec<&str> {
        let mut flags: Vec<&str> = self
            .inspection
            .apiserver_args
            .iter()
            .map(String::as_str)
            .filter(|a| patch_apiserver::is_audit_related(a))
            .collect();
        flags.sort_unstable();
        flags
    }
}

/// Runs `status`; every line goes to `reporter` as output. On a control plane of several
/// nodes, one row per node and the nodes whose audit configuration differs from the others'.
pub fn run(args: StatusArgs, reporter: &dyn Reporter) -> Result<()> {
    let out = Steps::new(reporter);
    let (kube, fleet) = preflight::cluster_and_fleet(&args.target, &args.cluster, false)?;
    for warning in &fleet.warnings {
        out.warn(warning);
    }
    let multi = fleet.nodes.len() > 1;
    let jumps = Jumps::default();
    let results =
        preflight::on_every_node(&fleet, |target| read_node(&args, target, multi, &jumps));
    let nodes = preflight::all_or_report(&fleet, results, "to answer")?;
    match nodes.as_slice() {
        [one] => single(&args, one, kube.as_ref(), &out),
        _ => several(&args, &nodes, kube.as_ref(), &out),
    }
}

fn read_node(
    args: &StatusArgs,
    target: &NodeTarget,
    multi: bool,
    jumps: &Jumps,
) -> Result<NodeStatus> {
    let node = args.target.connect(target, multi, jumps)?;
    let manifest_path = args.target.manifest();
    let manifest = read_manifest(&node, &manifest_path)?;
    let inspection = patch_apiserver::inspect(&manifest).map_err(|e| {
        PipelineError::failed(e.located(&format!("{manifest_path} on {}", node.describe())))
    })?;
    let audit_dir = &args.target.node.audit_dir;
    use patch_apiserver::AuditFile;
    let mut files = Vec::new();
    for name in [AuditFile::Policy, AuditFile::WebhookConfig, AuditFile::Log].map(|f| f.file_name())
    {
        let path = node.path(&format!("{audit_dir}/{name}"));
        let stat = node.run(&["stat", "-c", "%a %U:%G %s bytes", &path])?;
        let line = (stat.status == 0).then(|| stat.stdout_text().trim().to_string());
        files.push((name, line));
    }
    let record = node
        .read(&state::state_path(audit_dir))
        .ok()
        .and_then(|bytes| State::parse(&String::from_utf8_lossy(&bytes), audit_dir).ok());
    Ok(NodeStatus {
        target: target.clone(),
        node,
        manifest_path,
        inspection,
        files,
        record,
    })
}

fn single(args: &StatusArgs, status: &NodeStatus, kube: Option<&Kube>, out: &Steps) -> Result<()> {
    let NodeStatus {
        node,
        manifest_path,
        inspection,
        record,
        ..
    } = status;
    out.output(format!("node       {}", node.describe()));
    out.output(format!(
        "manifest   {manifest_path} ({}, Kubernetes {})",
        inspection.shape,
        describe_version(inspection.version.as_ref())
    ));
    out.output(format!(
        "audit      {}",
        inspection
            .patched
            .map_or("not enabled".into(), |m| format!("{m} mode"))
    ));
    for flag in inspection
        .apiserver_args
        .iter()
        .filter(|a| patch_apiserver::is_audit_related(a))
    {
        out.output(format!("  flag     {flag}"));
    }
    let audit_dir = &args.target.node.audit_dir;
    for (name, stat) in &status.files {
        out.output(format!(
            "  file     {audit_dir}/{name}: {}",
            stat.as_deref().unwrap_or("absent")
        ));
    }
    if let Some(record) = &record {
        out.output(format!(
            "backup     {} (enabled in {} mode)",
            record.backup,
            record.mode()
        ));
    }
    if let Some(kube) = kube {
        out.output(format!(
            "cluster    {} ({})",
            kube.cluster.server(),
            kube.block_on(kube.cluster.version())?
        ));
        out.output(format!(
            "readiness  {:?}",
            kube.block_on(kube.cluster.readiness())
        ));
        let name = status
            .target
            .in_cluster
            .then_some(status.target.name.as_str());
        if let Some(pod) = kube.block_on(kube.cluster.apiserver_mirror_pod(name))? {
            let running = pod
                .command
                .iter()
                .filter(|a| patch_apiserver::is_audit_related(a))
                .count();
            out.output(format!(
                "pod        {} runs with {running} audit flag(s), config hash {}",
                pod.name,
                pod.config_hash.unwrap_or_default()
            ));
        }
        cluster_lines(args, kube, inspection.patched, record.as_ref(), out)?;
    } else if inspection.patched.is_some_and(|m| m != Mode::Static) {
        out.output("cluster    not checked (pass --kubeconfig to see the AuditSink)");
    }
    Ok(())
}

/// One row per node, then the drift between them, then the cluster's objects.
fn several(
    args: &StatusArgs,
    nodes: &[NodeStatus],
    kube: Option<&Kube>,
    out: &Steps,
) -> Result<()> {
    if let Some(kube) = kube {
        out.output(format!(
            "cluster    {} ({})",
            kube.cluster.server(),
            kube.block_on(kube.cluster.version())?
        ));
    }
    let probe = match kube {
        Some(kube) => Some(kube.cluster.node_probe()?),
        None => None,
    };
    let width = nodes
        .iter()
        .map(|n| n.target.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    out.output(format!(
        "{:<width$}  {:<11}  {:<5}  {:<10}  {:<34}  backup",
        "node", "audit", "flags", "readiness", "config hash"
    ));
    for status in nodes {
        let health = Health::of(&status.node, &status.target, probe.as_ref());
        let (readiness, hash) = match (kube, health) {
            (Some(kube), Health::Node { .. }) => {
                let ready = match health.readiness(kube) {
                    cluster::Readiness::Ready => "ready".to_string(),
                    cluster::Readiness::NotReady(_) => "NOT READY".into(),
                    cluster::Readiness::Unreachable(_) => "UNREACHABLE".into(),
                };
                let name = status
                    .target
                    .in_cluster
                    .then_some(status.target.name.as_str());
                let hash = wait::mirror_hash(kube, name).unwrap_or_else(|| "-".into());
                (ready, hash)
            }
            _ => ("-".into(), "-".into()),
        };
        out.output(format!(
            "{:<width$}  {:<11}  {:<5}  {:<10}  {:<34}  {}",
            status.target.name,
            status
                .inspection
                .patched
                .map_or("off".into(), |m| m.to_string()),
            status.audit_flags().len(),
            readiness,
            hash,
            status.record.as_ref().map_or("-", |r| r.backup.as_str())
        ));
    }
    for line in drift(nodes) {
        out.output(line);
    }
    if let Some(kube) = kube {
        let first = &nodes[0];
        cluster_lines(
            args,
            kube,
            first.inspection.patched,
            first.record.as_ref(),
            out,
        )?;
    }
    Ok(())
}

/// Groups the nodes by their audit flags; more than one group is drift, named per group.
fn drift(nodes: &[NodeStatus]) -> Vec<String> {
    let mut groups: Vec<(Vec<&str>, Vec<&str>)> = Vec::new();
    for status in nodes {
        let flags = status.audit_flags();
        match groups.iter_mut().find(|(f, _)| *f == flags) {
            Some((_, names)) => names.push(&status.target.name),
            None => groups.push((flags, vec![&status.target.name])),
        }
    }
    if groups.len() < 2 {
        return vec!["drift      none: every node carries the same audit flags".into()];
    }
    // The largest group is the reference; every other one differs from it.
    groups.sort_by_key(|(_, names)| std::cmp::Reverse(names.len()));
    let (reference, majority) = &groups[0];
    let mut lines = Vec::new();
    for (flags, names) in &groups[1..] {
        let missing: Vec<&str> = reference
            .iter()
            .filter(|f| !flags.contains(f))
            .copied()
            .collect();
        let extra: Vec<&str> = flags
            .iter()
            .filter(|f| !reference.contains(f))
            .copied()
            .collect();
        lines.push(format!(
            "DRIFT      {} differ(s) from {}: {}{}",
            names.join(", "),
            majority.join(", "),
            if missing.is_empty() {
                String::new()
            } else {
                format!("lacks {}", missing.join(" "))
            },
            if extra.is_empty() {
                String::new()
            } else {
                format!(
                    "{}has {}",
                    if missing.is_empty() { "" } else { "; " },
                    extra.join(" ")
                )
            }
        ));
    }
    lines
}

/// What the cluster itself holds: kube-system/kubeadm-config against the manifest, the AuditSink.
fn cluster_lines(
    args: &StatusArgs,
    kube: &Kube,
    patched: Option<Mode>,
    record: Option<&State>,
    out: &Steps,
) -> Result<()> {
    let audit_dir = &args.target.node.audit_dir;
    if let Some(config) = kube.block_on(kube.cluster.read_kubeadm_config())? {
        let mut options = record.and_then(|r| r.enables.last()).map_or_else(
            || patch_apiserver::PatchOptions::new(patched.unwrap_or(Mode::Static)),
            |e| e.options(),
        );
        options.audit_dir = audit_dir.to_string();
        let durable =
            patch_apiserver::check_cluster_config(&config.cluster_configuration, &options)
                .unwrap_or(false);
        let agree = durable == patched.is_some();
        out.output(format!(
            "kubeadm    kube-system/kubeadm-config {} the audit settings; the manifest {}: {}",
            if durable { "carries" } else { "lacks" },
            if patched.is_some() {
                "has them"
            } else {
                "has not"
            },
            if agree {
                "they agree"
            } else {
                "DRIFT: the next kubeadm upgrade will change the manifest's audit settings"
            }
        ));
    }
    match kube.block_on(kube.cluster.audit_sink_exists(cluster::AUDIT_SINK_NAME))? {
        None => out.output("auditsink  API not served"),
        Some(found) => out.output(format!(
            "auditsink  {} {}",
            cluster::AUDIT_SINK_NAME,
            if found { "present" } else { "absent" }
        )),
    }
    Ok(())
}
