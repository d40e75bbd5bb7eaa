//! `cargo xtask observe`: follow the Falco pod's log, like `kubectl logs -f`.

use anyhow::{Result, bail};

use crate::cluster_args::ClusterArgs;

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Example:\n  cargo xtask observe -l app=falco")]
pub struct ObserveArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The Falco pods' label selector.
    #[arg(short = 'l', long, default_value = "app=falco-example")]
    pub selector: String,
}

pub fn run(args: ObserveArgs) -> Result<()> {
    let kube = args.cluster.connect_required()?;
    let followed = kube.block_on(
        kube.cluster
            .follow_logs(&args.selector, |line| println!("{line}")),
    )?;
    match followed {
        Some((namespace, pod)) => {
            eprintln!("the log of {namespace}/{pod} ended");
            Ok(())
        }
        None => bail!("no pod matches the selector {}", args.selector),
    }
}
