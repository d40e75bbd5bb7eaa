//! The product's command line, shared by `cargo xtask` and the installable `k8s-audit`
//! binary, so that the two cannot drift apart: both parse with these definitions and call
//! [`run`].

use crate::disable::{self, DisableArgs};
use crate::enable::{self, EnableArgs};
use crate::error::Result;
use crate::observe::{self, ObserveArgs};
use crate::report::Reporter;
use crate::status::{self, StatusArgs};
use crate::verify::{self, VerifyArgs};

/// The `k8s-audit` binary's arguments.
#[derive(Debug, clap::Parser)]
#[command(
    name = "k8s-audit",
    version,
    about = "Enable Kubernetes API-server audit logging and route the events to Falco",
    after_help = "The same commands as `cargo xtask enable|disable|status|verify|observe` in the repository.

Examples:
  k8s-audit enable ssh static --host cp1 --dry-run
  k8s-audit enable ssh static --host cp1
  k8s-audit verify ssh --host cp1
  k8s-audit disable ssh --host cp1"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The product commands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Turn on audit logging on a control-plane node: preflight, render, ship, patch, wait, rollback.
    Enable(EnableArgs),
    /// Turn it off again: restore the manifest, delete the AuditSink, with the same wait and rollback.
    Disable(DisableArgs),
    /// Show what is enabled on the node and in the cluster.
    Status(StatusArgs),
    /// Create and delete a probe ConfigMap and wait for its audit events.
    Verify(VerifyArgs),
    /// Follow the Falco pod's log.
    Observe(ObserveArgs),
}

impl Command {
    /// Whether the user asked for each step's details (`-v`).
    pub fn verbose(&self) -> bool {
        match self {
            Command::Enable(args) => args.verbose,
            Command::Disable(args) => args.verbose,
            Command::Status(_) | Command::Verify(_) | Command::Observe(_) => false,
        }
    }
}

/// Runs one product command, reporting to `reporter`.
pub fn run(command: Command, reporter: &dyn Reporter) -> Result<()> {
    match command {
        Command::Enable(args) => enable::run(args, reporter),
        Command::Disable(args) => disable::run(args, reporter),
        Command::Status(args) => status::run(args, reporter),
        Command::Verify(args) => verify::run(args, reporter),
        Command::Observe(args) => observe::run(args, reporter),
    }
}
