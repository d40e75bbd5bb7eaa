//! What `enable` leaves on the node for `disable` and `status`: the backup of the original
//! manifest and a small record of what was enabled. Both live in the audit directory, never in
//! the manifests directory, where the kubelet would start any file as another pod.

use std::time::{SystemTime, UNIX_EPOCH};

use patch_apiserver::Mode;

use crate::error::{Context, PipelineError, Result};

pub fn backup_dir(audit_dir: &str) -> String {
    format!("{audit_dir}/backup")
}

pub fn state_path(audit_dir: &str) -> String {
    format!("{audit_dir}/enabled")
}

/// `<audit dir>/backup/<manifest name>.<UTC timestamp>`.
pub fn backup_path(audit_dir: &str, manifest: &str) -> String {
    let name = manifest.rsplit('/').next().unwrap_or(manifest);
    format!(
        "{}/{name}.{}",
        backup_dir(audit_dir),
        utc_timestamp(SystemTime::now())
    )
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub mode: Mode,
    pub manifest: String,
    pub backup: String,
    /// Part of what enable wrote, so disable can recompute it to compare.
    pub batch_max_wait: String,
}

impl State {
    pub fn to_text(&self) -> String {
        format!(
            "# Written by `cargo xtask enable`; read by disable and status.\nmode={}\nmanifest={}\nbackup={}\nbatch-max-wait={}\n",
            self.mode, self.manifest, self.backup, self.batch_max_wait
        )
    }

    pub fn parse(text: &str) -> Result<State> {
        let field = |key: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_string)
                .with_context(|| format!("the state file has no {key}= line"))
        };
        Ok(State {
            mode: field("mode")?
                .parse()
                .map_err(|e| PipelineError::failed(format!("state file: {e}")))?,
            manifest: field("manifest")?,
            backup: field("backup")?,
            batch_max_wait: field("batch-max-wait")?,
        })
    }
}

/// `YYYYMMDDTHHMMSSZ`, from the Unix time (civil-from-days, so no date crate is needed).
fn utc_timestamp(now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_civil_dates() {
        let at = |secs| utc_timestamp(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "19700101T000000Z");
        assert_eq!(at(951_782_400), "20000229T000000Z");
        assert_eq!(at(1_795_651_200 + 3_723), "20261126T010203Z");
    }

    #[test]
    fn state_round_trips() {
        let state = State {
            mode: Mode::DynamicLog,
            manifest: "/etc/kubernetes/manifests/kube-apiserver.yaml".into(),
            backup: "/var/lib/k8s_audit/backup/kube-apiserver.yaml.20261126T010203Z".into(),
            batch_max_wait: "5s".into(),
        };
        assert_eq!(State::parse(&state.to_text()).unwrap(), state);
        assert!(State::parse("mode=static\n").is_err());
    }

    #[test]
    fn backups_live_outside_the_manifests_directory() {
        let path = backup_path(
            "/var/lib/k8s_audit",
            "/etc/kubernetes/manifests/kube-apiserver.manifest",
        );
        assert!(
            path.starts_with("/var/lib/k8s_audit/backup/kube-apiserver.manifest.20"),
            "{path}"
        );
    }
}
