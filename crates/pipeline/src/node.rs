//! The control-plane node as the pipelines see it: read files, apply a set of changes, run a
//! command, all as root. Over SSH that is one `ship` session with `sudo -n`; locally it is a
//! child process. Both run the same small POSIX sh scripts, so a pipeline step costs one
//! remote command (two or three round trips), whatever it reads or writes.
//! `--root DIR` makes a sandbox directory stand in for the node's `/`.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Context, PipelineError, Result, bail};
use crate::falco_url::FalcoUrl;
use crate::lock;
use crate::reachability::{self, Probed};

/// The output of a command on the node.
pub struct Ran {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Ran {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// One change of a transaction; paths are node paths.
pub enum Change<'a> {
    /// `mkdir -p` when missing, root-owned 0700: audit files may hold request bodies with
    /// secrets. An existing directory is used as it is, never chmodded or chowned.
    PrivateDir(&'a str),
    /// Staged as a dotfile beside the target (the kubelet ignores those), checked for size,
    /// then renamed over the target once every file of the transaction is in place.
    File {
        path: &'a str,
        bytes: &'a [u8],
        mode: u32,
    },
    /// Like `File`, but never replaces an existing target (a backup): one that exists fails
    /// the transaction before anything is replaced.
    NewFile {
        path: &'a str,
        bytes: &'a [u8],
        mode: u32,
    },
}

/// Prints each readable regular file as `<size>\n<bytes>`, and `-\n` for one that is not there.
/// Exactly the counted bytes: a file still being written (the audit log) grows in between.
pub(crate) const READ_SCRIPT: &str = r#"for f; do
  if [ -f "$f" ]; then n=$(( $(wc -c < "$f") )) && printf '%s\n' "$n" && head -c "$n" -- "$f" || exit 1
  else printf -- '-\n'; fi
done"#;

/// What a read gives back for each path: its bytes, or `None` when it is not a regular file.
pub type Files = Vec<Option<Vec<u8>>>;

/// Every node command runs as root: `sudo -n` over SSH (the local variant needs root already).
const SUDO: ship::ExecOptions = ship::ExecOptions {
    sudo: ship::Sudo::Yes,
};

enum Transport {
    Ssh(Box<ship::Session>),
    Local,
}

pub struct Node {
    transport: Transport,
    /// Where the node's `/` is; `/` itself unless `--root` was given.
    root: PathBuf,
    describe: String,
    /// The node lock's holder while this run has it (see `lock`).
    holder: RefCell<Option<LockHolder>>,
}

/// The command holding the node lock, kept running until the run ends.
enum LockHolder {
    Ssh(ship::Held),
    Local(std::process::Child),
}

impl Node {
    pub fn ssh(session: ship::Session, root: Option<&Path>, describe: String) -> Node {
        Node {
            holder: RefCell::new(None),
            transport: Transport::Ssh(Box::new(session)),
            root: root.map_or_else(|| PathBuf::from("/"), Path::to_path_buf),
            describe,
        }
    }

    pub fn local(root: Option<&Path>) -> Result<Node> {
        // On the real `/` we edit the kubelet's manifests: that needs root. A sandbox does not.
        if root.is_none() && !is_root() {
            bail!(
                "the local variant edits /etc/kubernetes on this machine and needs root: run it with sudo, or pass --root DIR for a sandbox"
            );
        }
        Ok(Node {
            holder: RefCell::new(None),
            transport: Transport::Local,
            root: root.map_or_else(|| PathBuf::from("/"), Path::to_path_buf),
            describe: match root {
                Some(r) => format!("this machine, sandbox root {}", r.display()),
                None => "this machine".into(),
            },
        })
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// A node path (as the kubelet sees it) mapped into `--root`.
    pub fn path(&self, node_path: &str) -> String {
        self.root
            .join(node_path.trim_start_matches('/'))
            .to_string_lossy()
            .into_owned()
    }

    pub fn stats(&self) -> Option<ship::Stats> {
        match &self.transport {
            Transport::Ssh(session) => Some(session.stats()),
            Transport::Local => None,
        }
    }

    /// Reads several files in one command; `None` for a file that does not exist.
    pub fn read_many(&self, node_paths: &[&str]) -> Result<Files> {
        let paths: Vec<String> = node_paths.iter().map(|p| self.path(p)).collect();
        let mut argv = vec!["sh", "-c", READ_SCRIPT, "node-read"];
        argv.extend(paths.iter().map(String::as_str));
        let ran = self.run_with_input(&argv, &[])?;
        if ran.status != 0 {
            bail!(
                "reading {} on {} failed: {}",
                paths.join(", "),
                self.describe,
                ran.stderr.trim()
            );
        }
        parse_read_output(&ran.stdout, paths.len()).with_context(|| {
            format!(
                "reading {} on {}: garbled reply",
                paths.join(", "),
                self.describe
            )
        })
    }

    /// Takes the node lock for the rest of this run, in the same command that probes Falco's
    /// `candidates` from the node ([`crate::reachability`], with `ca` for https) and reads
    /// `node_paths` (as [`Node::read_many`]). `lock_dir` is a node path beside the manifest.
    /// Another enable or disable holding it is an error that says who and since when.
    /// Returns the files and the probes' results.
    pub fn lock_and_read(
        &self,
        lock_dir: &str,
        node_paths: &[&str],
        candidates: &[FalcoUrl],
        ca: Option<&str>,
    ) -> Result<(Files, Vec<Probed>)> {
        let lock_dir = self.path(lock_dir);
        let paths: Vec<String> = node_paths.iter().map(|p| self.path(p)).collect();
        let (from, marker) = (lock::this_host(), lock::marker());
        let script = lock::script();
        let probes = reachability::script_args(candidates);
        let mut argv = vec![
            "sh",
            "-c",
            &script,
            lock::NAME,
            &lock_dir,
            &from,
            &marker,
            ca.unwrap_or(""),
        ];
        argv.extend(probes.iter().map(String::as_str));
        argv.extend(paths.iter().map(String::as_str));
        let (stdout, holder) = match &self.transport {
            Transport::Ssh(session) => {
                let mut child = session.spawn(&argv, SUDO)?;
                match child.read_until_line(&marker)? {
                    ship::Until::Line { before } => (before, LockHolder::Ssh(child.detach()?)),
                    ship::Until::Exited(out) => {
                        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
                        return Err(self.lock_refused(out.status, &out.stdout, &stderr));
                    }
                }
            }
            Transport::Local => self.spawn_local_holder(&argv, &marker)?,
        };
        *self.holder.borrow_mut() = Some(holder);
        let garbled = || {
            format!(
                "reading {} on {}: garbled reply",
                paths.join(", "),
                self.describe
            )
        };
        // The holder puts an empty line before the marker, so that it stands on a line of its own.
        let output = stdout.strip_suffix(b"\n").unwrap_or(&stdout);
        let (files, rest) = parse_files(output, paths.len()).with_context(garbled)?;
        let probed = reachability::parse(&String::from_utf8_lossy(rest), candidates);
        Ok((files, probed))
    }

    /// Releases the node lock, waiting for its holder to remove it (one round trip).
    pub fn unlock(&self) -> Result<()> {
        match self.holder.borrow_mut().take() {
            None => Ok(()),
            Some(LockHolder::Ssh(held)) => match &self.transport {
                Transport::Ssh(session) => held.release(session).map(drop).map_err(Into::into),
                Transport::Local => Ok(()),
            },
            Some(LockHolder::Local(mut child)) => {
                drop(child.stdin.take());
                child
                    .wait()
                    .map(drop)
                    .context("waiting for the lock holder")
            }
        }
    }

    fn lock_refused(&self, status: i32, stdout: &[u8], stderr: &str) -> PipelineError {
        if status == lock::HELD {
            PipelineError::failed(format!(
                "another enable/disable holds {} {}",
                self.describe,
                lock::Holder::parse(stdout)
            ))
        } else {
            PipelineError::failed(format!(
                "taking the lock and reading on {} failed (status {status}): {}",
                self.describe,
                stderr.trim()
            ))
        }
    }

    /// The local variant's holder: a child whose stdin we keep open until the run ends.
    fn spawn_local_holder(&self, argv: &[&str], marker: &str) -> Result<(Vec<u8>, LockHolder)> {
        let (program, args) = argv.split_first().context("empty command")?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {program}"))?;
        let mut stdout = child.stdout.take().context("child stdout")?;
        let end = format!("\n{marker}\n");
        let mut seen = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        loop {
            if seen.ends_with(end.as_bytes()) {
                seen.truncate(seen.len() - end.len() + 1);
                return Ok((seen, LockHolder::Local(child)));
            }
            let n = stdout
                .read(&mut buf)
                .context("reading the lock holder's output")?;
            if n == 0 {
                drop(child.stdin.take());
                let out = child
                    .wait_with_output()
                    .context("waiting for the lock holder")?;
                let status = out.status.code().unwrap_or(128);
                let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
                return Err(self.lock_refused(status, &seen, &stderr));
            }
            seen.extend_from_slice(&buf[..n]);
        }
    }

    pub fn read(&self, node_path: &str) -> Result<Vec<u8>> {
        self.read_many(&[node_path])?
            .pop()
            .flatten()
            .with_context(|| {
                format!(
                    "{} does not exist on {}",
                    self.path(node_path),
                    self.describe
                )
            })
    }

    /// Applies every change in one command, ship's transaction: the files land all together,
    /// in order, or the error says exactly which did (`ship::ApplyError`).
    pub fn apply(&self, changes: &[Change]) -> Result<()> {
        let mut transaction = ship::Transaction::new();
        transaction.root_owned();
        for change in changes {
            match *change {
                Change::PrivateDir(path) => transaction.private_dir(self.path(path)),
                Change::File { path, bytes, mode } => {
                    transaction.file(self.path(path), mode, bytes)
                }
                Change::NewFile { path, bytes, mode } => {
                    transaction.new_file(self.path(path), mode, bytes)
                }
            };
        }
        let applied = match &self.transport {
            Transport::Ssh(session) => session.apply(&mut transaction, SUDO),
            Transport::Local => transaction.apply_local(&self.describe),
        };
        applied.with_context(|| format!("writing on {}", self.describe))
    }

    pub fn write(&self, node_path: &str, bytes: &[u8], mode: u32) -> Result<()> {
        self.apply(&[Change::File {
            path: node_path,
            bytes,
            mode,
        }])
    }

    pub fn remove(&self, node_paths: &[&str]) -> Result<()> {
        let paths: Vec<String> = node_paths.iter().map(|p| self.path(p)).collect();
        let mut argv = vec!["rm", "-f", "--"];
        argv.extend(paths.iter().map(String::as_str));
        self.run_checked(&argv).map(drop)
    }

    /// Runs a command as root on the node. Arguments are passed as they are (ship quotes them).
    pub fn run(&self, argv: &[&str]) -> Result<Ran> {
        self.run_with_input(argv, &[])
    }

    fn run_with_input(&self, argv: &[&str], input: &[u8]) -> Result<Ran> {
        match &self.transport {
            Transport::Ssh(session) => {
                let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
                // No input at all saves a round trip (ship then gives the command /dev/null).
                let mut reader = input;
                let stdin: Option<&mut dyn std::io::Read> = match input.is_empty() {
                    true => None,
                    false => Some(&mut reader),
                };
                let streams = ship::Streams {
                    stdin,
                    stdout: &mut stdout,
                    stderr: &mut stderr,
                };
                let status = session.exec_streaming(argv, SUDO, streams)?;
                Ok(Ran {
                    status,
                    stdout,
                    stderr: String::from_utf8_lossy(&stderr).into_owned(),
                })
            }
            Transport::Local => {
                let (program, args) = argv.split_first().context("empty command")?;
                let mut child = Command::new(program)
                    .args(args)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .with_context(|| format!("running {program}"))?;
                let mut stdin = child.stdin.take().context("child stdin")?;
                let input = input.to_vec();
                // A separate writer, so a command that writes a lot before reading cannot deadlock.
                let writer = std::thread::spawn(move || stdin.write_all(&input));
                let out = child
                    .wait_with_output()
                    .with_context(|| format!("running {program}"))?;
                let _ = writer.join();
                Ok(Ran {
                    status: out.status.code().unwrap_or(128),
                    stdout: out.stdout,
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                })
            }
        }
    }

    /// A byte stream to `host:port` as the node sees it: a channel of the node's SSH session
    /// (addresses behind a bastion are not routable from here), or a TCP connection locally.
    pub fn tunnel(&self, host: &str, port: u16) -> Result<Tunnel<'_>> {
        match &self.transport {
            Transport::Ssh(session) => {
                let mut tunnel = session.tunnel(host, port)?;
                tunnel.set_read_timeout(Some(TUNNEL_TIMEOUT));
                tunnel.set_write_timeout(Some(TUNNEL_TIMEOUT));
                Ok(Tunnel::Ssh(tunnel))
            }
            Transport::Local => {
                let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
                    .with_context(|| format!("resolving {host}"))?
                    .next()
                    .with_context(|| format!("{host} has no address"))?;
                let stream = std::net::TcpStream::connect_timeout(&addr, TUNNEL_TIMEOUT)
                    .with_context(|| format!("connecting to {host}:{port}"))?;
                stream
                    .set_read_timeout(Some(TUNNEL_TIMEOUT))
                    .and_then(|()| stream.set_write_timeout(Some(TUNNEL_TIMEOUT)))
                    .context("setting socket timeouts")?;
                Ok(Tunnel::Tcp(stream))
            }
        }
    }

    pub fn run_checked(&self, argv: &[&str]) -> Result<Ran> {
        let ran = self.run(argv)?;
        if ran.status != 0 {
            bail!(
                "`{}` failed on {} with status {}: {}",
                argv.join(" "),
                self.describe,
                ran.status,
                ran.stderr.trim()
            );
        }
        Ok(ran)
    }
}

/// How long one exchange over a [`Tunnel`] may take: a health probe, not a transfer.
const TUNNEL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A byte stream to a port on the node ([`Node::tunnel`]).
pub enum Tunnel<'a> {
    Ssh(ship::Tunnel<'a>),
    Tcp(std::net::TcpStream),
}

impl Read for Tunnel<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Tunnel::Ssh(t) => t.read(buf),
            Tunnel::Tcp(t) => t.read(buf),
        }
    }
}

impl Write for Tunnel<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Tunnel::Ssh(t) => t.write(buf),
            Tunnel::Tcp(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Tunnel::Ssh(t) => t.flush(),
            Tunnel::Tcp(t) => t.flush(),
        }
    }
}

impl Drop for Node {
    /// A run that ends by an error still releases the lock before it exits.
    fn drop(&mut self) {
        let _ = self.unlock();
    }
}

/// Exactly `count` files, nothing after them.
fn parse_read_output(out: &[u8], count: usize) -> Option<Files> {
    let (files, rest) = parse_files(out, count)?;
    rest.is_empty().then_some(files)
}

/// `count` files as the read script prints them, and what follows.
fn parse_files(mut out: &[u8], count: usize) -> Option<(Files, &[u8])> {
    let mut files = Vec::with_capacity(count);
    for _ in 0..count {
        let newline = out.iter().position(|b| *b == b'\n')?;
        let header = std::str::from_utf8(&out[..newline]).ok()?;
        out = &out[newline + 1..];
        if header == "-" {
            files.push(None);
            continue;
        }
        let size: usize = header.parse().ok()?;
        files.push(Some(out.get(..size)?.to_vec()));
        out = &out[size..];
    }
    Some((files, out))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox() -> (tempfile::TempDir, Node) {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::local(Some(dir.path())).unwrap();
        (dir, node)
    }

    /// The API server appends to the audit log while verify reads it: every read must still
    /// parse (the size line and the bytes once disagreed: "garbled reply", seen in CI).
    #[test]
    fn a_file_that_grows_while_it_is_read_is_read_whole() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let (dir, node) = sandbox();
        let log = dir.path().join("audit.log");
        std::fs::write(&log, "").unwrap();
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
                // Small appends, paced, up to a few MB: a log being written, not a disk filler.
                let mut written = 0;
                while !stop.load(Ordering::Relaxed) && written < 8 << 20 {
                    file.write_all(&[b'x'; 512]).unwrap();
                    written += 512;
                    std::thread::sleep(std::time::Duration::from_micros(20));
                }
            });
            for _ in 0..100 {
                let read = node.read_many(&["/audit.log", "/missing"]);
                assert!(read.is_ok(), "{}", read.err().unwrap().report());
            }
            stop.store(true, Ordering::Relaxed);
        });
    }

    #[test]
    fn apply_then_read_round_trips_awkward_bytes_and_names() {
        let (_dir, node) = sandbox();
        let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        node.apply(&[
            Change::PrivateDir("/var/lib/a dir"),
            Change::File {
                path: "/var/lib/a dir/it's $(x) `y`",
                bytes: b"no final newline",
                mode: 0o600,
            },
            Change::File {
                path: "/var/lib/a dir/empty",
                bytes: b"",
                mode: 0o644,
            },
            Change::File {
                path: "/var/lib/a dir/binary",
                bytes: &binary,
                mode: 0o600,
            },
        ])
        .unwrap();
        let read = node
            .read_many(&[
                "/var/lib/a dir/it's $(x) `y`",
                "/var/lib/missing",
                "/var/lib/a dir/empty",
                "/var/lib/a dir/binary",
            ])
            .unwrap();
        assert_eq!(read[0].as_deref(), Some(&b"no final newline"[..]));
        assert_eq!(read[1], None);
        assert_eq!(read[2].as_deref(), Some(&b""[..]));
        assert_eq!(read[3].as_deref(), Some(&binary[..]));
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| {
            std::fs::metadata(node.path(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("/var/lib/a dir"), 0o700);
        assert_eq!(mode("/var/lib/a dir/empty"), 0o644);
        assert_eq!(mode("/var/lib/a dir/binary"), 0o600);
    }

    #[test]
    fn a_failed_transaction_replaces_nothing_and_leaves_no_temp_files() {
        let (dir, node) = sandbox();
        node.apply(&[
            Change::PrivateDir("/etc/k"),
            Change::File {
                path: "/etc/k/m.yaml",
                bytes: b"old",
                mode: 0o600,
            },
        ])
        .unwrap();
        // The second file's directory does not exist, so staging fails after the first file.
        let err = node
            .apply(&[
                Change::File {
                    path: "/etc/k/m.yaml",
                    bytes: b"new",
                    mode: 0o600,
                },
                Change::File {
                    path: "/nowhere/x",
                    bytes: b"x",
                    mode: 0o600,
                },
            ])
            .unwrap_err();
        assert!(
            err.report().contains("nothing was replaced"),
            "{}",
            err.report()
        );
        assert_eq!(node.read("/etc/k/m.yaml").unwrap(), b"old");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("etc/k"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["m.yaml"]);
    }

    #[test]
    fn garbled_read_replies_are_refused() {
        assert_eq!(
            parse_read_output(b"3\nabc-\n", 2),
            Some(vec![Some(b"abc".to_vec()), None])
        );
        assert_eq!(parse_read_output(b"5\nabc", 1), None);
        assert_eq!(parse_read_output(b"3\nabcextra", 1), None);
        assert_eq!(parse_read_output(b"x\n", 1), None);
    }

    #[test]
    fn a_second_run_is_refused_while_the_first_holds_the_lock() {
        let (dir, first) = sandbox();
        let second = Node::local(Some(dir.path())).unwrap();
        first
            .apply(&[
                Change::PrivateDir("/etc/k"),
                Change::File {
                    path: "/etc/k/m.yaml",
                    bytes: b"manifest",
                    mode: 0o600,
                },
            ])
            .unwrap();
        let (read, _) = first
            .lock_and_read("/etc/k/.k8s-audit.lock", &["/etc/k/m.yaml"], &[], None)
            .unwrap();
        assert_eq!(read[0].as_deref(), Some(&b"manifest"[..]));
        let refused = second
            .lock_and_read("/etc/k/.k8s-audit.lock", &["/etc/k/m.yaml"], &[], None)
            .unwrap_err()
            .report();
        let prefix = format!(
            "another enable/disable holds this machine, sandbox root {} since 20",
            dir.path().display()
        );
        assert!(refused.starts_with(&prefix), "{refused}");
        assert!(
            refused.contains("Z (pid ") && refused.contains(" on the node, from "),
            "{refused}"
        );
        first.unlock().unwrap();
        assert!(!dir.path().join("etc/k/.k8s-audit.lock").exists());
        second
            .lock_and_read("/etc/k/.k8s-audit.lock", &["/etc/k/m.yaml"], &[], None)
            .unwrap();
        drop(second);
        assert!(
            !dir.path().join("etc/k/.k8s-audit.lock").exists(),
            "dropping the node releases the lock"
        );
    }

    #[test]
    fn a_lock_whose_holder_is_gone_is_taken_over() {
        let (dir, node) = sandbox();
        let lock = dir.path().join("etc/k/.k8s-audit.lock");
        std::fs::create_dir_all(&lock).unwrap();
        // A pid that is not running: a child that has been waited for.
        let mut gone = Command::new("true").spawn().unwrap();
        let pid = gone.id();
        gone.wait().unwrap();
        std::fs::write(
            lock.join("holder"),
            format!("2026-12-01T00:00:00Z\n{pid}\nsomewhere\n"),
        )
        .unwrap();
        node.lock_and_read("/etc/k/.k8s-audit.lock", &["/etc/k/m.yaml"], &[], None)
            .unwrap();
        let holder = std::fs::read_to_string(lock.join("holder")).unwrap();
        assert!(!holder.contains("somewhere"), "{holder}");
    }
}
