//! `cargo xtask`: the product commands, which come whole from the `pipeline` crate, and the
//! developer tasks (in `dev/`: demo, test, bench, apiserver, record-api), in plain Rust.
//!
//! This binary links the pipeline's light build (no SSH, no cluster client), so that a first
//! `cargo xtask demo` builds quickly; the demo runs in-process. The product commands are parsed
//! here with the same definitions, then run by the full `k8s-audit` binary, which cargo builds
//! on first use.

mod dev;

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
    let cli = Cli::parse();
    let result = xshell::Shell::new()
        .map_err(anyhow::Error::from)
        .and_then(|sh| dispatch(&sh, cli));
    match result {
        Ok(0) => {}
        Ok(code) => std::process::exit(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::exit(1);
        }
    }
}

/// Runs the command; a product command's exit status is the full binary's.
fn dispatch(sh: &xshell::Shell, cli: Cli) -> anyhow::Result<i32> {
    sh.change_dir(project_root());
    let done = match cli.command {
        // Already checked by the same parser; the full binary gets the arguments as they came.
        Command::Product(_) => return run_full_binary(std::env::args_os().skip(1)),
        Command::Demo => dev::demo::run(),
        Command::Test => dev::test::run(sh),
        Command::RecordApi => dev::record_api(sh),
        Command::Bench(bench) => bench.run(sh),
        Command::Apiserver(cmd) => cmd.run(sh),
        Command::Node(cmd) => cmd.run(sh),
    };
    done.map(|()| 0)
}

/// Runs `k8s-audit ARGS` through `cargo run` in the user's directory (relative paths in the
/// arguments stay the user's), and returns its exit status.
fn run_full_binary(args: impl Iterator<Item = std::ffi::OsString>) -> anyhow::Result<i32> {
    use anyhow::Context;
    use std::os::unix::process::ExitStatusExt;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(&cargo)
        .args(["run", "--quiet", "--manifest-path"])
        .arg(project_root().join("Cargo.toml"))
        .args(["--package", "pipeline", "--bin", "k8s-audit", "--"])
        .args(args)
        .status()
        .with_context(|| format!("running {}", cargo.to_string_lossy()))?;
    // A signal's death reads as the shell reports it.
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// The checkout's root, so that `cargo xtask` works from any directory in it.
pub fn project_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the root")
        .to_path_buf()
}
