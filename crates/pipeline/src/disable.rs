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
use crate::{auditsink, node::Node};

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
    let audit_dir = &args.target.node.audit_dir;
    let (node, manifest_path, current, restored, record) = steps.run("preflight", || {
        let node = args.target.connect()?;
        let manifest_path = args.target.manifest();
        let state_path = state::state_path(audit_dir);
        let mut read = node.read_many(&[&manifest_path, &state_path])?;
        let record = read
            .pop()
            .flatten()
            .map(|bytes| State::parse(&String::from_utf8_lossy(&bytes)))
            .transpose()?;
        let current = manifest_text(&node, &manifest_path, read.pop().flatten())?;
        let (restored, how) =
            restored_manifest(&node, &manifest_path, &current, record.as_ref(), audit_dir)?;
        let summary = format!("{}: {manifest_path}: {how}", node.describe());
        Ok(((node, manifest_path, current, restored, record), summary))
    })?;

    let needs_cluster =
        !args.restart.no_wait || record.as_ref().is_some_and(|r| r.mode != Mode::Static);
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
        let flags = our_flags(&current, audit_dir);
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
        && record.as_ref().is_some_and(|r| r.mode != Mode::Static)
    {
        auditsink::delete(kube, &steps)?;
    }
    steps.run("files", || {
        // The record describes an enabled node; once reverted it would mislead status and disable.
        let state = state::state_path(audit_dir);
        if !args.purge {
            node.remove(&[&state])?;
            return Ok((
                (),
                format!("{audit_dir} kept (--purge deletes the policy and webhook config)"),
            ));
        }
        let policy = format!("{audit_dir}/audit-policy.yaml");
        let webhook = format!("{audit_dir}/webhook-config.yaml");
        node.remove(&[&state, &policy, &webhook])?;
        Ok((
            (),
            format!("{audit_dir}: policy and webhook config deleted; audit.log and backup/ kept"),
        ))
    })?;
    Ok(())
}

/// The manifest to put back: the backup when the manifest is still exactly what enable wrote
/// from it (so even bytes the reverse edit cannot know come back), else the reverse edit.
fn restored_manifest(
    node: &Node,
    manifest_path: &str,
    current: &str,
    record: Option<&State>,
    audit_dir: &str,
) -> Result<(String, String)> {
    if let Some(record) = record
        && let Ok(backup) = node.read(&record.backup)
    {
        let backup = String::from_utf8(backup).context("the backup is not UTF-8")?;
        let mut options = PatchOptions::new(record.mode);
        options.audit_dir = audit_dir.to_string();
        options.batch_max_wait = record.batch_max_wait.clone();
        if patch_apiserver::patch(&backup, &options).is_ok_and(|p| p.text == current) {
            return Ok((backup, format!("restoring the backup {}", record.backup)));
        }
    }
    let mode = record.map_or(Mode::Static, |r| r.mode);
    let mut options = PatchOptions::new(mode);
    options.audit_dir = audit_dir.to_string();
    let reverted = patch_apiserver::revert(current, &options).map_err(|e| {
        PipelineError::failed(e.located(&format!("{manifest_path} on {}", node.describe())))
    })?;
    Ok((
        reverted.text,
        "removing our audit flags, volume and mount".into(),
    ))
}

/// Our flags as the running pod shows them, to check that they are gone.
fn our_flags(current: &str, audit_dir: &str) -> Vec<String> {
    let Ok(inspection) = patch_apiserver::inspect(current) else {
        return Vec::new();
    };
    inspection
        .apiserver_args
        .into_iter()
        .filter(|arg| {
            arg.starts_with("--audit-")
                && (arg.contains(audit_dir) || arg.starts_with("--audit-webhook-batch"))
        })
        .collect()
}
