//! `observe`: follow the Falco pod's log, like `kubectl logs -f`.

use crate::cluster_args::ClusterArgs;
use crate::error::{Result, bail};
use crate::report::Reporter;

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Example:\n  cargo xtask observe -l app=falco")]
pub struct ObserveArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The Falco pods' label selector.
    #[arg(short = 'l', long, default_value = "app=falco-example")]
    pub selector: String,
}

/// Follows the log; each line goes to `reporter` as output, the end as a note.
pub fn run(args: ObserveArgs, reporter: &dyn Reporter) -> Result<()> {
    let kube = args.cluster.connect_required()?;
    let followed = kube.block_on(
        kube.cluster
            .follow_logs(&args.selector, |line| reporter.output(line)),
    )?;
    match followed {
        Some((namespace, pod)) => {
            reporter.info(&format!("the log of {namespace}/{pod} ended"));
            Ok(())
        }
        None => bail!("no pod matches the selector {}", args.selector),
    }
}
