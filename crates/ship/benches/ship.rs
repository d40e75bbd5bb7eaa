//! `cargo xtask bench ship`: the release `ship` binary against OpenSSH `scp`, both talking to
//! the same loopback sshd in the same run, plus what one pipeline costs `ship` in connections
//! and round trips (measured through the library's counters).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::Parser;
use ship::{ExecOptions, Source, Sudo, UploadOptions};
use testkit::sshd::Sshd;
use testkit::{median, noise};

const SUDO: ExecOptions = ExecOptions { sudo: Sudo::Yes };
const UPLOAD: UploadOptions = UploadOptions {
    mode: 0o600,
    sudo: Sudo::Yes,
};

#[derive(Parser)]
struct Args {
    /// Repetitions of each measurement; medians are printed.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Size of the big file, in MiB.
    #[arg(long, default_value_t = 64)]
    big_mib: usize,
    /// Number of 4 KiB files.
    #[arg(long, default_value_t = 200)]
    small_files: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse_from(testkit::bench_args());
    // The release binary, which `cargo bench` builds with this benchmark.
    let ship_bin = Path::new(env!("CARGO_BIN_EXE_ship")).to_path_buf();
    let sshd = Sshd::start();
    let root = sshd.root().to_owned();
    let tools = Tools {
        sshd: &sshd,
        ship_bin,
    };

    let big = root.join("big.bin");
    std::fs::write(&big, noise(args.big_mib << 20, 1))?;
    let small_dir = root.join("small");
    std::fs::create_dir(&small_dir)?;
    let small: Vec<PathBuf> = (0..args.small_files)
        .map(|i| {
            let path = small_dir.join(format!("f{i:03}"));
            std::fs::write(&path, noise(4096, i as u64 + 2)).map(|()| path)
        })
        .collect::<Result<_, _>>()?;
    let small_bytes = (args.small_files * 4096) as f64;
    let big_bytes = (args.big_mib << 20) as f64;

    println!(
        "ship vs scp against sshd on 127.0.0.1:{} ({} reps, medians)",
        sshd.port(),
        args.reps
    );
    let (mut ship_big, mut scp_big, mut ship_small, mut scp_small_each, mut scp_small_once) =
        (vec![], vec![], vec![], vec![], vec![]);
    for rep in 0..args.reps {
        let dst = root.join(format!("dst{rep}"));
        for d in ["ship", "scp", "ship-small", "scp-each", "scp-once"] {
            std::fs::create_dir_all(dst.join(d))?;
        }
        // Interleaved, so that machine noise hits both tools alike.
        ship_big.push(tools.ship(&[&big], &dst.join("ship"))?);
        scp_big.push(tools.scp(&[&big], &dst.join("scp"))?);
        ship_small.push(tools.ship(&small, &dst.join("ship-small"))?);
        scp_small_once.push(tools.scp(&small, &dst.join("scp-once"))?);
        let start = Instant::now();
        for file in &small {
            tools.scp(&[file], &dst.join("scp-each"))?;
        }
        scp_small_each.push(start.elapsed());
        ensure!(
            std::fs::read(dst.join("ship/big.bin"))? == std::fs::read(&big)?,
            "ship's copy of the big file differs"
        );
        std::fs::remove_dir_all(&dst)?;
    }
    let rate = |bytes: f64, times: &mut Vec<Duration>| bytes / median(times).as_secs_f64() / 1e6;
    let (sb, cb) = (
        rate(big_bytes, &mut ship_big),
        rate(big_bytes, &mut scp_big),
    );
    let (ss, ce, co) = (
        rate(small_bytes, &mut ship_small),
        rate(small_bytes, &mut scp_small_each),
        rate(small_bytes, &mut scp_small_once),
    );
    println!(
        "{:<44} {:>10} {:>10} {:>8}",
        "", "ship MB/s", "scp MB/s", "ratio"
    );
    println!(
        "{:<44} {sb:>10.1} {cb:>10.1} {:>7.2}x",
        format!("one {} MiB file", args.big_mib),
        sb / cb
    );
    println!(
        "{:<44} {ss:>10.2} {ce:>10.2} {:>7.2}x",
        format!(
            "{} x 4 KiB, scp once per file (old script)",
            args.small_files
        ),
        ss / ce
    );
    println!(
        "{:<44} {ss:>10.2} {co:>10.2} {:>7.2}x",
        format!("{} x 4 KiB, one scp for all files", args.small_files),
        ss / co
    );
    println!(
        "(ship: release binary, one `ship cp` per row, connection setup included, as for scp)"
    );

    pipeline(&sshd, "root")?;
    // root's shell startup on this machine may be slow (every command runs through it); a
    // plain /bin/sh user shows what the protocol itself costs.
    testkit::users::ensure_user("ship-test", testkit::users::SudoRule::NoPassword);
    sshd.authorize("ship-test", &sshd.client_keys()[0].public);
    pipeline(&sshd, "ship-test")
}

struct Tools<'a> {
    sshd: &'a Sshd,
    ship_bin: PathBuf,
}

impl Tools<'_> {
    fn ship(&self, files: &[impl AsRef<Path>], dst: &Path) -> anyhow::Result<Duration> {
        let mut cmd = Command::new(&self.ship_bin);
        cmd.args([
            "--config",
            "/dev/null",
            "--no-agent",
            "--port",
            &self.sshd.port().to_string(),
        ])
        .arg("--known-hosts")
        .arg(self.sshd.known_hosts_file())
        .arg("-i")
        .arg(self.sshd.client_key())
        .arg("cp");
        self.time(cmd, files, &format!("root@127.0.0.1:{}/", dst.display()))
    }

    fn scp(&self, files: &[impl AsRef<Path>], dst: &Path) -> anyhow::Result<Duration> {
        let mut cmd = Command::new("scp");
        cmd.args([
            "-q",
            "-B",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-F",
            "/dev/null",
        ])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            self.sshd.known_hosts_file().display()
        ))
        .arg("-i")
        .arg(self.sshd.client_key())
        .args(["-P", &self.sshd.port().to_string()]);
        self.time(cmd, files, &format!("root@127.0.0.1:{}/", dst.display()))
    }

    fn time(
        &self,
        mut cmd: Command,
        files: &[impl AsRef<Path>],
        dst: &str,
    ) -> anyhow::Result<Duration> {
        cmd.args(files.iter().map(AsRef::as_ref))
            .arg(dst)
            .stdin(Stdio::null());
        let start = Instant::now();
        let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
        let elapsed = start.elapsed();
        ensure!(
            out.status.success(),
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(elapsed)
    }
}

/// The typical pipeline step sequence, through the library, to count what it costs.
fn pipeline(sshd: &Sshd, user: &str) -> anyhow::Result<()> {
    let opts = ship::ConnectOptions {
        identities: vec![sshd.client_key().to_owned()],
        known_hosts: vec![sshd.known_hosts_file()],
        ssh_config: Some(PathBuf::from("/dev/null")),
        use_agent: false,
        ..ship::ConnectOptions::default()
    };
    let dest = ship::Destination {
        user: Some("root".into()),
        host: sshd.host().into(),
        port: Some(sshd.port()),
    };
    let dir = sshd.root().join(format!("k8s_audit-{user}"));
    let d = dir.to_str().context("utf-8 temp dir")?;
    let manifest = sshd.root().join(format!("kube-apiserver-{user}.yaml"));
    std::fs::write(&manifest, "apiVersion: v1\nkind: Pod\n")?;
    let m = manifest.to_str().context("utf-8 temp dir")?;
    let new = format!("{m}.ship-new");

    let start = Instant::now();
    let session = ship::Session::connect(&dest, &opts)?;
    let connected = start.elapsed();
    session
        .exec(&["mkdir", "-p", "-m", "0700", d], SUDO)?
        .check(session.host(), &["mkdir"])?;
    session.upload(
        Source::Bytes(&noise(4096, 9)),
        &format!("{d}/audit-policy.yaml"),
        UPLOAD,
    )?;
    session.upload(
        Source::Bytes(&noise(512, 10)),
        &format!("{d}/webhook-config.yaml"),
        UPLOAD,
    )?;
    let old = session.download(m, Sudo::Yes)?;
    session.upload(
        Source::Bytes(&[old.as_slice(), b"# patched\n"].concat()),
        &new,
        UPLOAD,
    )?;
    session
        .exec(&["mv", "-f", &new, m], SUDO)?
        .check(session.host(), &["mv"])?;
    let total = start.elapsed();
    let stats = session.stats();
    println!(
        "pipeline as {user} (mkdir, 2 uploads, download manifest, upload manifest, rename; sudo): \
         {} TCP connection(s), {} round trips, {:.1} ms ({:.1} ms of it connecting)",
        stats.tcp_connections,
        stats.round_trips,
        total.as_secs_f64() * 1e3,
        connected.as_secs_f64() * 1e3
    );
    ensure!(
        stats.tcp_connections == 1,
        "the pipeline must use exactly one TCP connection"
    );
    Ok(())
}
