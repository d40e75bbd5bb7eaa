//! The files our flags name: one list that says which files a mode needs, where they go,
//! and which of them the tool must put on the node.

use std::fmt;

use crate::PatchOptions;
use crate::flags::{LOG_PATH, POLICY_FILE, WEBHOOK_CONFIG};

/// A file in the audit directory that one of our flags names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AuditFile {
    /// `audit-policy.yaml`, named by `--audit-policy-file` (static, dynamic+log).
    Policy,
    /// `webhook-config.yaml`, the webhook kubeconfig, named by `--audit-webhook-config-file`
    /// (static).
    WebhookConfig,
    /// `audit.log`, named by `--audit-log-path` (static, dynamic+log).
    Log,
}

impl AuditFile {
    /// Every file, in the order [`audit_files`] gives them.
    pub const ALL: [AuditFile; 3] = [AuditFile::Log, AuditFile::Policy, AuditFile::WebhookConfig];

    /// The name in the audit directory.
    pub fn file_name(self) -> &'static str {
        match self {
            AuditFile::Policy => "audit-policy.yaml",
            AuditFile::WebhookConfig => "webhook-config.yaml",
            AuditFile::Log => "audit.log",
        }
    }

    /// The path on the node (and, mounted at the same path, in the pod).
    pub fn path(self, opts: &PatchOptions) -> String {
        format!("{}/{}", opts.dir().trim_end_matches('/'), self.file_name())
    }

    /// The API-server flag that names the file.
    pub fn flag(self) -> &'static str {
        match self {
            AuditFile::Policy => POLICY_FILE,
            AuditFile::WebhookConfig => WEBHOOK_CONFIG,
            AuditFile::Log => LOG_PATH,
        }
    }

    /// Whether the tool must put the file on the node before the API server starts (it
    /// does not start without it). The API server writes the log itself.
    pub fn uploaded(self) -> bool {
        !matches!(self, AuditFile::Log)
    }

    /// Whether `mode` writes the flag that names this file.
    pub fn used_by(self, mode: crate::Mode) -> bool {
        match self {
            AuditFile::Policy | AuditFile::Log => mode.logs(),
            AuditFile::WebhookConfig => mode.webhook(),
        }
    }
}

impl fmt::Display for AuditFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file_name())
    }
}

/// The files the flags of `opts.mode` name, in the order [`AuditFile::ALL`] has them: what
/// must be mounted into the pod, and, where [`AuditFile::uploaded`], put on the node.
pub fn audit_files(opts: &PatchOptions) -> Vec<AuditFile> {
    AuditFile::ALL
        .into_iter()
        .filter(|f| f.used_by(opts.mode))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Mode, audit_flags};

    #[test]
    fn each_mode_needs_the_files_its_flags_name() {
        let files = |mode| audit_files(&PatchOptions::new(mode));
        assert_eq!(
            files(Mode::Static),
            [AuditFile::Log, AuditFile::Policy, AuditFile::WebhookConfig]
        );
        assert_eq!(files(Mode::DynamicLog), [AuditFile::Log, AuditFile::Policy]);
        assert_eq!(files(Mode::Dynamic), []);
        for mode in Mode::ALL {
            let mut o = PatchOptions::new(mode);
            o.audit_dir = "/srv/k8s-audit".into();
            let flags = audit_flags(&o, None);
            for f in AuditFile::ALL {
                let written = format!("{}={}", f.flag(), f.path(&o));
                assert_eq!(flags.contains(&written), f.used_by(mode), "{mode} {f}");
            }
            assert_eq!(
                crate::needed_files(&o),
                audit_files(&o)
                    .into_iter()
                    .filter(|f| f.uploaded())
                    .map(|f| f.path(&o))
                    .collect::<Vec<_>>()
            );
        }
        assert_eq!(
            AuditFile::Policy.path(&PatchOptions::new(Mode::Static)),
            "/var/lib/k8s_audit/audit-policy.yaml"
        );
    }
}
