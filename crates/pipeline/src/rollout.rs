//! Apply, wait and rollback across the control plane: one node at a time, in the fleet's
//! order, each only while every other API server answers /readyz at its own address, so that
//! the run never has two API servers down at once. A node that fails is rolled back, then the
//! nodes before it in reverse order: a partly audited control plane is never left behind
//! silently (`--keep-partial` leaves it behind loudly).

use std::time::{Duration, Instant};

use cluster::Readiness;

use crate::cluster_args::Kube;
use crate::enable::EnableArgs;
use crate::error::{PipelineError, Result, bail};
use crate::preflight::{Plan, Preflight};
use crate::rendering::Files;
use crate::report::Steps;
use crate::rollback::{self, ManifestChange};
use crate::wait::{self, Expect, Health, RestartArgs, Restarted};
use crate::{apply, state};

/// What happened on each node, for the table a failed run ends with.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Row {
    NotTouched,
    Unchanged,
    Enabled,
    Failed(String),
    UndoneAfterFailure,
    UndoFailed(String),
}

impl Row {
    fn text(&self) -> String {
        match self {
            Row::NotTouched => "not touched".into(),
            Row::Unchanged => "already enabled, left as it was".into(),
            Row::Enabled => "enabled".into(),
            Row::Failed(why) => format!("FAILED: {why}"),
            Row::UndoneAfterFailure => "enabled, then rolled back: original manifest, ready".into(),
            Row::UndoFailed(why) => format!("enabled, rollback FAILED: {why}"),
        }
    }
}

pub struct Outcome {
    /// Whether any node's manifest or audit files changed.
    pub changed_any: bool,
}

/// Where the run asks whether a node's API server is ready.
pub fn health<'a>(pre: &'a Preflight, plan: &'a Plan) -> Health<'a> {
    Health::of(&plan.node, &plan.target, pre.probe.as_ref())
}

/// Changes every node in order; on a failure rolls back as described above, prints the
/// per-node table and fails.
pub fn enable_each(
    args: &EnableArgs,
    pre: &Preflight,
    files: &[Files],
    steps: &Steps,
) -> Result<Outcome> {
    let multi = pre.plans.len() > 1;
    let mut rows = vec![Row::NotTouched; pre.plans.len()];
    let mut changed_any = false;
    let mut failure = None;
    for (k, (plan, files)) in pre.plans.iter().zip(files).enumerate() {
        let label = plan.target.step_label(multi);
        if multi && let Err(error) = gate(args, pre, k, steps, &label) {
            failure = Some((k, error, false));
            break;
        }
        match enable_one(args, pre, plan, files, steps, &label) {
            Ok(changed) => {
                changed_any |= changed.manifest || changed.files;
                rows[k] = match changed.manifest {
                    true => Row::Enabled,
                    false => Row::Unchanged,
                };
            }
            Err(error) => {
                failure = Some((k, error, true));
                break;
            }
        }
    }
    let Some((k, error, touched)) = failure else {
        return Ok(Outcome { changed_any });
    };
    if !multi {
        return Err(error);
    }
    let failed = &pre.plans[k];
    rows[k] = match touched {
        true => Row::Failed(first_line(&error.report())),
        false => Row::NotTouched,
    };
    let enabled: Vec<usize> = (0..k).filter(|j| rows[*j] == Row::Enabled).collect();
    let undo = !args.keep_partial && !args.restart.no_rollback;
    if undo {
        for &j in enabled.iter().rev() {
            let plan = &pre.plans[j];
            let label = plan.target.step_label(multi);
            let undone = gate(args, pre, j, steps, &label)
                .and_then(|()| undo_enable(args, pre, plan, steps, &label));
            rows[j] = match undone {
                Ok(()) => Row::UndoneAfterFailure,
                Err(e) => Row::UndoFailed(first_line(&e.report())),
            };
            if matches!(rows[j], Row::UndoFailed(_)) {
                // Another restart now could take a second API server down.
                break;
            }
        }
    }
    let width = pre
        .plans
        .iter()
        .map(|p| p.target.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    steps.output(format!("{:<width$}  result", "node"));
    for (plan, row) in pre.plans.iter().zip(&rows) {
        steps.output(format!("{:<width$}  {}", plan.target.name, row.text()));
    }
    let unaudited: Vec<&str> = pre
        .plans
        .iter()
        .zip(&rows)
        .filter(|(_, row)| !matches!(row, Row::Enabled | Row::Unchanged))
        .map(|(plan, _)| plan.target.name.as_str())
        .collect();
    let kept: Vec<&str> = enabled
        .iter()
        .filter(|j| rows[**j] == Row::Enabled)
        .map(|j| pre.plans[*j].target.name.as_str())
        .collect();
    let what = match touched {
        true => format!("enable failed on {}", failed.target.name),
        false => format!("enable stopped before {}", failed.target.name),
    };
    if kept.is_empty() {
        bail!("{what}, and no node was left changed: {}", error.report())
    }
    let why = match (args.keep_partial, undo) {
        (true, _) => "--keep-partial leaves",
        (false, false) => "--no-rollback leaves",
        (false, true) => "the rollback stopped, leaving",
    };
    Err(PipelineError::failed(format!(
        "{what}: {}. {why} {} enabled; {} stay UNAUDITED",
        error.report(),
        kept.join(", "),
        unaudited.join(", ")
    )))
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_string()
}

struct Changed {
    manifest: bool,
    files: bool,
}

/// The single-node pipeline's apply, wait and rollback for one node.
fn enable_one(
    args: &EnableArgs,
    pre: &Preflight,
    plan: &Plan,
    files: &Files,
    steps: &Steps,
    label: &str,
) -> Result<Changed> {
    let uploaded = steps.run(&format!("apply{label}"), || {
        apply::run(args, plan, pre.durable.as_ref(), files)
    })?;
    if !plan.patched.changed {
        steps.warn(format!(
            "{} is already patched for {} mode: left as it is",
            plan.manifest_path, args.mode
        ));
        if uploaded > 0 {
            steps.warn("the audit files changed; the API server reads them only at startup, so restart it to use them");
        }
        return Ok(Changed {
            manifest: false,
            files: uploaded > 0,
        });
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
        node_name: plan.target.in_cluster.then_some(plan.target.name.as_str()),
        health: health(pre, plan),
    };
    rollback::wait_or_roll_back(pre.kube.as_ref(), &args.restart, &change, steps, label)?;
    Ok(Changed {
        manifest: true,
        files: uploaded > 0,
    })
}

/// Waits until every node but `except` answers /readyz at its own address: only then may the
/// run restart `except`'s API server.
fn gate(
    args: &EnableArgs,
    pre: &Preflight,
    except: usize,
    steps: &Steps,
    label: &str,
) -> Result<()> {
    let Some(kube) = pre.kube.as_ref().filter(|_| !args.restart.no_wait) else {
        return Ok(());
    };
    let others: Vec<(&str, Health)> = pre
        .plans
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != except)
        .map(|(_, plan)| (plan.target.name.as_str(), health(pre, plan)))
        .collect();
    let name = &pre.plans[except].target.name;
    wait_for_others(kube, &others, name, &args.restart, steps, label)
}

/// The health gate before `name`'s API server restarts: every one of `others` answers
/// /readyz, without a break for the last `restart.settle` seconds, waited for up to
/// `restart.timeout` seconds.
pub fn wait_for_others(
    kube: &Kube,
    others: &[(&str, Health)],
    name: &str,
    restart: &RestartArgs,
    steps: &Steps,
    label: &str,
) -> Result<()> {
    let settle = Duration::from_secs(restart.settle);
    steps.run(&format!("gate{label}"), || {
        let started = Instant::now();
        // Since when each one has answered without a break.
        let mut ready_since: Vec<Option<Instant>> = vec![None; others.len()];
        loop {
            let mut waiting = Vec::new();
            for ((other, health), since) in others.iter().zip(&mut ready_since) {
                match health.readiness(kube) {
                    Readiness::Ready => {
                        let since = *since.get_or_insert_with(Instant::now);
                        if since.elapsed() < settle {
                            waiting.push(format!("{other}: ready for {:.1}s", since.elapsed().as_secs_f64()));
                        }
                    }
                    Readiness::NotReady(why) | Readiness::Unreachable(why) => {
                        *since = None;
                        waiting.push(format!("{other} ({}): {why}", health.describe(kube)));
                    }
                }
            }
            if waiting.is_empty() {
                let names: Vec<&str> = others.iter().map(|(n, _)| *n).collect();
                return Ok((
                    (),
                    format!("{} ready for {}s", names.join(", "), restart.settle),
                ));
            }
            if started.elapsed() >= Duration::from_secs(restart.timeout) {
                bail!(
                    "not restarting {name}: another API server is not steadily ready after {}s, and two must never be down at once: {}",
                    restart.timeout,
                    waiting.join("; ")
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    })
}

/// Puts back what enable changed on a node that came back fine, because a later node failed:
/// the original manifest and the state record as it was, then waits for the original hash.
fn undo_enable(
    args: &EnableArgs,
    pre: &Preflight,
    plan: &Plan,
    steps: &Steps,
    label: &str,
) -> Result<()> {
    let kube = pre.kube.as_ref();
    steps.run(&format!("rollback{label}"), || {
        let dir = &args.target.node.audit_dir;
        plan.node
            .write(&plan.manifest_path, plan.original.as_bytes(), 0o600)?;
        let record = state::state_path(dir);
        match &plan.record {
            Some(earlier) => plan
                .node
                .write(&record, earlier.to_text().as_bytes(), 0o600)?,
            None => plan.node.remove(&[&record])?,
        }
        if pre.durable.is_some() && !(plan.record.is_some() && plan.durable_original_kept) {
            plan.node.remove(&[&crate::durable::original_path(dir)])?;
        }
        let Some(kube) = kube else {
            return Ok(((), "original manifest restored".into()));
        };
        let summary = wait::wait_ready(
            kube,
            plan.target.in_cluster.then_some(plan.target.name.as_str()),
            health(pre, plan),
            Restarted::HashIs(plan.old_hash.as_deref()),
            Expect::Flags(&[]),
            Duration::from_secs(args.restart.timeout),
            None,
        )?;
        Ok(((), format!("original manifest restored; {summary}")))
    })
}
