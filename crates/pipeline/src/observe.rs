//! `observe`: follow the Falco pod's log, like `kubectl logs -f`.

use crate::cluster_args::ClusterArgs;
use crate::error::{Result, bail};
use crate::report::Reporter;

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Example:\n  cargo xtask observe -l app=falco")]
pub struct ObserveArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The Falco pods' label selector (default: Falco's chart, `app.kubernetes.io/name=falco`,
    /// then `app in (falco, falco-example)`).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
}

/// Follows the log; each line goes to `reporter` as output, the end as a note.
pub fn run(args: ObserveArgs, reporter: &dyn Reporter) -> Result<()> {
    let kube = args.cluster.connect_required()?;
    let selectors: Vec<&str> = match &args.selector {
        Some(selector) => vec![selector.as_str()],
        None => cluster::FALCO_POD_SELECTORS.to_vec(),
    };
    for selector in &selectors {
        let followed = kube.block_on(
            kube.cluster
                .follow_logs(selector, |line| reporter.output(line)),
        )?;
        if let Some((namespace, pod)) = followed {
            reporter.info(&format!("the log of {namespace}/{pod} ended"));
            return Ok(());
        }
    }
    bail!("no pod matches {}", selectors.join(" or "))
}
