//! `status`: what is enabled on the node and in the cluster. Reads only.

use patch_apiserver::Mode;

use crate::cluster_args::ClusterArgs;
use crate::error::{PipelineError, Result};
use crate::preflight::{describe_version, read_manifest};
use crate::report::{Reporter, Steps};
use crate::state::{self, State};
use crate::target::TargetArgs;

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  cargo xtask status
  cargo xtask status ssh --host cp1 --kubeconfig ~/.kube/prod")]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Runs `status`; every line goes to `reporter` as output.
pub fn run(args: StatusArgs, reporter: &dyn Reporter) -> Result<()> {
    let out = Steps::new(reporter);
    let node = args.target.connect()?;
    let manifest_path = args.target.manifest();
    let manifest = read_manifest(&node, &manifest_path)?;
    let inspection = patch_apiserver::inspect(&manifest).map_err(|e| {
        PipelineError::failed(e.located(&format!("{manifest_path} on {}", node.describe())))
    })?;
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
    use patch_apiserver::AuditFile;
    for name in [AuditFile::Policy, AuditFile::WebhookConfig, AuditFile::Log].map(|f| f.file_name())
    {
        let path = node.path(&format!("{audit_dir}/{name}"));
        let stat = node.run(&["stat", "-c", "%a %U:%G %s bytes", &path])?;
        let line = if stat.status == 0 {
            stat.stdout_text().trim().to_string()
        } else {
            "absent".into()
        };
        out.output(format!("  file     {audit_dir}/{name}: {line}"));
    }
    let record = node
        .read(&state::state_path(audit_dir))
        .ok()
        .and_then(|bytes| State::parse(&String::from_utf8_lossy(&bytes), audit_dir).ok());
    if let Some(record) = &record {
        out.output(format!(
            "backup     {} (enabled in {} mode)",
            record.backup,
            record.mode()
        ));
    }
    if let Some(kube) = args.cluster.connect(false)? {
        out.output(format!(
            "cluster    {} ({})",
            kube.cluster.server(),
            kube.block_on(kube.cluster.version())?
        ));
        out.output(format!(
            "readiness  {:?}",
            kube.block_on(kube.cluster.readiness())
        ));
        if let Some(pod) = kube.block_on(
            kube.cluster
                .apiserver_mirror_pod(args.cluster.node_name.as_deref()),
        )? {
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
        if let Some(config) = kube.block_on(kube.cluster.read_kubeadm_config())? {
            let mut options = record.as_ref().and_then(|r| r.enables.last()).map_or_else(
                || patch_apiserver::PatchOptions::new(inspection.patched.unwrap_or(Mode::Static)),
                |e| e.options(),
            );
            options.audit_dir = audit_dir.to_string();
            let durable =
                patch_apiserver::check_cluster_config(&config.cluster_configuration, &options)
                    .unwrap_or(false);
            let agree = durable == inspection.patched.is_some();
            out.output(format!(
                "kubeadm    kube-system/kubeadm-config {} the audit settings; the manifest {}: {}",
                if durable { "carries" } else { "lacks" },
                if inspection.patched.is_some() {
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
    } else if inspection.patched.is_some_and(|m| m != Mode::Static) {
        out.output("cluster    not checked (pass --kubeconfig to see the AuditSink)");
    }
    Ok(())
}
