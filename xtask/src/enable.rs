//! `cargo xtask enable`: preflight → render → ship → patch → wait → (rollback) → AuditSink.

use anyhow::{Context, Result};
use patch_apiserver::{KubeVersion, Mode, PatchOptions};
use xshell::Shell;

use crate::cluster_args::{ClusterArgs, Kube};
use crate::node::{Change, Node};
use crate::restart::{self, ManifestChange, RestartArgs};
use crate::state::{self, State};
use crate::steps::Steps;
use crate::target::TargetArgs;
use crate::templates::{self, FalcoUrl};

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
    /// The Falco Service to take the ClusterIP and port from.
    #[arg(long, default_value = "falco-service")]
    pub falco_service: String,
    /// The Falco Service's namespace.
    #[arg(long, default_value = "default")]
    pub falco_namespace: String,
    /// Target the Service's nodePort on 127.0.0.1: the ClusterIP is not always routable from the
    /// API server's host network.
    #[arg(long)]
    pub falco_via_nodeport: bool,
}

/// What the preflight learned; nothing on the node has changed yet.
struct Plan {
    node: Node,
    manifest_path: String,
    original: String,
    /// What the node holds now for each file we may upload, read with the manifest.
    existing: Vec<(&'static str, Option<Vec<u8>>)>,
    patched: patch_apiserver::Outcome,
    options: PatchOptions,
    falco: Option<FalcoUrl>,
    kube: Option<Kube>,
    old_hash: Option<String>,
    /// Warnings found while planning, shown under the preflight line.
    warnings: Vec<String>,
    /// Which Falco endpoint was chosen, and why.
    falco_reason: Option<String>,
}

pub fn run(sh: &Shell, args: EnableArgs) -> Result<()> {
    enable(sh, args).map(drop)
}

/// The pipeline; returns the SSH session's counters for the benchmark.
pub fn enable(sh: &Shell, args: EnableArgs) -> Result<Option<ship::Stats>> {
    let steps = Steps::new(args.verbose);
    let plan = steps.run("preflight", || preflight(sh, &args, &steps))?;
    if let Some(reason) = &plan.falco_reason {
        steps.info(reason);
    }
    for warning in &plan.warnings {
        steps.warn(warning);
    }
    let files = steps.run("render", || render(&args, &plan))?;

    if args.dry_run {
        for (name, bytes) in &files {
            println!("--- {}/{name}", args.target.node.audit_dir);
            print!("{}", String::from_utf8_lossy(bytes));
        }
        print!(
            "{}",
            patch_apiserver::unified_diff(
                &plan.original,
                &plan.patched.text,
                &plan.manifest_path,
                &plan.manifest_path
            )
        );
        println!("dry run: nothing was changed on {}", plan.node.describe());
        return Ok(plan.node.stats());
    }

    let uploaded = steps.run("apply", || apply(&args, &plan, &files))?;
    if !plan.patched.changed {
        steps.warn(format!(
            "{} is already patched for {} mode: left as it is",
            plan.manifest_path, args.mode
        ));
        if uploaded > 0 {
            steps.warn("the audit files changed; the API server reads them only at startup, so restart it to use them");
        }
    } else {
        if let Some(manager) = crate::manager::Manager::detect(&plan.original) {
            steps.warn(manager.durable_alternative());
        }
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
        restart::wait_or_roll_back(
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
        let sink = files
            .iter()
            .find(|(name, _)| *name == "audit-sink.yaml")
            .map(|(_, bytes)| String::from_utf8_lossy(bytes).into_owned())
            .context("the AuditSink was rendered")?;
        steps.run("auditsink", || {
            let applied = kube.block_on(kube.cluster.apply_audit_sink(&sink))?;
            Ok((
                (),
                format!("AuditSink {} {applied:?}", cluster::AUDIT_SINK_NAME).to_lowercase(),
            ))
        })?;
    }
    let stats = plan.node.stats();
    if let Some(stats) = &stats {
        steps.detail(format!(
            "{} TCP connection(s), {} round trips",
            stats.tcp_connections, stats.round_trips
        ));
    }
    if plan.patched.changed || uploaded > 0 {
        println!("enabled {} audit on {}", args.mode, plan.node.describe());
    } else {
        println!(
            "nothing to do: {} audit is already enabled on {}",
            args.mode,
            plan.node.describe()
        );
    }
    Ok(stats)
}

fn preflight(sh: &Shell, args: &EnableArgs, steps: &Steps) -> Result<(Plan, String)> {
    let needs_cluster =
        !args.restart.no_wait || args.mode != Mode::Static || args.falco.falco_url.is_none();
    let node = args.target.connect(sh)?;
    let manifest_path = args.target.manifest();
    let dir = &args.target.node.audit_dir;
    let names = uploads(args.mode);
    let mut paths = vec![manifest_path.clone()];
    paths.extend(names.iter().map(|name| format!("{dir}/{name}")));
    let mut read = node.read_many(&paths.iter().map(String::as_str).collect::<Vec<_>>())?;
    let existing = names.iter().copied().zip(read.split_off(1)).collect();
    let original = manifest_text(&node, &manifest_path, read.pop().flatten())?;
    let on_node = format!("{} on {}", manifest_path, node.describe());
    let inspection = patch_apiserver::inspect(&original)
        .map_err(|e| anyhow::anyhow!("{}", e.located(&on_node)))?;
    let version = args.kube_version.or(inspection.version);
    steps.detail(format!(
        "shape {:?}, image version {:?}",
        inspection.shape, inspection.version
    ));

    let mut warnings = Vec::new();
    let kube = args.cluster.connect(needs_cluster)?;
    if let Some(kube) = &kube {
        let served = kube.block_on(kube.cluster.version())?;
        steps.detail(format!(
            "API server {} reports {served}",
            kube.cluster.server()
        ));
        if let (Ok(served), Some(manifest)) = (served.parse::<KubeVersion>(), &version)
            && (served.major, served.minor) != (manifest.major, manifest.minor)
        {
            warnings.push(format!(
                "the API server runs {served} but the manifest's image is {manifest}: the flags follow the manifest, which is what the kubelet will start"
            ));
        }
    }

    let mut options = PatchOptions::new(args.mode);
    options.audit_dir = args.target.node.audit_dir.clone();
    options.batch_max_wait = args.batch_max_wait.clone();
    options.force = args.force;
    options.kube_version = version;
    let mut patched = patch_apiserver::patch(&original, &options)
        .map_err(|e| anyhow::anyhow!("{}", e.located(&on_node)))?;
    if let Some(value) = &args.test_only_batch_max_wait {
        // patch-apiserver refuses invalid durations; the rollback tests need one to reach the API server.
        let ours = format!("--audit-webhook-batch-max-wait={}", args.batch_max_wait);
        patched.text = patched
            .text
            .replace(&ours, &format!("--audit-webhook-batch-max-wait={value}"));
    }
    for note in &patched.notes {
        match note {
            // Expected on every re-run; not worth a warning.
            patch_apiserver::Note::AlreadyPresent { .. } => steps.detail(note.to_string()),
            _ => warnings.push(note.to_string()),
        }
    }

    let (falco, falco_reason) = resolve_falco(args, kube.as_ref())?;
    let old_hash = match (&kube, args.restart.no_wait) {
        (Some(kube), false) => restart::mirror_hash(kube, args.cluster.node_name.as_deref()),
        _ => None,
    };
    let summary = format!(
        "{}: {manifest_path} ({:?}, Kubernetes {}){}",
        node.describe(),
        inspection.shape,
        version.as_ref().map_or("unknown".into(), |v| v.to_string()),
        falco
            .as_ref()
            .map(|f| format!(", Falco at {}", f.to_url()))
            .unwrap_or_default(),
    );
    let plan = Plan {
        node,
        manifest_path,
        original,
        existing,
        patched,
        options,
        falco,
        kube,
        old_hash,
        warnings,
        falco_reason,
    };
    Ok((plan, summary))
}

pub fn read_manifest(node: &Node, manifest_path: &str) -> Result<String> {
    let bytes = node.read_many(&[manifest_path])?.pop().flatten();
    manifest_text(node, manifest_path, bytes)
}

pub fn manifest_text(node: &Node, manifest_path: &str, bytes: Option<Vec<u8>>) -> Result<String> {
    let bytes = bytes.with_context(|| {
        format!(
            "there is no manifest at {manifest_path} on {} (pass --manifest if it lives elsewhere)",
            node.describe()
        )
    })?;
    String::from_utf8(bytes).with_context(|| format!("{manifest_path} is not UTF-8 text"))
}

/// The files a mode puts on the node.
fn uploads(mode: Mode) -> &'static [&'static str] {
    match mode {
        Mode::Static => &["audit-policy.yaml", "webhook-config.yaml"],
        Mode::DynamicLog => &["audit-policy.yaml"],
        Mode::Dynamic => &[],
    }
}

/// Falco's endpoint, and a sentence on why it was chosen when it was looked up.
fn resolve_falco(
    args: &EnableArgs,
    kube: Option<&Kube>,
) -> Result<(Option<FalcoUrl>, Option<String>)> {
    if let Some(url) = &args.falco.falco_url {
        return Ok((Some(FalcoUrl::parse(url)?), None));
    }
    let kube =
        kube.context("finding Falco needs the cluster: pass --falco-url, or a kubeconfig")?;
    let endpoint = kube.block_on(kube.cluster.falco_endpoint(
        &args.falco.falco_namespace,
        &args.falco.falco_service,
        args.falco.falco_via_nodeport,
    ))?;
    let reason = format!("Falco endpoint {} ({})", endpoint.url(), endpoint.reason);
    let url = FalcoUrl {
        host: endpoint.host,
        port: endpoint.port,
        path: endpoint.path,
    };
    Ok((Some(url), Some(reason)))
}

type Files = Vec<(&'static str, Vec<u8>)>;

fn render(args: &EnableArgs, plan: &Plan) -> Result<(Files, String)> {
    let mut files = Files::new();
    if args.mode != Mode::Dynamic {
        files.push((
            "audit-policy.yaml",
            templates::audit_policy(plan.options.kube_version.as_ref())?,
        ));
    }
    let falco = || {
        plan.falco
            .as_ref()
            .context("no Falco endpoint was resolved")
    };
    if args.mode == Mode::Static {
        files.push(("webhook-config.yaml", templates::webhook_config(falco()?)?));
    }
    if args.mode != Mode::Static {
        files.push(("audit-sink.yaml", templates::audit_sink(falco()?)?));
    }
    let summary = files
        .iter()
        .map(|(name, bytes)| format!("{name} ({} bytes)", bytes.len()))
        .collect::<Vec<_>>()
        .join(", ");
    Ok((files, summary))
}

/// Uploads the files that differ from what the node holds and, when the manifest changes,
/// writes the backup, the state record and the new manifest: one transaction, so a dropped
/// connection leaves either all of it or none. Returns how many audit files it wrote.
fn apply(args: &EnableArgs, plan: &Plan, files: &Files) -> Result<(usize, String)> {
    let dir = &args.target.node.audit_dir;
    let paths: Vec<(String, &[u8])> = files
        .iter()
        .filter(|(name, bytes)| {
            plan.existing
                .iter()
                .any(|(have, current)| have == name && current.as_deref() != Some(bytes.as_slice()))
        })
        .map(|(name, bytes)| (format!("{dir}/{name}"), bytes.as_slice()))
        .collect();
    let mut changes = vec![Change::PrivateDir(dir)];
    changes.extend(paths.iter().map(|(path, bytes)| Change::File {
        path,
        bytes,
        mode: 0o600,
    }));
    let backup = state::backup_path(dir, &plan.manifest_path);
    let backup_dir = state::backup_dir(dir);
    let state_path = state::state_path(dir);
    let record = State {
        mode: args.mode,
        manifest: plan.manifest_path.clone(),
        backup: backup.clone(),
        batch_max_wait: args.batch_max_wait.clone(),
    }
    .to_text();
    if plan.patched.changed {
        changes.extend([
            Change::PrivateDir(&backup_dir),
            Change::File {
                path: &backup,
                bytes: plan.original.as_bytes(),
                mode: 0o600,
            },
            Change::File {
                path: &state_path,
                bytes: record.as_bytes(),
                mode: 0o600,
            },
            // Last, so the kubelet sees the new manifest only once everything it needs is there.
            Change::File {
                path: &plan.manifest_path,
                bytes: plan.patched.text.as_bytes(),
                mode: 0o600,
            },
        ]);
    }
    plan.node.apply(&changes)?;
    let names: Vec<&str> = paths
        .iter()
        .map(|(path, _)| path.rsplit('/').next().unwrap_or(path))
        .collect();
    let mut summary = if names.is_empty() {
        format!("{dir}: files already in place")
    } else {
        format!("{dir} (0700): {} (0600)", names.join(", "))
    };
    if plan.patched.changed {
        summary.push_str(&format!(
            "; {} replaced, original backed up to {backup}",
            plan.manifest_path
        ));
    }
    Ok((names.len(), summary))
}
