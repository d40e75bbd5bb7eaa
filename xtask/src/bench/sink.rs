#[derive(clap::Args)]
pub struct Args {}

pub fn run(_sh: &xshell::Shell, _args: Args) -> anyhow::Result<()> {
    anyhow::bail!("this benchmark is not written yet")
}
