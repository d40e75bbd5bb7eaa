//! `cargo xtask apiserver build`: a real kube-apiserver v1.20.2 from Debian's source package.

use clap::Subcommand;

#[derive(Subcommand)]
pub enum Apiserver {
    /// Build (once per machine) and print the path of the kube-apiserver binary.
    Build,
}

impl Apiserver {
    pub fn run(self, _sh: &xshell::Shell) -> anyhow::Result<()> {
        anyhow::bail!("not written yet")
    }
}
