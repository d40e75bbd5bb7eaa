//! Debian packages: the one way xtask checks for and installs what it needs.

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

pub fn is_root(sh: &Shell) -> Result<bool> {
    Ok(cmd!(sh, "id -u")
        .quiet()
        .read()
        .context("running `id -u`")?
        == "0")
}

/// Installs those of `packages` that are missing, and touches nothing when all are there.
/// `needed_for` completes "... needs these Debian packages" in the error a non-root user gets.
pub fn install_missing(sh: &Shell, packages: &[&str], needed_for: &str) -> Result<()> {
    let format = "${Status}";
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            cmd!(sh, "dpkg-query -W -f={format} {p}")
                .quiet()
                .ignore_stderr()
                .read()
                .map_or(true, |status| status != "install ok installed")
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root(sh)? {
        bail!(
            "{needed_for} needs these Debian packages: {}. Install them with: sudo apt-get install -y {}",
            missing.join(" "),
            missing.join(" ")
        );
    }
    eprintln!("installing {}", missing.join(" "));
    cmd!(sh, "apt-get update -qq")
        .run()
        .context("apt-get update")?;
    cmd!(
        sh,
        "apt-get install -y -qq --no-install-recommends {missing...}"
    )
    .env("DEBIAN_FRONTEND", "noninteractive")
    .run()
    .context("apt-get install")?;
    Ok(())
}
