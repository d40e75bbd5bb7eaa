//! OpenSSH known_hosts: lookup (plain, hashed, `[host]:port`, wildcard and negated patterns,
//! `@revoked`) and recording a new key. libssh2's own reader stops at the first line it does
//! not understand and compares keys without their type, so the matching is done here.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use hmac::{KeyInit, Mac};

use crate::ShipError;

/// One usable line of a known_hosts file that names the host we look up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub file: PathBuf,
    pub line: usize,
    pub key_type: String,
    pub blob: Vec<u8>,
    pub revoked: bool,
}

/// The name OpenSSH records and looks up: `host` on port 22, `[host]:port` otherwise.
pub fn host_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

/// `SHA256:...` as OpenSSH prints it, from the raw SHA-256 digest of a key blob.
pub fn fingerprint(sha256: &[u8]) -> String {
    format!("SHA256:{}", STANDARD_NO_PAD.encode(sha256))
}

/// Every entry for `host`:`port` in `files`. Missing files are skipped, as OpenSSH does.
pub fn lookup(files: &[PathBuf], host: &str, port: u16) -> Result<Vec<Entry>, ShipError> {
    let name = host_name(host, port);
    let mut entries = Vec::new();
    for file in files {
        let text = match fs::read(file) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(ShipError::KnownHostsRead {
                    path: file.clone(),
                    cause: source,
                });
            }
        };
        for (index, line) in text.lines().enumerate() {
            if let Some((key_type, blob, revoked)) = parse_line(line, &name) {
                entries.push(Entry {
                    file: file.clone(),
                    line: index + 1,
                    key_type,
                    blob,
                    revoked,
                });
            }
        }
    }
    Ok(entries)
}

/// The key of a line whose host patterns match `name`. Comments, malformed lines and
/// `@cert-authority` lines (host certificates are not supported by libssh2) give `None`.
fn parse_line(line: &str, name: &str) -> Option<(String, Vec<u8>, bool)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut fields = line.split_whitespace();
    let mut hosts = fields.next()?;
    let mut revoked = false;
    if let Some(marker) = hosts.strip_prefix('@') {
        match marker {
            "revoked" => revoked = true,
            _ => return None,
        }
        hosts = fields.next()?;
    }
    let key_type = fields.next()?;
    let blob = STANDARD.decode(fields.next()?).ok()?;
    // A revoked key is revoked for every host, whatever the pattern says.
    if revoked || hosts_match(hosts, name) {
        Some((key_type.to_owned(), blob, revoked))
    } else {
        None
    }
}

fn hosts_match(hosts: &str, name: &str) -> bool {
    if let Some(hashed) = hosts.strip_prefix("|1|") {
        return hashed_match(hashed, name);
    }
    let mut matched = false;
    for pattern in hosts.split(',') {
        if let Some(negated) = pattern.strip_prefix('!') {
            if glob(negated, name) {
                return false;
            }
        } else if glob(pattern, name) {
            matched = true;
        }
    }
    matched
}

/// `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`, what `HashKnownHosts yes` writes.
fn hashed_match(hashed: &str, name: &str) -> bool {
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (STANDARD.decode(salt), STANDARD.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// OpenSSH pattern matching: `*` any run, `?` one character, case-insensitive.
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (
        pattern.to_lowercase().chars().collect(),
        name.to_lowercase().chars().collect(),
    );
    let (mut pi, mut ni) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            backtrack = Some((pi, ni));
            pi += 1;
        } else if let Some((star, matched)) = backtrack {
            pi = star + 1;
            ni = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Appends `name key_type base64` to `file` (as `StrictHostKeyChecking=accept-new` does),
/// creating the directory 0700 and the file 0600 when missing. The line goes out in one
/// write, so a reader never sees half of it.
pub fn record(
    file: &Path,
    host: &str,
    port: u16,
    key_type: &str,
    blob: &[u8],
) -> Result<(), ShipError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let err = |source| ShipError::KnownHostsWrite {
        path: file.to_owned(),
        cause: source,
    };
    if let Some(dir) = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
    }
    let mut line = format!(
        "{} {key_type} {}\n",
        host_name(host, port),
        STANDARD.encode(blob)
    );
    let mut f = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(file)
        .map_err(err)?;
    // A file that does not end in a newline would glue our entry onto its last line.
    let existing = fs::read(file).map_err(err)?;
    if existing.last().is_some_and(|&b| b != b'\n') {
        line.insert(0, '\n');
    }
    f.write_all(line.as_bytes()).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOB: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    #[test]
    fn patterns() {
        assert!(glob("*.example.com", "node.example.com"));
        assert!(glob("node?", "node1"));
        assert!(!glob("node?", "node12"));
        assert!(glob("[127.0.0.1]:2222", "[127.0.0.1]:2222"));
        assert!(hosts_match("a,node*,!node3", "node1"));
        assert!(!hosts_match("a,node*,!node3", "node3"));
        assert!(!hosts_match("127.0.0.1", "[127.0.0.1]:2222"));
    }

    #[test]
    fn hashed_entry_written_by_ssh_keygen() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        fs::write(
            &file,
            format!("node1.example.com ssh-ed25519 {BLOB}\n[10.0.0.1]:2222 ssh-ed25519 {BLOB}\n"),
        )
        .unwrap();
        let status = std::process::Command::new("ssh-keygen")
            .arg("-H")
            .arg("-f")
            .arg(&file)
            .output()
            .unwrap()
            .status;
        assert!(status.success());
        let text = fs::read_to_string(&file).unwrap();
        assert!(
            text.starts_with("|1|"),
            "ssh-keygen -H did not hash: {text}"
        );
        let line = text.lines().next().unwrap();
        assert!(parse_line(line, "node1.example.com").is_some());
        assert!(parse_line(line, "node2.example.com").is_none());
        assert_eq!(
            lookup(std::slice::from_ref(&file), "10.0.0.1", 2222)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            lookup(std::slice::from_ref(&file), "10.0.0.1", 22)
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn markers_and_junk() {
        assert!(parse_line(&format!("@cert-authority * ssh-ed25519 {BLOB}"), "x").is_none());
        assert_eq!(
            parse_line(&format!("@revoked other ssh-ed25519 {BLOB}"), "x").map(|e| e.2),
            Some(true)
        );
        assert!(parse_line("# comment", "x").is_none());
        assert!(parse_line("x ssh-ed25519 not-base64!", "x").is_none());
        assert!(parse_line("x", "x").is_none());
    }

    #[test]
    fn record_then_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub/known_hosts");
        let blob = STANDARD.decode(BLOB).unwrap();
        record(&file, "127.0.0.1", 2222, "ssh-ed25519", &blob).unwrap();
        record(&file, "node", 22, "ssh-ed25519", &blob).unwrap();
        let found = lookup(std::slice::from_ref(&file), "127.0.0.1", 2222).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].line, found[0].key_type.as_str(), &found[0].blob),
            (1, "ssh-ed25519", &blob)
        );
        assert_eq!(
            lookup(std::slice::from_ref(&file), "node", 22).unwrap()[0].line,
            2
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(file.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
    }
}
