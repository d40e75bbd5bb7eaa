//! `cargo xtask`: the project's commands, in plain Rust (see ARCHITECTURE.md). It parses
//! arguments, calls the tool libraries in order and prints the steps.

mod apiserver;
mod bench;
mod cluster_args;
mod debian;
mod demo;
mod disable;
mod enable;
mod manager;
mod node;
mod observe;
mod record;
mod restart;
mod state;
mod status;
mod steps;
mod target;
mod templates;
mod test;
mod verify;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Enable Kubernetes API-server audit logging and route the events to Falco",
    after_help = "Start with `cargo xtask demo`: the whole pipeline on a sandbox node, no cluster needed."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Turn on audit logging on a control-plane node: preflight, render, ship, patch, wait, rollback.
    Enable(enable::EnableArgs),
    /// Turn it off again: restore the manifest, delete the AuditSink, with the same wait and rollback.
    Disable(disable::DisableArgs),
    /// Show what is enabled on the node and in the cluster.
    Status(status::StatusArgs),
    /// Create and delete a probe ConfigMap and wait for its audit events.
    Verify(verify::VerifyArgs),
    /// Follow the Falco pod's log.
    Observe(observe::ObserveArgs),
    /// The static pipeline on a bundled kubeadm manifest in a sandbox, without a cluster.
    Demo,
    /// Every test: installs the Debian packages they need, builds the real kube-apiserver once, runs `cargo test --workspace`.
    Test,
    /// Re-record the API responses crates/cluster's tests replay, from the real kube-apiserver.
    RecordApi,
    /// Benchmarks that print both sides of a comparison from the same run.
    #[command(subcommand)]
    Bench(bench::Bench),
    /// Build the real kube-apiserver used by the end-to-end tests.
    #[command(subcommand)]
    Apiserver(apiserver::Apiserver),
}

fn main() {
    let result = xshell::Shell::new()
        .map_err(anyhow::Error::from)
        .and_then(|sh| dispatch(&sh, Cli::parse()));
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn dispatch(sh: &xshell::Shell, cli: Cli) -> anyhow::Result<()> {
    sh.change_dir(project_root());
    match cli.command {
        Command::Enable(args) => enable::run(sh, args),
        Command::Disable(args) => disable::run(sh, args),
        Command::Status(args) => status::run(sh, args),
        Command::Verify(args) => verify::run(sh, args),
        Command::Observe(args) => observe::run(args),
        Command::Demo => demo::run(sh),
        Command::Test => test::run(sh),
        Command::RecordApi => record::run(),
        Command::Bench(bench) => bench.run(sh),
        Command::Apiserver(cmd) => cmd.run(sh),
    }
}

/// Runs an xtask command line in-process, as `demo` does with `enable` and `disable`.
pub fn run_args<'a>(
    sh: &xshell::Shell,
    args: impl IntoIterator<Item = &'a str>,
) -> anyhow::Result<()> {
    let cli = Cli::try_parse_from(std::iter::once("cargo xtask").chain(args))?;
    dispatch(sh, cli)
}

/// The checkout's root, so that `cargo xtask` works from any directory in it.
pub fn project_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the root")
        .to_path_buf()
}
