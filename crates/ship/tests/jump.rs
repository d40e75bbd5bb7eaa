//! Jump hosts (ProxyJump, --jump) and tunnels, against real sshds on loopback: a second sshd
//! is the bastion.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::dest;
use ship::{
    ConnectOptions, Destination, ExecOptions, Jump, Session, ShipError, Source, UploadOptions,
    jump_hops,
};
use testkit::sshd::{Sshd, SshdOptions};

/// A bastion whose log shows each direct-tcpip open (sshd logs them at DEBUG1 only; a Match
/// block overrides the harness's LogLevel for the sessions).
fn bastion() -> Sshd {
    Sshd::start_with(SshdOptions {
        extra_config: vec!["Match all".to_owned(), "  LogLevel DEBUG1".to_owned()],
        ..SshdOptions::default()
    })
}

/// The target's client key works on every host, and every host's key is known.
fn opts_for(target: &Sshd, hops: &[&Sshd]) -> ConnectOptions {
    let mut known_hosts = vec![target.known_hosts_file()];
    for hop in hops {
        hop.authorize(hop.user(), &target.client_keys()[0].public);
        known_hosts.push(hop.known_hosts_file());
    }
    ConnectOptions {
        identities: vec![target.client_key().to_owned()],
        known_hosts,
        ssh_config: Some(PathBuf::from("/dev/null")),
        use_agent: false,
        connect_timeout: Duration::from_secs(5),
        ..ConnectOptions::default()
    }
}

fn run(session: &Session, script: &str) -> String {
    let out = session
        .exec(&["sh", "-c", script], ExecOptions::default())
        .unwrap_or_else(|e| panic!("{script}: {e}"));
    assert_eq!(
        out.status,
        0,
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn command_and_upload_go_through_the_bastion_on_its_one_connection() {
    let target = Sshd::start();
    let bastion = bastion();
    let opts = opts_for(&target, &[&bastion]);
    let jump = Jump::connect(&[dest(&bastion, "root")], &opts)
        .unwrap_or_else(|e| panic!("{e}\n{}", bastion.log()));
    assert_eq!(jump.describe(), "127.0.0.1");
    let session = Session::connect_via(&dest(&target, "root"), &opts, &jump)
        .unwrap_or_else(|e| panic!("{e}\n{}", bastion.log()));
    assert_eq!(run(&session, "echo through"), "through\n");
    let file = target.root().join("uploaded");
    session
        .upload(
            Source::Bytes(b"via bastion\n"),
            file.to_str().unwrap(),
            UploadOptions::default(),
        )
        .unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), b"via bastion\n");

    // The bastion opened the channel to the target, and the target's one client is the
    // bastion: both sides of the path are on record.
    let wanted = format!("target 127.0.0.1 port {}", target.port());
    let log = bastion.log();
    assert!(
        log.lines()
            .any(|l| l.contains("direct_tcpip") && l.contains(&wanted)),
        "{log}"
    );
    assert_eq!(
        bastion.session_pids().len(),
        1,
        "one connection to the bastion"
    );
    assert_eq!(
        target.session_pids().len(),
        1,
        "one connection to the target"
    );
    assert_eq!(jump.stats().tcp_connections, 1);
    assert_eq!(jump.stats().round_trips, 1, "one channel open");
    assert_eq!(session.stats().tcp_connections, 0);
}

#[test]
fn connect_honours_the_jump_option_and_a_refusing_bastion_fails_it() {
    let target = Sshd::start();
    let bastion = Sshd::start_with(SshdOptions {
        extra_config: vec![format!("PermitOpen 127.0.0.1:{}", target.port())],
        ..SshdOptions::default()
    });
    let mut opts = opts_for(&target, &[&bastion]);
    opts.jump = vec![dest(&bastion, "root")];
    let session = Session::connect(&dest(&target, "root"), &opts).unwrap();
    assert_eq!(run(&session, "echo ok"), "ok\n");
    drop(session);

    // A target the bastion may not open: proves the path really goes through it.
    let other = Sshd::start();
    let mut opts = opts_for(&other, &[&bastion]);
    opts.jump = vec![dest(&bastion, "root")];
    let err = Session::connect(&dest(&other, "root"), &opts)
        .err()
        .expect("the bastion refuses this target");
    assert!(matches!(err, ShipError::JumpChannel { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with("through jump host 127.0.0.1: cannot reach 127.0.0.1:"),
        "{text}"
    );
    assert!(err.is_connection_failure());
}

#[test]
fn the_target_key_is_verified_through_the_bastion_and_the_bastion_key_too() {
    let target = Sshd::start();
    let bastion = Sshd::start();
    let mut opts = opts_for(&target, &[&bastion]);
    // Known bastion, unknown target.
    opts.known_hosts = vec![bastion.known_hosts_file()];
    let jump = Jump::connect(&[dest(&bastion, "root")], &opts).unwrap();
    let err = Session::connect_via(&dest(&target, "root"), &opts, &jump)
        .err()
        .expect("unknown target key");
    assert!(
        matches!(err, ShipError::UnknownHostKey { port, .. } if port == target.port()),
        "{err}"
    );

    // Known bastion, changed target key: the target's address recorded with another key.
    let changed_file = target.root().join("changed_known_hosts");
    std::fs::write(
        &changed_file,
        format!(
            "[127.0.0.1]:{} {}\n",
            target.port(),
            bastion.host_keys()[0].public_line()
        ),
    )
    .unwrap();
    opts.known_hosts = vec![bastion.known_hosts_file(), changed_file];
    let err = Session::connect_via(&dest(&target, "root"), &opts, &jump)
        .err()
        .expect("changed target key");
    assert!(matches!(err, ShipError::ChangedHostKey { .. }), "{err}");

    // Unknown bastion: refused before anything goes through it.
    opts.known_hosts = vec![target.known_hosts_file()];
    let err = Jump::connect(&[dest(&bastion, "root")], &opts)
        .err()
        .expect("unknown bastion key");
    assert!(
        matches!(err, ShipError::UnknownHostKey { port, .. } if port == bastion.port()),
        "{err}"
    );
    assert_eq!(target.session_pids().len(), 0);
}

#[test]
fn two_hops_and_two_sessions_sharing_one_jump_from_two_threads() {
    let target = Sshd::start();
    let outer = bastion();
    let inner = bastion();
    let opts = opts_for(&target, &[&outer, &inner]);
    let hops = Destination::parse_jump(&format!(
        "root@127.0.0.1:{},root@127.0.0.1:{}",
        outer.port(),
        inner.port()
    ))
    .unwrap();
    let jump = Jump::connect(&hops, &opts).unwrap_or_else(|e| panic!("{e}\n{}", inner.log()));
    assert_eq!(jump.describe(), "127.0.0.1 -> 127.0.0.1");
    let wanted = format!("target 127.0.0.1 port {}", inner.port());
    assert!(outer.log().contains(&wanted), "{}", outer.log());

    let workers: Vec<_> = (0..2)
        .map(|n| {
            let jump = Arc::clone(&jump);
            let opts = opts.clone();
            let to = dest(&target, "root");
            std::thread::spawn(move || {
                let session = Session::connect_via(&to, &opts, &jump)?;
                let mut outputs = Vec::new();
                for round in 0..20 {
                    let out = session.exec(
                        &[
                            "sh",
                            "-c",
                            &format!("head -c 100000 /dev/zero | wc -c; echo {n}.{round}"),
                        ],
                        ExecOptions::default(),
                    )?;
                    outputs.push(String::from_utf8_lossy(&out.stdout).into_owned());
                }
                Ok::<_, ShipError>((outputs, session.stats()))
            })
        })
        .collect();
    for (n, worker) in workers.into_iter().enumerate() {
        let (outputs, stats) = worker.join().unwrap().unwrap();
        for (round, out) in outputs.iter().enumerate() {
            assert_eq!(out, &format!("100000\n{n}.{round}\n"));
        }
        assert_eq!(stats.tcp_connections, 0);
    }
    // One TCP connection for two nodes behind two hops: the first hop's.
    assert_eq!(jump.stats().tcp_connections, 1);
    assert_eq!(outer.session_pids().len(), 1);
    assert_eq!(inner.session_pids().len(), 1);
    // The sessions ended with their threads; the target's log keeps both logins.
    assert_eq!(
        target.log().matches("Accepted publickey").count(),
        2,
        "{}",
        target.log()
    );
    assert!(
        inner
            .log()
            .contains(&format!("target 127.0.0.1 port {}", target.port()))
    );
}

#[test]
fn proxy_jump_from_the_ssh_config_and_proxy_jump_none() {
    let target = Sshd::start();
    let bastion = bastion();
    let opts = opts_for(&target, &[&bastion]);
    let config = target.root().join("ssh_config");
    std::fs::write(
        &config,
        format!(
            "Host node\n  HostName 127.0.0.1\n  Port {target}\n  ProxyJump bastion\n\n\
             Host direct\n  HostName 127.0.0.1\n  Port {target}\n  ProxyJump none\n\n\
             Host bastion\n  HostName 127.0.0.1\n  Port {bastion}\n  User root\n\n\
             Host nested\n  HostName 127.0.0.1\n  Port {target}\n  ProxyJump node\n\n\
             Host commanded\n  ProxyCommand nc %h %p\n  ProxyJump bastion\n",
            target = target.port(),
            bastion = bastion.port(),
        ),
    )
    .unwrap();
    let opts = ConnectOptions {
        ssh_config: Some(config.clone()),
        user: Some("root".to_owned()),
        ..opts
    };
    assert_eq!(
        jump_hops("node", Some(&config)).unwrap(),
        [Destination::new("bastion")]
    );
    assert_eq!(jump_hops("direct", Some(&config)).unwrap(), []);

    let session = Session::connect(&Destination::new("node"), &opts)
        .unwrap_or_else(|e| panic!("{e}\n{}", bastion.log()));
    assert_eq!(run(&session, "echo via config"), "via config\n");
    assert_eq!(session.stats().tcp_connections, 0);
    let opens = |log: &str| log.matches("server_request_direct_tcpip").count();
    let before = opens(&bastion.log());
    assert!(before >= 1, "{}", bastion.log());

    let session = Session::connect(&Destination::new("direct"), &opts).unwrap();
    assert_eq!(run(&session, "echo direct"), "direct\n");
    assert_eq!(session.stats().tcp_connections, 1);
    assert_eq!(opens(&bastion.log()), before, "ProxyJump none goes direct");

    // A jump host with a ProxyJump of its own is refused, not silently flattened.
    let err = Jump::connect(&[Destination::new("node")], &opts)
        .err()
        .expect("nested");
    assert!(matches!(err, ShipError::NestedJump { .. }), "{err}");
    let err = Session::connect(&Destination::new("commanded"), &opts)
        .err()
        .expect("ProxyCommand stays refused");
    assert!(
        err.to_string()
            .contains("proxycommand applies to commanded"),
        "{err}"
    );
    std::fs::write(&config, "Match host x\n  User y\n").unwrap();
    let err = Session::connect(&Destination::new("node"), &opts)
        .err()
        .expect("Match stays refused");
    assert!(err.to_string().contains("`Match`"), "{err}");
}

/// A TCP echo server on 127.0.0.1 for one client.
fn echo_server() -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => stream.write_all(&buf[..n]).unwrap(),
            }
        }
    });
    (port, server)
}

#[test]
fn tunnel_to_a_port_on_the_node_while_a_command_is_held_open() {
    let target = Sshd::start();
    let bastion = bastion();
    let opts = opts_for(&target, &[&bastion]);
    let jump = Jump::connect(&[dest(&bastion, "root")], &opts).unwrap();
    let session = Session::connect_via(&dest(&target, "root"), &opts, &jump).unwrap();
    let mut held = session
        .spawn(&["sh", "-c", "echo held; cat"], ExecOptions::default())
        .unwrap();
    assert!(matches!(
        held.read_until_line("held").unwrap(),
        ship::Until::Line { .. }
    ));

    let (port, server) = echo_server();
    let before = session.stats().round_trips;
    let mut tunnel = session.tunnel("127.0.0.1", port).unwrap();
    assert_eq!(session.stats().round_trips, before + 1);
    assert_eq!(tunnel.target(), format!("127.0.0.1:{port}"));
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut echoed = Vec::new();
    for chunk in payload.chunks(50_000) {
        tunnel.write_all(chunk).unwrap();
        let mut back = vec![0u8; chunk.len()];
        tunnel.read_exact(&mut back).unwrap();
        echoed.extend_from_slice(&back);
    }
    assert!(echoed == payload, "the echo differs");
    // The held command and other commands still work beside the tunnel.
    assert_eq!(run(&session, "echo beside"), "beside\n");
    tunnel.set_read_timeout(Some(Duration::from_millis(300)));
    let started = Instant::now();
    let err = tunnel.read(&mut [0u8; 16]).expect_err("nothing to read");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    tunnel.send_eof().unwrap();
    tunnel.set_read_timeout(Some(Duration::from_secs(10)));
    assert_eq!(
        tunnel.read(&mut [0u8; 16]).unwrap(),
        0,
        "the echo server closed"
    );
    drop(tunnel);
    server.join().unwrap();
    let out = held.finish().unwrap();
    assert_eq!(out.status, 0);

    // A closed port on the node: an error at once, not a hang.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let err = session
        .tunnel("127.0.0.1", closed)
        .err()
        .expect("closed port");
    assert!(matches!(err, ShipError::TunnelOpen { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!(
            "cannot open a tunnel to 127.0.0.1:{closed} from the node"
        )),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(run(&session, "echo still"), "still\n");
}

#[test]
fn a_bastion_that_dies_mid_session_is_a_clear_error() {
    let target = Sshd::start();
    let mut bastion = bastion();
    let opts = opts_for(&target, &[&bastion]);
    let jump = Jump::connect(&[dest(&bastion, "root")], &opts).unwrap();
    let session = Session::connect_via(&dest(&target, "root"), &opts, &jump).unwrap();
    assert_eq!(run(&session, "echo alive"), "alive\n");
    bastion.kill_server();
    let started = Instant::now();
    let err = session
        .exec(&["sh", "-c", "echo never"], ExecOptions::default())
        .expect_err("the bastion is gone");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(err.is_connection_failure(), "{err}");
    let text = err.to_string();
    assert!(text.contains("jump host 127.0.0.1"), "{text}");
    // A new session through the dead jump fails at once too.
    let err = Session::connect_via(&dest(&target, "root"), &opts, &jump)
        .err()
        .expect("dead jump");
    assert!(matches!(err, ShipError::JumpChannel { .. }), "{err}");
}
