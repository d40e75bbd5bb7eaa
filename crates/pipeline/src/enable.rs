//! `enable`: preflight → rendering → apply → wait → (rollback) → auditsink.

use patch_apiserver::{KubeVersion, Mode};

use crate::cluster_args::ClusterArgs;
use crate::error::{Context, Result};
use crate::report::{Reporter, Steps};
use crate::rollback::{self, ManifestChange};
use crate::target::TargetArgs;
use crate::wait::RestartArgs;
use crate::{apply, auditsink, durable, preflight, rendering};

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  cargo xtask enable                                   # minikube, static
  cargo xtask enable kops dynamic --host api.k.example.com
  cargo xtask enable ssh static --host cp1 --falco-url http://10.96.0.10:8765/k8s_audit
  cargo xtask enable ssh static --host cp1 --dry-run   # show the files and the diff, change nothing
  sudo cargo xtask enable local static --falco-via-nodeport")]
pub struct EnableArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// static, dynamic (Kubernetes 1.13-1.18) or dynamic+log.
    #[arg(default_value = "static")]
    pub mode: Mode,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub falco: FalcoArgs,
    /// The Kubernetes version, when the manifest's image tag does not say (a digest, say).
    #[arg(long)]
    pub kube_version: Option<KubeVersion>,
    #[command(flatten)]
    pub restart: RestartArgs,
    /// Do the preflight reads, then print the rendered files and the manifest diff; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write the webhook without first checking, from the node, that Falco answers there.
    #[arg(long)]
    pub skip_reachability: bool,
    /// Change only the manifest, not kube-system/kubeadm-config (the next kubeadm upgrade
    /// then regenerates the manifest without audit).
    #[arg(long)]
    pub no_durable: bool,
    /// Replace audit flags the manifest already has with other values.
    #[arg(long)]
    pub force: bool,
    /// --audit-webhook-batch-max-wait.
    #[arg(long, default_value = "5s")]
    pub batch_max_wait: String,
    /// Writes this --audit-webhook-batch-max-wait value unchecked, so that tests can make a real
    /// API server fail to start and exercise the rollback. Never useful otherwise.
    #[arg(long, hide = true)]
    pub test_only_batch_max_wait: Option<String>,
    /// Print details of each step.
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct FalcoArgs {
    /// Falco's audit endpoint, e.g. http://10.96.0.10:8765/k8s_audit (skips the Service lookup).
    #[arg(long)]
    pub falco_url: Option<String>,
    /// The Falco Service to take the ClusterIP and port from (default: discovery, the Services
    /// exposing 9765 or 8765).
    #[arg(long)]
    pub falco_service: Option<String>,
    /// The Falco Service's namespace (default: every namespace you may list, or default and falco).
    #[arg(long)]
    pub falco_namespace: Option<String>,
    /// Target the Service's nodePort on 127.0.0.1: the ClusterIP is not always routable from the
    /// API server's host network.
    #[arg(long)]
    pub falco_via_nodeport: bool,
    /// A PEM CA bundle that verifies an https:// Falco URL (default: the node's system roots).
    #[arg(long, value_name = "PEM")]
    pub falco_ca_file: Option<std::path::PathBuf>,
    /// A PEM client certificate for an https:// Falco URL (mTLS through a proxy).
    #[arg(long, value_name = "PEM", requires = "falco_client_key")]
    pub falco_client_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --falco-client-cert.
    #[arg(long, value_name = "PEM", requires = "falco_client_cert")]
    pub falco_client_key: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub policy: crate::policy::PolicyArgs,
}

/// Runs `enable`, reporting each step to `reporter`.
pub fn run(args: EnableArgs, reporter: &dyn Reporter) -> Result<()> {
    enable(args, reporter).map(drop)
}

/// The pipeline; returns the SSH session's counters for the benchmark.
pub fn enable(args: EnableArgs, reporter: &dyn Reporter) -> Result<Option<ship::Stats>> {
    let steps = Steps::new(reporter);
    let plan = steps.run("preflight", || preflight::run(&args, &steps))?;
    if let Some(reason) = &plan.falco_reason {
        steps.info(reason);
    }
    for warning in &plan.warnings {
        steps.warn(warning);
    }
    let files = steps.run("render", || {
        rendering::run(args.mode, &args.falco.policy, &plan, &steps)
    })?;

    if args.dry_run {
        for (name, bytes) in &files {
            steps.output(format!("--- {}/{name}", args.target.node.audit_dir));
            output_text(&steps, &rendering::display_text(bytes));
        }
        output_text(
            &steps,
            &patch_apiserver::unified_diff(
                &plan.original,
                &plan.patched.text,
                &plan.manifest_path,
                &plan.manifest_path,
            ),
        );
        if let Some(durable) = &plan.durable {
            let name = "kube-system/kubeadm-config ClusterConfiguration";
            output_text(
                &steps,
                &patch_apiserver::unified_diff(
                    &durable.read.cluster_configuration,
                    &durable.patched,
                    name,
                    name,
                ),
            );
        }
        steps.output(format!(
            "dry run: nothing was changed on {}",
            plan.node.describe()
        ));
        return Ok(plan.node.stats());
    }

    let uploaded = steps.run("apply", || apply::run(&args, &plan, &files))?;
    if !plan.patched.changed {
        steps.warn(format!(
            "{} is already patched for {} mode: left as it is",
            plan.manifest_path, args.mode
        ));
        if uploaded > 0 {
            steps.warn("the audit files changed; the API server reads them only at startup, so restart it to use them");
        }
    } else {
        let flags = patch_apiserver::audit_flags(&plan.options, plan.options.kube_version.as_ref());
        let change = ManifestChange {
            node: &plan.node,
            manifest_path: &plan.manifest_path,
            previous: &plan.original,
            old_hash: plan.old_hash.as_deref(),
            flags: &flags,
            adds_flags: true,
            command: "enable",
        };
        rollback::wait_or_roll_back(
            plan.kube.as_ref(),
            args.cluster.node_name.as_deref(),
            &args.restart,
            &change,
            &steps,
        )?;
    }
    if args.mode != Mode::Static {
        let kube = plan
            .kube
            .as_ref()
            .context("dynamic modes need the cluster")?;
        auditsink::apply(kube, &files, &steps)?;
    }
    match (&plan.durable, &plan.kube) {
        (Some(durable), Some(kube)) => durable::apply(kube, durable, &plan.options, &steps)?,
        _ => durable_advice(&plan, &files, args.verbose, &steps),
    }
    plan.node.unlock()?;
    let stats = plan.node.stats();
    if let Some(stats) = &stats {
        steps.detail(format!(
            "{} TCP connection(s), {} round trips",
            stats.tcp_connections, stats.round_trips
        ));
    }
    if plan.patched.changed || uploaded > 0 {
        steps.output(format!(
            "enabled {} audit on {}",
            args.mode,
            plan.node.describe()
        ));
    } else {
        steps.output(format!(
            "nothing to do: {} audit is already enabled on {}",
            args.mode,
            plan.node.describe()
        ));
    }
    Ok(stats)
}

/// For a manifest whose owner is not kubeadm-config's (or with --no-durable): the owner's own
/// durable setting for our flags, as text to paste.
fn durable_advice(plan: &preflight::Plan, files: &rendering::Files, verbose: bool, steps: &Steps) {
    use crate::manager::Manager;
    use patch_apiserver::{AuditFile, DurableTarget};
    let target = match plan.manager {
        Some(Manager::Minikube) => DurableTarget::Minikube,
        Some(Manager::Kops) => DurableTarget::Kops,
        Some(Manager::Rke2) => DurableTarget::Rke2,
        Some(Manager::Kubeadm) => {
            if plan.patched.changed {
                steps.warn(
                    "kube-system/kubeadm-config was not updated (--no-durable, no kubeconfig, or no such ConfigMap): the next `kubeadm upgrade` regenerates this manifest without audit; add the flags and the k8s-audit volume to ClusterConfiguration.apiServer.extraArgs/extraVolumes",
                );
            }
            return;
        }
        None => return,
    };
    if !plan.patched.changed {
        return;
    }
    // The settings, not the files' contents: those are on the node already, and inline they
    // would make every run's output pages long. `--verbose` shows them inline.
    let contents: Vec<(AuditFile, &str)> = files
        .iter()
        .filter(|_| verbose)
        .filter_map(|(name, bytes)| {
            let file = AuditFile::ALL
                .into_iter()
                .find(|f| f.file_name() == *name)?;
            Some((file, std::str::from_utf8(bytes).ok()?))
        })
        .collect();
    steps.warn(plan.manager.map_or("", |m| m.rewrites()));
    output_text(
        steps,
        &patch_apiserver::durable_settings(target, &plan.options, &contents),
    );
}

/// Text that carries its own final newline, passed on as output lines.
fn output_text(steps: &Steps, text: &str) {
    if !text.is_empty() {
        steps.output(text.strip_suffix('\n').unwrap_or(text));
    }
}
