//! What the kubelet stand-in takes from a static pod manifest: the audit-related flags, with
//! their paths seen through the pod's own volumes, and the pod object for the mirror pod.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Flags whose value is a file the API server reads or writes, so it must be mapped.
const PATH_FLAGS: [&str; 3] = [
    "--audit-policy-file",
    "--audit-log-path",
    "--audit-webhook-config-file",
];
/// Paths the pod does not mount live in the container's own filesystem, which is empty here,
/// as a file the node has but the pod does not mount is invisible to a real API server.
pub const CONTAINER_FS: &str = ".container-fs";

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("not a pod manifest: {0}")]
    Yaml(String),
    #[error("the pod has no containers")]
    NoContainer,
}

#[derive(Deserialize)]
struct Pod {
    metadata: Meta,
    spec: Spec,
}

#[derive(Deserialize)]
struct Meta {
    name: String,
    namespace: Option<String>,
}

#[derive(Deserialize)]
struct Spec {
    #[serde(default)]
    containers: Vec<Container>,
    #[serde(default)]
    volumes: Vec<Volume>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Container {
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    volume_mounts: Vec<Mount>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Mount {
    name: String,
    mount_path: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Volume {
    name: String,
    host_path: Option<HostPath>,
}

#[derive(Deserialize)]
struct HostPath {
    path: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

/// A parsed static pod.
#[derive(Debug, Clone)]
pub struct StaticPod {
    pub name: String,
    pub namespace: String,
    /// The audit-related flags, paths already mapped into the sandbox root.
    pub audit_flags: Vec<String>,
    /// `DirectoryOrCreate` hostPaths, mapped into the sandbox: a kubelet creates them (0755)
    /// before it starts the pod.
    pub create_dirs: Vec<PathBuf>,
    /// The whole manifest, for the mirror pod.
    pub object: serde_json::Value,
}

pub fn parse(bytes: &[u8], root: &Path) -> Result<StaticPod, ManifestError> {
    let pod: Pod =
        serde_norway::from_slice(bytes).map_err(|e| ManifestError::Yaml(e.to_string()))?;
    let object: serde_json::Value =
        serde_norway::from_slice(bytes).map_err(|e| ManifestError::Yaml(e.to_string()))?;
    let container = pod
        .spec
        .containers
        .iter()
        .find(|c| {
            c.command
                .iter()
                .chain(&c.args)
                .any(|w| w.contains("kube-apiserver"))
        })
        .or(pod.spec.containers.first())
        .ok_or(ManifestError::NoContainer)?;
    // Splitting on whitespace also reads kops' `/bin/sh -c "... kube-apiserver --a=b ..."` form.
    let words = container
        .command
        .iter()
        .chain(&container.args)
        .flat_map(|w| w.split_whitespace());
    let mut audit_flags = Vec::new();
    for word in words {
        let (flag, value) = match word.split_once('=') {
            Some((flag, value)) => (flag, Some(value)),
            None => (word, None),
        };
        match (flag, value) {
            (flag, Some(value)) if PATH_FLAGS.contains(&flag) && value != "-" => {
                let mapped = map_path(value, &container.volume_mounts, &pod.spec.volumes, root);
                audit_flags.push(format!("{flag}={}", mapped.display()));
            }
            (flag, _) if flag.starts_with("--audit-") => audit_flags.push(word.to_owned()),
            ("--feature-gates", Some(value)) => keep_entries(&mut audit_flags, flag, value, |e| {
                e.starts_with("DynamicAuditing=")
            }),
            ("--runtime-config", Some(value)) => keep_entries(&mut audit_flags, flag, value, |e| {
                e.starts_with("auditregistration.k8s.io")
            }),
            _ => {}
        }
    }
    let create_dirs = pod
        .spec
        .volumes
        .iter()
        .filter_map(|v| v.host_path.as_ref())
        .filter(|h| h.kind.as_deref() == Some("DirectoryOrCreate"))
        .map(|h| root.join(h.path.trim_start_matches('/')))
        .collect();
    Ok(StaticPod {
        name: pod.metadata.name,
        namespace: pod
            .metadata
            .namespace
            .unwrap_or_else(|| "default".to_owned()),
        audit_flags,
        create_dirs,
        object,
    })
}

/// Only the audit entries of a list flag: the manifest's other gates are for another version.
fn keep_entries(out: &mut Vec<String>, flag: &str, value: &str, ours: impl Fn(&str) -> bool) {
    let entries: Vec<&str> = value.split(',').filter(|e| ours(e)).collect();
    if !entries.is_empty() {
        out.push(format!("{flag}={}", entries.join(",")));
    }
}

/// Where `path`, as the container sees it, lives in the sandbox: through the volume mount with
/// the longest matching mountPath and that volume's hostPath, else in the container's own fs.
fn map_path(path: &str, mounts: &[Mount], volumes: &[Volume], root: &Path) -> PathBuf {
    let best = mounts
        .iter()
        .filter_map(|m| {
            let base = m.mount_path.trim_end_matches('/');
            let rest = path.strip_prefix(base)?;
            (rest.is_empty() || rest.starts_with('/')).then_some((m, base.len(), rest))
        })
        .max_by_key(|(_, len, _)| *len);
    let host = best.and_then(|(mount, _, rest)| {
        let volume = volumes.iter().find(|v| v.name == mount.name)?;
        Some(format!(
            "{}{rest}",
            volume.host_path.as_ref()?.path.trim_end_matches('/')
        ))
    });
    match host {
        Some(host) => root.join(host.trim_start_matches('/')),
        None => root.join(CONTAINER_FS).join(path.trim_start_matches('/')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "apiVersion: v1
kind: Pod
metadata:
  name: kube-apiserver
  namespace: kube-system
spec:
  containers:
  - name: kube-apiserver
    command:
    - kube-apiserver
    - --secure-port=8443
    - --audit-policy-file=/etc/audit/policy.yaml
    - --audit-log-path=/var/log/audit/audit.log
    - --audit-webhook-config-file=/etc/unmounted/webhook.yaml
    - --audit-webhook-batch-max-wait=5s
    - --audit-dynamic-configuration
    - --feature-gates=RotateKubeletServerCertificate=true,DynamicAuditing=true
    - --runtime-config=api/all=true,auditregistration.k8s.io/v1alpha1=true
    volumeMounts:
    - {name: policy, mountPath: /etc/audit}
    - {name: logs, mountPath: /var/log/audit/}
    - {name: all-etc, mountPath: /etc}
  volumes:
  - {name: policy, hostPath: {path: /var/lib/k8s_audit}}
  - {name: logs, hostPath: {path: /var/log/kubernetes/, type: DirectoryOrCreate}}
";

    #[test]
    fn audit_flags_are_kept_and_paths_follow_the_volumes() {
        let pod = parse(MANIFEST.as_bytes(), Path::new("/sandbox")).expect("valid manifest");
        assert_eq!(
            (pod.name.as_str(), pod.namespace.as_str()),
            ("kube-apiserver", "kube-system")
        );
        assert_eq!(
            pod.audit_flags,
            [
                "--audit-policy-file=/sandbox/var/lib/k8s_audit/policy.yaml",
                "--audit-log-path=/sandbox/var/log/kubernetes/audit.log",
                // /etc is mounted, but its volume does not exist: the container's own fs.
                "--audit-webhook-config-file=/sandbox/.container-fs/etc/unmounted/webhook.yaml",
                "--audit-webhook-batch-max-wait=5s",
                "--audit-dynamic-configuration",
                "--feature-gates=DynamicAuditing=true",
                "--runtime-config=auditregistration.k8s.io/v1alpha1=true",
            ]
        );
        assert_eq!(
            pod.create_dirs,
            [Path::new("/sandbox/var/log/kubernetes/")],
            "only the DirectoryOrCreate hostPath"
        );
        assert_eq!(
            pod.object["spec"]["containers"][0]["command"][1],
            "--secure-port=8443"
        );
    }

    #[test]
    fn kops_shell_form_is_read() {
        let kops = "metadata: {name: kube-apiserver}\nspec:\n  containers:\n  - command:\n    - /bin/sh\n    - -c\n    - >-\n      mkfifo /tmp/pipe; exec /usr/local/bin/kube-apiserver --allow-privileged=true\n      --audit-log-maxage=10 > /tmp/pipe 2>&1\n";
        let pod = parse(kops.as_bytes(), Path::new("/r")).expect("valid manifest");
        assert_eq!(pod.audit_flags, ["--audit-log-maxage=10"]);
        assert_eq!(pod.namespace, "default");
    }

    #[test]
    fn a_prefix_that_is_not_a_path_component_does_not_match() {
        let mounts = [Mount {
            name: "v".into(),
            mount_path: "/var/lib/k8s".into(),
        }];
        let volumes = [Volume {
            name: "v".into(),
            host_path: Some(HostPath {
                path: "/host".into(),
                kind: None,
            }),
        }];
        let root = Path::new("/r");
        assert_eq!(
            map_path("/var/lib/k8s_audit/p", &mounts, &volumes, root),
            Path::new("/r/.container-fs/var/lib/k8s_audit/p")
        );
        assert_eq!(
            map_path("/var/lib/k8s/p", &mounts, &volumes, root),
            Path::new("/r/host/p")
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(matches!(
            parse(b"{{{", Path::new("/")),
            Err(ManifestError::Yaml(_))
        ));
        assert!(matches!(
            parse(b"metadata: {name: x}\nspec: {}\n", Path::new("/")),
            Err(ManifestError::NoContainer)
        ));
    }
}
