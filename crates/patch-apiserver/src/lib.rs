//! Enables Kubernetes API-server audit logging by editing the kube-apiserver static
//! pod manifest as text: only additions, idempotent, reversible, version-aware.
//!
//! ```
//! use patch_apiserver::{Mode, PatchOptions, patch, revert};
//! let manifest = std::fs::read_to_string(concat!(
//!     env!("CARGO_MANIFEST_DIR"),
//!     "/../../fixtures/manifests/minikube-v1.28.yaml"
//! ))
//! .unwrap();
//! let opts = PatchOptions::new(Mode::Static);
//! let patched = patch(&manifest, &opts).unwrap();
//! assert!(patched.changed);
//! assert_eq!(revert(&patched.text, &opts).unwrap().text, manifest);
//! ```

mod audit_dir;
mod cluster_config;
mod diff;
mod durable;
mod edit;
mod error;
mod files;
mod flags;
mod in_place;
mod locate;
pub use locate::without_locations;
mod mounts;
mod options;
mod ours;
mod patch;
mod revert;
mod version;
mod yaml;

use std::fmt;

pub use audit_dir::{AuditDirError, DEFAULT_MANIFEST_DIR, SYSTEM_DIRS, check_audit_dir};
pub use cluster_config::{
    ClusterConfigInfo, KubeadmApi, check_cluster_config, inspect_cluster_config,
    patch_cluster_config, revert_cluster_config,
};
pub use diff::unified_diff;
pub use durable::{DurableTarget, durable_settings};
pub use error::{Located, PatchError, Pos};
pub use files::{AuditFile, audit_files};
pub use in_place::{InPlaceError, read_manifest, write_in_place};
pub use options::{
    DEFAULT_AUDIT_DIR, DEFAULT_BATCH_MAX_WAIT, Mode, ParseModeError, PatchOptions, Rotation,
    VOLUME_NAME,
};
pub use ours::{is_audit_related, is_our_flag, our_flags};
pub use patch::{audit_flags, check, needed_files, patch};
pub use revert::revert;
pub use version::{KubeVersion, ParseVersionError};

/// How a manifest runs kube-apiserver, which decides where flags go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// kubeadm/minikube: `command: [kube-apiserver, --flag, ...]`.
    Command,
    /// Flags under `args:`, with `command: [/usr/local/bin/kube-apiserver]` or none (kops ≤1.18, RKE2).
    Args,
    /// kops go-runner: `command: [/go-runner]`, `args: [..., /usr/local/bin/kube-apiserver, --flags]`.
    GoRunner,
    /// `command: [/bin/sh, -c, "... exec /usr/local/bin/kube-apiserver --flags ... 1>>log"]`.
    Shell,
    /// A JSON manifest (GCE kube-up), whatever the command looks like inside.
    Json,
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Shape::Command => "command list",
            Shape::Args => "args list",
            Shape::GoRunner => "go-runner args",
            Shape::Shell => "shell-wrapped command",
            Shape::Json => "JSON",
        })
    }
}

/// A hostPath volume mounted into the kube-apiserver container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMount {
    pub volume: String,
    pub host_path: String,
    pub mount_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    pub shape: Shape,
    /// From the image tag; `None` when the tag is a digest or not a version.
    pub version: Option<KubeVersion>,
    /// The words after the binary, in order.
    pub apiserver_args: Vec<String>,
    pub host_mounts: Vec<HostMount>,
    /// The mode whose audit flags are all present (judged by flag names, whatever the
    /// paths), if any.
    pub patched: Option<Mode>,
}

/// The result of `patch` or `revert`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub text: String,
    pub changed: bool,
    pub notes: Vec<Note>,
}

/// Something the caller should know; never an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// The flag was already there with our value.
    AlreadyPresent {
        flag: String,
    },
    /// Our entry went into an existing comma list.
    Merged {
        flag: &'static str,
        entry: String,
    },
    /// `--force` replaced another value.
    Replaced {
        at: Pos,
        flag: String,
        old: String,
    },
    BatchWaitLeftOut {
        version: KubeVersion,
    },
    /// No version in the image tag and none given: every flag was written.
    VersionUnknown,
    VersionOverride {
        image: KubeVersion,
        given: KubeVersion,
    },
    /// The audit directory was already mounted from a hostPath volume of the user's.
    DirAlreadyMounted {
        volume: String,
    },
    /// revert: a volume by our name but with another path was left alone.
    ForeignVolumeKept {
        path: String,
    },
    /// revert: the list flag held only our entry, so the whole flag went.
    EmptiedFlagRemoved {
        flag: &'static str,
    },
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::AlreadyPresent { flag } => write!(f, "{flag} already present with our value"),
            Note::Merged { flag, entry } => write!(f, "added {entry} to the existing {flag}"),
            Note::Replaced { at, flag, old } => {
                write!(f, "{at}: replaced {flag} (was {old:?}) because of --force")
            }
            Note::BatchWaitLeftOut { version } => write!(
                f,
                "--audit-webhook-batch-max-wait left out: Kubernetes {version} predates it (1.10); its default applies"
            ),
            Note::VersionUnknown => write!(
                f,
                "no Kubernetes version in the image tag: wrote the flags for 1.10 and newer (pass --kube-version to be exact)"
            ),
            Note::VersionOverride { image, given } => {
                write!(
                    f,
                    "the image says {image} but --kube-version says {given}; using {given}"
                )
            }
            Note::DirAlreadyMounted { volume } => {
                write!(
                    f,
                    "the audit directory is already mounted from hostPath volume {volume:?}"
                )
            }
            Note::ForeignVolumeKept { path } => {
                write!(
                    f,
                    "volume {VOLUME_NAME:?} mounts {path}, not the audit directory; left it alone"
                )
            }
            Note::EmptiedFlagRemoved { flag } => {
                write!(f, "{flag} held only our entry; removed the flag")
            }
        }
    }
}

/// Reads what `patch` would work with, without changing anything.
pub fn inspect(text: &str) -> Result<Inspection, PatchError> {
    patch::inspect(text)
}
