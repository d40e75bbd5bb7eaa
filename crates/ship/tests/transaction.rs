//! The one remote transaction: over a real sshd, and as a local child process.

mod common;

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{connect, mode_of, owner_of, temp_files};
use ship::{
    ApplyError, ExecOptions, Phase, ShipError, Source, Sudo, Transaction, Until, UploadOptions,
};
use testkit::noise;
use testkit::sshd::Sshd;

const ROOT: ExecOptions = ExecOptions { sudo: Sudo::Yes };

fn path(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

#[test]
fn a_transaction_lands_every_file_in_one_command() {
    let sshd = Sshd::start();
    let session = connect(&sshd);
    let audit = sshd.root().join("var/lib/k8s audit");
    let manifests = sshd.root().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(manifests.join("kube-apiserver.yaml"), b"old\n").unwrap();
    let binary = noise(70_000, 3);
    let mut tx = Transaction::new();
    tx.root_owned()
        .private_dir(path(&audit))
        .file(path(&audit.join("policy.yaml")), 0o600, &b"policy"[..])
        .file(path(&audit.join("it's $(x)")), 0o644, &binary[..])
        .new_file(path(&audit.join("backup")), 0o600, &b"old\n"[..])
        .file(
            path(&manifests.join("kube-apiserver.yaml")),
            0o600,
            &b"new\n"[..],
        );
    let before = session.stats().round_trips;
    session.apply(&mut tx, ROOT).unwrap();
    assert_eq!(session.stats().round_trips - before, 3, "open, exec, input");
    assert_eq!((mode_of(&audit), owner_of(&audit)), (0o700, 0));
    assert_eq!(std::fs::read(audit.join("policy.yaml")).unwrap(), b"policy");
    assert!(std::fs::read(audit.join("it's $(x)")).unwrap() == binary);
    assert_eq!(mode_of(&audit.join("it's $(x)")), 0o644);
    assert_eq!(std::fs::read(audit.join("backup")).unwrap(), b"old\n");
    assert_eq!(
        std::fs::read(manifests.join("kube-apiserver.yaml")).unwrap(),
        b"new\n"
    );
    assert!(temp_files(&audit).is_empty() && temp_files(&manifests).is_empty());

    // Only directories: no input to send, so no round trip for it.
    let mut tx = Transaction::new();
    tx.private_dir(path(&sshd.root().join("only/dirs")));
    let before = session.stats().round_trips;
    session.apply(&mut tx, ROOT).unwrap();
    assert_eq!(session.stats().round_trips - before, 2, "open, exec");
    assert!(sshd.root().join("only/dirs").is_dir());
}

/// An existing directory is used as it is: a private_dir op never chmods or chowns it.
#[test]
fn an_existing_directory_keeps_its_mode_and_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("var-log");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut tx = Transaction::new();
    tx.root_owned().private_dir(path(&shared)).file(
        path(&shared.join("audit.log")),
        0o600,
        &b"x"[..],
    );
    tx.apply_local("local").unwrap();
    assert_eq!(mode_of(&shared), 0o755);
    let fresh = dir.path().join("fresh");
    let mut tx = Transaction::new();
    tx.private_dir(path(&fresh));
    tx.apply_local("local").unwrap();
    assert_eq!(mode_of(&fresh), 0o700);
}

/// chown clears set-user-ID bits, so the mode is set after the owner.
#[test]
fn root_owned_files_keep_their_whole_mode() {
    let dir = tempfile::tempdir().unwrap();
    let tool = dir.path().join("tool");
    let mut tx = Transaction::new();
    tx.root_owned()
        .file(path(&tool), 0o4755, &b"#!/bin/sh\n"[..]);
    tx.apply_local("local").unwrap();
    assert_eq!((mode_of(&tool), owner_of(&tool)), (0o4755, 0));
}

#[test]
fn staged_names_are_unique_per_run_and_concurrent_runs_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let target = path(&dir.path().join("webhook.yaml"));
    let staged = |tx: &Transaction| tx.invocation("local").unwrap().args[4].clone();
    let (mut a, mut b) = (Transaction::new(), Transaction::new());
    a.file(target.clone(), 0o600, &b"a"[..]);
    b.file(target.clone(), 0o600, &b"b"[..]);
    assert_ne!(staged(&a), staged(&b));
    assert!(
        staged(&a).starts_with(".webhook.yaml.ship-"),
        "{}",
        staged(&a)
    );

    // Two writers of the same files at once: each run lands whole, and says so truthfully.
    let other = path(&dir.path().join("policy.yaml"));
    std::thread::scope(|scope| {
        for writer in 0..2u8 {
            let (target, other) = (target.clone(), other.clone());
            scope.spawn(move || {
                for round in 0..20 {
                    let body = vec![b'a' + writer; 10_000 + round];
                    let mut tx = Transaction::new();
                    tx.file(other.clone(), 0o600, &body[..])
                        .file(target.clone(), 0o600, &body[..]);
                    tx.apply_local("local")
                        .unwrap_or_else(|e| panic!("writer {writer} round {round}: {e}"));
                }
            });
        }
    });
    assert!(
        temp_files(dir.path()).is_empty(),
        "{:?}",
        temp_files(dir.path())
    );
}

#[test]
fn a_failure_before_the_commit_replaces_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("keep");
    std::fs::write(&keep, b"old").unwrap();
    let backup = dir.path().join("backup");
    std::fs::write(&backup, b"first backup").unwrap();

    // A no-clobber file whose target exists.
    let mut tx = Transaction::new();
    tx.file(path(&keep), 0o600, &b"new"[..])
        .new_file(path(&backup), 0o600, &b"second backup"[..]);
    let err = tx.apply_local("local").unwrap_err();
    assert_eq!(err.phase, Phase::BeforeCommit, "{err}");
    assert!(
        matches!(&*err.cause, ShipError::RemotePathExists { path, .. } if *path == path_of(&backup)),
        "{err}"
    );
    assert!(
        err.committed.is_empty() && err.untouched.len() == 2,
        "{err:?}"
    );
    assert!(err.to_string().ends_with("(nothing was replaced)"), "{err}");
    assert_eq!(std::fs::read(&keep).unwrap(), b"old");
    assert_eq!(std::fs::read(&backup).unwrap(), b"first backup");

    // A missing directory, named.
    let mut tx = Transaction::new();
    tx.file(path(&keep), 0o600, &b"new"[..]).file(
        path(&dir.path().join("nowhere/x")),
        0o600,
        &b"x"[..],
    );
    let err = tx.apply_local("local").unwrap_err();
    assert_eq!(err.phase, Phase::BeforeCommit);
    assert!(
        matches!(*err.cause, ShipError::RemotePathMissing { .. }),
        "{err}"
    );
    assert_eq!(
        err.failed.as_deref(),
        Some(&*path_of(&dir.path().join("nowhere/x")))
    );
    assert_eq!(std::fs::read(&keep).unwrap(), b"old");
    assert!(
        temp_files(dir.path()).is_empty(),
        "{:?}",
        temp_files(dir.path())
    );
}

fn path_of(p: &Path) -> String {
    path(p)
}

/// Makes `dir` appear as it is read: by then the node has checked every target, so the rename
/// onto it fails in the middle of the commit.
struct Saboteur {
    dir: std::path::PathBuf,
    data: Vec<u8>,
    sent: usize,
}

impl Read for Saboteur {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.sent == 0 {
            std::fs::create_dir_all(&self.dir).unwrap();
        }
        let n = buf.len().min(self.data.len() - self.sent);
        buf[..n].copy_from_slice(&self.data[self.sent..self.sent + n]);
        self.sent += n;
        Ok(n)
    }
}

#[test]
fn a_failure_during_the_commit_names_what_was_replaced() {
    let sshd = Sshd::start();
    let session = connect(&sshd);
    let dir = sshd.root().join("k");
    std::fs::create_dir(&dir).unwrap();
    let (first, second, last) = (dir.join("first"), dir.join("second"), dir.join("last"));
    std::fs::write(&last, b"old").unwrap();
    // 8 MiB ahead of the saboteur: more than the channel window and the pipe hold, so the
    // node has passed its checks before the directory appears.
    let big = noise(8 << 20, 5);
    let mut saboteur = Saboteur {
        dir: second.clone(),
        data: b"last".to_vec(),
        sent: 0,
    };
    let mut tx = Transaction::new();
    tx.file(path(&first), 0o600, &big[..])
        .file(path(&second), 0o600, &b"2"[..])
        .file_from(path(&last), 0o600, &mut saboteur, 4);
    let err: ApplyError = session.apply(&mut tx, ExecOptions::default()).unwrap_err();
    assert_eq!(err.phase, Phase::DuringCommit, "{err}");
    assert_eq!(err.committed, [path(&first)]);
    assert_eq!(err.untouched, [path(&second), path(&last)]);
    assert_eq!(err.failed.as_deref(), Some(&*path(&second)));
    assert!(
        err.to_string().contains(&format!(
            "while committing: replaced {}; not replaced {}, {}",
            first.display(),
            second.display(),
            last.display()
        )),
        "{err}"
    );
    assert!(std::fs::read(&first).unwrap() == big);
    assert_eq!(std::fs::read(&last).unwrap(), b"old");
    assert!(temp_files(&dir).is_empty(), "{:?}", temp_files(&dir));
}

/// Where GNU head is missing, the node cuts the stream with dd, byte by byte: slower, exact.
#[test]
fn without_gnu_head_the_files_are_still_cut_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("head");
    std::fs::write(&fake, "#!/bin/sh\necho 'BusyBox head' >&2; exit 1\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (a, b, c) = (noise(3000, 1), noise(0, 2), noise(5000, 3));
    let mut tx = Transaction::new();
    tx.file(path(&dir.path().join("a")), 0o600, &a[..])
        .file(path(&dir.path().join("b")), 0o600, &b[..])
        .file(path(&dir.path().join("c")), 0o600, &c[..]);
    let invocation = tx.invocation("local").unwrap();
    let input = tx.input_bytes().unwrap();
    let mut child = std::process::Command::new("sh")
        .args(&invocation.argv()[1..])
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    tx.outcome(
        "local",
        out.status.code().unwrap(),
        &out.stdout,
        &out.stderr,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(std::fs::read(dir.path().join("a")).unwrap() == a);
    assert!(std::fs::read(dir.path().join("b")).unwrap() == b);
    assert!(std::fs::read(dir.path().join("c")).unwrap() == c);
}

/// ship's temp files that nobody has touched for an hour (a killed `ship cp -` leaves one)
/// go with the next upload into their directory; a fresh one (a running upload's) stays.
#[test]
fn uploads_remove_stale_temp_files_and_leave_fresh_ones() {
    let sshd = Sshd::start();
    let session = connect(&sshd);
    let dir = sshd.root().join("d");
    std::fs::create_dir(&dir).unwrap();
    let stale = [
        ".ship.Ab3dEf9h",
        ".kube-apiserver.yaml.ship-0123456789abcdef.tmp",
    ];
    let fresh = [".ship.Zz3dEf9h", ".webhook.yaml.ship-fedcba9876543210.tmp"];
    let others = [".ship-notes", "notes.ship-0123456789abcdef.tmp", ".ship"];
    let upload = |how: usize| {
        let target = path(&dir.join("target"));
        let opts = UploadOptions {
            mode: 0o600,
            sudo: Sudo::Yes,
        };
        match how {
            0 => session.upload(Source::Bytes(b"x"), &target, opts),
            1 => {
                let big = noise((16 << 20) + 1, 9);
                session.upload(Source::Stream(&mut &big[..]), &target, opts)
            }
            _ => {
                let (mut one, mut two): (&[u8], &[u8]) = (b"1", b"2");
                let mut batch = vec![
                    ship::Upload {
                        source: &mut one,
                        len: 1,
                        remote_path: target.clone(),
                    },
                    ship::Upload {
                        source: &mut two,
                        len: 1,
                        remote_path: format!("{target}2"),
                    },
                ];
                session.upload_batch(&mut batch, opts).map_err(|e| *e.cause)
            }
        }
    };
    for how in 0..3 {
        for name in stale.iter().chain(&others) {
            touch(&dir.join(name), "2 hours ago");
        }
        for name in fresh {
            touch(&dir.join(name), "1 minute ago");
        }
        upload(how).unwrap_or_else(|e| panic!("upload {how}: {e}"));
        for name in stale {
            assert!(!dir.join(name).exists(), "upload {how} left {name}");
        }
        for name in fresh.iter().chain(&others) {
            assert!(dir.join(name).exists(), "upload {how} removed {name}");
        }
    }
}

fn touch(path: &Path, when: &str) {
    let status = std::process::Command::new("touch")
        .arg("-d")
        .arg(when)
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// A held command lives as long as its channel: other commands run meanwhile, and dropping it
/// (or losing the session) ends its input, so it exits.
#[test]
fn a_held_command_ends_with_its_channel() {
    let sshd = Sshd::start();
    let session = connect(&sshd);
    let flag = sshd.root().join("held");
    let script = format!(
        // Writing to a closed channel is a SIGPIPE, after which no EXIT trap runs by itself.
        "trap 'rm -f {f}' EXIT; trap 'exit 1' HUP PIPE TERM; touch {f}; echo starting; echo ready; cat >/dev/null; echo done >&2",
        f = flag.display()
    );
    let argv = ["sh", "-c", script.as_str()];

    let mut child = session.spawn(&argv, ROOT).unwrap();
    match child.read_until_line("ready").unwrap() {
        Until::Line { before } => assert_eq!(before, b"starting\n"),
        Until::Exited(out) => panic!("exited early: {out:?}"),
    }
    let probe = ["test", "-e", flag.to_str().unwrap()];
    let out = session.exec(&probe, ExecOptions::default()).unwrap();
    assert_eq!(out.status, 0, "the holder runs while another command does");
    let out = child.finish().unwrap();
    assert_eq!((out.status, out.stderr.as_slice()), (0, &b"done\n"[..]));
    assert!(!flag.exists(), "finish() waits for the command to end");

    let child = session.spawn(&argv, ROOT).unwrap();
    let mut child = child;
    assert!(matches!(
        child.read_until_line("ready").unwrap(),
        Until::Line { .. }
    ));
    drop(child);
    assert!(!flag.exists(), "dropping ends the command");

    // A command that ends first says so, with its output.
    let mut early = session
        .spawn(
            &["sh", "-c", "echo held by pid 42; exit 3"],
            ExecOptions::default(),
        )
        .unwrap();
    match early.read_until_line("ready").unwrap() {
        Until::Exited(out) => {
            assert_eq!((out.status, out.stdout), (3, b"held by pid 42\n".to_vec()))
        }
        Until::Line { .. } => panic!("no ready line was printed"),
    }
    drop(early);

    // The session goes away without the child being dropped (as when our process dies):
    // sshd closes the channel, and the command sees the end of its input.
    let mut child = session.spawn(&argv, ROOT).unwrap();
    assert!(matches!(
        child.read_until_line("ready").unwrap(),
        Until::Line { .. }
    ));
    std::mem::forget(child);
    drop(session);
    let deadline = Instant::now() + Duration::from_secs(5);
    while flag.exists() {
        assert!(
            Instant::now() < deadline,
            "the command outlived its session"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
