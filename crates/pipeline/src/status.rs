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
    if let Ok(bytes) = node.read(&state::state_path(audit_dir))
        && let Ok(record) = State::parse(&String::from_utf8_lossy(&bytes), audit_dir)
    {
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
