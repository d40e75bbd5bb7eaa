//! The `ship` command: argument parsing and exit codes; the work is in the library.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = <cli::Args as clap::Parser>::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("ship: {err:#}");
            // 255 for connection and authentication failures, as ssh does; 1 for the rest.
            let connection = err
                .downcast_ref::<ship::ShipError>()
                .is_some_and(ship::ShipError::is_connection_failure)
                || err
                    .downcast_ref::<ship::copy::CopyError>()
                    .is_some_and(ship::copy::CopyError::is_connection_failure);
            ExitCode::from(if connection { 255 } else { 1 })
        }
    }
}
