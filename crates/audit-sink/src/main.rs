//! `audit-sink`: parses arguments, runs the receiver, prints events. Everything else is in the library.

use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use audit_sink::{Config, Event, Filter, Format, Server, TlsConfig, write_event};
use clap::Parser;
use tokio::sync::mpsc;

/// Receive Kubernetes audit webhooks like Falco does and print one line per event.
#[derive(Parser)]
#[command(
    name = "audit-sink",
    version,
    after_help = "Lines are `stage verb resource namespace/name user code`, `-` for absent fields.\n\n\
Examples:\n  \
audit-sink --listen 127.0.0.1:8765\n  \
audit-sink --resource configmaps --verb create --verb delete\n  \
audit-sink --json | jq -r 'select(.stage == \"ResponseComplete\") | .objectRef.name'\n  \
audit-sink | awk '$3 == \"secrets\" {print $5}' | sort | uniq -c\n  \
audit-sink --tls-cert server.pem --tls-key server-key.pem --client-ca ca.pem\n\n\
Point the API server at it with a webhook kubeconfig whose server is\n\
http://127.0.0.1:8765/k8s_audit (or /k8s-audit, as Falco's k8saudit plugin),\n\
https://... with --tls-cert; its certificate-authority-data must hold the CA\n\
that signed --tls-cert, and with --client-ca its client-certificate-data and\n\
client-key-data a certificate that CA signed."
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8765")]
    listen: SocketAddr,
    /// Print each event's JSON on one line instead of the compact line.
    #[arg(long)]
    json: bool,
    /// Only events on this resource (`pods`, or `pods/log` for a subresource); repeatable.
    #[arg(long = "resource", value_name = "RESOURCE")]
    resources: Vec<String>,
    /// Only events with this verb (`create`, `get`, ...); repeatable.
    #[arg(long = "verb", value_name = "VERB")]
    verbs: Vec<String>,
    /// Only events by this username; repeatable.
    #[arg(long = "user", value_name = "USER")]
    users: Vec<String>,
    /// Reject request bodies larger than this with 413.
    #[arg(long, default_value_t = 16 << 20, value_name = "BYTES")]
    max_body_bytes: usize,
    /// Serve https with this certificate (chain) in PEM.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert in PEM (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM); needs --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
}

/// Events buffered between the receiver and the printer; beyond this the senders wait.
const QUEUE: usize = 4096;

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("audit-sink: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let format = if args.json {
        Format::Json
    } else {
        Format::Line
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsConfig::from_pem_files(
            cert,
            key,
            args.client_ca.as_deref(),
        )?),
        _ => None,
    };
    let config = Config {
        filter: Filter {
            resources: args.resources,
            verbs: args.verbs,
            users: args.users,
        },
        max_body_bytes: args.max_body_bytes,
        tls,
        ..Config::default()
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let server = runtime.block_on(Server::bind(args.listen, config, tx))?;
    // The bound address, so that `--listen 127.0.0.1:0` tells which port it got.
    eprintln!("audit-sink: listening on {} and /k8s-audit", server.url());
    let printer = std::thread::spawn(move || print(rx, format));
    runtime.block_on(async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = wait_for_thread(&printer) => {}
        }
    });
    Ok(())
}

async fn wait_for_thread(printer: &std::thread::JoinHandle<()>) {
    while !printer.is_finished() {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Writes events as they come, flushing whenever the queue runs empty so that a pipe sees
/// lines promptly without a syscall per line under load. Ends quietly when stdout closes
/// (e.g. `| head`).
fn print(mut rx: mpsc::Receiver<Event>, format: Format) {
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(64 << 10, stdout.lock());
    while let Some(event) = rx.blocking_recv() {
        if write_event(&mut out, &event, format).is_err() {
            return;
        }
        if rx.is_empty() && out.flush().is_err() {
            return;
        }
    }
}
