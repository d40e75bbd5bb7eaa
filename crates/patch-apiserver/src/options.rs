//! What the caller asks for: the mode and the values our flags carry.

use std::fmt;
use std::str::FromStr;

use crate::{KubeVersion, PatchError, Pos};

/// Where audit events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Log file plus a webhook backend configured by a kubeconfig file (1.8+).
    Static,
    /// AuditSink objects configure webhooks at run time (alpha in 1.13–1.18 only).
    Dynamic,
    /// Dynamic, plus the log backend.
    DynamicLog,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Static, Mode::Dynamic, Mode::DynamicLog];

    /// Whether the mode writes the log and policy flags (and so needs the volume).
    pub fn logs(self) -> bool {
        matches!(self, Mode::Static | Mode::DynamicLog)
    }
    pub fn webhook(self) -> bool {
        self == Mode::Static
    }
    pub fn dynamic(self) -> bool {
        matches!(self, Mode::Dynamic | Mode::DynamicLog)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid mode {0:?}: expected static, dynamic or dynamic+log")]
pub struct ParseModeError(pub String);

impl FromStr for Mode {
    type Err = ParseModeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "static" => Ok(Mode::Static),
            "dynamic" => Ok(Mode::Dynamic),
            "dynamic+log" => Ok(Mode::DynamicLog),
            _ => Err(ParseModeError(s.to_string())),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Static => "static",
            Mode::Dynamic => "dynamic",
            Mode::DynamicLog => "dynamic+log",
        })
    }
}

/// Audit log rotation (`--audit-log-maxage/maxbackup/maxsize`); `None` fields are left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rotation {
    pub max_age_days: Option<u32>,
    pub max_backups: Option<u32>,
    pub max_size_mb: Option<u32>,
}

impl Rotation {
    /// The CIS Kubernetes benchmark values (1.2.19–1.2.21).
    pub const CIS: Rotation = Rotation {
        max_age_days: Some(30),
        max_backups: Some(10),
        max_size_mb: Some(100),
    };
}

pub const DEFAULT_AUDIT_DIR: &str = "/var/lib/k8s_audit";
pub const DEFAULT_BATCH_MAX_WAIT: &str = "5s";
/// The volume we add. Not `data` as the old script had: that name is common enough to collide.
pub const VOLUME_NAME: &str = "k8s-audit";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchOptions {
    pub mode: Mode,
    /// Directory on the node (and, mounted at the same path, in the pod) for our files.
    pub audit_dir: String,
    pub batch_max_wait: String,
    pub rotation: Option<Rotation>,
    /// Replace flags the manifest sets to other values instead of refusing.
    pub force: bool,
    /// Overrides the version read from the image tag.
    pub kube_version: Option<KubeVersion>,
}

impl PatchOptions {
    pub fn new(mode: Mode) -> Self {
        PatchOptions {
            mode,
            audit_dir: DEFAULT_AUDIT_DIR.to_string(),
            batch_max_wait: DEFAULT_BATCH_MAX_WAIT.to_string(),
            rotation: None,
            force: false,
            kube_version: None,
        }
    }

    /// The audit directory without a trailing slash.
    pub(crate) fn dir(&self) -> &str {
        match self.audit_dir.trim_end_matches('/') {
            "" => "/",
            d => d,
        }
    }

    /// Our values go unquoted into YAML plain scalars and shell strings, so they are
    /// restricted to characters that mean nothing to either. `patch` also holds the audit
    /// directory to [`check_audit_dir`](crate::check_audit_dir); `revert` does not, so that
    /// it can still undo what an older version wrote. `at` is where errors point.
    pub(crate) fn validate(&self, at: Pos, strict: bool) -> Result<(), PatchError> {
        let dir = &self.audit_dir;
        if strict {
            crate::check_audit_dir(dir, None)
                .map_err(|error| PatchError::AuditDir { at, error })?;
        }
        let path_ok = dir.starts_with('/')
            && dir
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._+-".contains(&b))
            && !dir.split('/').any(|c| c == "..");
        if !path_ok {
            return Err(PatchError::BadOption {
                at,
                option: "--audit-dir",
                value: dir.clone(),
                expected: "an absolute path of letters, digits and / . _ + - (no ..)",
            });
        }
        if !is_duration(&self.batch_max_wait) {
            return Err(PatchError::BadOption {
                at,
                option: "--batch-max-wait",
                value: self.batch_max_wait.clone(),
                expected: "a Go duration such as 5s, 500ms or 1m30s",
            });
        }
        Ok(())
    }
}

/// A Go `time.ParseDuration` value without sign or fractions: `5s`, `1m30s`, `250ms`.
fn is_duration(s: &str) -> bool {
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let Some(unit) = ["ns", "us", "µs", "ms", "s", "m", "h"]
            .into_iter()
            .find(|u| rest.starts_with(u))
        else {
            return false;
        };
        rest = &rest[unit.len()..];
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip() {
        for m in Mode::ALL {
            assert_eq!(m.to_string().parse::<Mode>(), Ok(m));
        }
        assert!("Static".parse::<Mode>().is_err());
    }

    #[test]
    fn options_are_checked() {
        let at = Pos { line: 1, column: 1 };
        let mut o = PatchOptions::new(Mode::Static);
        assert_eq!(o.validate(at, true), Ok(()));
        o.audit_dir = "/var/lib/k8s_audit/".into();
        assert_eq!(o.dir(), "/var/lib/k8s_audit");
        for bad in ["relative", "/a b", "/a/../etc", "/a\"b", "/a:b"] {
            o.audit_dir = bad.into();
            assert!(o.validate(at, false).is_err(), "{bad}");
        }
        o.audit_dir = DEFAULT_AUDIT_DIR.into();
        for (d, ok) in [
            ("5s", true),
            ("1m30s", true),
            ("250ms", true),
            ("", false),
            ("5", false),
            ("s", false),
            ("-5s", false),
            ("5 s", false),
        ] {
            o.batch_max_wait = d.into();
            assert_eq!(o.validate(at, true).is_ok(), ok, "{d}");
        }
    }
}
