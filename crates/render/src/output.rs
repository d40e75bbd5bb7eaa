//! `-o FILE`: the target is replaced in one rename, or not at all.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::error::RenderError;

/// A file written beside its target and renamed over it by [`AtomicFile::commit`]. Dropping it
/// without committing deletes the temporary file and leaves the target untouched.
///
/// A new target gets mode 0600 (rendered files often hold values from the environment); an
/// existing one keeps its permissions.
#[derive(Debug)]
pub struct AtomicFile {
    temp: NamedTempFile,
    target: PathBuf,
}

impl AtomicFile {
    pub fn create(target: &Path) -> Result<Self, RenderError> {
        let error = |error| RenderError::Output {
            path: target.to_path_buf(),
            error,
        };
        let dir = match target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let temp = tempfile::Builder::new()
            .prefix(".render-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(error)?;
        match fs::metadata(target) {
            Ok(meta) => temp
                .as_file()
                .set_permissions(meta.permissions())
                .map_err(error)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(error(e)),
        }
        Ok(AtomicFile {
            temp,
            target: target.to_path_buf(),
        })
    }

    /// Makes the content durable, then renames it over the target.
    pub fn commit(mut self) -> Result<(), RenderError> {
        let error = |error| RenderError::Output {
            path: self.target.clone(),
            error,
        };
        self.temp.flush().map_err(error)?;
        self.temp.as_file().sync_all().map_err(error)?;
        let target = self.target.clone();
        self.temp
            .persist(&target)
            .map_err(|e| RenderError::Output {
                path: target,
                error: e.error,
            })?;
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.temp.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.temp.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.temp.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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

        let mut file = AtomicFile::create(&target).unwrap();
        file.write_all(b"new").unwrap();
        file.commit().unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new");
        let mode = fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        // Only the target is left: no temporary files behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn new_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("new");
        let file = AtomicFile::create(&target).unwrap();
        file.commit().unwrap();
        let mode = fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn missing_directory_is_an_error_naming_the_target() {
        let err = AtomicFile::create(Path::new("/nonexistent-dir/x")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot write /nonexistent-dir/x: "),
            "{err}"
        );
    }
}
