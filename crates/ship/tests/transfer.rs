//! Uploads, downloads, exec and sudo against a real sshd; the test looks at the files the
//! server wrote directly, since it runs on the same machine.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::{connect, connect_as, dir_owned_by, mode_of, opts, owner_of, uid_of};
use ship::{ExecOptions, ShipError, Source, Sudo, UploadOptions};
use testkit::noise;
use testkit::sshd::Sshd;
use testkit::users::{SudoRule, ensure_user};

const SIZES: [usize; 3] = [0, 1, 10 << 20];

fn sudo_user(sshd: &Sshd, name: &str, rule: SudoRule) -> ship::Session {
    ensure_user(name, rule);
    sshd.authorize(name, &sshd.client_keys()[0].public);
    connect_as(sshd, name, &opts(sshd, sshd.client_key()))
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()))
}

#[test]
fn uploads_and_downloads_keep_every_byte() {
    let sshd = Sshd::start();
    let session = connect(&sshd);
    for (i, &len) in SIZES.iter().enumerate() {
        let data = noise(len, i as u64 + 1);
        let target = sshd.root().join(format!("file-{len}"));
        let remote = target.to_str().unwrap();
        session
            .upload(
                Source::Bytes(&data),
                remote,
                UploadOptions {
                    mode: 0o640,
                    sudo: Sudo::No,
                },
            )
            .unwrap_or_else(|e| panic!("{len}: {e}"));
        assert!(
            std::fs::read(&target).unwrap() == data,
            "{len} bytes: content differs"
        );
        assert_eq!(mode_of(&target), 0o640);
        assert!(
            session.download(remote, Sudo::No).unwrap() == data,
            "{len} bytes: download differs"
        );
        // The streaming path (length not known up front) stages, checks and renames.
        let streamed = sshd.root().join(format!("streamed-{len}"));
        session
            .upload(
                Source::Stream(&mut &data[..]),
                streamed.to_str().unwrap(),
                UploadOptions {
                    mode: 0o600,
                    sudo: Sudo::No,
                },
            )
            .unwrap();
        assert!(std::fs::read(&streamed).unwrap() == data);
        assert_eq!(mode_of(&streamed), 0o600);
    }
    let leftovers: Vec<_> = std::fs::read_dir(sshd.root())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| common::is_temp_name(&e.file_name().to_string_lossy()))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temp files left behind: {leftovers:?}"
    );
}

/// A stream of unknown length: a short one goes up in one channel like a sized upload; one over
/// the 16 MiB kept in memory is staged, checked and renamed in a second channel.
#[test]
fn streams_short_and_long_arrive_whole() {
    let sshd = Sshd::start();
    let session = connect(&sshd);
    for (len, round_trips) in [(4096usize, 3), ((16 << 20) + 1, 5)] {
        let data = noise(len, 77);
        let target = sshd.root().join(format!("stream-{len}"));
        let before = session.stats().round_trips;
        session
            .upload(
                Source::Stream(&mut &data[..]),
                target.to_str().unwrap(),
                UploadOptions {
                    mode: 0o600,
                    sudo: Sudo::Yes,
                },
            )
            .unwrap_or_else(|e| panic!("{len}: {e}"));
        assert_eq!(
            session.stats().round_trips - before,
            round_trips,
            "{len} bytes"
        );
        assert!(
            std::fs::read(&target).unwrap() == data,
            "{len} bytes differ"
        );
        assert_eq!(mode_of(&target), 0o600);
    }
}

#[test]
fn sudo_writes_root_owned_files_the_user_cannot() {
    let sshd = Sshd::start();
    let session = sudo_user(&sshd, "ship-test", SudoRule::NoPassword);
    // Root-only directory, like /etc/kubernetes/manifests.
    let dir = sshd.root().join("root-only");
    std::fs::create_dir(&dir).unwrap();
    for (i, &len) in SIZES.iter().enumerate() {
        let data = noise(len, 100 + i as u64);
        let target = dir.join(format!("file-{len}"));
        let remote = target.to_str().unwrap();
        let err = session
            .upload(
                Source::Bytes(&data),
                remote,
                UploadOptions {
                    mode: 0o600,
                    sudo: Sudo::No,
                },
            )
            .expect_err("must not write without sudo");
        assert!(
            matches!(err, ShipError::RemotePathNotWritable { .. }),
            "{err}"
        );
        session
            .upload(
                Source::Bytes(&data),
                remote,
                UploadOptions {
                    mode: 0o600,
                    sudo: Sudo::Yes,
                },
            )
            .unwrap_or_else(|e| panic!("{len}: {e}"));
        assert!(std::fs::read(&target).unwrap() == data);
        assert_eq!((owner_of(&target), mode_of(&target)), (0, 0o600));
        assert!(session.download(remote, Sudo::Yes).unwrap() == data);
    }
    let unreadable = dir.join("file-1");
    let err = session
        .download(unreadable.to_str().unwrap(), Sudo::No)
        .expect_err("0600 root file");
    assert!(err.to_string().contains("Permission denied"), "{err}");
    // And as the user itself, without sudo, into its own directory.
    let own = dir_owned_by(sshd.root(), "own", "ship-test");
    let target = own.join("mine");
    session
        .upload(
            Source::Bytes(b"x"),
            target.to_str().unwrap(),
            UploadOptions {
                mode: 0o644,
                sudo: Sudo::No,
            },
        )
        .unwrap();
    assert_eq!(owner_of(&target), uid_of("ship-test"));
}

#[test]
fn sudo_that_wants_a_password_fails_fast_and_plainly() {
    let sshd = Sshd::start();
    let session = sudo_user(&sshd, "ship-test-pw", SudoRule::Password);
    let start = Instant::now();
    let err = session
        .exec(&["true"], ExecOptions { sudo: Sudo::Yes })
        .expect_err("sudo -n must refuse");
    assert!(matches!(err, ShipError::SudoNeedsPassword { .. }), "{err}");
    assert!(err.to_string().contains("sudo needs a password"));
    // 10 MiB that nobody reads: the upload must end, not wait for a window that never opens.
    let target = sshd.root().join("never");
    let err = session
        .upload(
            Source::Bytes(&noise(10 << 20, 7)),
            target.to_str().unwrap(),
            UploadOptions {
                mode: 0o600,
                sudo: Sudo::Yes,
            },
        )
        .expect_err("must refuse");
    assert!(matches!(err, ShipError::SudoNeedsPassword { .. }), "{err}");
    assert!(!target.exists());
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn exec_reports_status_stdout_and_stderr() {
    let sshd = Sshd::start();
    let session = connect(&sshd);
    let out = session
        .exec(
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            ExecOptions { sudo: Sudo::No },
        )
        .unwrap();
    assert_eq!(
        (out.status, out.stdout.as_slice(), out.stderr.as_slice()),
        (3, &b"out\n"[..], &b"err\n"[..])
    );
    let err = out.check(session.host(), &["sh"]).unwrap_err();
    assert!(
        err.to_string().ends_with("failed with status 3: err"),
        "{err}"
    );
    assert_eq!(
        session
            .exec(
                &["sh", "-c", "kill -TERM $$"],
                ExecOptions { sudo: Sudo::No }
            )
            .unwrap()
            .status,
        128 + 15
    );
    // Megabytes on stderr before any stdout: both streams share one window.
    let out = session
        .exec(
            &["sh", "-c", "head -c 5000000 /dev/zero >&2; echo done"],
            ExecOptions { sudo: Sudo::No },
        )
        .unwrap();
    assert_eq!(
        (out.stderr.len(), out.stdout.as_slice()),
        (5_000_000, &b"done\n"[..])
    );
    let out = session
        .exec(&["sudo", "-n", "true"], ExecOptions { sudo: Sudo::No })
        .unwrap();
    assert_eq!(out.status, 0, "root's sudo works without a password");
    // No input given: the command reads /dev/null (no EOF is sent), so `cat` ends at once,
    // with and without sudo.
    for sudo in [Sudo::No, Sudo::Yes] {
        let before = session.stats().round_trips;
        let out = session.exec(&["cat"], ExecOptions { sudo }).unwrap();
        assert_eq!((out.status, out.stdout.len()), (0, 0), "{sudo:?}");
        assert_eq!(session.stats().round_trips - before, 2, "open + exec");
    }
}

#[test]
fn hostile_paths_are_just_names() {
    let sshd = Sshd::start();
    let session = connect(&sshd);
    let canary = sshd.root().join("pwned");
    let hostile = [
        "with space",
        "it's",
        "say \"hi\"",
        &format!("$(touch {})", canary.display()),
        &format!("`touch {}`", canary.display()),
        "new\nline",
        "-rf",
        "*",
        "semi;colon&&amp|pipe",
    ];
    for (i, name) in hostile.iter().enumerate() {
        // Hostile directory names too (no '/' inside a component).
        let dir = sshd.root().join(name.replace('/', "_"));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join(name.replace('/', "_"));
        let remote = target.to_str().unwrap();
        let data = noise(100, i as u64 + 50);
        for sudo in [Sudo::No, Sudo::Yes] {
            session
                .upload(
                    Source::Bytes(&data),
                    remote,
                    UploadOptions { mode: 0o600, sudo },
                )
                .unwrap_or_else(|e| panic!("{name:?}: {e}"));
            assert!(std::fs::read(&target).unwrap() == data, "{name:?}");
            assert!(session.download(remote, sudo).unwrap() == data, "{name:?}");
        }
        let out = session
            .exec(&["ls", "-d", remote], ExecOptions { sudo: Sudo::Yes })
            .unwrap();
        assert_eq!(out.stdout, format!("{remote}\n").into_bytes(), "{name:?}");
    }
    assert!(!canary.exists(), "a path was run as a command");
}

#[test]
fn missing_remote_paths_are_named() {
    let sshd = Sshd::start();
    let session = connect(&sshd);
    let missing = sshd.root().join("nope/file");
    let err = session
        .upload(
            Source::Bytes(b"x"),
            missing.to_str().unwrap(),
            UploadOptions {
                mode: 0o600,
                sudo: Sudo::No,
            },
        )
        .unwrap_err();
    assert!(
        matches!(err, ShipError::RemotePathMissing { ref path, .. } if path == missing.to_str().unwrap()),
        "{err}"
    );
    let err = session
        .download(missing.to_str().unwrap(), Sudo::Yes)
        .unwrap_err();
    assert!(matches!(err, ShipError::RemotePathMissing { .. }), "{err}");
    let err = session
        .upload(
            Source::Bytes(b"x"),
            sshd.root().to_str().unwrap(),
            UploadOptions {
                mode: 0o600,
                sudo: Sudo::No,
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("is a directory"), "{err}");
}

/// Serves `limit` bytes of noise, and pulls the plug on the server halfway through.
struct Saboteur<'a> {
    sshd: &'a mut Sshd,
    sent: usize,
    limit: usize,
}

impl Read for Saboteur<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.sent >= self.limit / 2 {
            self.sshd.kill_server();
        }
        let n = buf.len().min(self.limit - self.sent);
        buf[..n].fill(0xA5);
        self.sent += n;
        Ok(n)
    }
}

#[test]
fn server_killed_mid_upload_leaves_the_target_untouched() {
    let mut sshd = Sshd::start();
    let root = sshd.root().to_owned();
    let session = connect(&sshd);
    let target = root.join("manifest.yaml");
    std::fs::write(&target, b"old content\n").unwrap();
    let limit = 64 << 20;
    let mut source = Saboteur {
        sshd: &mut sshd,
        sent: 0,
        limit,
    };
    let err = session
        .upload(
            Source::Sized {
                reader: &mut source,
                len: limit as u64,
            },
            target.to_str().unwrap(),
            UploadOptions {
                mode: 0o600,
                sudo: Sudo::No,
            },
        )
        .unwrap_err();
    assert!(err.is_connection_failure(), "{err}");
    assert_eq!(std::fs::read(&target).unwrap(), b"old content\n");
    // The remote script removes its temp file when its input ends early.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let temps: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| common::is_temp_name(&e.file_name().to_string_lossy()))
            .collect();
        if temps.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "temp file left: {temps:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_pipeline_uses_one_connection() {
    let sshd = Sshd::start();
    let session = connect(&sshd);
    let dir = sshd.root().join("k8s_audit");
    let d = dir.to_str().unwrap();
    session
        .exec(
            &["mkdir", "-p", "-m", "0700", d],
            ExecOptions { sudo: Sudo::Yes },
        )
        .unwrap()
        .check(session.host(), &["mkdir"])
        .unwrap();
    session
        .upload(
            Source::Bytes(b"policy"),
            &format!("{d}/audit-policy.yaml"),
            UploadOptions {
                mode: 0o600,
                sudo: Sudo::Yes,
            },
        )
        .unwrap();
    session
        .upload(
            Source::Bytes(b"webhook"),
            &format!("{d}/webhook-config.yaml"),
            UploadOptions {
                mode: 0o600,
                sudo: Sudo::Yes,
            },
        )
        .unwrap();
    let manifest = sshd.root().join("kube-apiserver.yaml");
    std::fs::write(&manifest, b"spec: {}\n").unwrap();
    let m = manifest.to_str().unwrap();
    let old = session.download(m, Sudo::Yes).unwrap();
    session
        .upload(
            Source::Bytes(&[old.as_slice(), b"# patched\n"].concat()),
            &format!("{m}.new"),
            UploadOptions {
                mode: 0o600,
                sudo: Sudo::Yes,
            },
        )
        .unwrap();
    session
        .exec(
            &["mv", "-f", &format!("{m}.new"), m],
            ExecOptions { sudo: Sudo::Yes },
        )
        .unwrap()
        .check(session.host(), &["mv"])
        .unwrap();
    assert_eq!(std::fs::read(&manifest).unwrap(), b"spec: {}\n# patched\n");
    let stats = session.stats();
    assert_eq!(stats.tcp_connections, 1);
    assert_eq!(
        stats.round_trips,
        6 * 2 + 3,
        "channel open + exec per step, plus the input of the 3 uploads"
    );
    assert_eq!(sshd.session_pids().len(), 1, "sshd saw one connection");
}

#[test]
fn batch_uploads_cut_the_stream_exactly() {
    let sshd = Sshd::start();
    let session = connect(&sshd);
    let dir = sshd.root().join("batch dir");
    std::fs::create_dir(&dir).unwrap();
    let names = ["empty", "one", "big", "it's $(x)", "new\nline"];
    let sizes = [0usize, 1, 3 << 20, 4096, 10];
    let data: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| noise(n, 300 + i as u64))
        .collect();
    let mut sources: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    let mut batch: Vec<ship::Upload> = sources
        .iter_mut()
        .zip(names)
        .map(|(source, name)| ship::Upload {
            len: source.len() as u64,
            remote_path: format!("{}/{name}", dir.display()),
            source,
        })
        .collect();
    let before = session.stats().round_trips;
    session
        .upload_batch(
            &mut batch,
            UploadOptions {
                mode: 0o644,
                sudo: Sudo::Yes,
            },
        )
        .unwrap();
    // 2 for the one-time `head` probe, 3 for the batch (open, exec, input).
    assert_eq!(session.stats().round_trips - before, 5);
    for (name, bytes) in names.iter().zip(&data) {
        assert!(std::fs::read(dir.join(name)).unwrap() == *bytes, "{name:?}");
        assert_eq!(mode_of(&dir.join(name)), 0o644);
    }

    // A missing directory anywhere: checked before any data is read, so nothing lands.
    let paths = [dir.join("a"), sshd.root().join("missing/b"), dir.join("c")];
    let mut sources: Vec<&[u8]> = vec![b"a", b"b", b"c"];
    let mut batch: Vec<ship::Upload> = sources
        .iter_mut()
        .zip(&paths)
        .map(|(source, path)| ship::Upload {
            len: 1,
            remote_path: path.to_str().unwrap().to_owned(),
            source,
        })
        .collect();
    let err = session
        .upload_batch(
            &mut batch,
            UploadOptions {
                mode: 0o600,
                sudo: Sudo::No,
            },
        )
        .unwrap_err();
    assert!(
        matches!(&*err.cause, ShipError::RemotePathMissing { path, .. } if path.ends_with("missing/b")),
        "{err}"
    );
    assert!(!paths[0].exists() && !paths[2].exists());

    // A source shorter than announced aborts before the server can misplace any byte.
    std::fs::write(dir.join("one"), b"old").unwrap();
    let mut short: &[u8] = b"12";
    let mut rest: &[u8] = b"rest";
    let mut batch = vec![
        ship::Upload {
            len: 5,
            remote_path: format!("{}/one", dir.display()),
            source: &mut short,
        },
        ship::Upload {
            len: 4,
            remote_path: format!("{}/rest", dir.display()),
            source: &mut rest,
        },
    ];
    let err = session
        .upload_batch(
            &mut batch,
            UploadOptions {
                mode: 0o600,
                sudo: Sudo::No,
            },
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("ended after 2 of 5 bytes"),
        "{err}"
    );
    assert_eq!(std::fs::read(dir.join("one")).unwrap(), b"old");
    assert!(!dir.join("rest").exists());
}

#[test]
fn server_killed_mid_batch_commits_nothing() {
    let mut sshd = Sshd::start();
    let root = sshd.root().to_owned();
    let session = connect(&sshd);
    let (first, second, third) = (root.join("first"), root.join("second"), root.join("third"));
    std::fs::write(&second, b"old content\n").unwrap();
    let limit = 64 << 20;
    let mut before: &[u8] = &[1u8; 1 << 20];
    let mut after: &[u8] = b"after";
    let mut saboteur = Saboteur {
        sshd: &mut sshd,
        sent: 0,
        limit,
    };
    let mut batch = vec![
        ship::Upload {
            len: before.len() as u64,
            remote_path: first.to_str().unwrap().to_owned(),
            source: &mut before,
        },
        ship::Upload {
            len: limit as u64,
            remote_path: second.to_str().unwrap().to_owned(),
            source: &mut saboteur,
        },
        ship::Upload {
            len: 5,
            remote_path: third.to_str().unwrap().to_owned(),
            source: &mut after,
        },
    ];
    let err = session
        .upload_batch(
            &mut batch,
            UploadOptions {
                mode: 0o600,
                sudo: Sudo::No,
            },
        )
        .unwrap_err();
    assert!(err.is_connection_failure(), "{err}");
    assert!(
        !first.exists() && !third.exists(),
        "a file of a cut batch was committed"
    );
    assert_eq!(std::fs::read(&second).unwrap(), b"old content\n");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let temps: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| common::is_temp_name(&e.file_name().to_string_lossy()))
            .collect();
        if temps.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "temp files left: {temps:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
