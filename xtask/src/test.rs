//! `cargo xtask test`: every test, on a fresh machine too. It installs the Debian packages the
//! tests run (sshd, sudo, GNU envsubst, etcd, Go for the real kube-apiserver), builds that
//! kube-apiserver once per machine, then runs `cargo test --workspace`.

use anyhow::{Result, bail};
use xshell::{Shell, cmd};

/// The one list of Debian packages the tests need; `.ci/run` reads the same file.
const PACKAGES: &str = include_str!("../../.ci/debian-packages");

pub fn packages() -> Vec<&'static str> {
    PACKAGES
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| !name.starts_with('#'))
        .collect()
}

/// Installs whatever is missing, and nothing when all is there (no apt-get update either).
pub fn install_packages(sh: &Shell) -> Result<()> {
    let missing: Vec<&str> = packages()
        .into_iter()
        .filter(|p| {
            let format = "${Status}";
            cmd!(sh, "dpkg-query -W -f {format} {p}")
                .quiet()
                .ignore_stderr()
                .read()
                .map_or(true, |status| status != "install ok installed")
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let is_root = cmd!(sh, "id -u").read()? == "0";
    if !is_root {
        bail!(
            "the tests need these Debian packages: {}. Install them with: sudo apt-get install -y {}",
            missing.join(" "),
            missing.join(" ")
        );
    }
    println!("installing {}", missing.join(" "));
    cmd!(sh, "apt-get update -qq").run()?;
    cmd!(
        sh,
        "apt-get install -y -qq --no-install-recommends {missing...}"
    )
    .env("DEBIAN_FRONTEND", "noninteractive")
    .run()?;
    Ok(())
}

pub fn run(sh: &Shell) -> Result<()> {
    install_packages(sh)?;
    crate::apiserver::Apiserver::Build.run(sh)?;
    cmd!(sh, "cargo test --workspace").run()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_package_list_is_names_only() {
        let packages = super::packages();
        assert!(
            packages.contains(&"openssh-server") && packages.contains(&"gettext-base"),
            "{packages:?}"
        );
        assert!(
            packages.iter().all(|p| p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))),
            "{packages:?}"
        );
    }
}
