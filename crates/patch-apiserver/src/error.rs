//! Errors with positions, so the binary can print `FILE:LINE:COLUMN: message`.

use std::fmt;

/// A 1-based line and column (columns count characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    /// The position of byte `offset` in `text` (clamped to the text's end).
    pub fn of(text: &str, offset: usize) -> Pos {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Pos {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("{at}: not valid YAML: {reason}")]
    Yaml { at: Pos, reason: String },
    #[error(
        "{at}: unsupported YAML ({what}); expected plain block or flow YAML as in Pod manifests"
    )]
    Unsupported { at: Pos, what: &'static str },
    #[error("{at}: expected {expected}, found {found}")]
    Unexpected {
        at: Pos,
        expected: &'static str,
        found: String,
    },
    #[error("{at}: a second YAML document starts here; expected exactly one Pod manifest")]
    SeveralDocuments { at: Pos },
    #[error("{at}: expected a Pod manifest, found kind {found:?}")]
    NotAPod { at: Pos, found: String },
    #[error(
        "{at}: no kube-apiserver container; expected a container that runs the kube-apiserver binary or is named kube-apiserver"
    )]
    NoApiserver { at: Pos },
    #[error("{at}: a second container runs kube-apiserver (the first is at {first}); expected one")]
    SeveralApiservers { at: Pos, first: Pos },
    #[error("{at}: a volume without a name; expected every volume to have `name:`")]
    UnnamedVolume { at: Pos },
    #[error("{at}: {what} without a name; expected `name:`")]
    UnnamedMount { at: Pos, what: &'static str },
    #[error(
        "{at}: the shell command does not run the kube-apiserver binary; expected `exec /path/to/kube-apiserver --flags ...`"
    )]
    ShellWithoutBinary { at: Pos },
    #[error(
        "{at}: {flag} is already set to {existing:?}, this tool would set {ours:?}; pass --force to replace it"
    )]
    Conflict {
        at: Pos,
        flag: String,
        existing: String,
        ours: String,
    },
    #[error(
        "{at}: volume name {name:?} is already used for {existing}; expected it free for the audit directory {wanted}"
    )]
    VolumeNameTaken {
        at: Pos,
        name: String,
        existing: String,
        wanted: String,
    },
    #[error(
        "{at}: the container already mounts volume {volume:?} at {path}, which is not a hostPath volume of {path}"
    )]
    MountPathTaken {
        at: Pos,
        path: String,
        volume: String,
    },
    #[error(
        "{at}: the audit log {file} would be on volume {volume:?}, mounted read-only at {path}; the API server could not write it (drop `readOnly: true` there, or choose another --audit-dir)"
    )]
    ReadOnlyMount {
        at: Pos,
        file: String,
        volume: String,
        path: String,
    },
    #[error(
        "{at}: {file} (from {flag}) is not under a hostPath volume mounted into the kube-apiserver container"
    )]
    NotMounted {
        at: Pos,
        file: String,
        flag: &'static str,
    },
    /// `at`: the container's image, which the version is read from.
    #[error(
        "{at}: mode {mode} does not work with Kubernetes {version}: {reason}; use --mode static"
    )]
    ModeRefused {
        at: Pos,
        mode: crate::Mode,
        version: crate::KubeVersion,
        reason: &'static str,
    },
    #[error(
        "{at}: static mode needs Kubernetes 1.8 or newer (advanced auditing was alpha before), found {version}"
    )]
    TooOld {
        at: Pos,
        version: crate::KubeVersion,
    },
    #[error(
        "{at}: mode {mode} needs the Kubernetes version and the image {image:?} has no version tag; pass --kube-version"
    )]
    VersionUnknown {
        at: Pos,
        mode: crate::Mode,
        image: String,
    },
    /// `at`: the kube-apiserver command line our flags would join.
    #[error("{at}: invalid {option} {value:?}: expected {expected}")]
    BadOption {
        at: Pos,
        option: &'static str,
        value: String,
        expected: &'static str,
    },
    /// `at`: the kube-apiserver command line our flags would join.
    #[error("{at}: invalid --audit-dir: {error}")]
    AuditDir {
        at: Pos,
        #[source]
        error: crate::AuditDirError,
    },
    #[error("internal error: {0}; please report it together with the manifest")]
    Internal(String),
}

impl PatchError {
    /// The position in the manifest this error is about, if any.
    pub fn position(&self) -> Option<Pos> {
        use PatchError::*;
        match self {
            Yaml { at, .. }
            | Unsupported { at, .. }
            | Unexpected { at, .. }
            | SeveralDocuments { at }
            | NotAPod { at, .. }
            | NoApiserver { at }
            | SeveralApiservers { at, .. }
            | UnnamedVolume { at }
            | UnnamedMount { at, .. }
            | ShellWithoutBinary { at }
            | Conflict { at, .. }
            | VolumeNameTaken { at, .. }
            | MountPathTaken { at, .. }
            | ReadOnlyMount { at, .. }
            | NotMounted { at, .. }
            | ModeRefused { at, .. }
            | TooOld { at, .. }
            | VersionUnknown { at, .. }
            | BadOption { at, .. }
            | AuditDir { at, .. } => Some(*at),
            Internal(_) => None,
        }
    }

    /// Displays as `SOURCE:LINE:COLUMN: message` (or `SOURCE: message` without a position).
    pub fn located<'a>(&'a self, source: &'a str) -> Located<'a> {
        Located {
            error: self,
            source,
        }
    }
}

pub struct Located<'a> {
    error: &'a PatchError,
    source: &'a str,
}

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.error.position() {
            Some(_) => write!(f, "{}:{}", self.source, self.error),
            None => write!(f, "{}: {}", self.source, self.error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters() {
        let text = "a: 1\nbé: 2\n";
        assert_eq!(Pos::of(text, 0), Pos { line: 1, column: 1 });
        assert_eq!(Pos::of(text, 5), Pos { line: 2, column: 1 });
        // After the two-byte é, the column counts one character.
        assert_eq!(Pos::of(text, 8), Pos { line: 2, column: 3 });
        assert_eq!(Pos::of(text, 999), Pos { line: 3, column: 1 });
    }

    #[test]
    fn located_prefixes_the_source() {
        let e = PatchError::NoApiserver {
            at: Pos { line: 3, column: 5 },
        };
        assert!(
            e.located("m.yaml")
                .to_string()
                .starts_with("m.yaml:3:5: no kube-apiserver container")
        );
        let e = PatchError::Internal("x".into());
        assert!(e.located("-").to_string().starts_with("-: internal error"));
    }
}
