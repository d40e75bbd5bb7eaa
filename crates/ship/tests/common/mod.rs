//! Shared by the ship tests: a real sshd, and options that never touch the caller's ~/.ssh.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use ship::{ConnectOptions, Destination, Session, ShipError};
use testkit::sshd::Sshd;

/// Options that use only what the test hands in (no agent, no ~/.ssh/config, no default keys).
pub fn opts(sshd: &Sshd, key: &Path) -> ConnectOptions {
    ConnectOptions {
        identities: vec![key.to_owned()],
        known_hosts: vec![sshd.known_hosts_file()],
        ssh_config: Some(PathBuf::from("/dev/null")),
        use_agent: false,
        connect_timeout: Duration::from_secs(5),
        ..ConnectOptions::default()
    }
}

pub fn dest(sshd: &Sshd, user: &str) -> Destination {
    Destination {
        user: Some(user.to_owned()),
        host: sshd.host().to_owned(),
        port: Some(sshd.port()),
    }
}

pub fn connect_as(sshd: &Sshd, user: &str, opts: &ConnectOptions) -> Result<Session, ShipError> {
    Session::connect(&dest(sshd, user), opts)
}

pub fn connect(sshd: &Sshd) -> Session {
    connect_as(sshd, sshd.user(), &opts(sshd, sshd.client_key()))
        .unwrap_or_else(|e| panic!("{e}\nsshd log:\n{}", sshd.log()))
}

pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

pub fn owner_of(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).expect("stat").uid()
}

pub fn uid_of(user: &str) -> u32 {
    let out = std::process::Command::new("id")
        .arg("-u")
        .arg(user)
        .output()
        .expect("id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("uid")
}

/// A directory the given user owns (sshd runs as root on the same machine, so the test can
/// look at the files the remote side wrote).
pub fn dir_owned_by(parent: &Path, name: &str, user: &str) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let status = std::process::Command::new("chown")
        .arg(user)
        .arg(&dir)
        .status()
        .expect("chown");
    assert!(status.success());
    dir
}

/// A temp file name of ship's: `.NAME.ship-TOKEN.tmp`, or `.ship.XXXXXXXX` from earlier versions.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with(".ship.")
        || (name.starts_with('.') && name.contains(".ship-") && name.ends_with(".tmp"))
}

/// The names in `dir` that are ship's temp files.
pub fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_temp_name(n))
        .collect()
}
