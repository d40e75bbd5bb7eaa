//! `cargo xtask`: the product commands, which come whole from the `pipeline` crate, and the
//! developer tasks (in `dev/`: demo, test, bench, apiserver, record-api), in plain Rust.

mod dev;

use clap::{Parser, Subcommand};
use pipeline::report::Terminal;

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

// Parsed once per run and matched at once: boxing the product commands would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Product(pipeline::Command),
    /// The static pipeline on a bundled minikube manifest in a sandbox, without a cluster.
    Demo,
    /// Every test: installs the Debian packages they need, builds the real kube-apiserver once, runs `cargo test --workspace`.
    Test,
    /// Re-record the API responses crates/cluster's tests replay, from the real kube-apiserver.
    RecordApi,
    /// Benchmarks that print both sides of a comparison from the same run.
    #[command(subcommand)]
    Bench(dev::bench::Bench),
    /// Build the real kube-apiserver used by the end-to-end tests.
    #[command(subcommand)]
    Apiserver(dev::apiserver::Apiserver),
    /// A real node on this machine: kubelet, containerd and runc run etcd and kube-apiserver as static pods.
    #[command(subcommand)]
    Node(dev::node::NodeCommand),
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
        Command::Product(command) => run_product(command),
        Command::Demo => dev::demo::run(),
        Command::Test => dev::test::run(sh),
        Command::RecordApi => dev::record_api(sh),
        Command::Bench(bench) => bench.run(sh),
        Command::Apiserver(cmd) => cmd.run(sh),
        Command::Node(cmd) => cmd.run(sh),
    }
}

/// A product command, exactly as the `k8s-audit` binary runs it.
pub fn run_product(command: pipeline::Command) -> anyhow::Result<()> {
    let terminal = Terminal::new(command.verbose());
    pipeline::run(command, &terminal).map_err(|e| anyhow::anyhow!(e.report()))?;
    anyhow::ensure!(!terminal.output_failed(), "writing standard output failed");
    Ok(())
}

/// The checkout's root, so that `cargo xtask` works from any directory in it.
pub fn project_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the root")
        .to_path_buf()
}
