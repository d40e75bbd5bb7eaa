//! What the pipeline tests share: running `cargo xtask` against the loopback sshd and reading
//! what it printed.

use std::path::Path;
use std::process::{Command, Output};

use testkit::sshd::Sshd;

/// `cargo xtask <command> ssh [mode]` against `sshd`, on the sandbox `root`, with a clean HOME so
/// that neither the user's kubeconfig nor their ssh config or agent leaks in. `enable` does not
/// probe Falco from the node (`--skip-reachability`): the sshd runs on this machine, and a probe
/// of a ClusterIP from here would leave it. Tests of the probe use [`probing_ssh_command`].
pub fn ssh_command(
    sshd: &Sshd,
    root: &Path,
    home: &Path,
    command: &str,
    mode: Option<&str>,
) -> Command {
    let mut cmd = probing_ssh_command(sshd, root, home, command, mode);
    if command == "enable" {
        cmd.arg("--skip-reachability");
    }
    cmd
}

/// [`ssh_command`] with the reachability probe on: only in a network namespace of the test's
/// own, or with loopback URLs (`testkit::netns::assert_probe_allowed`).
pub fn probing_ssh_command(
    sshd: &Sshd,
    root: &Path,
    home: &Path,
    command: &str,
    mode: Option<&str>,
) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_k8s-audit"));
    cmd.arg(command).arg("ssh");
    cmd.args(mode);
    cmd.args(["--host", "127.0.0.1", "--user", "root"])
        .args(["--port", &sshd.port().to_string()])
        .arg("-i")
        .arg(sshd.client_key())
        .arg("--known-hosts")
        .arg(sshd.known_hosts_file())
        .arg("--root")
        .arg(root)
        .env("HOME", home)
        .env_remove("KUBECONFIG")
        .env_remove("SSH_AUTH_SOCK");
    cmd
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    );
}
