//! `cargo xtask bench ...`: each benchmark prints both sides of its comparison from one run.

mod enable;
mod render;
mod ship;
mod sink;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum Bench {
    /// render vs GNU envsubst vs cat on a generated 200 MB template.
    Render(render::Args),
    /// ship vs OpenSSH scp against a loopback sshd.
    Ship(ship::Args),
    /// The static `enable --no-wait` vs the old script's ssh/scp sequence, under 50 ms RTT.
    Enable(enable::Args),
    /// audit-sink under bursts of large EventLists.
    Sink(sink::Args),
}

/// The middle of the measured times (sorted in place); zero when there are none.
fn median(times: &mut [std::time::Duration]) -> std::time::Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

impl Bench {
    pub fn run(self, sh: &xshell::Shell) -> anyhow::Result<()> {
        match self {
            Bench::Render(args) => render::run(sh, args),
            Bench::Ship(args) => ship::run(sh, args),
            Bench::Enable(args) => enable::run(sh, args),
            Bench::Sink(args) => sink::run(sh, args),
        }
    }
}
