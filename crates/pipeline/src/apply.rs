//! Stage 3, apply: the old scripts' "ship" and "patch" steps as one transaction on the node
//! (`Node::apply`). The audit directory, the changed audit files, the backup of the original
//! manifest, the state record and the new manifest are all staged first and renamed only when
//! every one is in place, the manifest last, so a dropped connection leaves all of it or none,
//! and the kubelet never sees a manifest whose files are missing.

use crate::durable::DurablePlan;
use crate::enable::EnableArgs;
use crate::error::Result;
use crate::node::Change;
use crate::preflight::Plan;
use crate::rendering::Files;
use crate::state::{self, Enabled, State};

/// Uploads the files that differ from what the node holds and, when the manifest changes,
/// writes the backup, the state record and the new manifest: one transaction, so a dropped
/// connection leaves either all of it or none. Returns how many audit files it wrote.
pub fn run(
    args: &EnableArgs,
    plan: &Plan,
    durable: Option<&DurablePlan>,
    files: &Files,
) -> Result<(usize, String)> {
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
    let durable_original = crate::durable::original_path(dir);
    let this = Enabled::from_options(&plan.options);
    // The first backup stays the one disable restores: a later enable (a mode change) backs
    // up a manifest that already carries our flags.
    let record = match &plan.record {
        Some(earlier) => State {
            manifest: plan.manifest_path.clone(),
            backup: earlier.backup.clone(),
            enables: earlier.enables.iter().cloned().chain([this]).collect(),
        },
        None => State {
            manifest: plan.manifest_path.clone(),
            backup: backup.clone(),
            enables: vec![this],
        },
    }
    .to_text();
    // The ClusterConfiguration before the first enable, for disable; a later enable keeps it.
    if let Some(durable) = durable
        && !(plan.record.is_some() && plan.durable_original_kept)
    {
        changes.push(Change::File {
            path: &durable_original,
            bytes: durable.read.cluster_configuration.as_bytes(),
            mode: 0o600,
        });
    }
    if plan.patched.changed {
        changes.extend([
            Change::PrivateDir(&backup_dir),
            Change::NewFile {
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
    match (&plan.record, plan.patched.changed) {
        (_, false) => {}
        (None, true) => summary.push_str(&format!(
            "; {} replaced, original backed up to {backup}",
            plan.manifest_path
        )),
        (Some(earlier), true) => summary.push_str(&format!(
            "; {} replaced, previous version backed up to {backup}; disable restores the original, {}",
            plan.manifest_path, earlier.backup
        )),
    }
    Ok((names.len(), summary))
}
