//! `cargo xtask bench rollback`: on the real node (kubelet, containerd, runc), how long the API
//! server is down because of us. A failed enable (a flag the server refuses): from the manifest
//! rename until the original server is ready again, the wait plus the rollback. A successful
//! enable: from the rename until the new server is ready, the wait. Both read from the step
//! lines `k8s-audit` prints, for several runs; the medians are compared. Each run starts from
//! an API server the kubelet never restarted (a first failure), then fails the same way again
//! at once, to show what the kubelet's crash back-off adds to a second failure.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use testkit::median;
use testkit::real_node::RealNode;

#[derive(Parser)]
struct Args {
    /// Runs of each case; the medians are printed.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

const BINARY: &str = env!("CARGO_BIN_EXE_k8s-audit");

/// The seconds a step line says it took: `✓ wait      (3.52s) ...`.
fn step_seconds(text: &str, step: &str) -> Option<Duration> {
    text.lines().find_map(|line| {
        let rest = line
            .strip_prefix("✓ ")
            .or_else(|| line.strip_prefix("✗ "))?
            .strip_prefix(step)?;
        let secs = rest.trim_start().strip_prefix('(')?.split_once("s)")?.0;
        secs.parse::<f64>().ok().map(Duration::from_secs_f64)
    })
}

fn run(node: &RealNode, home: &Path, args: &[&str]) -> Result<(bool, String)> {
    let out = node
        .k8s_audit(Path::new(BINARY), home, args)
        .output()
        .context("running k8s-audit")?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// Gives the node an API server that the kubelet never restarted: the same manifest with an
/// annotation naming the run, so a new pod UID with no back-off history. Every run then
/// measures a first failure, as on a node whose API server has run for a while; without it,
/// each run's rollback and disable restart the same UID, and the kubelet's crash back-off
/// (10 s, doubling, kept for 10 minutes) grows from run to run.
fn fresh_baseline(node: &RealNode, run_index: usize) -> Result<()> {
    const KEY: &str = "    bench.k8s-audit-tools/run: ";
    let manifest = node.apiserver_manifest();
    let text = std::fs::read_to_string(&manifest)?;
    let kept: String = text
        .lines()
        .filter(|line| !line.starts_with(KEY))
        .map(|line| format!("{line}\n"))
        .collect();
    let fresh = kept.replacen(
        "  annotations:\n",
        &format!("  annotations:\n{KEY}\"{run_index}\"\n"),
        1,
    );
    if fresh == kept {
        bail!("{} has no metadata.annotations", manifest.display());
    }
    let before = node
        .wait_for(Duration::from_secs(120), |_, ready| ready)
        .config_hash;
    // A dotfile beside it, which the kubelet ignores, renamed over it.
    let staged = manifest.with_file_name(".kube-apiserver.yaml.bench");
    std::fs::write(&staged, fresh)?;
    std::fs::rename(&staged, &manifest)?;
    node.wait_for(Duration::from_secs(120), |pod, ready| {
        ready && pod.config_hash.is_some() && pod.config_hash != before
    });
    Ok(())
}

/// Runs an enable that the API server refuses and returns its downtime: the wait plus the
/// rollback.
fn failed_enable(
    node: &RealNode,
    home: &Path,
    falco: &str,
    label: &str,
) -> Result<(Duration, String)> {
    let (ok, text) = run(
        node,
        home,
        &[
            "enable",
            "static",
            "--falco-url",
            falco,
            "--test-only-batch-max-wait",
            "5",
        ],
    )?;
    match (step_seconds(&text, "wait"), step_seconds(&text, "rollback")) {
        (Some(wait), Some(rollback)) if !ok => Ok((wait + rollback, text)),
        _ => bail!("{label}: no failed wait and rollback (ok: {ok}):\n{text}"),
    }
}

fn main() -> Result<()> {
    let args = Args::parse_from(testkit::bench_args());
    let Some(node) = RealNode::start() else {
        bail!("this machine cannot run the real node (see the message above)");
    };
    let up = node.bring_up();
    println!(
        "real node up: /readyz {:.1?} after the kubelet started",
        up.ready
    );
    let home = tempfile::tempdir()?;
    let (falco, _events) = node.receiver();
    let (mut first, mut again, mut succeeded) = (Vec::new(), Vec::new(), Vec::new());
    for run_index in 0..args.runs {
        fresh_baseline(&node, run_index)?;
        let (down, _) = failed_enable(&node, home.path(), &falco, "first failure")?;
        first.push(down);
        // The same change again, at once: the rollback restores the pod UID it restored a
        // moment ago, whose crash back-off is now armed (the first rollback said so).
        let (down, _) = failed_enable(&node, home.path(), &falco, "second failure")?;
        again.push(down);

        let (ok, text) = run(
            &node,
            home.path(),
            &[
                "enable",
                "static",
                "--falco-url",
                &falco,
                "--timeout",
                "120",
            ],
        )?;
        let Some(wait) = step_seconds(&text, "wait").filter(|_| ok) else {
            bail!("run {run_index}: the enable failed:\n{text}");
        };
        succeeded.push(wait);
        let (ok, text) = run(&node, home.path(), &["disable", "--timeout", "120"])?;
        if !ok {
            bail!("run {run_index}: disable failed:\n{text}");
        }
        println!(
            "run {run_index}: failed enable down {:.1?} (again at once: {:.1?}), successful enable down {:.1?}",
            first[run_index], again[run_index], succeeded[run_index]
        );
    }
    let runs = args.runs;
    let (first, again, succeeded) = (
        median(&mut first),
        median(&mut again),
        median(&mut succeeded),
    );
    println!("\nAPI server downtime on the real node, median of {runs} runs:");
    println!(
        "  failed enable (rename -> original ready again)          {:>6.1} s",
        first.as_secs_f64()
    );
    println!(
        "  the same failure again at once (kubelet back-off armed)  {:>6.1} s",
        again.as_secs_f64()
    );
    println!(
        "  successful enable (rename -> new server ready)           {:>6.1} s",
        succeeded.as_secs_f64()
    );
    println!(
        "  (before the fail-fast watch, a failed enable waited out --timeout: 180 s by default)"
    );
    Ok(())
}
