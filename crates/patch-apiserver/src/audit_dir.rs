//! Which directories may hold our files and be mounted into the API server's pod.
//!
//! The audit directory is created on the node (root-owned, 0700), holds the policy, the
//! webhook kubeconfig, the log, backups and the state record, and is mounted read-write
//! into the pod at the same path. A system directory there would be chmodded, exposed to
//! the pod, or, for the manifests directory, read by the kubelet as pods.

/// Where kubeadm, minikube and kops keep static pod manifests.
pub const DEFAULT_MANIFEST_DIR: &str = "/etc/kubernetes/manifests";

/// Directories refused as the audit directory: the FHS top level, the system directories
/// below it that other software owns, and the ones of Kubernetes itself. Directories of
/// their own below these (`/var/lib/k8s_audit`, `/var/log/k8s-audit`) are fine.
pub const SYSTEM_DIRS: &[&str] = &[
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/etc/kubernetes",
    "/etc/kubernetes/pki",
    "/etc/ssl",
    "/etc/ssl/certs",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/lost+found",
    "/media",
    "/mnt",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/snap",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/usr/bin",
    "/usr/lib",
    "/usr/lib64",
    "/usr/libexec",
    "/usr/local",
    "/usr/local/bin",
    "/usr/local/lib",
    "/usr/local/sbin",
    "/usr/local/share",
    "/usr/sbin",
    "/usr/share",
    "/usr/src",
    "/var",
    "/var/cache",
    "/var/lib",
    "/var/lib/containerd",
    "/var/lib/docker",
    "/var/lib/etcd",
    "/var/lib/kubelet",
    "/var/lib/minikube",
    "/var/lib/rancher",
    "/var/local",
    "/var/lock",
    "/var/log",
    "/var/log/pods",
    "/var/log/containers",
    "/var/mail",
    "/var/opt",
    "/var/run",
    "/var/spool",
    "/var/tmp",
];

const EXAMPLE: &str = "a directory of its own such as /var/lib/k8s_audit";

/// Why a directory cannot be the audit directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditDirError {
    #[error("{dir:?} is not an absolute path; expected one that starts with /, {EXAMPLE}")]
    NotAbsolute { dir: String },
    #[error("{dir:?} has a character other than letters, digits and / . _ + -; expected {EXAMPLE}")]
    BadCharacter { dir: String },
    #[error("{dir:?} has {what}; expected a normalised path, {EXAMPLE}")]
    NotNormalised { dir: String, what: &'static str },
    #[error("{dir:?} is the root directory; expected {EXAMPLE}")]
    Root { dir: String },
    #[error(
        "{dir:?} is the manifests directory {manifests} or a directory above it, where the kubelet would read our files as pods; expected {EXAMPLE}"
    )]
    HoldsManifests { dir: String, manifests: String },
    #[error(
        "{dir:?} is inside the manifests directory {manifests}, where the kubelet reads pods; expected {EXAMPLE}"
    )]
    InManifests { dir: String, manifests: String },
    #[error(
        "{dir:?} is a system directory: it would be made root-only and mounted into the API server; expected {EXAMPLE}"
    )]
    SystemDir { dir: String },
}

/// Checks that `dir` can be the audit directory: absolute, of letters, digits and
/// `/ . _ + -` (our values go unquoted into YAML and shell lines), normalised (no `.`,
/// `..`, `//` or trailing `/`), not `/`, not the manifests directory (`manifest_dir`,
/// and [`DEFAULT_MANIFEST_DIR`] always), a directory above it or one inside it, and not
/// one of [`SYSTEM_DIRS`].
///
/// ```
/// use patch_apiserver::check_audit_dir;
/// assert!(check_audit_dir("/var/lib/k8s_audit", None).is_ok());
/// assert!(check_audit_dir("/var/log", None).is_err());
/// assert!(check_audit_dir("/srv/manifests", Some("/srv/manifests")).is_err());
/// ```
pub fn check_audit_dir(dir: &str, manifest_dir: Option<&str>) -> Result<(), AuditDirError> {
    let owned = || dir.to_string();
    if !dir.starts_with('/') {
        return Err(AuditDirError::NotAbsolute { dir: owned() });
    }
    if !dir
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._+-".contains(&b))
    {
        return Err(AuditDirError::BadCharacter { dir: owned() });
    }
    if dir == "/" {
        return Err(AuditDirError::Root { dir: owned() });
    }
    let what = if dir.ends_with('/') {
        Some("a trailing /")
    } else if dir.contains("//") {
        Some("an empty component (//)")
    } else if dir.split('/').any(|c| c == "..") {
        Some("a .. component")
    } else if dir.split('/').any(|c| c == ".") {
        Some("a . component")
    } else {
        None
    };
    if let Some(what) = what {
        return Err(AuditDirError::NotNormalised { dir: owned(), what });
    }
    if SYSTEM_DIRS.contains(&dir) {
        return Err(AuditDirError::SystemDir { dir: owned() });
    }
    // The default one too: a kubelet may watch it whichever manifest this run edits.
    for manifests in [Some(DEFAULT_MANIFEST_DIR), manifest_dir]
        .into_iter()
        .flatten()
    {
        let manifests = match manifests.trim_end_matches('/') {
            "" => "/",
            m => m,
        };
        let below = |a: &str, b: &str| a.strip_prefix(b).is_some_and(|r| r.starts_with('/'));
        if dir == manifests || below(manifests, dir) {
            return Err(AuditDirError::HoldsManifests {
                dir: owned(),
                manifests: manifests.to_string(),
            });
        }
        if below(dir, manifests) {
            return Err(AuditDirError::InManifests {
                dir: owned(),
                manifests: manifests.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_directories_are_accepted() {
        for dir in [
            "/var/lib/k8s_audit",
            "/var/log/k8s-audit",
            "/var/lib/rancher/audit",
            "/srv/audit",
            "/etc/kubernetes/audit",
            "/opt/k8s+audit.d",
        ] {
            assert_eq!(check_audit_dir(dir, None), Ok(()), "{dir}");
        }
        // A manifests directory elsewhere leaves its neighbours free.
        assert_eq!(check_audit_dir("/srv/audit", Some("/srv/pods")), Ok(()));
    }

    #[test]
    fn every_listed_system_directory_is_refused() {
        for dir in SYSTEM_DIRS {
            assert_eq!(
                check_audit_dir(dir, Some("/nowhere/manifests")),
                Err(AuditDirError::SystemDir {
                    dir: dir.to_string()
                }),
                "{dir}"
            );
        }
        // The ones the issue names, by name, so that the list cannot lose them.
        for dir in [
            "/etc",
            "/etc/kubernetes",
            "/var",
            "/var/lib",
            "/var/log",
            "/usr",
            "/usr/local",
            "/bin",
            "/sbin",
            "/lib",
            "/lib64",
            "/boot",
            "/dev",
            "/proc",
            "/sys",
            "/run",
            "/root",
            "/home",
            "/tmp",
            "/opt",
            "/srv",
        ] {
            assert!(check_audit_dir(dir, None).is_err(), "{dir}");
        }
    }

    #[test]
    fn the_manifests_directory_and_its_family_are_refused() {
        let m = |dir: &str, manifests: Option<&str>| check_audit_dir(dir, manifests);
        assert!(matches!(
            m("/etc/kubernetes/manifests", None),
            Err(AuditDirError::HoldsManifests { .. })
        ));
        assert!(matches!(
            m("/etc/kubernetes/manifests/audit", None),
            Err(AuditDirError::InManifests { .. })
        ));
        assert!(matches!(
            m("/srv/k8s", Some("/srv/k8s/manifests/")),
            Err(AuditDirError::HoldsManifests { .. })
        ));
        assert!(matches!(
            m("/srv/k8s/manifests", Some("/srv/k8s/manifests")),
            Err(AuditDirError::HoldsManifests { .. })
        ));
        // The default stays refused when the caller names another manifests directory.
        assert!(matches!(
            m(
                "/etc/kubernetes/manifests",
                Some("/var/lib/rancher/rke2/agent/pod-manifests")
            ),
            Err(AuditDirError::HoldsManifests { .. })
        ));
        assert!(matches!(
            m(
                "/var/lib/rancher/rke2/agent",
                Some("/var/lib/rancher/rke2/agent/pod-manifests")
            ),
            Err(AuditDirError::HoldsManifests { .. })
        ));
        // A sibling whose name merely starts the same is not inside.
        assert_eq!(m("/etc/kubernetes/manifests-audit", None), Ok(()));
    }

    #[test]
    fn malformed_paths_are_refused() {
        for (dir, want) in [
            ("/", "is the root directory"),
            ("relative/dir", "not an absolute path"),
            ("", "not an absolute path"),
            ("/var/lib/k8s_audit/", "a trailing /"),
            ("//var/lib/audit", "an empty component"),
            ("/var//lib/audit", "an empty component"),
            ("/var/lib/../log", "a .. component"),
            ("/var/./audit", "a . component"),
            ("/a b", "a character other than"),
            ("/a:b", "a character other than"),
            ("/a\nb", "a character other than"),
        ] {
            let e = check_audit_dir(dir, None).expect_err(dir);
            assert!(e.to_string().contains(want), "{dir:?}: {e}");
        }
    }
}
