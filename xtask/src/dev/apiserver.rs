//! `cargo xtask apiserver build`: a real kube-apiserver v1.20.2 from Debian's source package,
//! and the kubelet and kubeadm of the same tree.
//!
//! Only Debian's archive is used: the `kubernetes` source package carries the whole tree with
//! `vendor/`, so the build works offline once `apt-get source` has run. The binary is cached
//! per machine, keyed by the Debian version, because building it costs minutes of both cores.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use xshell::{Shell, cmd};

// Shared by path with the test harness, which xtask may not depend on (see the file).
#[path = "../../../crates/testkit/src/apiserver_cache.rs"]
pub mod apiserver_cache;
use apiserver_cache::DEBIAN_VERSION;

/// What the tree really is, so `/version` reports it (Debian's version string is misleading).
const GIT_VERSION: &str = "v1.20.2";
const GIT_MAJOR: &str = "1";
const GIT_MINOR: &str = "20";
/// Where apt reads the deb-src stanzas we add; our own file so we never rewrite the system's.
const DEB_SRC_FILE: &str = "/etc/apt/sources.list.d/k8s-audit-tools-src.sources";
const SYSTEM_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";
/// Packages the build runs: `apt-get source` (dpkg-dev), Go 1.19, make and the tools the
/// generators' shell scripts call.
const BUILD_PACKAGES: &[&str] = &[
    "dpkg-dev",
    "golang-go",
    "make",
    "rsync",
    "git",
    "golang-github-modern-go-reflect2-dev",
];
/// Kubernetes 1.20 vendors reflect2 v1.0.1, whose map iteration breaks under Go >= 1.18: the
/// server starts, then dies with SIGSEGV in `mapiternext` as soon as json-iterator encodes a map
/// (the first audit event with annotations). Debian's reflect2 1.0.2 carries the upstream fix.
const REFLECT2_FIXED: &str = "/usr/share/gocode/src/github.com/modern-go/reflect2";
const REFLECT2_VENDORED: &str = "vendor/github.com/modern-go/reflect2";

#[derive(Subcommand)]
pub enum Apiserver {
    /// Build (once per machine) and print the path of the kube-apiserver binary (the kubelet
    /// and kubeadm are built beside it).
    Build,
}

impl Apiserver {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        match self {
            Apiserver::Build => {
                let binary = build(sh)?;
                println!("{}", binary.display());
                Ok(())
            }
        }
    }
}

/// Builds kube-apiserver, the kubelet and kubeadm from the same tree, each when it is not
/// cached yet.
pub fn build(sh: &Shell) -> anyhow::Result<PathBuf> {
    // The same path the test harness looks in, so the two cannot disagree.
    let binary = apiserver_cache::binary_path()
        .context("neither XDG_CACHE_HOME nor HOME is set: no place for the kube-apiserver cache")?;
    let entry = binary
        .parent()
        .context("the cache path has a parent")?
        .to_owned();
    let kubelet = apiserver_cache::kubelet_path().context("no place for the kubelet cache")?;
    let kubeadm = apiserver_cache::kubeadm_path().context("no place for the kubeadm cache")?;
    if binary.is_file() && kubelet.is_file() && kubeadm.is_file() {
        eprintln!("apiserver: cached, nothing to build");
        return Ok(binary);
    }
    preflight(sh, &binary)?;
    let started = std::time::Instant::now();
    ensure_deb_src(sh)?;
    super::debian::install_missing(sh, BUILD_PACKAGES, "building kube-apiserver")?;
    let work = entry.join("work");
    let tree = fetch_source(sh, &work)?;
    use_fixed_reflect2(sh, &tree)?;
    if !binary.is_file() {
        compile(sh, &work, &tree, &binary, "./cmd/kube-apiserver")?;
        eprintln!("apiserver: built in {:.0?}", started.elapsed());
    }
    if !kubelet.is_file() {
        let started = std::time::Instant::now();
        compile(sh, &work, &tree, &kubelet, "./cmd/kubelet")?;
        eprintln!("apiserver: kubelet built in {:.0?}", started.elapsed());
    }
    if !kubeadm.is_file() {
        let started = std::time::Instant::now();
        compile(sh, &work, &tree, &kubeadm, "./cmd/kubeadm")?;
        eprintln!("apiserver: kubeadm built in {:.0?}", started.elapsed());
    }
    Ok(binary)
}

fn preflight(sh: &Shell, binary: &Path) -> anyhow::Result<()> {
    if cmd!(sh, "apt-get --version")
        .quiet()
        .ignore_stdout()
        .run()
        .is_err()
    {
        bail!(
            "apt-get is not available: building kube-apiserver needs a Debian (bookworm) machine, \
             because the source comes from Debian's `kubernetes` source package"
        );
    }
    if !super::debian::is_root(sh)? {
        // sudo changes HOME; pointing XDG_CACHE_HOME at the caller's cache keeps the binary
        // where the tests of the calling user look for it.
        let cache = binary.ancestors().nth(3).unwrap_or(binary);
        bail!(
            "building kube-apiserver needs root for apt (adding a deb-src entry, installing \
             dpkg-dev and golang-go); run it once as root, e.g. \
             `sudo env XDG_CACHE_HOME={} cargo xtask apiserver build`; the binary is then cached",
            cache.display()
        );
    }
    Ok(())
}

/// Adds deb-src stanzas mirroring the system's bookworm `deb` stanzas, then refreshes apt.
fn ensure_deb_src(sh: &Shell) -> anyhow::Result<()> {
    if Path::new(DEB_SRC_FILE).is_file() {
        return Ok(());
    }
    let system = sh
        .read_file(SYSTEM_SOURCES)
        .with_context(|| format!("reading {SYSTEM_SOURCES} to mirror its entries as deb-src"))?;
    let src = deb_src_stanzas(&system);
    if src.is_empty() {
        bail!("{SYSTEM_SOURCES} has no `Types: deb` entry for bookworm to mirror as deb-src");
    }
    eprintln!("apiserver: adding deb-src entries in {DEB_SRC_FILE}");
    let tmp = format!("{DEB_SRC_FILE}.tmp");
    sh.write_file(&tmp, src)?;
    std::fs::rename(&tmp, DEB_SRC_FILE).with_context(|| format!("renaming {tmp}"))?;
    cmd!(sh, "apt-get update -qq")
        .run()
        .context("apt-get update")?;
    Ok(())
}

/// For every deb822 stanza of `Types: deb` whose suites include bookworm, the same stanza as
/// `Types: deb-src`, keeping URIs, Suites, Components and Signed-By.
fn deb_src_stanzas(sources: &str) -> String {
    let mut out = String::new();
    for stanza in sources.split("\n\n") {
        let fields: Vec<(&str, &str)> = stanza
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let get = |key: &str| {
            fields
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| *v)
        };
        let is_deb = get("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb"));
        let bookworm =
            get("Suites").is_some_and(|s| s.split_whitespace().any(|s| s.starts_with("bookworm")));
        if !is_deb || !bookworm {
            continue;
        }
        out.push_str("Types: deb-src\n");
        for key in ["URIs", "Suites", "Components", "Signed-By"] {
            if let Some(value) = get(key) {
                out.push_str(&format!("{key}: {value}\n"));
            }
        }
        out.push('\n');
    }
    out
}

/// `apt-get source kubernetes` into `work`, once; returns the unpacked tree.
fn fetch_source(sh: &Shell, work: &Path) -> anyhow::Result<PathBuf> {
    let tree = work.join(format!("kubernetes-{DEBIAN_VERSION}"));
    if tree.join("cmd/kube-apiserver").is_dir() {
        return Ok(tree);
    }
    sh.create_dir(work)?;
    let _dir = sh.push_dir(work);
    eprintln!("apiserver: apt-get source kubernetes");
    cmd!(sh, "apt-get source -qq kubernetes")
        .run()
        .context("apt-get source kubernetes (is the deb-src entry reachable?)")?;
    if !tree.join("cmd/kube-apiserver").is_dir() {
        bail!("apt-get source did not unpack {}", tree.display());
    }
    Ok(tree)
}

fn use_fixed_reflect2(sh: &Shell, tree: &Path) -> anyhow::Result<()> {
    let vendored = tree.join(REFLECT2_VENDORED);
    let link = sh
        .read_file(vendored.join("unsafe_link.go"))
        .unwrap_or_default();
    // v1.0.1's signature; 1.0.2 moved mapiterinit into go_above_118.go with an out-parameter.
    if !link.contains("m unsafe.Pointer) *hiter") {
        return Ok(());
    }
    eprintln!("apiserver: replacing vendored reflect2 v1.0.1 with Debian's fixed 1.0.2");
    sh.remove_path(&vendored)?;
    cmd!(sh, "cp -r {REFLECT2_FIXED} {vendored}")
        .run()
        .context("copying Debian's reflect2")?;
    Ok(())
}

/// GOPATH-mode build as Debian's rules do it: module mode would try the network.
fn compile(
    sh: &Shell,
    work: &Path,
    tree: &Path,
    binary: &Path,
    package: &str,
) -> anyhow::Result<()> {
    let gopath = work.join("gopath");
    let link = gopath.join("src/k8s.io/kubernetes");
    if !link.exists() {
        sh.create_dir(gopath.join("src/k8s.io"))?;
        std::os::unix::fs::symlink(tree, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    let _env = [
        sh.push_env("GOPATH", &gopath),
        sh.push_env("GO111MODULE", "off"),
        sh.push_env("CGO_ENABLED", "0"),
        sh.push_env("GOCACHE", work.join("go-build")),
    ];
    // Without the one generated file the tarball lacks, the link fails with
    // `undefined: openapi.GetOpenAPIDefinitions` after minutes of work.
    // Go derives the import path from the working directory; $PWD keeps the symlinked
    // GOPATH location, otherwise it resolves the real path and ignores vendor/.
    let _dir = sh.push_dir(&link);
    let _pwd = sh.push_env("PWD", &link);
    if !link
        .join("pkg/generated/openapi/zz_generated.openapi.go")
        .is_file()
    {
        eprintln!("apiserver: make gen_openapi");
        cmd!(sh, "make gen_openapi")
            .run()
            .context("make gen_openapi")?;
    }
    eprintln!("apiserver: go build {package} (minutes on 2 cores)");
    let ldflags = version_ldflags();
    // A name of this process's own: two builds at once must not rename each other's output.
    let tmp = binary.with_extension(format!("tmp-{}", std::process::id()));
    cmd!(
        sh,
        "go build -tags selinux,notest -ldflags {ldflags} -o {tmp} {package}"
    )
    .run()
    .with_context(|| format!("go build {package}"))?;
    std::fs::rename(&tmp, binary).with_context(|| format!("renaming {}", tmp.display()))?;
    Ok(())
}

/// The `-X` flags hack/lib/version.sh sets, for both packages that serve `/version`.
fn version_ldflags() -> String {
    let vars = [
        ("gitVersion", GIT_VERSION),
        ("gitMajor", GIT_MAJOR),
        ("gitMinor", GIT_MINOR),
        ("gitTreeState", "archive"),
        // Fixed, so that rebuilding the same source gives the same binary.
        ("buildDate", "1970-01-01T00:00:00Z"),
    ];
    let mut flags = Vec::new();
    for pkg in ["client-go/pkg/version", "component-base/version"] {
        for (key, value) in vars {
            flags.push(format!(
                "-X k8s.io/kubernetes/vendor/k8s.io/{pkg}.{key}={value}"
            ));
        }
    }
    flags.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb_src_mirrors_only_bookworm_deb_stanzas() {
        let sources = "Types: deb\n# comment: ignored\nURIs: http://deb.debian.org/debian\n\
                       Suites: bookworm bookworm-updates\nComponents: main\n\
                       Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
                       Types: deb\nURIs: http://example.invalid/other\nSuites: trixie\nComponents: main\n\n\
                       Types: deb-src\nURIs: http://x\nSuites: bookworm\nComponents: main\n";
        assert_eq!(
            deb_src_stanzas(sources),
            "Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n\
             Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        );
    }

    #[test]
    fn ldflags_set_version_in_both_packages() {
        let flags = version_ldflags();
        assert!(flags.contains(
            "-X k8s.io/kubernetes/vendor/k8s.io/component-base/version.gitVersion=v1.20.2"
        ));
        assert!(
            flags.contains("-X k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version.gitMajor=1")
        );
    }
}
