//! `cargo xtask demo`: the whole static pipeline on a sandbox node, with no cluster. It runs the
//! same `enable` and `disable` a user runs, with `local --root <sandbox> --no-wait`.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use clap::Parser;

const MANIFEST: &str = "/etc/kubernetes/manifests/kube-apiserver.yaml";
const FALCO_URL: &str = "http://10.96.0.10:8765/k8s_audit";

pub fn run() -> Result<()> {
    let sandbox = crate::project_root().join("target/demo-node");
    if sandbox.exists() {
        std::fs::remove_dir_all(&sandbox)
            .with_context(|| format!("clearing {}", sandbox.display()))?;
    }
    let manifest = sandbox.join(MANIFEST.trim_start_matches('/'));
    std::fs::create_dir_all(manifest.parent().context("manifest has a parent")?)?;
    let original =
        std::fs::read(crate::project_root().join("fixtures/manifests/minikube-v1.28.yaml"))?;
    std::fs::write(&manifest, &original)?;
    let root = sandbox.to_string_lossy().into_owned();
    let enable = [
        "enable",
        "local",
        "static",
        "--root",
        &root,
        "--falco-url",
        FALCO_URL,
        "--no-wait",
        // No Falco runs here, and its example address must not be probed from this machine.
        "--skip-reachability",
    ];

    heading(&format!(
        "A sandbox node at {root}, holding a minikube v1.28 manifest (kubeadm-made)"
    ));
    heading(&format!(
        "cargo xtask enable local static --root {root} --falco-url {FALCO_URL} --no-wait --skip-reachability"
    ));
    run_args(enable)?;

    heading("The files on the node");
    show_tree(&sandbox.join("var/lib/k8s_audit"), &sandbox)?;
    let webhook = sandbox.join("var/lib/k8s_audit/webhook-config.yaml");
    println!(
        "\n{}:\n{}",
        webhook.display(),
        std::fs::read_to_string(&webhook)?
    );

    heading("The manifest diff");
    let patched = std::fs::read_to_string(&manifest)?;
    print!(
        "{}",
        patch_apiserver::unified_diff(
            &String::from_utf8_lossy(&original),
            &patched,
            MANIFEST,
            MANIFEST
        )
    );

    heading("A second enable changes nothing");
    run_args(enable)?;

    heading(&format!(
        "cargo xtask disable local --root {root} --no-wait"
    ));
    run_args(["disable", "local", "--root", &root, "--no-wait"])?;
    let restored = std::fs::read(&manifest)?;
    ensure!(
        restored == original,
        "the manifest is not back to its original bytes"
    );
    println!(
        "\n✓ {MANIFEST} is back to the original bytes ({} bytes)",
        restored.len()
    );
    Ok(())
}

fn heading(text: &str) {
    println!("\n== {text}");
}

fn show_tree(dir: &Path, root: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    let meta = std::fs::metadata(dir)?;
    println!(
        "  {:o}  /{}/",
        meta.permissions().mode() & 0o777,
        dir.strip_prefix(root)?.display()
    );
    for entry in entries {
        let meta = entry.metadata()?;
        if meta.is_dir() {
            show_tree(&entry.path(), root)?;
        } else {
            println!(
                "  {:o}  /{} ({} bytes)",
                meta.permissions().mode() & 0o777,
                entry.path().strip_prefix(root)?.display(),
                meta.len()
            );
        }
    }
    Ok(())
}

/// Runs a product command line in-process, as a user would type it after `cargo xtask`. This
/// binary links the pipeline's light build, which runs the local variant only; that is all the
/// demo needs, and why its first build is quick.
fn run_args<'a>(args: impl IntoIterator<Item = &'a str>) -> Result<()> {
    let cli = pipeline::Cli::try_parse_from(std::iter::once("cargo xtask").chain(args))?;
    let terminal = pipeline::report::Terminal::new(cli.command.verbose());
    pipeline::run(cli.command, &terminal).map_err(|e| anyhow::anyhow!(e.report()))?;
    ensure!(!terminal.output_failed(), "writing standard output failed");
    Ok(())
}
