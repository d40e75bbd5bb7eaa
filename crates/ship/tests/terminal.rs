//! What only shows on a terminal: the passphrase prompt (echo off) and the progress bar.
//! util-linux `script` (Debian's essential bsdutils) gives the `ship` binary a pseudo-terminal;
//! the test answers the prompt through it, as a person would.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use testkit::sshd::{KeyType, Sshd};

/// `ship` with the test's sshd, known_hosts and only `key`; the rest of `args` as given.
fn ship_line(sshd: &Sshd, key: &std::path::Path, args: &[&str]) -> Vec<String> {
    let mut argv: Vec<String> = vec![
        env!("CARGO_BIN_EXE_ship").into(),
        "--known-hosts".into(),
        sshd.known_hosts_file().display().to_string(),
        "-i".into(),
        key.display().to_string(),
        "--port".into(),
        sshd.port().to_string(),
        "--config".into(),
        "/dev/null".into(),
        "--no-agent".into(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    argv
}

fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// What the terminal showed, and the exit status.
struct Screen {
    text: String,
    status: Option<i32>,
}

/// Runs `argv` on a pseudo-terminal. When the screen shows `prompt`, types `answer` and Enter.
fn on_terminal(argv: &[String], prompt: Option<(&str, &str)>) -> Screen {
    let line: Vec<String> = argv.iter().map(|w| sh_quote(w)).collect();
    let mut child = Command::new("script")
        .args(["-q", "-f", "-e", "-c", &line.join(" "), "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run script(1) from bsdutils");
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut stdin = child.stdin.take();
    let mut screen = Vec::new();
    let mut prompt = prompt;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(chunk) => screen.extend_from_slice(&chunk),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Some((wanted, answer)) = prompt
            && String::from_utf8_lossy(&screen).contains(wanted)
        {
            // The prompt flushes what was typed before echo went off; type after it, like a person.
            std::thread::sleep(Duration::from_millis(200));
            let input = stdin.as_mut().expect("stdin");
            input.write_all(format!("{answer}\r").as_bytes()).unwrap();
            input.flush().unwrap();
            prompt = None;
        }
        assert!(
            Instant::now() < deadline,
            "no end after 60 s; the screen:\n{}",
            String::from_utf8_lossy(&screen)
        );
    }
    drop(stdin);
    let status = child.wait().expect("wait for script").code();
    reader.join().unwrap();
    Screen {
        text: String::from_utf8_lossy(&screen).into_owned(),
        status,
    }
}

#[test]
fn an_encrypted_key_asks_for_its_passphrase_on_the_terminal_without_echo() {
    let sshd = Sshd::start();
    let key = sshd.generate_key("locked", KeyType::Ed25519, Some("correct horse"));
    sshd.authorize("root", &key.public);
    let target = format!("root@{}", sshd.host());
    let argv = ship_line(
        &sshd,
        &key.private,
        &["exec", &target, "--", "echo", "unlocked"],
    );

    let right = on_terminal(&argv, Some(("Enter passphrase for key", "correct horse")));
    assert_eq!(right.status, Some(0), "{}", right.text);
    assert!(
        right.text.contains(&format!(
            "Enter passphrase for key '{}': ",
            key.private.display()
        )),
        "{}",
        right.text
    );
    assert!(right.text.contains("unlocked"), "{}", right.text);
    assert!(
        !right.text.contains("correct horse"),
        "the passphrase was echoed:\n{}",
        right.text
    );

    let wrong = on_terminal(&argv, Some(("Enter passphrase for key", "battery staple")));
    assert_eq!(wrong.status, Some(255), "{}", wrong.text);
    assert!(wrong.text.contains("wrong passphrase"), "{}", wrong.text);
    assert!(!wrong.text.contains("battery staple"), "{}", wrong.text);
    assert!(!wrong.text.contains("unlocked"), "{}", wrong.text);
}

#[test]
fn big_uploads_show_progress_on_a_terminal_and_not_in_a_pipe() {
    let sshd = Sshd::start();
    let big = sshd.root().join("big.bin");
    std::fs::write(&big, testkit::noise(10 << 20, 7)).unwrap();
    let dir = sshd.root().join("up");
    std::fs::create_dir(&dir).unwrap();
    let remote = format!("root@{}:{}/", sshd.host(), dir.display());
    let argv = ship_line(
        &sshd,
        sshd.client_key(),
        &["cp", big.to_str().unwrap(), &remote],
    );

    let screen = on_terminal(&argv, None);
    assert_eq!(screen.status, Some(0), "{}", screen.text);
    assert!(
        screen
            .text
            .contains(&format!("{}/big.bin: 100% 10.5/10.5 MB", dir.display())),
        "{}",
        screen.text
    );
    assert_eq!(screen.text.matches("100%").count(), 1, "{}", screen.text);
    assert_eq!(
        std::fs::read(dir.join("big.bin")).unwrap(),
        std::fs::read(&big).unwrap()
    );

    let piped = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(piped.status.success());
    assert_eq!(
        (piped.stdout.len(), piped.stderr.len()),
        (0, 0),
        "silent in a pipe: {}",
        String::from_utf8_lossy(&piped.stderr)
    );
}
