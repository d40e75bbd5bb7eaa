//! Stage 2, rendering: fills the bundled templates with `render --strict` semantics, so a
//! missing value stops the run here, before anything on the node changes.

use patch_apiserver::{AuditFile, Mode};

use crate::error::{Context, Result};
use crate::preflight::Plan;
use crate::templates;

/// The rendered files, by their name in the audit directory.
pub type Files = Vec<(&'static str, Vec<u8>)>;

/// The rendered AuditSink object (dynamic modes), which goes to the cluster, not the node.
pub const AUDIT_SINK: &str = "audit-sink.yaml";

/// Renders what `mode` needs: the files patch-apiserver says its flags name, and the
/// AuditSink in the dynamic modes. Returns the files and a one-line summary.
pub fn run(mode: Mode, plan: &Plan) -> Result<(Files, String)> {
    let falco = || {
        plan.falco
            .as_ref()
            .context("no Falco endpoint was resolved")
    };
    let mut files = Files::new();
    for file in patch_apiserver::audit_files(&plan.options) {
        let bytes = match file {
            AuditFile::Policy => templates::audit_policy(plan.options.kube_version.as_ref())?,
            AuditFile::WebhookConfig => templates::webhook_config(falco()?)?,
            AuditFile::Log => continue,
        };
        files.push((file.file_name(), bytes));
    }
    if mode != Mode::Static {
        files.push((AUDIT_SINK, templates::audit_sink(falco()?)?));
    }
    let summary = files
        .iter()
        .map(|(name, bytes)| format!("{name} ({} bytes)", bytes.len()))
        .collect::<Vec<_>>()
        .join(", ");
    Ok((files, summary))
}
