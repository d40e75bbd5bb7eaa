//! `enable`: preflight → rendering → apply → wait → (rollback) → auditsink.

use patch_apiserver::{KubeVersion, Mode};

use crate::cluster_args::ClusterArgs;
use crate::error::{Context, Result};
use crate::report::{Reporter, Steps};
use crate::target::TargetArgs;
use crate::wait::RestartArgs;
use crate::{auditsink, durable, preflight, rendering, rollout};

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  cargo xtask enable                                   # minikube, static
  cargo xtask enable kops dynamic --host api.k.example.com
  cargo xtask enable ssh static --host cp1 --falco-url http://10.96.0.10:8765/k8s_audit
  cargo xtask enable ssh static --host cp1 --dry-run   # show the files and the diff, change nothing
  cargo xtask enable ssh static --kubeconfig ~/.kube/prod --jump admin@bastion
                                                       # every control-plane node, one at a time
  cargo xtask enable ssh static --host cp1 --host cp2 --host cp3 --no-wait
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
    /// Writes this --audit-webhook-batch-max-wait value unchecked (`NODE=VALUE`: on that node
    /// only), so that tests can make a real API server fail to start and exercise the rollback.
    /// Never useful otherwise.
    #[arg(long, hide = true)]
    pub test_only_batch_max_wait: Option<String>,
    /// When a node fails, roll back only that node and leave the ones already changed
    /// enabled (default: roll every node back, so that no API server is left unaudited
    /// unnoticed).
    #[arg(long)]
    pub keep_partial: bool,
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

/// The pipeline; returns the SSH sessions' counters (summed over the nodes) for the benchmark.
pub fn enable(args: EnableArgs, reporter: &dyn Reporter) -> Result<Option<ship::Stats>> {
    let steps = Steps::new(reporter);
    let pre = steps.run("preflight", || preflight::run(&args))?;
    if let Some(reason) = &pre.falco_reason {
        steps.info(reason);
    }
    for warning in &pre.warnings {
        steps.warn(warning);
    }
    let multi = pre.plans.len() > 1;
    for plan in &pre.plans {
        let who = |line: &str| match multi {
            true => format!("{}: {line}", plan.target.name),
            false => line.to_string(),
        };
        if multi {
            steps.info(&plan.summary);
        }
        plan.details.iter().for_each(|d| steps.detail(who(d)));
        plan.infos.iter().for_each(|i| steps.info(who(i)));
        plan.warnings.iter().for_each(|w| steps.warn(who(w)));
    }
    let files = steps.run("render", || {
        // Every node gets its own files (each names the Falco endpoint it reaches); the
        // policy's warnings are said once.
        let quiet = crate::report::Recorder::default();
        let mut all = Vec::new();
        let mut summary = String::new();
        for (i, plan) in pre.plans.iter().enumerate() {
            let said = if i == 0 { steps } else { Steps::new(&quiet) };
            let (files, line) = rendering::run(args.mode, &args.falco.policy, plan, &said)?;
            if i == 0 {
                summary = line;
            }
            all.push(files);
        }
        if multi {
            summary.push_str(&format!(" for each of {} nodes", all.len()));
        }
        Ok((all, summary))
    })?;

    if args.dry_run {
        return dry_run(&args, &pre, &files, &steps);
    }

    let outcome = rollout::enable_each(&args, &pre, &files, &steps)?;
    if args.mode != Mode::Static {
        let kube = pre
            .kube
            .as_ref()
            .context("dynamic modes need the cluster")?;
        auditsink::apply(kube, &files[0], &steps)?;
    }
    match (&pre.durable, &pre.kube, pre.plans.first()) {
        (Some(durable), Some(kube), Some(first)) => {
            durable::apply(kube, durable, &first.options, &steps)?
        }
        (_, _, Some(first)) => durable_advice(first, &files[0], args.verbose, &steps),
        _ => {}
    }
    for plan in &pre.plans {
        plan.node.unlock()?;
    }
    let stats = total_stats(&pre);
    if let Some(stats) = &stats {
        steps.detail(format!(
            "{} TCP connection(s), {} round trips",
            stats.tcp_connections, stats.round_trips
        ));
    }
    let on = match pre.plans.as_slice() {
        [plan] => plan.node.describe().to_string(),
        plans => format!("{} control-plane nodes: {}", plans.len(), pre.fleet.names()),
    };
    if outcome.changed_any {
        steps.output(format!("enabled {} audit on {on}", args.mode));
    } else {
        steps.output(format!(
            "nothing to do: {} audit is already enabled on {on}",
            args.mode
        ));
    }
    Ok(stats)
}

/// Every node's session and every jump host's connection together.
fn total_stats(pre: &preflight::Preflight) -> Option<ship::Stats> {
    pre.plans
        .iter()
        .filter_map(|p| p.node.stats())
        .chain(pre.jumps.stats())
        .reduce(|a, b| ship::Stats {
            tcp_connections: a.tcp_connections + b.tcp_connections,
            round_trips: a.round_trips + b.round_trips,
        })
}

/// `--dry-run`: each node's files and manifest diff, and the ConfigMap's; nothing changes.
fn dry_run(
    args: &EnableArgs,
    pre: &preflight::Preflight,
    files: &[rendering::Files],
    steps: &Steps,
) -> Result<Option<ship::Stats>> {
    let multi = pre.plans.len() > 1;
    for (plan, files) in pre.plans.iter().zip(files) {
        if multi {
            steps.output(format!("=== {}", plan.target.name));
        }
        for (name, bytes) in files {
            steps.output(format!("--- {}/{name}", args.target.node.audit_dir));
            output_text(steps, &rendering::display_text(bytes));
        }
        output_text(
            steps,
            &patch_apiserver::unified_diff(
                &plan.original,
                &plan.patched.text,
                &plan.manifest_path,
                &plan.manifest_path,
            ),
        );
    }
    if let Some(durable) = &pre.durable {
        let name = "kube-system/kubeadm-config ClusterConfiguration";
        output_text(
            steps,
            &patch_apiserver::unified_diff(
                &durable.read.cluster_configuration,
                &durable.patched,
                name,
                name,
            ),
        );
    }
    let on = match pre.plans.as_slice() {
        [plan] => plan.node.describe().to_string(),
        _ => pre.fleet.names(),
    };
    steps.output(format!("dry run: nothing was changed on {on}"));
    Ok(total_stats(pre))
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
