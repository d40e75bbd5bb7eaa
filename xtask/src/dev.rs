//! The developer tasks, apart from the product commands: they build, test, measure and show
//! the product, and never ship in it.

pub mod apiserver;
pub mod bench;
pub mod debian;
pub mod demo;
pub mod node;
pub mod test;

/// `cargo xtask record-api`: the ignored test in crates/cluster that re-records the API responses.
pub fn record_api(sh: &xshell::Shell) -> anyhow::Result<()> {
    test::install_and_build(sh)?;
    xshell::cmd!(
        sh,
        "cargo test -p cluster --test record -- --ignored --nocapture"
    )
    .run()?;
    Ok(())
}
