//! `cargo xtask bench ...`: each benchmark prints both sides of its comparison from one run.
//! Those that need the test harnesses (the loopback sshd, the delay proxy) are `benches/` of
//! their crate, so that no product binary ever links the harness; this runs them.

mod render_vs_envsubst;
mod sink_bursts;

use clap::Subcommand;
use xshell::{Shell, cmd};

#[derive(Subcommand)]
pub enum Bench {
    /// render vs GNU envsubst vs cat on a generated 200 MB template.
    Render(render_vs_envsubst::Args),
    /// ship vs OpenSSH scp against a loopback sshd (crates/ship/benches/ship.rs; --help for its options).
    Ship(Passed),
    /// The static `enable --no-wait` vs the old script's ssh/scp sequence, under 50 ms RTT
    /// (crates/pipeline/benches/enable.rs; --help for its options).
    Enable(Passed),
    /// audit-sink under bursts of large EventLists.
    Sink(sink_bursts::Args),
    /// The API server's downtime for a failed and a successful enable, on the real node
    /// (crates/pipeline/benches/rollback.rs; root, containerd and runc needed).
    Rollback(Passed),
    /// A rolling static enable of three API servers vs three single-node enables in a row, on
    /// the HA harness: time, each server's downtime, fewest ready at once
    /// (crates/pipeline/benches/ha.rs; --help for its options).
    Ha(Passed),
}

/// Arguments handed to a crate's benchmark as they are.
#[derive(clap::Args)]
pub struct Passed {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// The middle of the measured times (sorted in place); zero when there are none.
fn median(times: &mut [std::time::Duration]) -> std::time::Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

impl Bench {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        match self {
            Bench::Render(args) => render_vs_envsubst::run(sh, args),
            Bench::Ship(passed) => crate_bench(sh, "ship", "ship", &passed.args),
            Bench::Enable(passed) => crate_bench(sh, "pipeline", "enable", &passed.args),
            Bench::Sink(args) => sink_bursts::run(sh, args),
            // The downtime is the kubelet's and the API server's; a release build adds minutes
            // of compiling and changes nothing measured.
            Bench::Rollback(passed) => debug_bench(sh, "pipeline", "rollback", &passed.args),
            // The same: the servers' restarts and the health gates dominate.
            Bench::Ha(passed) => debug_bench(sh, "pipeline", "ha", &passed.args),
        }
    }
}

fn crate_bench(sh: &Shell, package: &str, bench: &str, args: &[String]) -> anyhow::Result<()> {
    cmd!(
        sh,
        "cargo bench --quiet -p {package} --bench {bench} -- {args...}"
    )
    .run()?;
    Ok(())
}

/// A benchmark whose time is spent in the processes it drives, built without optimization.
fn debug_bench(sh: &Shell, package: &str, bench: &str, args: &[String]) -> anyhow::Result<()> {
    cmd!(
        sh,
        "cargo bench --quiet --profile dev -p {package} --bench {bench} -- {args...}"
    )
    .run()?;
    Ok(())
}
