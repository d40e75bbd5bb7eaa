//! Command-line arguments and the glue from them to the library.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use ship::{ConnectOptions, Destination, Passphrase, RemotePath, Session, Upload};

const EXAMPLES: &str = "\
Examples:
  render < webhook.yaml.in | ship cp --sudo --mode 0600 - node:/var/lib/k8s_audit/webhook.yaml
  ship cp --sudo node:/etc/kubernetes/manifests/kube-apiserver.yaml - | patch-apiserver > new.yaml
  ship cp audit-policy.yaml webhook-config.yaml admin@node:/var/lib/k8s_audit/
  ship exec --sudo admin@node -- mkdir -p -m 0700 /var/lib/k8s_audit
  ship --accept-new exec node -- uname -a

Host keys are always verified against known_hosts; --accept-new records the key of a host
seen for the first time (never a changed one). Exit status: the remote command's for exec,
255 for connection and authentication failures, 1 for anything else.";

#[derive(Parser)]
#[command(name = "ship", version, about = "Copy files and run sudo commands on a node over one verified SSH session", after_help = EXAMPLES)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
    /// Port to connect to (default: from ~/.ssh/config, else 22).
    #[arg(short = 'p', long, global = true)]
    port: Option<u16>,
    /// Identity file; repeat for more. Tried after the agent.
    #[arg(short = 'i', long = "identity", value_name = "FILE", global = true)]
    identities: Vec<PathBuf>,
    /// known_hosts file to verify against (repeatable); default: OpenSSH's files.
    #[arg(long = "known-hosts", value_name = "FILE", global = true)]
    known_hosts: Vec<PathBuf>,
    /// Record the host key of a host not yet in known_hosts (like StrictHostKeyChecking=accept-new).
    #[arg(long, global = true)]
    accept_new: bool,
    /// Seconds to wait for the TCP connection and the SSH handshake.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0, global = true)]
    connect_timeout: f64,
    /// ssh config file (default: ~/.ssh/config when present).
    #[arg(short = 'F', long = "config", value_name = "FILE", global = true)]
    ssh_config: Option<PathBuf>,
    /// Do not use ssh-agent.
    #[arg(long, global = true)]
    no_agent: bool,
    /// Print what ship does, and the session's cost, on stderr.
    #[arg(short, long, global = true)]
    verbose: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Copy files to or from a host: each operand is `-` (stdin/stdout), a local path, or [user@]host:path.
    Cp {
        /// Write remote files as root through `sudo -n`.
        #[arg(long)]
        sudo: bool,
        /// Permissions of the written file, in octal.
        #[arg(long, default_value = "0600", value_parser = parse_mode)]
        mode: u32,
        /// Sources, then the destination. Several sources need a directory destination.
        #[arg(required = true, num_args = 2.., value_name = "SRC... DEST")]
        operands: Vec<String>,
    },
    /// Run a command on a host, streaming its output; exits with its status.
    Exec {
        /// Run the command through `sudo -n`.
        #[arg(long)]
        sudo: bool,
        /// Feed our stdin to the command (otherwise it reads /dev/null, like `ssh -n`).
        #[arg(long)]
        stdin: bool,
        /// [user@]host[:port]
        destination: String,
        /// The command and its arguments (each one is quoted for the remote shell).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|&m| m <= 0o7777)
        .ok_or_else(|| format!("expected an octal mode like 0600, got {text:?}"))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !(args.connect_timeout > 0.0 && args.connect_timeout < 86_400.0) {
        bail!("--connect-timeout must be a number of seconds above 0");
    }
    let opts = ConnectOptions {
        port: args.port,
        identities: args.identities.clone(),
        known_hosts: args.known_hosts.clone(),
        accept_new: args.accept_new,
        connect_timeout: Duration::from_secs_f64(args.connect_timeout),
        ssh_config: args.ssh_config.clone(),
        use_agent: !args.no_agent,
        ask_passphrase: Some(ask_passphrase),
        ..ConnectOptions::default()
    };
    match args.command {
        Command::Exec {
            sudo,
            stdin,
            destination,
            command,
        } => {
            let dest: Destination = destination.parse()?;
            let session = connect(&dest, &opts, args.verbose)?;
            let argv: Vec<&str> = command.iter().map(String::as_str).collect();
            let mut input = std::io::stdin().lock();
            let input: Option<&mut dyn Read> = if stdin { Some(&mut input) } else { None };
            let status = session.exec_streaming(
                &argv,
                sudo,
                input,
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            )?;
            report(&session, args.verbose);
            Ok(ExitCode::from(u8::try_from(status).unwrap_or(255)))
        }
        Command::Cp {
            sudo,
            mode,
            operands,
        } => {
            copy(&operands, sudo, mode, &opts, args.verbose)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn connect(dest: &Destination, opts: &ConnectOptions, verbose: bool) -> anyhow::Result<Session> {
    let start = Instant::now();
    let session = Session::connect(dest, opts)?;
    if verbose {
        eprintln!(
            "ship: connected to {} in {:.0?}",
            session.host(),
            start.elapsed()
        );
    }
    Ok(session)
}

fn report(session: &Session, verbose: bool) {
    if verbose {
        let stats = session.stats();
        eprintln!(
            "ship: {} TCP connection(s), {} round trips",
            stats.tcp_connections, stats.round_trips
        );
    }
}

enum Operand {
    Stdio,
    Local(PathBuf),
    Remote(RemotePath),
}

fn operand(text: &str) -> anyhow::Result<Operand> {
    Ok(match (text, RemotePath::parse(text)?) {
        ("-", _) => Operand::Stdio,
        (_, Some(remote)) => Operand::Remote(remote),
        (_, None) => Operand::Local(PathBuf::from(text)),
    })
}

fn file_name(path: &str) -> Option<&str> {
    path.rsplit('/')
        .next()
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
}

fn copy(
    operands: &[String],
    sudo: bool,
    mode: u32,
    opts: &ConnectOptions,
    verbose: bool,
) -> anyhow::Result<()> {
    let (dest_text, source_texts) = operands.split_last().context("expected SRC... DEST")?;
    let dest = operand(dest_text)?;
    let sources = source_texts
        .iter()
        .map(|s| operand(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let many = sources.len() > 1;
    if many && sources.iter().any(|s| matches!(s, Operand::Stdio)) {
        bail!("`-` can only be the single source");
    }
    match dest {
        Operand::Remote(target) => {
            let mut files = Vec::new();
            for source in sources {
                match source {
                    Operand::Remote(_) => {
                        bail!("copying between two remote hosts is not supported")
                    }
                    Operand::Stdio if target.path.ends_with('/') => {
                        bail!("{dest_text}: needs a file name when the source is `-`")
                    }
                    source => files.push(source),
                }
            }
            let session = connect(&target.dest, opts, verbose)?;
            let mut locals = Vec::new();
            for source in files {
                match source {
                    Operand::Local(path) => {
                        let remote = if many || target.path.ends_with('/') {
                            let name = path
                                .file_name()
                                .and_then(|n| n.to_str())
                                .with_context(|| format!("{}: no file name", path.display()))?;
                            format!("{}/{name}", target.path.trim_end_matches('/'))
                        } else {
                            target.path.clone()
                        };
                        let file = std::fs::File::open(&path)
                            .with_context(|| format!("{}: cannot open", path.display()))?;
                        let len = file
                            .metadata()
                            .with_context(|| format!("{}: cannot stat", path.display()))?
                            .len();
                        locals.push((file, len, remote));
                    }
                    _ => session.upload(&mut std::io::stdin().lock(), &target.path, mode, sudo)?,
                }
            }
            upload_local(&session, &mut locals, mode, sudo)?;
            report(&session, verbose);
        }
        Operand::Stdio | Operand::Local(_) => {
            let mut remotes = Vec::new();
            for source in sources {
                match source {
                    Operand::Remote(r) => remotes.push(r),
                    _ => bail!("one side of a copy must be remote ([user@]host:path)"),
                }
            }
            let first = remotes.first().context("expected a source")?;
            if remotes.iter().any(|r| r.dest != first.dest) {
                bail!("all remote sources must be on the same host (ship uses one session)");
            }
            let session = connect(&first.dest, opts, verbose)?;
            for remote in &remotes {
                match &dest {
                    Operand::Local(path) => {
                        let target = if path.is_dir() {
                            path.join(
                                file_name(&remote.path)
                                    .with_context(|| format!("{}: no file name", remote.path))?,
                            )
                        } else if many {
                            bail!("{}: not a directory (several sources)", path.display())
                        } else {
                            path.clone()
                        };
                        download_local(&session, &remote.path, sudo, &target, mode)?;
                    }
                    _ => session.download_to(&remote.path, sudo, &mut std::io::stdout().lock())?,
                }
            }
            report(&session, verbose);
        }
    }
    Ok(())
}

/// All local files in one batch (one channel), with a progress bar on each big one.
fn upload_local(
    session: &Session,
    files: &mut [(std::fs::File, u64, String)],
    mode: u32,
    sudo: bool,
) -> anyhow::Result<()> {
    // A progress bar only where someone watches, and only when the wait is noticeable.
    let show = std::io::stderr().is_terminal();
    let mut readers: Vec<Progress> = files
        .iter_mut()
        .map(|(file, len, remote)| Progress {
            inner: file,
            done: 0,
            total: *len,
            show: show && *len > 4 << 20,
            start: Instant::now(),
            shown: Instant::now(),
            name: remote,
        })
        .collect();
    let mut batch: Vec<Upload> = readers
        .iter_mut()
        .map(|p| Upload {
            len: p.total,
            remote_path: p.name.to_owned(),
            source: p,
        })
        .collect();
    session.upload_batch(&mut batch, mode, sudo)?;
    Ok(())
}

/// Writes a temp file beside `target` and renames it into place, so a failed download
/// leaves the old file (or none).
fn download_local(
    session: &Session,
    remote: &str,
    sudo: bool,
    target: &Path,
    mode: u32,
) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".ship.")
        .tempfile_in(dir)
        .with_context(|| format!("{}: cannot create a file", dir.display()))?;
    session.download_to(remote, sudo, tmp.as_file_mut())?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .context("set file mode")?;
    tmp.persist(target)
        .with_context(|| format!("{}: cannot write", target.display()))?;
    Ok(())
}

struct Progress<'a> {
    inner: &'a mut dyn Read,
    done: u64,
    total: u64,
    show: bool,
    start: Instant,
    shown: Instant,
    name: &'a str,
}

impl Read for Progress<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        // n == 0 is the read after the last byte: the final line is already out.
        if !self.show || n == 0 {
            return Ok(n);
        }
        if self.shown.elapsed() > Duration::from_millis(200) || self.done == self.total {
            self.shown = Instant::now();
            let rate = self.done as f64 / self.start.elapsed().as_secs_f64().max(1e-3) / 1e6;
            let percent = self.done * 100 / self.total.max(1);
            eprint!(
                "\r{}: {percent:3}% {:.1}/{:.1} MB {rate:.1} MB/s",
                self.name,
                self.done as f64 / 1e6,
                self.total as f64 / 1e6
            );
            if self.done == self.total {
                eprintln!();
            }
            let _ = std::io::stderr().flush();
        }
        Ok(n)
    }
}

/// Asks on the terminal, with echo off; `None` when there is no terminal (pipes, CI).
fn ask_passphrase(key: &Path) -> Option<Passphrase> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()?;
    let saved = tcgetattr(&tty).ok()?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    write!(tty, "Enter passphrase for key '{}': ", key.display()).ok()?;
    tcsetattr(&tty, OptionalActions::Flush, &quiet).ok()?;
    let mut line = String::new();
    let read = std::io::BufRead::read_line(&mut std::io::BufReader::new(&tty), &mut line);
    let _ = tcsetattr(&tty, OptionalActions::Flush, &saved);
    let _ = writeln!(tty);
    read.ok()?;
    Some(Passphrase(line.trim_end_matches(['\r', '\n']).to_owned()))
}
