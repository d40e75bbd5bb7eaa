//! `disable`: the reverse of enable, with the same wait and rollback.

use patch_apiserver::{Mode, PatchOptions};

use crate::cluster_args::ClusterArgs;
use crate::error::{Context, PipelineError, Result};
use crate::fleet::NodeTarget;
use crate::preflight::{self, manifest_text};
use crate::report::{Reporter, Steps};
use crate::rollback::{self, ManifestChange};
use crate::state::{self, State};
use crate::target::{Jumps, TargetArgs};
use crate::wait::{self, Health, RestartArgs};
use crate::{auditsink, durable, node::Node};

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  cargo xtask disable                       # minikube
  cargo xtask disable ssh --host cp1 --purge")]
pub struct DisableArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Also delete the uploaded policy and webhook config (the audit log and backups stay).
    #[arg(long)]
    pub purge: bool,
    #[command(flatten)]
    pub restart: RestartArgs,
    #[arg(short, long)]
    pub verbose: bool,
}

/// What disable found on one node.
struct NodeRevert {
    target: NodeTarget,
    node: Node,
    manifest_path: String,
    current: String,
    restored: String,
    record: Option<State>,
    /// The original ClusterConfiguration an enable kept on the node.
    kept: Option<String>,
    summary: String,
}

/// Runs `disable`, reporting each step to `reporter`: every node at once for the reads, then
/// one node at a time, each while the others are ready.
pub fn run(args: DisableArgs, reporter: &dyn Reporter) -> Result<()> {
    let steps = Steps::new(reporter);
    let audit_dir = args.target.audit_dir()?;
    let (kube, fleet, nodes) = steps.run("preflight", || {
        let (kube, fleet) =
            preflight::cluster_and_fleet(&args.target, &args.cluster, !args.restart.no_wait)?;
        let multi = fleet.nodes.len() > 1;
        let jumps = Jumps::default();
        let results = preflight::on_every_node(&fleet, |target| {
            read_node(&args, audit_dir, target, multi, &jumps)
        });
        let nodes = preflight::all_or_report(&fleet, results, "the preflight")?;
        let summary = match nodes.as_slice() {
            [one] => one.summary.clone(),
            _ => format!("{} control-plane nodes: {}", nodes.len(), fleet.names()),
        };
        Ok(((kube, fleet, nodes), summary))
    })?;
    for warning in &fleet.warnings {
        steps.warn(warning);
    }
    let multi = nodes.len() > 1;
    if multi {
        nodes.iter().for_each(|n| steps.info(&n.summary));
    }

    // Any dynamic enable on the way (a mode change) left an AuditSink.
    let dynamic = nodes.iter().any(|n| {
        n.record
            .as_ref()
            .is_some_and(|r| r.enables.iter().any(|e| e.mode != Mode::Static))
    });
    // An enable that edited kube-system/kubeadm-config kept its original text on the node.
    let kept = nodes.iter().find_map(|n| n.kept.clone());
    let kube = match kube {
        Some(kube) => Some(kube),
        None => args.cluster.connect(dynamic || kept.is_some())?,
    };
    let probe = match (&kube, multi) {
        (Some(kube), true) => Some(kube.cluster.node_probe()?),
        _ => None,
    };
    for (k, n) in nodes.iter().enumerate() {
        let label = n.target.step_label(multi);
        if n.restored == n.current {
            steps.output(format!(
                "nothing to revert: {} carries no audit settings of ours{}",
                n.manifest_path,
                if multi {
                    format!(" on {}", n.target.name)
                } else {
                    String::new()
                }
            ));
            continue;
        }
        let node_name = n.target.in_cluster.then_some(n.target.name.as_str());
        if multi && let Some(kube) = kube.as_ref().filter(|_| !args.restart.no_wait) {
            let others: Vec<(&str, Health)> = nodes
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != k)
                .map(|(_, o)| {
                    (
                        o.target.name.as_str(),
                        Health::of(&o.node, &o.target, probe.as_ref()),
                    )
                })
                .collect();
            crate::rollout::wait_for_others(
                kube,
                &others,
                &n.target.name,
                &args.restart,
                &steps,
                &label,
            )?;
        }
        let old_hash = match (&kube, args.restart.no_wait) {
            (Some(kube), false) => wait::mirror_hash(kube, node_name),
            _ => None,
        };
        steps.run(&format!("patch{label}"), || {
            n.node
                .write(&n.manifest_path, n.restored.as_bytes(), 0o600)?;
            Ok(((), format!("{} reverted", n.manifest_path)))
        })?;
        let flags = our_flags(&n.current, &enables(n.record.as_ref(), audit_dir));
        let change = ManifestChange {
            node: &n.node,
            manifest_path: &n.manifest_path,
            previous: &n.current,
            old_hash: old_hash.as_deref(),
            flags: &flags,
            adds_flags: false,
            command: "disable",
            node_name,
            health: Health::of(&n.node, &n.target, probe.as_ref()),
        };
        rollback::wait_or_roll_back(kube.as_ref(), &args.restart, &change, &steps, &label)
            .map_err(|e| match multi {
                true => PipelineError::failed(format!(
                    "{}: {}; the nodes after it were not changed",
                    n.target.name,
                    e.report()
                )),
                false => e,
            })?;
    }
    if let Some(kube) = &kube
        && dynamic
    {
        auditsink::delete(kube, &steps)?;
    }
    let enables_of_all: Vec<PatchOptions> = nodes
        .iter()
        .flat_map(|n| enables(n.record.as_ref(), audit_dir))
        .collect();
    if let Some(kube) = &kube {
        restore_kubeadm_config(kube, kept.as_deref(), &enables_of_all, &steps)?;
    } else if kept.is_some() {
        steps.warn("kube-system/kubeadm-config still carries the audit settings (no kubeconfig): the next `kubeadm upgrade` would turn audit on again; run disable with --kubeconfig");
    }
    for n in &nodes {
        let label = n.target.step_label(multi);
        steps.run(&format!("files{label}"), || {
            remove_records(&n.node, audit_dir, kube.is_some(), args.purge)
        })?;
    }
    for n in &nodes {
        n.node.unlock()?;
    }
    Ok(())
}

/// Takes the lock and reads one node; decides what its manifest goes back to.
fn read_node(
    args: &DisableArgs,
    audit_dir: &str,
    target: &NodeTarget,
    multi: bool,
    jumps: &Jumps,
) -> Result<NodeRevert> {
    let node = args.target.connect(target, multi, jumps)?;
    let manifest_path = args.target.manifest();
    let state_path = state::state_path(audit_dir);
    let durable_original = durable::original_path(audit_dir);
    let (mut read, _) = node.lock_and_read(
        &crate::lock::dir_for(&manifest_path),
        &[&manifest_path, &state_path, &durable_original],
        &[],
        None,
    )?;
    let kept = read.pop().flatten().map(String::from_utf8).transpose()?;
    let record = read
        .pop()
        .flatten()
        .map(|bytes| State::parse(&String::from_utf8_lossy(&bytes), audit_dir))
        .transpose()?;
    let current = manifest_text(&node, &manifest_path, read.pop().flatten())?;
    let (restored, how) =
        restored_manifest(&node, &manifest_path, &current, record.as_ref(), audit_dir)?;
    let summary = format!("{}: {manifest_path}: {how}", node.describe());
    Ok(NodeRevert {
        target: target.clone(),
        node,
        manifest_path,
        current,
        restored,
        record,
        kept,
        summary,
    })
}

/// The record describes an enabled node; once reverted it would mislead status and disable.
/// The original ClusterConfiguration goes once the ConfigMap was handled (with a cluster).
fn remove_records(
    node: &Node,
    audit_dir: &str,
    with_cluster: bool,
    purge: bool,
) -> Result<((), String)> {
    let state = state::state_path(audit_dir);
    let original = durable::original_path(audit_dir);
    let mut records = vec![state.as_str()];
    if with_cluster {
        records.push(original.as_str());
    }
    if !purge {
        node.remove(&records)?;
        return Ok((
            (),
            format!("{audit_dir} kept (--purge deletes the policy and webhook config)"),
        ));
    }
    let uploaded: Vec<String> = patch_apiserver::AuditFile::ALL
        .iter()
        .filter(|file| file.uploaded())
        .map(|file| format!("{audit_dir}/{}", file.file_name()))
        .collect();
    let mut paths = records;
    paths.extend(uploaded.iter().map(String::as_str));
    node.remove(&paths)?;
    Ok((
        (),
        format!("{audit_dir}: policy and webhook config deleted; audit.log and backup/ kept"),
    ))
}

/// After the manifest is back: kube-system/kubeadm-config without our settings, as the
/// original text while the ConfigMap is still exactly our edit of it. Nothing when the
/// cluster has no such ConfigMap or it carries nothing of ours.
fn restore_kubeadm_config(
    kube: &crate::cluster_args::Kube,
    original: Option<&str>,
    enables: &[PatchOptions],
    steps: &Steps,
) -> Result<()> {
    let Some(read) = kube.block_on(kube.cluster.read_kubeadm_config())? else {
        return Ok(());
    };
    let restored = durable::restored(&read.cluster_configuration, original, enables)?;
    if restored == read.cluster_configuration {
        return Ok(());
    }
    steps.run("durable", || {
        durable::write(kube, &read, |text| durable::restored(text, original, enables)).map_err(
            |e| {
                PipelineError::failed(format!(
                    "the manifest is reverted, but kube-system/kubeadm-config still carries the audit settings ({}): the next `kubeadm upgrade` would turn audit on again; run disable again, or remove them from ClusterConfiguration.apiServer by hand",
                    e.report()
                ))
            },
        )?;
        let how = if original.is_some_and(|o| o == restored) {
            "restored byte for byte"
        } else {
            "our entries removed"
        };
        Ok(((), format!("kube-system/kubeadm-config: {how}")))
    })
}

/// The options of every enable the record lists, or, without a record, the defaults for
/// this audit directory.
fn enables(record: Option<&State>, audit_dir: &str) -> Vec<PatchOptions> {
    match record {
        Some(record) => record.enables.iter().map(|e| e.options()).collect(),
        None => {
            let mut options = PatchOptions::new(Mode::Static);
            options.audit_dir = audit_dir.to_string();
            vec![options]
        }
    }
}

/// The manifest to put back. The backup, when the manifest is still exactly what the record's
/// enables wrote from it, replayed in order with their options (a mode change and `--force`
/// included): even bytes the reverse edit cannot know come back. Otherwise the reverse edit of
/// each enable, newest first; and when flags of ours would still be left, a refusal that
/// names them, never a success with our flags in place.
fn restored_manifest(
    node: &Node,
    manifest_path: &str,
    current: &str,
    record: Option<&State>,
    audit_dir: &str,
) -> Result<(String, String)> {
    let all = enables(record, audit_dir);
    let mut original = None;
    if let Some(record) = record
        && let Ok(backup) = node.read(&record.backup)
    {
        let backup = String::from_utf8(backup).context("the backup is not UTF-8")?;
        let replayed = all.iter().try_fold(backup.clone(), |text, options| {
            patch_apiserver::patch(&text, options).map(|p| p.text)
        });
        if replayed.is_ok_and(|text| text == current) {
            return Ok((backup, format!("restoring the backup {}", record.backup)));
        }
        original = Some(backup);
    }
    let located = |e: patch_apiserver::PatchError| {
        PipelineError::failed(e.located(&format!("{manifest_path} on {}", node.describe())))
    };
    let mut text = current.to_string();
    for options in all.iter().rev() {
        text = patch_apiserver::revert(&text, options)
            .map_err(located)?
            .text;
    }
    // Flags of ours the original already had are the user's own; any other is left over.
    let had = original
        .as_deref()
        .map_or_else(Vec::new, |o| our_flags(o, &all));
    let left: Vec<String> = our_flags(&text, &all)
        .into_iter()
        .filter(|flag| !had.contains(flag))
        .collect();
    if !left.is_empty() {
        return Err(PipelineError::failed(format!(
            "{manifest_path} on {} was changed after enable, and removing our settings would still leave {}; nothing was changed. The original manifest is {}",
            node.describe(),
            left.join(" "),
            record.map_or("not recorded".into(), |r| format!("in {}", r.backup))
        )));
    }
    Ok((text, "removing our audit flags, volume and mount".into()))
}

/// The flags in `manifest` that one of `enables` wrote, as the running pod shows them.
fn our_flags(manifest: &str, enables: &[PatchOptions]) -> Vec<String> {
    let Ok(inspection) = patch_apiserver::inspect(manifest) else {
        return Vec::new();
    };
    let mut flags: Vec<String> = Vec::new();
    for options in enables {
        for flag in patch_apiserver::our_flags(&inspection.apiserver_args, options) {
            if !flags.iter().any(|f| f == flag) {
                flags.push(flag.to_string());
            }
        }
    }
    flags
}
