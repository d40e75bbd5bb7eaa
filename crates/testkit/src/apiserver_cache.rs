//! Where the real kube-apiserver is cached. `cargo xtask apiserver build` writes there and the
//! harness reads there; xtask includes this file by path (it may not depend on testkit), so the
//! two cannot disagree. Dependency-free on purpose.

use std::path::PathBuf;

/// The Debian upstream version (without the revision) of the `kubernetes` source package: it
/// keys the binary cache and names the directory `apt-get source` unpacks.
pub const DEBIAN_VERSION: &str = "1.20.5+really1.20.2";

/// `$XDG_CACHE_HOME` (or `~/.cache`) `/k8s-audit-tools/kube-apiserver-<version>/kube-apiserver`;
/// `None` when neither variable is set.
pub fn binary_path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache"),
    };
    Some(
        base.join("k8s-audit-tools")
            .join(format!("kube-apiserver-{DEBIAN_VERSION}"))
            .join("kube-apiserver"),
    )
}

/// The kubelet built from the same tree, cached beside the API server.
pub fn kubelet_path() -> Option<PathBuf> {
    Some(binary_path()?.with_file_name("kubelet"))
}

/// `kubeadm` built from the same tree, cached beside the API server: the tests let the real
/// kubeadm regenerate the API server's manifest from a ClusterConfiguration.
pub fn kubeadm_path() -> Option<PathBuf> {
    Some(binary_path()?.with_file_name("kubeadm"))
}

/// The unpacked source tree the binaries are built from (kept after the build).
// The build finds the tree through `apt-get source`'s own naming; only the node harnesses call this.
#[allow(dead_code)]
pub fn source_tree() -> Option<PathBuf> {
    Some(
        binary_path()?
            .with_file_name("work")
            .join(format!("kubernetes-{DEBIAN_VERSION}")),
    )
}
