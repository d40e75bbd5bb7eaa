//! Command-line arguments and the glue from them to the library.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Parser, Subcommand};
use ship::copy::{self, CopyOptions, CopyRequest, Progress, Stdio};
use ship::{ConnectOptions, Destination, ExecOptions, Passphrase, Session, Stats, Streams, Sudo};

const EXAMPLES: &str = "\
Examples:
  render < webhook.yaml.in | ship cp --sudo --mode 0600 - node:/var/lib/k8s_audit/webhook.yaml
  ship cp --sudo node:/etc/kubernetes/manifests/kube-apiserver.yaml - | patch-apiserver > new.yaml
  ship cp audit-policy.yaml webhook-config.yaml admin@node:/var/lib/k8s_audit/
  ship exec --sudo admin@node -- mkdir -p -m 0700 /var/lib/k8s_audit
  ship --accept-new exec node -- uname -a
  ship --jump admin@bastion.example.com,10.0.0.2:2222 exec --sudo node -- crictl ps

--jump (or ProxyJump in the ssh config) reaches the node through jump hosts, as ssh -J does;
each jump host uses its own user, port and identity from the ssh config.
Host keys are always verified against known_hosts, for every jump host as for the node;
--accept-new records the key of a host seen for the first time (never a changed one).
Exit status: the remote command's for exec, 255 for connection and authentication failures,
1 for anything else.";

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
    /// Jump hosts to go through, in order, like `ssh -J` (default: ProxyJump from the ssh config).
    #[arg(
        short = 'J',
        long,
        value_name = "[USER@]HOST[:PORT],...",
        global = true
    )]
    jump: Option<String>,
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
        jump: match &args.jump {
            Some(list) => Destination::parse_jump(list)?,
            None => Vec::new(),
        },
        use_agent: !args.no_agent,
        ask_passphrase: Some(ask_passphrase),
        ..ConnectOptions::default()
    };
    let mut shown = Shown::new(args.verbose);
    match args.command {
        Command::Exec {
            sudo,
            stdin,
            destination,
            command,
        } => {
            let dest: Destination = destination.parse()?;
            let start = Instant::now();
            let session = Session::connect(&dest, &opts)?;
            shown.connected(session.host(), start.elapsed());
            let argv: Vec<&str> = command.iter().map(String::as_str).collect();
            let mut input = std::io::stdin().lock();
            let streams = Streams {
                stdin: if stdin { Some(&mut input) } else { None },
                stdout: &mut std::io::stdout().lock(),
                stderr: &mut std::io::stderr().lock(),
            };
            let status = session.exec_streaming(
                &argv,
                ExecOptions {
                    sudo: sudo_of(sudo),
                },
                streams,
            )?;
            shown.finished(session.stats());
            Ok(ExitCode::from(u8::try_from(status).unwrap_or(255)))
        }
        Command::Cp {
            sudo,
            mode,
            operands,
        } => {
            let request = CopyRequest::parse(&operands)?;
            let copy_opts = CopyOptions {
                mode,
                sudo: sudo_of(sudo),
            };
            let stdio = Stdio {
                stdin: &mut std::io::stdin().lock(),
                stdout: &mut std::io::stdout().lock(),
            };
            let copied = copy::copy(&request, &opts, copy_opts, stdio, &mut shown)?;
            shown.finished(copied.stats);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn sudo_of(flag: bool) -> Sudo {
    if flag { Sudo::Yes } else { Sudo::No }
}

/// What the user sees on stderr: with -v the connection and the session's cost, and on a
/// terminal a progress bar for each big file.
struct Shown {
    verbose: bool,
    terminal: bool,
    bar: Option<Bar>,
}

/// The progress bar of the file being sent.
struct Bar {
    target: String,
    start: Instant,
    shown: Instant,
}

impl Shown {
    fn new(verbose: bool) -> Shown {
        Shown {
            verbose,
            // Only where someone watches.
            terminal: std::io::stderr().is_terminal(),
            bar: None,
        }
    }

    fn finished(&self, stats: Stats) {
        if self.verbose {
            eprintln!(
                "ship: {} TCP connection(s), {} round trips",
                stats.tcp_connections, stats.round_trips
            );
        }
    }
}

impl Progress for Shown {
    fn connected(&mut self, host: &str, took: Duration) {
        if self.verbose {
            eprintln!("ship: connected to {host} in {took:.0?}");
        }
    }

    fn sent(&mut self, target: &str, done: u64, total: u64) {
        // Only when the wait is noticeable.
        if !self.terminal || total <= 4 << 20 {
            return;
        }
        let bar = match &mut self.bar {
            Some(bar) if bar.target == target => bar,
            _ => self.bar.insert(Bar {
                target: target.to_owned(),
                start: Instant::now(),
                shown: Instant::now(),
            }),
        };
        if bar.shown.elapsed() > Duration::from_millis(200) || done == total {
            bar.shown = Instant::now();
            let rate = done as f64 / bar.start.elapsed().as_secs_f64().max(1e-3) / 1e6;
            let percent = done * 100 / total.max(1);
            eprint!(
                "\r{target}: {percent:3}% {:.1}/{:.1} MB {rate:.1} MB/s",
                done as f64 / 1e6,
                total as f64 / 1e6
            );
            if done == total {
                eprintln!();
            }
            let _ = std::io::stderr().flush();
        }
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
