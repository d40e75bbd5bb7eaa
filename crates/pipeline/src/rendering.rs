//! Stage 2, rendering: fills the bundled templates with `render --strict` semantics, so a
//! missing value stops the run here, before anything on the node changes. The policy (a preset
//! or `--policy FILE`) is checked here too, for the version the flags are written for.

use patch_apiserver::{AuditFile, Mode};

use crate::error::{Context, Result};
use crate::policy::{self, PolicyArgs};
use crate::preflight::Plan;
use crate::report::Steps;
use crate::templates;

/// The rendered files, by their name in the audit directory.
pub type Files = Vec<(&'static str, Vec<u8>)>;

/// The rendered AuditSink object (dynamic modes), which goes to the cluster, not the node.
pub const AUDIT_SINK: &str = "audit-sink.yaml";

/// Renders what `mode` needs: the files patch-apiserver says its flags name, and the
/// AuditSink in the dynamic modes. Returns the files and a one-line summary; the policy's
/// warnings go to `steps`.
pub fn run(mode: Mode, policy: &PolicyArgs, plan: &Plan, steps: &Steps) -> Result<(Files, String)> {
    let falco = || {
        plan.falco
            .as_ref()
            .context("no Falco endpoint was resolved")
    };
    let mut files = Files::new();
    for file in patch_apiserver::audit_files(&plan.options) {
        let bytes = match file {
            AuditFile::Policy => {
                let (bytes, warnings) =
                    policy::policy_file(policy, plan.options.kube_version.as_ref())?;
                for warning in warnings {
                    steps.warn(warning);
                }
                bytes
            }
            AuditFile::WebhookConfig => templates::webhook_config(falco()?)?,
            AuditFile::Log => continue,
        };
        files.push((file.file_name(), bytes));
    }
    if mode != Mode::Static {
        files.push((AUDIT_SINK, templates::audit_sink(falco()?)?));
        // An AuditSink's policy is one level for every request, with no rules: the Secrets
        // the policy file keeps at Metadata reach the webhook with their values.
        steps.warn(format!(
            "the dynamic modes' AuditSink sends every request at RequestResponse (its policy has one level and no rules), so Secret values reach {} whatever the policy file says; static mode applies the policy to the webhook too",
            falco()?
        ));
    }
    let summary = files
        .iter()
        .map(|(name, bytes)| format!("{name} ({} bytes)", bytes.len()))
        .collect::<Vec<_>>()
        .join(", ");
    Ok((files, summary))
}

/// The keys whose values are secrets: `--dry-run` and any other display shows them redacted.
const SECRET_KEYS: [&str; 1] = ["client-key-data"];

/// A rendered file as it may be shown (`--dry-run`): the text, with the value of every secret
/// key (the client's private key) replaced by a note of its size. What goes to the node is the
/// file itself, never this.
pub fn display_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut rest: &str = &text;
    'scan: while !rest.is_empty() {
        let found = SECRET_KEYS
            .iter()
            .filter_map(|key| rest.find(&format!("{key}:")).map(|i| (i, key.len() + 1)))
            .min();
        let Some((at, len)) = found else {
            break 'scan;
        };
        let value_start = at + len;
        out.push_str(&rest[..value_start]);
        let after = &rest[value_start..];
        let blank = after.len() - after.trim_start_matches([' ', '"', '\'']).len();
        let value_len = after[blank..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || "+/=".contains(c)))
            .unwrap_or(after.len() - blank);
        out.push_str(&after[..blank]);
        out.push_str(&format!("<redacted: {value_len} bytes>"));
        rest = &after[blank + value_len..];
    }
    out.push_str(rest);
    out
}
