//! `cargo xtask disable`: the reverse of enable, with the same wait and rollback.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use patch_apiserver::{Mode, PatchOptions};
use xshell::Shell;

use crate::cluster_args::ClusterArgs;
use crate::restart::{self, Expect, Restarted};
use crate::state::{self, State};
use crate::steps::Steps;
use crate::target::{self, NodeArgs, Variant};

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  cargo xtask disable                       # minikube
  cargo xtask disable ssh --host cp1 --purge")]
pub struct DisableArgs {
    #[arg(value_enum, default_value_t = Variant::Minikube)]
    pub variant: Variant,
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Also delete the uploaded policy and webhook config (the audit log and backups stay).
    #[arg(long)]
    pub purge: bool,
    /// How long to wait for the API server to come back, in seconds.
    #[arg(long, default_value_t = 180)]
    pub timeout: u64,
    /// Do not wait for the API server; nothing checks that it came back.
    #[arg(long)]
    pub no_wait: bool,
    /// Leave the reverted manifest in place even when the API server does not come back.
    #[arg(long)]
    pub no_rollback: bool,
    #[arg(short, long)]
    pub verbose: bool,
}

pub fn run(sh: &Shell, args: DisableArgs) -> Result<()> {
    let steps = Steps::new(args.verbose);
    let audit_dir = &args.node.audit_dir;
    let (node, manifest_path, current, restored, record) = steps.run("preflight", || {
        let node = target::connect(sh, args.variant, &args.node)?;
        let manifest_path = args.node.manifest(args.variant);
        let state_path = state::state_path(audit_dir);
        let mut read = node.read_many(&[&manifest_path, &state_path])?;
        let record = read
            .pop()
            .flatten()
            .map(|bytes| State::parse(&String::from_utf8_lossy(&bytes)))
            .transpose()?;
        let current = crate::enable::manifest_text(&node, &manifest_path, read.pop().flatten())?;
        let (restored, how) =
            restored_manifest(&node, &manifest_path, &current, record.as_ref(), audit_dir)?;
        let summary = format!("{}: {manifest_path}: {how}", node.describe());
        Ok(((node, manifest_path, current, restored, record), summary))
    })?;

    let needs_cluster = !args.no_wait || record.as_ref().is_some_and(|r| r.mode != Mode::Static);
    let kube = args.cluster.connect(needs_cluster)?;
    if restored == current {
        println!("nothing to revert: {manifest_path} carries no audit settings of ours");
    } else {
        let old_hash = match (&kube, args.no_wait) {
            (Some(kube), false) => restart::mirror_hash(kube, args.cluster.node_name.as_deref()),
            _ => None,
        };
        steps.run("patch", || {
            node.write(&manifest_path, restored.as_bytes(), 0o600)?;
            Ok(((), format!("{manifest_path} reverted")))
        })?;
        match kube.as_ref().filter(|_| !args.no_wait) {
            None => steps.warn("--no-wait: nothing checked that the API server came back"),
            Some(kube) => {
                let flags = our_flags(&current, audit_dir);
                let timeout = Duration::from_secs(args.timeout);
                let node_name = args.cluster.node_name.as_deref();
                let waited = steps.run("wait", || {
                    restart::wait_ready(
                        kube,
                        node_name,
                        Restarted::HashChangedFrom(old_hash.as_deref()),
                        Expect::NoFlags(&flags),
                        timeout,
                    )
                    .map(|s| ((), s))
                });
                if let Err(failure) = waited {
                    let log = restart::apiserver_log_tail(&node);
                    println!("API server log (last lines):\n{log}");
                    if args.no_rollback {
                        bail!(
                            "the API server did not come back after disable (--no-rollback): {failure:#}"
                        );
                    }
                    steps.run("rollback", || {
                        node.write(&manifest_path, current.as_bytes(), 0o600)?;
                        let s = restart::wait_ready(
                            kube,
                            node_name,
                            Restarted::HashIs(old_hash.as_deref()),
                            Expect::Flags(&flags),
                            timeout,
                        )?;
                        Ok(((), format!("audit manifest restored; {s}")))
                    })?;
                    bail!("disable failed and was rolled back: {failure:#}");
                }
            }
        }
    }
    if let Some(kube) = &kube
        && record.as_ref().is_some_and(|r| r.mode != Mode::Static)
    {
        steps.run("auditsink", || {
            let deleted =
                kube.block_on(kube.cluster.delete_audit_sink(cluster::AUDIT_SINK_NAME))?;
            let what = if deleted { "deleted" } else { "was not there" };
            Ok(((), format!("AuditSink {} {what}", cluster::AUDIT_SINK_NAME)))
        })?;
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
    node: &crate::node::Node,
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
        anyhow::anyhow!(
            "{}",
            e.located(&format!("{manifest_path} on {}", node.describe()))
        )
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
