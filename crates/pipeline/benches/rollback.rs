//! `cargo xtask bench rollback`: on the real node (kubelet, containerd, runc), how long the API
//! server is down because of us. A failed enable (a flag the server refuses): from the manifest
//! rename until the original server is ready again. A successful enable: from the rename until
//! the new server is ready. Each is measured twice: by a client sampling `/readyz` every
//! 100 ms, and by the pipeline's own steps (wait, plus rollback), which also wait for the
//! kubelet to publish the new mirror pod. Each run starts from an API server the kubelet never
//! restarted (a first failure), then fails the same way again at once, to show what the
//! kubelet's crash back-off adds to a second failure; the medians of several runs are printed.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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

/// What one enable cost: the API server's downtime as a client sees it (`/readyz` sampled
/// every 100 ms), and the pipeline's steps that waited (the wait, plus the rollback after a
/// failure). The steps end later: they also wait for the kubelet to publish the new mirror
/// pod, which lags after a restart (the kubelet's pod watch reconnects with a back-off).
struct Outage {
    down: Duration,
    steps: Duration,
}

/// Runs `f` while sampling the node's `/readyz` every 100 ms; returns what `f` returned and
/// the longest stretch without a ready answer.
fn with_downtime<T>(node: &RealNode, f: impl FnOnce() -> T) -> (T, Duration) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let (mut longest, mut down_since) = (Duration::ZERO, None::<Instant>);
            loop {
                let stopping = stop.load(Ordering::Relaxed);
                match (node.node().readyz(), down_since) {
                    (false, None) => down_since = Some(Instant::now()),
                    (true, Some(since)) => {
                        longest = longest.max(since.elapsed());
                        down_since = None;
                    }
                    _ => {}
                }
                if stopping {
                    return longest.max(down_since.map_or(Duration::ZERO, |s| s.elapsed()));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let value = f();
        stop.store(true, Ordering::Relaxed);
        (value, sampler.join().expect("the sampler does not panic"))
    })
}

/// Runs `enable` with `extra` arguments; `fails` says whether it must fail and roll back.
fn enable(
    node: &RealNode,
    home: &Path,
    falco: &str,
    extra: &[&str],
    fails: bool,
) -> Result<Outage> {
    let mut argv = vec!["enable", "static", "--falco-url", falco];
    argv.extend_from_slice(extra);
    let (ran, down) = with_downtime(node, || run(node, home, &argv));
    let (ok, text) = ran?;
    let wait = step_seconds(&text, "wait");
    let steps = if fails {
        match (wait, step_seconds(&text, "rollback")) {
            (Some(wait), Some(rollback)) if !ok => Some(wait + rollback),
            _ => None,
        }
    } else {
        wait.filter(|_| ok)
    };
    match steps {
        Some(steps) => Ok(Outage { down, steps }),
        None => bail!("enable {argv:?} (ok: {ok}, expected to fail: {fails}):\n{text}"),
    }
}

const REFUSED: &[&str] = &["--test-only-batch-max-wait", "5"];

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
    let mut cases: [(&str, Vec<Outage>); 3] = [
        ("failed enable (rename -> original ready again)", Vec::new()),
        (
            "the same failure again at once (back-off armed)",
            Vec::new(),
        ),
        ("successful enable (rename -> new server ready)", Vec::new()),
    ];
    for run_index in 0..args.runs {
        fresh_baseline(&node, run_index)?;
        cases[0]
            .1
            .push(enable(&node, home.path(), &falco, REFUSED, true)?);
        // The same change again, at once: the rollback restores the pod UID it restored a
        // moment ago, whose crash back-off is now armed (the first rollback said so).
        cases[1]
            .1
            .push(enable(&node, home.path(), &falco, REFUSED, true)?);
        cases[2].1.push(enable(
            &node,
            home.path(),
            &falco,
            &["--timeout", "120"],
            false,
        )?);
        let (ok, text) = run(&node, home.path(), &["disable", "--timeout", "120"])?;
        if !ok {
            bail!("run {run_index}: disable failed:\n{text}");
        }
        let [a, b, c] = [&cases[0].1, &cases[1].1, &cases[2].1].map(|v| &v[run_index]);
        println!(
            "run {run_index}: API server down {:.1?} / {:.1?} / {:.1?} (the pipeline's steps {:.1?} / {:.1?} / {:.1?})",
            a.down, b.down, c.down, a.steps, b.steps, c.steps
        );
    }
    println!(
        "\nOn the real node, median of {} runs:  API server down (/readyz)   pipeline's wait (+ rollback)",
        args.runs
    );
    for (label, outages) in &mut cases {
        let mut down: Vec<Duration> = outages.iter().map(|o| o.down).collect();
        let mut steps: Vec<Duration> = outages.iter().map(|o| o.steps).collect();
        println!(
            "  {label:<50} {:>6.1} s {:>16.1} s",
            median(&mut down).as_secs_f64(),
            median(&mut steps).as_secs_f64()
        );
    }
    println!(
        "  (before the fail-fast watch, a failed enable waited out --timeout: 180 s by default)"
    );
    Ok(())
}
