//! `--in-place`: the manifest is replaced in one rename, after a backup outside the directory
//! the kubelet runs manifests from. The write itself is `atomic_file`'s, shared with `render -o`.
//!
//! A symlinked manifest is written through: its final target gets the patch (with that file's
//! owner and mode), and the link stays a link. Replacing the link by a regular file would leave
//! the file it points at, which is what the node's tooling manages, unpatched. Anything but a
//! regular file, or a symlink to one, is refused before it is read.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use atomic_file::FileKind;

#[derive(Debug, thiserror::Error)]
pub enum InPlaceError {
    #[error("cannot read {}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error("cannot edit {} in place: it is {kind}, not a regular file", path.display())]
    NotRegular { path: PathBuf, kind: FileKind },
    #[error("cannot resolve {}: {error}", path.display())]
    Resolve { path: PathBuf, error: io::Error },
    #[error(
        "backup directory {} is inside {}, where the kubelet would run the backup as a second pod; choose another --backup-dir",
        backup_dir.display(),
        manifests.display()
    )]
    BackupInManifests {
        backup_dir: PathBuf,
        manifests: PathBuf,
    },
    /// The write itself; its message says what is left where (see `atomic_file::Error`).
    #[error(transparent)]
    Write(#[from] atomic_file::Error),
}

/// Reads the manifest that [`write_in_place`] will replace, refusing what it would refuse
/// (a FIFO would block the read, a device would read as something else).
pub fn read_manifest(path: &Path) -> Result<String, InPlaceError> {
    let read_error = |error| InPlaceError::Read {
        path: path.to_path_buf(),
        error,
    };
    let meta = fs::metadata(path).map_err(read_error)?;
    if let Some(kind) = FileKind::of(&meta.file_type()) {
        return Err(InPlaceError::NotRegular {
            path: path.to_path_buf(),
            kind,
        });
    }
    fs::read_to_string(path).map_err(read_error)
}

/// Backs the manifest at `path` up into `backup_dir` (created 0700), then replaces it with
/// `new`, keeping its owner and mode; returns the backup's path.
///
/// The backup directory must be outside the manifest's directory, and outside its symlink
/// target's: checked before anything is created. On failure nothing is replaced and no backup
/// is left (or, if only the final sync failed, the error names the backup).
pub fn write_in_place(path: &Path, new: &str, backup_dir: &Path) -> Result<PathBuf, InPlaceError> {
    let resolve_error = |path: &Path| {
        let path = path.to_path_buf();
        move |error| InPlaceError::Resolve { path, error }
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let target = fs::canonicalize(path).map_err(resolve_error(path))?;
    let manifests = [
        fs::canonicalize(dir).map_err(resolve_error(dir))?,
        target.parent().unwrap_or(Path::new("/")).to_path_buf(),
    ];
    let backups = resolve(backup_dir)?;
    if let Some(manifests) = manifests.into_iter().find(|m| backups.starts_with(m)) {
        return Err(InPlaceError::BackupInManifests {
            backup_dir: backup_dir.to_path_buf(),
            manifests,
        });
    }
    Ok(atomic_file::replace_with_backup(
        path,
        new.as_bytes(),
        backup_dir,
    )?)
}

/// `path` made absolute with symlinks resolved, as far as it exists.
fn resolve(path: &Path) -> Result<PathBuf, InPlaceError> {
    let resolve_error = |path: &Path| {
        let path = path.to_path_buf();
        move |error| InPlaceError::Resolve { path, error }
    };
    let absolute = std::path::absolute(path).map_err(resolve_error(path))?;
    let mut existing = absolute.as_path();
    let mut missing = Vec::new();
    while !existing.exists() {
        let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else {
            break;
        };
        missing.push(name);
        existing = parent;
    }
    let mut resolved = existing.canonicalize().map_err(resolve_error(existing))?;
    resolved.extend(missing.iter().rev());
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_backup_beside_the_link_target_is_refused_too() {
        let dir = tempfile::tempdir().unwrap();
        let (manifests, real) = (dir.path().join("manifests"), dir.path().join("real"));
        fs::create_dir(&manifests).unwrap();
        fs::create_dir(&real).unwrap();
        fs::write(real.join("m.yaml"), "old").unwrap();
        let link = manifests.join("m.yaml");
        symlink(real.join("m.yaml"), &link).unwrap();
        for inside in [manifests.join("b"), real.join("b")] {
            let err = write_in_place(&link, "new", &inside).unwrap_err();
            assert!(
                matches!(err, InPlaceError::BackupInManifests { .. }),
                "{err}"
            );
            assert!(!inside.exists());
        }
        assert_eq!(fs::read_to_string(real.join("m.yaml")).unwrap(), "old");
    }

    #[test]
    fn only_regular_files_are_read() {
        let err = read_manifest(Path::new("/dev/null")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot edit /dev/null in place: it is a character device, not a regular file"
        );
        let dir = tempfile::tempdir().unwrap();
        let err = read_manifest(dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("it is a directory, not a regular file")
        );
    }
}
