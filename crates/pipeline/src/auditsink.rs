//! Stage 6, auditsink (dynamic modes only): creates the AuditSink object, or replaces it when
//! it exists. It does not use server-side apply, because 1.13–1.15 lack it. `disable` deletes it.

use crate::cluster_args::Kube;
use crate::error::{Context, Result};
use crate::rendering::Files;
use crate::report::Steps;

/// Creates or replaces the rendered AuditSink.
pub fn apply(kube: &Kube, files: &Files, steps: &Steps) -> Result<()> {
    let sink = files
        .iter()
        .find(|(name, _)| *name == crate::rendering::AUDIT_SINK)
        .map(|(_, bytes)| String::from_utf8_lossy(bytes).into_owned())
        .context("the AuditSink was rendered")?;
    steps.run("auditsink", || {
        let applied = kube.block_on(kube.cluster.apply_audit_sink(&sink))?;
        Ok((
            (),
            format!("AuditSink {} {applied:?}", cluster::AUDIT_SINK_NAME).to_lowercase(),
        ))
    })
}

/// Deletes our AuditSink, if it is there.
pub fn delete(kube: &Kube, steps: &Steps) -> Result<()> {
    steps.run("auditsink", || {
        let deleted = kube.block_on(kube.cluster.delete_audit_sink(cluster::AUDIT_SINK_NAME))?;
        let what = if deleted { "deleted" } else { "was not there" };
        Ok(((), format!("AuditSink {} {what}", cluster::AUDIT_SINK_NAME)))
    })
}
