//! `k8s-audit`: the product commands as one installable binary (`cargo install --path
//! crates/pipeline`), for a jump host without the repository. It does exactly what
//! `cargo xtask enable|disable|status|verify|observe` does.

// A C `main` instead of Rust's, as in render and patch-apiserver: std's start-up would reopen a
// closed stdout as /dev/null, and `k8s-audit status >&-` would exit 0 having shown nothing.
#![cfg_attr(not(test), no_main)]

use std::io::Write;

use clap::Parser;
use pipeline::report::Terminal;

#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    // SIGPIPE stays ignored, as std's start-up leaves it: a reader that goes away must not kill
    // a run in the middle of a change on the node, before it could roll back.
    // SAFETY: setting a signal's disposition to SIG_IGN, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    // A closed standard stream would be taken by the next file or pipe the run opens (the node
    // commands' pipes), and our output would go there. Hold each with /dev/null, and remember
    // that stdout was closed: the run's output is then lost, which is an error.
    let mut stdout_closed = false;
    for fd in 0..3 {
        // SAFETY: fcntl and open on descriptors 0-2, before any thread exists.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            let flags = if fd == 0 {
                libc::O_RDONLY
            } else {
                libc::O_WRONLY
            };
            unsafe { libc::open(c"/dev/null".as_ptr(), flags) };
            stdout_closed |= fd == 1;
        }
    }
    // std::env::args_os still works: on Linux std captures argv from .init_array itself.
    real_main(stdout_closed)
}

/// 0 success, 1 failure (2 for a usage error, from clap).
#[cfg_attr(test, allow(dead_code))]
fn real_main(stdout_closed: bool) -> std::ffi::c_int {
    let cli = pipeline::Cli::parse();
    let terminal = Terminal::new(cli.command.verbose());
    if stdout_closed {
        terminal.lost_output();
    }
    let result = pipeline::run(cli.command, &terminal);
    // A full or closed stderr must not turn the message into a panic.
    let mut stderr = std::io::stderr().lock();
    match result {
        Err(error) => {
            let _ = writeln!(stderr, "error: {}", error.report());
            1
        }
        Ok(()) if terminal.output_failed() => {
            let _ = writeln!(stderr, "error: writing standard output failed");
            1
        }
        Ok(()) => 0,
    }
}
