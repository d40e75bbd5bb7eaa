//! Standard output for results that must not be lost silently.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;

/// Standard output as a plain file descriptor, unbuffered and unlocked.
///
/// `std::io::stdout()` treats a closed descriptor 1 (`tool >&-`) as a sink that accepts
/// everything, so a tool's output would vanish with exit status 0. This fails every write
/// instead, with EBADF, as GNU's close_stdout does. (A binary must also keep std's start-up
/// from reopening a closed descriptor 1 as /dev/null: see `#![no_main]` in render's main.rs.)
pub struct Stdout(io::Result<File>);

impl Stdout {
    pub fn open() -> Stdout {
        Stdout(io::stdout().as_fd().try_clone_to_owned().map(File::from))
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            Ok(file) => file.write(buf),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
