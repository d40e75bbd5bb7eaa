//! `cargo xtask bench sink`: the release `audit-sink` binary under bursts of large EventLists.
//!
//! Each burst is `--posts` POSTs of `--events` events sent over `--connections` keep-alive
//! connections on loopback, with the line output and the `--json` output in the same run. The
//! comparison line is the fastest a default-configured API server can send
//! (`--audit-webhook-batch-throttle-qps=10` × `--audit-webhook-batch-max-size=400`).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use xshell::cmd;

#[derive(clap::Args)]
pub struct Args {
    /// POSTs per burst.
    #[arg(long, default_value_t = 1000)]
    posts: usize,
    /// Events per POST (one EventList).
    #[arg(long, default_value_t = 500)]
    events: usize,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
}

/// What a default API server can push through its webhook backend, events per second.
const API_SERVER_MAX_RATE: f64 = 10.0 * 400.0;

struct Burst {
    wall: Duration,
    /// Until the last POST was answered; `wall` also waits for the printer.
    answered: Duration,
    sink_cpu: Duration,
    latencies: Vec<Duration>,
    peak_rss_kib: u64,
    lines: usize,
    body_bytes: usize,
}

pub fn run(sh: &xshell::Shell, args: Args) -> anyhow::Result<()> {
    ensure!(
        args.posts > 0 && args.events > 0 && args.connections > 0,
        "all counts must be at least 1"
    );
    cmd!(
        sh,
        "cargo build --release --quiet -p audit-sink --bin audit-sink"
    )
    .run()?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| sh.current_dir().join("target"));
    let binary = target_dir.join("release/audit-sink");
    let dir = tempfile::tempdir()?;
    println!(
        "{} POSTs x {} events over {} connections on loopback; release build; stdout to a file",
        args.posts, args.events, args.connections
    );
    for (label, json) in [("lines", false), ("--json", true)] {
        let burst = burst(&binary, dir.path(), &args, json)?;
        report(label, &args, &burst);
    }
    println!(
        "api-server webhook ceiling (defaults: 10 batches/s x 400 events): {API_SERVER_MAX_RATE:.0} events/s"
    );
    Ok(())
}

fn report(label: &str, args: &Args, burst: &Burst) {
    let mut sorted = burst.latencies.clone();
    sorted.sort();
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    let total = (args.posts * args.events) as f64;
    let rate = total / burst.wall.as_secs_f64();
    println!(
        "{label:>7}: {} events in {:.2} s = {:.0} events/s ({:.0} MB/s of JSON, {:.0}x the api-server ceiling); \
         all answered after {:.2} s; request latency median {:.1} ms, p99 {:.1} ms; \
         audit-sink CPU {:.2} s; peak RSS {:.1} MiB; {} lines, none lost",
        total,
        burst.wall.as_secs_f64(),
        rate,
        burst.body_bytes as f64 / 1e6 / burst.wall.as_secs_f64(),
        rate / API_SERVER_MAX_RATE,
        burst.answered.as_secs_f64(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        burst.sink_cpu.as_secs_f64(),
        burst.peak_rss_kib as f64 / 1024.0,
        burst.lines,
    );
}

fn burst(binary: &Path, dir: &Path, args: &Args, json: bool) -> anyhow::Result<Burst> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let out_path = dir.join(if json { "json.out" } else { "lines.out" });
    let out = std::fs::File::create(&out_path)?;
    let mut command = Command::new(binary);
    command
        .arg("--listen")
        .arg(addr.to_string())
        .stdout(out)
        .stderr(Stdio::null());
    if json {
        command.arg("--json");
    }
    let sink = KillOnDrop(command.spawn().context("starting audit-sink")?);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        ensure!(
            Instant::now() < deadline,
            "audit-sink did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let started = Instant::now();
    let per_connection = args.posts.div_ceil(args.connections);
    let results: Vec<anyhow::Result<(Vec<Duration>, usize)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..args.connections)
            .map(|c| {
                let posts = (c * per_connection)..((c + 1) * per_connection).min(args.posts);
                scope.spawn(move || client(addr, posts, args.events))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("client thread panicked")))
            })
            .collect()
    });
    let answered = started.elapsed();
    let mut latencies = Vec::with_capacity(args.posts);
    let mut body_bytes = 0;
    for result in results {
        let (l, bytes) = result?;
        latencies.extend(l);
        body_bytes += bytes;
    }
    // All answered 200 means all events are in the printer's queue; wait for them to be written.
    let expected = args.posts * args.events;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut counter = LineCounter::open(&out_path)?;
    let lines = loop {
        let lines = counter.count()?;
        if lines >= expected || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let wall = started.elapsed();
    let peak_rss_kib = peak_rss_kib(sink.0.id())?;
    let sink_cpu = cpu_time(sink.0.id())?;
    drop(sink);
    ensure!(
        lines == expected,
        "lost events: {lines} lines written, {expected} sent"
    );
    check_all_present(&out_path, args, json)?;
    Ok(Burst {
        wall,
        answered,
        sink_cpu,
        latencies,
        peak_rss_kib,
        lines,
        body_bytes,
    })
}

/// Sends the given POSTs on one keep-alive connection; returns each request's latency.
fn client(
    addr: SocketAddr,
    posts: std::ops::Range<usize>,
    events: usize,
) -> anyhow::Result<(Vec<Duration>, usize)> {
    let mut stream = BufReader::new(TcpStream::connect(addr)?);
    stream.get_ref().set_nodelay(true)?;
    let mut latencies = Vec::new();
    let mut bytes = 0;
    for post in posts {
        let body = event_list(post, events);
        bytes += body.len();
        let started = Instant::now();
        let head = format!(
            "POST /k8s_audit HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.get_mut().write_all(head.as_bytes())?;
        stream.get_mut().write_all(body.as_bytes())?;
        let status = read_response(&mut stream)?;
        latencies.push(started.elapsed());
        ensure!(status == 200, "POST {post} answered {status}");
    }
    Ok((latencies, bytes))
}

/// Reads one HTTP/1.1 response with a Content-Length body; returns the status.
fn read_response(stream: &mut BufReader<TcpStream>) -> anyhow::Result<u16> {
    let mut line = String::new();
    stream.read_line(&mut line)?;
    let status: u16 = line
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {line:?}"))?;
    let mut length = 0usize;
    loop {
        line.clear();
        if stream.read_line(&mut line)? == 0 {
            bail!("connection closed inside the response head");
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse()?;
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body)?;
    Ok(status)
}

/// An EventList shaped like the API server's: ResponseComplete events for ConfigMap creates,
/// with request and response bodies (RequestResponse level), about 1 KB each.
fn event_list(post: usize, events: usize) -> String {
    let mut body = String::with_capacity(events * 1100 + 100);
    body.push_str(r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":["#);
    for i in 0..events {
        if i > 0 {
            body.push(',');
        }
        let name = format!("bench-{post}-{i}");
        body.push_str(&format!(
            r#"{{"level":"RequestResponse","auditID":"00000000-0000-4000-8000-{post:06}{i:06}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default/configmaps","verb":"create","user":{{"username":"admin","uid":"admin-uid","groups":["system:masters","system:authenticated"]}},"sourceIPs":["127.0.0.1"],"userAgent":"kubectl/v1.20.2 (linux/amd64) kubernetes/faecb19","objectRef":{{"resource":"configmaps","namespace":"default","name":"{name}","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":201}},"requestObject":{{"kind":"ConfigMap","apiVersion":"v1","metadata":{{"name":"{name}","creationTimestamp":null}},"data":{{"probe":"k8s-audit-tools"}}}},"responseObject":{{"kind":"ConfigMap","apiVersion":"v1","metadata":{{"name":"{name}","namespace":"default","uid":"6a1e0c57-0000-4000-8000-000000000000","resourceVersion":"{i}","creationTimestamp":"2026-01-01T00:00:00Z"}},"data":{{"probe":"k8s-audit-tools"}}}},"requestReceivedTimestamp":"2026-01-01T00:00:00.000000Z","stageTimestamp":"2026-01-01T00:00:00.001000Z","annotations":{{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":""}}}}"#
        ));
    }
    body.push_str("]}");
    body
}

/// Counts newlines as the file grows, reading only what is new.
struct LineCounter {
    file: std::fs::File,
    buf: Vec<u8>,
    lines: usize,
}

impl LineCounter {
    fn open(path: &Path) -> anyhow::Result<Self> {
        Ok(LineCounter {
            file: std::fs::File::open(path)?,
            buf: vec![0; 1 << 20],
            lines: 0,
        })
    }

    fn count(&mut self) -> anyhow::Result<usize> {
        loop {
            let n = self.file.read(&mut self.buf)?;
            if n == 0 {
                return Ok(self.lines);
            }
            self.lines += memchr::memchr_iter(b'\n', &self.buf[..n]).count();
        }
    }
}

/// Every event name appears exactly once: nothing lost, nothing duplicated.
fn check_all_present(path: &Path, args: &Args, json: bool) -> anyhow::Result<()> {
    let mut seen = HashSet::with_capacity(args.posts * args.events);
    for line in BufReader::new(std::fs::File::open(path)?).lines() {
        let line = line?;
        let name = if json {
            line.split(r#""name":""#)
                .nth(1)
                .and_then(|s| s.split('"').next())
        } else {
            line.split(' ')
                .nth(3)
                .and_then(|s| s.strip_prefix("default/"))
        };
        let name = name.with_context(|| format!("no name in output line {line:?}"))?;
        ensure!(seen.insert(name.to_owned()), "event {name} printed twice");
    }
    ensure!(
        seen.len() == args.posts * args.events,
        "{} distinct events, {} sent",
        seen.len(),
        args.posts * args.events
    );
    Ok(())
}

/// User plus system CPU time of a process, from /proc/PID/stat (in USER_HZ = 100 ticks/s).
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .context("no CPU times in /proc/PID/stat")
    };
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// VmHWM: the peak resident set of the process so far.
fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/PID/status")
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
