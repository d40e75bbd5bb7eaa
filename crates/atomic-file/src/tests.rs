use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};

use super::*;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn replace(path: &Path, content: &[u8]) -> Result<(), Error> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(content).unwrap();
    file.commit()
}

#[test]
fn commit_replaces_and_drop_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out.yaml");
    fs::write(&target, "old").unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o640)).unwrap();

    let mut file = AtomicFile::create(&target).unwrap();
    file.write_all(b"half").unwrap();
    drop(file);
    assert_eq!(fs::read(&target).unwrap(), b"old");

    replace(&target, b"new").unwrap();
    assert_eq!(fs::read(&target).unwrap(), b"new");
    assert_eq!(mode(&target), 0o640);
    assert_eq!(names(dir.path()), ["out.yaml"], "no temporary file behind");
}

#[test]
fn new_files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("new");
    replace(&target, b"x").unwrap();
    assert_eq!(mode(&target), 0o600);
}

#[test]
fn the_temporary_file_is_a_hidden_sibling() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("kube-apiserver.yaml");
    let file = AtomicFile::create(&target).unwrap();
    let listed = names(dir.path());
    assert_eq!(listed.len(), 1);
    assert!(
        listed[0].starts_with(".kube-apiserver.yaml.") && listed[0].ends_with(".tmp"),
        "{listed:?}"
    );
    drop(file);
    assert!(names(dir.path()).is_empty());
}

#[test]
fn owner_and_set_id_bits_are_kept() {
    if !is_root() {
        eprintln!("skipped: changing a file's owner needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("owned");
    fs::write(&target, "old").unwrap();
    std::os::unix::fs::chown(&target, Some(4321), Some(8765)).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o2755)).unwrap();
    replace(&target, b"new").unwrap();
    let meta = fs::metadata(&target).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (4321, 8765));
    assert_eq!(mode(&target), 0o2755);
}

fn is_root() -> bool {
    // The tests' own process: owning a fresh file as uid 0 means we are root.
    let file = tempfile::NamedTempFile::new().unwrap();
    file.as_file().metadata().unwrap().uid() == 0
}

#[test]
fn a_symlink_is_written_through_to_its_final_target() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    fs::create_dir(&real).unwrap();
    let target = real.join("manifest.yaml");
    fs::write(&target, "old").unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).unwrap();
    // A chain: link -> relative link -> file.
    symlink("real/manifest.yaml", dir.path().join("hop")).unwrap();
    let link = dir.path().join("link.yaml");
    symlink(dir.path().join("hop"), &link).unwrap();

    let file = AtomicFile::create(&link).unwrap();
    assert_eq!(file.target(), fs::canonicalize(&target).unwrap());
    drop(file);
    replace(&link, b"new").unwrap();
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read(&target).unwrap(), b"new");
    assert_eq!(mode(&target), 0o644, "the target keeps its mode");
    assert_eq!(names(&real), ["manifest.yaml"]);
    assert_eq!(names(dir.path()), ["hop", "link.yaml", "real"]);
}

#[test]
fn a_dangling_symlink_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("link");
    symlink("/nonexistent/target", &link).unwrap();
    let err = AtomicFile::create(&link).unwrap_err();
    assert!(matches!(err, Error::DanglingLink { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "cannot write {}: it is a symbolic link to /nonexistent/target, which does not exist; refusing to create a file through it",
            link.display()
        )
    );
    assert!(matches!(
        Destination::open(&link),
        Err(Error::DanglingLink { .. })
    ));
    assert_eq!(
        fs::read_link(&link).unwrap(),
        Path::new("/nonexistent/target")
    );
}

#[test]
fn a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = AtomicFile::create(dir.path()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot write {}: it is a directory, not a regular file",
            dir.path().display()
        )
    );
    assert!(matches!(
        Destination::open(dir.path()),
        Err(Error::NotRegular {
            kind: FileKind::Directory,
            ..
        })
    ));
    // Also through a symlink.
    let link = dir.path().join("link");
    symlink(".", &link).unwrap();
    assert!(matches!(
        Destination::open(&link),
        Err(Error::NotRegular {
            kind: FileKind::Directory,
            ..
        })
    ));
    assert!(names(dir.path()) == ["link"]);
}

#[test]
fn a_character_device_is_written_through_and_never_replaced() {
    let null = Path::new("/dev/null");
    let before = fs::metadata(null).unwrap();
    assert!(matches!(
        AtomicFile::create(null),
        Err(Error::NotRegular {
            kind: FileKind::CharDevice,
            ..
        })
    ));
    let Destination::Through { mut file, path } = Destination::open(null).unwrap() else {
        panic!("/dev/null must be written through");
    };
    assert_eq!(path, null);
    file.write_all(b"gone").unwrap();
    let after = fs::metadata(null).unwrap();
    assert!(after.file_type().is_char_device());
    assert_eq!((after.ino(), after.mode()), (before.ino(), before.mode()));
    // /dev/full reports its error on the write, not later.
    if let Ok(Destination::Through { mut file, .. }) = Destination::open(Path::new("/dev/full")) {
        let err = file.write_all(b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(28), "{err}");
    }
}

#[test]
fn a_fifo_is_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(matches!(
        AtomicFile::create(&fifo),
        Err(Error::NotRegular {
            kind: FileKind::Fifo,
            ..
        })
    ));
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::read(fifo).unwrap())
    };
    let Destination::Through { mut file, .. } = Destination::open(&fifo).unwrap() else {
        panic!("a FIFO must be written through");
    };
    file.write_all(b"through").unwrap();
    drop(file);
    assert_eq!(reader.join().unwrap(), b"through");
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
}

#[test]
fn regular_and_missing_paths_are_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("t");
    for content in [&b"first"[..], b"second"] {
        let Destination::Replace(mut file) = Destination::open(&target).unwrap() else {
            panic!("a regular file must be replaced");
        };
        file.write_all(content).unwrap();
        file.commit().unwrap();
        assert_eq!(fs::read(&target).unwrap(), content);
    }
}

#[test]
fn missing_directory_is_an_error_naming_the_target() {
    let err = AtomicFile::create(Path::new("/nonexistent-dir/x")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot write /nonexistent-dir/x (creating a temporary file beside it): "),
        "{err}"
    );
}

#[test]
fn backups_hold_the_original_and_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("m.yaml");
    fs::write(&target, "original").unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).unwrap();
    let backups = dir.path().join("deep/backup");
    let mut file = AtomicFile::create(&target).unwrap();
    file.write_all(b"patched").unwrap();
    let backup = file.commit_with_backup(&backups).unwrap();
    assert_eq!(fs::read(&target).unwrap(), b"patched");
    assert_eq!(fs::read(&backup).unwrap(), b"original");
    assert_eq!(mode(&backup), 0o600);
    assert_eq!(mode(&backups), 0o700);
    let name = backup.file_name().unwrap().to_str().unwrap();
    // m.yaml.YYYYMMDDTHHMMSS.NNNNNNNNNZ
    let stamp = name.strip_prefix("m.yaml.").unwrap();
    assert_eq!(stamp.len(), 8 + 1 + 6 + 1 + 9 + 1, "{name}");
    assert!(
        stamp.ends_with('Z') && stamp.as_bytes()[8] == b'T',
        "{name}"
    );
}

#[test]
fn backups_are_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("m");
    let now = SystemTime::now();
    let mut made = Vec::new();
    for content in ["one", "two", "three"] {
        fs::write(&target, content).unwrap();
        made.push(write_backup(&target, dir.path(), "m", now).unwrap());
    }
    assert_eq!(made[0], dir.path().join(backup_file_name("m", now)));
    assert_eq!(
        made[1],
        dir.path()
            .join(backup_file_name("m", now + Duration::from_nanos(1)))
    );
    let contents: Vec<_> = made
        .iter()
        .map(|p| fs::read_to_string(p).unwrap())
        .collect();
    assert_eq!(contents, ["one", "two", "three"]);
}

#[test]
fn a_failed_rename_removes_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("m");
    fs::write(&target, "original").unwrap();
    let backups = dir.path().join("backup");
    let mut file = AtomicFile::create(&target).unwrap();
    file.write_all(b"new").unwrap();
    let err = file
        .commit_with_backup_by(&backups, |_, _| {
            Err(io::Error::from_raw_os_error(30 /* EROFS */))
        })
        .unwrap_err();
    assert!(matches!(err, Error::Replace { .. }), "{err:?}");
    assert!(
        err.to_string()
            .ends_with("; it is unchanged, and its backup was removed"),
        "{err}"
    );
    assert_eq!(fs::read(&target).unwrap(), b"original");
    assert!(names(&backups).is_empty(), "{:?}", names(&backups));
    assert_eq!(
        names(dir.path()),
        ["backup", "m"],
        "the temporary file is gone"
    );
}

#[test]
fn a_failed_backup_replaces_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("m");
    fs::write(&target, "original").unwrap();
    // The backup directory's place is taken by a file.
    let backups = dir.path().join("backup");
    fs::write(&backups, "").unwrap();
    let mut file = AtomicFile::create(&target).unwrap();
    file.write_all(b"new").unwrap();
    let err = file.commit_with_backup(&backups).unwrap_err();
    assert!(matches!(err, Error::Backup { .. }), "{err:?}");
    assert!(err.to_string().ends_with("; nothing was replaced"), "{err}");
    assert_eq!(fs::read(&target).unwrap(), b"original");
    assert_eq!(names(dir.path()), ["backup", "m"]);
}
