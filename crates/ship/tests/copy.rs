//! `ship cp` as a library (`ship::copy`), and what a copy does to targets that are not
//! regular files, on either side.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{connect, opts, temp_files};
use ship::copy::{self, CopyError, CopyOptions, CopyRequest, Operand, Progress, Quiet, Stdio};
use ship::{ShipError, Source, Sudo, UploadOptions};
use testkit::noise;
use testkit::sshd::Sshd;

fn remote(sshd: &Sshd, path: &Path) -> String {
    format!("root@{}:{}", sshd.host(), path.display())
}

fn run(
    sshd: &Sshd,
    operands: &[String],
    stdin: &[u8],
    progress: &mut dyn Progress,
) -> Result<(copy::Copied, Vec<u8>), CopyError> {
    let request = CopyRequest::parse(operands)?;
    let mut connect = opts(sshd, sshd.client_key());
    connect.port = Some(sshd.port());
    let mut stdout = Vec::new();
    let stdio = Stdio {
        stdin: &mut &stdin[..],
        stdout: &mut stdout,
    };
    let copied = copy::copy(&request, &connect, CopyOptions::default(), stdio, progress)?;
    Ok((copied, stdout))
}

#[derive(Default)]
struct Recorded {
    hosts: Vec<String>,
    sent: Vec<(String, u64, u64)>,
}

impl Progress for Recorded {
    fn connected(&mut self, host: &str, _took: Duration) {
        self.hosts.push(host.to_owned());
    }
    fn sent(&mut self, target: &str, done: u64, total: u64) {
        self.sent.push((target.to_owned(), done, total));
    }
}

#[test]
fn the_library_copies_both_ways_and_reports_progress() {
    let sshd = Sshd::start();
    let dir = sshd.root().join("remote");
    std::fs::create_dir(&dir).unwrap();
    let local = sshd.root().join("a.bin");
    let data = noise(1 << 20, 4);
    std::fs::write(&local, &data).unwrap();
    let mut recorded = Recorded::default();
    let operands = [
        local.to_str().unwrap().to_owned(),
        format!("{}/", remote(&sshd, &dir)),
    ];
    let (copied, _) = run(&sshd, &operands, b"", &mut recorded).unwrap();
    assert_eq!(copied.files, 1);
    assert_eq!(copied.stats.tcp_connections, 1);
    assert_eq!(recorded.hosts, [sshd.host()]);
    let target = format!("{}/a.bin", dir.display());
    assert_eq!(
        recorded.sent.last(),
        Some(&(target.clone(), 1 << 20, 1 << 20))
    );
    assert!(std::fs::read(&target).unwrap() == data);

    let operands = [format!("root@{}:{target}", sshd.host()), "-".to_owned()];
    let (_, stdout) = run(&sshd, &operands, b"", &mut Quiet).unwrap();
    assert!(stdout == data);
}

#[test]
fn operands_are_checked_before_connecting() {
    let parse =
        |ops: &[&str]| CopyRequest::parse(&ops.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
    assert!(matches!(
        parse(&["-", "a", "h:/x/"]),
        Err(CopyError::StdioNotAlone)
    ));
    assert!(matches!(
        parse(&["h:/a", "g:/x"]),
        Err(CopyError::RemoteToRemote)
    ));
    assert!(matches!(parse(&["a", "b"]), Err(CopyError::NoRemoteSide)));
    assert!(matches!(
        parse(&["h:/a", "g:/b", "dir"]),
        Err(CopyError::SeveralHosts)
    ));
    let err = parse(&["-", "h:/x/"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "h:/x/: needs a file name when the source is `-`"
    );
    let request = parse(&["a", "b", "h:/x/"]).unwrap();
    assert_eq!(request.sources()[0], Operand::Local("a".into()));
}

/// A local destination that is not a regular file is written through, never replaced: a FIFO
/// stays a FIFO (as /dev/null stays a device), and a symbolic link stays a link, its target
/// written.
#[test]
fn local_fifos_and_links_are_written_through() {
    let sshd = Sshd::start();
    let source = sshd.root().join("source");
    std::fs::write(&source, b"payload\n").unwrap();
    let local = tempfile::tempdir().unwrap();

    let fifo = local.path().join("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    let operands = [remote(&sshd, &source), fifo.to_str().unwrap().to_owned()];
    run(&sshd, &operands, b"", &mut Quiet).unwrap();
    use std::os::unix::fs::FileTypeExt;
    // Checked first: were it replaced, the reader would wait for a writer forever.
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_eq!(reader.join().unwrap(), b"payload\n");

    let real = local.path().join("real.yaml");
    std::fs::write(&real, b"old").unwrap();
    let link = local.path().join("link.yaml");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let operands = [remote(&sshd, &source), link.to_str().unwrap().to_owned()];
    run(&sshd, &operands, b"", &mut Quiet).unwrap();
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read(&real).unwrap(), b"payload\n");
    let names: Vec<_> = std::fs::read_dir(local.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "temp files left: {names:?}");
}

/// On the node, an upload onto a symbolic link, a FIFO or a device is refused, and the target
/// is left as it was (replacing a link by a file would leave the link's target stale).
#[test]
fn remote_targets_that_are_not_regular_files_are_refused() {
    let sshd = Sshd::start();
    let session = connect(&sshd);
    let dir = sshd.root().join("d");
    std::fs::create_dir(&dir).unwrap();
    let real = dir.join("real");
    std::fs::write(&real, b"old").unwrap();
    let link = dir.join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let fifo = dir.join("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let opts = UploadOptions {
        mode: 0o600,
        sudo: Sudo::Yes,
    };
    let big = noise((16 << 20) + 1, 1);
    for target in [&link, &fifo] {
        let t = target.to_str().unwrap();
        let errors = [
            session.upload(Source::Bytes(b"new"), t, opts).unwrap_err(),
            session
                .upload(Source::Stream(&mut &big[..]), t, opts)
                .unwrap_err(),
        ];
        for err in errors {
            assert!(
                matches!(&err, ShipError::InvalidRemotePath { path, .. } if path == t),
                "{err}"
            );
            assert!(
                err.to_string().contains("ship replaces only regular files"),
                "{err}"
            );
        }
    }
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read(&real).unwrap(), b"old");
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert!(temp_files(&dir).is_empty(), "{:?}", temp_files(&dir));
}

/// The local side of a download killed half way leaves a `.ship.XXXXXX` temp file; the next
/// download into that directory removes it after an hour, never a fresh one.
#[test]
fn local_downloads_remove_stale_temp_files() {
    let sshd = Sshd::start();
    let source = sshd.root().join("source");
    std::fs::write(&source, b"payload\n").unwrap();
    let local = tempfile::tempdir().unwrap();
    let (stale, fresh, other) = (".ship.Ab3dEf", ".ship.Zz3dEf", ".ship.notes-of-mine");
    for (name, when) in [
        (stale, "2 hours ago"),
        (fresh, "1 minute ago"),
        (other, "2 hours ago"),
    ] {
        let path = local.path().join(name);
        std::fs::write(&path, b"x").unwrap();
        let status = std::process::Command::new("touch")
            .args(["-d", when])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
    }
    let target = local.path().join("copy");
    let operands = [remote(&sshd, &source), target.to_str().unwrap().to_owned()];
    run(&sshd, &operands, b"", &mut Quiet).unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"payload\n");
    assert!(!local.path().join(stale).exists());
    assert!(local.path().join(fresh).exists() && local.path().join(other).exists());
}
