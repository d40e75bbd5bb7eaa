//! The durable form of our settings for the managers whose configuration this tool does not
//! edit: they regenerate the manifest (minikube at every start, kops nodeup on every update,
//! RKE2 at every start) and erase a manifest edit. The text is for the user to paste.
//!
//! Minikube can only add flags (`--extra-config`), not mounts, so its files go where kubeadm
//! already mounts a directory and its log goes to the API server's output. kops mounts the
//! log's directory (writable) and the policy's directory (read-only) as two volumes, which
//! must not be the same path, so the files go to a directory kops mounts anyway.

use std::fmt::Write as _;

use crate::flags::{self, FlagSpec, Want};
use crate::{AuditFile, PatchOptions};

/// A manager whose own configuration makes the audit settings survive it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DurableTarget {
    /// `minikube start --extra-config=apiserver.…`, files through minikube's file sync.
    Minikube,
    /// The kops cluster spec: `kubeAPIServer` fields and `fileAssets`.
    Kops,
    /// `/etc/rancher/rke2/config.yaml`: `kube-apiserver-arg`, `audit-policy-file`.
    Rke2,
}

/// Where minikube's API server can read our files: kubeadm mounts `/etc/ssl/certs` into it,
/// and `--extra-config` cannot add a mount.
const MINIKUBE_DIR: &str = "/etc/ssl/certs/k8s-audit";
/// kops mounts it into the API server already (`/srv/kubernetes` before 1.22), so no second
/// mount of the log's directory collides with the one kops adds for the policy's.
const KOPS_DIR: &str = "/srv/kubernetes/kube-apiserver";
const HEREDOC: &str = "K8S_AUDIT_EOF";

fn value(spec: &FlagSpec) -> String {
    match &spec.want {
        Want::Value(v) => v.clone(),
        Want::Switch => "true".into(),
        Want::Entry { key, value } => format!("{key}={value}"),
    }
}

/// The flags with the files' paths under `dir` instead of the audit directory.
fn flags_with_files_in(opts: &PatchOptions, dir: &str) -> Vec<(&'static str, String)> {
    flags::specs(opts, None)
        .iter()
        .map(|spec| {
            let file = AuditFile::ALL
                .into_iter()
                .find(|f| f.flag() == spec.name && f.uploaded());
            let v = match file {
                Some(f) => format!("{dir}/{}", f.file_name()),
                None => value(spec),
            };
            (spec.name.trim_start_matches('-'), v)
        })
        .collect()
}

/// The text that makes `opts`' audit settings durable under `target`, ready to paste. The
/// files are those `enable` put in the audit directory on the node; `contents` gives their
/// text, which kops's `fileAssets` carry inline and minikube's file sync takes from a
/// here-document. A file left out is, for minikube, read from the node with `minikube ssh`;
/// for kops a line in its `content` says what to paste there. RKE2 reads them in place.
pub fn durable_settings(
    target: DurableTarget,
    opts: &PatchOptions,
    contents: &[(AuditFile, &str)],
) -> String {
    match target {
        DurableTarget::Minikube => minikube(opts, contents),
        DurableTarget::Kops => kops(opts, contents),
        DurableTarget::Rke2 => rke2(opts),
    }
}

fn content_of<'a>(contents: &[(AuditFile, &'a str)], f: AuditFile) -> Option<&'a str> {
    contents
        .iter()
        .find(|(c, t)| *c == f && !t.trim().is_empty())
        .map(|(_, t)| *t)
}

fn uploaded(opts: &PatchOptions) -> Vec<AuditFile> {
    crate::audit_files(opts)
        .into_iter()
        .filter(|f| f.uploaded())
        .collect()
}

fn minikube(opts: &PatchOptions, contents: &[(AuditFile, &str)]) -> String {
    let mut out = String::from(
        "# minikube regenerates the API server's manifest at every `minikube start`.\n\
         # File sync: at start, minikube copies ~/.minikube/files/<path> to <path> on the node.\n\
         # The API server reads /etc/ssl/certs (kubeadm mounts it, read-only); --extra-config\n\
         # cannot add a mount, so the audit log goes to the API server's output\n\
         # (`kubectl -n kube-system logs kube-apiserver-minikube`).\n",
    );
    let _ = writeln!(out, "mkdir -p ~/.minikube/files{MINIKUBE_DIR}");
    for f in uploaded(opts) {
        let target = format!("~/.minikube/files{MINIKUBE_DIR}/{}", f.file_name());
        match content_of(contents, f) {
            Some(text) => {
                // A delimiter no line of the file equals, so the here-document ends where it should.
                let mut end = HEREDOC.to_string();
                while text.lines().any(|l| l == end) {
                    end.push('_');
                }
                let nl = if text.ends_with('\n') { "" } else { "\n" };
                let _ = write!(out, "cat > {target} <<'{end}'\n{text}{nl}{end}\n");
            }
            None => {
                // `minikube ssh` may run the command on a terminal, which ends lines with CRLF.
                let _ = writeln!(
                    out,
                    "minikube ssh -- sudo cat {} | tr -d '\\r' > {target}",
                    f.path(opts)
                );
            }
        }
    }
    out.push_str("minikube start");
    for (name, v) in flags_with_files_in(opts, MINIKUBE_DIR) {
        let v = if name == "audit-log-path" {
            "-".to_string()
        } else if flags::ROTATION_FLAGS.contains(&format!("--{name}").as_str()) {
            // No file, nothing to rotate.
            continue;
        } else {
            v
        };
        let _ = write!(out, " \\\n  --extra-config=apiserver.{name}={v}");
    }
    out.push('\n');
    out
}

/// kops's `kubeAPIServer` field for a flag: `--audit-log-path` is `auditLogPath`.
fn kops_field(flag: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in flag.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    // kops spells these two in the plural.
    out.replace("Maxbackup", "MaxBackups")
        .replace("Maxage", "MaxAge")
        .replace("Maxsize", "MaxSize")
}

/// A YAML double-quoted string.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn kops(opts: &PatchOptions, contents: &[(AuditFile, &str)]) -> String {
    let mut out = String::from(
        "# kops nodeup rewrites the API server's manifest on every update. Put this in the\n\
         # cluster spec (`kops edit cluster`, merging into existing keys), then\n\
         # `kops update cluster --yes` and `kops rolling-update cluster --yes`.\n\
         # The files go to /srv/kubernetes/kube-apiserver, which kops mounts already; the\n\
         # log's directory gets its own writable mount from kops.\n\
         spec:\n",
    );
    let files = uploaded(opts);
    if !files.is_empty() {
        out.push_str("  fileAssets:\n");
    }
    for f in files {
        let _ = writeln!(
            out,
            "  - name: k8s-audit-{}\n    path: {KOPS_DIR}/{}\n    roles: [ControlPlane] # [Master] before kops 1.26\n    content: |",
            f.file_name().trim_end_matches(".yaml"),
            f.file_name()
        );
        match content_of(contents, f) {
            Some(text) => {
                for line in text.lines() {
                    if line.is_empty() {
                        out.push('\n');
                    } else {
                        let _ = writeln!(out, "      {line}");
                    }
                }
            }
            _ => {
                let _ = writeln!(out, "      # the contents of {} on the node", f.path(opts));
            }
        }
    }
    out.push_str("  kubeAPIServer:\n");
    let mut feature_gates = Vec::new();
    let mut runtime_config = Vec::new();
    for (name, v) in flags_with_files_in(opts, KOPS_DIR) {
        match name {
            "audit-log-path" => {
                let _ = writeln!(out, "    auditLogPath: {}", AuditFile::Log.path(opts));
            }
            "feature-gates" => feature_gates.push(v),
            "runtime-config" => runtime_config.push(v),
            "audit-dynamic-configuration" => out.push_str("    auditDynamicConfiguration: true\n"),
            _ => {
                let _ = writeln!(out, "    {}: {v}", kops_field(name));
            }
        }
    }
    for (field, entries) in [
        ("featureGates", feature_gates),
        ("runtimeConfig", runtime_config),
    ] {
        if entries.is_empty() {
            continue;
        }
        let _ = writeln!(out, "    {field}:");
        for e in entries {
            let (k, v) = e.split_once('=').unwrap_or((&e, "true"));
            let _ = writeln!(out, "      {}: {}", quoted(k), quoted(v));
        }
    }
    out
}

fn rke2(opts: &PatchOptions) -> String {
    let mut out = String::from(
        "# RKE2 regenerates the API server's manifest at every start. Put this in\n\
         # /etc/rancher/rke2/config.yaml on every server node (merging into existing lists),\n\
         # then `systemctl restart rke2-server`. The files stay where enable put them.\n",
    );
    let mut args = Vec::new();
    for spec in flags::specs(opts, None) {
        if spec.name == flags::POLICY_FILE {
            let _ = writeln!(out, "audit-policy-file: {}", AuditFile::Policy.path(opts));
        } else {
            args.push(format!(
                "{}={}",
                spec.name.trim_start_matches('-'),
                value(&spec)
            ));
        }
    }
    if !args.is_empty() {
        out.push_str("kube-apiserver-arg:\n");
        for a in args {
            let _ = writeln!(out, "  - {}", quoted(&a));
        }
    }
    if opts.mode.logs() || opts.mode.webhook() {
        let dir = opts.dir();
        let _ = writeln!(
            out,
            "kube-apiserver-extra-mount:\n  - {}",
            quoted(&format!("{dir}:{dir}"))
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Mode, Rotation};

    #[test]
    fn kops_fields_are_its_spelling() {
        assert_eq!(kops_field("audit-log-path"), "auditLogPath");
        assert_eq!(
            kops_field("audit-webhook-config-file"),
            "auditWebhookConfigFile"
        );
        assert_eq!(
            kops_field("audit-webhook-batch-max-wait"),
            "auditWebhookBatchMaxWait"
        );
        assert_eq!(kops_field("audit-log-maxbackup"), "auditLogMaxBackups");
        assert_eq!(kops_field("audit-log-maxage"), "auditLogMaxAge");
        assert_eq!(kops_field("audit-log-maxsize"), "auditLogMaxSize");
    }

    /// The YAML ones parse, and say every flag of every mode.
    #[test]
    fn every_text_is_valid_and_complete() {
        for mode in Mode::ALL {
            let mut o = PatchOptions::new(mode);
            o.rotation = Some(Rotation::CIS);
            for target in [DurableTarget::Kops, DurableTarget::Rke2] {
                let text = durable_settings(target, &o, &[(AuditFile::Policy, "a: 1\n\nb: 2\n")]);
                let v: serde_norway::Value = serde_norway::from_str(&text)
                    .unwrap_or_else(|e| panic!("{target:?} {mode}: {e}\n{text}"));
                assert!(v.is_mapping(), "{text}");
            }
            let m = durable_settings(DurableTarget::Minikube, &o, &[]);
            for spec in flags::specs(&o, None) {
                let name = spec.name.trim_start_matches('-');
                let rotation = flags::ROTATION_FLAGS.contains(&spec.name);
                assert_eq!(
                    m.contains(&format!("--extra-config=apiserver.{name}=")),
                    !rotation,
                    "{name}\n{m}"
                );
            }
        }
    }
}
