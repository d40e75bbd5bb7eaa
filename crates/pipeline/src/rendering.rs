//! Stage 2, rendering: fills the bundled templates with `render --strict` semantics, so a
//! missing value stops the run here, before anything on the node changes.

use patch_apiserver::Mode;

use crate::error::{Context, Result};
use crate::preflight::Plan;
use crate::templates;

/// The rendered files, by their name in the audit directory.
pub type Files = Vec<(&'static str, Vec<u8>)>;

/// Renders what `mode` needs; returns the files and a one-line summary.
pub fn run(mode: Mode, plan: &Plan) -> Result<(Files, String)> {
    let mut files = Files::new();
    if mode != Mode::Dynamic {
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
    if mode == Mode::Static {
        files.push(("webhook-config.yaml", templates::webhook_config(falco()?)?));
    }
    if mode != Mode::Static {
        files.push(("audit-sink.yaml", templates::audit_sink(falco()?)?));
    }
    let summary = files
        .iter()
        .map(|(name, bytes)| format!("{name} ({} bytes)", bytes.len()))
        .collect::<Vec<_>>()
        .join(", ");
    Ok((files, summary))
}
