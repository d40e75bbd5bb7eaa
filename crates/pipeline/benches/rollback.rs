//! `cargo xtask bench rollback`: on the real node (kubelet, containerd, runc), how long the API
//! server is down because of us. A failed enable (a flag the server refuses): from the manifest
//! rename until the original server is ready again, the wait plus the rollback. A successful
//! enable: from the rename until the new server is ready, the wait. Both read from the step
//! lines `k8s-audit` prints, for several runs; the medians are compared.

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
    let (mut failed, mut succeeded) = (Vec::new(), Vec::new());
    for run_index in 0..args.runs {
        node.wait_for(Duration::from_secs(120), |pod, ready| {
            ready && pod.config_hash.is_some()
        });
        let (ok, text) = run(
            &node,
            home.path(),
            &[
                "enable",
                "static",
                "--falco-url",
                &falco,
                "--test-only-batch-max-wait",
                "5",
            ],
        )?;
        let (Some(wait), Some(rollback)) =
            (step_seconds(&text, "wait"), step_seconds(&text, "rollback"))
        else {
            bail!("run {run_index}: no wait and rollback lines (ok: {ok}):\n{text}");
        };
        failed.push(wait + rollback);

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
            "run {run_index}: failed enable down {:.1?}, successful enable down {:.1?}",
            failed[run_index], succeeded[run_index]
        );
    }
    let (failed, succeeded) = (median(&mut failed), median(&mut succeeded));
    println!(
        "\nAPI server downtime on the real node, median of {} runs:",
        args.runs
    );
    println!(
        "  failed enable (rename -> original ready again)   {:>6.1} s",
        failed.as_secs_f64()
    );
    println!(
        "  successful enable (rename -> new server ready)    {:>6.1} s",
        succeeded.as_secs_f64()
    );
    println!(
        "  (before the fail-fast watch, a failed enable waited out --timeout: 180 s by default)"
    );
    Ok(())
}
