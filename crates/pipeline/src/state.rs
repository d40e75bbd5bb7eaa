//! What `enable` leaves on the node for `disable` and `status`: the backups of the manifest and
//! a small record of what was enabled. Both live in the audit directory, never in the
//! manifests directory, where the kubelet would start any file as another pod.
//!
//! The record keeps the FIRST backup (the manifest as it was before any enable) until
//! `disable`, and every enable's options in order, so that disable can recompute exactly what
//! the enables wrote, and restore the original bytes, after a mode change or a `--force` too.

use std::time::SystemTime;

use patch_apiserver::{KubeVersion, Mode, PatchOptions};

use crate::error::{Context, PipelineError, Result};

pub fn backup_dir(audit_dir: &str) -> String {
    format!("{audit_dir}/backup")
}

pub fn state_path(audit_dir: &str) -> String {
    format!("{audit_dir}/enabled")
}

/// `<audit dir>/backup/<manifest name>.<UTC time to the nanosecond>Z`: the one naming scheme
/// (`atomic_file::backup_file_name`). The transaction writes it without ever replacing a file.
pub fn backup_path(audit_dir: &str, manifest: &str) -> String {
    let name = manifest.rsplit('/').next().unwrap_or(manifest);
    format!(
        "{}/{}",
        backup_dir(audit_dir),
        atomic_file::backup_file_name(name, SystemTime::now())
    )
}

/// One enable's options: what disable needs to recompute what it wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enabled {
    pub mode: Mode,
    pub force: bool,
    pub kube_version: Option<KubeVersion>,
    pub audit_dir: String,
    pub batch_max_wait: String,
}

impl Enabled {
    pub fn from_options(options: &PatchOptions) -> Enabled {
        Enabled {
            mode: options.mode,
            force: options.force,
            kube_version: options.kube_version,
            audit_dir: options.audit_dir.clone(),
            batch_max_wait: options.batch_max_wait.clone(),
        }
    }

    pub fn options(&self) -> PatchOptions {
        let mut options = PatchOptions::new(self.mode);
        options.force = self.force;
        options.kube_version = self.kube_version;
        options.audit_dir = self.audit_dir.clone();
        options.batch_max_wait = self.batch_max_wait.clone();
        options
    }

    fn to_line(&self) -> String {
        format!(
            "enable=mode={} force={} kube-version={} audit-dir={} batch-max-wait={}",
            self.mode,
            if self.force { "yes" } else { "no" },
            self.kube_version.map_or("-".into(), |v| v.to_string()),
            self.audit_dir,
            self.batch_max_wait
        )
    }

    fn parse_line(line: &str) -> Result<Enabled> {
        let field = |key: &str| {
            line.split(' ')
                .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
                .with_context(|| format!("state file: {line:?} has no {key}="))
        };
        Ok(Enabled {
            mode: parse_mode(field("mode")?)?,
            force: field("force")? == "yes",
            kube_version: match field("kube-version")? {
                "-" => None,
                text => Some(
                    text.parse()
                        .map_err(|e| PipelineError::failed(format!("state file: {e}")))?,
                ),
            },
            audit_dir: field("audit-dir")?.to_string(),
            batch_max_wait: field("batch-max-wait")?.to_string(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub manifest: String,
    /// The manifest as it was before the first enable.
    pub backup: String,
    /// Every enable since then, oldest first; never empty.
    pub enables: Vec<Enabled>,
}

impl State {
    /// The mode the last enable turned on.
    pub fn mode(&self) -> Mode {
        self.enables.last().map_or(Mode::Static, |e| e.mode)
    }

    pub fn to_text(&self) -> String {
        let last = self.enables.last();
        let mut text = format!(
            "# Written by `cargo xtask enable`; read by disable and status.\n# backup= is the manifest before the first enable; each enable= line is one enable, oldest first.\nformat=2\nmode={}\nmanifest={}\nbackup={}\nbatch-max-wait={}\n",
            self.mode(),
            self.manifest,
            self.backup,
            last.map_or("", |e| e.batch_max_wait.as_str()),
        );
        for enabled in &self.enables {
            text.push_str(&enabled.to_line());
            text.push('\n');
        }
        text
    }

    /// Reads a record, of this format or of the first one (no `enable=` lines), which was
    /// found in `audit_dir`.
    pub fn parse(text: &str, audit_dir: &str) -> Result<State> {
        let field = |key: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_string)
                .with_context(|| format!("the state file has no {key}= line"))
        };
        let mut enables = text
            .lines()
            .filter_map(|line| line.strip_prefix("enable="))
            .map(Enabled::parse_line)
            .collect::<Result<Vec<_>>>()?;
        if enables.is_empty() {
            // The first format: one enable, without --force or --kube-version.
            enables.push(Enabled {
                mode: parse_mode(&field("mode")?)?,
                force: false,
                kube_version: None,
                audit_dir: audit_dir.to_string(),
                batch_max_wait: field("batch-max-wait")?,
            });
        }
        Ok(State {
            manifest: field("manifest")?,
            backup: field("backup")?,
            enables,
        })
    }
}

fn parse_mode(text: &str) -> Result<Mode> {
    text.parse()
        .map_err(|e| PipelineError::failed(format!("state file: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled(mode: Mode) -> Enabled {
        Enabled {
            mode,
            force: mode == Mode::DynamicLog,
            kube_version: (mode != Mode::Static).then(|| "v1.16.15".parse().unwrap()),
            audit_dir: "/var/lib/k8s_audit".into(),
            batch_max_wait: "5s".into(),
        }
    }

    #[test]
    fn state_round_trips() {
        let state = State {
            manifest: "/etc/kubernetes/manifests/kube-apiserver.yaml".into(),
            backup: "/var/lib/k8s_audit/backup/kube-apiserver.yaml.20261126T010203.000000001Z"
                .into(),
            enables: vec![enabled(Mode::Static), enabled(Mode::DynamicLog)],
        };
        let text = state.to_text();
        assert_eq!(State::parse(&text, "/elsewhere").unwrap(), state);
        assert!(text.contains("\nmode=dynamic+log\n"), "{text}");
        assert!(State::parse("mode=static\n", "/x").is_err());
        assert!(State::parse(&text.replace("mode=static", "mode=loud"), "/x").is_err());
    }

    #[test]
    fn the_first_format_is_still_read() {
        let old = "# Written by `cargo xtask enable`; read by disable and status.\nmode=dynamic+log\nmanifest=/etc/kubernetes/manifests/kube-apiserver.yaml\nbackup=/var/lib/k8s_audit/backup/kube-apiserver.yaml.20261126T010203Z\nbatch-max-wait=7s\n";
        let state = State::parse(old, "/var/lib/audit").unwrap();
        assert_eq!(
            state.backup,
            "/var/lib/k8s_audit/backup/kube-apiserver.yaml.20261126T010203Z"
        );
        assert_eq!(
            state.enables,
            [Enabled {
                mode: Mode::DynamicLog,
                force: false,
                kube_version: None,
                audit_dir: "/var/lib/audit".into(),
                batch_max_wait: "7s".into(),
            }]
        );
    }

    #[test]
    fn backups_live_outside_the_manifests_directory_named_to_the_nanosecond() {
        let manifest = "/etc/kubernetes/manifests/kube-apiserver.manifest";
        let path = backup_path("/var/lib/k8s_audit", manifest);
        // `<name>.YYYYMMDDTHHMMSS.nnnnnnnnnZ`: a second's resolution once let two enables
        // share a name, and the second backup replaced the only copy of the original.
        let stamp = path
            .strip_prefix("/var/lib/k8s_audit/backup/kube-apiserver.manifest.")
            .unwrap_or_else(|| panic!("{path}"));
        assert_eq!(stamp.len(), "20261126T010203.123456789Z".len(), "{path}");
    }
}
