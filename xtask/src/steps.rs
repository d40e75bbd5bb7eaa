//! The step log: one line per pipeline step with ✓ or ✗ and the time it took, details with -v.

use std::time::Instant;

use anyhow::Result;

pub struct Steps {
    verbose: bool,
}

impl Steps {
    pub fn new(verbose: bool) -> Steps {
        Steps { verbose }
    }

    /// Runs one step; `body` returns its value and a one-line summary.
    pub fn run<T>(&self, name: &str, body: impl FnOnce() -> Result<(T, String)>) -> Result<T> {
        let started = Instant::now();
        let outcome = body();
        let elapsed = started.elapsed().as_secs_f64();
        match outcome {
            Ok((value, summary)) => {
                println!("✓ {name:<9} ({elapsed:.2}s) {summary}");
                Ok(value)
            }
            Err(error) => {
                println!("✗ {name:<9} ({elapsed:.2}s) {error:#}");
                Err(error)
            }
        }
    }

    /// A warning the user must see, whatever the verbosity.
    pub fn warn(&self, message: impl AsRef<str>) {
        println!("  ! {}", message.as_ref());
    }

    /// Something the user should know that is not a problem, e.g. which Falco port was chosen.
    pub fn info(&self, message: impl AsRef<str>) {
        println!("  · {}", message.as_ref());
    }

    pub fn detail(&self, message: impl AsRef<str>) {
        if self.verbose {
            println!("    {}", message.as_ref());
        }
    }
}
