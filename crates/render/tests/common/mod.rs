//! Running `render` and GNU `envsubst` as processes, for the tests of this crate.
#![allow(dead_code)] // Each test binary uses a different part.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

pub const RENDER: &str = env!("CARGO_BIN_EXE_render");
pub const GNU: &str = "/usr/bin/envsubst";

/// Fails loudly rather than letting the differential tests pass vacuously.
pub fn require_gnu() {
    assert!(
        Path::new(GNU).exists(),
        "{GNU} is missing: the differential tests need GNU envsubst \
         (Debian: apt-get install gettext-base; .ci/run installs it)"
    );
}

/// What a run produced that must match between the two programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: Vec<u8>,
    /// Exit code, or 128 + signal number as a shell reports it.
    pub status: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub outcome: Outcome,
    pub stderr: String,
}

pub fn status_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// Runs `program` with exactly `env`, feeding `stdin` from a thread so large inputs cannot
/// deadlock against a full stdout pipe.
pub fn run(program: &str, args: &[OsString], env: &[(String, Vec<u8>)], stdin: &[u8]) -> Run {
    run_in(Path::new("."), program, args, env, stdin)
}

/// [`run`] in directory `cwd`, so that relative paths in messages are predictable.
pub fn run_in(
    cwd: &Path,
    program: &str,
    args: &[OsString],
    env: &[(String, Vec<u8>)],
    stdin: &[u8],
) -> Run {
    let mut child = Command::new(program)
        .current_dir(cwd)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, OsString::from_vec(v.clone()))))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let mut input = child.stdin.take().expect("stdin is piped");
    let stdin = stdin.to_vec();
    // The program may exit without reading everything (e.g. -v); a broken pipe is fine.
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let mut stderr = Vec::new();
    let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
    let stderr_reader = std::thread::spawn(move || {
        let _ = stderr_pipe.read_to_end(&mut stderr);
        stderr
    });
    let mut stdout = Vec::new();
    child
        .stdout
        .take()
        .expect("stdout is piped")
        .read_to_end(&mut stdout)
        .expect("read stdout");
    let status = child.wait().expect("wait");
    feeder.join().expect("feeder thread");
    let stderr = stderr_reader.join().expect("stderr thread");
    Run {
        outcome: Outcome {
            stdout,
            status: status_code(status),
        },
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

pub fn args(list: &[&str]) -> Vec<OsString> {
    list.iter().map(OsString::from).collect()
}

pub fn env(list: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect()
}
