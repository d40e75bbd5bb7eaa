//! Connecting against a real sshd: keys, agent, known_hosts, timeouts, ssh config.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{connect_as, dest, opts};
use ship::{AuthOutcome, ConnectOptions, ExecOptions, Passphrase, Session, ShipError};
use testkit::sshd::{KeyType, Sshd, SshdOptions};

fn whoami(session: &Session) -> String {
    let out = session
        .exec(&["id", "-un"], ExecOptions::default())
        .expect("exec id");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn rsa_and_ed25519_user_keys() {
    // Debian 12's sshd refuses SHA-1 (ssh-rsa) signatures, so the RSA login proves rsa-sha2.
    let sshd = Sshd::start_with(SshdOptions {
        client_keys: vec![KeyType::Ed25519, KeyType::Rsa, KeyType::Ecdsa],
        ..Default::default()
    });
    for key_type in [KeyType::Ed25519, KeyType::Rsa, KeyType::Ecdsa] {
        let session = connect_as(&sshd, "root", &opts(&sshd, sshd.client_key_of(key_type)))
            .unwrap_or_else(|e| panic!("{key_type:?}: {e}\n{}", sshd.log()));
        assert_eq!(whoami(&session), "root");
    }
}

#[test]
fn encrypted_key_needs_the_right_passphrase() {
    let sshd = Sshd::start();
    let key = sshd.generate_key("locked", KeyType::Ed25519, Some("correct horse"));
    sshd.authorize("root", &key.public);
    let mut o = opts(&sshd, &key.private);

    let err = connect_as(&sshd, "root", &o)
        .err()
        .expect("no passphrase must fail");
    assert!(
        matches!(&err, ShipError::AuthFailed { tried, .. } if tried[0].outcome == AuthOutcome::NeedsPassphrase),
        "{err}"
    );

    o.passphrase = Some(Passphrase("wrong".into()));
    let err = connect_as(&sshd, "root", &o)
        .err()
        .expect("wrong passphrase must fail");
    assert!(err.to_string().contains("wrong passphrase"), "{err}");

    o.passphrase = Some(Passphrase("correct horse".into()));
    assert_eq!(
        whoami(&connect_as(&sshd, "root", &o).expect("right passphrase")),
        "root"
    );

    o.passphrase = None;
    o.ask_passphrase = Some(|_| Some(Passphrase("correct horse".into())));
    assert_eq!(
        whoami(&connect_as(&sshd, "root", &o).expect("passphrase from the callback")),
        "root"
    );
}

struct Agent {
    child: Child,
    socket: PathBuf,
}

impl Agent {
    fn start(dir: &std::path::Path) -> Agent {
        let socket = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .spawn()
            .expect("ssh-agent");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "ssh-agent did not create its socket"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Agent { child, socket }
    }

    fn add(&self, key: &std::path::Path) {
        let status = Command::new("ssh-add")
            .arg("-q")
            .arg(key)
            .env("SSH_AUTH_SOCK", &self.socket)
            .status()
            .expect("ssh-add");
        assert!(status.success());
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ssh_agent_keys() {
    let sshd = Sshd::start();
    let agent = Agent::start(sshd.root());
    // An unauthorized key first: the agent's keys are tried in turn.
    agent.add(
        &sshd
            .generate_key("stranger", KeyType::Ed25519, None)
            .private,
    );
    agent.add(sshd.client_key());
    let o = ConnectOptions {
        identities: vec![],
        use_agent: true,
        agent_socket: Some(agent.socket.clone()),
        ..opts(&sshd, sshd.client_key())
    };
    assert_eq!(
        whoami(&connect_as(&sshd, "root", &o).expect("agent login")),
        "root"
    );
}

/// `IdentitiesOnly yes` as OpenSSH reads it: the agent still signs, but only with the keys of
/// the identity files (matched through their `.pub`), so an encrypted key loaded in the agent
/// needs no passphrase, and the agent's other keys are not offered.
#[test]
fn identities_only_limits_the_agent_to_the_identity_files() {
    let sshd = Sshd::start();
    let agent = Agent::start(sshd.root());
    let locked = sshd.generate_key("locked", KeyType::Ed25519, Some("correct horse"));
    sshd.authorize("root", &locked.public);
    // ssh-add reads the passphrase from an askpass program when told to.
    let askpass = sshd.root().join("askpass");
    std::fs::write(&askpass, "#!/bin/sh\necho 'correct horse'\n").unwrap();
    std::fs::set_permissions(
        &askpass,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let added = Command::new("ssh-add")
        .arg("-q")
        .arg(&locked.private)
        .env("SSH_AUTH_SOCK", &agent.socket)
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", "none")
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(added.success(), "ssh-add of the locked key");
    agent.add(sshd.client_key());
    let config = sshd.root().join("ssh_config");
    let write_config = |identity: &std::path::Path| {
        std::fs::write(
            &config,
            format!(
                "Host node\n  HostName 127.0.0.1\n  Port {}\n  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n",
                sshd.port(),
                identity.display(),
                sshd.known_hosts_file().display()
            ),
        )
        .unwrap();
    };
    let o = ConnectOptions {
        ssh_config: Some(config.clone()),
        use_agent: true,
        agent_socket: Some(agent.socket.clone()),
        ..ConnectOptions::default()
    };
    // No passphrase given: only the agent's copy of the locked key can log in.
    write_config(&locked.private);
    let session = Session::connect(&ship::Destination::new("node"), &o)
        .unwrap_or_else(|e| panic!("the agent signs for the identity file: {e}"));
    assert_eq!(whoami(&session), "root");
    // An identity file the server does not accept: the agent's other (authorized) key must
    // not be offered in its place.
    let stranger = sshd.generate_key("stranger", KeyType::Ed25519, None);
    write_config(&stranger.private);
    let err = Session::connect(&ship::Destination::new("node"), &o)
        .err()
        .expect("only the stranger key may be offered");
    let ShipError::AuthFailed { tried, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(tried.len(), 1, "{err}");
    assert_eq!(tried[0].key, stranger.private.display().to_string());
}

#[test]
fn wrong_key_and_wrong_user_say_what_was_tried() {
    let sshd = Sshd::start();
    let stranger = sshd.generate_key("stranger", KeyType::Ed25519, None);
    let err = connect_as(&sshd, "root", &opts(&sshd, &stranger.private))
        .err()
        .expect("must fail");
    let text = err.to_string();
    assert!(err.is_connection_failure());
    assert!(
        text.starts_with("root@127.0.0.1: authentication failed; the server allows: publickey"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{}: rejected by the server",
            stranger.private.display()
        )),
        "{text}"
    );

    let err = connect_as(&sshd, "nobody-here", &opts(&sshd, sshd.client_key()))
        .err()
        .expect("must fail");
    assert!(
        err.to_string()
            .starts_with("nobody-here@127.0.0.1: authentication failed"),
        "{err}"
    );

    let missing = sshd.root().join("no-such-key");
    let err = connect_as(&sshd, "root", &opts(&sshd, &missing))
        .err()
        .expect("must fail");
    assert!(
        err.to_string().contains("no-such-key: file not found"),
        "{err}"
    );
}

fn fingerprint(public_key: &std::path::Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(public_key)
        .output()
        .expect("ssh-keygen -l");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_owned()
}

#[test]
fn unknown_host_is_refused_then_accepted_with_accept_new() {
    let sshd = Sshd::start();
    let known = sshd.root().join("fresh/known_hosts");
    let o = ConnectOptions {
        known_hosts: vec![known.clone()],
        ..opts(&sshd, sshd.client_key())
    };

    let err = connect_as(&sshd, "root", &o)
        .err()
        .expect("unknown host must be refused");
    let text = err.to_string();
    assert!(matches!(err, ShipError::UnknownHostKey { .. }), "{text}");
    assert!(
        text.contains(&fingerprint(&sshd.host_keys()[0].public)),
        "{text}"
    );
    assert!(text.contains("--accept-new"), "{text}");
    assert!(!known.exists(), "refusing must not write known_hosts");

    connect_as(
        &sshd,
        "root",
        &ConnectOptions {
            accept_new: true,
            ..o.clone()
        },
    )
    .expect("accept-new");
    let recorded = std::fs::read_to_string(&known).expect("known_hosts written");
    assert_eq!(recorded, format!("{}\n", sshd.known_hosts_lines()[0]));
    connect_as(&sshd, "root", &o).expect("strict check after recording");
}

#[test]
fn changed_host_key_is_refused_even_with_accept_new() {
    let sshd = Sshd::start();
    let other = Sshd::start();
    // `other`'s key recorded under `sshd`'s name: what a man in the middle looks like.
    let known = sshd.root().join("changed_known_hosts");
    let line = other.known_hosts_lines()[0].replace(
        &format!(":{} ", other.port()),
        &format!(":{} ", sshd.port()),
    );
    std::fs::write(&known, format!("# comment\n{line}\n")).unwrap();
    let o = ConnectOptions {
        known_hosts: vec![known.clone()],
        accept_new: true,
        ..opts(&sshd, sshd.client_key())
    };
    let err = connect_as(&sshd, "root", &o)
        .err()
        .expect("changed key must be refused");
    let text = err.to_string();
    assert!(
        matches!(err, ShipError::ChangedHostKey { line: 2, .. }),
        "{text}"
    );
    assert!(
        text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{text}"
    );
    assert!(
        text.contains(&fingerprint(&sshd.host_keys()[0].public)),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(&known).unwrap().lines().count(),
        2,
        "must not record anything"
    );
}

#[test]
fn hashed_and_port_forms_of_known_hosts() {
    let sshd = Sshd::start();
    let known = sshd.known_hosts_file();
    let ok = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&known)
        .output()
        .expect("ssh-keygen -H")
        .status
        .success();
    assert!(ok);
    assert!(std::fs::read_to_string(&known).unwrap().starts_with("|1|"));
    connect_as(&sshd, "root", &opts(&sshd, sshd.client_key()))
        .expect("hashed [127.0.0.1]:port entry");

    // A port-22 entry (`127.0.0.1 key`) does not vouch for another port.
    let plain = sshd.root().join("plain_known_hosts");
    let line =
        sshd.known_hosts_lines()[0].replace(&format!("[127.0.0.1]:{}", sshd.port()), "127.0.0.1");
    std::fs::write(&plain, format!("{line}\n")).unwrap();
    let o = ConnectOptions {
        known_hosts: vec![plain],
        ..opts(&sshd, sshd.client_key())
    };
    assert!(matches!(
        connect_as(&sshd, "root", &o),
        Err(ShipError::UnknownHostKey { .. })
    ));
}

#[test]
fn only_the_recorded_host_key_type_is_negotiated() {
    let sshd = Sshd::start_with(SshdOptions {
        host_keys: vec![KeyType::Ed25519, KeyType::Rsa, KeyType::Ecdsa],
        ..Default::default()
    });
    for index in 0..3 {
        let known = sshd.root().join(format!("only_{index}"));
        std::fs::write(&known, format!("{}\n", sshd.known_hosts_lines()[index])).unwrap();
        let o = ConnectOptions {
            known_hosts: vec![known],
            ..opts(&sshd, sshd.client_key())
        };
        connect_as(&sshd, "root", &o).unwrap_or_else(|e| panic!("key {index}: {e}"));
    }
    // Known as RSA only, but the server has no RSA key any more.
    let ed_only = Sshd::start();
    let known = ed_only.root().join("rsa_only");
    let rsa_line = sshd.known_hosts_lines()[1].replace(
        &format!(":{} ", sshd.port()),
        &format!(":{} ", ed_only.port()),
    );
    std::fs::write(&known, format!("{rsa_line}\n")).unwrap();
    let o = ConnectOptions {
        known_hosts: vec![known],
        accept_new: true,
        ..opts(&ed_only, ed_only.client_key())
    };
    let err = connect_as(&ed_only, "root", &o).err().expect("must refuse");
    assert!(matches!(err, ShipError::NoKnownHostKeyType { .. }), "{err}");
}

#[test]
fn revoked_host_key_is_refused() {
    let sshd = Sshd::start();
    let known = sshd.known_hosts_file();
    let mut text = std::fs::read_to_string(&known).unwrap();
    text.push_str(&format!(
        "@revoked * {}\n",
        sshd.host_keys()[0].public_line()
    ));
    std::fs::write(&known, text).unwrap();
    let err = connect_as(&sshd, "root", &opts(&sshd, sshd.client_key()))
        .err()
        .expect("must refuse");
    assert!(
        matches!(err, ShipError::RevokedHostKey { line: 2, .. }),
        "{err}"
    );
}

#[test]
fn silent_port_times_out_and_closed_port_is_refused() {
    let sshd = Sshd::start();
    // Accepts TCP (the kernel does) but never speaks SSH: only the handshake timeout saves us.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut o = opts(&sshd, sshd.client_key());
    o.connect_timeout = Duration::from_secs(1);
    let mut d = dest(&sshd, "root");
    d.port = Some(silent.local_addr().unwrap().port());
    let start = Instant::now();
    let err = Session::connect(&d, &o).err().expect("must time out");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    assert!(matches!(err, ShipError::ConnectTimeout { .. }), "{err}");
    assert!(err.is_connection_failure());

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    d.port = Some(closed);
    let err = Session::connect(&d, &o).err().expect("must be refused");
    assert!(err.to_string().contains("onnection refused"), "{err}");
}

#[test]
fn ssh_config_alias_and_refused_proxy_command() {
    let sshd = Sshd::start();
    let config = sshd.root().join("ssh_config");
    std::fs::write(
        &config,
        format!(
            "Host node\n  HostName 127.0.0.1\n  Port {}\n  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n\nHost hop\n  ProxyCommand nc %h %p\n",
            sshd.port(),
            sshd.client_key().display(),
            sshd.known_hosts_file().display()
        ),
    )
    .unwrap();
    let o = ConnectOptions {
        ssh_config: Some(config.clone()),
        use_agent: false,
        ..ConnectOptions::default()
    };
    let session =
        Session::connect(&ship::Destination::new("node"), &o).expect("alias from the config");
    assert_eq!(whoami(&session), "root");
    let err = Session::connect(&ship::Destination::new("hop"), &o)
        .err()
        .expect("ProxyCommand must be refused (ProxyJump is honoured: tests/jump.rs)");
    assert!(
        err.to_string().contains("ssh_config:10: proxycommand"),
        "{err}"
    );
}
