//! `disable`: the reverse of enable, with the same wait and rollback.

use patch_apiserver::{Mode, PatchOptions};

use crate::cluster_args::ClusterArgs;
use crate::error::{Context, PipelineError, Result};
use crate::preflight::manifest_text;
use crate::report::{Reporter, Steps};
use crate::rollback::{self, ManifestChange};
use crate::state::{self, State};
use crate::target::TargetArgs;
use crate::wait::{self, RestartArgs};
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

/// Runs `disable`, reporting each step to `reporter`.
pub fn run(args: DisableArgs, reporter: &dyn Reporter) -> Result<()> {
    let steps = Steps::new(reporter);
    let audit_dir = args.target.audit_dir()?;
    let (node, manifest_path, current, restored, record, kept) = steps.run("preflight", || {
        let node = args.target.connect()?;
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
        Ok((
            (node, manifest_path, current, restored, record, kept),
            summary,
        ))
    })?;

    // Any dynamic enable on the way (a mode change) left an AuditSink.
    let dynamic = record
        .as_ref()
        .is_some_and(|r| r.enables.iter().any(|e| e.mode != Mode::Static));
    // An enable that edited kube-system/kubeadm-config kept its original text on the node.
    let needs_cluster = !args.restart.no_wait || dynamic || kept.is_some();
    let kube = args.cluster.connect(needs_cluster)?;
    if restored == current {
        steps.output(format!(
            "nothing to revert: {manifest_path} carries no audit settings of ours"
        ));
    } else {
        let old_hash = match (&kube, args.restart.no_wait) {
            (Some(kube), false) => wait::mirror_hash(kube, args.cluster.node_name.as_deref()),
            _ => None,
        };
        steps.run("patch", || {
            node.write(&manifest_path, restored.as_bytes(), 0o600)?;
            Ok(((), format!("{manifest_path} reverted")))
        })?;
        let flags = our_flags(&current, &enables(record.as_ref(), audit_dir));
        let change = ManifestChange {
            node: &node,
            manifest_path: &manifest_path,
            previous: &current,
            old_hash: old_hash.as_deref(),
            flags: &flags,
            adds_flags: false,
            command: "disable",
        };
        rollback::wait_or_roll_back(
            kube.as_ref(),
            args.cluster.node_name.as_deref(),
            &args.restart,
            &change,
            &steps,
        )?;
    }
    if let Some(kube) = &kube
        && dynamic
    {
        auditsink::delete(kube, &steps)?;
    }
    if let Some(kube) = &kube {
        restore_kubeadm_config(
            kube,
            kept.as_deref(),
            &enables(record.as_ref(), audit_dir),
            &steps,
        )?;
    } else if kept.is_some() {
        steps.warn("kube-system/kubeadm-config still carries the audit settings (no kubeconfig): the next `kubeadm upgrade` would turn audit on again; run disable with --kubeconfig");
    }
    steps.run("files", || {
        // The record describes an enabled node; once reverted it would mislead status and disable.
        let state = state::state_path(audit_dir);
        // The original ClusterConfiguration goes once the ConfigMap was handled (with a cluster).
        let original = durable::original_path(audit_dir);
        let mut records = vec![state.as_str()];
        if kube.is_some() {
            records.push(original.as_str());
        }
        if !args.purge {
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
    })?;
    node.unlock()?;
    Ok(())
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
