//! `cargo xtask bench ha`: on an HA control plane of three real API servers (testkit::ha), the
//! static enable as the product runs it, one `k8s-audit` run that restarts one node at a time
//! behind the health gate, next to three single-node enables run one after another
//! (`--node node1`, then node2, then node3: three runs of the binary, not gated against each
//! other). For each: the wall time, each server's longest outage and the fewest servers ready at
//! once, both as the availability probe saw them. Every side is measured in the same run, on the
//! same cluster, and every enable is undone by a `disable` (not timed) before the next.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use testkit::ha::{Availability, AvailabilityProbe, HaCluster};
use testkit::median;

#[derive(Parser)]
struct Args {
    /// Runs of each side; the medians are printed.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Leave out the second rolling enable, the one with `--settle 0` (it adds one rollout and
    /// one disable per run).
    #[arg(long)]
    no_settle_zero: bool,
}

const BINARY: &str = env!("CARGO_BIN_EXE_k8s-audit");
/// A loopback URL: the webhook's events go nowhere, and no packet leaves the machine.
const FALCO_URL: &str = "http://127.0.0.1:9/k8s-audit";
const NODES: usize = 3;
/// What wait_up gives the cluster between steps; a server restart takes seconds.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(180);
/// The product's `--settle`, which the rolling enable runs with.
const DEFAULT_SETTLE: u64 = 10;

struct Bench {
    cluster: HaCluster,
    home: tempfile::TempDir,
}

/// One side of one run: the wall time, the time the gates took (rolling only) and what the
/// availability probe saw.
struct Measured {
    total: Duration,
    gates: Duration,
    availability: Availability,
}

impl Bench {
    /// `k8s-audit <command> ssh [static]` against every node (or those of `extra`'s `--node`),
    /// with the nodes and their API servers found through the load balancer's kubeconfig.
    fn command(&self, command: &str, extra: &[&str]) -> Command {
        let mut cmd = Command::new(BINARY);
        cmd.arg(command).arg("ssh");
        if command == "enable" {
            cmd.args(["static", "--falco-url", FALCO_URL, "--skip-reachability"]);
        }
        cmd.args(self.cluster.access_args())
            .args(extra)
            .env("HOME", self.home.path())
            .env_remove("KUBECONFIG")
            .env_remove("SSH_AUTH_SOCK");
        cmd
    }

    /// Runs one `k8s-audit`, failing with its output when it fails; returns its standard output.
    fn run(&self, command: &str, extra: &[&str]) -> Result<String> {
        let out = self
            .command(command, extra)
            .output()
            .with_context(|| format!("running {BINARY}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "k8s-audit {command} {} failed ({}):\n{stdout}\n{}",
                extra.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(stdout)
    }

    /// Every node's server ready and running the manifest on disk.
    fn wait_up(&self) -> Result<()> {
        self.cluster
            .wait_up(SETTLE_TIMEOUT)
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Undoes every enable on every node (not measured), then waits for the cluster.
    fn disable(&self) -> Result<()> {
        // The gate still keeps two servers from being down at once; no settle, since this
        // is not measured.
        self.run("disable", &["--settle", "0"])?;
        self.wait_up()
    }

    /// Runs `runs` (each an enable's extra arguments) one after another under one probe.
    fn measure(&self, runs: &[Vec<&str>]) -> Result<Measured> {
        let probe = AvailabilityProbe::start(&self.cluster);
        let started = Instant::now();
        let mut gates = Duration::ZERO;
        for extra in runs {
            let stdout = self.run("enable", extra)?;
            gates += gate_seconds(&stdout);
        }
        let total = started.elapsed();
        let availability = probe.stop();
        for server in &availability.servers {
            if server.first_hash == server.last_hash {
                bail!(
                    "{}'s mirror pod kept its hash: the enable did not restart it\n{availability:#?}",
                    server.name
                );
            }
        }
        Ok(Measured {
            total,
            gates,
            availability,
        })
    }
}

/// The sum of the health gates' step lines, `✓ gate node1 (10.52s) node2, node3 ready for 10s`.
fn gate_seconds(stdout: &str) -> Duration {
    stdout
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("✓ gate")?;
            let secs = rest.split_once('(')?.1.split_once("s)")?.0;
            secs.parse::<f64>().ok().map(Duration::from_secs_f64)
        })
        .sum()
}

/// The medians of one side over every run, and the fewest servers ready in any run.
struct Summary {
    label: String,
    total: Duration,
    gates: Option<Duration>,
    longest_outages: Vec<Duration>,
    min_ready: usize,
}

fn summarize(label: &str, measured: &[Measured], gated: bool) -> Summary {
    let mut totals: Vec<Duration> = measured.iter().map(|m| m.total).collect();
    let mut gates: Vec<Duration> = measured.iter().map(|m| m.gates).collect();
    let longest_outages = (0..NODES)
        .map(|node| {
            let mut outages: Vec<Duration> = measured
                .iter()
                .map(|m| {
                    m.availability
                        .servers
                        .get(node)
                        .map(|s| s.longest_outage)
                        .unwrap_or_default()
                })
                .collect();
            median(&mut outages)
        })
        .collect();
    Summary {
        label: label.to_string(),
        total: median(&mut totals),
        gates: gated.then(|| median(&mut gates)),
        longest_outages,
        min_ready: measured
            .iter()
            .map(|m| m.availability.min_ready)
            .min()
            .unwrap_or_default(),
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn one_line(measured: &Measured, gated: bool) -> String {
    let outages: Vec<String> = measured
        .availability
        .servers
        .iter()
        .map(|s| format!("{} {}", s.name, secs(s.longest_outage)))
        .collect();
    let gates = match gated {
        true => format!(" (gates {})", secs(measured.gates)),
        false => String::new(),
    };
    format!(
        "{}{gates}, down: {}, min ready {}/{NODES}",
        secs(measured.total),
        outages.join(", "),
        measured.availability.min_ready
    )
}

fn main() -> Result<()> {
    let args = Args::parse_from(testkit::bench_args());
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let started = Instant::now();
    let cluster = HaCluster::start(NODES).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "HA control plane of {NODES} real API servers up in {}",
        secs(started.elapsed())
    );
    let bench = Bench {
        cluster,
        home: tempfile::tempdir()?,
    };
    let names: Vec<String> = bench
        .cluster
        .nodes()
        .iter()
        .map(|n| n.name.clone())
        .collect();
    let single_node_runs: Vec<Vec<&str>> = names
        .iter()
        .map(|name| vec!["--node", name.as_str()])
        .collect();

    let (mut rolling, mut rolling_unsettled, mut sequential) = (Vec::new(), Vec::new(), Vec::new());
    for run_index in 0..args.runs {
        bench.wait_up()?;
        let measured = bench.measure(&[vec![]])?;
        println!(
            "run {run_index}: rolling enable             {}",
            one_line(&measured, true)
        );
        rolling.push(measured);
        bench.disable()?;

        if !args.no_settle_zero {
            let measured = bench.measure(&[vec!["--settle", "0"]])?;
            println!(
                "run {run_index}: rolling enable, --settle 0 {}",
                one_line(&measured, true)
            );
            rolling_unsettled.push(measured);
            bench.disable()?;
        }

        let measured = bench.measure(&single_node_runs)?;
        println!(
            "run {run_index}: 3 single-node enables      {}",
            one_line(&measured, false)
        );
        sequential.push(measured);
        bench.disable()?;
    }

    let mut rows = vec![summarize(
        &format!("rolling, --settle {DEFAULT_SETTLE} (default)"),
        &rolling,
        true,
    )];
    if !rolling_unsettled.is_empty() {
        rows.push(summarize("rolling, --settle 0", &rolling_unsettled, true));
    }
    let sequential = summarize("3 single-node enables", &sequential, false);
    rows.push(sequential);

    println!(
        "\nStatic enable of {NODES} control-plane nodes on the HA harness, median of {} run(s).",
        args.runs
    );
    println!(
        "rolling: one k8s-audit run; before each node's restart its gate waits until every other\n\
         server has answered /readyz without a break for --settle seconds, so its total includes\n\
         about {NODES} x settle. --settle 0 shows the same rollout with only the readiness check.\n\
         single-node: `enable --node nodeN` for node1, node2, node3, three runs one after another,\n\
         each waiting only for its own server. down = the probe's longest outage of each server\n\
         (/readyz every 100 ms); min ready = the fewest servers ready in one sample, over all runs."
    );
    let header: Vec<String> = names.iter().map(|n| format!("{n} down")).collect();
    println!(
        "\n{:<30} {:>8} {:>8} {:>11} {:>11} {:>11} {:>10}",
        "", "total", "gates", header[0], header[1], header[2], "min ready"
    );
    let baseline = rows.last().map(|r| r.total).unwrap_or_default();
    for row in &rows {
        let outage = |i: usize| {
            row.longest_outages
                .get(i)
                .copied()
                .map(secs)
                .unwrap_or_default()
        };
        println!(
            "{:<30} {:>8} {:>8} {:>11} {:>11} {:>11} {:>10}",
            row.label,
            secs(row.total),
            row.gates.map(secs).unwrap_or_else(|| "-".into()),
            outage(0),
            outage(1),
            outage(2),
            format!("{}/{NODES}", row.min_ready),
        );
    }
    println!();
    for row in &rows[..rows.len() - 1] {
        println!(
            "{} / 3 single-node enables: {:.2}x",
            row.label,
            row.total.as_secs_f64() / baseline.as_secs_f64().max(f64::EPSILON)
        );
    }
    let unsafe_rolling: Vec<&str> = rows[..rows.len() - 1]
        .iter()
        .filter(|r| r.min_ready < 2)
        .map(|r| r.label.as_str())
        .collect();
    if !unsafe_rolling.is_empty() {
        bail!(
            "fewer than 2 servers were ready at once during: {}",
            unsafe_rolling.join("; ")
        );
    }
    Ok(())
}
