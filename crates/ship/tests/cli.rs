//! The `ship` binary: pipes, exit statuses and messages.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use testkit::sshd::Sshd;

fn ship(sshd: &Sshd, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ship"))
        .args(["--known-hosts", sshd.known_hosts_file().to_str().unwrap()])
        .args(["-i", sshd.client_key().to_str().unwrap()])
        .args([
            "--port",
            &sshd.port().to_string(),
            "--config",
            "/dev/null",
            "--no-agent",
        ])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ship");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn cp_through_pipes_and_files() {
    let sshd = Sshd::start();
    let dir = sshd.root().join("d");
    std::fs::create_dir(&dir).unwrap();
    let remote = format!("root@127.0.0.1:{}/from-stdin", dir.display());
    let out = ship(
        &sshd,
        &["cp", "--sudo", "--mode", "0640", "-", &remote],
        b"piped\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(dir.join("from-stdin")).unwrap(), b"piped\n");
    assert_eq!(common::mode_of(&dir.join("from-stdin")), 0o640);

    let out = ship(&sshd, &["cp", &remote, "-"], b"");
    assert_eq!(
        (out.status.code(), out.stdout.as_slice()),
        (Some(0), &b"piped\n"[..]),
        "{}",
        stderr(&out)
    );

    // Several local files into a remote directory, then back into a local one.
    let (a, b) = (sshd.root().join("a.yaml"), sshd.root().join("b.yaml"));
    std::fs::write(&a, "a").unwrap();
    std::fs::write(&b, "b").unwrap();
    let remote_dir = format!("127.0.0.1:{}/", dir.display());
    let out = ship(
        &sshd,
        &["cp", a.to_str().unwrap(), b.to_str().unwrap(), &remote_dir],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(dir.join("b.yaml")).unwrap(), "b");
    let back = sshd.root().join("back");
    std::fs::create_dir(&back).unwrap();
    let src = format!("127.0.0.1:{}/a.yaml", dir.display());
    let out = ship(&sshd, &["cp", &src, back.to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(back.join("a.yaml")).unwrap(), "a");
}

#[test]
fn exec_exits_with_the_remote_status() {
    let sshd = Sshd::start();
    let out = ship(
        &sshd,
        &[
            "exec",
            "127.0.0.1",
            "--",
            "sh",
            "-c",
            "echo to-out; echo to-err >&2; exit 7",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(out.stdout, b"to-out\n");
    assert_eq!(stderr(&out), "to-err\n");
    let out = ship(
        &sshd,
        &["exec", "--stdin", "127.0.0.1", "--", "wc", "-c"],
        b"12345",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "5");
}

#[test]
fn failures_exit_255_or_1_with_one_clear_line() {
    let sshd = Sshd::start();
    let out = Command::new(env!("CARGO_BIN_EXE_ship"))
        .args([
            "--known-hosts",
            "/dev/null",
            "--config",
            "/dev/null",
            "--no-agent",
            "--port",
            &sshd.port().to_string(),
        ])
        .args(["exec", "127.0.0.1", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    let text = stderr(&out);
    assert!(
        text.starts_with("ship: 127.0.0.1:")
            && text.contains("unknown host key ssh-ed25519 SHA256:"),
        "{text}"
    );
    assert!(text.contains("--accept-new"), "{text}");

    let missing = format!("127.0.0.1:{}/missing", sshd.root().display());
    let out = ship(&sshd, &["cp", &missing, "-"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "ship: 127.0.0.1: {}/missing: no such file or directory\n",
            sshd.root().display()
        )
    );

    let out = ship(&sshd, &["cp", "--mode", "999", "-", "h:/x"], b"");
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    assert!(stderr(&out).contains("expected an octal mode"));

    // A port nobody listens on: the cause once, not repeated by the error chain.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port().to_string();
    drop(closed);
    let out = Command::new(env!("CARGO_BIN_EXE_ship"))
        .args(["--config", "/dev/null", "--no-agent", "--port", &port])
        .args(["exec", "127.0.0.1", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert_eq!(
        stderr(&out),
        format!("ship: 127.0.0.1:{port}: cannot connect: Connection refused (os error 111)\n")
    );
}

/// A name that cannot be resolved, in a network namespace of the test's own (no network at
/// all, so nothing leaves the machine): exit 255 and one line naming the host and the cause.
#[test]
fn an_unresolvable_host_is_named_with_the_cause() {
    let out = Command::new("unshare")
        .args(["--net", "--", env!("CARGO_BIN_EXE_ship")])
        .args([
            "--config",
            "/dev/null",
            "--no-agent",
            "--connect-timeout",
            "5",
        ])
        .args(["exec", "node.no-such-domain.invalid", "--", "true"])
        .output()
        .expect("run unshare (util-linux)");
    let text = stderr(&out);
    assert!(
        !text.contains("unshare:"),
        "this test needs root for a network namespace: {text}"
    );
    assert_eq!(out.status.code(), Some(255), "{text}");
    assert!(
        text.starts_with("ship: node.no-such-domain.invalid: cannot resolve host name: "),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1, "{text}");
}

#[test]
fn help_shows_examples() {
    let out = Command::new(env!("CARGO_BIN_EXE_ship"))
        .arg("--help")
        .output()
        .unwrap();
    insta::assert_snapshot!(String::from_utf8_lossy(&out.stdout));
}

/// `--jump`: the node is reached through a bastion (its log shows the channel to the node),
/// with -v reporting the one TCP connection; `--port` stays the node's.
#[test]
fn exec_and_cp_through_a_jump_host() {
    let target = Sshd::start();
    let bastion = Sshd::start_with(testkit::sshd::SshdOptions {
        extra_config: vec!["Match all".to_owned(), "  LogLevel DEBUG1".to_owned()],
        ..Default::default()
    });
    bastion.authorize("root", &target.client_keys()[0].public);
    let jump = format!("root@127.0.0.1:{}", bastion.port());
    let bastion_known = bastion.known_hosts_file();
    let with_jump = |extra: &[&str], stdin: &[u8]| {
        let mut args = vec![
            "--known-hosts",
            bastion_known.to_str().unwrap(),
            "--jump",
            &jump,
            "-v",
        ];
        args.extend_from_slice(extra);
        ship(&target, &args, stdin)
    };
    let out = with_jump(
        &["exec", "root@127.0.0.1", "--", "echo", "via bastion"],
        b"",
    );
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).as_ref()
        ),
        (Some(0), "via bastion\n"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("ship: 0 TCP connection(s)"),
        "the node's session rides on the bastion's connection: {}",
        stderr(&out)
    );
    let wanted = format!("target 127.0.0.1 port {}", target.port());
    assert!(bastion.log().contains(&wanted), "{}", bastion.log());

    let file = target.root().join("via-jump");
    let remote = format!("root@127.0.0.1:{}", file.display());
    let out = with_jump(&["cp", "-", &remote], b"copied\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&file).unwrap(), b"copied\n");

    // The bastion's key must be known too: without its known_hosts file, exit 255.
    let out = ship(
        &target,
        &["--jump", &jump, "exec", "127.0.0.1", "--", "true"],
        b"",
    );
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("127.0.0.1:{}: unknown host key", bastion.port())),
        "{}",
        stderr(&out)
    );

    let out = ship(
        &target,
        &["--jump", "a,,b", "exec", "127.0.0.1", "--", "true"],
        b"",
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("empty jump host"), "{}", stderr(&out));
}
