//! The rules of ARCHITECTURE.md, checked against `cargo metadata`, as rust-analyzer's tidy
//! tests do: a dependency that breaks one fails here, not in a reviewer's head.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// The tools: each is a library plus a thin binary, and none depends on another.
const TOOLS: &[&str] = &["render", "patch-apiserver", "ship", "audit-sink"];
/// The only crates that may compose two or more tools: the product, and the developer tasks.
const COMPOSERS: &[&str] = &["pipeline", "xtask"];
/// Where `kube` may be a direct dependency (it is most of a clean build).
const KUBE_USERS: &[&str] = &["cluster", "testkit", "e2e"];
/// What the `remote` feature of the pipeline brings, and `cargo xtask` (the light build, so that
/// a first `cargo xtask demo` builds quickly) must not link.
const HEAVY: &[&str] = &[
    "ssh2",
    "libssh2-sys",
    "openssl-sys",
    "openssl-src",
    "kube",
    "kube-client",
    "k8s-openapi",
    "tokio",
    "rustls",
    "ring",
    "hyper",
    "audit-sink",
    "testkit",
];

struct Dependency {
    name: String,
    dev: bool,
}

/// What `cargo ARGS --offline` prints, run at the root.
fn cargo(args: &[&str]) -> Vec<u8> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(args)
        .arg("--offline")
        .current_dir(root())
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Each workspace package and its declared dependencies.
fn workspace() -> BTreeMap<String, Vec<Dependency>> {
    let out = cargo(&["metadata", "--format-version", "1", "--no-deps"]);
    let metadata: serde_json::Value = serde_json::from_slice(&out).unwrap();
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|package| {
            let dependencies = package["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| Dependency {
                    name: d["name"].as_str().unwrap().to_string(),
                    dev: d["kind"].as_str() == Some("dev"),
                })
                .collect();
            (package["name"].as_str().unwrap().to_string(), dependencies)
        })
        .collect()
}

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn normal(dependencies: &[Dependency]) -> impl Iterator<Item = &str> {
    dependencies
        .iter()
        .filter(|d| !d.dev)
        .map(|d| d.name.as_str())
}

#[test]
fn no_tool_depends_on_another_tool() {
    for (package, dependencies) in workspace() {
        if TOOLS.contains(&package.as_str()) {
            let tools: Vec<_> = normal(&dependencies)
                .filter(|d| TOOLS.contains(d))
                .collect();
            assert!(tools.is_empty(), "tool {package} depends on {tools:?}");
        }
    }
}

#[test]
fn only_the_pipeline_and_xtask_compose_tools() {
    for (package, dependencies) in workspace() {
        let tools: BTreeSet<_> = normal(&dependencies)
            .filter(|d| TOOLS.contains(d))
            .collect();
        assert!(
            tools.len() < 2 || COMPOSERS.contains(&package.as_str()),
            "{package} composes {tools:?}; only {COMPOSERS:?} may"
        );
    }
}

#[test]
fn cluster_depends_on_no_tool() {
    let packages = workspace();
    let tools: Vec<_> = normal(&packages["cluster"])
        .filter(|d| TOOLS.contains(d))
        .collect();
    assert!(tools.is_empty(), "cluster depends on {tools:?}");
}

#[test]
fn testkit_is_never_a_normal_dependency() {
    for (package, dependencies) in workspace() {
        assert!(
            !normal(&dependencies).any(|d| d == "testkit"),
            "{package} has testkit as a normal dependency; it may only be a dev-dependency"
        );
    }
}

#[test]
fn kube_is_used_only_where_the_architecture_says() {
    for (package, dependencies) in workspace() {
        if dependencies.iter().any(|d| d.name == "kube") {
            assert!(
                KUBE_USERS.contains(&package.as_str()),
                "{package} depends on kube; ARCHITECTURE.md allows only {KUBE_USERS:?}"
            );
        }
    }
}

#[test]
fn architecture_md_names_every_crate() {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    for package in workspace().keys() {
        let dir = match package.as_str() {
            "xtask" => "xtask/".to_string(),
            "e2e" => "tests/".to_string(),
            name => format!("crates/{name}"),
        };
        assert!(
            text.contains(&dir),
            "ARCHITECTURE.md does not mention {dir} (package {package})"
        );
    }
}

#[test]
fn cargo_xtask_links_the_light_build() {
    let out = cargo(&[
        "tree", "-p", "xtask", "-e", "normal", "--prefix", "none", "--format", "{p}",
    ]);
    let tree = String::from_utf8_lossy(&out);
    let linked: BTreeSet<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(
        linked.contains("pipeline") && linked.contains("clap"),
        "{tree}"
    );
    let heavy: Vec<&&str> = HEAVY.iter().filter(|h| linked.contains(**h)).collect();
    assert!(
        heavy.is_empty(),
        "cargo xtask links {heavy:?}; the product commands that need them run the full k8s-audit binary"
    );
}
