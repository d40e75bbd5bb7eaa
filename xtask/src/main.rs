//! `cargo xtask`: the project's commands, in plain Rust (see ARCHITECTURE.md).

mod apiserver;
mod bench;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Enable Kubernetes API-server audit logging and route it to Falco")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmarks that print both sides of a comparison from the same run.
    #[command(subcommand)]
    Bench(bench::Bench),
    /// Build and run the real kube-apiserver used by the end-to-end tests.
    #[command(subcommand)]
    Apiserver(apiserver::Apiserver),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let sh = xshell::Shell::new()?;
    sh.change_dir(project_root());
    match cli.command {
        Command::Bench(bench) => bench.run(&sh),
        Command::Apiserver(cmd) => cmd.run(&sh),
    }
}

/// The checkout's root, so that `cargo xtask` works from any directory in it.
pub fn project_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the root")
        .to_path_buf()
}
