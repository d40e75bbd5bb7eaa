//! Local test users for sudo tests: created on demand, idempotently, on a fresh Debian machine
//! (tests run as root there).

use std::fs;
use std::process::{Command, Stdio};

/// What `sudo` lets a test user do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SudoRule {
    /// `NOPASSWD: ALL`, the setup `ship --sudo` expects on a node.
    NoPassword,
    /// `ALL` with a password, so `sudo -n` refuses: the "sudo wants a password" case.
    Password,
}

/// Makes sure `name` exists with a shell, is not locked for key logins, and has the sudo rule.
///
/// Panics with the reason when it cannot (for example when not running as root).
pub fn ensure_user(name: &str, rule: SudoRule) {
    let exists = Command::new("id")
        .arg("-u")
        .arg(name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !exists.map(|s| s.success()).unwrap_or(false) {
        run(Command::new("useradd")
            .args(["--create-home", "--shell", "/bin/sh"])
            .arg(name));
    }
    // useradd leaves the password as "!", which sshd treats as a locked account even for keys;
    // "*" means "no password login" without locking.
    run(Command::new("usermod").args(["-p", "*"]).arg(name));
    let rule_text = match rule {
        SudoRule::NoPassword => format!("{name} ALL=(ALL) NOPASSWD: ALL\n"),
        SudoRule::Password => format!("{name} ALL=(ALL) ALL\n"),
    };
    // sudo ignores drop-ins whose names contain a '.', and reads only root-owned 0440 files.
    let path = format!("/etc/sudoers.d/testkit-{}", name.replace('.', "_"));
    if fs::read_to_string(&path).ok().as_deref() != Some(rule_text.as_str()) {
        // The temp name has a '.' so sudo never reads it half-written.
        let tmp = format!("{path}.tmp");
        fs::write(&tmp, &rule_text).expect("write sudoers drop-in");
        run(Command::new("chmod").args(["0440", &tmp]));
        run(Command::new("visudo").args(["-cf", &tmp]));
        fs::rename(&tmp, &path).expect("install sudoers drop-in");
    }
}

fn run(command: &mut Command) {
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    assert!(status.success(), "{command:?} failed with {status}");
}
