//! How the pipeline tells its user what it is doing. The library prints nothing itself: every
//! line goes through a [`Reporter`], which the command line implements ([`Terminal`]) and tests
//! replace with a recorder.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use crate::error::Result;

/// Receives the pipeline's step lines, warnings and output.
pub trait Reporter {
    /// A step ended: `Ok(summary)` or `Err(report of the error)`.
    fn step(&self, name: &str, elapsed: Duration, outcome: Result<&str, &str>);
    /// Something the user must see, whatever the verbosity.
    fn warn(&self, message: &str);
    /// Something the user should know that is not a problem, e.g. which Falco port was chosen.
    fn info(&self, message: &str);
    /// A detail shown with `--verbose`.
    fn detail(&self, message: &str);
    /// The command's own output (a dry run's files, status lines, log lines), one line or more.
    fn output(&self, text: &str);
}

/// The reporter of both command lines (`cargo xtask` and `k8s-audit`): one line per step with
/// ✓ or ✗ and the time it took, details with `-v`. A closed or full standard output does not
/// stop the run half way (a node change must finish or roll back); it is remembered, and the
/// command line exits non-zero for it ([`Terminal::output_failed`]).
#[derive(Default)]
pub struct Terminal {
    pub verbose: bool,
    failed: std::cell::Cell<bool>,
}

impl Terminal {
    pub fn new(verbose: bool) -> Terminal {
        Terminal {
            verbose,
            failed: std::cell::Cell::new(false),
        }
    }

    /// Whether some line could not be written to standard output.
    pub fn output_failed(&self) -> bool {
        self.failed.get()
    }

    /// Standard output was closed before the run began: whatever it shows is lost.
    pub fn lost_output(&self) {
        self.failed.set(true);
    }

    fn line(&self, text: std::fmt::Arguments) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
            self.failed.set(true);
        }
    }
}

impl Reporter for Terminal {
    fn step(&self, name: &str, elapsed: Duration, outcome: Result<&str, &str>) {
        let elapsed = elapsed.as_secs_f64();
        match outcome {
            Ok(summary) => self.line(format_args!("✓ {name:<9} ({elapsed:.2}s) {summary}")),
            Err(error) => self.line(format_args!("✗ {name:<9} ({elapsed:.2}s) {error}")),
        }
    }

    fn warn(&self, message: &str) {
        self.line(format_args!("  ! {message}"));
    }

    fn info(&self, message: &str) {
        self.line(format_args!("  · {message}"));
    }

    fn detail(&self, message: &str) {
        if self.verbose {
            self.line(format_args!("    {message}"));
        }
    }

    fn output(&self, text: &str) {
        self.line(format_args!("{text}"));
    }
}

/// Keeps every line, for tests that check what a pipeline said without a process boundary.
#[derive(Default)]
pub struct Recorder {
    pub lines: RefCell<Vec<String>>,
}

impl Recorder {
    pub fn text(&self) -> String {
        self.lines.borrow().join("\n")
    }
}

impl Reporter for Recorder {
    fn step(&self, name: &str, _elapsed: Duration, outcome: Result<&str, &str>) {
        let line = match outcome {
            Ok(summary) => format!("✓ {name} {summary}"),
            Err(error) => format!("✗ {name} {error}"),
        };
        self.lines.borrow_mut().push(line);
    }

    fn warn(&self, message: &str) {
        self.lines.borrow_mut().push(format!("! {message}"));
    }

    fn info(&self, message: &str) {
        self.lines.borrow_mut().push(format!("· {message}"));
    }

    fn detail(&self, message: &str) {
        self.lines.borrow_mut().push(format!("  {message}"));
    }

    fn output(&self, text: &str) {
        self.lines.borrow_mut().push(text.to_string());
    }
}

/// The step runner the stages share.
#[derive(Clone, Copy)]
pub struct Steps<'a> {
    reporter: &'a dyn Reporter,
}

impl<'a> Steps<'a> {
    pub fn new(reporter: &'a dyn Reporter) -> Steps<'a> {
        Steps { reporter }
    }

    /// Runs one step; `body` returns its value and a one-line summary.
    pub fn run<T>(&self, name: &str, body: impl FnOnce() -> Result<(T, String)>) -> Result<T> {
        let started = Instant::now();
        let outcome = body();
        let elapsed = started.elapsed();
        match outcome {
            Ok((value, summary)) => {
                self.reporter.step(name, elapsed, Ok(&summary));
                Ok(value)
            }
            Err(error) => {
                self.reporter.step(name, elapsed, Err(&error.report()));
                Err(error)
            }
        }
    }

    pub fn warn(&self, message: impl AsRef<str>) {
        self.reporter.warn(message.as_ref());
    }

    pub fn info(&self, message: impl AsRef<str>) {
        self.reporter.info(message.as_ref());
    }

    pub fn detail(&self, message: impl AsRef<str>) {
        self.reporter.detail(message.as_ref());
    }

    pub fn output(&self, text: impl AsRef<str>) {
        self.reporter.output(text.as_ref());
    }
}
