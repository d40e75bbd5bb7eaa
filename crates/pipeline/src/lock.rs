//! The node lock: one enable or disable at a time on a node. Two runs at once could commit one
//! run's webhook config while the other reports its own URL.
//!
//! The lock is taken by the command that reads the manifest (no extra round trip) and held by
//! that same command, which then waits on its input: its life is the SSH channel's (or, on the
//! local variant, the pipe's). When the run ends, crashes, is killed with -9 or loses the
//! connection, the holder reads end of input and removes the lock. A holder that was itself
//! killed with -9 leaves a lock whose pid no longer runs this script: the next run takes it over.

use std::fmt;

/// `$0` of the holder, which the next run looks for in `/proc/PID/cmdline` before it trusts
/// that a recorded pid still holds the lock (pids are reused after a reboot).
pub const NAME: &str = "k8s-audit-lock";

/// Exit status of the holder when another run holds the lock.
pub const HELD: i32 = 75;

/// `$1` the lock directory, `$2` who we are, `$3` the marker, `$4` a CA bundle for https probes
/// (or empty), `$5` the number of probes and their arguments ([`crate::reachability`]); then
/// the files to read. Takes the lock (a directory, made atomically), probes, prints the files
/// as `READ_SCRIPT` does, then the probes' lines, an empty line and the marker, and waits for
/// end of input. When the lock's directory does not exist there is no manifest to protect, and
/// nothing to lock: it only reads.
pub fn script() -> String {
    format!(
        "{}{LOCK_AND_PROBE}{}{AFTER_READ}",
        crate::reachability::PROBE_FN,
        crate::node::READ_SCRIPT
    )
}

const LOCK_AND_PROBE: &str = r#"lock=$1 from=$2 marker=$3 ca=$4; shift 4
taken= cafile=
cleanup() {
  if [ -n "$taken" ]; then rm -rf -- "$lock"; fi
  if [ -n "$cafile" ]; then rm -f -- "$cafile"; fi
}
alive() {
  pid=$(sed -n 2p -- "$lock/holder" 2>/dev/null)
  if [ -z "$pid" ]; then
    # Being taken right now, unless it has been like this for a minute (a holder killed
    # between mkdir and writing its name).
    [ -n "$(find "$lock" -maxdepth 0 -mmin -1 2>/dev/null)" ]; return
  fi
  kill -0 "$pid" 2>/dev/null || return 1
  if [ -r "/proc/$pid/cmdline" ]; then grep -q k8s-audit-lock "/proc/$pid/cmdline"; fi
}
held() { echo locked; cat -- "$lock/holder" 2>/dev/null; exit 75; }
trap cleanup EXIT
trap 'exit 1' HUP INT TERM PIPE
if [ -d "$(dirname -- "$lock")" ]; then
  if ! mkdir -m 700 -- "$lock" 2>/dev/null; then
    if alive; then held; fi
    rm -rf -- "$lock"
    mkdir -m 700 -- "$lock" 2>/dev/null || held
  fi
  taken=1
  printf '%s\n%s\n%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$$" "$from" > "$lock/holder" || exit 1
fi
n=$1; shift
results=
if [ "$n" -gt 0 ]; then
  if [ -n "$ca" ]; then cafile=$(mktemp) && printf '%s\n' "$ca" > "$cafile" || exit 1; fi
  i=0
  while [ "$i" -lt "$n" ]; do
    results="${results}probe $i $(probe "$1" "$2" "$3" "$4")
"
    shift 4; i=$((i + 1))
  done
fi
"#;

const AFTER_READ: &str = r#"
printf '%s\n%s\n' "$results" "$marker"
cat > /dev/null
"#;

/// The lock of the manifest at `manifest_path`: a hidden directory beside it (the kubelet
/// ignores dotfiles in its manifest directory), so each node, and each manifest, has its own.
pub fn dir_for(manifest_path: &str) -> String {
    match manifest_path.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/.k8s-audit.lock"),
        None => ".k8s-audit.lock".into(),
    }
}

/// Who holds the lock, as the holder recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub since: String,
    pub pid: String,
    pub from: String,
}

impl Holder {
    /// The holder script's output when it found the lock taken: `locked`, then its record.
    pub fn parse(stdout: &[u8]) -> Holder {
        let text = String::from_utf8_lossy(stdout);
        let mut lines = text.lines().skip_while(|l| *l != "locked").skip(1);
        let mut next = || lines.next().unwrap_or("?").to_string();
        Holder {
            since: next(),
            pid: next(),
            from: next(),
        }
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "since {} (pid {} on the node, from {})",
            self.since, self.pid, self.from
        )
    }
}

/// This machine's name, for the record: the holder's `from`.
pub fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "an unknown host".into())
}

/// A line no file we read can contain: the end of the files in the holder's output.
pub fn marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("k8s-audit-locked-{}-{nanos}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holders_record_is_read_back() {
        let holder = Holder::parse(b"locked\n2026-12-01T12:00:00Z\n4242\nbastion\n");
        assert_eq!(
            holder.to_string(),
            "since 2026-12-01T12:00:00Z (pid 4242 on the node, from bastion)"
        );
        assert_eq!(Holder::parse(b"locked\n").pid, "?");
    }
}
