//! `cargo xtask bench enable`: the whole static `enable --no-wait` against the loopback sshd
//! behind a 50 ms round-trip proxy, next to the old script's five ssh/scp invocations through
//! the same proxy.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use pipeline::report::Recorder;
use pipeline::templates;
use testkit::delay_proxy::{self, DelayProxy};
use testkit::median;
use testkit::sshd::Sshd;
use xshell::{Shell, cmd};

const MANIFEST: &str = "/etc/kubernetes/manifests/kube-apiserver.yaml";
const FALCO_URL: &str = "http://10.96.0.10:8765/k8s_audit";

#[derive(Parser)]
struct Args {
    /// Runs of each side; the medians are compared.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Added delay in each direction, in milliseconds (the round trip is twice this).
    #[arg(long, default_value_t = 25)]
    one_way_ms: u64,
}

#[derive(Parser)]
struct EnableCli {
    #[command(flatten)]
    args: pipeline::enable::EnableArgs,
}

fn main() -> Result<()> {
    let args = Args::parse_from(testkit::bench_args());
    let sh = &Shell::new()?;
    let one_way = Duration::from_millis(args.one_way_ms);
    let rtt = delay_proxy::measure_round_trip(one_way, 9);
    println!(
        "proxy check: median ping-pong {:.1} ms (want {} ms)",
        ms(rtt),
        2 * args.one_way_ms
    );
    ensure!(
        rtt >= 2 * one_way,
        "the proxy adds less delay than promised"
    );

    let sshd = Sshd::start();
    let proxy = DelayProxy::start(sshd.addr(), one_way);
    let work = tempfile::tempdir()?;
    let known_hosts = work.path().join("known_hosts");
    let lines: Vec<String> = sshd
        .known_hosts_lines()
        .iter()
        .filter_map(|l| {
            l.split_once(' ')
                .map(|(_, key)| format!("[127.0.0.1]:{} {key}", proxy.port()))
        })
        .collect();
    std::fs::write(&known_hosts, lines.join("\n") + "\n")?;
    let key = sshd.client_key().to_path_buf();
    let original = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/manifests/minikube-v1.28.yaml"),
    )?;

    let mut ours = Vec::new();
    let mut stats = None;
    let mut ours_trips = 0;
    for run in 0..args.runs {
        let root = fresh_node(work.path(), &format!("ours-{run}"), &original)?;
        let port = proxy.port().to_string();
        let cli = EnableCli::try_parse_from([
            "enable",
            "ssh",
            "static",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--user",
            "root",
            "-i",
            &path(&key),
            "--known-hosts",
            &path(&known_hosts),
            "--root",
            &path(&root),
            "--falco-url",
            FALCO_URL,
            "--no-wait",
            // The bench measures the transport; its Falco address must not be probed from here.
            "--skip-reachability",
        ])?;
        let (trips, started) = (proxy.round_trips(), Instant::now());
        stats = pipeline::enable::enable(cli.args, &Recorder::default())?;
        ours.push(started.elapsed());
        ours_trips = proxy.round_trips() - trips;
    }

    let mut old = Vec::new();
    let mut old_trips = 0;
    for run in 0..args.runs {
        let root = fresh_node(work.path(), &format!("old-{run}"), &original)?;
        let (trips, started) = (proxy.round_trips(), Instant::now());
        old_script(sh, &proxy, &key, &known_hosts, &root, work.path())?;
        old.push(started.elapsed());
        old_trips = proxy.round_trips() - trips;
    }

    let (ours, old) = (median(&mut ours), median(&mut old));
    println!(
        "\nstatic enable --no-wait, {} ms RTT, median of {} runs:",
        2 * args.one_way_ms,
        args.runs
    );
    println!(
        "  cargo xtask enable (ship, 1 session)  {:>8.0} ms  {ours_trips:>3} round trips seen by the proxy",
        ms(ours)
    );
    println!(
        "  old script (5 x ssh/scp)              {:>8.0} ms  {old_trips:>3} round trips seen by the proxy",
        ms(old)
    );
    println!(
        "  ratio ours/old                        {:>8.2}",
        ours.as_secs_f64() / old.as_secs_f64()
    );
    if let Some(stats) = stats {
        println!(
            "  ship's own count: {} TCP connection(s), {} round trips after the handshake",
            stats.tcp_connections, stats.round_trips
        );
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn fresh_node(work: &Path, name: &str, manifest: &[u8]) -> Result<std::path::PathBuf> {
    let root = work.join(name);
    let target = root.join(MANIFEST.trim_start_matches('/'));
    std::fs::create_dir_all(target.parent().context("parent")?)?;
    std::fs::write(&target, manifest)?;
    Ok(root)
}

/// The old enable-k8s-audit.sh sequence: one process, one TCP connection and one SSH handshake
/// per step. Its patch script is replaced by a stand-in doing the same kind of work (back up,
/// insert flag lines after the binary), since only the transport is being compared.
fn old_script(
    sh: &Shell,
    proxy: &DelayProxy,
    key: &Path,
    known_hosts: &Path,
    root: &Path,
    work: &Path,
) -> Result<()> {
    let dir = format!("{}/var/lib/k8s_audit", root.display());
    let manifest = format!("{}{MANIFEST}", root.display());
    let files = work.join("old-files");
    std::fs::create_dir_all(&files)?;
    let script = files.join("apiserver-config.patch.sh");
    std::fs::write(
        &script,
        "set -eu\ncp \"$1\" /tmp/kube-apiserver.yaml.original\nwhile IFS= read -r line; do printf '%s\\n' \"$line\"; case \"$line\" in *'- kube-apiserver') printf '    - --audit-log-path=/var/lib/k8s_audit/audit.log\\n    - --audit-policy-file=/var/lib/k8s_audit/audit-policy.yaml\\n';; esac; done < /tmp/kube-apiserver.yaml.original > \"$1\"\n",
    )?;
    let policy = files.join("audit-policy.yaml");
    std::fs::write(&policy, templates::audit_policy(None)?)?;
    let webhook = files.join("webhook-config.yaml");
    std::fs::write(
        &webhook,
        templates::webhook_config(&templates::FalcoUrl::parse(FALCO_URL)?)?,
    )?;

    let port = proxy.port().to_string();
    let key = path(key);
    let options = &[
        "-o".to_string(),
        format!("UserKnownHostsFile={}", known_hosts.display()),
        "-o".into(),
        "BatchMode=yes".into(),
        "-i".into(),
        key,
    ];
    let target = "root@127.0.0.1";
    let mkdir = format!("sudo mkdir -p {dir} && sudo chown root {dir}");
    cmd!(sh, "ssh -p {port} {options...} {target} {mkdir}")
        .quiet()
        .run()?;
    for file in [&script, &policy, &webhook] {
        let dest = format!("{target}:{dir}");
        cmd!(sh, "scp -q -P {port} {options...} {file} {dest}")
            .quiet()
            .run()?;
    }
    let patch = format!("sudo bash {dir}/apiserver-config.patch.sh {manifest} minikube static");
    cmd!(sh, "ssh -p {port} {options...} {target} {patch}")
        .quiet()
        .run()?;
    Ok(())
}
