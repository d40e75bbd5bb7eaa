//! `k8s-audit`: the product commands as one installable binary (`cargo install --path
//! crates/pipeline`), for a jump host without the repository. It does exactly what
//! `cargo xtask enable|disable|status|verify|observe` does.

use std::process::ExitCode;

use clap::Parser;
use pipeline::report::Terminal;

fn main() -> ExitCode {
    let cli = pipeline::Cli::parse();
    let terminal = Terminal {
        verbose: cli.command.verbose(),
    };
    match pipeline::run(cli.command, &terminal) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", error.report());
            ExitCode::FAILURE
        }
    }
}
