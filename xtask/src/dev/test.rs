//! `cargo xtask test`: every test, on a fresh machine too. It installs the Debian packages the
//! tests run (sshd, sudo, GNU envsubst, etcd, Go for the real kube-apiserver), builds that
//! kube-apiserver once per machine, then runs `cargo test --workspace`, and last the demo:
//! `cargo test` builds the pipeline with every feature, and only this binary runs its light
//! build.

use anyhow::Result;
use xshell::{Shell, cmd};

/// The one list of Debian packages the tests need; `.ci/run` reads the same file.
const PACKAGES: &str = include_str!("../../../.ci/debian-packages");

pub fn packages() -> Vec<&'static str> {
    PACKAGES
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| !name.starts_with('#'))
        .collect()
}

pub fn run(sh: &Shell) -> Result<()> {
    install_and_build(sh)?;
    cmd!(sh, "cargo test --workspace").run()?;
    super::demo::run()
}

/// What every test run needs first: the Debian packages and the real kube-apiserver.
pub fn install_and_build(sh: &Shell) -> Result<()> {
    super::debian::install_missing(sh, &packages(), "running the tests")?;
    super::apiserver::Apiserver::Build.run(sh)
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
