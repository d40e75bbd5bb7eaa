//! `cargo xtask bench render`: render vs GNU envsubst vs cat on one generated template.

use std::fs::File;
use std::hash::{DefaultHasher, Hasher};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use xshell::cmd;

#[derive(clap::Args)]
pub struct Args {
    /// Size of the generated template, in MB (10^6 bytes).
    #[arg(long, default_value_t = 200)]
    size_mb: u64,
    /// Timed runs per tool; the median is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

/// Variables the template references and the benchmark sets; the template also references
/// unset ones (`OPTIONAL_*`, `LOG_LEVEL`) and `$5`, which is not a reference at all.
const ENV: &[(&str, &str)] = &[
    ("APP_NAME", "falco"),
    ("NAMESPACE", "falco-system"),
    ("APP_VERSION", "0.39.2"),
    ("FALCO_SERVICE_CLUSTERIP", "10.96.112.7"),
    ("REGISTRY", "docker.io/falcosecurity"),
    ("FALCO_VERSION", "0.39.2"),
];

/// Lines of a Kubernetes-ish YAML document with weights (how many times each appears per
/// document), tuned so that the whole has a `$` about every 42 bytes.
const LINES: &[(&str, u32)] = &[
    ("---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n", 1),
    ("  name: ${APP_NAME}-config\n", 1),
    ("  namespace: $NAMESPACE\n", 1),
    ("  labels:\n    app.kubernetes.io/name: ${APP_NAME}\n", 1),
    ("    app.kubernetes.io/version: \"$APP_VERSION\"\n", 1),
    ("data:\n", 1),
    (
        "  server: http://$FALCO_SERVICE_CLUSTERIP:8765/k8s_audit\n",
        2,
    ),
    ("  image: \"${REGISTRY}/falco:${FALCO_VERSION}\"\n", 3),
    ("  optional: \"${OPTIONAL_SETTING}\"\n", 1),
    ("  log-level: $LOG_LEVEL\n", 1),
    (
        "  description: plain text, nothing to substitute on this line\n",
        1,
    ),
    (
        "  # a comment line that a template author left for the reader\n",
        1,
    ),
    ("  cost: $5 per month, billed to ${OPTIONAL_TEAM}\n", 1),
];

pub fn run(sh: &xshell::Shell, args: Args) -> anyhow::Result<()> {
    ensure!(args.runs > 0, "--runs must be at least 1");
    let gnu = Path::new("/usr/bin/envsubst");
    ensure!(
        gnu.exists(),
        "{} is missing (Debian: apt-get install gettext-base)",
        gnu.display()
    );
    cmd!(sh, "cargo build --release --quiet -p render").run()?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| sh.current_dir().join("target"));
    let render = target_dir.join("release/render");

    let dir = tempfile::tempdir()?;
    let template = dir.path().join("template.yaml");
    let (bytes, dollars) = generate(&template, args.size_mb * 1_000_000)?;
    println!(
        "template: {:.1} MB, {} `$` (one every {:.1} bytes); {} runs per tool, stdout to /dev/null",
        bytes as f64 / 1e6,
        dollars,
        bytes as f64 / dollars as f64,
        args.runs
    );

    let (ours, theirs) = (
        output_digest(&render, &template)?,
        output_digest(gnu, &template)?,
    );
    ensure!(
        ours == theirs,
        "render and GNU envsubst disagree on the template: {ours:?} vs {theirs:?}"
    );

    let tools: [(&str, &Path); 3] = [
        ("render", &render),
        ("envsubst", gnu),
        ("cat", Path::new("cat")),
    ];
    let mut times = vec![Vec::new(); tools.len()];
    // Interleaved, so that drift in machine load hits every tool alike.
    for _ in 0..args.runs {
        for ((_, program), times) in tools.iter().zip(&mut times) {
            times.push(time(program, &template)?);
        }
    }

    println!(
        "{:<10} {:>10} {:>10} {:>20}",
        "tool", "median s", "MB/s", "min..max s"
    );
    let mut medians = Vec::new();
    for ((name, _), times) in tools.iter().zip(&mut times) {
        let median = super::median(times);
        medians.push(median);
        println!(
            "{:<10} {:>10.3} {:>10.1} {:>9.3}..{:<9.3}",
            name,
            median.as_secs_f64(),
            bytes as f64 / 1e6 / median.as_secs_f64(),
            times[0].as_secs_f64(),
            times[times.len() - 1].as_secs_f64(),
        );
    }
    // Throughput ratios, from the same run.
    let ratio = |a: Duration, b: Duration| b.as_secs_f64() / a.as_secs_f64();
    println!(
        "render/GNU: {:.2}x   render/cat: {:.3}x",
        ratio(medians[0], medians[1]),
        ratio(medians[0], medians[2])
    );
    // Peak memory of every mode, on 200 MB (10 MB of hostile input), each child measured with
    // wait4: the same test that fails above 16 MiB, run in release so it takes seconds.
    println!("\npeak RSS of each mode (crates/render/tests/memory.rs):");
    cmd!(
        sh,
        "cargo test --release --quiet -p render --test memory -- --nocapture --test-threads 1"
    )
    .run()?;
    Ok(())
}

/// Writes whole documents until `size` bytes; returns (bytes, number of `$`).
fn generate(path: &Path, size: u64) -> anyhow::Result<(u64, u64)> {
    let mut document = String::new();
    for (line, weight) in LINES {
        for _ in 0..*weight {
            document.push_str(line);
        }
    }
    let per_document = document.bytes().filter(|&b| b == b'$').count() as u64;
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let (mut bytes, mut dollars) = (0, 0);
    while bytes < size {
        out.write_all(document.as_bytes())?;
        bytes += document.len() as u64;
        dollars += per_document;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok((bytes, dollars))
}

fn command(program: &Path, template: &Path) -> anyhow::Result<Command> {
    let mut command = Command::new(program);
    command
        .env_clear()
        .envs(ENV.iter().copied())
        .stdin(File::open(template)?)
        .stderr(Stdio::inherit());
    Ok(command)
}

fn time(program: &Path, template: &Path) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let status = command(program, template)?
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("running {}", program.display()))?;
    let elapsed = start.elapsed();
    if !status.success() {
        bail!("{} failed: {status}", program.display());
    }
    Ok(elapsed)
}

/// Length and hash of what `program` writes for `template`, without storing it.
fn output_digest(program: &Path, template: &Path) -> anyhow::Result<(u64, u64)> {
    let mut child = command(program, template)?.stdout(Stdio::piped()).spawn()?;
    let mut stdout = child.stdout.take().context("stdout is piped")?;
    let (mut hasher, mut len) = (DefaultHasher::new(), 0u64);
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = stdout.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.write(&buf[..n]);
        len += n as u64;
    }
    ensure!(child.wait()?.success(), "{} failed", program.display());
    Ok((len, hasher.finish()))
}
