//! Peak memory of the `render` binary in every mode, on large generated templates.
//!
//! The peak is the child's `ru_maxrss` from `wait4`. A child inherits the parent's peak when
//! it is spawned (the exec replaces an address space that is, with posix_spawn, the parent's),
//! so this file is a test binary of its own, and the templates are streamed from a generator
//! thread through a pipe rather than built in memory.
//!
//! The large templates are 200 MB (as `cargo xtask bench render` uses) and the hostile ones
//! 10 MB in a release build; a debug build, five times slower, runs 50 MB and 2 MB, which is
//! still far past every buffer, so a mode that grows with its input still fails. Set
//! `RENDER_MEMORY_MB` and `RENDER_MEMORY_HOSTILE_MB` to change them.
//! `cargo test --release -p render --test memory -- --nocapture` prints the figures.

mod common;

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::RENDER;

/// Issue 11's bound for every mode.
const BOUND_KIB: i64 = 16 * 1024;

/// The benchmark's document (xtask's `bench render`): a `$` about every 42 bytes, some
/// references unset.
const DOCUMENT: &str = "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ${APP_NAME}-config\n  namespace: $NAMESPACE\n  labels:\n    app.kubernetes.io/name: ${APP_NAME}\n    app.kubernetes.io/version: \"$APP_VERSION\"\ndata:\n  server: http://$FALCO_SERVICE_CLUSTERIP:8765/k8s_audit\n  server: http://$FALCO_SERVICE_CLUSTERIP:8765/k8s_audit\n  image: \"${REGISTRY}/falco:${FALCO_VERSION}\"\n  image: \"${REGISTRY}/falco:${FALCO_VERSION}\"\n  image: \"${REGISTRY}/falco:${FALCO_VERSION}\"\n  optional: \"${OPTIONAL_SETTING}\"\n  log-level: $LOG_LEVEL\n  description: plain text, nothing to substitute on this line\n  # a comment line that a template author left for the reader\n  cost: $5 per month, billed to ${OPTIONAL_TEAM}\n";

const ENV: &[(&str, &str)] = &[
    ("APP_NAME", "falco"),
    ("NAMESPACE", "falco-system"),
    ("APP_VERSION", "0.39.2"),
    ("FALCO_SERVICE_CLUSTERIP", "10.96.112.7"),
    ("REGISTRY", "docker.io/falcosecurity"),
    ("FALCO_VERSION", "0.39.2"),
];

/// Every reference of [`DOCUMENT`], set, so that the strict modes succeed.
const OPTIONAL: &[(&str, &str)] = &[
    ("OPTIONAL_SETTING", "on"),
    ("LOG_LEVEL", "info"),
    ("OPTIONAL_TEAM", "sre"),
];

fn megabytes(var: &str, release: usize, debug: usize) -> usize {
    let default = if cfg!(debug_assertions) {
        debug
    } else {
        release
    };
    std::env::var(var)
        .ok()
        .and_then(|mb| mb.parse::<usize>().ok())
        .unwrap_or(default)
        * 1_000_000
}

struct Peak {
    status: i32,
    kib: i64,
    stdout: u64,
    stderr: String,
}

/// Runs render with `args` on `size` bytes made of `unit` repeated, and measures its peak RSS.
fn measure(args: &[&str], env: &[(&str, &str)], unit: &[u8], size: usize) -> Peak {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Reaped by wait4 below, which std's Child cannot do: it has no rusage.
    #[allow(clippy::zombie_processes)]
    let mut child = Command::new(RENDER)
        .args(args)
        .current_dir(tmp.path())
        .env_clear()
        .env("TMPDIR", tmp.path())
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn render");
    let mut stdin = child.stdin.take().expect("piped");
    let unit = unit.to_vec();
    let feeder = std::thread::spawn(move || {
        let block = unit.repeat((1 << 20) / unit.len().max(1) + 1);
        let mut left = size;
        while left > 0 {
            let n = left.min(block.len());
            if stdin.write_all(&block[..n]).is_err() {
                break;
            }
            left -= n;
        }
    });
    let mut stdout = child.stdout.take().expect("piped");
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    });
    let mut stderr = child.stderr.take().expect("piped");
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let pid = i32::try_from(child.id()).expect("pid");
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet reaped (std's Child is never waited on); the
    // pointers are to live locals.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    feeder.join().expect("feeder");
    let stdout = drain.join().expect("drain");
    let stderr = errors.join().expect("stderr");
    let status = std::process::ExitStatus::from_raw(status);
    Peak {
        status: status.code().unwrap_or(-1),
        kib: usage.ru_maxrss,
        stdout,
        stderr,
    }
}

/// One line per mode; fails when a mode goes over the bound.
#[test]
fn peak_rss_is_bounded_in_every_mode() {
    let size = megabytes("RENDER_MEMORY_MB", 200, 50);
    let hostile = megabytes("RENDER_MEMORY_HOSTILE_MB", 10, 2);
    let big = "v".repeat(100_000);
    let mut all_set: Vec<_> = ENV.to_vec();
    all_set.extend_from_slice(OPTIONAL);
    type Case<'a> = (
        &'a str,
        Vec<&'a str>,
        Vec<(&'a str, &'a str)>,
        &'a [u8],
        usize,
        i32,
    );
    let cases: Vec<Case> = vec![
        (
            "GNU (stdout)",
            vec![],
            ENV.to_vec(),
            DOCUMENT.as_bytes(),
            size,
            0,
        ),
        (
            "SHELL-FORMAT",
            vec!["$APP_NAME $REGISTRY"],
            ENV.to_vec(),
            DOCUMENT.as_bytes(),
            size,
            0,
        ),
        (
            "--strict (stdout)",
            vec!["--strict"],
            all_set.clone(),
            DOCUMENT.as_bytes(),
            size,
            0,
        ),
        (
            "--no-empty --defaults",
            vec!["--no-empty", "--defaults"],
            all_set.clone(),
            DOCUMENT.as_bytes(),
            size,
            0,
        ),
        (
            "--strict -o FILE",
            vec!["--strict", "-o", "out"],
            all_set.clone(),
            DOCUMENT.as_bytes(),
            size,
            0,
        ),
        // 4 unset references per document: millions of problems, 1,000 listed.
        (
            "--strict, unset refs",
            vec!["--strict"],
            ENV.to_vec(),
            DOCUMENT.as_bytes(),
            size,
            1,
        ),
        // 2,000 references to a 100 KB value in one chunk: 200 MB of output from 4 KB.
        (
            "GNU, 100 KB value",
            vec![],
            vec![("B", &big)],
            b"$B",
            4000,
            0,
        ),
        (
            "--defaults, unclosed ${A:-",
            vec!["--defaults"],
            vec![],
            b"${A:-",
            hostile,
            0,
        ),
        (
            "--defaults, ${A:-${A:-..}",
            vec!["--defaults"],
            vec![],
            b"${A:-${A:-x}",
            hostile,
            0,
        ),
    ];
    let baseline = measure(&["-V"], &[], b"-", 0).kib;
    println!("baseline (render -V): {baseline} KiB peak RSS");
    let mut over = Vec::new();
    for (name, args, env, unit, bytes, status) in cases {
        let start = Instant::now();
        let peak = measure(&args, &env, unit, bytes);
        println!(
            "{name:<30} {:>6.1} MB in {:>6.2} s: {:>6} KiB peak RSS, {} MB out",
            bytes as f64 / 1e6,
            start.elapsed().as_secs_f64(),
            peak.kib,
            peak.stdout / 1_000_000,
        );
        assert_eq!(
            peak.status,
            status,
            "{name}: {}",
            &peak.stderr[..peak.stderr.len().min(500)]
        );
        if status == 1 {
            assert_eq!(peak.stdout, 0, "{name}: a failed render wrote output");
            let lines = peak.stderr.lines().count();
            assert_eq!(lines, 1001, "{name}: 1,000 problems and a count");
            assert!(
                peak.stderr.ends_with("more, not listed\n"),
                "{name}: {}",
                &peak.stderr[peak.stderr.len() - 200..]
            );
        }
        if peak.kib > BOUND_KIB {
            over.push(format!("{name}: {} KiB", peak.kib));
        }
    }
    assert!(over.is_empty(), "over {BOUND_KIB} KiB: {over:?}");
}
