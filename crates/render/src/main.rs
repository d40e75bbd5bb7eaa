//! `render`: GNU envsubst, byte-exact by default. Argument handling and exit codes only; the
//! work is in the library.

// A C `main` instead of Rust's: std's start-up would reopen a closed stdin/stdout as /dev/null
// (GNU reports "Bad file descriptor" there) and would ignore SIGPIPE (GNU dies of it when the
// reader of its pipe goes away). Both are observable in shell pipelines, so both must match.
#![cfg_attr(not(test), no_main)]

mod cli;

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

use anyhow::{Context, bail};
use atomic_file::{Destination, Stdout};
use render::{Options, Origin, RenderError, Vars};

use cli::Cli;

#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    // std::env::args_os still works: on Linux std captures argv from .init_array itself.
    real_main()
}

/// GNU's exit statuses: 0, or 1 for any error.
#[cfg_attr(test, allow(dead_code))]
fn real_main() -> std::ffi::c_int {
    let cli = match Cli::parse_from_env() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return 1;
        }
    };
    match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            // Not eprintln!: a failing stderr must not turn into a panic.
            let mut stderr = io::stderr().lock();
            for line in format!("{e:#}").lines() {
                let _ = writeln!(stderr, "render: {line}");
            }
            1
        }
    }
}

#[cfg_attr(test, allow(dead_code))]
fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.version {
        let version = concat!(
            "render ",
            env!("CARGO_PKG_VERSION"),
            " (compatible with GNU envsubst 0.21)\n"
        );
        return write_stdout(version.as_bytes());
    }
    if cli.help {
        return write_stdout(Cli::help_text().as_bytes());
    }
    if cli.format.len() > 1 {
        bail!("too many arguments");
    }
    let format = cli.format.first().map(|f| f.as_bytes());
    if cli.variables {
        let Some(format) = format else {
            bail!("missing arguments");
        };
        let mut listing = Vec::new();
        for name in render::shell_format_variables(format) {
            listing.extend_from_slice(name.as_bytes());
            listing.push(b'\n');
        }
        return write_stdout(&listing);
    }

    let opts = Options {
        strict: cli.strict,
        no_empty: cli.no_empty,
        defaults: cli.defaults,
        only: format.map(render::shell_format_variables),
    };
    let mut vars = Vars::from_env();
    for path in &cli.env_files {
        vars.load_env_file(path)?;
    }
    for (name, value) in cli.set {
        vars.set(name, value);
    }

    let (input, origin) = match &cli.input {
        Some(path) => (
            File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
            Origin::File(path.clone()),
        ),
        None => {
            let stdin = io::stdin().as_fd().try_clone_to_owned();
            let stdin = stdin.map_err(|error| RenderError::Read {
                origin: Origin::Stdin,
                error,
            })?;
            (File::from(stdin), Origin::Stdin)
        }
    };

    let render = |output: &mut dyn Write| {
        // Nothing may reach a pipe or device unless the whole render succeeds.
        if opts.can_fail() {
            render::render_buffered(&input, output, &vars, &opts, &origin)
        } else {
            render::render_stream(&input, output, &vars, &opts, &origin)
        }
    };
    match &cli.output {
        // A regular file (or none yet) is replaced in one rename; a device or FIFO is written
        // like standard output; anything else is refused (see atomic_file's table).
        Some(path) => match Destination::open(path).map_err(RenderError::from)? {
            Destination::Replace(mut file) => {
                render::render_stream(&input, &mut file, &vars, &opts, &origin)?;
                file.commit().map_err(RenderError::from)?;
            }
            Destination::Through { mut file, path } => {
                render(&mut file).with_context(|| format!("writing {}", path.display()))?;
            }
        },
        None => render(&mut Stdout::open())?,
    }
    Ok(())
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = Stdout::open();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(RenderError::Write)?;
    Ok(())
}
